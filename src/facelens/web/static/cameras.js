// Cameras page: the cameras and their status (refreshed every 2 s while shown), add one,
// enable/disable, assign galleries, zones and masks (zones.js), remove, and a live preview polled
// as JPEG with the key.
import { api, enc, raw } from "./api.js";
import { can } from "./scopes.js";
import { $, busy, clearError, el, emptyRow, explainName, showError, showNotice } from "./ui.js";
import { closeZones, openZones, setupZones } from "./zones.js";

const REFRESH_MS = 2000;
const PREVIEW_MS = 300;
const COLUMNS = 9;

let loop = null; // the status refresh on show ({timer}); null when the page is not shown
let version = 0; // bumped by every change made here: a list fetched before it is stale
let galleryNames = []; // for the add form and the gallery editors
const rows = new Map(); // camera name -> {camera, row, cells, toggle, editor}
let preview = null; // {name, url, frames, timer} of the preview on show
let refreshError = null; // the message a failed refresh showed, until one works again

// ------------------------------------------------------------------ the table
const galleriesText = (camera) => (camera.galleries.length ? camera.galleries.join(", ") : "—");

// "running", "ended", … or "error" for "error: <why>": the class that colours the status.
const statusKind = (status) => (status.startsWith("error") ? "error" : status);

function makeEntry(camera) {
  const name = camera.name;
  const entry = { camera, editor: null };
  const td = (testid, cls) => el("td", { class: cls, dataset: testid ? { testid } : undefined });
  entry.cells = {
    name: el("td", { class: "camera-name" }, name),
    source: td(null, "source"),
    galleries: td(`camera-galleries-${name}`),
    street: td(`camera-street-${name}`),
    fps: td(`camera-fps-${name}`, "num"),
    status: td(`camera-status-${name}`, "camera-status"),
    alerts: td(`camera-alerts-${name}`, "num"),
    reconnects: td(`camera-reconnects-${name}`, "num"),
  };
  // The street layer: a checkbox for admins, "on" or "off" for the others.
  entry.street = can("admin") ? el("input", {
    type: "checkbox", "aria-label": `Street layer of ${name}`,
    dataset: { testid: `camera-street-toggle-${name}` },
    onchange: (e) => setStreet(entry, e.currentTarget),
  }) : null;
  entry.cells.street.append(entry.street ?? "");
  entry.toggle = el("button", {
    type: "button", dataset: { testid: `camera-toggle-${name}` }, hidden: !can("admin"),
    onclick: (e) => toggle(entry, e.currentTarget),
  });
  const actions = el("td", { class: "actions" },
    entry.toggle, " ",
    el("button", {
      type: "button", dataset: { testid: `camera-assign-${name}` }, hidden: !can("admin"),
      "aria-label": `Edit ${name}`, onclick: () => openEditor(entry),
    }, "Edit…"), " ",
    el("button", {
      type: "button", dataset: { testid: `camera-zones-${name}` }, hidden: !can("admin"),
      "aria-label": `Zones and masks of ${name}`,
      onclick: () => openZones(entry.camera, () => { version += 1; load(); }),
    }, "Zones…"), " ",
    el("button", {
      type: "button", dataset: { testid: `camera-preview-${name}` },
      "aria-label": `Preview ${name}`, onclick: () => openPreview(name),
    }, "Preview"), " ",
    el("button", {
      type: "button", class: "danger", dataset: { testid: `camera-remove-${name}` }, hidden: !can("admin"),
      "aria-label": `Remove ${name}`, onclick: (e) => remove(entry, e.currentTarget),
    }, "Remove"));
  entry.row = el("tr", { dataset: { testid: `camera-${name}`, name } },
    ...Object.values(entry.cells), actions);
  return entry;
}

