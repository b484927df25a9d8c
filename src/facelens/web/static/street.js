// Street page: the counts of people and vehicles each street camera saw, over time, and the
// plate hotlist and description rules the cameras' street layer alerts on. Everyone with the
// events scope sees them; admin keys add and delete (each change audited). Alerts they raise
// are on the Alerts page (kind plate or rule).
import { api, enc } from "./api.js";
import { can } from "./scopes.js";
import { $, busy, clearError, el, emptyRow, fmtDate, showError, showNotice } from "./ui.js";

// Counts: one SVG chart per camera with the street layer on, a line per class (drawn here: the
// console loads no chart library and nothing from elsewhere).
const CLASSES = ["person", "car", "truck", "bus", "motorcycle", "bicycle"];
const COLOURS = { person: "#0969da", car: "#d1242f", truck: "#9a6700", bus: "#8250df",
  motorcycle: "#1a7f37", bicycle: "#bf3989" };
const WINDOWS = { // the last hour by minute, the last day or week by hour
  hour: { span: 36e5, bucket: "minute", step: 6e4 },
  day: { span: 864e5, bucket: "hour", step: 36e5 },
  week: { span: 6048e5, bucket: "hour", step: 36e5 },
};
// Cameras add their counts once a minute: redrawing every 15 s shows a new minute soon after.
const REFRESH_MS = 15000;
const SVG_NS = "http://www.w3.org/2000/svg";
// BOTTOM leaves room for the time labels drawn twice as big on a phone (style.css).
const W = 640, H = 180, LEFT = 40, RIGHT = 8, TOP = 10, BOTTOM = 30;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

// Per class, the tracks in each bucket from `since` (empty buckets as 0).
function seriesOf(counts, step) {
  const start = Math.floor(new Date(counts.since).getTime() / step) * step;
  const n = Math.max(1, Math.ceil((new Date(counts.until).getTime() - start) / step));
  const series = {};
  for (const bucket of counts.buckets) {
    const i = Math.min(n - 1, Math.floor((new Date(bucket.at).getTime() - start) / step));
    for (const [kind, tracks] of Object.entries(bucket.counts)) {
      (series[kind] ??= new Array(n).fill(0))[i] += tracks;
    }
  }
  const order = (k) => (CLASSES.includes(k) ? CLASSES.indexOf(k) : CLASSES.length);
  return { start, n, kinds: Object.keys(series).sort((a, b) => order(a) - order(b)), series };
}

function chart(camera, counts, step) {
  const { start, n, kinds, series } = seriesOf(counts, step);
  const peak = Math.max(1, ...kinds.flatMap((k) => series[k]));
  const x = (i) => LEFT + ((W - LEFT - RIGHT) * (i + 0.5)) / n;
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / peak);
  const time = (ms) => new Date(ms).toLocaleString(undefined,
    { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const total = (k) => series[k].reduce((a, b) => a + b, 0);
  const lines = kinds.map((k) => svg("polyline", { fill: "none", stroke: COLOURS[k] ?? "gray",
    "stroke-width": 2, points: series[k].map((v, i) => `${x(i)},${y(v)}`).join(" "),
    "data-class": k, "data-total": total(k) }, svg("title", {}, `${k}: ${total(k)}`)));
  const label = (text, at, anchor = "start") => svg("text", { x: at[0], y: at[1],
    "font-size": 11, fill: "currentColor", "text-anchor": anchor }, text);
  const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
    "aria-label": `Tracks per ${counts.bucket} on ${camera}`,
    "data-testid": `counts-chart-${camera}`, "data-buckets": counts.buckets.length },
  svg("line", { x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM, stroke: "gray" }),
  svg("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM, stroke: "gray" }),
  label(String(peak), [LEFT - 4, TOP + 8], "end"), label("0", [LEFT - 4, H - BOTTOM], "end"),
  label(time(start), [LEFT, H - 4]), label(time(start + n * step), [W - RIGHT, H - 4], "end"),
  ...lines);
  // Swatches as SVG: a fill attribute is not a style, which the console's CSP refuses inline.
  const swatch = (k) => svg("svg", { width: 12, height: 12, "aria-hidden": "true" },
    svg("rect", { width: 12, height: 12, fill: COLOURS[k] ?? "gray" }));
  const legend = kinds.length === 0 ? el("p", { class: "hint" }, "Nothing counted then.")
    : el("p", {}, ...kinds.map((k) => el("span", {
      dataset: { testid: `counts-total-${camera}-${k}` } }, swatch(k), ` ${k} ${total(k)}  `)));
  return el("figure", { dataset: { testid: `counts-${camera}` } },
    el("figcaption", {}, el("strong", {}, camera), ` — tracks per ${counts.bucket}`),
    drawing, legend);
}

let draws = 0; // counts draws begun: one answering after a later one began is dropped

