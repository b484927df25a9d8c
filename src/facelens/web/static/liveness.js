// Liveness check: open the webcam, start a challenge session, show its actions one at a time
// while recording ~10 frames a second, post the frames with the session's nonce, show the
// verdict. The camera is off once the frames are taken, and whenever the page is left.
import { api, enc } from "./api.js";
import { can } from "./scopes.js";
import { $, clearMessages, el, showError, showNotice } from "./ui.js";
import { closeCamera, openCamera } from "./webcam.js";

const FPS = 10;
// Each action is shown at the time the session chose (its prompts_s, random per session): the
// service refuses an action not seen within 2 s of its prompt, so a clip recorded before the
// session cannot answer it. The last action gets this long before recording stops.
const LAST_STEP_S = 2.4;
const MAX_FRAMES = 180; // what the service judges at most
const MAX_WIDTH = 640; // frames are scaled down to this width at most
const QUALITY = 0.85; // JPEG
const READY_TIMEOUT_MS = 10_000;
const INSTRUCTIONS = {
  blink: "Blink",
  turn_left: "Turn your head to your left",
  turn_right: "Turn your head to your right",
};
const ACTION_NAMES = { blink: "Blink", turn_left: "Turn left", turn_right: "Turn right" };

let stream = null;
let generation = 0; // bumped when a run is cancelled or the page is left: stale runs stop

const instruct = (text) => { $("#liveness-instruction").textContent = text; };
const instructionFor = (action) => INSTRUCTIONS[action] || action;

function stopCamera() {
  closeCamera(stream);
  stream = null;
  const video = $("#liveness-video");
  video.srcObject = null;
  video.hidden = true;
}

function setRunning(running) {
  $("#liveness-start").disabled = running;
  $("#liveness-cancel").hidden = !running;
}

// Resolves once the <video> shows frames (its size is known), or fails after a while.
function videoReady(video) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      video.removeEventListener("loadeddata", check);
      resolve();
    };
    const check = () => { if (video.videoWidth > 0 && video.readyState >= 2) done(); };
    const timer = setTimeout(() => {
      video.removeEventListener("loadeddata", check);
      reject(new Error("The camera gave no picture; check it and try again."));
    }, READY_TIMEOUT_MS);
    video.addEventListener("loadeddata", check);
    video.play().catch(() => {}); // autoplay (muted) normally starts it already
    check();
  });
}

function renderSteps(steps, current) {
  $("#liveness-steps").replaceChildren(...steps.map((step, i) => el("li", {
    class: i < current ? "done" : i === current ? "current" : "todo",
    "aria-current": i === current ? "step" : null,
  }, step.text)));
}

// The steps of a session: "Look at the camera" until the first prompt, then each action from
// its prompt until the next one.
function stepsOf(session) {
  const prompts = session.prompts_s;
  return [{ text: "Look at the camera", seconds: prompts[0] },
    ...session.challenge.map((action, i) => ({
      text: instructionFor(action),
      seconds: (i + 1 < prompts.length ? prompts[i + 1] : prompts[i] + LAST_STEP_S) - prompts[i],
    }))];
}

// Records frames from `video` while showing `steps` in turn -> {blobs: [Blob] (JPEG), times:
// [s]}, or null if the run was cancelled meanwhile. Frame i is due at i/FPS seconds and stamped
// with when it was really taken; its step is the one whose time span holds that moment.
function record(video, steps, token) {
  const ends = [];
  let total = 0;
  for (const step of steps) ends.push((total += step.seconds));
  const count = Math.min(MAX_FRAMES, Math.round(total * FPS));
  const width = Math.min(MAX_WIDTH, video.videoWidth);
  const height = Math.round((video.videoHeight * width) / video.videoWidth);
  const canvas = el("canvas", { width, height });
  const context = canvas.getContext("2d");
  const progress = $("#liveness-progress");
  progress.max = count;
  progress.value = 0;
  progress.hidden = false;
  const encoded = [];
  const times = [];
  let shown = -1;

  return new Promise((resolve, reject) => {
    const started = performance.now();
    let taken = 0;
    const tick = () => {
      if (token !== generation) {
        resolve(null);
        return;
      }
      const at = taken / FPS;
      const step = Math.min(ends.findIndex((end) => at < end + 1e-9), steps.length - 1);
      if (step !== shown) {
        shown = step;
        instruct(steps[step].text);
        renderSteps(steps, step);
      }
      context.drawImage(video, 0, 0, width, height);
      times.push(((performance.now() - started) / 1000).toFixed(3));
      // toBlob copies the canvas now and encodes later: one canvas serves every frame.
      encoded.push(new Promise((done) => canvas.toBlob(done, "image/jpeg", QUALITY)));
      taken += 1;
      progress.value = taken;
      if (taken < count) {
        setTimeout(tick, Math.max(0, started + (taken * 1000) / FPS - performance.now()));
        return;
      }
      Promise.all(encoded).then((blobs) => {
        if (token !== generation) resolve(null);
        else if (blobs.some((b) => !b)) reject(new Error("A frame could not be encoded."));
        else resolve({ blobs, times });
      }, reject);
    };
    tick();
  });
}

const fmt = (x, digits) => (typeof x === "number" ? x.toFixed(digits) : "—");

function passiveText(passive) {
  if (!passive) return "not measured (too few frames with a face)";
  return `${passive.planar ? "moved as a flat picture" : "not flat"} · plane ratio ` +
    `${fmt(passive.plane_ratio, 2)} · moiré ${fmt(passive.moire, 2)}`;
}

