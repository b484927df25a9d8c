"""SFace on OpenVINO (fp32 and bf16) and on onnxruntime: the same numbers (cosine ≥ 0.999 on
every fixture face; fp32 ≥ 0.99999), single and batched, from several threads at once; the
same verdicts on the fixture pairs; the runtime chosen by settings and named on the model
card."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from facelens.api import Engine
from facelens.face import Face
from facelens.models.base import OpenVINOModel
from facelens.models.runtime import openvino_precision, runtime_label
from facelens.settings import Settings, get_settings
from facelens.vision.align import align_batch
from facelens.vision.embed import SFace, sface

RUNTIMES = ("openvino", "openvino-bf16", "onnxruntime")
MIN_COSINE = {"openvino": 0.99999, "openvino-bf16": 0.999}
PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg", "obama_and_biden.jpg",
          "kit_with_rose.jpg")


@pytest.fixture(scope="module")
def chips(load_rgb: Callable[[str], np.ndarray]) -> np.ndarray:
    """Every detected face of every fixture photo, aligned to 112×112."""
    import facelens

    out = []
    for name in PHOTOS:
        rgb = load_rgb(name)
        faces = facelens.detect(rgb)
        if faces:
            out.append(align_batch(rgb, np.stack([f.landmarks for f in faces])))
    stacked = np.concatenate(out)
    assert len(stacked) >= 8
    return stacked


@pytest.fixture(scope="module")
def models() -> dict[str, SFace]:
    return {name: SFace(name, threads=2) for name in RUNTIMES}  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", ["openvino", "openvino-bf16"])
@pytest.mark.parametrize("flip", [False, True])
def test_openvino_and_onnxruntime_embeddings_agree(chips: np.ndarray, models: dict[str, SFace],
                                                   runtime: str, flip: bool) -> None:
    ov, ort = models[runtime](chips, flip=flip), models["onnxruntime"](chips, flip=flip)
    assert ov.shape == ort.shape == (len(chips), 128)
    cosine = (ov * ort).sum(axis=1)
    assert cosine.min() >= MIN_COSINE[runtime], cosine
    assert isinstance(models[runtime].session, OpenVINOModel)  # really OpenVINO
    # Different people stay apart: the agreement is not a degenerate constant vector.
    assert float((ov @ ov.T).min()) < 0.5


@pytest.mark.parametrize("runtime", ["openvino", "openvino-bf16"])
def test_openvino_batch_equals_single_and_is_thread_safe(chips: np.ndarray,
                                                         models: dict[str, SFace],
                                                         runtime: str) -> None:
    model = models[runtime]
    batched = model(chips, flip=True)  # a batch of 2N: the chips and their mirrors
    single = np.concatenate([model(chips[i:i + 1], flip=True) for i in range(len(chips))])
    np.testing.assert_allclose(batched, single, atol=2e-3)
    with ThreadPoolExecutor(4) as pool:  # concurrent calls each borrow their own request
        parallel = list(pool.map(lambda i: model(chips[i:i + 1], flip=True)[0],
                                 list(range(len(chips))) * 3))
    np.testing.assert_allclose(np.stack(parallel), np.concatenate([single] * 3), atol=1e-5)


def test_openvino_precision_is_set_explicitly(models: dict[str, SFace]) -> None:
    """"openvino" is fp32; "openvino-bf16" is bf16 where the CPU has it, fp32 elsewhere."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16 = "bf16" if "BF16" in capabilities else "f32"
    assert openvino_precision() == bf16
    for runtime, expected in (("openvino", "f32"), ("openvino-bf16", bf16)):
        session = models[runtime].session
        assert isinstance(session, OpenVINOModel)
        assert session.precision == expected
        compiled = session._compiled
        assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == expected
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
        assert runtime_label(runtime) == models[runtime].label == f"openvino-{expected}"
    assert runtime_label("onnxruntime") == "onnxruntime"


