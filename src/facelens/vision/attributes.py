"""Opt-in attributes: age in years and perceived sex. Deliberately nothing else: no
ethnicity, no emotion, no attractiveness (see README, "What facelens declines to build")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from facelens.face import Attributes, Face
from facelens.models.base import LazyModel, onnx_session
from facelens.vision.embed import shape5

_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # RGB, from the carrier
_AGE_CLASSES = np.array([0.25, *range(1, 81)], np.float32)
# The model's authors publish no error figure and our data has no age labels, so the typical
# error is reported as unknown (None) rather than invented. See README, "Limits".
AGE_TYPICAL_ERROR: float | None = None


class _ChipClassifier(LazyModel[object]):
    chip_size: int

    def _open(self, path: Path) -> object:
        return onnx_session(onnx.load(str(path)), threads=1)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        batch = ((chips.astype(np.float32) - _MEANS) / 256.0).transpose(0, 3, 1, 2)
        return self.session.run(None, {"images": np.ascontiguousarray(batch)})[0]  # type: ignore[attr-defined]


class AgeModel(_ChipClassifier):
    name, chip_size = "age", 64


class GenderModel(_ChipClassifier):
    name, chip_size = "gender", 32


_age, _gender = AgeModel(), GenderModel()


def estimate_attributes(rgb: np.ndarray, faces: list[Face]) -> list[Attributes]:
    """Age and perceived sex for each face (fills `face.attributes`)."""
    if not faces:
        return []
    predictor = shape5()
    ages = _age(np.stack(predictor.chips(rgb, faces, _age.chip_size, 0.2))) @ _AGE_CLASSES
    sexes = _gender(np.stack(predictor.chips(rgb, faces, _gender.chip_size, 0.2)))
    out = []
    for face, age, p in zip(faces, ages, sexes, strict=True):
        face.attributes = Attributes(age=float(age), age_error=AGE_TYPICAL_ERROR,
                                     sex="male" if p[1] >= p[0] else "female",
                                     sex_confidence=float(p.max()))
        out.append(face.attributes)
    return out
