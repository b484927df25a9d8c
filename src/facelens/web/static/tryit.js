// "Try it": detect/analyse a photo, optionally identify in a gallery and verify against a
// second photo; draw the faces on a canvas and list them in a table.
import { api, enc } from "./api.js";
import { drawFaces, iou } from "./draw.js";
import { can, canAttributes } from "./scopes.js";
import { $, el, emptyRow, showError } from "./ui.js";

export async function showTry() {
  const select = $("#try-gallery");
  const chosen = select.value;
  const none = el("option", { value: "" }, "— none —");
  try {
    const galleries = await api("/v1/galleries");
    select.replaceChildren(none, ...galleries.map((g) => el("option", { value: g.name }, g.name)));
    select.value = galleries.some((g) => g.name === chosen) ? chosen : "";
    select.disabled = false;
  } catch (e) {
    // A key without enrol/identify scope cannot list galleries: offer none, no alarm.
    select.replaceChildren(el("option", { value: "" }, `— none (${e.message}) —`));
    select.disabled = true;
  }
}

function post(path, fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value instanceof File) form.append(name, value, value.name);
    else form.append(name, value);
  }
  return api(path, { method: "POST", form });
}

const pct = (x) => (typeof x === "number" ? x.toFixed(2) : "—");

function describeAttributes(face) {
  const a = face.attributes;
  if (!a) return "";
  const age = typeof a.age === "number" ? Math.round(a.age) : "?";
  return `${age}${a.age_error ? ` ±${Math.round(a.age_error)}` : ""} / ${a.sex ?? "?"}`;
}

// The identify answer for one detected face: the identify face whose box overlaps it most.
function matchIdentity(face, identified) {
  let best = null;
  let bestIou = 0.5;
  for (const entry of identified) {
    const overlap = iou(face.box, entry.face.box);
    if (overlap >= bestIou) {
      best = entry;
      bestIou = overlap;
    }
  }
  return best;
}

function identityText(entry) {
  if (!entry) return null;
  const top = entry.candidates && entry.candidates[0];
  if (entry.unknown || !top) return "unknown";
  return `${top.name} (${top.confidence})`;
}

function verifyText(v) {
  const verdict = v.match ? "same person" : "not the same person";
  // The threshold shown is the operating point's at this FAR (the same on every call); the
  // edge a cascade decision used is in decided_by's wording, not here.
  const extra = typeof v.score === "number" ? ` · score ${v.score.toFixed(3)} / threshold ` +
    `${(v.far_threshold ?? v.threshold).toFixed(3)}` : "";
  const box = (b) => `(${b.map(Math.round).join(", ")})`;
  // CompareFaces: every face of the second photo, matched or not, with its box.
  const perFace = v.unmatched_faces && (v.face_matches.length + v.unmatched_faces.length > 1)
    ? ` · second photo: ${v.face_matches.length} of ` +
      `${v.face_matches.length + v.unmatched_faces.length} faces match` +
      (v.face_matches.length ? ` at ${v.face_matches.map((m) => box(m.faces[1].box)).join(", ")}`
        : "")
    : "";
  return `Verify: ${verdict} — confidence ${v.confidence} at FAR ${v.far}` +
    `${v.decided_by ? ` · decided by ${v.decided_by}` : ""}${extra}${perFace}`;
}

function renderFaces(rows, galleryChosen) {
  const tbody = $("#try-faces tbody");
  if (rows.length === 0) {
    tbody.replaceChildren(emptyRow(5, "no-faces", "No face found."));
    return;
  }
  tbody.replaceChildren(...rows.map((r) => el("tr", { dataset: { testid: `face-${r.index}` } },
    el("td", { class: "num" }, r.index),
    el("td", {}, r.face.box.map((v) => Math.round(v)).join(" ")),
    el("td", {}, `${pct(r.face.quality && r.face.quality.score)}` +
      (r.face.quality && r.face.quality.reasons && r.face.quality.reasons.length
        ? ` (${r.face.quality.reasons.join(", ")})` : "")),
    el("td", {}, describeAttributes(r.face) || "—"),
    el("td", { class: "identity", dataset: { testid: `identity-${r.index}` } },
      r.identity ?? (galleryChosen ? "—" : "")))));
}

async function analyse(event) {
  event.preventDefault();
  const image = $("#try-image").files[0];
  const imageB = $("#try-image-b").files[0];
  const gallery = $("#try-gallery").value;
  const attributes = $("#try-attributes").checked;
  if (!image) return;
  if (!can("detect") && !gallery && !imageB) {
    showError(can("identify") ? "This key may not detect faces: choose a gallery to identify in."
      : "This key may not detect faces: add a second photo to compare.");
    return;
  }
  const button = $("#try-submit");
  button.disabled = true;
  $("#try-result").hidden = true;
  try {
    // Only the calls this key may make: a key without detect still sees identify's faces.
    const calls = [
      !can("detect") ? Promise.reject(new Error("")) :
        attributes && canAttributes()
          ? post("/v1/analyze", { image, attributes: "true" })
          : post("/v1/detect", { image }),
      gallery ? post(`/v1/galleries/${enc(gallery)}/identify`, { image }) : null,
      imageB ? post("/v1/verify", { image_a: image, image_b: imageB }) : null,
    ];
    const [detected, identified, verified] = await Promise.allSettled(calls);
    // A bad photo fails detect and identify alike: its message is shown once.
    const errors = [...new Set([detected, identified, verified]
      .filter((r) => r.status === "rejected" && r.reason.message).map((r) => r.reason.message))];

    const idFaces = identified.status === "fulfilled" && identified.value
      ? identified.value.faces : [];
    if (detected.status === "rejected" && idFaces.length === 0) {
      showError(errors); // nothing to draw
      return;
    }
    let faces = [];
    let apiSize = null;
    if (detected.status === "fulfilled") {
      faces = detected.value.faces;
      apiSize = { width: detected.value.width, height: detected.value.height };
    } else {
      faces = idFaces.map((entry) => entry.face); // e.g. a key with identify but not detect
    }
    const rows = faces.map((face, index) => {
      const entry = gallery ? matchIdentity(face, idFaces) : null;
      const identity = identityText(entry);
      const parts = [`#${index}`, `q ${pct(face.quality && face.quality.score)}`];
      const attrs = describeAttributes(face);
      if (attrs) parts.push(attrs);
      if (identity) parts.push(identity);
      const kind = identity === null ? "plain" : identity === "unknown" ? "unknown" : "known";
      return { index, face, identity, kind, label: parts.join(" · ") };
    });

    const bitmap = await createImageBitmap(image);
    const drawn = rows.map((r) => ({ ...r.face, label: r.label, kind: r.kind }));
    drawFaces($("#try-canvas"), bitmap, drawn, apiSize);
    bitmap.close();
    renderFaces(rows, Boolean(gallery));

    const verify = $("#try-verify");
    verify.hidden = !(verified.status === "fulfilled" && verified.value);
    if (!verify.hidden) {
      verify.textContent = verifyText(verified.value);
      verify.className = verified.value.match ? "match" : "no-match";
    }
    $("#try-result").hidden = false;
    if (errors.length) showError(errors);
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

export function setupTry() {
  $("#try-form").addEventListener("submit", (event) => {
    $("#alert").hidden = true;
    return analyse(event);
  });
}
