// Alerts page: watchlist events with their snapshots; confirm or dismiss each one.
import { api, enc, raw } from "./api.js";
import { $, el, emptyRow, fmtDate, showError } from "./ui.js";

let snapshotUrls = []; // object URLs of the snapshots on show, revoked on every reload

function forgetSnapshots() {
  for (const url of snapshotUrls) URL.revokeObjectURL(url);
  snapshotUrls = [];
}

// <img src> cannot send the key: fetch the JPEG with it and show it through an object URL.
async function loadSnapshot(event, cell) {
  try {
    const response = await raw(`/v1/events/${enc(event.id)}/snapshot`);
    const url = URL.createObjectURL(await response.blob());
    snapshotUrls.push(url);
    cell.replaceChildren(el("img", {
      src: url, alt: `Snapshot of event ${event.id} (${event.camera})`, class: "snapshot",
      dataset: { testid: `event-snapshot-${event.id}` },
    }));
  } catch (e) {
    cell.replaceChildren(el("span", { class: "hint" }, `no snapshot: ${e.message}`));
  }
}

function eventRow(event) {
  const snapshot = el("td", {}, event.has_snapshot ? "…" : el("span", { class: "hint" }, "none"));
  if (event.has_snapshot) loadSnapshot(event, snapshot);
  const attrs = { dataset: { testid: `event-${event.id}` }, class: `status-${event.status}` };
  const row = el("tr", attrs,
    snapshot,
    el("td", {}, event.camera ?? "—"),
    el("td", {}, fmtDate(event.at)),
    el("td", {}, event.subject_name ?? "—"),
    el("td", {}, event.confidence ?? "—"),
    el("td", { class: "status", dataset: { testid: `event-status-${event.id}` } }, event.status),
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
  return row;
}

// Buttons follow the status: an event already confirmed cannot be confirmed again.
function setStatus(row, status) {
  row.className = `status-${status}`;
  row.querySelector(".status").textContent = status;
  row.querySelector(".confirm").disabled = status === "confirmed";
  row.querySelector(".dismiss").disabled = status === "dismissed";
}

// Confirm or dismiss, then update the row from the event the API returns (snapshot kept).
async function decide(event, action, row) {
  for (const button of row.querySelectorAll("button")) button.disabled = true;
  let status = row.querySelector(".status").textContent;
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
    tbody.replaceChildren(emptyRow(7, "events-empty", text));
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
