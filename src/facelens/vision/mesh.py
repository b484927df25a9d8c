"""Dense face landmarks: MediaPipe FaceMesh (468 points) run by LiteRT, and what they measure.

How the mesh is run (as MediaPipe's own `face_landmark_cpu` graph does, with facelens's box in
place of BlazeFace's): a square region centred on the face box, 1.5× its longer side, rotated
so that the two eyes of the 5-point landmarks lie level, is resampled to 192×192 RGB
(border pixels replicated) and fed as float32 in [0, 1]. The model returns 468 (x, y, z)
points in that crop's pixels and a face-presence logit (a sigmoid gives the score MediaPipe
thresholds at 0.5). The points are mapped back to image pixels; z is depth in the same pixel
scale, relative to the mesh's centre, smaller = closer to the camera (MediaPipe's convention).

Measures, with the landmark indices they use (the subject's right eye is on the image's left,
as in `facelens.face.LANDMARK_NAMES`):

- `eye_aspect_ratio`: the 6-point eye aspect ratio (Soukupová & Čech 2016),
  (|p2−p6| + |p3−p5|) / (2·|p1−p4|), on the 3-D points, averaged over both eyes.
  Right eye p1…p6 = 33, 160, 158, 133, 153, 144; left eye = 362, 385, 387, 263, 373, 380
  (p1/p4 the eye corners, p2/p6 and p3/p5 upper/lower lid pairs).
- `head_pose_from_mesh`: yaw, pitch and roll of the rotation that best maps points of MediaPipe's
  canonical face model onto the mesh (Procrustes / Umeyama with scale, on rigid points only:
  nose ridge and tip 1, 4, 6, 8, 9, 10, below the nose 2, eye outer corners 33/263, lower
  eye-corner 7/249, temples 21/251, face sides 34/264).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.face import Face
from facelens.models.base import LazyModel

MESH_POINTS = 468
INPUT_SIZE = 192
ROI_SCALE = 1.5
"""The crop's side over the face box's longer side (MediaPipe enlarges its detection by 1.5)."""
PRESENCE_THRESHOLD = 0.5
"""MediaPipe drops the mesh when the face-presence score is below this."""

RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)

# Points of MediaPipe's canonical face model (mediapipe/modules/face_geometry/data/
# canonical_face_model.obj, Apache-2.0), in cm: x toward the subject's left, y up, z out of
# the face. Only rigid points (no lids, lips or jaw); the pairs are mirror images.
_POSE_INDICES = np.array([1, 2, 4, 6, 8, 9, 10, 33, 263, 7, 249, 21, 251, 34, 264])
_CANONICAL = np.array([
    [0.0, -1.126865, 7.475604],   # 1 nose tip
    [0.0, -2.089024, 6.058267],   # 2 below the nose
    [0.0, -0.463170, 7.586580],   # 4 nose tip, upper
    [0.0, 2.473255, 5.788627],    # 6 nose ridge between the eyes
    [0.0, 4.019042, 5.284764],    # 8 glabella
    [0.0, 4.885979, 5.385258],    # 9 forehead, low
    [0.0, 8.261778, 4.481535],    # 10 forehead, top
    [-4.445859, 2.663991, 3.173422],  # 33 right eye, outer corner
    [4.445859, 2.663991, 3.173422],   # 263 left eye, outer corner
    [-4.253081, 2.577646, 3.279702],  # 7 right eye, below the outer corner
    [4.253081, 2.577646, 3.279702],   # 249 left eye, below the outer corner
    [-7.087960, 5.434801, 0.099620],  # 21 right temple
    [7.087960, 5.434801, 0.099620],   # 251 left temple
    [-7.214530, 2.263009, 0.073150],  # 34 right side of the face, eye level
    [7.214530, 2.263009, 0.073150],   # 264 left side of the face, eye level
])


@dataclass(frozen=True)
class Mesh:
    """One face's mesh."""

    points: np.ndarray
    """(468, 3) float32: x, y in image pixels; z depth in pixels (smaller = closer)."""
    presence: float
    """The model's face-presence score, 0…1 (MediaPipe keeps a mesh at ≥ 0.5)."""


