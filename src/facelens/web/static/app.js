// Console shell: sign in/out, the header, and hash routes that show one page at a time.
import { setupAdmin, showAdmin } from "./admin.js";
import { api, clearKey, getKey, setKey, setUnauthorizedHandler } from "./api.js";
import { leaveAlerts, setupAlerts, showAlerts } from "./alerts.js";
import { leaveCameras, setupCameras, showCameras } from "./cameras.js";
import { leaveGallery, setupGalleries, showGalleries, showGallery } from "./galleries.js";
import { leaveLiveness, setupLiveness, showLiveness } from "./liveness.js";
import { setGrant } from "./scopes.js";
import { leaveStreet, setupStreet, showStreet } from "./street.js";
import { setupTry, showTry } from "./tryit.js";
import { $, clearMessages, labelCells, showError } from "./ui.js";

const PAGES = ["signin", "galleries", "gallery", "try", "liveness", "cameras", "alerts", "street",
  "admin"];
let me = null; // {id, name, scopes} of the signed-in key

function showPage(name) {
  for (const page of PAGES) $(`#page-${page}`).hidden = page !== name;
  const section = name === "gallery" ? "galleries" : name; // one gallery is under Galleries
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${section}`);
  }
}

function renderHeader() {
  const signedIn = me !== null;
  $("#nav").hidden = !signedIn;
  $("#session").hidden = !signedIn;
  $("#whoami").textContent = signedIn ? `${me.name} · ${me.scopes.join(", ")}` : "";
  setGrant(me);
}

function signOut(message) {
  clearKey();
  me = null;
  renderHeader();
  clearMessages();
  history.replaceState(null, "", "#/signin"); // no hashchange: route() is called right here
  route();
  if (message) showError(message);
}

// Shows the page the hash names. Messages are cleared by navigation (hashchange), not here.
async function route() {
  leaveGallery(); // stops the webcam if it was on
  leaveCameras(); // stops the status refresh and the live preview
  leaveStreet(); // stops the counts' redraw
  leaveLiveness(); // stops a check under way and its camera
  leaveAlerts(); // closes the live stream of new alerts
  if (me === null) {
    showPage("signin");
    $("#api-key").focus();
    return;
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [page, arg] = parts;
  if (page === "galleries" && arg) {
    showPage("gallery");
    await showGallery(arg);
  } else if (page === "try") {
    showPage("try");
    await showTry();
  } else if (page === "liveness") {
    showPage("liveness");
    showLiveness();
  } else if (page === "cameras") {
    showPage("cameras");
    await showCameras();
  } else if (page === "alerts") {
    showPage("alerts");
    await showAlerts();
  } else if (page === "street") {
    showPage("street");
    await showStreet();
  } else if (page === "admin") {
    showPage("admin");
    await showAdmin();
  } else if (page === "galleries") {
    showPage("galleries");
    await showGalleries();
  } else {
    location.hash = "#/galleries"; // fires hashchange -> route()
  }
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#api-key");
  const key = input.value.trim();
  const button = $("#signin-button");
  button.disabled = true;
  try {
    me = await api("/v1/me", { key });
    setKey(key);
    input.value = "";
    renderHeader();
    clearMessages();
    if (location.hash === "" || location.hash === "#/signin") location.hash = "#/galleries";
    else await route();
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  setUnauthorizedHandler((error) => signOut(error.message));
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut());
  setupGalleries();
  setupTry();
  setupLiveness();
  setupCameras();
  setupAlerts();
  setupAdmin();
  setupStreet();
  for (const table of document.querySelectorAll("main table")) labelCells(table);
  // A form the browser refuses (a field out of range) is not sent: an error of the last try
  // would stand beside the browser's own message as if it were about this one.
  document.addEventListener("invalid", clearMessages, true);
  window.addEventListener("hashchange", () => {
    clearMessages();
    route();
  });
  if (getKey()) {
    try {
      me = await api("/v1/me");
    } catch (e) {
      me = null; // a 401 has already signed out with its message
      if (e.status !== 401) showError(e.message);
    }
  }
  renderHeader();
  await route();
}

start();
