// sttpipe web client: no framework, no build step. Copy it and change what you need.
// 0. hash the file in a Web Worker            (a recording already transcribed is not sent)
// 1. POST /uploads -> a pre-signed S3 form   2. POST the file straight to S3 (progress bar)
// 3. poll GET /jobs/{id} until it ends, its chunks on a timeline coloured by state
// 4. show the transcript and the download links of every format
// 5. the job's buttons: cancel it while it runs (POST /jobs/{id}/cancel); once it has ended, redo
//    the chunks that did not finish (POST /jobs/{id}/rerun, then back to 3) or delete it
// 6. the recording picked plays beside its lines, the line playing marked; GET /jobs lists the
//    tenant's jobs, and one picked there is followed and shown from 3
// Sign-in: with the stack's user pool, config.json (written beside the page at deploy) names
// its hosted UI, and the page signs in there (authorization code with PKCE); else a token is
// pasted (another issuer's, or a local one).
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["COMPLETED", "PARTIAL", "FAILED"]);
const POLL_MS = 1000;
// Browsers leave File.type empty for some audio types; the API needs one it accepts.
const TYPES = { flac: "audio/flac", wav: "audio/wav", mp3: "audio/mpeg", ogg: "audio/ogg",
  opus: "audio/opus", m4a: "audio/mp4", webm: "audio/webm", mp4: "video/mp4", mov: "video/quicktime" };
