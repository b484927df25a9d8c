"""The facelens Python API: a few flat verbs, each documented, nothing hidden.

Images may be a path, bytes, a numpy array (RGB) or a PIL image. Every verb returns `Face`
records (see facelens.face) or a `Verdict`; bad input raises BadImageError, no face NoFaceError.

    >>> import facelens
    >>> faces = facelens.detect("group.jpg")
    >>> facelens.verify("id.jpg", "selfie.jpg", far=1e-4).match
"""

from __future__ import annotations

import numpy as np

from facelens.errors import NoFaceError
from facelens.face import Face, Verdict
from facelens.matching.operating_points import calibration, operating_point
from facelens.settings import get_settings
from facelens.vision.attributes import estimate_attributes
from facelens.vision.decode import ImageSource, load_image
from facelens.vision.detect import detect_faces
from facelens.vision.embed import embed_faces
from facelens.vision.quality import assess


def _rgb(image: ImageSource) -> np.ndarray:
    return load_image(image)


def _detect_rgb(rgb: np.ndarray, detector: str | None, quality: bool) -> list[Face]:
    s = get_settings()
    faces = detect_faces(rgb, name=detector or s.detector, threshold=s.detect_threshold,
                         max_side=s.detect_max_side, threads=s.threads)
    if quality:
        for face in faces:
            face.quality = assess(rgb, face, min_interocular_px=s.min_interocular_px,
                                  min_sharpness=s.min_sharpness, max_yaw=s.max_yaw,
                                  max_pitch=s.max_pitch)
    return faces


def fusion_weight() -> float:
    """Weight of SFace in the fused score: the calibrated one if present, else the setting."""
    return float(calibration().get("fusion_weight", get_settings().fusion_weight))


def _embed_rgb(rgb: np.ndarray, faces: list[Face], embedder: str | None) -> None:
    s = get_settings()
    embed_faces(rgb, faces, embedder or s.embedder, fusion_weight=fusion_weight(),
                threads=s.threads)


def detect(image: ImageSource, *, detector: str | None = None, quality: bool = True) -> list[Face]:
    """Find faces: boxes, 5 landmarks, detector score and (by default) quality, best first.

    `detector` is "yunet" (fast, the default) or "centerface" (small and crowded faces).
    """
    return _detect_rgb(_rgb(image), detector, quality)


def embed(image: ImageSource, faces: list[Face] | None = None, *,
          embedder: str | None = None) -> list[Face]:
    """Fill `embedding` (L2-normalised) on each face; detects first when `faces` is None.

    Returns the faces; stack them with `np.stack([f.embedding for f in faces])`.
    """
    rgb = _rgb(image)
    if faces is None:
        faces = _detect_rgb(rgb, None, quality=True)
    _embed_rgb(rgb, faces, embedder)
    return faces


def analyze(image: ImageSource, *, attributes: bool = True, detector: str | None = None
            ) -> list[Face]:
    """Detect faces with quality and, unless `attributes=False`, age and perceived sex."""
    rgb = _rgb(image)
    faces = _detect_rgb(rgb, detector, quality=True)
    if attributes:
        estimate_attributes(rgb, faces)
    return faces


def main_face(faces: list[Face]) -> Face:
    """The face a 1:1 check is about: the largest one (ID photos and selfies show one person)."""
    return max(faces, key=lambda f: f.width * f.height)


def _probe(image: ImageSource | Face, embedder: str, label: str) -> Face:
    if isinstance(image, Face):
        if image.embedding is None or image.embedder != embedder:
            raise ValueError(f"{label}: the Face carries no {embedder} embedding")
        return image
    rgb = _rgb(image)
    faces = _detect_rgb(rgb, None, quality=True)
    if not faces:
        raise NoFaceError(f"{label}: no face found")
    face = main_face(faces)
    _embed_rgb(rgb, [face], embedder)
    return face


def verify(a: ImageSource | Face, b: ImageSource | Face, *, far: float = 1e-3,
           embedder: str | None = None) -> Verdict:
    """Are `a` and `b` the same person? Decided at a calibrated false-accept rate `far`.

    Uses the largest face of each image. The verdict names the operating point that decided.
    """
    name = embedder or get_settings().embedder
    point = operating_point(name, far)
    fa, fb = _probe(a, name, "first image"), _probe(b, name, "second image")
    assert fa.embedding is not None and fb.embedding is not None
    score = float(fa.embedding @ fb.embedding)
    return Verdict(match=score > point.threshold, score=score, threshold=point.threshold,
                   far=point.far, embedder=name, operating_point=point.describe(),
                   faces=(fa, fb))