function updateEntry(entry, camera) {
  entry.camera = camera;
  const { cells } = entry;
  const set = (cell, text) => { if (cell.textContent !== text) cell.textContent = text; };
  set(cells.source, camera.source);
  cells.source.title = camera.source;
  set(cells.galleries, galleriesText(camera));
  if (entry.street) entry.street.checked = camera.scene;
  else set(cells.street, camera.scene ? "on" : "off");
  set(cells.fps, String(camera.fps));
  set(cells.status, camera.status);
  cells.status.dataset.state = statusKind(camera.status);
  set(cells.alerts, String(camera.alerts));
  set(cells.reconnects, String(camera.reconnects));
  const action = camera.enabled ? "Disable" : "Enable";
  set(entry.toggle, action);
  entry.toggle.setAttribute("aria-label", `${action} ${camera.name}`);
}

// Rows are updated in place (an open gallery editor and the focus survive the refresh).
function render(cameras) {
  const tbody = $("#cameras-table tbody");
  const names = new Set(cameras.map((c) => c.name));
  for (const [name, entry] of rows) {
    if (!names.has(name)) forget(name, entry);
  }
  if (cameras.length === 0) {
    tbody.replaceChildren(emptyRow(COLUMNS, "cameras-empty", "No cameras yet."));
    return;
  }
  const wanted = [];
  for (const camera of cameras) {
    let entry = rows.get(camera.name);
    if (!entry) {
      entry = makeEntry(camera);
      rows.set(camera.name, entry);
    }
    updateEntry(entry, camera);
    wanted.push(entry.row);
    if (entry.editor) wanted.push(entry.editor);
  }
  const current = Array.from(tbody.children);
  if (current.length !== wanted.length || current.some((node, i) => node !== wanted[i])) {
    tbody.replaceChildren(...wanted);
  }
}

function forget(name, entry) {
  entry.row.remove();
  if (entry.editor) entry.editor.remove();
  rows.delete(name);
  if (preview && preview.name === name) closePreview();
}

// One fetch of the list. Returns false when refreshing should stop (no scope for it).
async function load() {
  const seen = version;
  let cameras;
  try {
    cameras = await api("/v1/cameras");
  } catch (e) {
    if (e.status === 401) return false; // signed out already
    refreshError = e.message;
    showError(e.message);
    if (rows.size === 0) $("#cameras-table tbody").replaceChildren();
    return e.status !== 403;
  }
  if (seen === version) render(cameras); // else a change made meanwhile: the next one is fresh
  if (refreshError !== null) clearError(refreshError); // the service answers again
  refreshError = null;
  return true;
}

function schedule(current) {
  current.timer = setTimeout(async () => {
    if (loop !== current) return;
    const again = await load();
    if (loop === current && again) schedule(current);
  }, REFRESH_MS);
}

// ------------------------------------------------------------------ galleries to choose from
async function loadGalleries() {
  const select = $("#camera-galleries");
  const chosen = new Set(Array.from(select.selectedOptions, (o) => o.value));
  try {
    galleryNames = (await api("/v1/galleries")).map((g) => g.name);
  } catch (e) {
    // A key without enrol/identify scope cannot list galleries: say why, offer none.
    galleryNames = [];
    select.replaceChildren(el("option", { value: "", disabled: true },
      `(cannot list galleries: ${e.message})`));
    select.disabled = true;
    return;
  }
  select.disabled = galleryNames.length === 0;
  select.replaceChildren(...(galleryNames.length
    ? galleryNames.map((name) => el("option", { value: name, selected: chosen.has(name) }, name))
    : [el("option", { value: "", disabled: true }, "(no galleries yet)")]));
}

const selected = (select) => Array.from(select.selectedOptions, (o) => o.value).filter(Boolean);