function renderVerdict(session) {
  const result = session.result;
  const passed = session.state === "passed" || session.state === "used";
  const verdict = $("#liveness-verdict");
  verdict.textContent = passed ? "PASSED" : "FAILED";
  verdict.className = `verdict ${passed ? "passed" : "failed"}`;
  verdict.dataset.state = session.state;

  const reasons = result ? result.reasons : ["the answer could not be judged"];
  $("#liveness-reasons").replaceChildren(...(reasons.length
    ? reasons.map((r) => el("li", {}, r))
    : [el("li", { class: "empty" }, "none: every action seen in order, one person throughout")]));
  const performed = result ? result.performed : {};
  $("#liveness-performed").replaceChildren(...session.challenge.map((action) => {
    const at = performed[action];
    const seen = typeof at === "number";
    return el("li", { class: seen ? "seen" : "unseen", dataset: { action } },
      `${ACTION_NAMES[action] || action}: ${seen ? `seen at frame ${at}` : "not seen"}`);
  }));
  $("#liveness-frames").textContent = result ? result.frames : "—";
  $("#liveness-faces").textContent = result ? result.faces : "—";
  $("#liveness-identity").textContent = result ? fmt(result.identity_min, 3) : "—";
  $("#liveness-passive").textContent = result ? passiveText(result.passive) : "—";
  renderSession(session);
  $("#liveness-result").hidden = false;
}

function renderSession(session) {
  const usable = session.state === "passed";
  $("#liveness-session-id").textContent = session.id;
  $("#liveness-session-state").textContent = usable
    ? `passed · usable for ${Math.round(session.expires_in_s)} s more` : session.state;
  $("#liveness-use").textContent = usable
    ? "A teller can use this session once, within its time, for a verify: send its id as " +
      "the form field liveness_session with the selfie of the person who passed."
    : "This session cannot be used for a verify; start a new check.";
}

// After a refused or failed answer: the session as the service now has it (best effort).
async function refreshSession(id, token) {
  try {
    const session = await api(`/v1/liveness/sessions/${enc(id)}`);
    if (token === generation && session.state !== "open") renderVerdict(session);
  } catch {
    // the error already shown says enough
  }
}

async function startCheck() {
  generation += 1;
  const token = generation;
  clearMessages();
  $("#liveness-result").hidden = true;
  $("#liveness-steps").replaceChildren();
  $("#liveness-progress").hidden = true;
  setRunning(true);
  let session = null;
  try {
    // Said before the camera goes on (the service answers the same): it was switched on first.
    if (!can("verify")) throw new Error("this key lacks the verify scope");
    instruct("Opening the camera…");
    const opened = await openCamera({ width: { ideal: 640 }, height: { ideal: 480 },
      facingMode: "user" });
    if (token !== generation) {
      closeCamera(opened);
      return;
    }
    stream = opened;
    const video = $("#liveness-video");
    video.srcObject = stream;
    video.hidden = false;
    await videoReady(video);
    if (token !== generation) return;

    // The camera works: only now start the session (its 3 minutes run from here).
    instruct("Starting the check…");
    session = await api("/v1/liveness/sessions", { method: "POST" });
    if (token !== generation) return;
    const recorded = await record(video, stepsOf(session), token);
    if (recorded === null || token !== generation) return;
    const frames = recorded.blobs;
    stopCamera();
    $("#liveness-cancel").hidden = true;
    $("#liveness-progress").hidden = true;
    // The list said what to do, not what was seen: the verdict says that.
    $("#liveness-steps").replaceChildren();

    instruct(`Checking ${frames.length} frames…`);
    const form = new FormData();
    form.append("nonce", session.nonce);
    form.append("times", recorded.times.join(","));
    frames.forEach((blob, i) => form.append("frames", blob,
      `frame-${String(i).padStart(3, "0")}.jpg`));
    const answered = await api(`/v1/liveness/sessions/${enc(session.id)}`,
      { method: "POST", form });
    if (token !== generation) return;
    instruct(""); // the verdict below says it (and is announced)
    renderVerdict(answered);
  } catch (e) {
    if (token !== generation) return;
    stopCamera();
    instruct("The check did not complete.");
    showError(e.message);
    if (session) await refreshSession(session.id, token);
  } finally {
    if (token === generation) {
      stopCamera();
      setRunning(false);
      $("#liveness-progress").hidden = true;
    }
  }
}

function cancel() {
  leaveLiveness();
  instruct("Cancelled.");
}

async function copyId() {
  const id = $("#liveness-session-id").textContent;
  try {
    await navigator.clipboard.writeText(id);
    showNotice("Session id copied.");
  } catch (e) {
    showError(`Could not copy (select the id instead): ${e.message}`);
  }
}

export function showLiveness() {
  if (!$("#liveness-start").disabled) instruct("Press “Start check”, face the camera and follow " +
    "the instructions.");
}

// Leaving the page (or signing out): stop recording and the camera; a verdict still on its way
// is dropped.
export function leaveLiveness() {
  generation += 1;
  stopCamera();
  setRunning(false);
  $("#liveness-progress").hidden = true;
  $("#liveness-steps").replaceChildren();
}

export function setupLiveness() {
  $("#liveness-start").addEventListener("click", startCheck);
  $("#liveness-cancel").addEventListener("click", cancel);
  $("#liveness-copy").addEventListener("click", copyId);
}
