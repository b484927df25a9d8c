// Street page: the plate hotlist and description rules the cameras' street layer alerts on.
// Everyone with the events scope sees them; admin keys add and delete (each change audited).
// Alerts they raise are on the Alerts page (kind plate or rule).
import { api } from "./api.js";
import { can } from "./scopes.js";
import { $, busy, el, emptyRow, fmtDate, showNotice } from "./ui.js";

// An <input type="datetime-local"> value (local time) as ISO-8601 UTC; "" -> null.
const isoOf = (local) => (local ? new Date(local).toISOString() : null);

function deleteButton(label, testid, action) {
  if (!can("admin")) return "";
  return el("button", { type: "button", class: "danger", dataset: { testid },
    "aria-label": `Delete ${label}`, onclick: (e) => {
      if (confirm(`Delete ${label}? Its alerts are deleted with it.`)) busy(e.currentTarget, action);
    } }, "Delete");
}

const state = (row) => (row.live ? "live" : "expired");

async function loadPlates() {
  const plates = await api("/v1/hotlists/plates");
  const tbody = $("#plates-table tbody");
  if (plates.length === 0) {
    tbody.replaceChildren(emptyRow(6, "plates-empty", "No plate on the hotlist."));
    return;
  }
  tbody.replaceChildren(...plates.map((p) => el("tr", { dataset: { testid: `plate-${p.id}` } },
    el("td", {}, p.plate), el("td", {}, p.reason), el("td", {}, p.added_by),
    el("td", {}, fmtDate(p.expires_at)), el("td", {}, state(p)),
    el("td", {}, deleteButton(`plate ${p.plate}`, `plate-delete-${p.id}`, async () => {
      await api(`/v1/hotlists/plates/${p.id}`, { method: "DELETE" });
      await loadPlates();
      showNotice(`Plate ${p.plate} deleted.`);
    })))));
}

async function loadRules() {
  const rules = await api("/v1/rules");
  const tbody = $("#rules-table tbody");
  if (rules.length === 0) {
    tbody.replaceChildren(emptyRow(7, "rules-empty", "No description rule."));
    return;
  }
  tbody.replaceChildren(...rules.map((r) => el("tr", { dataset: { testid: `rule-${r.id}` } },
    el("td", {}, r.description), el("td", {}, r.cameras.length ? r.cameras.join(", ") : "all"),
    el("td", {}, `${fmtDate(r.active_from)} – ${r.active_to ? fmtDate(r.active_to) : "expiry"}`),
    el("td", {}, r.reason), el("td", {}, fmtDate(r.expires_at)), el("td", {}, state(r)),
    el("td", {}, deleteButton(`rule “${r.description}”`, `rule-delete-${r.id}`, async () => {
      await api(`/v1/rules/${r.id}`, { method: "DELETE" });
      await loadRules();
      showNotice(`Rule “${r.description}” deleted.`);
    })))));
}

async function addPlate(event) {
  event.preventDefault();
  await busy($("#plate-add"), async () => {
    const made = await api("/v1/hotlists/plates", { method: "POST", json: {
      plate: $("#plate-text").value.trim(), reason: $("#plate-reason").value.trim(),
      expires_at: isoOf($("#plate-expires").value) } });
    $("#plate-form").reset();
    await loadPlates();
    showNotice(`Plate ${made.plate} is on the hotlist until ${fmtDate(made.expires_at)}.`);
  });
}

async function addRule(event) {
  event.preventDefault();
  const cameras = $("#rule-cameras").value.split(",").map((c) => c.trim()).filter(Boolean);
  await busy($("#rule-add"), async () => {
    const made = await api("/v1/rules", { method: "POST", json: {
      description: $("#rule-description").value.trim(), reason: $("#rule-reason").value.trim(),
      expires_at: isoOf($("#rule-expires").value), cameras,
      active_from: isoOf($("#rule-from").value), active_to: isoOf($("#rule-to").value) } });
    $("#rule-form").reset();
    await loadRules();
    showNotice(`Rule “${made.description}” alerts until ${fmtDate(made.expires_at)}.`);
  });
}

export async function showStreet() {
  await busy(null, () => Promise.all([loadPlates(), loadRules()]));
}

export function setupStreet() {
  $("#plate-form").addEventListener("submit", addPlate);
  $("#rule-form").addEventListener("submit", addRule);
}
