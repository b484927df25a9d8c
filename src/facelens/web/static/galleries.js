// Galleries page (list, create) and one gallery's page (subjects, delete, enrol, bulk enrol).
import { api, enc, raw } from "./api.js";
import { can } from "./scopes.js";
import { $, busy, el, emptyRow, explainName, fmtDate, fmtDay, showError, showNotice } from "./ui.js";
import { capturedImages, clearCaptures, setupWebcam, stopWebcam } from "./webcam.js";

let current = null; // name of the gallery on show

// ------------------------------------------------------------------ list and create
export async function showGalleries() {
  const tbody = $("#galleries-table tbody");
  let galleries;
  try {
    galleries = await api("/v1/galleries");
  } catch (e) {
    tbody.replaceChildren();
    showError(e.message);
    return;
  }
  if (galleries.length === 0) {
    tbody.replaceChildren(emptyRow(4, "galleries-empty", "No galleries yet."));
    return;
  }
  const row = (g) => el("tr", { dataset: { testid: `gallery-${g.name}` } },
    el("td", {}, el("a", { href: `#/galleries/${enc(g.name)}` }, g.name)),
    el("td", {}, g.purpose),
    el("td", {}, g.embedder),
    el("td", { class: "num" }, g.subjects));
  tbody.replaceChildren(...galleries.map(row));
}

async function createGallery(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    name: $("#gallery-name").value.trim(),
    purpose: $("#gallery-purpose").value.trim(),
  };
  await busy($("#create-gallery"), async () => {
    const gallery = await api("/v1/galleries", { method: "POST", json: body })
      .catch(explainName("gallery", body.name));
    form.reset();
    await showGalleries();
    showNotice(`Gallery ${gallery.name} created.`);
  });
}

// ------------------------------------------------------------------ one gallery
export async function showGallery(name) {
  if (current !== name) resetEnrol(); // a half-filled form stays while in the same gallery
  current = name;
  $("#enrol-result").hidden = true;
  $("#gallery-title").textContent = `Gallery ${name}`;
  $("#gallery-info").textContent = "";
  try {
    const gallery = await api(`/v1/galleries/${enc(name)}`);
    $("#gallery-info").textContent =
      `Purpose: ${gallery.purpose} · embedder ${gallery.embedder} · ` +
      `retention ${gallery.retention_days} days · created ${fmtDate(gallery.created_at)}`;
  } catch (e) {
    $("#subjects-table tbody").replaceChildren();
    showError(e.message);
    return;
  }
  await loadSubjects();
}

// Leaving the gallery page: the webcam goes off.
export function leaveGallery() {
  stopWebcam();
  closeSubject();
}

// A subject may hold several consent records: their values, comma-separated.
function consents(subject, field, format = (v) => v) {
  const values = (subject.consents || []).map((c) => c[field]).filter(Boolean);
  return values.length ? values.map(format).join(", ") : "—";
}

async function loadSubjects() {
  const tbody = $("#subjects-table tbody");
  let subjects;
  try {
    subjects = await api(`/v1/galleries/${enc(current)}/subjects`);
  } catch (e) {
    tbody.replaceChildren();
    showError(e.message);
    return;
  }
  if (subjects.length === 0) {
    tbody.replaceChildren(emptyRow(7, "subjects-empty", "No subjects yet."));
    return;
  }
  const row = (s) => el("tr", { dataset: { testid: `subject-${s.id}`, name: s.name } },
    el("td", { class: "subject-name" }, s.name),
    el("td", { class: "num" }, s.templates),
    el("td", {}, consents(s, "legal_basis")),
    el("td", {}, consents(s, "expires_at", fmtDay)),
    el("td", {}, fmtDay(s.watch_expires)),
    el("td", {}, fmtDate(s.last_seen_at)),
    el("td", {}, can("enrol") ? [el("button", {
      type: "button", dataset: { testid: `edit-${s.name}` }, "aria-label": `Edit ${s.name}`,
      onclick: () => openSubject(s),
    }, "Edit"), " ", el("button", {
      type: "button", class: "danger", dataset: { testid: `delete-${s.name}` },
      "aria-label": `Delete ${s.name}`, onclick: (e) => deleteSubject(s, e.target),
    }, "Delete")] : null));
  tbody.replaceChildren(...subjects.map(row));
}

