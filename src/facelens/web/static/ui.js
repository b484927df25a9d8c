// Small DOM helpers shared by the pages: element builder, alert/notice, date formatting.
export const $ = (selector) => document.querySelector(selector);

// el("td", {class: "x", dataset: {testid: "y"}}, "text", child) -> element; text is never HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// showError("message") or showError(["first", "second"]): the API's error.message, as given.
export function showError(messages) {
  const box = $("#alert");
  const list = Array.isArray(messages) ? messages : [messages];
  box.replaceChildren(...list.map((m) => el("p", {}, m)));
  box.hidden = false;
  $("#notice").hidden = true;
}

// A success replaces any error still on show (both boxes stay in view: style.css).
export function showNotice(message) {
  const box = $("#notice");
  box.textContent = message;
  box.hidden = false;
  $("#alert").hidden = true;
}

// Takes down the alert box if it still shows `message` (and nothing else): a refresh that
// failed and then worked again takes its own error back, not one an action put up since.
export function clearError(message) {
  const box = $("#alert");
  if (!box.hidden && box.textContent === message) clearMessages();
}

export function clearMessages() {
  $("#alert").hidden = true;
  $("#alert").replaceChildren();
  $("#notice").hidden = true;
  $("#notice").textContent = "";
}

// Runs an async action with its button disabled; an error goes to the alert box. An error
// from an earlier action is cleared first: it no longer describes what is on screen.
export async function busy(button, action) {
  clearMessages();
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (e) {
    showError(e.message);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// A name the API refused (422 about the field "name", e.g. of a gallery or a camera) as the
// rule it broke and a name that fits; any other error is rethrown as it came.
export const explainName = (what, name) => (e) => {
  if (e.code !== "validation_error" || !/^name:/.test(e.message)) throw e;
  const suggestion = name.replace(/[^\w.-]+/g, "_");
  throw new Error(`“${name}” cannot be a ${what} name: use letters, digits, “_”, “.” ` +
    `and “-”, without spaces (for example “${suggestion}”).`);
};

// The service keeps moments in UTC, but some come back without an offset (SQLite drops it,
// e.g. an event's "at"): a date-time with no Z or ±hh:mm is read as UTC, not as local time.
function parseMoment(iso) {
  const text = String(iso);
  return new Date(/T[\d:.]+$/.test(text) ? `${text}Z` : text);
}

// A moment, in the viewer's time zone.
export function fmtDate(iso) {
  if (!iso) return "—";
  const d = parseMoment(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// An expiry day: the service stores the end of that day in UTC, so it is shown in UTC.
export function fmtDay(iso) {
  if (!iso) return "—";
  const d = parseMoment(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleDateString(undefined, { timeZone: "UTC" });
}

// One table row with one cell across `columns`: "No subjects yet." and the like.
export const emptyRow = (columns, testid, text) =>
  el("tr", {}, el("td", { colSpan: columns, class: "empty", dataset: { testid } }, text));

// Each body cell of `table` carries its column's heading as data-label (kept up to date as
// rows are rendered): on a phone the rows stack and style.css shows the label beside the value.
export function labelCells(table) {
  table.classList.add("cards");
  const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  const body = table.tBodies[0];
  const apply = () => {
    for (const row of body.rows) {
      [...row.cells].forEach((cell, i) => {
        if (heads[i] && cell.colSpan === 1) cell.dataset.label = heads[i];
      });
    }
  };
  new MutationObserver(apply).observe(body, { childList: true });
  apply();
}
