"""Descriptions of people and vehicles: colours from one small palette, each with a confidence.

No body-attribute model ships in a registry package, so colours are a vote in HSV: every
pixel of a region (a vehicle's body, a person's upper or lower clothing band) is named by the
palette entry it falls in, and the name with the most pixels wins; its confidence is its share
of the vote. Grey-scale pixels (low saturation) are named by brightness alone, so chrome and
glass (bright, unsaturated) pull a dark car towards grey or white: the vehicle region is the
box's middle band, below the windows and above the wheels, where paint dominates.

Perceived sex and adult/child are not guessed from colours or box shape: the street pipeline
takes perceived sex from a large enough face (the face engine), and adult/child from body
proportions (`age_group`, on BlazePose keypoints, scene/pose.py): a child's head is large for
its shoulders and body. Head breadth is the ear-to-ear span; it is compared with the shoulder
span (level like it, so a camera's tilt cancels: adults ≈ 0.38, a six-year-old ≈ 0.5) and,
as a check, with the body length shoulders → hips → knees → ankles (a stride does not shorten
it). Anything less than a whole, upright, front- or back-facing body is "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelens.events.hotlists import PALETTE
from facelens.scene.pose import Pose

UNKNOWN = "unknown"
# Hue bands (OpenCV hue, 0..180) of the chromatic palette entries.
HUE_BANDS = (("red", 0, 8), ("orange", 8, 20), ("yellow", 20, 34), ("green", 34, 85),
             ("blue", 85, 130), ("purple", 130, 160), ("red", 160, 181))
MIN_SATURATION = 70
"""Below this saturation (0..255) a pixel is named by brightness alone."""
DARK, BRIGHT = 60, 155
"""Value (0..255) below which a pixel is black, above which an unsaturated one is white."""
MIN_PIXELS = 64
VEHICLE_BAND = (0.35, 0.8)
"""Rows of a vehicle box (share of its height) whose pixels vote: the body, not the windows
or the road."""
UPPER_BAND, LOWER_BAND = (0.2, 0.5), (0.55, 0.9)
"""Rows of a standing person's box for the upper and lower clothing."""
SIDE_TRIM = 0.2
"""Share of a box's width dropped on each side: the background around a body."""


@dataclass(frozen=True)
class Attribute:
    value: str
    confidence: float
    """In [0, 1]; 0 when `value` is unknown."""

    def as_dict(self) -> dict[str, object]:
        return {"value": self.value, "confidence": round(self.confidence, 3)}


NOT_KNOWN = Attribute(UNKNOWN, 0.0)


