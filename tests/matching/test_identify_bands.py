"""Open-set 1:N by quality cell (a CCTV-like probe searched with its cell's weight and
thresholds, also through `facelens eval identify --degrade`) and with more enrolment photos
per person, on real lfw-dev embeddings."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facelens.api import Engine
from facelens.eval.identify_eval import OpenSetProtocol, banded, enrolment_photos
from facelens.eval.lfw import build_protocol, facelens_features, fuse, stack
from facelens.eval.lfw_report import features_cache_kind
from facelens.matching.calibration import load_calibration
from facelens.settings import Settings

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def people(lfw_open_set_photos: Callable[[int, int], list[Path]]
           ) -> tuple[list[Path], list[dict[str, Any]], list[dict[str, Any]]]:
    """8 lfw-dev people with 3+ images (3 each) and 16 single-image people, clean and made
    cctv-18."""
    files = lfw_open_set_photos(8, 16)
    runtime = Settings().runtime
    clean = [facelens_features(f, runtime=runtime) for f in files]
    cctv = [facelens_features(f, runtime=runtime, degrade="cctv-18") for f in files]
    return files, clean, cctv


def test_cctv_probes_search_in_their_cell_against_its_thresholds(people: Any) -> None:
    files, clean, cctv = people
    calibration = load_calibration("openvino-bf16")
    if not calibration.quality_bands:
        pytest.skip(f"{calibration.origin} has no quality bands")
    weight = calibration.fusion_weight(0.35)
    protocol = OpenSetProtocol(files, fuse(stack(clean, "sface-flip", 128),
                                           stack(clean, "dlib", 128), weight))
    sharp, soft = banded(protocol, clean, calibration, weight), \
        banded(protocol, cctv, calibration, weight)
    cells = sharp["probes_per_cell"]
    assert cells["good"] >= 0.9 * sum(cells.values())  # lfw-dev photos: 99.6% good
    assert "good" not in soft["probes_per_cell"]  # eyes ~18 px apart: a low-quality cell
    gallery = int(protocol.gallery.sum())
    for name, value in soft["1e-02"]["thresholds"].items():
        cell = calibration.band_named(name)
        assert value == pytest.approx(cell.open_set_threshold("fusion", 1e-2, gallery).value,
                                      abs=1e-4)
        assert value != pytest.approx(sharp["1e-02"]["thresholds"]["good"], abs=1e-3)
    # the same people, soft probes: more of them missed, none named wrongly more often
    assert soft["1e-02"]["fnir"] >= sharp["1e-02"]["fnir"]
    assert soft["1e-02"]["measured_fpir"] <= 0.1


def test_a_second_enrolment_photo_misses_fewer_people(people: Any) -> None:
    files, clean, _ = people
    calibration = load_calibration("openvino-bf16")
    emb = fuse(stack(clean, "sface-flip", 128), stack(clean, "dlib", 128), 0.35)
    one, two = (enrolment_photos(files, emb, calibration, "fusion", k) for k in (1, 2))
    assert one["people"] == two["people"] == 8
    assert two["templates"] == 2 * one["templates"] and one["mated_probes"] == 8
    # one vector per subject: N, and so the threshold, does not grow with the photos
    first, second = (one["mean_of_templates"]["open_set_formula"],
                     two["mean_of_templates"]["open_set_formula"])
    assert second["1e-02"]["threshold"] == first["1e-02"]["threshold"]
    assert second["1e-02"]["fnir"] <= first["1e-02"]["fnir"]
    # one photo: the mean is the template, renormalising it changes nothing
    assert one["mean_of_templates"] == one["renormalised_mean"]
    # two photos: the plain mean never scores a stranger above the renormalised mean does
    assert (two["mean_of_templates"]["open_set_formula"]["1e-02"]["measured_fpir"]
            <= two["renormalised_mean"]["open_set_formula"]["1e-02"]["measured_fpir"])


def _identify_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("facelens")
    return subprocess.run([str(cli), "eval", "identify", str(root), *args],
                          capture_output=True, text=True, timeout=600)


def test_eval_identify_degrade_searches_cctv_probes_against_the_clean_gallery(
        people: Any, tmp_path: Path) -> None:
    """`facelens eval identify ROOT --degrade cctv-18` reports by_quality_cell for the clean
    and the CCTV-like probes, as banded() gives on the same features (the cache is filled
    with the fixture's, so the CLI computes none): the gallery clean, the probes degraded."""
    files, clean, cctv = people
    root = tmp_path / "lfw"
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        (root / f.parent.name / f.name).symlink_to(f)
    settings = Settings()
    kind = features_cache_kind(settings.runtime)
    tree = {root / f.parent.name / f.name: i for i, f in enumerate(files)}
    (tmp_path / "cache").mkdir()
    for name, rows in ((kind, clean), (f"{kind}-cctv-18", cctv)):
        (tmp_path / "cache" / f"{name}.pkl").write_bytes(
            pickle.dumps({path: rows[i] for path, i in tree.items()}))

    run = _identify_cli(root, "--degrade", "cctv-18", "--cache", str(tmp_path / "cache"),
                        "--json-out", str(tmp_path / "r.json"))
    assert run.returncode == 0, run.stderr
    cells = json.loads((tmp_path / "r.json").read_text())["by_quality_cell"]
    assert set(cells) == {"clean", "cctv-18"}

    engine = Engine(settings)
    order = [tree[f] for f in build_protocol(root, singles=10**9).files]
    weight = engine.fusion_weight()
    protocol = OpenSetProtocol([files[i] for i in order], fuse(
        stack([clean[i] for i in order], "sface-flip", 128),
        stack([clean[i] for i in order], "dlib", 128), weight))
    for level, rows in (("clean", clean), ("cctv-18", cctv)):
        expected = banded(protocol, [rows[i] for i in order], engine.calibration, weight)
        assert cells[level] == json.loads(json.dumps(expected))
    if engine.calibration.quality_bands:  # eyes ~18 px apart: no probe in the good cell
        assert "good" not in cells["cctv-18"]["probes_per_cell"]


def test_eval_identify_refuses_degraded_probes_but_fusion_before_any_work(
        tmp_path: Path) -> None:
    """(An unknown level: tests/test_degrade.py, for eval lfw and eval identify alike.)"""
    run = _identify_cli(tmp_path, "--degrade", "cctv", "--embedder", "sface-flip",
                        "--cache", str(tmp_path / "cache"))
    assert run.returncode == 2
    assert "--embedder" in run.stderr
    assert not (tmp_path / "cache").exists()