const typeOf = (file) => file.type || TYPES[file.name.split(".").pop().toLowerCase()] || "";
const clock = (s) => `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

// The job on the page, which its buttons act on, and its recording when it was picked here.
const shown = { jobId: null, filename: "", file: null };

// Settings, first found wins: the URL fragment (never sent to a server: #token=...&api=...),
// config.json beside the page (the API's URL and the hosted UI's endpoints, written at deploy),
// the page's own origin.
const fragment = new URLSearchParams(location.hash.slice(1));
$("api-url").value = fragment.get("api") || location.origin;
$("token").value = fragment.get("token") || "";
let signIn = null; // config.json's sign_in: authorize/token/logout endpoints, client id, redirect URI
const settings = fetch("config.json", { cache: "no-cache" })
  .then((response) => (response.ok ? response.json() : {}))
  .catch(() => ({})) // no config.json (a page opened from elsewhere): the defaults above
  .then((config) => {
    if (config.api_url && !fragment.get("api")) $("api-url").value = config.api_url;
    signIn = config.sign_in || null;
  });

// The tokens of this tab's sign-in. sessionStorage, not localStorage: they end with the tab and
// are not shared with other tabs.
const TOKENS = "sttpipe.tokens";
const PENDING = "sttpipe.sign-in"; // the PKCE verifier and state of a sign-in under way
const stored = (key) => JSON.parse(sessionStorage.getItem(key) || "null");
const base64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const randomText = (bytes) => base64url(crypto.getRandomValues(new Uint8Array(bytes)));

// Authorization code with PKCE (RFC 7636, S256): the hosted UI sees the verifier's hash only,
// and the code it sends back is worth nothing without the verifier, kept in this tab. The state
// ties its answer to this request.
async function startSignIn() {
  const pending = { verifier: randomText(32), state: randomText(16) };
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(pending.verifier));
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const url = new URL(signIn.authorize_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: signIn.client_id,
    redirect_uri: signIn.redirect_uri,
    scope: signIn.scope,
    state: pending.state,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  location.assign(url);
}

// The hosted UI's answer (?code=...&state=... or ?error=...): taken once, then cleared from the
// address bar and history.
async function finishSignIn(query) {
  const pending = stored(PENDING);
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", location.pathname + location.hash);
  if (query.has("error")) throw new Error(`sign-in failed: ${query.get("error_description") || query.get("error")}`);
  if (!pending || query.get("state") !== pending.state) {
    throw new Error("sign-in failed: the answer is not to a sign-in this page started");
  }
  await requestTokens({
    grant_type: "authorization_code",
    code: query.get("code"),
    redirect_uri: signIn.redirect_uri,
    code_verifier: pending.verifier,
  });
}

async function requestTokens(fields) {
  const response = await fetch(signIn.token_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: signIn.client_id, ...fields }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`sign-in failed: ${body.error || response.status}`);
  sessionStorage.setItem(TOKENS, JSON.stringify({
    id_token: body.id_token,
    refresh_token: body.refresh_token || fields.refresh_token, // a refresh answer has none
    expires_at: Date.now() + body.expires_in * 1000,
  }));
}

// The bearer token: the signed-in user's ID token (it names the tenant, custom:tenant_id),
// refreshed when it is about to expire; else the one pasted.
async function bearer() {
  const tokens = stored(TOKENS);
  if (!tokens) return $("token").value;
  if (Date.now() < tokens.expires_at - 60_000) return tokens.id_token;
  try {
    await requestTokens({ grant_type: "refresh_token", refresh_token: tokens.refresh_token });
  } catch {
    sessionStorage.removeItem(TOKENS);
    showAccount();
    throw new Error("the session has ended: sign in again");
  }
  return stored(TOKENS).id_token;
}

function showAccount() {
  const tokens = stored(TOKENS);
  $("sign-in").hidden = !signIn || Boolean(tokens);
  $("signed-in").hidden = !tokens;
  $("manual").open = !signIn && !tokens;
  if (tokens) {
    const claims = JSON.parse(atob(tokens.id_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    $("user").textContent = claims.email || claims["cognito:username"] || claims.sub;
  }
}

$("sign-in").addEventListener("click", () => startSignIn().catch((error) => ($("error").textContent = error.message)));
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKENS);
  $("jobs").tBodies[0].replaceChildren();
  showAccount();
  // The hosted UI ends its own session too, and sends the browser back here.
  if (signIn?.logout_endpoint) {
    const url = new URL(signIn.logout_endpoint);
    url.search = new URLSearchParams({ client_id: signIn.client_id, logout_uri: signIn.redirect_uri });
    location.assign(url);
  }
});

async function api(path, options = {}) {
  await settings;
  const response = await fetch($("api-url").value.replace(/\/$/, "") + path, {
    ...options,
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${await bearer()}`,
      ...(options.headers || {}),
    },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.message || response.statusText}`);
  return body;
}

// The file's SHA-256, from a Web Worker: the API completes a recording this tenant already
// transcribed without an upload. Null where the browser cannot hash (WebCrypto needs https or
// localhost) or hashing failed: that only costs the upload.
function sha256Of(file, onProgress) {
  if (!window.crypto?.subtle || !window.Worker) return Promise.resolve(null);
  return new Promise((resolve) => {
    const worker = new Worker("hash-worker.js");
    worker.onmessage = ({ data }) => {
      if (data.progress !== undefined) return onProgress(data.progress);
      worker.terminate();
      resolve(data.sha256 || null);
    };
    worker.onerror = () => {
      worker.terminate();
      resolve(null);
    };
    worker.postMessage(file);
  });
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function uploadToS3(form, file, onProgress) {
  return new Promise((resolve, reject) => {
    const data = new FormData();
    for (const [name, value] of Object.entries(form.fields)) data.append(name, value);
    data.append("file", file); // S3 wants the file last
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.url);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () =>
      xhr.status < 300 ? resolve() : reject(new Error(`S3 refused the upload (${xhr.status}): ${xhr.responseText.slice(0, 300)}`));
    xhr.onerror = () => reject(new Error("network error while uploading to S3"));
    xhr.send(data);
  });
}

function showJob(job) {
  const { chunks_finished: done, chunks_total: total } = job.progress;
  const final = FINAL.has(job.status);
  shown.jobId = job.job_id;
  shown.filename = job.filename;
  $("job-id").textContent = job.job_id;
  $("job-status").textContent = job.status;
  $("job-counts").textContent = total ? `${done}/${total} chunks` : "";
  $("job-eta").textContent = job.eta_seconds ? `about ${Math.ceil(job.eta_seconds)} s left` : "";
  $("job-progress").max = Math.max(total, 1);
  $("job-progress").value = final ? $("job-progress").max : done;
  showTimeline(job.chunks);
  $("cancel").hidden = final;
  $("delete").hidden = !final;
  // Chunks left unfinished (failed, or never sent by a cancelled job) can be redone; a job whose
  // upload was refused has no chunks.
  $("rerun").hidden = !final || !job.chunks.some((c) => c.state === "FAILED" || c.state === "PENDING");
}

// Each chunk spans its share of the recording (the chunks cover it end to end).
function showTimeline(chunks) {
  const length = Math.max(1, ...chunks.map((c) => c.end_ms));
  $("chunks").replaceChildren(
    ...chunks.map((c) => {
      const item = document.createElement("li");
      item.dataset.state = c.state;
      item.style.left = `${(100 * c.start_ms) / length}%`;
      item.style.width = `${(100 * (c.end_ms - c.start_ms)) / length}%`;
      item.title = `chunk ${c.index}, ${clock(c.start_ms / 1000)}–${clock(c.end_ms / 1000)}: ${c.state}${c.error ? " — " + c.error : ""}`;
      const text = document.createElement("span"); // the colour, for those who cannot see it
      text.className = "visually-hidden";
      text.textContent = item.title;
      item.append(text);
      return item;
    }),
  );
}

async function follow(jobId) {
  for (;;) {
    const job = await api(`/jobs/${jobId}`);
    showJob(job);
    if (FINAL.has(job.status)) return job;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

// The JSON transcript's lines, each a button with its time; with the recording (the file picked
// for this job), a line plays it from there.
async function showCues(job, file) {
  const player = $("player");
  player.hidden = !file;
  if (player.dataset.url) URL.revokeObjectURL(player.dataset.url);
  player.dataset.url = file ? URL.createObjectURL(file) : "";
  player.src = player.dataset.url;
  const transcript = await (await fetch(job.downloads.json)).json();
  $("cues").replaceChildren(
    ...transcript.segments.map((segment) => {
      const cue = document.createElement("button");
      cue.type = "button";
      cue.className = "cue";
      cue.dataset.start = segment.start;
      cue.dataset.end = segment.end;
      cue.disabled = !file;
      const time = document.createElement("span");
      time.className = "at";
      time.textContent = clock(segment.start);
      cue.append(time, segment.text);
      cue.addEventListener("click", () => {
        player.currentTime = segment.start;
        player.play().catch(() => {}); // a browser may refuse to play until the user has
      });
      const line = document.createElement("li");
      line.append(cue);
      return line;
    }),
  );
}

// The line playing is marked as the recording plays or is sought (timeupdate covers both), and
// kept in view while it plays.
$("player").addEventListener("timeupdate", () => {
  const player = $("player");
  for (const cue of $("cues").querySelectorAll("button.cue")) {
    const playing = Number(cue.dataset.start) <= player.currentTime && player.currentTime < Number(cue.dataset.end);
    if (playing === cue.hasAttribute("aria-current")) continue;
    if (!playing) {
      cue.removeAttribute("aria-current");
      continue;
    }
    cue.setAttribute("aria-current", "true");
    if (!player.paused) cue.scrollIntoView({ block: "nearest" });
  }
});

// A job's chunks done (transcribed or silent) and all its chunks: from the stats it ended
// with, else (running, or cancelled) from its status.
async function progressOf(job) {
  const { stats } = job;
  if (stats.chunks !== undefined) return [stats.chunks_transcribed + stats.chunks_silent, stats.chunks];
  const { chunks } = await api(`/jobs/${job.job_id}`);
  return [chunks.filter((c) => c.state === "DONE" || c.state === "SILENT").length, chunks.length];
}

async function showJobs() {
  const page = await api("/jobs?limit=20");
  const progress = await Promise.all(page.jobs.map(progressOf));
  $("jobs").tBodies[0].replaceChildren(
    ...page.jobs.map((job, i) => {
      const row = document.createElement("tr");
      row.className = "job";
      row.dataset.jobId = job.job_id;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open-job";
      open.textContent = job.filename; // the tenant's text: never HTML
      open.addEventListener("click", () => step(() => openJob(job.job_id, null)));
      const [done, total] = progress[i];
      const bar = document.createElement("progress");
      bar.max = Math.max(total, 1);
      bar.value = done;
      bar.setAttribute("aria-label", `${done} of ${total} chunks done`);
      const cells = [[open], [job.status], total ? [bar, ` ${done}/${total}`] : [], [new Date(job.created_at).toLocaleString()]];
      for (const content of cells) {
        const cell = document.createElement("td");
        cell.append(...content);
        row.append(cell);
      }
      return row;
    }),
  );
}

// Follows a job to its end and shows it; `file` is its recording, when it was picked here.
async function openJob(jobId, file) {
  shown.file = file;
  $("progress-section").hidden = false;
  await showResult(await follow(jobId), file);
}

async function showResult(job, file) {
  if (job.status === "FAILED") throw new Error(`the job failed: ${job.failure_reason}`);
  if (job.status === "PARTIAL") $("error").textContent = `some chunks failed: ${job.failure_reason}`;
  const text = await fetch(job.downloads.txt);
  $("transcript").textContent = await text.text();
  $("downloads").replaceChildren(
    ...Object.entries(job.downloads).flatMap(([format, url]) => {
      const link = document.createElement("a");
      link.href = url;
      link.textContent = format.toUpperCase();
      link.download = `transcript.${format}`;
      return [link, " "];
    }),
  );
  await showCues(job, file);
  $("result").hidden = false;
}

// Runs one step of the page (upload, re-run, delete) with the buttons off and its error shown.
async function step(work) {
  $("error").textContent = "";
  $("result").hidden = true;
  for (const button of ["cancel", "rerun", "delete"]) $(button).hidden = true;
  $("start").disabled = true;
  try {
    await work();
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("start").disabled = false;
  }
}

$("rerun").addEventListener("click", () =>
  step(async () => {
    await api(`/jobs/${shown.jobId}/rerun`, { method: "POST" });
    await openJob(shown.jobId, shown.file);
  }),
);

// The step following the job stays on: it sees the job end (FAILED, "cancelled by its owner").
$("cancel").addEventListener("click", async () => {
  $("cancel").disabled = true;
  try {
    await api(`/jobs/${shown.jobId}/cancel`, { method: "POST" });
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("cancel").disabled = false;
  }
});

$("delete").addEventListener("click", () => {
  if (!confirm(`Delete the job of ${shown.filename}, its recording and its transcripts, for good?`)) return;
  return step(async () => {
    await api(`/jobs/${shown.jobId}`, { method: "DELETE" });
    $("progress-section").hidden = true;
    await refreshJobs();
  });
});

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  return step(async () => {
    const request = {
      filename: file.name,
      content_type: typeOf(file),
      size_bytes: file.size,
      priority: $("priority").value,
    };
    if ($("language").value) request.language = $("language").value;
    else if ($("mixed-languages").checked) request.mixed_languages = true;
    if ($("prompt").value.trim()) request.prompt = $("prompt").value.trim();
    $("progress-section").hidden = false;
    $("chunks").replaceChildren();
    $("upload-note").textContent = "";
    const sha256 = await sha256Of(file, (share) => ($("hash-progress").value = share * 100));
    if (sha256) request.sha256 = sha256;
    $("hash-progress").value = 100;
    const ticket = await api("/uploads", { method: "POST", body: JSON.stringify(request) });
    $("job-id").textContent = ticket.job_id;
    if (ticket.upload) {
      await uploadToS3(ticket.upload, file, (share) => ($("upload-progress").value = share * 100));
    } else {
      $("upload-note").textContent = "already transcribed: nothing uploaded";
    }
    $("upload-progress").value = 100;
    await openJob(ticket.job_id, file);
    await refreshJobs();
  });
});

// The list never hides what is shown: its errors go to the error line only.
const refreshJobs = () => showJobs().catch((error) => ($("error").textContent = error.message));
$("refresh-jobs").addEventListener("click", refreshJobs);

settings
  .then(async () => {
    const query = new URLSearchParams(location.search);
    if (signIn && (query.has("code") || query.has("error"))) await finishSignIn(query);
  })
  .catch((error) => ($("error").textContent = error.message))
  .finally(() => {
    showAccount();
    if (stored(TOKENS) || $("token").value) refreshJobs();
  });
