"""The records that flow through facelens: a `Face` per detected face, a `Reference` per
enrolled subject compared 1:1, a `Verdict` per 1:1 check, a `Comparison` of one face against
every face of an image.

Stages add fields to a `Face` (quality, embedding, attributes); none reaches back up.
Coordinates are image pixels of the decoded, EXIF-upright image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# Landmark order (the 5-point convention of YuNet, CenterFace and the ArcFace template):
LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")
"""The subject's right eye is the one on the image's left."""


@dataclass(frozen=True)
class Quality:
    """How usable a face is for recognition, with the measurements behind the score."""

    score: float
    """0 (useless) … 1 (ideal): the product of the per-cue scores below."""
    interocular_px: float
    sharpness: float
    """Variance of the Laplacian on the aligned 112×112 grey crop (higher is sharper)."""
    yaw: float
    pitch: float
    roll: float
    """Head pose in degrees, estimated from the 5 landmarks (coarse: ±10° on yaw and pitch)."""
    brightness: float
    """Mean grey level of the aligned crop, 0…255."""
    reasons: tuple[str, ...] = ()
    """Human-readable problems, e.g. ("too small", "blurred"). Empty when the face is fine."""

    @property
    def acceptable(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 3),
            "interocular_px": round(self.interocular_px, 1),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 1),
            "pitch": round(self.pitch, 1),
            "roll": round(self.roll, 1),
            "brightness": round(self.brightness, 1),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Attributes:
    """Opt-in estimates. Nothing else is ever inferred (see README: what we decline to build)."""

    age: float
    age_error: float | None
    """The age model's typical (mean absolute) error in years, None while nobody has measured it."""
    sex: str
    """Perceived sex as the model sees it: "female" or "male"."""
    sex_confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "age": round(self.age, 1),
            "age_error": self.age_error,
            "sex": self.sex,
            "sex_confidence": round(self.sex_confidence, 3),
        }


@dataclass
class Face:
    """One detected face."""

    box: np.ndarray
    """(4,) float32: x1, y1, x2, y2."""
    landmarks: np.ndarray
    """(5, 2) float32 in `LANDMARK_NAMES` order."""
    score: float
    """Detector confidence, 0…1."""
    detector: str
    quality: Quality | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    """L2-normalised float32 vector, made by `embedder`."""
    embedder: str | None = None
    attributes: Attributes | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def to_dict(self, *, with_embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": {n: [round(float(x), 1), round(float(y), 1)]
                          for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)},
            "score": round(self.score, 4),
            "detector": self.detector,
        }
        if self.quality is not None:
            out["quality"] = self.quality.to_dict()
        if self.attributes is not None:
            out["attributes"] = self.attributes.to_dict()
        if self.embedder is not None:
            out["embedder"] = self.embedder
        if with_embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out


@dataclass(frozen=True, eq=False)  # compares by identity: the array has no truth value
class Reference:
    """An enrolled subject as one search vector (the mean of its templates): what a 1:1 check
    against a gallery subject compares a probe face with. It has no box or landmarks."""

    embedding: np.ndarray = field(repr=False)
    """L2-normalised float32 vector, made by `embedder`."""
    embedder: str
    subject_id: str
    label: str
    """The subject's display name."""


@dataclass(frozen=True)
class Verdict:
    """The answer of a 1:1 check, with the operating point that decided it."""

    match: bool
    score: float
    """Similarity of the two faces (cosine, or the fused score), higher is more alike."""
    threshold: float
    far: float
    """The false-accept rate of the operating point used."""
    embedder: str
    operating_point: str
    """Where the threshold comes from, e.g.
    "sface-flip @ FAR 1e-03: threshold 0.4012 (lfw-dev all-vs-all, 7,908,775 impostor pairs)"."""
    faces: tuple[Face | Reference, Face | Reference]
    """The two sides compared: detected faces, or an enrolled subject's `Reference`."""
    decided_by: str = ""
    """Which scores decided: `embedder` itself, or "sface" when the fusion cascade did not
    need the fused score (then `score` and `threshold` are plain SFace's and the band edge)."""
    note: str = ""
    """Which face of an image with several was compared (empty when each side shows one)."""
    far_threshold: float | None = None
    """The operating point's threshold at `far` for `embedder`: the same on every call at one
    FAR, whereas `threshold` is the edge this score was compared with (a cascade band edge
    when plain SFace decided)."""
    quality_band: str = ""
    """The face-quality band whose fusion weight and thresholds decided (the worse face's,
    matching/quality_bands.py); empty when the calibration has no bands."""

    @property
    def margin(self) -> float:
        """How far the score clears (or misses) its threshold: comparable across verdicts
        decided by different scores."""
        return self.score - self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "match": self.match,
            "decided_by": self.decided_by or self.embedder,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            **({"far_threshold": round(self.far_threshold, 4)}
               if self.far_threshold is not None else {}),
            "far": self.far,
            "embedder": self.embedder,
            "operating_point": self.operating_point,
            "faces": [f.to_dict() for f in self.faces if isinstance(f, Face)],
            **({"note": self.note} if self.note else {}),
            **({"quality_band": self.quality_band} if self.quality_band else {}),
        }


@dataclass
class Comparison:
    """One source face against every face of a target image (like Rekognition's
    CompareFaces): a verdict per target face, in detection order."""

    source: Face | Reference
    verdicts: list[Verdict]

    @property
    def best(self) -> Verdict:
        """The verdict on the target face that matches the source best (the largest margin);
        with several target faces its note says which was compared."""
        best = max(self.verdicts, key=lambda v: v.margin)
        if len(self.verdicts) == 1 or not isinstance(face := best.faces[1], Face):
            return best
        box = ", ".join(str(round(float(v))) for v in face.box)
        said = (f"second image: {len(self.verdicts)} faces, the best match compared (box {box},"
                f" {len(self.matches)} matching)")
        return replace(best, note="; ".join(n for n in (best.note, said) if n))

    @property
    def matches(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.match]

    @property
    def unmatched(self) -> list[Face | Reference]:
        return [v.faces[1] for v in self.verdicts if not v.match]
