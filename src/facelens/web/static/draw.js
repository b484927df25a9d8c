// Drawing faces on a canvas at the photo's natural size (CSS scales the canvas down).
const LANDMARKS = ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"];
const COLOURS = { known: "#1a7f37", unknown: "#d1242f", plain: "#0969da" };
const MIN_LABELLED_PX = 20;

// faces: [{box, landmarks, label, kind: "known"|"unknown"|"plain"}] in the API's coordinates;
// apiSize: {width, height} the API measured (the coordinates' frame), or null.
// Returns the label bands drawn, [{x, y, w, h, label}] in canvas pixels.
export function drawFaces(canvas, bitmap, faces, apiSize) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const sx = apiSize && apiSize.width ? bitmap.width / apiSize.width : 1;
  const sy = apiSize && apiSize.height ? bitmap.height / apiSize.height : 1;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);

  const unit = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 400));
  ctx.lineWidth = unit;
  ctx.font = `bold ${unit * 7}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  const placed = []; // label bands drawn so far: a new one moves until it overlaps none
  for (const face of faces) {
    const colour = COLOURS[face.kind] || COLOURS.plain;
    const [x1, y1, x2, y2] = face.box;
    const x = x1 * sx;
    const y = y1 * sy;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, (x2 - x1) * sx, (y2 - y1) * sy);

    ctx.fillStyle = colour;
    for (const name of LANDMARKS) {
      const point = face.landmarks && face.landmarks[name];
      if (!point) continue;
      ctx.beginPath();
      ctx.arc(point[0] * sx, point[1] * sy, unit * 1.5, 0, 2 * Math.PI);
      ctx.fill();
    }

    // A face under MIN_LABELLED_PX wide keeps its box but no label: such detections are
    // mostly false (a 9-px "face" in a crowd) and their labels would hide real faces.
    if (x2 - x1 < MIN_LABELLED_PX) continue;
    // Label on a filled band above the box (inside it when the box touches the top edge),
    // moved left when it would run off the right edge, and down past any label it would cover.
    const pad = unit * 2;
    const bandWidth = ctx.measureText(face.label).width + 2 * pad;
    const bandHeight = unit * 7 + pad;
    const bandX = Math.max(0, Math.min(x - unit / 2, canvas.width - bandWidth));
    let bandY = y - bandHeight >= 0 ? y - bandHeight : y;
    const overlaps = (b) => bandX < b.x + b.w && b.x < bandX + bandWidth &&
      bandY < b.y + b.h && b.y < bandY + bandHeight;
    for (let clash = placed.find(overlaps); clash; clash = placed.find(overlaps)) {
      bandY = clash.y + clash.h;
    }
    placed.push({ x: bandX, y: bandY, w: bandWidth, h: bandHeight, label: face.label });
    ctx.fillRect(bandX, bandY, bandWidth, bandHeight);
    ctx.fillStyle = "#fff";
    ctx.fillText(face.label, bandX + pad, bandY + bandHeight - pad / 2);
  }
  return placed;
}

// Intersection over union of two [x1, y1, x2, y2] boxes: pairs detect and identify faces.
export function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}
