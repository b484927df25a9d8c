"""Test-time augmentation for SFace: the aligned chip and copies shifted a few pixels, each
with its mirror, embedded and averaged (`Settings.sface_shift_tta`, off by default).

Why shifts: on CCTV-like faces (eyes ~18 px apart) the five landmarks are off by a pixel or
two, and the average over small shifts of the chip is less sensitive to that than one chip.
Measured on lfw-dev made cctv-18 (docs/decisions.md, "Verification"); scaled copies, bicubic
upsampling in the alignment warp and unsharp masking did not help there.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from facelens.geometry import l2_normalize
from facelens.vision.align import CHIP_SIZE, align_matrix
from facelens.vision.embed import mirrored

SHIFTS_PX = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
"""Chip offsets averaged, in chip pixels (2 px on the 112-px chip: ~1 px of an 18-px-eye
face); (0, 0) is the plain aligned chip."""


def shifted_chips(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N,5,2) landmarks → (N·len(SHIFTS_PX),112,112,3) chips, each face's shifts together;
    the first of each face's is the chip `align` cuts."""
    out = []
    for points in landmarks:
        matrix = align_matrix(points)
        for dx, dy in SHIFTS_PX:
            moved = matrix.copy()
            moved[:, 2] += (dx, dy)
            out.append(cv2.warpAffine(rgb, moved, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT))
    return np.stack(out) if out else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)


def embed_shifted(raw: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray,
                  landmarks: np.ndarray, *, plain: np.ndarray | None = None,
                  mirror: np.ndarray | None = None) -> np.ndarray:
    """(N,5,2) landmarks → (N,128): the normalised mean of the normalised vectors `raw`
    (SFace.raw, one batch) gives every shifted chip and its mirror (sface-flip is this with
    the (0, 0) shift alone). `plain`, `mirror`: the (N,128) vectors of the (0, 0) chip and
    of its mirror, when the caller has them; those passes are not run again."""
    n = len(landmarks)
    if n == 0:
        return np.zeros((0, 128), np.float32)
    chips = shifted_chips(rgb, landmarks).reshape(n, len(SHIFTS_PX), CHIP_SIZE, CHIP_SIZE, 3)
    upright = (chips if plain is None else chips[:, 1:]).reshape(-1, CHIP_SIZE, CHIP_SIZE, 3)
    flipped = (chips if mirror is None else chips[:, 1:]).reshape(-1, CHIP_SIZE, CHIP_SIZE, 3)
    vectors = l2_normalize(raw(np.concatenate([upright, mirrored(flipped)])))
    known = [l2_normalize(v)[:, None] for v in (plain, mirror) if v is not None]
    per_face = np.concatenate([vectors[:len(upright)].reshape(n, -1, vectors.shape[1]),
                               vectors[len(upright):].reshape(n, -1, vectors.shape[1]),
                               *known], axis=1)
    return l2_normalize(per_face.sum(axis=1)).astype(np.float32)
