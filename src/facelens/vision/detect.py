"""Face detection: YuNet (fast default) and CenterFace (small and crowded faces).

Both return boxes, 5 landmarks and scores. Large images are scanned as a whole at reduced
size (for big faces) and in overlapping native-resolution tiles (for small ones), then merged
by NMS, so a 40-px face in a 4K frame is found without running one huge network pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx

from facelens.face import Face
from facelens.geometry import inside_share
from facelens.models.base import LazyModel, make_batch_dynamic, onnx_session

NMS_IOU = 0.3
PART_SHARE = 0.6
"""A detection this much inside a better one is a part of it (`Detections.without_parts`)."""


@dataclass(frozen=True)
class Detections:
    """Parallel arrays for N faces: boxes (N,4) x1y1x2y2, landmarks (N,5,2), scores (N,)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32),
                   np.zeros((0,), np.float32))

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]),
                   np.concatenate([p.landmarks for p in parts]),
                   np.concatenate([p.scores for p in parts]))

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Detections:
        """Map from a scaled (by `scale`) sub-image at (dx, dy) back to image coordinates."""
        offset = np.array([dx, dy], np.float32)
        return Detections(self.boxes / scale + np.tile(offset, 2), self.landmarks / scale + offset,
                          self.scores)

    def without_parts(self, share: float = PART_SHARE) -> Detections:
        """Without the detections lying mostly (`share` of their area) inside a better one,
        best first (after `nms`): a face a tile's edge cuts is found there as a part of
        itself, which overlaps the whole face too little for NMS."""
        keep: list[int] = []
        for i in range(len(self.scores)):
            if all(inside_share(self.boxes[i], self.boxes[k]) < share for k in keep):
                keep.append(i)
        return Detections(self.boxes[keep], self.landmarks[keep], self.scores[keep])

    def nms(self, iou: float = NMS_IOU) -> Detections:
        if len(self.scores) < 2:
            return self
        xywh = np.column_stack([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]])
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), self.scores.tolist(), 0.0, iou),
                          dtype=np.int64).reshape(-1)
        keep = keep[np.argsort(-self.scores[keep])]
        return Detections(self.boxes[keep], self.landmarks[keep], self.scores[keep])


YUNET_MIN_SIDE = 64
"""OpenCV's FaceDetectorYN answers a short, wide input (20x640, 8x1920, 30x777) with a face of
score 1.0 at 1e30 / inf / NaN px; padded to 64 px on each side it finds none there."""


class YuNet(LazyModel[cv2.FaceDetectorYN]):
    """YuNet through OpenCV's FaceDetectorYN (decoding and NMS in C++). Input: BGR."""

    name = "yunet"

    def __init__(self) -> None:
        super().__init__()
        self._run_lock = threading.Lock()  # FaceDetectorYN keeps its input size as state

    def _open(self, path: Path) -> cv2.FaceDetectorYN:
        return cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, NMS_IOU, 5000)

    def __call__(self, rgb: np.ndarray, threshold: float) -> Detections:
        h, w = rgb.shape[:2]
        if min(h, w) < YUNET_MIN_SIDE:  # black below and right: boxes keep their place
            canvas = np.zeros((max(h, YUNET_MIN_SIDE), max(w, YUNET_MIN_SIDE), 3), np.uint8)
            canvas[:h, :w] = rgb
            rgb = canvas
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # 40x faster than a numpy [..., ::-1] copy
        session = self.session
        with self._run_lock:
            session.setInputSize((bgr.shape[1], bgr.shape[0]))
            session.setScoreThreshold(threshold)
            _, rows = session.detect(bgr)
        if rows is None:
            return Detections.empty()
        rows = rows.astype(np.float32)
        boxes = np.column_stack([rows[:, :2], rows[:, :2] + rows[:, 2:4]])
        return Detections(boxes, rows[:, 4:14].reshape(-1, 5, 2), rows[:, 14])


