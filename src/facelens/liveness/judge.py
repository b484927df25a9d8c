"""Judge a challenge answer: did one live person perform the asked actions, in order?

Per frame: the face followed through the take (FaceFollower: one continuous take), its
FaceMesh (eye aspect ratio for blinks, head yaw for turns) and its SFace embedding (the same
person throughout). Over the sequence: the passive cues (a flat picture, a screen's moiré, the
learned antispoof model) from liveness/passive.py and, when the session's prompt times and the
frames' times are given, each action within its prompt's window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelens.api import Engine, main_face
from facelens.face import Face
from facelens.geometry import l2_normalize
from facelens.liveness.passive import REALNESS_MIN, PassiveCues, passive_cues
from facelens.vision.mesh import eye_aspect_ratio, face_meshes, head_pose_from_mesh

ACTIONS = ("blink", "turn_left", "turn_right")
TURN_DEG = 12.0
"""A turn counts once yaw moves this many degrees from the answer's starting pose (yaw > 0:
the person turns to their left). Chosen on part of the shared clips annotated by eye
(data/liveness_shared.json: liveportrait_d3, d6, intel_head-pose-female-and-male; the others
held out): slight deliberate turns move 13-14 degrees from rest; 10 adds a false turn_right
in a turn-free window, 11-13 leave one false turn_left (d6 glancing 16 degrees while talking;
`facelens eval liveness`, real_footage)."""
REST_FRAMES = 3
"""The starting pose is the most frontal yaw of the answer's first frames: the person rests
before the first prompt (0.5 s or more), and may start moving by the fourth frame."""
CLOSED, REOPENED = 0.75, 0.85
"""A blink: the eye aspect ratio falls below 75% of the open-eye level, then back above 85%.
FaceMesh's lids never meet: on 25 real blinks annotated by eye (data/liveness_footage.json)
the ratio bottoms out at 0.51–0.76 (median 0.69), so the earlier 65% found 7 of them; 75%
finds 22 and sees a blink in 7 of 129 blink-free windows (chosen on that set). On 24 blinks
annotated afterwards (held out) the whole judge passes 22, and 0 of 42 blink-free windows."""
FRONTAL_DEG = 25.0
"""Identity is compared on frames within this yaw (turned faces embed less reliably), and an
answer starts within it: someone looking at the prompts beside the camera (one woman of the
shared clips sits 13-18 degrees off its axis). A start turned further is refused: it has no
rest to measure a turn from (a replayed clip that began turned 44 degrees answered
turn_right at its first frame; `facelens eval liveness`, recaptures)."""
MIN_PRESENT = 0.8
JUMP = 1.2
"""Continuity: between kept frames the followed face moves at most this far, in face widths
plus the log of its change in size (`shift`): a live answer is one continuous take, not a
slideshow of photos posed for each action. The shared clips sampled at 5 fps move up to 0.73
(liveportrait_d12's large head motion; `facelens eval liveness`, continuity)."""
REGAIN = 3
"""A face away from the tracked one is taken as the face only after this many frames in a
row (a cut); before that it is detector flicker or a passer-by, and the frame counts as
one without the face."""
NOT_PERFORMED = "not performed (in the asked order): "
OFF_SCHEDULE = "not performed when prompted (a recording made before the session?): "
REACTION_S = (0.2, 2.0)
"""An action must be seen this long after its prompt: a person needs 0.2 s to react and up
to two seconds to turn or blink; sessions space prompts wider than the window's end."""
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


def starting_yaw(yaw: np.ndarray) -> float:
    """The answer's starting pose: the most frontal of its first REST_FRAMES yaws (measured
    frames only; 0 if none). Turns are measured from it, so someone sitting off the camera's
    axis does not count as turned, and a slight turn from rest does."""
    first = yaw[np.isfinite(yaw)][:REST_FRAMES]
    return float(first[np.argmin(np.abs(first))]) if first.size else 0.0


def find_actions(ear: np.ndarray, yaw: np.ndarray, challenge: list[str]) -> dict[str, int | None]:
    """The frame where each action of `challenge` happens, each after the previous one."""
    found: dict[str, int | None] = dict.fromkeys(challenge)
    open_level = float(np.nanpercentile(ear, 75)) if np.isfinite(ear).any() else np.nan
    # A start turned past FRONTAL_DEG (the judge refuses it) is held there: a clip that
    # begins turned still shows that turn to the action finder used alone (the eval's).
    turned = yaw - np.clip(starting_yaw(yaw), -FRONTAL_DEG, FRONTAL_DEG)
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
            past = np.flatnonzero(sign * turned[start:] > TURN_DEG)
            at = start + int(past[0]) if past.size else None
        found[action] = at
        if at is None:
            break
        start = at + 1
    return found


def shift(a: np.ndarray, b: np.ndarray) -> float:
    """How far box `b` is from box `a`: centre distance over the larger face width, plus how
    much the width changed (log ratio), so a face twice or half the size is a jump too."""
    width_a, width_b = max(a[2] - a[0], 1e-6), max(b[2] - b[0], 1e-6)
    moved = np.hypot(*((b[:2] + b[2:4]) / 2 - (a[:2] + a[2:4]) / 2)) / max(width_a, width_b)
    return float(moved + abs(np.log(width_b / width_a)))


class FaceFollower:
    """The answer's face through its frames: the detection nearest the face's last place,
    not the largest one (a passer-by or a false detection does not take over). A face away
    from it becomes the face only after REGAIN frames in a row, and that counts as a jump."""

    def __init__(self) -> None:
        self.box: np.ndarray | None = None
        self.jumps = 0
        self.largest_shift = 0.0
        self._away: list[np.ndarray] = []

    def pick(self, faces: list[Face], width: int) -> Face | None:
        """The face among `faces` (detected in a frame `width` pixels wide)."""
        if not faces:
            return None
        boxes = [f.box / width for f in faces]  # in frame widths: the resolution may change
        if self.box is None:
            face = main_face(faces)
            self.box = face.box / width
            return face
        box = self.box
        nearest = min(range(len(faces)), key=lambda i: shift(box, boxes[i]))
        moved = shift(box, boxes[nearest])
        if moved <= JUMP:
            self._away = []
            self.largest_shift = max(self.largest_shift, moved)
            self.box = boxes[nearest]
            return faces[nearest]
        self._away = [*self._away[-(REGAIN - 1):], boxes[nearest]] if self._away and \
            shift(self._away[-1], boxes[nearest]) <= JUMP else [boxes[nearest]]
        if len(self._away) < REGAIN:
            return None
        self.jumps += 1
        self._away = []
        self.box = boxes[nearest]
        return faces[nearest]


def measure(engine: Engine, rgb: np.ndarray, follower: FaceFollower
            ) -> tuple[Face | None, float, float]:
    """The followed face with its eye aspect ratio and yaw (NaN where no face or mesh)."""
    faces, _ = engine.detect_rgb(rgb, quality=False)
    face = follower.pick(faces, rgb.shape[1])
    if face is None:
        return None, np.nan, np.nan
    eye, yaw = eye_and_yaw(rgb, face)
    return (face if np.isfinite(eye) else None), eye, yaw


def eye_and_yaw(rgb: np.ndarray, face: Face) -> tuple[float, float]:
    """The face's eye aspect ratio and yaw from its FaceMesh (NaN: the mesh sees no face)."""
    (mesh,) = face_meshes(rgb, [face])
    if mesh.presence < 0.5:
        return np.nan, np.nan
    return eye_aspect_ratio(mesh), head_pose_from_mesh(mesh)[0]


def off_schedule(performed: dict[str, int | None], times: list[float],
                 prompts: list[float]) -> list[str]:
    """The actions not seen within their prompt's window: action i must happen between
    REACTION_S after prompt i (at prompts[i] s into the recording) and before the next prompt
    could be answered. A recording made before the session cannot know when its prompts fall
    (liveness/sessions.py draws them)."""
    late = []
    for (action, at), prompt in zip(performed.items(), prompts, strict=False):
        if at is None:
            continue
        seen = times[at] - times[0]
        if not prompt + REACTION_S[0] <= seen <= prompt + REACTION_S[1]:
            late.append(f"{action} at {seen:.1f} s (prompted at {prompt:.1f} s)")
    return late


def judge(engine: Engine, frames: list[np.ndarray], challenge: list[str], *,
          times: list[float] | None = None, prompts: list[float] | None = None) -> Judgement:
    """Judge RGB `frames` (in order) against `challenge` (a list of ACTIONS), detecting and
    embedding with `engine` and deciding identity at its calibrated sface FAR 1e-3. With
    `prompts` (seconds into the recording at which each action was asked for), `times` (each
    frame's time in s) must show every action in its prompt's window."""
    ear, yaw, boxes, kept, vectors = [], [], [], [], []
    follower = FaceFollower()
    for rgb in frames:
        face, eye, turn = measure(engine, rgb, follower)
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
    if len({round(rgb.shape[1] / rgb.shape[0], 2) for rgb in frames}) > 1:
        # A WebRTC recording may change resolution mid-stream, never its aspect ratio.
        reasons.append("the frames differ in shape (not one continuous take)")
    if len(kept) < MIN_PRESENT * max(len(frames), 1) or len(kept) < 5:
        reasons.append(f"a face was found in {len(kept)} of {len(frames)} frames")
    if follower.jumps:
        reasons.append("the face jumped between frames (not one continuous take)")
    start = starting_yaw(np.array(yaw, np.float32))
    if abs(start) > FRONTAL_DEG:
        reasons.append(f"the answer did not start facing the camera (turned {abs(start):.0f} "
                       "degrees)")
    performed = find_actions(np.array(ear, np.float32), np.array(yaw, np.float32), challenge)
    missing = [a for a, at in performed.items() if at is None]
    if missing:
        reasons.append(NOT_PERFORMED + ", ".join(missing))
    if prompts is not None:
        late = off_schedule(performed, times, prompts) if times is not None else \
            ["the answer carries no frame times"]
        if late:
            reasons.append(OFF_SCHEDULE + ", ".join(late))
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
    if passive and passive.realness is not None and passive.realness < REALNESS_MIN:
        reasons.append("the face looks re-displayed (learned presentation-attack model)")
    return Judgement(not reasons, reasons, performed, len(frames), len(kept), identity_min,
                     passive, mean if not reasons else None)