def _roi_transform(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(M, R, centre, scale): M maps image pixels to the 192×192 crop, u = s·R·(p − c) + 96."""
    (rx, ry), (lx, ly) = face.landmarks[0], face.landmarks[1]
    angle = float(np.arctan2(ly - ry, lx - rx))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])  # turns the eye line level
    x1, y1, x2, y2 = (float(v) for v in face.box)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    scale = INPUT_SIZE / max((x2 - x1) * ROI_SCALE, (y2 - y1) * ROI_SCALE, 1.0)
    half = INPUT_SIZE / 2
    matrix = np.hstack([scale * rotation, (half - scale * rotation @ centre)[:, None]])
    return matrix, rotation, centre, scale


def _warp(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(rgb, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class FaceMesh(LazyModel[Any]):
    """MediaPipe FaceMesh on LiteRT's CPU interpreter (XNNPACK).

    A LiteRT interpreter holds its tensors and is not safe to call from several threads at
    once, so one lock guards each set-input / invoke / read-output sequence."""

    name = "facemesh"

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self._threads = threads
        self._run_lock = threading.Lock()
        self._input = 0
        self._outputs: tuple[int, int] = (0, 0)

    def _open(self, path: Path) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=self._threads)
        interpreter.allocate_tensors()
        self._input = interpreter.get_input_details()[0]["index"]
        by_size = {int(np.prod(d["shape"])): d["index"]
                   for d in interpreter.get_output_details()}
        self._outputs = (by_size[MESH_POINTS * 3], by_size[1])
        return interpreter

    @staticmethod
    def crop(rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 192×192 RGB uint8 crop the model sees for `face`."""
        return _warp(rgb, _roi_transform(face)[0])

    def __call__(self, rgb: np.ndarray, faces: list[Face]) -> list[Mesh]:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
        interpreter = self.session
        meshes = []
        for face in faces:
            matrix, rotation, centre, scale = _roi_transform(face)
            blob = (_warp(rgb, matrix).astype(np.float32) / 255.0)[None]
            with self._run_lock:
                interpreter.set_tensor(self._input, blob)
                interpreter.invoke()
                raw = interpreter.get_tensor(self._outputs[0]).reshape(MESH_POINTS, 3)
                logit = float(interpreter.get_tensor(self._outputs[1]).ravel()[0])
            # Back to the image: p = c + Rᵀ·(u − 96)/s (in row form, (u − 96)/s · R).
            xy = (raw[:, :2] - INPUT_SIZE / 2) / scale @ rotation + centre
            points = np.column_stack([xy, raw[:, 2] / scale]).astype(np.float32)
            presence = float(1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0))))
            meshes.append(Mesh(points, presence))
        return meshes


_facemesh = FaceMesh()


def facemesh() -> FaceMesh:
    """The process-wide FaceMesh (its interpreter is opened on first use)."""
    return _facemesh


def face_meshes(rgb: np.ndarray, faces: list[Face]) -> list[Mesh]:
    """The mesh and face-presence score of each face of an RGB uint8 image."""
    return _facemesh(rgb, faces)


def _points(mesh: np.ndarray | Mesh) -> np.ndarray:
    points = mesh.points if isinstance(mesh, Mesh) else np.asarray(mesh)
    if points.shape[0] != MESH_POINTS:
        raise ValueError(f"expected a ({MESH_POINTS}, 2 or 3) mesh, got shape {points.shape}")
    return points.astype(np.float64)


def _eye_ratio(points: np.ndarray, eye: tuple[int, ...]) -> float:
    p1, p2, p3, p4, p5, p6 = (points[i] for i in eye)
    width = np.linalg.norm(p1 - p4)
    return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / max(2.0 * width, 1e-9))


def eye_aspect_ratios(mesh: np.ndarray | Mesh) -> tuple[float, float]:
    """(right eye, left eye) aspect ratios: lid opening over eye width (see module doc)."""
    points = _points(mesh)
    return _eye_ratio(points, RIGHT_EYE), _eye_ratio(points, LEFT_EYE)


def eye_aspect_ratio(mesh: np.ndarray | Mesh) -> float:
    """Mean eye aspect ratio of both eyes (3-D points when given; 2-D works too)."""
    right, left = eye_aspect_ratios(mesh)
    return (right + left) / 2.0


def head_pose_from_mesh(mesh: np.ndarray | Mesh) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the mesh's 3-D points.

    Same signs as `facelens.vision.quality.head_pose_from_landmarks` (the coarse 5-point
    estimate):
    yaw > 0: the subject turns to their left (the nose moves toward the image's right);
    pitch > 0: the subject looks down; roll > 0: the head tilts clockwise in the image
    (toward the subject's left shoulder; the left eye is lower). The rotation is decomposed
    as R = R_y(yaw)·R_x(pitch)·R_z(roll): turn, then nod, then tilt.
    """
    points = _points(mesh)
    if points.shape[1] != 3:
        raise ValueError("head_pose_from_mesh needs the 3-D mesh (468, 3)")
    # To the canonical model's axes: x right, y up, z toward the camera.
    seen = points[_POSE_INDICES] * np.array([1.0, -1.0, -1.0])
    model = _CANONICAL
    seen_c, model_c = seen - seen.mean(0), model - model.mean(0)
    u, _, vt = np.linalg.svd(seen_c.T @ model_c)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt  # seen ≈ s·r·model + t
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(-r[1, 2], -1.0, 1.0)))
    tilt = np.degrees(np.arctan2(r[1, 0], r[1, 1]))  # counter-clockwise with y up
    return float(yaw), float(pitch), float(-tilt)
