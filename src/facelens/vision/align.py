"""Alignment: a similarity transform (rotation, uniform scale, shift) of the 5 landmarks onto
the standard 112×112 ArcFace template, the input SFace was trained on."""

from __future__ import annotations

import cv2
import numpy as np

CHIP_SIZE = 112
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping src (N,2) onto dst (N,2).

    In 2-D the rotation-and-scale part is [[a, -b], [b, a]], and Umeyama's solution reduces
    to two dot products (no SVD; reflections cannot arise). Returns the 2×3 matrix for
    cv2.warpAffine.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    norm = max(float((s * s).sum()), 1e-12)
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    matrix = np.array([[a, -b, 0.0], [b, a, 0.0]])
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def align_matrix(landmarks: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    return similarity_transform(landmarks, TEMPLATE * (size / CHIP_SIZE))


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The aligned size×size RGB chip of one face."""
    return cv2.warpAffine(rgb, align_matrix(landmarks, size), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)  # as in training


def align_batch(rgb: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """(N,5,2) landmarks → (N,size,size,3) uint8 chips."""
    if len(landmarks) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align(rgb, lm, size) for lm in landmarks])
