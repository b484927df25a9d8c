// Webcam capture for enrolment: getUserMedia -> <video> preview -> "Capture" -> JPEG Blob.
// openCamera/closeCamera are shared with the liveness check (liveness.js).
import { $, el, showError } from "./ui.js";

let stream = null;
let captures = []; // [{blob, name, url}]
let counter = 0;

function renderCaptures() {
  const list = $("#enrol-captures");
  list.replaceChildren(...captures.map((c, i) => el("li", {},
    el("img", { src: c.url, alt: `Captured frame ${c.name}`, width: 96 }),
    el("button", {
      type: "button", dataset: { testid: `remove-capture-${i}` },
      "aria-label": `Remove ${c.name}`, onclick: () => removeCapture(i),
    }, "Remove"))));
}

function removeCapture(i) {
  URL.revokeObjectURL(captures[i].url);
  captures.splice(i, 1);
  renderCaptures();
}

// getUserMedia's refusals, in words a person can act on.
function cameraMessage(e) {
  switch (e && e.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Webcam unavailable: permission to use the camera was denied. Allow the camera " +
        "for this site (the camera icon in the address bar) and try again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "Webcam unavailable: no camera was found.";
    case "NotReadableError":
    case "AbortError":
      return "Webcam unavailable: the camera could not start (another application may be " +
        "using it).";
    default:
      return `Webcam unavailable: ${(e && e.message) || e}`;
  }
}

// openCamera(videoConstraints) -> MediaStream, or throws an Error whose message says why not.
export async function openCamera(video = true) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser offers no webcam here (it needs https or localhost).");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: false });
  } catch (e) {
    throw new Error(cameraMessage(e));
  }
}

// Stops every track of a stream (the camera light goes off).
export function closeCamera(media) {
  if (media) for (const track of media.getTracks()) track.stop();
}

async function start() {
  try {
    stream = await openCamera();
  } catch (e) {
    showError(e.message);
    return;
  }
  const video = $("#webcam-video");
  video.srcObject = stream;
  video.hidden = false;
  $("#webcam-start").disabled = true;
  $("#webcam-capture").disabled = false;
  $("#webcam-stop").disabled = false;
}

export function stopWebcam() {
  closeCamera(stream);
  stream = null;
  const video = $("#webcam-video");
  video.srcObject = null;
  video.hidden = true;
  $("#webcam-start").disabled = false;
  $("#webcam-capture").disabled = true;
  $("#webcam-stop").disabled = true;
}

function capture() {
  const video = $("#webcam-video");
  if (!video.videoWidth) {
    showError("The webcam has not started yet; try again in a moment.");
    return;
  }
  const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    if (!blob) return;
    counter += 1;
    captures.push({ blob, name: `webcam-${counter}.jpg`, url: URL.createObjectURL(blob) });
    renderCaptures();
  }, "image/jpeg", 0.92);
}

// The captured frames, as [{blob, name}] for the enrol form.
export const capturedImages = () => captures.map(({ blob, name }) => ({ blob, name }));

export function clearCaptures() {
  for (const c of captures) URL.revokeObjectURL(c.url);
  captures = [];
  renderCaptures();
}

export function setupWebcam() {
  $("#webcam-start").addEventListener("click", start);
  $("#webcam-capture").addEventListener("click", capture);
  $("#webcam-stop").addEventListener("click", stopWebcam);
}