// ------------------------------------------------------------------ changes
async function addCamera(event) {
  event.preventDefault();
  const body = {
    name: $("#camera-name").value.trim(),
    source: $("#camera-source").value.trim(),
    galleries: selected($("#camera-galleries")),
    scene: $("#camera-scene").checked,
  };
  const fps = $("#camera-fps").value.trim();
  if (fps) body.fps = Number(fps);
  await busy($("#add-camera"), async () => {
    const camera = await api("/v1/cameras", { method: "POST", json: body })
      .catch(explainName("camera", body.name));
    version += 1;
    $("#add-camera-form").reset();
    render([...Array.from(rows.values(), (e) => e.camera), camera]
      .sort((a, b) => (a.name < b.name ? -1 : 1)));
    showNotice(`Camera ${camera.name} added.`);
  });
}

async function toggle(entry, button) {
  const { name, enabled } = entry.camera;
  await busy(button, async () => {
    const camera = await api(`/v1/cameras/${enc(name)}`,
      { method: "PATCH", json: { enabled: !enabled } });
    version += 1;
    updateEntry(entry, camera);
    showNotice(`Camera ${name} ${camera.enabled ? "enabled" : "disabled"}.`);
  });
}

async function setStreet(entry, box) {
  const { name } = entry.camera;
  await busy(box, async () => {
    const camera = await api(`/v1/cameras/${enc(name)}`,
      { method: "PATCH", json: { scene: box.checked } });
    version += 1;
    updateEntry(entry, camera);
    showNotice(`Camera ${name}: street layer ${camera.scene ? "on (see the Street page)"
      : "off"}.`);
  });
  box.checked = entry.camera.scene; // a refused change leaves it as it was
}

async function remove(entry, button) {
  const { name } = entry.camera;
  if (!confirm(`Remove camera ${name}? It stops now; its events stay.`)) return;
  await busy(button, async () => {
    await api(`/v1/cameras/${enc(name)}`, { method: "DELETE" });
    version += 1;
    forget(name, entry);
    if (rows.size === 0) render([]);
    showNotice(`Camera ${name} removed.`);
  });
}

// The editor: a row under the camera's with its source, frame rate and galleries, and Save /
// Cancel. Only what was changed is sent (a new source or rate restarts the camera).
function openEditor(entry) {
  if (entry.editor) {
    entry.editor.querySelector("input").focus();
    return;
  }
  const { name, galleries, source, fps } = entry.camera;
  const options = [...new Set([...galleryNames, ...galleries])]
    .map((g) => el("option", { value: g, selected: galleries.includes(g) }, g));
  const id = `camera-editor-select-${name}`;
  const select = el("select", { id, multiple: true, size: Math.min(6, Math.max(2, options.length)),
    dataset: { testid: id }, disabled: options.length === 0 },
  options.length ? options : el("option", { value: "", disabled: true }, "(no galleries yet)"));
  const sourceInput = el("input", { id: `camera-editor-source-${name}`, value: source,
    required: true, size: 30 });
  const fpsInput = el("input", { id: `camera-editor-fps-${name}`, type: "number", min: "0.1",
    max: "60", step: "any", required: true, value: String(fps) });
  const save = el("button", {
    type: "submit", dataset: { testid: `camera-editor-save-${name}` },
  }, "Save");
  const field = (input, text) => el("span", { class: "field" },
    el("label", { for: input.id }, text), input);
  const form = el("form", { class: "inline", "aria-label": `Edit ${name}`,
    onsubmit: (e) => {
      e.preventDefault();
      const change = {};
      const chosen = selected(select);
      if (chosen.join() !== galleries.join()) change.galleries = chosen;
      if (sourceInput.value.trim() !== source) change.source = sourceInput.value.trim();
      if (Number(fpsInput.value) !== fps) change.fps = Number(fpsInput.value);
      edit(entry, change, save);
    } },
  field(sourceInput, "Source"), field(fpsInput, "Frames per second"),
  field(select, `Galleries for ${name}`), save,
  el("button", { type: "button", onclick: () => closeEditor(entry) }, "Cancel"));
  entry.editor = el("tr", { class: "editor", dataset: { testid: `camera-editor-${name}` } },
    el("td", { colSpan: COLUMNS }, form));
  entry.row.after(entry.editor);
  sourceInput.focus();
}

