"""eval/degrade.py: the CCTV-like protocol is deterministic and gives faces the size it names."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facelens.eval.degrade import LEVELS, degrade, level


def _eyes(face) -> float:  # type: ignore[no-untyped-def]
    return float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))


def test_degrading_twice_gives_the_same_pixels_and_levels_differ(
        load_rgb: Callable[[str], np.ndarray]) -> None:
    rgb = load_rgb("obama.jpg")
    first = degrade(rgb, level("cctv-18"))
    assert np.array_equal(first, degrade(rgb.copy(), level("cctv-18")))
    assert level("cctv") == level("cctv-18")
    assert degrade(rgb, level("cctv-12")).shape[0] < first.shape[0]
    with pytest.raises(ValueError, match="unknown degradation"):
        level("cctv-7")


def test_an_lfw_framed_image_is_shrunk_as_the_issue_protocol_says() -> None:
    """250² → 112² at cctv-18 (the eyes of an LFW face, ~40 px of 250, end ~18 px apart);
    never enlarged."""
    rgb = np.random.default_rng(0).integers(0, 256, (250, 250, 3), np.uint8)
    assert degrade(rgb, level("cctv-18")).shape == (112, 112, 3)
    assert degrade(rgb, level("cctv-24")).shape == (149, 149, 3)
    tiny = rgb[:40, :40]
    assert degrade(tiny, level("cctv-12")).shape == tiny.shape


@pytest.mark.parametrize("name", ["cctv-24", "cctv-18", "cctv-12"])
def test_the_degraded_fixture_face_has_the_named_eye_distance(
        name: str, detected: Callable[..., list], load_rgb: Callable[[str], np.ndarray]
        ) -> None:
    """Told where the face's eyes are, the shrink puts them `interocular_px` apart: the
    detector finds the face in the degraded image with eyes that far apart (±15%: landmarks
    of a 12-px face are a pixel or two off)."""
    import facelens

    face = detected("obama.jpg")[0]
    chosen = LEVELS[name]
    small = degrade(load_rgb("obama.jpg"), chosen, interocular_px=_eyes(face))
    found = facelens.detect(small, detector="centerface")
    assert found, f"no face at {name}"
    assert _eyes(found[0]) == pytest.approx(chosen.interocular_px, rel=0.15)
    assert found[0].quality is not None and found[0].quality.sharpness < \
        face.quality.sharpness


@pytest.mark.parametrize("command", ["lfw", "identify"])
def test_both_eval_commands_refuse_an_unknown_level_alike_before_any_work(
        command: str, fixtures_dir: Path, tmp_path: Path) -> None:
    """One rule (`level`) checks --degrade while the command line is parsed: a usage error,
    exit 2, naming the valid levels; no feature is computed or cached."""
    cli = Path(sys.executable).with_name("facelens")
    env = dict(os.environ, COLUMNS="200")  # the message on one line of rich's error box
    run = subprocess.run([str(cli), "eval", command, str(fixtures_dir), "--degrade", "cctv",
                          "--degrade", "cctv-7", "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert (f"Invalid value for '--degrade': unknown degradation 'cctv-7'; one of "
            f"{', '.join(LEVELS)}") in run.stderr
    assert not (tmp_path / "cache").exists()
