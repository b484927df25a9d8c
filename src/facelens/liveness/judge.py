"""Judge a challenge answer: did one live person perform the asked actions, in order?

Per frame: the main face, its FaceMesh (eye aspect ratio for blinks, head yaw for turns) and
its SFace embedding (the same person throughout). Over the sequence: the passive cues (a flat
picture, a screen's moiré) from liveness/passive.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelens.api import Engine, main_face
from facelens.face import Face
from facelens.geometry import iou, l2_normalize
from facelens.liveness.passive import PassiveCues, passive_cues
from facelens.vision.mesh import eye_aspect_ratio, face_meshes, head_pose_from_mesh

ACTIONS = ("blink", "turn_left", "turn_right")
TURN_DEG = 20.0
"""A turn counts once yaw passes this many degrees (yaw > 0: the person turns to their left)."""
CLOSED, REOPENED = 0.75, 0.85
"""A blink: the eye aspect ratio falls below 75% of the open-eye level, then back above 85%.
FaceMesh's lids never meet: on 25 real blinks annotated by eye (data/liveness_footage.json)
the ratio bottoms out at 0.51–0.76 (median 0.69), so the earlier 65% found 7 of them; 75%
finds 22 and sees a blink in 7 of 129 blink-free windows (chosen on that set). On 24 blinks
annotated afterwards (held out) the whole judge passes 22, and 0 of 42 blink-free windows."""
FRONTAL_DEG = 25.0
"""Identity is compared on frames within this yaw (turned faces embed less reliably)."""
MIN_PRESENT = 0.8
CONTINUITY_IOU = 0.3
"""Consecutive frames must show the face where it was (IoU of boxes): a live answer is one
continuous take, not a slideshow of different photos posed for each action."""
NOT_PERFORMED = "not performed (in the asked order): "
MOIRE_THRESHOLD = 9.0
"""Screen texture: above this moiré score a sequence counts as a replay. Real footage scores up
to 10.5: interlaced or banded video peaks the spectrum as a screen does. Over 180 bona fide
windows of five clips 7.0 refused 24 (17 of one studio clip's 44), 9.0 refuses 2; rendered
replays passing the passive cues go from 75 to 105 of 360 (`facelens eval liveness`)."""


@dataclass
class Judgement:
    passed: bool
    reasons: list[str]
    performed: dict[str, int | None]
    """Action -> the frame where it was seen (None: not seen, or not in the asked order)."""
    frames: int
    faces: int
    identity_min: float | None
    """Lowest similarity of a frontal frame to the sequence's mean face (sface); identity is
    decided on the first half's mean face against the second half's."""
    passive: PassiveCues | None
    embedding: np.ndarray | None = field(default=None, repr=False)
    """The mean sface embedding of the frontal frames: who passed (kept in memory only)."""

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "performed": self.performed,
                "frames": self.frames, "faces": self.faces,
                "identity_min": None if self.identity_min is None
                else round(self.identity_min, 3),
                "passive": self.passive.to_dict() if self.passive else None}


def find_actions(ear: np.ndarray, yaw: np.ndarray, challenge: list[str]) -> dict[str, int | None]:
    """The frame where each action of `challenge` happens, each after the previous one."""
    found: dict[str, int | None] = dict.fromkeys(challenge)
    open_level = float(np.nanpercentile(ear, 75)) if np.isfinite(ear).any() else np.nan
    start = 0
    for action in challenge:
        at = None
        if action == "blink" and np.isfinite(open_level):
            closed = np.flatnonzero(ear[start:] < CLOSED * open_level)
            for first in closed:
                after = np.flatnonzero(ear[start + first:] > REOPENED * open_level)
                if after.size:
                    at = start + int(first + after[0])
                    break
        elif action in ("turn_left", "turn_right"):
            sign = 1 if action == "turn_left" else -1
            past = np.flatnonzero(sign * yaw[start:] > TURN_DEG)
            at = start + int(past[0]) if past.size else None
        found[action] = at
        if at is None:
            break
        start = at + 1
    return found


def measure(engine: Engine, rgb: np.ndarray) -> tuple[Face | None, float, float]:
    """The frame's main face with its eye aspect ratio and yaw (NaN where no face or mesh)."""
    faces, _ = engine.detect_rgb(rgb, quality=False)
    if not faces:
        return None, np.nan, np.nan
    face = main_face(faces)
    (mesh,) = face_meshes(rgb, [face])
    if mesh.presence < 0.5:
        return None, np.nan, np.nan
    return face, eye_aspect_ratio(mesh), head_pose_from_mesh(mesh)[0]


def judge(engine: Engine, frames: list[np.ndarray], challenge: list[str]) -> Judgement:
    """Judge RGB `frames` (in order) against `challenge` (a list of ACTIONS), detecting and
    embedding with `engine` and deciding identity at its calibrated sface FAR 1e-3."""
    ear, yaw, boxes, kept, vectors = [], [], [], [], []
    for rgb in frames:
        face, eye, turn = measure(engine, rgb)
        ear.append(eye)
        yaw.append(turn)
        if face is None:
            continue
        boxes.append(face.box)
        kept.append(rgb)
        if abs(yaw[-1]) <= FRONTAL_DEG:
            engine.embed_rgb(rgb, [face], embedder="sface")
            assert face.embedding is not None
            vectors.append(face.embedding)
    reasons = []
    if len({rgb.shape for rgb in frames}) > 1:
        reasons.append("the frames differ in size (not one continuous take)")
    if len(kept) < MIN_PRESENT * max(len(frames), 1) or len(kept) < 5:
        reasons.append(f"a face was found in {len(kept)} of {len(frames)} frames")
    if len(boxes) > 1:
        jumps = iou(np.stack(boxes[:-1]), np.stack(boxes[1:])).diagonal()
        if float(jumps.min()) < CONTINUITY_IOU:
            reasons.append("the face jumped between frames (not one continuous take)")
    performed = find_actions(np.array(ear, np.float32), np.array(yaw, np.float32), challenge)
    missing = [a for a, at in performed.items() if at is None]
    if missing:
        reasons.append(NOT_PERFORMED + ", ".join(missing))
    identity_min, mean = None, None
    if vectors:
        stack = np.stack(vectors)
        mean = l2_normalize(stack.mean(axis=0))
        identity_min = float((stack @ mean).min())
        # The person at the start against the person at the end, each averaged over its half:
        # single low-resolution or turned frames dip far below the threshold on their own.
        halves = np.array_split(stack, 2) if len(stack) > 1 else [stack, stack]
        same = engine.calibration.operating_point("sface", 1e-3).threshold
        first, second = (l2_normalize(half.mean(axis=0)) for half in halves)
        if float(first @ second) < same:
            reasons.append("the face changed during the challenge (not one person throughout)")
    else:
        reasons.append("no frontal face to check identity on")
    passive = passive_cues(kept, boxes) if len(kept) >= 5 else None
    if passive and passive.planar:
        reasons.append("the face moved as a flat picture (print or screen)")
    if passive and passive.moire > MOIRE_THRESHOLD:
        reasons.append("screen texture (moiré) on the face")
    return Judgement(not reasons, reasons, performed, len(frames), len(kept), identity_min,
                     passive, mean if not reasons else None)

