"""Faces shown by something that shows pictures (a phone, monitor, TV, laptop, a printed
page) are depictions, not people. Three cues (any one flags the face); the first two only on
the kept frames of a track about to alert, the third on every frame of every track:

- object: NanoDet (scene/detect.py) finds the phone/TV/laptop/book and the face box lies
  inside it, in a kept frame or in a frame of the last seconds (`ScreenMemory`: the camera
  looks for screens twice a second while faces are in view);
- bezel: a closed frame around the face (video/bezel.py): four straight edges, one on each
  side, clear of the face and meeting at corners (a screen's or a picture's border);
- rigid: the face stays glued to a rigid region around it that moves against the scene
  (`RigidRegion`, video/rigid_region.py): a screen held by hand carries the picture's
  background with the face; a real head moves against its own.

The learned presentation-attack model `antispoof` is measured (eval/depiction_eval.py) but not
fused: on camera crops it scores real faces as low as made-up screens (docs/decisions.md).
Thresholds were set on real footage only (`facelens eval depiction`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facelens.geometry import inside_share
from facelens.scene.detect import DEPICTING, DEPICTING_THRESHOLD, Objects, detect_objects
from facelens.video.bezel import framed

INSIDE = 0.6
"""Share of the face box inside the object's box that makes the face part of the object."""
MAX_FRAME_SHARE = 0.6
"""Boxes covering more of the frame are often NanoDet's low-score guesses at the whole scene…"""
LARGE_THRESHOLD = 0.25
"""…so they count only from this score (a monitor filling most of the view). On the 408 real
faces of the bezel check no box holding a face scored over 0.15 (0.17 mirrored), at any size."""


def screens(rgb: np.ndarray, *, mirrored: bool = False) -> list[tuple[np.ndarray, str]]:
    """(box, name) of every NanoDet phone/TV/laptop/book in the frame that may be a screen
    or a print (`screen_boxes`). `mirrored`: found in the mirror image, boxes given in the
    frame's coordinates (NanoDet's score for a screen changes by up to ~0.1 between the two)."""
    view = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
    objects = detect_objects(view, DEPICTING_THRESHOLD)
    if mirrored and len(objects):
        width = rgb.shape[1]
        objects = Objects(np.stack([width - objects.boxes[:, 2], objects.boxes[:, 1],
                                    width - objects.boxes[:, 0], objects.boxes[:, 3]], 1),
                          objects.scores, objects.class_ids)
    return screen_boxes(objects, rgb.shape)


def screen_boxes(objects: Objects, frame_shape: tuple[int, ...]
                 ) -> list[tuple[np.ndarray, str]]:
    """(box, name) of the detected `objects` that may be a screen or a print: a phone, TV,
    laptop or book scoring at least DEPICTING_THRESHOLD, LARGE_THRESHOLD for a box over
    MAX_FRAME_SHARE of the frame."""
    objects = objects.of(*DEPICTING)
    frame_area = frame_shape[0] * frame_shape[1]
    return [(box, str(name)) for box, score, name in zip(objects.boxes, objects.scores,
                                                          objects.names, strict=True)
            if score >= DEPICTING_THRESHOLD and (
                (box[2] - box[0]) * (box[3] - box[1]) <= MAX_FRAME_SHARE * frame_area
                or score >= LARGE_THRESHOLD)]


