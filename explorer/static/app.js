// The explorer page: every image is an <img> filled from this server's endpoints (docs/explorer.md).
// Latest wins: a new request for an image slot aborts the one still in flight for that slot.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let qTouched = false;                 // the dimension sliders were moved by hand: send q explicitly
const shown = {};                     // slot -> URL of the image shown (or being fetched)
const inflight = {};                  // slot -> AbortController
const objectUrls = {};                // slot -> blob URL to revoke

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function source(selectId, seedId) {
  const v = $(selectId).value;
  return v === "seed" ? "seed:" + ($(seedId).value || "0") : v;
}

function qValues() {
  return Array.from(document.querySelectorAll("#qdims input")).map((el) => Number(el.value).toFixed(4));
}

// Parameters of the sharp image (q does not change it) and of the degraded one.
function sharpParams() {
  const p = new URLSearchParams();
  p.set("src", source("src", "seed"));
  p.set("trunc", $("trunc").value);
  if ($("dir").value && Number($("strength").value) !== 0) {
    p.set("direction", $("dir").value);
    p.set("strength", $("strength").value);
  }
  return p;
}

function degradedParams() {
  const p = sharpParams();
  if (qTouched) p.set("q", qValues().join(","));
  else if ($("qseed").value !== "") p.set("q_seed", $("qseed").value);
  p.set("scale", $("scale").value);
  if ($("ref-on").checked) {
    p.set("ref", source("ref", "ref-seed"));
    p.set("alpha", $("alpha").value);
  }
  return p;
}

function showImage(slot, params) {
  const url = "/image/" + slot + ".png?" + params.toString();
  $("link-" + slot).href = url;
  if (shown[slot] === url) return;
  shown[slot] = url;
  if (inflight[slot]) inflight[slot].abort();
  const ctrl = new AbortController();
  inflight[slot] = ctrl;
  fetch(url + "&slot=" + slot, { signal: ctrl.signal })
    .then(async (r) => {
      if (r.status === 409) return;                       // overtaken by a newer request
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      const blob = await r.blob();
      if (ctrl.signal.aborted) return;
      if (objectUrls[slot]) URL.revokeObjectURL(objectUrls[slot]);
      objectUrls[slot] = URL.createObjectURL(blob);
      const img = $("img-" + slot);
      img.src = objectUrls[slot];
      img.dataset.url = url;
      $("status").textContent = "";
    })
    .catch((e) => {
      if (e.name === "AbortError") return;
      shown[slot] = null;
      $("status").textContent = e.message;
    })
    .finally(() => { if (inflight[slot] === ctrl) delete inflight[slot]; });
}

function update() {
  for (const id of ["trunc", "scale", "alpha", "strength"]) $(id + "-out").textContent = $(id).value;
  showImage("sharp", sharpParams());
  if (info.q_dim) showImage("degraded", degradedParams());
}

// The base q of the current source (or q seed) into the dimension sliders.
async function refreshQ() {
  if (!info.q_dim) return;
  const p = new URLSearchParams({ src: source("src", "seed") });
  if ($("qseed").value !== "") p.set("q_seed", $("qseed").value);
  try {
    const r = await getJSON("/api/q?" + p.toString());
    setQ(r.q, false);
  } catch (e) {
    $("status").textContent = e.message;
  }
}

function setQ(values, touched) {
  document.querySelectorAll("#qdims input").forEach((el, i) => {
    el.value = values[i];
    el.nextElementSibling.textContent = Number(values[i]).toFixed(2);
  });
  qTouched = touched;
  update();
}

function buildQControls() {
  const box = $("qdims");
  for (let i = 0; i < info.q_dim; i++) {
    const label = document.createElement("label");
    label.innerHTML = "q" + i + " ";
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -3, max: 3, step: 0.05, value: 0, id: "q" + i });
    const out = document.createElement("output");
    input.addEventListener("input", () => {
      out.textContent = Number(input.value).toFixed(2);
      qTouched = true;
      update();
    });
    label.append(input, " ", out);
    box.append(label);
  }
  for (const [name, vec] of Object.entries(info.q_directions)) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.title = "named degradation direction of the model card";
    b.addEventListener("click", () => setQ(vec, true));
    $("named").append(b);
  }
}