class CenterFace(LazyModel[object]):
    """CenterFace (anchor-free heatmap) through onnxruntime. Input: BGR, multiples of 32."""

    name = "centerface"

    def __init__(self, threads: int = 2) -> None:
        super().__init__()
        self._threads = threads

    def _open(self, path: Path) -> object:
        return onnx_session(make_batch_dynamic(onnx.load(str(path)), spatial=True), self._threads)

    def __call__(self, rgb: np.ndarray, threshold: float) -> Detections:
        h, w = rgb.shape[:2]
        h32, w32 = -(-h // 32) * 32, -(-w // 32) * 32
        padded = np.zeros((h32, w32, 3), np.float32)
        padded[:h, :w] = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        blob = padded.transpose(2, 0, 1)[None]
        heat, scale, offset, marks = self.session.run(None, {"input.1": blob})  # type: ignore[attr-defined]
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        if len(ys) == 0:
            return Detections.empty()
        bh = np.exp(scale[0, 0, ys, xs]) * 4
        bw = np.exp(scale[0, 1, ys, xs]) * 4
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
        x1, y1 = cx - bw / 2, cy - bh / 2
        boxes = np.column_stack([x1, y1, x1 + bw, y1 + bh]).astype(np.float32)
        lm = marks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (dy, dx) pairs relative to the box
        landmarks = np.stack([x1[:, None] + lm[:, :, 1] * bw[:, None],
                              y1[:, None] + lm[:, :, 0] * bh[:, None]], axis=-1)
        found = Detections(boxes, landmarks.astype(np.float32), heat[0, 0, ys, xs])
        return found.nms()


DETECTORS: dict[str, YuNet | CenterFace] = {}
_detectors_lock = threading.Lock()


def detector(name: str, threads: int = 2) -> YuNet | CenterFace:
    """The process-wide instance of a detector (sessions are shared, opened once)."""
    if name not in ("yunet", "centerface"):
        raise ValueError(f"unknown detector {name!r}: choose yunet or centerface")
    with _detectors_lock:
        if name not in DETECTORS:
            DETECTORS[name] = YuNet() if name == "yunet" else CenterFace(threads)
        return DETECTORS[name]


def _tiles(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap`."""
    if length <= tile:
        return [0]
    count = int(np.ceil((length - overlap) / (tile - overlap)))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def detect_faces(rgb: np.ndarray, *, name: str = "yunet", threshold: float = 0.6,
                 max_side: int = 1920, threads: int = 2, second_chance: bool = False
                 ) -> list[Face]:
    """Detect faces in an RGB uint8 image, best score first.

    With `second_chance`, an image where `name` finds nothing is searched again by the other
    detector at a lower threshold (callers that know a face is there: verify, enrol, eval).
    """
    faces = _detect_once(rgb, name, threshold, max_side, threads)
    if faces or not second_chance:
        return faces
    other = "centerface" if name == "yunet" else "yunet"
    return _detect_once(rgb, other, SECOND_CHANCE_THRESHOLD, max_side, threads)


SECOND_CHANCE_THRESHOLD = 0.3


def _detect_once(rgb: np.ndarray, name: str, threshold: float, max_side: int,
                 threads: int) -> list[Face]:
    model = detector(name, threads)
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        found = model(rgb, threshold)
    else:
        # Whole image shrunk to max_side (big faces) + native tiles (small faces).
        scale = max_side / max(h, w)
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)  # a thin strip keeps 1 px
        parts = [model(small, threshold).shifted(0, 0, scale)]
        overlap = max_side // 8
        for y in _tiles(h, max_side, overlap):
            for x in _tiles(w, max_side, overlap):
                parts.append(model(rgb[y:y + max_side, x:x + max_side], threshold).shifted(x, y))
        found = Detections.concat(parts).nms().without_parts()
    return [Face(box=found.boxes[i], landmarks=found.landmarks[i], score=float(found.scores[i]),
                 detector=name) for i in range(len(found.scores))]
