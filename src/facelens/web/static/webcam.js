// Webcam capture for enrolment: getUserMedia -> <video> preview -> "Capture" -> JPEG Blob.
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

async function start() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser offers no webcam here (it needs https or localhost).");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    showError(`Webcam unavailable: ${e.message}`);
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
  if (stream) for (const track of stream.getTracks()) track.stop();
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
