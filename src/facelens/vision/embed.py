"""Face embeddings, batch-first, L2-normalised float32.

- `sface`: SFace on the 112×112 aligned chip (fast default family).
- `sface-flip`: the mean of SFace on the chip and on its mirror image, re-normalised.
- `dlib`: dlib's ResNet on a 150×150 chip cut by dlib's own 5-point predictor.
- `fusion`: [√w·sface-flip, √(1−w)·dlib]: its dot product IS the weighted sum of the two
  cosine scores, so galleries search fused scores with one plain inner product.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import dlib
import numpy as np
import onnx

from facelens.face import Face
from facelens.geometry import l2_normalize
from facelens.models.base import (
    LazyModel,
    OpenVINOModel,
    make_batch_dynamic,
    onnx_session,
    openvino_model,
)
from facelens.models.dlib_net import dlib_resnet_onnx
from facelens.models.onnx_fold import fold_quantized_weights
from facelens.models.runtime import openvino_precision_for, runtime_label
from facelens.settings import EMBEDDER_DIMS, Runtime
from facelens.vision.align import align_batch


def mirrored(chips: np.ndarray) -> np.ndarray:
    """(N,H,W,3) chips flipped left to right; cv2.flip is ~20x faster than numpy's
    chips[:, :, ::-1] copy."""
    return np.stack([cv2.flip(chip, 1) for chip in chips]) if len(chips) else chips.copy()


class SFace(LazyModel[object]):
    """SFace on `runtime` (settings.runtime). Every runtime gets the same folded fp32 graph
    with a dynamic batch dimension, and both sessions are safe to call from many threads at
    once."""

    name = "sface"

    def __init__(self, runtime: Runtime, threads: int = 2) -> None:
        super().__init__()
        self._threads = threads
        self.runtime: Runtime = runtime

    @property
    def label(self) -> str:
        return runtime_label(self.runtime)

    def _open(self, path: Path) -> object:
        model = make_batch_dynamic(fold_quantized_weights(onnx.load(str(path))))
        precision = openvino_precision_for(self.runtime)
        if precision:
            return openvino_model(model, self._threads, precision)
        return onnx_session(model, self._threads)

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """(N,112,112,3) RGB uint8 → (N,128) unnormalised features (one session run)."""
        blob = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.session.run(None, {"data": blob})[0]  # type: ignore[attr-defined]

    def __call__(self, chips: np.ndarray, *, flip: bool = False) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        if not flip:
            return l2_normalize(self.raw(chips))
        both = self.raw(np.concatenate([chips, mirrored(chips)]))
        n = len(chips)
        return l2_normalize(l2_normalize(both[:n]) + l2_normalize(both[n:]))


class DlibShape5(LazyModel[dlib.shape_predictor]):
    name = "dlib-shape5"

    def _open(self, path: Path) -> dlib.shape_predictor:
        return dlib.shape_predictor(str(path))

    def chips(self, rgb: np.ndarray, faces: list[Face], size: int, padding: float) -> list:
        """dlib face chips (size×size RGB), cut from dlib's own 5 landmarks in each face box."""
        predictor = self.session
        out = []
        for face in faces:
            x1, y1, x2, y2 = (round(v) for v in face.box)
            shape = predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
            out.append(dlib.get_face_chip(rgb, shape, size=size, padding=padding))
        return out


class DlibResNet(LazyModel[OpenVINOModel]):
    """dlib's face-recognition ResNet, same weights, run by OpenVINO (fp32): dlib-bin has no
    BLAS, so dlib itself is several times slower. OpenVINOModel is safe to call from many
    threads at once."""

    name = "dlib-resnet"

    def _open(self, path: Path) -> OpenVINOModel:
        return openvino_model(dlib_resnet_onnx(path), threads=2, precision="f32")

    def __call__(self, chips: list) -> np.ndarray:
        """150×150×3 uint8 RGB chips from dlib.get_face_chip → (N,128) L2-normalised."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        batch = np.ascontiguousarray(np.stack(chips), dtype=np.uint8)
        return l2_normalize(self.session.run(None, {"chips": batch})[0])


_sface: dict[Runtime, SFace] = {}
_shape5 = DlibShape5()
_dlib = DlibResNet()
_instances_lock = threading.Lock()


def sface(runtime: Runtime, threads: int = 2) -> SFace:
    """The process-wide SFace on `runtime`; the first call per runtime fixes its thread
    count."""
    with _instances_lock:
        if runtime not in _sface:
            _sface[runtime] = SFace(runtime, threads)
        return _sface[runtime]


def shape5() -> DlibShape5:
    return _shape5


def embed_faces(rgb: np.ndarray, faces: list[Face], embedder: str, *, runtime: Runtime,
                fusion_weight: float = 0.5, threads: int = 2,
                chips: np.ndarray | None = None, shift_tta: bool = False) -> np.ndarray:
    """Embed `faces` of one RGB image with `embedder`, SFace running on `runtime`; returns
    (N, D) and fills each face. `chips`: the faces' aligned 112×112 chips, when the caller
    has them already. `shift_tta`: sface-flip (alone or in fusion) averages shifted chips
    too (vision/tta.py)."""
    if embedder not in EMBEDDER_DIMS:
        raise ValueError(f"unknown embedder {embedder!r}; "
                         f"choose one of {', '.join(EMBEDDER_DIMS)}")
    if not faces:
        return np.zeros((0, EMBEDDER_DIMS[embedder]), np.float32)
    parts = []
    carried = {f.embedder for f in faces}
    if embedder == "fusion" and carried == {"sface-flip"}:
        # The fused vector's first half is the sface-flip embedding: reuse the one the faces
        # carry, so only dlib runs.
        parts.append(np.stack([f.embedding for f in faces if f.embedding is not None]))
    elif embedder != "dlib":
        flip = embedder != "sface"
        # verify's cascade already ran the plain pass: reuse it, so only the rest is new.
        plain = (np.stack([f.embedding for f in faces if f.embedding is not None])
                 if flip and carried == {"sface"} else None)
        model = sface(runtime, threads)
        if flip and shift_tta:
            from facelens.vision.tta import embed_shifted

            parts.append(embed_shifted(model.raw, rgb, np.stack([f.landmarks for f in faces]),
                                       plain=plain))
        else:
            if chips is None:
                chips = align_batch(rgb, np.stack([f.landmarks for f in faces]))
            parts.append(model(chips, flip=flip) if plain is None
                         else l2_normalize(plain + model(mirrored(chips))))
    if embedder in ("dlib", "fusion"):
        parts.append(_dlib(_shape5.chips(rgb, faces, 150, 0.25)))
    if embedder == "fusion":
        vectors = np.hstack([np.sqrt(fusion_weight) * parts[0],
                             np.sqrt(1.0 - fusion_weight) * parts[1]]).astype(np.float32)
    else:
        vectors = parts[0]
    for face, vector in zip(faces, vectors, strict=True):
        face.embedding, face.embedder = vector, embedder
    return vectors