function closeEditor(entry) {
  if (entry.editor) entry.editor.remove();
  entry.editor = null;
}

async function edit(entry, change, button) {
  const { name } = entry.camera;
  if (Object.keys(change).length === 0) {
    closeEditor(entry);
    showNotice(`Camera ${name}: nothing changed.`);
    return;
  }
  await busy(button, async () => {
    const camera = await api(`/v1/cameras/${enc(name)}`, { method: "PATCH", json: change });
    version += 1;
    closeEditor(entry);
    updateEntry(entry, camera);
    const said = [];
    if (change.source !== undefined) said.push(`reads ${camera.source}`);
    if (change.fps !== undefined) said.push(`at ${camera.fps} fps`);
    if (change.galleries) {
      said.push(`watches ${camera.galleries.length ? camera.galleries.join(", ") : "no gallery"}`);
    }
    showNotice(`Camera ${name} now ${said.join(", ")}.`);
  });
}

// ------------------------------------------------------------------ live preview
// <img src> cannot send the key: preview.jpg is fetched with it every PREVIEW_MS and shown
// through an object URL (the previous one revoked). A 404 (no frame yet, camera not running)
// keeps polling and keeps the last frame; any other error stops the preview.
function openPreview(name) {
  closePreview();
  preview = { name, url: null, frames: 0, timer: null };
  const img = $("#preview-img");
  img.removeAttribute("src");
  img.alt = `Live preview of camera ${name}`;
  img.dataset.frames = "0";
  $("#preview-title").textContent = `Preview: ${name}`;
  $("#preview-state").textContent = "Waiting for the first frame…";
  $("#camera-preview").hidden = false;
  pollPreview(preview);
}

async function pollPreview(current) {
  let text;
  try {
    const response = await raw(`/v1/cameras/${enc(current.name)}/preview.jpg`);
    const blob = await response.blob();
    if (preview !== current) return; // closed or replaced meanwhile
    const url = URL.createObjectURL(blob);
    const img = $("#preview-img");
    img.src = url;
    if (current.url) URL.revokeObjectURL(current.url);
    current.url = url;
    current.frames += 1;
    img.dataset.frames = String(current.frames);
    const status = rows.get(current.name)?.camera.status ?? "running";
    const at = new Date().toLocaleTimeString();
    text = ["starting", "running"].includes(status)
      ? `Live · frame fetched at ${at}`
      : `Camera ${status} · its last frame, fetched at ${at}`;
  } catch (e) {
    if (preview !== current) return;
    if (e.status !== 404) {
      if (e.status !== 401) showError(e.message);
      $("#preview-state").textContent = `Preview stopped: ${e.message}`;
      return;
    }
    text = current.frames
      ? `No new frame (${e.message}); the last one is kept.`
      : `Waiting for the first frame (${e.message})…`;
  }
  $("#preview-state").textContent = text;
  current.timer = setTimeout(() => {
    if (preview === current) pollPreview(current);
  }, PREVIEW_MS);
}

function closePreview() {
  if (!preview) return;
  clearTimeout(preview.timer);
  if (preview.url) URL.revokeObjectURL(preview.url);
  preview = null;
  const img = $("#preview-img");
  img.removeAttribute("src");
  img.dataset.frames = "0";
  $("#camera-preview").hidden = true;
}

// ------------------------------------------------------------------ page
export async function showCameras() {
  leaveCameras();
  const current = { timer: null };
  loop = current;
  const [again] = await Promise.all([load(), loadGalleries()]);
  if (loop === current && again) schedule(current);
}

// Leaving the page (or signing out): no more refreshes, no more preview requests.
export function leaveCameras() {
  if (loop) clearTimeout(loop.timer);
  loop = null;
  closePreview();
  closeZones();
  for (const entry of rows.values()) closeEditor(entry);
}

export function setupCameras() {
  $("#add-camera-form").addEventListener("submit", addCamera);
  $("#preview-close").addEventListener("click", closePreview);
  setupZones();
}
