// sttpipe web client: no framework, no build step. Copy it and change what you need.
// 0. hash the file in a Web Worker            (a recording already transcribed is not sent)
// 1. POST /uploads -> a pre-signed S3 form   2. POST the file straight to S3 (progress bar)
// 3. poll GET /jobs/{id} until it ends         4. show the transcript and the download links
// 5. if some chunks failed: POST /jobs/{id}/rerun redoes only those, then back to 3
// 6. the recording picked plays beside its lines; GET /jobs lists the tenant's jobs
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["COMPLETED", "PARTIAL", "FAILED"]);
const POLL_MS = 1000;
// Browsers leave File.type empty for some audio types; the API needs one it accepts.
const TYPES = { flac: "audio/flac", wav: "audio/wav", mp3: "audio/mpeg", ogg: "audio/ogg",
  opus: "audio/opus", m4a: "audio/mp4", webm: "audio/webm", mp4: "video/mp4", mov: "video/quicktime" };
const typeOf = (file) => file.type || TYPES[file.name.split(".").pop().toLowerCase()] || "";

// Settings may come in the URL fragment (never sent to a server): #token=...&api=...
const fragment = new URLSearchParams(location.hash.slice(1));
$("api-url").value = fragment.get("api") || location.origin;
$("token").value = fragment.get("token") || "";

async function api(path, options = {}) {
  const response = await fetch($("api-url").value.replace(/\/$/, "") + path, {
    ...options,
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${$("token").value}`,
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
  $("job-id").textContent = job.job_id;
  $("job-status").textContent = job.status;
  $("job-counts").textContent = total ? `${done}/${total} chunks` : "";
  $("job-eta").textContent = job.eta_seconds ? `about ${Math.ceil(job.eta_seconds)} s left` : "";
  $("job-progress").max = Math.max(total, 1);
  $("job-progress").value = FINAL.has(job.status) ? $("job-progress").max : done;
  $("chunks").replaceChildren(
    ...job.chunks.map((c) => {
      const box = document.createElement("span");
      box.className = c.state;
      box.title = `chunk ${c.index}: ${c.state}${c.error ? " — " + c.error : ""}`;
      return box;
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

const clock = (s) => `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

// The JSON transcript's lines, each with its time; with the recording (the file picked for
// this job), a time plays it from there.
async function showCues(job, file) {
  const player = $("player");
  player.hidden = !file;
  if (player.dataset.url) URL.revokeObjectURL(player.dataset.url);
  player.dataset.url = file ? URL.createObjectURL(file) : "";
  player.src = player.dataset.url;
  const transcript = await (await fetch(job.downloads.json)).json();
  $("cues").replaceChildren(
    ...transcript.segments.map((segment) => {
      const line = document.createElement("li");
      const time = document.createElement("button");
      time.type = "button";
      time.className = "cue";
      time.textContent = clock(segment.start);
      time.disabled = !file;
      time.addEventListener("click", () => {
        player.currentTime = segment.start;
        player.play().catch(() => {}); // a browser may refuse to play until the user has
      });
      line.append(time, " ", segment.text);
      return line;
    }),
  );
}

async function showJobs() {
  const page = await api("/jobs?limit=20");
  $("jobs").tBodies[0].replaceChildren(
    ...page.jobs.map((job) => {
      const row = document.createElement("tr");
      for (const value of [job.filename, job.status, new Date(job.created_at).toLocaleString()]) {
        const cell = document.createElement("td");
        cell.textContent = value; // a file name is the tenant's text: never HTML
        row.append(cell);
      }
      row.className = "job";
      row.dataset.jobId = job.job_id;
      row.addEventListener("click", () =>
        step(async () => {
          $("progress-section").hidden = false;
          await showResult(await follow(job.job_id), null);
        }),
      );
      return row;
    }),
  );
}

async function showResult(job, file) {
  // A job whose chunks failed (not one whose upload was refused) can redo just those.
  $("rerun").hidden = !job.chunks.some((c) => c.state === "FAILED");
  $("rerun").dataset.jobId = job.job_id;
  $("rerun").file = file;
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

// Runs one step of the page (upload, re-run) with the buttons off and its error shown.
async function step(work) {
  $("error").textContent = "";
  $("result").hidden = true;
  $("rerun").hidden = true;
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
    const jobId = $("rerun").dataset.jobId;
    await api(`/jobs/${jobId}/rerun`, { method: "POST" });
    await showResult(await follow(jobId), $("rerun").file || null);
  }),
);

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
    await showResult(await follow(ticket.job_id), file);
    await refreshJobs();
  });
});

// The list never hides what is shown: its errors go to the error line only.
const refreshJobs = () => showJobs().catch((error) => ($("error").textContent = error.message));
$("refresh-jobs").addEventListener("click", refreshJobs);
if ($("token").value) refreshJobs();
