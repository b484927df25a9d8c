// Alerts page: watchlist events with their snapshots and frames; confirm or dismiss each one.
// "suppressed" (a face that moved as a poster) and "depiction" events (a face shown by a screen
// or a print) were stored for review but never alerted.
import { api, enc, raw } from "./api.js";
import { $, busy, el, emptyRow, fmtDate, showError, showNotice } from "./ui.js";

let snapshotUrls = []; // object URLs of the snapshots and frames on show, revoked on reload

function forgetSnapshots() {
  for (const url of snapshotUrls) URL.revokeObjectURL(url);
  snapshotUrls = [];
}

// <img src> cannot send the key: fetch the JPEG with it and show it through an object URL.
// kind "snapshot" (the person's best shot), "reference" (the subject's enrolled face, to compare
// with) or "frame" (the whole frame, other faces blurred; also a link that opens it full size).
const IMAGE_PATHS = {
  snapshot: (event) => `/v1/events/${enc(event.id)}/snapshot`,
  frame: (event) => `/v1/events/${enc(event.id)}/frame`,
  reference: (event) => `/v1/subjects/${enc(event.subject_id)}/reference.jpg`,
};
const IMAGE_NAMES = { snapshot: "Snapshot", frame: "Frame", reference: "Enrolled reference" };

async function loadImage(event, kind, cell) {
  try {
    const response = await raw(IMAGE_PATHS[kind](event));
    const url = URL.createObjectURL(await response.blob());
    snapshotUrls.push(url);
    const img = el("img", {
      src: url, alt: `${IMAGE_NAMES[kind]} of event ${event.id} (${event.camera})`,
      class: kind, dataset: { testid: `event-${kind}-${event.id}` },
    });
    cell.replaceChildren(kind === "frame"
      ? el("a", { href: url, target: "_blank", rel: "noopener", title: "Open the whole frame" },
        img) : img);
  } catch (e) {
    cell.replaceChildren(el("span", { class: "hint" }, `no ${kind}: ${e.message}`));
  }
}

function imageCell(event, kind) {
  const has = { frame: event.has_frame, snapshot: event.has_snapshot,
    reference: Boolean(event.subject_id) }[kind];
  const cell = el("td", {}, has ? "…" : el("span", { class: "hint" }, "none"));
  if (has) loadImage(event, kind, cell);
  return cell;
}

// Events stored for review that never alerted, and why (a depiction names its cue and what
// showed the face, e.g. "object: tv").
const NOT_ALERTED = {
  suppressed: () => "poster? — not alerted",
  depiction: (details) => `screen/print (${details.cue ?? "?"}: ` +
    `${String(details.flagged ?? "").replace(/^depiction: /, "")}) — not alerted`,
};

// The status cell: the status, who reviewed it and when, and for an event that never
// alerted why nobody was alerted.
function renderStatus(row, status, event = {}) {
  row.className = `status-${status}`;
  row.dataset.status = status;
  const id = row.dataset.testid.replace(/^event-/, "");
  const flag = status in NOT_ALERTED
    ? el("span", { class: "flag", dataset: { testid: `event-flag-${id}` } },
      NOT_ALERTED[status](event.details ?? {}))
    : null;
  row.querySelector(".status").replaceChildren(...[status, flag].filter(Boolean));
  // Beside the buttons: who reviewed it and when.
  const who = row.querySelector(".reviewer");
  if (event.reviewed_by) {
    who.textContent =
      `${status} by ${event.reviewed_by.replace(/^[^:]*:/, "")}, ${fmtDate(event.reviewed_at)}`;
  }
}