def encloses(box: np.ndarray, face_box: np.ndarray, min_area: float = 1.5) -> bool:
    """The face lies inside `box` (INSIDE of it), which is at least `min_area` × its size."""
    face_area = (face_box[2] - face_box[0]) * (face_box[3] - face_box[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return bool(area > min_area * face_area and inside_share(face_box, box) >= INSIDE)


def enclosing_object(rgb: np.ndarray, face_box: np.ndarray, memory: ScreenMemory | None = None,
                     time: float = 0.0) -> str | None:
    """The name of the screen (`screens`) the face lies inside, if any: in the frame, else in
    its mirror image (a second look; only frames of a track about to alert get here).
    `memory`: the screens each look finds are remembered there, as of the frame's video
    `time` (the face of another track may lie inside one), and a look the memory holds for
    this frame (its own scan, or another track's look) is not taken again."""
    for mirrored in (False, True):
        known = None if memory is None else memory.looks.get((time, mirrored))
        found = screens(rgb, mirrored=mirrored) if known is None else known
        if memory is not None and known is None:
            memory.remember(time, found, mirrored=mirrored)
        for box, name in found:
            if encloses(box, face_box):
                return name
    return None


SCREEN_SCAN_S = 0.5
"""While faces are in view, the camera's frame is searched for screens at most this often
(video seconds)…"""
SCREEN_MEMORY_S = 10.0
"""…and a screen found counts for this long. NanoDet finds a screen over a busy scene in a
few frames only (a monitor 35% of the frame wide over the facenet crowd: 12 of 92), rarely
the ones a track keeps, so a face inside a screen seen a moment ago is a depiction too."""
SCREEN_MIN_AREA = 3.0
"""A remembered screen is at least this many times the face's area: a box hugging a head
is NanoDet taking the head for a phone (once on the Hamilton clip: 1.8×, score 0.23)."""


@dataclass
class ScreenMemory:
    """The screens one camera's recent frames showed (`screens`), found at most every
    SCREEN_SCAN_S and kept SCREEN_MEMORY_S; forgotten at a scene cut."""

    looks: dict[tuple[float, bool], list[tuple[np.ndarray, str]]] = field(default_factory=dict)
    """(video time, mirrored) -> the screens one look at that frame found (maybe none): the
    memory's scans and the object cue's looks at kept frames, kept SCREEN_MEMORY_S."""
    scanned_at: float = -math.inf
    scans: int = 0
    """NanoDet passes run here (objects detected by the caller are not counted)."""

    def observe(self, time: float, rgb: np.ndarray, detected: Objects | None = None) -> None:
        """Look for screens in the frame if due; `detected`: this frame's objects, already
        found by the street layer (same network, screens kept from the same score), which
        are taken instead of a pass of its own whenever they come."""
        if time < self.scanned_at:  # the source started again (a file looped)
            self.forget()
        if detected is None and time - self.scanned_at < SCREEN_SCAN_S:
            return
        found = screens(rgb) if detected is None else screen_boxes(detected, rgb.shape)
        self.scanned_at, self.scans = time, self.scans + (detected is None)
        self.looks = {k: f for k, f in self.looks.items() if time - k[0] <= SCREEN_MEMORY_S}
        self.remember(time, found)

    def remember(self, time: float, found: list[tuple[np.ndarray, str]], *,
                 mirrored: bool = False) -> None:
        """Screens (`screens`) one look at the frame of video `time` found."""
        self.looks.setdefault((time, mirrored), []).extend(found)

    @property
    def seen(self) -> list[tuple[float, np.ndarray, str]]:
        """(video time, box, name) of every screen remembered, in the order looked."""
        return [(time, box, name) for (time, _), found in self.looks.items()
                for box, name in found]

    def holding(self, face_box: np.ndarray, time: float) -> str | None:
        """The name of a screen seen within SCREEN_MEMORY_S that holds the face."""
        for seen_at, box, name in self.seen:
            if 0 <= time - seen_at <= SCREEN_MEMORY_S and encloses(box, face_box,
                                                                     SCREEN_MIN_AREA):
                return name
        return None

    def forget(self) -> None:
        self.looks, self.scanned_at = {}, -math.inf


Cue = Callable[[np.ndarray, np.ndarray, ScreenMemory | None, float], str | None]
"""A cue: (frame, face box, the camera's screen memory, video time) -> what shows the face."""


def _framed(rgb: np.ndarray, face_box: np.ndarray, memory: ScreenMemory | None = None,
            time: float = 0.0) -> str | None:
    """The bezel cue (video/bezel.py) looks at the frame alone."""
    return framed(rgb, face_box)


CUES: dict[str, Cue] = {"object": enclosing_object, "bezel": _framed}
"""Each cue names what shows the face (or None); cheapest-to-trust first."""


def find_depiction(rgb: np.ndarray, face_box: np.ndarray, memory: ScreenMemory | None = None,
                   time: float = 0.0) -> tuple[str, str] | None:
    """(the cue, what shows the face) in this frame, if it is a depiction: ("object", a
    NanoDet object's name) or ("bezel", "framed"); None for a person. The cues in CUES' order;
    `memory`, `time`: the object cue's screens are remembered (`enclosing_object`)."""
    for cue, check in CUES.items():
        if found := check(rgb, face_box, memory, time):
            return cue, found
    return None