// Deleting a person deletes every alert naming them, confirmed ones too (docs/decisions.md):
// the dialog counts them first.
async function deleteSubject(subject, button) {
  const { alerts = {} } = await api(`/v1/subjects/${enc(subject.id)}`);
  const total = Object.values(alerts).reduce((sum, n) => sum + n, 0);
  const also = total ? ` This also deletes ${total} alert${total === 1 ? "" : "s"} about them` +
    ` (${alerts.confirmed || 0} confirmed) with their pictures.` : "";
  if (!confirm(`Delete ${subject.name} and all their templates?${also} ` +
    "This cannot be undone.")) return;
  await busy(button, async () => {
    await api(`/v1/subjects/${enc(subject.id)}`, { method: "DELETE" });
    if (editing && editing.id === subject.id) closeSubject(); // nobody left to edit
    await loadSubjects();
    showNotice(`${subject.name} deleted.`);
  });
}

// ------------------------------------------------------------------ edit one subject
let editing = null; // the subject open in the panel

async function openSubject(subject) {
  editing = subject;
  $("#subject-panel-title").textContent = `Edit ${subject.name}`;
  $("#rename-name").value = subject.name;
  $("#add-photos-form").reset();
  $("#subject-panel").hidden = false;
  await loadTemplates();
  $("#subject-panel").scrollIntoView({ block: "nearest" });
}

function closeSubject() {
  editing = null;
  $("#subject-panel").hidden = true;
}

async function loadTemplates() {
  const templates = await busy(null, () => api(`/v1/subjects/${enc(editing.id)}/templates`));
  if (!templates) return;
  const only = templates.length === 1;
  $("#templates-table tbody").replaceChildren(...templates.map((t) => el("tr",
    { dataset: { template: t.id } },
    el("td", {}, `#${t.id}`), el("td", { class: "num" }, t.quality.toFixed(2)),
    el("td", {}, fmtDate(t.created_at)),
    el("td", {}, el("button", {
      type: "button", class: "danger", disabled: only,
      title: only ? "The only template: delete the person instead" : null,
      "aria-label": `Delete template ${t.id}`, onclick: (e) => deleteTemplate(t, e.target),
    }, "Delete")))));
}

async function rename(event) {
  event.preventDefault();
  const name = $("#rename-name").value.trim();
  await busy($("#rename-submit"), async () => {
    const renamed = await api(`/v1/subjects/${enc(editing.id)}`,
      { method: "PATCH", json: { name } });
    editing = { ...editing, name: renamed.name };
    $("#subject-panel-title").textContent = `Edit ${renamed.name}`;
    await loadSubjects();
    showNotice(`Renamed to ${renamed.name}.`);
  });
}

async function addPhotos(event) {
  event.preventDefault();
  const form = new FormData();
  for (const file of $("#add-photos-images").files) form.append("images", file, file.name);
  await busy($("#add-photos-submit"), async () => {
    const report = await api(`/v1/subjects/${enc(editing.id)}/images`,
      { method: "POST", form });
    const skipped = (report.skipped || []).map((s) => `${s.image}: ${s.reason}`);
    $("#add-photos-form").reset();
    await Promise.all([loadTemplates(), loadSubjects()]);
    showNotice(`Added ${report.added} photo${report.added === 1 ? "" : "s"} to ` +
      `${editing.name}.${skipped.length ? ` Skipped ${skipped.join("; ")}` : ""}`);
  });
}

async function deleteTemplate(template, button) {
  if (!confirm(`Delete template #${template.id} of ${editing.name}?`)) return;
  await busy(button, async () => {
    await api(`/v1/subjects/${enc(editing.id)}/templates/${template.id}`,
      { method: "DELETE" });
    await Promise.all([loadTemplates(), loadSubjects()]);
    showNotice(`Template #${template.id} deleted.`);
  });
}

// ------------------------------------------------------------------ enrol
function resetEnrol() {
  $("#enrol-form").reset();
  clearCaptures();
  $("#enrol-result").hidden = true;
}

function enrolForm() {
  const form = new FormData();
  const fields = ["name", "legal_basis", "consent_purpose", "recorded_by", "consent_expires",
    "watch_reason", "watch_expires"];
  for (const field of fields) {
    const value = $(`#enrol-form [name="${field}"]`).value.trim();
    if (value) form.append(field, value);
  }
  for (const file of $("#enrol-images").files) form.append("images", file, file.name);
  for (const { blob, name } of capturedImages()) form.append("images", blob, name);
  return form;
}