function fillUploads() {
  for (const sel of [$("src"), $("ref")]) {
    const have = new Set(Array.from(sel.options).map((o) => o.value));
    for (const u of info.uploads) {
      if (have.has(u.src)) continue;
      const o = document.createElement("option");
      o.value = u.src;
      o.textContent = "upload: " + u.name;
      sel.append(o);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Restoration of an upload: POST the file, then poll the job until it ends.

async function upload(file) {
  $("job-status").textContent = "uploading " + file.name + "…";
  $("job-status").className = "";
  $("progress").value = 0;
  $("job-result").removeAttribute("src");
  $("job-download").removeAttribute("href");
  $("job-q").textContent = "";
  try {
    const job = await getJSON("/api/restore?name=" + encodeURIComponent(file.name), { method: "POST", body: file });
    $("job-input").src = job.input;
    poll(job.id);
  } catch (e) {
    $("job-status").textContent = e.message;
    $("job-status").className = "error";
  }
}

async function poll(id) {
  let job;
  try {
    job = await getJSON("/api/restore/" + id);
  } catch (e) {
    $("job-status").textContent = e.message;
    return;
  }
  if (job.state === "queued" || job.state === "running") {
    const stage = { stage1: "optimising w, q", pti: "pivotal tuning", writing: "writing" }[job.stage] || "starting";
    $("job-status").textContent = job.state === "queued" ? "queued" :
      stage + (job.steps ? " " + job.step + "/" + job.steps : "") + " · " + job.seconds + " s";
    if (job.steps) $("progress").value = job.step / job.steps;
    setTimeout(() => poll(id), 250);
    return;
  }
  if (job.state === "error") {
    $("job-status").textContent = job.message;
    $("job-status").className = "error";
    return;
  }
  $("progress").value = 1;
  $("job-status").textContent = "done in " + job.seconds + " s" + (job.message ? " · " + job.message : "");
  if (job.result) {
    $("job-result").src = job.result;
    $("job-download").href = job.result + "?download=1";
  }
  if (job.q) {
    const norm = Math.sqrt(job.q.reduce((s, v) => s + v * v, 0));
    $("job-q").textContent = "estimated q (|q| = " + norm.toFixed(2) + "): " + job.q.map((v) => v.toFixed(2)).join(" ");
    info = await getJSON("/api/info");
    fillUploads();
  }
}

// ------------------------------------------------------------------------------------------

async function start() {
  try {
    info = await getJSON("/api/info");
  } catch (e) {
    $("model").textContent = e.message;
    return;
  }
  $("model").textContent = info.network + " · " + info.resolution + "×" + info.resolution + " · q_dim " +
    info.q_dim + " · " + info.dtype + " on " + info.device + (info.encoder ? " · encoder" : "");
  if (!info.q_dim) for (const id of ["q-box", "ref-box"]) $(id).hidden = true;
  for (const name of info.directions) {
    const o = document.createElement("option");
    o.value = o.textContent = name;
    $("dir").append(o);
  }
  buildQControls();
  fillUploads();
  for (const id of ["trunc", "scale", "alpha", "strength", "dir", "ref", "ref-seed", "ref-on"]) {
    $(id).addEventListener("input", update);
  }
  for (const id of ["src", "seed", "qseed"]) $(id).addEventListener("input", refreshQ);
  $("seed-random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 100000); refreshQ(); });
  $("q-random").addEventListener("click", () => { $("qseed").value = Math.floor(Math.random() * 100000); refreshQ(); });
  $("file").addEventListener("change", () => { if ($("file").files.length) upload($("file").files[0]); });
  await refreshQ();
  update();
}

start();