function eventRow(event) {
  const row = el("tr", { dataset: { testid: `event-${event.id}`, id: event.id } },
    el("td", {}, el("input", {
      type: "checkbox", class: "pick", "aria-label": `Select event ${event.id}`,
      dataset: { testid: `event-pick-${event.id}` }, onchange: picked,
    })),
    imageCell(event, "snapshot"),
    imageCell(event, "reference"),
    imageCell(event, "frame"),
    el("td", { class: "camera" }, event.camera ?? "—"),
    el("td", { class: "time" }, fmtDate(event.at)),
    el("td", { class: "subject" }, event.subject_id ? el("a", {
      href: "#/alerts", title: `Only ${event.subject_name}'s alerts`,
      dataset: { testid: `event-person-${event.id}` },
      onclick: (e) => { e.preventDefault(); filterPerson(event); },
    }, event.subject_name ?? "—") : `${event.kind}: ${event.subject_name ?? "—"}`),
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
      }, "Dismiss"),
      el("span", { class: "reviewer", dataset: { testid: `event-reviewer-${event.id}` } })));
  renderStatus(row, event.status, event);
  return row;
}

// Buttons follow the status: an event already confirmed cannot be confirmed again.
function setStatus(row, status, event) {
  renderStatus(row, status, event);
  row.querySelector(".confirm").disabled = status === "confirmed";
  row.querySelector(".dismiss").disabled = status === "dismissed";
}

// Confirm or dismiss, then update the row from the event the API returns (snapshot kept).
async function decide(event, action, row) {
  for (const button of row.querySelectorAll("button")) button.disabled = true;
  let status = row.dataset.status;
  let reviewed;
  try {
    reviewed = await api(`/v1/events/${enc(event.id)}/${action}`, { method: "POST" });
    status = reviewed.status;
  } catch (e) {
    showError(e.message);
  }
  setStatus(row, status, reviewed);
}

// ------------------------------------------------------------------ bulk review
const pickedRows = () => [...document.querySelectorAll("#events-table tbody tr")]
  .filter((row) => row.querySelector(".pick:checked"));

function picked() {
  const none = pickedRows().length === 0;
  $("#events-confirm-selected").disabled = none;
  $("#events-dismiss-selected").disabled = none;
}

async function decideSelected(status, button) {
  const rows = pickedRows();
  await busy(button, async () => {
    const reviewed = await api("/v1/events/review", { method: "POST",
      json: { ids: rows.map((row) => Number(row.dataset.id)), status } });
    for (const [i, event] of reviewed.entries()) {
      setStatus(rows[i], event.status, event);
      rows[i].querySelector(".pick").checked = false;
    }
    showNotice(`${reviewed.length} alert${reviewed.length === 1 ? "" : "s"} ${status}.`);
  });
  $("#events-all").checked = false;
  picked();
}

// ------------------------------------------------------------------ filters
let person = null; // {id, name} when the list shows one person's alerts (their match history)

function filterPerson(event) {
  person = event ? { id: event.subject_id, name: event.subject_name } : null;
  const chip = $("#events-person");
  chip.hidden = !person;
  chip.replaceChildren(...(person ? [`person: ${person.name} `, el("button", {
    type: "button", "aria-label": "Show everyone's alerts",
    onclick: () => filterPerson(null),
  }, "✕")] : []));
  showAlerts();
}

function filters() {
  const query = new URLSearchParams();
  const status = $("#events-status").value;
  if (status) query.set("status", status);
  const kind = $("#events-kind").value; // face, or a street alert (plate, rule)
  if (kind) query.set("kind", kind);
  for (const [name, input] of [["camera", "#events-camera"], ["gallery", "#events-gallery"]]) {
    const value = $(input).value.trim();
    if (value) query.set(name, value);
  }
  const since = $("#events-since").value; // local time: sent as UTC
  if (since) query.set("since", new Date(since).toISOString());
  if (person) query.set("subject_id", person.id);
  return query;
}

// Whether an event that arrived live belongs in the list as filtered.
function wanted(event, query) {
  return (!query.get("status") || query.get("status") === event.status) &&
    (!query.get("kind") || query.get("kind") === event.kind) &&
    (!query.get("camera") || query.get("camera") === event.camera) &&
    (!query.get("gallery") || query.get("gallery") === event.gallery) &&
    (!query.get("subject_id") || query.get("subject_id") === event.subject_id);
}