async function enrol(event) {
  event.preventDefault();
  const form = enrolForm();
  if (!form.has("images")) {
    showError("Add at least one photo: choose files or capture from the webcam.");
    return;
  }
  const name = form.get("name") || "";
  const taken = [...document.querySelectorAll("#subjects-table tbody tr[data-name]")]
    .some((row) => row.dataset.name.toLowerCase() === name.toLowerCase());
  if (taken && !confirm(`${name} is already enrolled in this gallery. Enrol a second, ` +
    "different person with the same name? (To add photos of the same person, delete and " +
    "re-enrol them with all their photos.)")) return;
  $("#enrol-result").hidden = true;
  await busy($("#enrol-submit"), async () => {
    const report = await api(`/v1/galleries/${enc(current)}/subjects`, { method: "POST", form });
    const skipped = report.skipped || [];
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    $("#enrol-summary").textContent =
      `Enrolled ${report.name} with ${plural(report.templates, "template")}` +
      (skipped.length ? `; ${plural(skipped.length, "image")} skipped:` : ".");
    const items = skipped.map((s) => el("li", {}, `${s.image}: ${s.reason}`));
    $("#enrol-skipped").replaceChildren(...items);
    $("#enrol-result").hidden = false;
    $("#enrol-form").reset();
    clearCaptures();
    stopWebcam();
    await loadSubjects();
    showNotice(`${report.name} enrolled.`);
    $("#enrol-result").scrollIntoView({ block: "nearest" });
  });
}

// ------------------------------------------------------------------ bulk enrol (zip)
const OUTCOMES = { enrolled: "enrolled", kept: "already enrolled", refused: "not enrolled" };

// The service reports one JSON line per person as it goes: the progress bar and the table
// fill as the lines arrive.
async function* reportLines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    pending += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) if (line.trim()) yield JSON.parse(line);
    if (done) break;
  }
}

function bulkRow(line) {
  const note = line.reason ||
    (line.skipped || []).map((s) => `${s.image}: ${s.reason}`).join("; ");
  return el("tr", { dataset: { status: line.status } },
    el("td", {}, line.name), el("td", {}, OUTCOMES[line.status] || line.status),
    el("td", {}, line.templates ? String(line.templates) : "—"), el("td", {}, note || ""));
}

async function bulkEnrol(event) {
  event.preventDefault();
  const form = new FormData($("#bulk-form"));
  for (const [name, value] of [...form.entries()]) {
    if (typeof value === "string" && !value.trim()) form.delete(name);
  }
  const rows = $("#bulk-report tbody");
  const progress = $("#bulk-progress");
  rows.replaceChildren();
  progress.value = 0;
  $("#bulk-summary").textContent = "Uploading…";
  $("#bulk-result").hidden = false;
  await busy($("#bulk-submit"), async () => {
    const response = await raw(`/v1/galleries/${enc(current)}/subjects/zip`,
      { method: "POST", form });
    for await (const line of reportLines(response)) {
      if ("people" in line) {
        progress.max = Math.max(1, line.people);
        $("#bulk-summary").textContent = `Enrolling ${line.people} people…`;
      } else if ("summary" in line) {
        const parts = Object.entries(line.summary).map(([k, n]) => `${n} ${OUTCOMES[k] || k}`);
        $("#bulk-summary").textContent = `Done: ${parts.join(", ")}.`;
      } else {
        progress.value = line.done;
        rows.append(bulkRow(line));
        $("#bulk-summary").textContent = `${line.done} of ${progress.max} people done…`;
      }
    }
    $("#bulk-form").reset();
    await loadSubjects();
    showNotice($("#bulk-summary").textContent);
  });
}

// Both enrol forms ask for the same consent record: index.html's one <template>, cloned into
// each form with its ids prefixed by the form's (enrol-legal-basis, bulk-legal-basis, …).
function insertConsentFields(form, prefix) {
  const fields = $("#consent-fields").content.cloneNode(true);
  for (const node of fields.querySelectorAll("[id]")) node.id = `${prefix}-${node.id}`;
  for (const label of fields.querySelectorAll("label[for]")) {
    label.htmlFor = `${prefix}-${label.htmlFor}`;
  }
  form.querySelector("[data-consent-fields]").replaceWith(fields);
}

export function setupGalleries() {
  insertConsentFields($("#enrol-form"), "enrol");
  insertConsentFields($("#bulk-form"), "bulk");
  $("#create-gallery-form").addEventListener("submit", createGallery);
  $("#enrol-form").addEventListener("submit", enrol);
  $("#bulk-form").addEventListener("submit", bulkEnrol);
  $("#rename-form").addEventListener("submit", rename);
  $("#add-photos-form").addEventListener("submit", addPhotos);
  $("#subject-panel-close").addEventListener("click", closeSubject);
  setupWebcam();
}
