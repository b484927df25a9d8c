// Keys and audit page (admin keys): create a key with scopes (shown once), revoke one; browse
// the audit log and check its hash chain.
import { api, enc } from "./api.js";
import { $, busy, el, emptyRow, fmtDate, showNotice } from "./ui.js";

// The scopes service/keys.py knows (an unknown one is refused there with the list).
const SCOPES = ["admin", "detect", "enrol", "identify", "verify", "events", "metrics",
  "export", "scores", "payment"];

async function loadKeys() {
  const keys = await api("/v1/keys");
  const row = (k) => el("tr", { dataset: { testid: `key-${k.id}` } },
    el("td", {}, k.id), el("td", {}, k.name), el("td", {}, k.scopes.join(", ")),
    el("td", {}, fmtDate(k.created_at)), el("td", {}, k.revoked_at ? fmtDate(k.revoked_at) : "—"),
    el("td", {}, k.revoked_at ? "" : el("button", {
      type: "button", class: "danger", dataset: { testid: `key-revoke-${k.id}` },
      "aria-label": `Revoke key ${k.name}`, onclick: (e) => revoke(k, e.currentTarget),
    }, "Revoke")));
  $("#keys-table tbody").replaceChildren(...keys.map(row));
}

async function revoke(key, button) {
  if (!confirm(`Revoke key ${key.name}? Every client using it is refused from now on.`)) return;
  await busy(button, async () => {
    await api(`/v1/keys/${enc(key.id)}`, { method: "DELETE" });
    await Promise.all([loadKeys(), loadAudit()]); // the revocation is an audit row too
    showNotice(`Key ${key.name} revoked.`);
  });
}

async function createKey(event) {
  event.preventDefault();
  const scopes = [...document.querySelectorAll("#key-scopes input:checked")].map((i) => i.value);
  await busy($("#key-create"), async () => {
    if (scopes.length === 0) throw new Error("Choose at least one scope for the key.");
    const made = await api("/v1/keys", { method: "POST",
      json: { name: $("#key-name").value.trim(), scopes } });
    $("#key-form").reset();
    const shown = $("#key-made");
    shown.replaceChildren(`Key ${made.name} (${made.scopes.join(", ")}) — copy it now, it is ` +
      "not shown again: ", el("code", { dataset: { testid: "key-secret" } }, made.key));
    shown.hidden = false;
    await Promise.all([loadKeys(), loadAudit()]); // the new key is an audit row too
  });
}

async function loadAudit() {
  const rows = await api("/v1/audit?limit=200");
  const tbody = $("#audit-table tbody");
  if (rows.length === 0) {
    tbody.replaceChildren(emptyRow(7, "audit-empty", "Nothing audited yet."));
    return;
  }
  const detail = (d) => Object.entries(d || {}).map(([k, v]) =>
    `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
  tbody.replaceChildren(...rows.map((r) => el("tr", { dataset: { testid: `audit-${r.id}` } },
    el("td", { class: "num" }, r.id), el("td", {}, fmtDate(r.at)), el("td", {}, r.actor),
    el("td", {}, r.action), el("td", {}, r.gallery ?? "—"), el("td", {}, r.outcome),
    el("td", { class: "detail" }, detail(r.detail)))));
}

async function verifyChain(button) {
  await busy(button, async () => {
    const check = await api("/v1/audit/verify");
    $("#audit-check").textContent = check.ok
      ? `Chain intact: ${check.entries} entries.`
      : `Chain broken at entry ${check.broken_at}: ${check.reason}`;
    $("#audit-check").className = check.ok ? "good" : "bad";
  });
}

export async function showAdmin() {
  $("#key-made").hidden = true;
  $("#audit-check").textContent = "";
  await busy(null, () => Promise.all([loadKeys(), loadAudit()]));
}

export function setupAdmin() {
  $("#key-scopes").replaceChildren(...SCOPES.map((scope) => el("label", {},
    el("input", { type: "checkbox", value: scope, dataset: { testid: `scope-${scope}` } }),
    ` ${scope}`)));
  $("#key-form").addEventListener("submit", createKey);
  $("#audit-verify").addEventListener("click", (e) => verifyChain(e.currentTarget));
}
