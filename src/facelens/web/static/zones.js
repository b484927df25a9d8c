// Zones and masks of one camera, drawn on its latest preview frame (as Frigate draws them):
// click to add corners, "Close polygon" to finish one, "Save" to send them all. Faces are
// watched only inside zones (everywhere when there is none); masks are never looked at.
// Corners are kept as fractions of the frame, as the API stores them.
import { api, enc, raw } from "./api.js";
import { $, busy, showNotice } from "./ui.js";

const COLOURS = { zone: "rgba(26, 127, 55, 0.30)", mask: "rgba(40, 40, 40, 0.60)" };
const EDGES = { zone: "#1a7f37", mask: "#222" };

// From the keyboard: the arrow keys move a cross (Shift: 5 times as far), Enter or Space places
// a corner under it.
const STEP = 0.02;

let editing = null; // {name, zones, masks, drawing: [[x, y]], cursor: [x, y], image, onSaved}

export async function openZones(camera, onSaved) {
  editing = { name: camera.name, zones: structuredClone(camera.zones || []),
    masks: structuredClone(camera.masks || []), drawing: [], cursor: [0.5, 0.5], image: null,
    onSaved };
  $("#zones-title").textContent = `Zones and masks: ${camera.name}`;
  $("#zone-editor").hidden = false;
  const current = editing;
  try { // the latest frame to draw on; a camera not running yet gives a blank one
    const response = await raw(`/v1/cameras/${enc(camera.name)}/preview.jpg`);
    const image = await createImageBitmap(await response.blob());
    if (editing === current) editing.image = image;
  } catch {
    // no frame: draw on the blank canvas
  }
  if (editing !== current) return;
  const canvas = $("#zones-canvas");
  if (editing.image) {
    canvas.width = editing.image.width;
    canvas.height = editing.image.height;
  }
  $("#zones-state").textContent = editing.image ? "" : "No preview yet: drawing on a blank frame.";
  $("#zone-editor").scrollIntoView({ block: "nearest" });
  canvas.focus(); // redraws, with the keyboard's cross
}

export function closeZones() {
  editing = null;
  $("#zone-editor").hidden = true;
}

function redraw() {
  const canvas = $("#zones-canvas");
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  if (editing.image) g.drawImage(editing.image, 0, 0);
  else { g.fillStyle = "#888"; g.fillRect(0, 0, width, height); }
  const path = (points, kind, closed) => {
    g.beginPath();
    points.forEach(([x, y], i) => (i ? g.lineTo(x * width, y * height) : g.moveTo(x * width, y * height)));
    if (closed) { g.closePath(); g.fillStyle = COLOURS[kind]; g.fill(); }
    g.strokeStyle = EDGES[kind];
    g.lineWidth = 2;
    g.stroke();
  };
  for (const zone of editing.zones) path(zone, "zone", true);
  for (const mask of editing.masks) path(mask, "mask", true);
  if (editing.drawing.length) path(editing.drawing, kindChosen(), false);
  for (const [x, y] of editing.drawing) g.fillRect(x * width - 3, y * height - 3, 6, 6);
  if (document.activeElement === canvas) { // the keyboard's cross
    const [x, y] = [editing.cursor[0] * width, editing.cursor[1] * height];
    g.strokeStyle = "#fff";
    g.lineWidth = 2;
    g.strokeRect(x - 8, y - 8, 16, 16);
    g.beginPath();
    g.moveTo(x - 14, y); g.lineTo(x + 14, y); g.moveTo(x, y - 14); g.lineTo(x, y + 14);
    g.stroke();
  }
  $("#zones-count").textContent = `${editing.zones.length} zone(s), ${editing.masks.length} ` +
    `mask(s)${editing.drawing.length ? `; drawing ${editing.drawing.length} corner(s)` : ""}`;
}

const kindChosen = () => $('#zone-editor input[name="zone-kind"]:checked').value;

const fraction = (v) => Math.min(1, Math.max(0, Math.round(v * 1000) / 1000));

function addCorner(event) {
  if (!editing) return;
  const box = event.currentTarget.getBoundingClientRect();
  editing.drawing.push([fraction((event.clientX - box.left) / box.width),
    fraction((event.clientY - box.top) / box.height)]);
  redraw();
}

const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

function keyboardCorner(event) {
  if (!editing) return;
  const move = MOVES[event.key];
  if (move) {
    const step = event.shiftKey ? 5 * STEP : STEP;
    editing.cursor = editing.cursor.map((v, i) => fraction(v + move[i] * step));
    const [x, y] = editing.cursor.map((v) => Math.round(v * 100));
    $("#zones-state").textContent = `Cross at ${x}% across, ${y}% down.`;
  } else if (event.key === "Enter" || event.key === " ") {
    editing.drawing.push([...editing.cursor]);
    $("#zones-state").textContent = `Corner ${editing.drawing.length} placed.`;
  } else {
    return;
  }
  event.preventDefault(); // no scrolling, no click
  redraw();
}

function closePolygon() {
  if (editing.drawing.length < 3) {
    $("#zones-state").textContent = "A zone or mask needs at least 3 corners.";
    return;
  }
  editing[kindChosen() === "zone" ? "zones" : "masks"].push(editing.drawing);
  editing.drawing = [];
  $("#zones-state").textContent = "";
  redraw();
}

function clearAll() {
  editing.zones = [];
  editing.masks = [];
  editing.drawing = [];
  redraw();
}

async function save() {
  const { name, zones, masks, onSaved } = editing;
  await busy($("#zones-save"), async () => {
    await api(`/v1/cameras/${enc(name)}`, { method: "PATCH", json: { zones, masks } });
    closeZones();
    showNotice(`Zones of ${name} saved: ${zones.length} zone(s), ${masks.length} mask(s).`);
    if (onSaved) onSaved();
  });
}

export function setupZones() {
  const canvas = $("#zones-canvas");
  canvas.addEventListener("click", addCorner);
  canvas.addEventListener("keydown", keyboardCorner);
  for (const change of ["focus", "blur"]) {
    canvas.addEventListener(change, () => { if (editing) redraw(); });
  }
  $("#zones-close-polygon").addEventListener("click", closePolygon);
  $("#zones-undo").addEventListener("click", () => { editing.drawing.pop(); redraw(); });
  $("#zones-clear").addEventListener("click", clearAll);
  $("#zones-save").addEventListener("click", save);
  $("#zones-cancel").addEventListener("click", closeZones);
}
