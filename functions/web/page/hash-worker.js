// SHA-256 of a File off the page's thread, reporting how much of it has been read.
// WebCrypto has no incremental digest, so the file is read whole (uploads are at most 500 MB).
"use strict";
const SLICE = 8 * 1024 * 1024;

self.onmessage = async ({ data: file }) => {
  try {
    const whole = new Uint8Array(file.size);
    for (let at = 0; at < file.size; at += SLICE) {
      whole.set(new Uint8Array(await file.slice(at, at + SLICE).arrayBuffer()), at);
      self.postMessage({ progress: Math.min(1, (at + SLICE) / file.size) });
    }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", whole));
    self.postMessage({ sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join("") });
  } catch (error) {
    self.postMessage({ error: String(error) });
  }
};
