// captionkit's page: plain JavaScript against the /v1 API, no build step.
// Each dropped image is its own request, so captions appear as they arrive; the server
// batches concurrent requests through one loaded model.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem("captionkit-token") || "",
  info: null,
  backend: null,
  items: [], // {id, name, file?, path?, record, text, saved, el}
  nextId: 1,
};

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) {
    $("#auth").hidden = false;
    throw new Error("this server needs a token");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("retry-after") || 0);
    throw error;
  }
  return body;
}

function say(text) { $("#status").textContent = text; }

// -- settings ----------------------------------------------------------------------------
async function start() {
  try {
    const health = await api("/v1/health");
    if (health.auth && !state.token) {
      $("#auth").hidden = false;
      say("Enter the server's token to start.");
      $("#token").focus();
      return;
    }
    const [styles, backends] = await Promise.all([api("/v1/styles"), api("/v1/backends")]);
    state.info = styles;
    state.backend = backends.loaded;
    $("#auth").hidden = true;
    $("#model").textContent = `${backends.loaded.name} · ${backends.loaded.model}`;
    const select = $("#style");
    select.innerHTML = "";
    for (const s of styles.styles) {
      const opt = document.createElement("option");
      opt.value = s.name;
      opt.textContent = `${s.name} — ${s.description}`;
      opt.selected = s.name === styles.default;
      select.append(opt);
    }
    $("#max-tokens").value = styles.decoding.max_new_tokens;
    $("#prompt").disabled = !backends.loaded.accepts_prompt;
    if (!backends.loaded.accepts_prompt) $("#prompt").placeholder = "this backend takes no prompt";
    $("#num").disabled = !backends.loaded.multiple_candidates;
    buildOptions(backends.loaded.allowed_options || {});
    if (styles.root) await loadFolder();
    say("Ready.");
  } catch (err) {
    say(`Cannot reach the server: ${err.message}`);
  }
}

function buildOptions(allowed) {
  const box = $("#options");
  box.innerHTML = "";
  for (const [name, schema] of Object.entries(allowed)) {
    const div = document.createElement("div");
    const id = `opt-${name}`;
    div.innerHTML = `<label for="${id}"></label><input id="${id}" type="text">`;
    div.querySelector("label").textContent = `${name} (backend option)`;
    div.querySelector("input").placeholder = schema.default !== undefined ? String(schema.default) : "";
    div.querySelector("input").dataset.option = name;
    box.append(div);
  }
}

function settings(extra = {}) {
  const decoding = {};
  const maxTokens = Number($("#max-tokens").value);
  if (maxTokens && state.info && maxTokens !== state.info.decoding.max_new_tokens) {
    decoding.max_new_tokens = maxTokens;
  }
  const options = {};
  for (const input of document.querySelectorAll("[data-option]")) {
    if (input.value === "") continue;
    try { options[input.dataset.option] = JSON.parse(input.value); }
    catch { options[input.dataset.option] = input.value; }
  }
  const out = { style: $("#style").value, decoding: { ...decoding, ...(extra.decoding || {}) }, options };
  if ($("#prompt").value && !$("#prompt").disabled) out.prompt = $("#prompt").value;
  if (!$("#num").disabled) out.num_captions = Number($("#num").value) || 1;
  return out;
}

// -- cards -------------------------------------------------------------------------------
function addCard(item) {
  const node = $("#card").content.firstElementChild.cloneNode(true);
  const id = `cap-${item.id}`;
  node.querySelector(".name").textContent = item.name;
  node.querySelector(".caption-label").htmlFor = id;
  node.querySelector(".caption-label").textContent = `Caption of ${item.name}`;
  const area = node.querySelector(".caption");
  area.id = id;
  area.addEventListener("input", () => {
    item.text = area.value;
    node.querySelector(".thumb").alt = area.value || `image ${item.name}`;
    node.classList.toggle("dirty", item.path !== undefined && item.text !== item.saved);
  });
  node.querySelector(".regen").addEventListener("click", () => regenerate(item));
  node.querySelector(".copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(area.value); say(`Copied the caption of ${item.name}.`); }
    catch { area.select(); document.execCommand("copy"); say(`Copied the caption of ${item.name}.`); }
  });
  const save = node.querySelector(".save");
  if (item.path !== undefined) {
    save.hidden = false;
    save.addEventListener("click", () => saveSidecar(item));
  }
  item.el = node;
  $("#results").append(node);
  return node;
}

function show(item) {
  const el = item.el;
  const area = el.querySelector(".caption");
  const meta = el.querySelector(".meta");
  el.classList.remove("busy");
  area.value = item.text || "";
  el.querySelector(".thumb").alt = item.text || `image ${item.name}`;
  const r = item.record;
  el.classList.toggle("failed", Boolean(r && r.error));
  meta.classList.toggle("error", Boolean(r && r.error));
  if (r && r.error) meta.textContent = `Failed: ${r.error}`;
  else if (r) {
    const alt = (r.candidates || []).slice(1).map((c) => c.text);
    meta.textContent = `${r.cached ? "from the store" : `${Math.round(r.timings.total_ms)} ms`}` +
      (alt.length ? ` · other candidates: ${alt.join(" | ")}` : "");
  } else meta.textContent = item.saved ? "saved sidecar" : "no sidecar yet";
  el.classList.toggle("dirty", item.path !== undefined && item.text !== item.saved);
  refreshButtons();
}

function refreshButtons() {
  const any = state.items.some((i) => i.record && !i.record.error);
  $("#download-jsonl").disabled = !any;
  $("#download-zip").disabled = !any;
  $("#clear").disabled = state.items.length === 0;
}

