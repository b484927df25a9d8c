"""The ONNX/OpenVINO rebuild of dlib's face-recognition ResNet computes dlib's descriptors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np
import pytest

from facelens.models.base import OpenVINOModel, openvino_model
from facelens.models.dlib_net import INPUT, dlib_resnet_onnx
from facelens.models.registry import model_path
from facelens.vision.detect import detect_faces
from facelens.vision.embed import DlibResNet, shape5

PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "obama_and_biden.jpg", "two_people.jpg",
          "kit_with_rose.jpg")


@pytest.fixture(scope="module")
def chips(load_rgb: Callable[[str], np.ndarray]) -> list[np.ndarray]:
    """Every face of the fixture photos, as the 150×150 dlib chips embed.py feeds the net."""
    out: list[np.ndarray] = []
    for name in PHOTOS:
        rgb = load_rgb(name)
        out += shape5().chips(rgb, detect_faces(rgb), 150, 0.25)
    assert len(out) >= 6
    return out


@pytest.fixture(scope="module")
def reference(chips: list[np.ndarray]) -> np.ndarray:
    """dlib's own descriptors for `chips`."""
    net = dlib.face_recognition_model_v1(str(model_path("dlib-resnet")))
    return np.array([np.array(v) for v in net.compute_face_descriptor(chips)], np.float32)


@pytest.fixture(scope="module")
def model() -> OpenVINOModel:
    return openvino_model(dlib_resnet_onnx(model_path("dlib-resnet")), 2, "f32")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_graph_has_dynamic_batch() -> None:
    graph = dlib_resnet_onnx(model_path("dlib-resnet")).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [
        "N", 150, 150, 3]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [
        "N", 128]


def test_descriptors_match_dlib(model: OpenVINOModel, chips: list[np.ndarray],
                                reference: np.ndarray) -> None:
    got = model.run(None, {INPUT: np.stack(chips)})[0]
    assert got.shape == reference.shape == (len(chips), 128)
    assert _cosine(got, reference).min() >= 0.9999
    # The raw descriptor is dlib's too, not just its direction.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(reference, axis=1),
                               rtol=1e-3)


def test_batch_equals_single_chips(model: OpenVINOModel, chips: list[np.ndarray]) -> None:
    batch = model.run(None, {INPUT: np.stack(chips)})[0]
    singles = np.concatenate([model.run(None, {INPUT: chip[None]})[0] for chip in chips])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_embedder_class_normalises(chips: list[np.ndarray], reference: np.ndarray) -> None:
    got = DlibResNet()(chips)
    assert got.dtype == np.float32 and got.shape == (len(chips), 128)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosine(got, reference).min() >= 0.9999
    assert DlibResNet()([]).shape == (0, 128)


def test_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x01\x05other")
    with pytest.raises(ValueError):
        dlib_resnet_onnx(bad)