@pytest.fixture
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FACELENS_RUNTIME", request.param)
    get_settings.cache_clear()
    yield request.param
    get_settings.cache_clear()


@pytest.mark.parametrize("runtime", RUNTIMES, indirect=True)
@pytest.mark.parametrize("embedder", ["sface", "sface-flip", "fusion"])
def test_both_runtimes_verify_the_fixture_pairs(fixtures_dir: Path, runtime: str,
                                                embedder: str) -> None:
    assert get_settings().runtime == runtime
    engine = Engine(get_settings())
    assert engine.settings.runtime == runtime and sface(runtime).runtime == runtime
    obama = fixtures_dir / "obama.jpg"
    for far in (1e-3, 1e-4):
        same = engine.verify(obama, fixtures_dir / "obama2.jpg", far=far, embedder=embedder)
        different = engine.verify(obama, fixtures_dir / "biden.jpg", far=far, embedder=embedder)
        assert same.match, same
        assert not different.match, different
        assert same.score > different.score


def test_runtime_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().runtime == "openvino-bf16"
    for name in RUNTIMES:
        monkeypatch.setenv("FACELENS_RUNTIME", name)
        assert Settings().runtime == name
    monkeypatch.setenv("FACELENS_RUNTIME", "tensorflow")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("name", RUNTIMES)
def test_model_card_names_the_runtime_of_sface(repo_root: Path, name: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELENS_RUNTIME", name)
    cli = Path(sys.executable).with_name("facelens")
    run = subprocess.run([str(cli), "models", "--json"], cwd=repo_root, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    card = next(c for c in json.loads(run.stdout) if c["name"] == "sface")
    if name == "onnxruntime":
        assert card["runtime"].startswith("onnxruntime "), card
        assert "CPU, fp32" in card["runtime"]
    else:
        precision = runtime_label(name).removeprefix("openvino-")  # type: ignore[arg-type]
        assert card["runtime"].startswith("OpenVINO "), card
        assert f"CPU, {precision}" in card["runtime"]


def test_vectors_from_either_runtime_compare_with_each_other(
        load_rgb: Callable[[str], np.ndarray], detected: Callable[..., list[Face]],
        models: dict[str, SFace]) -> None:
    """A gallery enrolled under one runtime keeps working after a switch: cross-runtime
    scores equal same-runtime scores to within bf16 noise."""
    def chip(name: str) -> np.ndarray:
        return align_batch(load_rgb(name), detected(name)[0].landmarks[None])

    obama, obama2, biden = (chip(n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    ort = models["onnxruntime"]
    for runtime in ("openvino", "openvino-bf16"):
        ov = models[runtime]
        for other in (obama2, biden):
            same_runtime = float(ort(obama, flip=True)[0] @ ort(other, flip=True)[0])
            cross = float(ov(obama, flip=True)[0] @ ort(other, flip=True)[0])
            assert abs(cross - same_runtime) < (1e-4 if runtime == "openvino" else 0.01)


@pytest.mark.parametrize("runtime", RUNTIMES, indirect=True)
def test_each_precision_decides_on_its_own_calibration(runtime: str) -> None:
    """bf16 scores sit ~1e-3 from fp32 ones, enough to move tail thresholds: a process on
    bf16 reads thresholds fitted on bf16 scores, fp32 and onnxruntime share theirs."""
    from facelens.matching.calibration import calibration_file

    label = runtime_label(runtime)  # type: ignore[arg-type]
    calibration = Engine(get_settings()).calibration
    table = calibration.data
    assert table, f"no calibration shipped for {label}"
    assert label in table["source"] or (label == "onnxruntime" and "f32" in table["source"])
    assert calibration.origin == f"package:{calibration_file(label)}"
    point = calibration.operating_point("fusion", 1e-4)
    assert point.cascade is not None and point.cascade[0] < point.cascade[1]
    if label == "openvino-bf16":
        assert calibration_file(label) != calibration_file("openvino-f32")
    else:
        assert calibration_file(label) == calibration_file("openvino-f32")