// ------------------------------------------------------------------ live
let live = null; // AbortController of the open stream
let lastId = 0;
let shown = 0; // bumped on leaving: a showAlerts still loading then opens no stream

export function leaveAlerts() {
  shown += 1;
  if (live) live.abort();
  live = null;
}

// New events arrive by Server-Sent Events (read with fetch: EventSource cannot send the key);
// the stream ends every few minutes and is opened again from the last id seen.
async function follow(controller) {
  while (!controller.signal.aborted) {
    try {
      const response = await raw(`/v1/events/stream?after=${lastId}`,
        { signal: controller.signal });
      $("#events-live").textContent = "Live: new alerts appear here without refreshing.";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const blocks = buffer.split("\n\n");
        buffer = blocks.pop();
        for (const block of blocks) {
          const data = block.split("\n").find((line) => line.startsWith("data: "));
          if (data) arrived(JSON.parse(data.slice(6)));
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      $("#events-live").textContent = `Live updates paused (${e.message}); retrying…`;
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  }
}

function arrived(event) {
  lastId = Math.max(lastId, event.id);
  const query = filters();
  const quiet = event.status in NOT_ALERTED; // stored for review, never alerted
  if (quiet && query.get("status") !== event.status) return; // listed when asked for
  if (!wanted(event, query)) return;
  const tbody = $("#events-table tbody");
  if (tbody.querySelector(`tr[data-id="${event.id}"]`)) return; // listed already
  const empty = tbody.querySelector("[data-testid=events-empty]");
  if (empty) tbody.replaceChildren();
  tbody.prepend(eventRow(event));
  if (!quiet && "Notification" in window && Notification.permission === "granted") {
    new Notification(`facelens: ${event.subject_name} on ${event.camera}`,
      { body: `${event.confidence} confidence — review in the console`, tag: `event-${event.id}` });
  }
}

// Filters changed twice in a row (or the page left) while a list was loading: only the last
// call renders and follows the stream, else each new alert arrived once per call.
export async function showAlerts() {
  leaveAlerts();
  const mine = shown;
  const tbody = $("#events-table tbody");
  const query = filters();
  query.set("limit", "100");
  // The newest id first, then the list: an alert recorded in between is in the list, and the
  // stream (from that id) skips it; the other way round it was in neither.
  const newest = await api("/v1/events?limit=1").catch(() => []);
  let events;
  try {
    events = await api(`/v1/events?${query}`);
  } catch (e) {
    if (mine !== shown) return;
    forgetSnapshots();
    tbody.replaceChildren();
    showError(e.message);
    return;
  }
  if (mine !== shown) return;
  forgetSnapshots();
  lastId = newest.length ? newest[0].id : 0;
  live = new AbortController();
  follow(live);
  const status = query.get("status");
  tbody.replaceChildren(...(events.length ? events.map(eventRow)
    : [emptyRow(10, "events-empty", status ? `No ${status} events.` : "No events.")]));
  $("#events-all").checked = false; // the rows it picked are gone
  picked();
}

export function setupAlerts() {
  const reload = (e) => {
    e.preventDefault();
    $("#alert").hidden = true;
    showAlerts();
  };
  $("#events-filter").addEventListener("submit", reload);
  $("#events-status").addEventListener("change", reload);
  $("#events-kind").addEventListener("change", reload);
  $("#events-all").addEventListener("change", (e) => {
    for (const box of document.querySelectorAll("#events-table .pick")) box.checked = e.target.checked;
    picked();
  });
  $("#events-confirm-selected").addEventListener("click",
    (e) => decideSelected("confirmed", e.currentTarget));
  $("#events-dismiss-selected").addEventListener("click",
    (e) => decideSelected("dismissed", e.currentTarget));
  const notify = $("#events-notify");
  notify.hidden = !("Notification" in window);
  notify.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    notify.textContent = answer === "granted" ? "Notifications on" : "Notifications blocked";
  });
}