def colour_names(rgb_pixels: np.ndarray) -> np.ndarray:
    """The palette index of every pixel of an (N, 3) uint8 RGB array."""
    hsv = cv2.cvtColor(rgb_pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue, sat, val = (hsv[:, i].astype(np.int32) for i in range(3))
    names = np.full(len(hsv), PALETTE.index("grey"), np.int64)
    chromatic = (sat >= MIN_SATURATION) & (val >= DARK)
    for name, low, high in HUE_BANDS:
        names[chromatic & (hue >= low) & (hue < high)] = PALETTE.index(name)
    # Dark, little saturated orange-red is brown.
    brown = chromatic & (hue < 20) & (val < 150) & (sat < 190)
    names[brown] = PALETTE.index("brown")
    grey = ~chromatic
    names[grey & (val < DARK)] = PALETTE.index("black")
    names[grey & (val >= BRIGHT)] = PALETTE.index("white")
    return names


def dominant_colour(rgb: np.ndarray, box: np.ndarray, rows: tuple[float, float]) -> Attribute:
    """The palette colour of the band `rows` (shares of the box height) of `box`, its sides
    trimmed by SIDE_TRIM; NOT_KNOWN when the band holds fewer than MIN_PIXELS pixels."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    left, right = int(max(0, x1 + SIDE_TRIM * bw)), int(min(w, x2 - SIDE_TRIM * bw))
    top, bottom = int(max(0, y1 + rows[0] * bh)), int(min(h, y1 + rows[1] * bh))
    region = rgb[top:bottom, left:right]
    if region.size < 3 * MIN_PIXELS:
        return NOT_KNOWN
    step = max(1, int(np.sqrt(region.shape[0] * region.shape[1] / 4096)))  # ~4k pixels vote
    votes = np.bincount(colour_names(np.ascontiguousarray(region[::step, ::step]).reshape(
        -1, 3)), minlength=len(PALETTE))
    best = int(votes.argmax())
    return Attribute(PALETTE[best], float(votes[best] / votes.sum()))


def describe_vehicle(rgb: np.ndarray, box: np.ndarray, kind: str, score: float
                     ) -> dict[str, Attribute]:
    """Type (the detector's class and score) and body colour."""
    return {"type": Attribute(kind, float(score)),
            "colour": dominant_colour(rgb, box, VEHICLE_BAND)}


def describe_person(rgb: np.ndarray, box: np.ndarray, frame_height: int
                    ) -> dict[str, Attribute]:
    """Upper and lower clothing colours; the lower band is unknown when the box touches the
    frame's bottom edge (legs cut off)."""
    whole = float(box[3]) < frame_height - 2
    return {"upper": dominant_colour(rgb, box, UPPER_BAND),
            "lower": dominant_colour(rgb, box, LOWER_BAND) if whole else NOT_KNOWN}


AGE_POINTS = ("left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_hip",
              "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
"""Keypoints adult/child needs, every one seen with at least AGE_MIN_SCORE."""
AGE_MIN_SCORE = 0.6
AGE_MIN_BODY_PX = 100
"""Shoulder-to-ankle path (px) below which an ear span (≈ 11 px) is too coarse to measure."""
FACING = (0.45, 1.1)
"""Shoulder span over torso length of an upright body facing the camera or away from it
(0.72–0.91 on the street clips): below, it is turned sideways (the ears overlap); above, the
torso is squeezed (a body guessed behind an occluder, or bent)."""
CHILD_HEAD_SHOULDER = 0.47
"""Ear span over shoulder span (both level, so the camera's tilt cancels) at and above which a
head is a child's: adults 0.32–0.44 by BlazePose on the street clips, a six-year-old ≈ 0.5
(bitragion ≈ 12.5 cm, biacromial ≈ 25 cm), a ten-year-old ≈ 0.45."""
HEAD_BODY = (0.13, 0.17)
"""Ear span over body length: a child's is at least the first (≈ 0.14 at six years, seen
level; more from above), an adult's at most the second (0.11 by anthropometry seen level,
up to 0.163 by BlazePose from the street clips' elevated camera). Outside, the shoulder ratio
is not trusted: narrow shoulders, not a big head, or the reverse."""
BOX_SLACK = 0.1
"""Share of the box's height by which keypoints may fall outside it (the box is loose)."""
AGE_SURE = 0.15
"""Relative distance from CHILD_HEAD_SHOULDER at which the answer is sure (its confidence is
then the keypoints' own)."""


def age_group(pose: Pose, box: np.ndarray, frame_size: tuple[int, int]) -> Attribute:
    """Adult or child from the head-to-body and head-to-shoulder proportions of `pose` (the
    person in `box`). NOT_KNOWN unless ears, shoulders, hips, knees and ankles are all seen
    inside the frame (`frame_size` = width, height), the box clear of its bottom edge, the body
    long enough and facing the camera or away from it, and the head-to-body ratio in the range
    of the answer."""
    named = {name: pose.point(name) for name in AGE_POINTS}
    seen = min(score for _, score in named.values())
    if seen < AGE_MIN_SCORE or not _whole_body(np.array([p for p, _ in named.values()]), box,
                                               frame_size):
        return NOT_KNOWN

    def span(a: str, b: str) -> float:
        return float(np.linalg.norm(named[a][0] - named[b][0]))

    shoulders = (named["left_shoulder"][0] + named["right_shoulder"][0]) / 2
    hips = (named["left_hip"][0] + named["right_hip"][0]) / 2
    torso = float(np.linalg.norm(shoulders - hips))
    legs = (span("left_hip", "left_knee") + span("left_knee", "left_ankle")
            + span("right_hip", "right_knee") + span("right_knee", "right_ankle")) / 2
    body, shoulder_span = torso + legs, span("left_shoulder", "right_shoulder")
    if body < AGE_MIN_BODY_PX or not FACING[0] * torso <= shoulder_span <= FACING[1] * torso:
        return NOT_KNOWN
    head = span("left_ear", "right_ear")
    child = head / shoulder_span >= CHILD_HEAD_SHOULDER
    if not (head / body >= HEAD_BODY[0] if child else head / body <= HEAD_BODY[1]):
        return NOT_KNOWN
    sureness = min(1.0, abs(head / shoulder_span / CHILD_HEAD_SHOULDER - 1) / AGE_SURE)
    return Attribute("child" if child else "adult", seen * sureness)


def clear_of_bottom(box: np.ndarray, frame_height: int) -> bool:
    """Whether a person box ends above the frame's bottom edge (by 2% of the frame): if not,
    the feet may be cut off, and no pose is worth running for adult/child."""
    return float(box[3]) < 0.98 * frame_height


def _whole_body(points: np.ndarray, box: np.ndarray, frame_size: tuple[int, int]) -> bool:
    """Whether the person is whole in view: the box clear of the frame's bottom, every
    keypoint inside the box (BOX_SLACK) and the ankles (the last two points) in its lowest
    quarter. An occluded or cut-off body's keypoints are guessed by the network outside what
    the detector boxed."""
    x1, y1, x2, y2 = (float(v) for v in box)
    slack = BOX_SLACK * (y2 - y1)
    inside = np.all((points >= [x1 - slack, y1 - slack]) & (points <= [x2 + slack, y2 + slack]))
    ankles_low = np.all(points[-2:, 1] >= y2 - 0.25 * (y2 - y1))
    return bool(inside and ankles_low and clear_of_bottom(box, frame_size[1]))
