"""The facelens Python API: a few flat verbs, each documented, nothing hidden.

Images may be a path, bytes, a numpy array (RGB: uint8, uint16, or float in [0, 1]) or a PIL
image. Every verb returns `Face` records (see facelens.face) or a `Verdict`; a bad image raises
BadImageError, no face NoFaceError, any other bad argument (far, a detector's or embedder's
name) FacelensError, their base class.

    >>> import facelens
    >>> faces = facelens.detect("group.jpg")
    >>> facelens.verify("id.jpg", "selfie.jpg", far=1e-4).match
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import get_args

import numpy as np

from facelens.errors import FacelensError, NoFaceError
from facelens.face import Comparison, Face, Reference, Verdict
from facelens.geometry import l2_normalize
from facelens.matching.calibration import load_calibration
from facelens.matching.quality_bands import fused_score
from facelens.models.runtime import runtime_label
from facelens.settings import EMBEDDER_DIMS, Detector, Settings, get_settings
from facelens.vision.align import align_batch
from facelens.vision.attributes import estimate_attributes
from facelens.vision.decode import ImageSource, load_image
from facelens.vision.detect import detect_faces
from facelens.vision.embed import embed_faces
from facelens.vision.quality import assess

MAX_FAR = 0.1
"""The most lenient false-accept rate a 1:1 check takes, as the CLI's and the REST API's; above
it (0.6, face_recognition's tolerance) the caller meant a threshold."""


class Engine:
    """The engine under one `Settings`: every stage (detector, embedder, runtime, quality
    limits, calibration) reads the settings handed to it here, never a global. The flat verbs
    below use `default_engine()`, built from the environment; a service, a gallery or a test
    builds its own `Engine(settings)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.calibration = load_calibration(runtime_label(settings.runtime),
                                            settings.calibration_dir, settings.calibration_file)

    def fusion_weight(self) -> float:
        """Weight of SFace in the fused score: the calibrated one if present, else the setting."""
        return self.calibration.fusion_weight(self.settings.fusion_weight)

    def detect_rgb(self, rgb: np.ndarray, *, detector: str | None = None, quality: bool = True,
                   second_chance: bool = False) -> tuple[list[Face], np.ndarray | None]:
        """Faces of a decoded image, and with `quality` their aligned chips too: quality
        judges the chip SFace embeds, so it is cut once and handed on."""
        s = self.settings
        faces = detect_faces(rgb, name=_known("detector", detector or s.detector),
                             threshold=s.detect_threshold, max_side=s.detect_max_side,
                             threads=s.threads,
                             second_chance=second_chance)
        if not quality or not faces:
            return faces, None
        chips = align_batch(rgb, np.stack([f.landmarks for f in faces]))
        for face, chip in zip(faces, chips, strict=True):
            face.quality = assess(rgb, face, chip=chip, min_interocular_px=s.min_interocular_px,
                                  min_sharpness=s.min_sharpness, max_yaw=s.max_yaw,
                                  max_pitch=s.max_pitch)
        return faces, chips

    def embed_rgb(self, rgb: np.ndarray, faces: list[Face], *, embedder: str | None = None,
                  chips: np.ndarray | None = None) -> None:
        """Fill each face's embedding; `chips` are their aligned chips when already cut."""
        embed_faces(rgb, faces, _known("embedder", embedder or self.settings.embedder),
                    runtime=self.settings.runtime, fusion_weight=self.fusion_weight(),
                    threads=self.settings.threads, chips=chips,
                    shift_tta=self.settings.sface_shift_tta)

    def detect(self, image: ImageSource, *, detector: str | None = None,
               quality: bool = True) -> list[Face]:
        """See `facelens.api.detect`."""
        return self.detect_rgb(load_image(image), detector=detector, quality=quality)[0]

    def embed(self, image: ImageSource, faces: list[Face] | None = None, *,
              embedder: str | None = None, second_chance: bool = False) -> list[Face]:
        """See `facelens.api.embed`."""
        rgb = load_image(image)
        chips = None
        if faces is None:
            faces, chips = self.detect_rgb(rgb, second_chance=second_chance)
        self.embed_rgb(rgb, faces, embedder=embedder, chips=chips)
        return faces

    def analyze(self, image: ImageSource, *, attributes: bool = True,
                detector: str | None = None) -> list[Face]:
        """See `facelens.api.analyze`."""
        rgb = load_image(image)
        faces, _ = self.detect_rgb(rgb, detector=detector)
        if attributes:
            estimate_attributes(rgb, faces)
        return faces

    def _sides(self, item: ImageSource | Face | Reference, label: str, *, every: bool
               ) -> tuple[list[_Side], str]:
        """The faces of one side of a 1:1 check with their image and chip: a Face or Reference
        as given; of an image its largest face, or with `every` all its faces. Also a note
        when the image showed several faces."""
        if isinstance(item, Face | Reference):
            return [(item, None, None)], ""
        rgb = load_image(item)
        faces, chips = self.detect_rgb(rgb, second_chance=True)
        if not faces or chips is None:
            raise NoFaceError(f"{label}: no face found")
        if every:
            return [(f, rgb, c) for f, c in zip(faces, chips, strict=True)], ""
        main = _main_index(faces)
        note = (f"{label}: {len(faces)} faces, the largest compared (box "
                f"{_box(faces[main])})") if len(faces) > 1 else ""
        return [(faces[main], rgb, chips[main])], note

    def compare(self, source: ImageSource | Face | Reference,
                target: ImageSource | Face | Reference, *, far: float = 1e-3,
                embedder: str | None = None) -> Comparison:
        """See `facelens.api.compare`."""
        name = _known("embedder", embedder or self.settings.embedder)
        if not 0 < far <= MAX_FAR:  # NaN too
            raise FacelensError(f"far must be a false-accept rate in (0, {MAX_FAR:g}] such as "
                                f"1e-3, not {far:g} (a similarity threshold?)")
        self.calibration.operating_point(name, far)  # an impossible FAR fails before any work
        (first,), note = self._sides(source, "first image", every=False)
        targets, _ = self._sides(target, "second image", every=True)
        verdicts = [self._decide(first, side, name, far) for side in targets]
        if note:
            verdicts = [replace(v, note=note) for v in verdicts]
        return Comparison(first[0], verdicts)

    def verify(self, a: ImageSource | Face | Reference, b: ImageSource | Face | Reference, *,
               far: float = 1e-3, embedder: str | None = None) -> Verdict:
        """See `facelens.api.verify`."""
        return self.compare(a, b, far=far, embedder=embedder).best

    def _decide(self, first: _Side, second: _Side, name: str, far: float) -> Verdict:
        """The verdict on two faces at `far`, with the operating point (and fusion weight) of
        their quality band, embedding each (once per model) as needed."""
        probes = [first, second]
        fa, fb = first[0], second[0]
        band, calibration = self.calibration.for_faces(_measured(fa), _measured(fb))
        point = calibration.operating_point(name, far)
        stored, weight = self.fusion_weight(), calibration.fusion_weight(self.fusion_weight())

        def vectors(embedder_name: str) -> list[np.ndarray] | None:
            for face, rgb, chip in probes:
                missing = _vector(face, embedder_name) is None
                if missing and rgb is not None and isinstance(face, Face):  # found here: embed
                    self.embed_rgb(rgb, [face], embedder=embedder_name,
                                   chips=None if chip is None else chip[None])
            found = [_vector(face, embedder_name) for face, _, _ in probes]
            return None if any(v is None for v in found) else found  # type: ignore[return-value]

        if name == "fusion" and point.cascade and (plain := vectors("sface")):
            score = float(plain[0] @ plain[1])
            low, high = point.cascade
            if not low <= score <= high:
                return Verdict(score > high, score, high if score > high else low, point.far,
                               name, f"{point.describe()}; decided by sface alone "
                               f"({score:.4f} outside the cascade band [{low:.3f}, {high:.3f}])",
                               (fa, fb), decided_by="sface", far_threshold=point.threshold,
                               quality_band=band)
        final = vectors(name)
        if final is None:
            has = next(face.embedder or "none" for face, _, _ in probes
                       if _vector(face, name) is None)
            raise FacelensError(f"a Face or Reference passed to verify carries no {name} "
                                f"embedding (it has {has}): pass the image, or embed it with "
                                f"embedder={name!r}")
        score = (fused_score(final[0], final[1], stored, weight)
                 if name == "fusion" and weight != stored else float(final[0] @ final[1]))
        return Verdict(score > point.threshold, score, point.threshold, point.far, name,
                       point.describe(), (fa, fb), decided_by=name,
                       far_threshold=point.threshold, quality_band=band)


_Side = tuple["Face | Reference", "np.ndarray | None", "np.ndarray | None"]
"""One side of a 1:1 check: the face, and for a face found here its image and aligned chip."""


_CHOICES = {"detector": get_args(Detector), "embedder": tuple(EMBEDDER_DIMS)}


def _known(kind: str, name: str) -> str:
    """`name` if it is a `kind` facelens has; a typo ("arcface") is bad input, not a missing
    model's calibration."""
    if name not in _CHOICES[kind]:
        raise FacelensError(f"unknown {kind} {name!r} ({', '.join(_CHOICES[kind])})")
    return name


def _box(face: Face) -> str:
    return ", ".join(str(round(float(v))) for v in face.box)


_default_lock = threading.Lock()
_default: Engine | None = None


def default_engine() -> Engine:
    """The engine of the flat verbs: built once from the environment's settings (the Python
    API's entry point, like the CLI's and the server's)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine(get_settings())
        return _default


def detect(image: ImageSource, *, detector: str | None = None, quality: bool = True) -> list[Face]:
    """Find faces: boxes, 5 landmarks, detector score and (by default) quality, best first.

    `detector` is "yunet" (fast, the default) or "centerface" (small and crowded faces).
    """
    return default_engine().detect(image, detector=detector, quality=quality)


def embed(image: ImageSource, faces: list[Face] | None = None, *,
          embedder: str | None = None, second_chance: bool = False) -> list[Face]:
    """Fill `embedding` (L2-normalised) on each face; detects first when `faces` is None.

    Returns the faces; stack them with `np.stack([f.embedding for f in faces])`. With
    `second_chance`, an image where the detector finds nothing is searched again by the
    other detector (for callers who know a face is there, like enrolment).
    """
    return default_engine().embed(image, faces, embedder=embedder, second_chance=second_chance)


def analyze(image: ImageSource, *, attributes: bool = True, detector: str | None = None
            ) -> list[Face]:
    """Detect faces with quality and, unless `attributes=False`, age and perceived sex."""
    return default_engine().analyze(image, attributes=attributes, detector=detector)


def main_face(faces: list[Face]) -> Face:
    """The face a 1:1 check is about: the largest one (ID photos and selfies show one person)."""
    return faces[_main_index(faces)]


def _main_index(faces: list[Face]) -> int:
    return max(range(len(faces)), key=lambda i: faces[i].width * faces[i].height)


def _measured(face: Face | Reference) -> tuple[float, float] | None:
    """(inter-ocular px, sharpness) of a detected face; None for an enrolled reference."""
    q = face.quality if isinstance(face, Face) else None
    return None if q is None else (q.interocular_px, q.sharpness)


def _vector(face: Face | Reference, embedder: str) -> np.ndarray | None:
    """`face`'s embedding by `embedder`, if it has one (a fused vector contains sface-flip's)."""
    if face.embedding is None:
        return None
    if face.embedder == embedder:
        return face.embedding
    if face.embedder == "fusion" and embedder == "sface-flip":  # its first half, rescaled
        return l2_normalize(face.embedding[:128])
    return None


def verify(a: ImageSource | Face | Reference, b: ImageSource | Face | Reference, *,
           far: float = 1e-3, embedder: str | None = None) -> Verdict:
    """Are `a` and `b` the same person? Decided at the largest calibrated false-accept rate
    not above `far` (0 < far ≤ 0.1; above, FacelensError: a threshold was meant).

    `a` and `b` are images, Faces from an earlier call, or an enrolled subject's `Reference`
    (`Galleries.subject_reference`). Of `a` the largest face is used; of `b` the face that
    matches it best, and when either image shows several faces the verdict's `note` says
    which were compared (`compare` answers for every face of `b`).
    The verdict names the operating point that decided. With the "fusion" embedder, plain
    SFace (one pass per face) decides alone outside the calibrated band of its scores where
    the fused decision can differ from it; inside (a few % of lfw-dev pairs, see README) the
    mirror pass and dlib run and the fused score decides.
    """
    return default_engine().verify(a, b, far=far, embedder=embedder)


def compare(source: ImageSource | Face | Reference, target: ImageSource | Face | Reference, *,
            far: float = 1e-3, embedder: str | None = None) -> Comparison:
    """The largest face of `source` against every face of `target` (Rekognition's
    CompareFaces): a `Comparison` with a verdict per target face, its `matches` and its
    `unmatched` faces, each with its box."""
    return default_engine().compare(source, target, far=far, embedder=embedder)
