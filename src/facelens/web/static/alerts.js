// Alerts page: watchlist events with their snapshots and frames; confirm or dismiss each one.
// "suppressed" events (a face flagged as a poster or screen) were stored but never alerted.
import { api, enc, raw } from "./api.js";
import { $, el, emptyRow, fmtDate, showError } from "./ui.js";

let snapshotUrls = []; // object URLs of the snapshots and frames on show, revoked on reload

function forgetSnapshots() {
  for (const url of snapshotUrls) URL.revokeObjectURL(url);
  snapshotUrls = [];
}

// <img src> cannot send the key: fetch the JPEG with it and show it through an object URL.
// kind "snapshot" (the person's best shot) or "frame" (the whole frame, other faces blurred;
// also a link that opens it at full size).
async function loadImage(event, kind, cell) {
  try {
    const response = await raw(`/v1/events/${enc(event.id)}/${kind}`);
    const url = URL.createObjectURL(await response.blob());
    snapshotUrls.push(url);
    const img = el("img", {
      src: url, alt: `${kind === "frame" ? "Frame" : "Snapshot"} of event ${event.id} ` +
        `(${event.camera})`, class: kind, dataset: { testid: `event-${kind}-${event.id}` },
    });
    cell.replaceChildren(kind === "frame"
      ? el("a", { href: url, target: "_blank", rel: "noopener", title: "Open the whole frame" },
        img) : img);
  } catch (e) {
    cell.replaceChildren(el("span", { class: "hint" }, `no ${kind}: ${e.message}`));
  }
}

function imageCell(event, kind) {
  const has = kind === "frame" ? event.has_frame : event.has_snapshot;
  const cell = el("td", {}, has ? "…" : el("span", { class: "hint" }, "none"));
  if (has) loadImage(event, kind, cell);
  return cell;
}

// The status cell: the status, and for a suppressed event why nobody was alerted.
function renderStatus(row, status) {
  row.className = `status-${status}`;
  row.dataset.status = status;
  const id = row.dataset.testid.replace(/^event-/, "");
  const flag = status === "suppressed"
    ? el("span", { class: "flag", dataset: { testid: `event-flag-${id}` } },
      "poster? — not alerted")
    : null;
  row.querySelector(".status").replaceChildren(...[status, flag].filter(Boolean));
}

function eventRow(event) {
  const row = el("tr", { dataset: { testid: `event-${event.id}` } },
    imageCell(event, "snapshot"),
    imageCell(event, "frame"),
    el("td", { class: "camera" }, event.camera ?? "—"),
    el("td", { class: "time" }, fmtDate(event.at)),
    el("td", { class: "subject" }, event.subject_name ?? "—"),
    el("td", {}, event.confidence ?? "—"),
    el("td", { class: "status", dataset: { testid: `event-status-${event.id}` } }),
    el("td", {},
      el("button", {
        type: "button", class: "confirm", dataset: { testid: `event-confirm-${event.id}` },
        disabled: event.status === "confirmed", "aria-label": `Confirm event ${event.id}`,
        onclick: () => decide(event, "confirm", row),
      }, "Confirm"),
      " ",
      el("button", {
        type: "button", class: "dismiss", dataset: { testid: `event-dismiss-${event.id}` },
        disabled: event.status === "dismissed", "aria-label": `Dismiss event ${event.id}`,
        onclick: () => decide(event, "dismiss", row),
      }, "Dismiss")));
  renderStatus(row, event.status);
  return row;
}

// Buttons follow the status: an event already confirmed cannot be confirmed again.
function setStatus(row, status) {
  renderStatus(row, status);
  row.querySelector(".confirm").disabled = status === "confirmed";
  row.querySelector(".dismiss").disabled = status === "dismissed";
}

// Confirm or dismiss, then update the row from the event the API returns (snapshot kept).
async function decide(event, action, row) {
  for (const button of row.querySelectorAll("button")) button.disabled = true;
  let status = row.dataset.status;
  try {
    const updated = await api(`/v1/events/${enc(event.id)}/${action}`, { method: "POST" });
    status = updated.status;
  } catch (e) {
    showError(e.message);
  }
  setStatus(row, status);
}

export async function showAlerts() {
  const tbody = $("#events-table tbody");
  const status = $("#events-status").value;
  const query = new URLSearchParams({ limit: "100" });
  if (status) query.set("status", status);
  let events;
  try {
    events = await api(`/v1/events?${query}`);
  } catch (e) {
    forgetSnapshots();
    tbody.replaceChildren();
    showError(e.message);
    return;
  }
  forgetSnapshots();
  if (events.length === 0) {
    const text = status ? `No ${status} events.` : "No events.";
    tbody.replaceChildren(emptyRow(8, "events-empty", text));
    return;
  }
  tbody.replaceChildren(...events.map(eventRow));
}

export function setupAlerts() {
  const reload = (e) => {
    e.preventDefault();
    $("#alert").hidden = true;
    showAlerts();
  };
  $("#events-filter").addEventListener("submit", reload);
  $("#events-status").addEventListener("change", reload);
}