// -- captioning --------------------------------------------------------------------------
async function captionFile(item, extra = {}) {
  item.el.classList.add("busy");
  item.el.querySelector(".meta").textContent = "captioning…";
  const form = new FormData();
  form.append("images", item.file, item.name);
  const s = settings(extra);
  for (const [k, v] of Object.entries(s)) {
    form.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  for (let attempt = 0; ; attempt++) {
    try {
      const body = await api("/v1/caption", { method: "POST", body: form });
      item.record = body.results[0];
      item.text = item.record.text || "";
      break;
    } catch (err) {
      if (err.status === 503 && attempt < 5) { // the queue is full: wait as told, then retry
        await new Promise((r) => setTimeout(r, 1000 * (err.retryAfter || 1)));
        continue;
      }
      item.record = { error: err.message, candidates: [], timings: { total_ms: 0 } };
      item.text = "";
      break;
    }
  }
  show(item);
}

function addFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|gif|bmp|tiff?)$/i.test(f.name));
  if (!images.length) { say("No images among the dropped files."); return; }
  say(`Captioning ${images.length} image${images.length > 1 ? "s" : ""}…`);
  const jobs = images.map((file) => {
    const item = { id: state.nextId++, name: file.name, file, record: null, text: "" };
    state.items.push(item);
    addCard(item);
    item.el.querySelector(".thumb").src = URL.createObjectURL(file);
    return captionFile(item);
  });
  Promise.all(jobs).then(() => say(`Captioned ${images.length} image${images.length > 1 ? "s" : ""}.`));
  refreshButtons();
}

function regenerate(item) {
  // A fresh seed with sampling: a new candidate instead of the stored one.
  const extra = { decoding: { do_sample: true, seed: Math.floor(Math.random() * 1e9), temperature: 1.0 } };
  if (item.file) return captionFile(item, extra);
  return captionPaths([item], extra);
}

// -- downloads ---------------------------------------------------------------------------
function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

function jsonl() {
  return state.items.filter((i) => i.record && !i.record.error).map((i) => {
    const record = { ...i.record, source: i.path || i.name };
    if (i.text !== i.record.text) { record.original_text = i.record.text; record.text = i.text; record.edited = true; }
    return JSON.stringify(record);
  }).join("\n") + "\n";
}

$("#download-jsonl").addEventListener("click", () => {
  download(new Blob([jsonl()], { type: "application/x-ndjson" }), "captions.jsonl");
  say("Downloaded captions.jsonl.");
});

$("#download-zip").addEventListener("click", async () => {
  const items = state.items.filter((i) => i.record && !i.record.error)
    .map((i) => ({ source: i.path || i.name, text: i.text }));
  try {
    const blob = await api("/v1/sidecars.zip", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ items }),
    });
    download(blob, "captions.zip");
    say("Downloaded captions.zip.");
  } catch (err) { say(`Zip failed: ${err.message}`); }
});

$("#clear").addEventListener("click", () => {
  state.items = state.items.filter((i) => i.path !== undefined);
  for (const el of [...document.querySelectorAll("#results .card")]) {
    if (!state.items.some((i) => i.el === el)) el.remove();
  }
  refreshButtons();
});

// -- --root folder -----------------------------------------------------------------------
async function loadFolder() {
  $("#folder").hidden = false;
  const body = await api("/v1/files");
  for (const entry of body.images) {
    const item = {
      id: state.nextId++, name: entry.path, path: entry.path, record: null,
      text: entry.caption || "", saved: entry.caption,
    };
    state.items.push(item);
    addCard(item);
    show(item);
    api(`/v1/files/image?path=${encodeURIComponent(entry.path)}`)
      .then((blob) => { item.el.querySelector(".thumb").src = URL.createObjectURL(blob); })
      .catch(() => {});
  }
  const missing = body.images.filter((e) => e.caption === null).length;
  $("#folder-summary").textContent = `${body.images.length} images, ${missing} without a sidecar.`;
}

async function captionPaths(items, extra = {}) {
  const max = (state.info && state.info.limits.max_images) || 16;
  for (let i = 0; i < items.length; i += max) {
    const chunk = items.slice(i, i + max);
    chunk.forEach((item) => item.el.classList.add("busy"));
    try {
      const body = await api("/v1/files/caption", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...settings(extra), paths: chunk.map((c) => c.path) }),
      });
      chunk.forEach((item, k) => { item.record = body.results[k]; item.text = item.record.text || item.text; show(item); });
    } catch (err) {
      chunk.forEach((item) => { item.record = { error: err.message, candidates: [] }; show(item); });
    }
  }
}

async function saveSidecar(item) {
  try {
    const saved = await api("/v1/files/sidecar", {
      method: "PUT", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ path: item.path, text: item.text }),
    });
    item.saved = saved.caption;
    item.text = saved.caption;
    show(item);
    item.el.querySelector(".meta").textContent = `saved ${saved.sidecar}`;
    say(`Saved ${saved.sidecar}.`);
  } catch (err) { say(`Could not save ${item.path}: ${err.message}`); }
}

$("#caption-missing").addEventListener("click", async () => {
  const todo = state.items.filter((i) => i.path !== undefined && (i.saved === null || i.saved === undefined));
  say(todo.length ? `Captioning ${todo.length} images…` : "Every image has a sidecar.");
  await captionPaths(todo);
  if (todo.length) say(`Captioned ${todo.length} images; review and save them.`);
});

$("#save-all").addEventListener("click", async () => {
  const changed = state.items.filter((i) => i.path !== undefined && i.text && i.text !== i.saved);
  for (const item of changed) await saveSidecar(item);
  say(`Saved ${changed.length} sidecars.`);
});

// -- input -------------------------------------------------------------------------------
$("#files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
$("#auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("#token").value;
  sessionStorage.setItem("captionkit-token", state.token);
  start();
});

window.captionkit = { state, jsonl };
start();
