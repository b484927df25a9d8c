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
from facelens.vision.align import align_batch
from facelens.vision.attributes import estimate_attributes
from facelens.vision.decode import ImageSource, load_image
from facelens.vision.detect import detect_faces
from facelens.vision.embed import embed_faces
from facelens.vision.quality import assess


def _rgb(image: ImageSource) -> np.ndarray:
    return load_image(image)


def _detect_rgb(rgb: np.ndarray, detector: str | None, quality: bool,
                second_chance: bool = False) -> tuple[list[Face], np.ndarray | None]:
    """Faces, and with `quality` their aligned chips too: quality judges the chip SFace
    embeds, so it is cut once and handed on."""
    s = get_settings()
    faces = detect_faces(rgb, name=detector or s.detector, threshold=s.detect_threshold,
                         max_side=s.detect_max_side, threads=s.threads,
                         second_chance=second_chance)
    if not quality or not faces:
        return faces, None
    chips = align_batch(rgb, np.stack([f.landmarks for f in faces]))
    for face, chip in zip(faces, chips, strict=True):
        face.quality = assess(rgb, face, chip=chip, min_interocular_px=s.min_interocular_px,
                              min_sharpness=s.min_sharpness, max_yaw=s.max_yaw,
                              max_pitch=s.max_pitch)
    return faces, chips


def fusion_weight() -> float:
    """Weight of SFace in the fused score: the calibrated one if present, else the setting."""
    return float(calibration().get("fusion_weight", get_settings().fusion_weight))


def _embed_rgb(rgb: np.ndarray, faces: list[Face], embedder: str | None,
               chips: np.ndarray | None = None) -> None:
    s = get_settings()
    embed_faces(rgb, faces, embedder or s.embedder, fusion_weight=fusion_weight(),
                threads=s.threads, chips=chips)


def detect(image: ImageSource, *, detector: str | None = None, quality: bool = True) -> list[Face]:
    """Find faces: boxes, 5 landmarks, detector score and (by default) quality, best first.

    `detector` is "yunet" (fast, the default) or "centerface" (small and crowded faces).
    """
    return _detect_rgb(_rgb(image), detector, quality)[0]


def embed(image: ImageSource, faces: list[Face] | None = None, *,
          embedder: str | None = None, second_chance: bool = False) -> list[Face]:
    """Fill `embedding` (L2-normalised) on each face; detects first when `faces` is None.

    Returns the faces; stack them with `np.stack([f.embedding for f in faces])`. With
    `second_chance`, an image where the detector finds nothing is searched again by the
    other detector (for callers who know a face is there, like enrolment).
    """
    rgb = _rgb(image)
    chips = None
    if faces is None:
        faces, chips = _detect_rgb(rgb, None, quality=True, second_chance=second_chance)
    _embed_rgb(rgb, faces, embedder, chips)
    return faces


def analyze(image: ImageSource, *, attributes: bool = True, detector: str | None = None
            ) -> list[Face]:
    """Detect faces with quality and, unless `attributes=False`, age and perceived sex."""
    rgb = _rgb(image)
    faces, _ = _detect_rgb(rgb, detector, quality=True)
    if attributes:
        estimate_attributes(rgb, faces)
    return faces


def main_face(faces: list[Face]) -> Face:
    """The face a 1:1 check is about: the largest one (ID photos and selfies show one person)."""
    return faces[_main_index(faces)]


def _main_index(faces: list[Face]) -> int:
    return max(range(len(faces)), key=lambda i: faces[i].width * faces[i].height)


def _main_face(rgb: np.ndarray, label: str) -> tuple[Face, np.ndarray]:
    """The main face of `rgb` and its aligned chip."""
    faces, chips = _detect_rgb(rgb, None, quality=True, second_chance=True)
    if not faces or chips is None:
        raise NoFaceError(f"{label}: no face found")
    main = _main_index(faces)
    return faces[main], chips[main]


def _vector(face: Face, embedder: str) -> np.ndarray | None:
    """`face`'s embedding by `embedder`, if it has one (a fused vector contains sface-flip's)."""
    if face.embedding is None:
        return None
    if face.embedder == embedder:
        return face.embedding
    if face.embedder == "fusion" and embedder == "sface-flip":  # its first half, rescaled
        part = face.embedding[:128]
        return part / max(float(np.linalg.norm(part)), 1e-12)
    return None


def verify(a: ImageSource | Face, b: ImageSource | Face, *, far: float = 1e-3,
           embedder: str | None = None) -> Verdict:
    """Are `a` and `b` the same person? Decided at a calibrated false-accept rate `far`.

    `a` and `b` are images (the largest face of each is used) or Faces from an earlier call.
    The verdict names the operating point that decided. With the "fusion" embedder, plain
    SFace (one pass per face) decides alone outside the calibrated band of its scores where
    the fused decision can differ from it; inside (a few % of lfw-dev pairs, see README) the
    mirror pass and dlib run and the fused score decides.
    """
    name = embedder or get_settings().embedder
    point = operating_point(name, far)
    probes: list[tuple[Face, np.ndarray | None, np.ndarray | None]] = []  # face, rgb, chip
    for item, label in ((a, "first image"), (b, "second image")):
        if isinstance(item, Face):
            probes.append((item, None, None))
        else:
            rgb = _rgb(item)
            face, chip = _main_face(rgb, label)
            probes.append((face, rgb, chip))
    (fa, _, _), (fb, _, _) = probes

    def vectors(embedder_name: str) -> list[np.ndarray] | None:
        for face, rgb, chip in probes:
            if _vector(face, embedder_name) is None and rgb is not None:
                _embed_rgb(rgb, [face], embedder_name, None if chip is None else chip[None])
        found = [_vector(face, embedder_name) for face, _, _ in probes]
        return None if any(v is None for v in found) else found  # type: ignore[return-value]

    if name == "fusion" and point.cascade and (first := vectors("sface")):
        score = float(first[0] @ first[1])
        low, high = point.cascade
        if not low <= score <= high:
            return Verdict(score > high, score, high if score > high else low, point.far, name,
                           f"{point.describe()}; decided by sface alone "
                           f"({score:.4f} outside the cascade band [{low:.3f}, {high:.3f}])",
                           (fa, fb), decided_by="sface")
    final = vectors(name)
    if final is None:
        raise ValueError(f"a Face passed to verify carries no {name} embedding; pass the image")
    score = float(final[0] @ final[1])
    return Verdict(score > point.threshold, score, point.threshold, point.far, name,
                   point.describe(), (fa, fb), decided_by=name)