async function loadCounts() {
  const draw = (draws += 1);
  const box = $("#counts-charts");
  const cameras = (await api("/v1/cameras")).filter((c) => c.scene);
  if (draw !== draws) return; // the window changed, or a redraw began, meanwhile
  if (cameras.length === 0) {
    box.replaceChildren(el("p", { class: "hint", dataset: { testid: "counts-empty" } },
      "No camera has the street layer on."));
    return;
  }
  const window_ = WINDOWS[$("#counts-window").value];
  const until = new Date();
  const since = new Date(until.getTime() - window_.span);
  const query = `since=${enc(since.toISOString())}&until=${enc(until.toISOString())}` +
    `&bucket=${window_.bucket}`;
  const charts = await Promise.all(cameras.map(async (c) => chart(c.name,
    await api(`/v1/cameras/${enc(c.name)}/counts?${query}`), window_.step)));
  if (draw === draws) box.replaceChildren(...charts);
}

// An <input type="datetime-local"> value (local time) as ISO-8601 UTC; "" -> null.
const isoOf = (local) => (local ? new Date(local).toISOString() : null);

// Deletes `what` (e.g. "plate AB12CDE") at `path` on confirm, then lists `reload` again. One
// deleted meanwhile elsewhere (404) is what was asked for: the stale row goes, without an error.
// The focus then goes to the Delete button now in the row's place, or to the add form's first
// `field` when none is left: a keyboard user keeps their place.
function deleteButton(what, testid, path, reload, field) {
  if (!can("admin")) return "";
  const done = `${what[0].toUpperCase()}${what.slice(1)} deleted`;
  return el("button", { type: "button", class: "danger", dataset: { testid },
    "aria-label": `Delete ${what}`, onclick: (e) => {
      if (!confirm(`Delete ${what}? Its alerts are deleted with it.`)) return;
      const button = e.currentTarget;
      const body = button.closest("tbody");
      const place = [...body.rows].indexOf(button.closest("tr"));
      busy(button, async () => {
        const outcome = await api(path, { method: "DELETE" }).then(() => `${done}.`, (error) => {
          if (error.status !== 404) throw error;
          return `${done} already.`;
        });
        await reload();
        const left = body.querySelectorAll("button.danger");
        (left[Math.min(place, left.length - 1)] ?? $(field)).focus();
        showNotice(outcome);
      });
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
    el("td", {}, deleteButton(`plate ${p.plate}`, `plate-delete-${p.id}`,
      `/v1/hotlists/plates/${p.id}`, loadPlates, "#plate-text")))));
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
    el("td", {}, deleteButton(`rule “${r.description}”`, `rule-delete-${r.id}`,
      `/v1/rules/${r.id}`, loadRules, "#rule-description")))));
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
    // A camera named here may come later, but until then the rule watches nothing there.
    const street = new Set((await api("/v1/cameras")).filter((c) => c.scene).map((c) => c.name));
    const idle = made.cameras.filter((c) => !street.has(c));
    showNotice(`Rule “${made.description}” alerts until ${fmtDate(made.expires_at)}.` +
      (idle.length ? ` No camera with the street layer on is named ${idle.join(", ")} (yet).`
        : ""));
  });
}

let loop = null; // the counts' redraw while the page is shown ({timer}); null when it is not
let refreshError = null; // the message a failed redraw showed, until one works again

// The next redraw is set once this one has answered: a slow service never has two running.
// A failed one says why and tries again (the charts stay as last drawn), unless the key was
// signed out (401, already said) or lost its scope (403).
function schedule(current) {
  current.timer = setTimeout(async () => {
    if (loop !== current) return;
    try {
      await loadCounts();
      if (refreshError !== null) clearError(refreshError); // the service answers again
      refreshError = null;
    } catch (e) {
      if (loop !== current) return;
      if (e.status !== 401) {
        refreshError = e.message;
        showError(e.message);
      }
      if (e.status === 401 || e.status === 403) {
        leaveStreet();
        return;
      }
    }
    if (loop === current) schedule(current);
  }, REFRESH_MS);
}

// The loop is claimed before the first load: leaving (or coming back) while it loads ends it.
export async function showStreet() {
  leaveStreet();
  const current = { timer: null };
  loop = current;
  refreshError = null;
  await busy(null, () => Promise.all([loadCounts(), loadPlates(), loadRules()]));
  if (loop === current) schedule(current);
}

// Leaving the page (or signing out): the counts are not redrawn any more.
export function leaveStreet() {
  if (loop) clearTimeout(loop.timer);
  loop = null;
}

export function setupStreet() {
  $("#counts-window").addEventListener("change", () => busy(null, loadCounts));
  $("#plate-form").addEventListener("submit", addPlate);
  $("#rule-form").addEventListener("submit", addRule);
}
