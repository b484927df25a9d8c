"""Quality bands: band choice, the per-band weight applied to fused vectors, the calibration
round trip, and a CCTV-like pair of real photos decided with its band's thresholds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facelens.matching.calibration import load_calibration
from facelens.matching.quality_bands import (
    DEFAULT_BANDS,
    band_index,
    band_indices,
    fused_halves,
    fused_score,
    pair_band_index,
    reweighted_probe,
)


def test_a_face_falls_in_the_first_band_it_meets_and_a_pair_in_its_worse_faces() -> None:
    good, fair, poor = range(3)
    assert band_index(DEFAULT_BANDS, 45.0, 150.0) == good
    assert band_index(DEFAULT_BANDS, 45.0, 20.0) == fair  # big but blurred
    assert band_index(DEFAULT_BANDS, 20.0, 150.0) == fair  # sharp but small
    assert band_index(DEFAULT_BANDS, 12.0, 12.0) == poor
    assert pair_band_index(DEFAULT_BANDS, (45.0, 150.0), (12.0, 12.0)) == poor
    assert pair_band_index(DEFAULT_BANDS, None, (20.0, 40.0)) == fair  # a reference: no vote
    assert pair_band_index(DEFAULT_BANDS, None, None) == good
    rng = np.random.default_rng(1)
    eyes, sharp = rng.uniform(5, 60, 500), rng.uniform(0, 200, 500)
    eyes[0] = np.nan
    expected = [band_index(DEFAULT_BANDS, e, s) for e, s in zip(eyes, sharp, strict=True)]
    assert band_indices(DEFAULT_BANDS, eyes, sharp).tolist() == expected
    assert expected[0] == poor


def test_a_band_weight_applies_to_vectors_fused_with_another() -> None:
    """A probe rescaled for weight w scores w·sface + (1−w)·dlib against gallery vectors
    fused at the stored weight: the gallery need not be rebuilt per band."""
    rng = np.random.default_rng(0)
    unit = [v / np.linalg.norm(v) for v in rng.normal(size=(4, 128))]
    stored = 0.35

    def fuse(s: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.concatenate([np.sqrt(stored) * s, np.sqrt(1 - stored) * d])

    a, b = fuse(unit[0], unit[1]), fuse(unit[2], unit[3])
    halves = fused_halves(a, stored)
    assert np.allclose(halves[0], unit[0]) and np.allclose(halves[1], unit[1])
    for w in (0.35, 0.6, 1.0):
        expected = w * unit[0] @ unit[2] + (1 - w) * unit[1] @ unit[3]
        assert fused_score(a, b, stored, w) == pytest.approx(expected, abs=1e-6)
        assert reweighted_probe(a, stored, w) @ b == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="lost one half"):
        fused_halves(a, 1.0)


def _band(name: str, eyes: float, sharp: float, weight: float, t: float) -> dict[str, Any]:
    table = {"thresholds": {"1e-02": t, "1e-03": t + 0.1}, "impostor_pairs": 1000,
             "tail": [[0.1, t - 0.1], [0.01, t]], "tail_fit": [-0.1, t - 0.2]}
    return {"name": name, "min_interocular_px": eyes, "min_sharpness": sharp,
            "fusion_weight": weight, "embedders": {"fusion": table}}


def test_bands_survive_a_save_and_files_without_bands_still_load(tmp_path: Path) -> None:
    from facelens.eval.lfw_report import write_calibration

    variant = {"tar_at_far": {"1e-03": {"threshold": 0.5, "tar": 0.9}}, "impostor_pairs": 10,
               "genuine_pairs": 5, "tail": [], "tail_fit": None}
    report: dict[str, Any] = {"fusion_weight": 0.35, "variants": {"fusion": variant}}
    old = tmp_path / "old.json"
    write_calibration(report, "test", old)
    assert "quality_bands" not in json.loads(old.read_text())
    plain = load_calibration("openvino-f32", file=old)
    assert plain.quality_bands == () and plain.for_faces((10.0, 5.0)) == ("", plain)

    bands = [_band("good", 25, 25, 0.35, 0.4), _band("fair", 15, 14, 0.6, 0.3),
             _band("poor", 0, 0, 0.9, 0.2)]
    report["quality_bands"] = {"calibration": bands}
    new = tmp_path / "new.json"
    write_calibration(report, "test", new)
    calibration = load_calibration("openvino-f32", file=new)
    assert [b.name for b in calibration.quality_bands] == ["good", "fair", "poor"]
    assert calibration.operating_point("fusion", 1e-3).threshold == 0.5  # clean: as before
    name, fair = calibration.for_faces((45.0, 150.0), (20.0, 30.0))
    assert name == "fair" and fair.fusion_weight(0.5) == 0.6
    assert fair.operating_point("fusion", 1e-3).threshold == pytest.approx(0.4)
    assert "fair-quality band" in fair.operating_point("fusion", 1e-3).describe()
    assert fair.threshold_for_far("fusion", 0.01).value == pytest.approx(0.3)
    assert calibration.for_faces(None, (11.0, 9.0))[0] == "poor"


def test_cctv_like_photos_of_one_person_are_decided_in_the_low_quality_band(
        detected: Callable[..., list], load_rgb: Callable[[str], np.ndarray],
        engine: Any) -> None:
    """obama.jpg and obama2.jpg made cctv-18 (eyes 18 px apart): verify measures their
    quality, picks the band of the worse face (not the clean one) and decides with that
    band's fusion weight and threshold: still the same person at FAR 1e-3."""
    from facelens.eval.degrade import degrade, level

    calibration = engine.calibration
    if not calibration.quality_bands:
        pytest.skip(f"{calibration.origin} has no quality bands")
    small = []
    for name in ("obama.jpg", "obama2.jpg"):
        face = detected(name)[0]
        eyes = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
        small.append(degrade(load_rgb(name), level("cctv-18"), interocular_px=eyes))
    verdict = engine.verify(small[0], small[1], far=1e-3, embedder="fusion")
    a, b = verdict.faces
    band, banded = calibration.for_faces((a.quality.interocular_px, a.quality.sharpness),
                                         (b.quality.interocular_px, b.quality.sharpness))
    assert band != calibration.quality_bands[0].name and verdict.quality_band == band
    assert verdict.far_threshold == banded.operating_point("fusion", 1e-3).threshold
    assert verdict.far_threshold != calibration.operating_point("fusion", 1e-3).threshold
    assert verdict.match and verdict.to_dict()["quality_band"] == band
    assert calibration.band_named(band).data == banded.data  # what the service's band reads
    assert calibration.band_named("") is calibration
    clean = engine.verify(load_rgb("obama.jpg"), load_rgb("obama2.jpg"), far=1e-3,
                          embedder="fusion")
    assert clean.quality_band == calibration.quality_bands[0].name and clean.match


def test_a_probe_searches_with_its_bands_weight_and_thresholds(tmp_path: Path) -> None:
    """What gallery identify calls: the probe's band, its calibration, and a fused probe
    rescaled to that band's weight (plain embedders untouched)."""
    from facelens.matching.calibration import probe_in_band

    data = {"fusion_weight": 0.35, "embedders": {},
            "quality_bands": [_band("good", 25, 25, 0.35, 0.4), _band("poor", 0, 0, 0.9, 0.2)]}
    path = tmp_path / "bands.json"
    path.write_text(json.dumps(data))
    calibration = load_calibration("openvino-f32", file=path)
    probe = np.random.default_rng(2).normal(size=256).astype(np.float32)
    band, banded, vector = probe_in_band(calibration, probe, "fusion", (10.0, 5.0), 0.35)
    assert band == "poor" and banded.fusion_weight(0.35) == 0.9
    assert np.allclose(vector, reweighted_probe(probe, 0.35, 0.9))
    band, _, vector = probe_in_band(calibration, probe, "fusion", (40.0, 100.0), 0.35)
    assert band == "good" and vector is probe
    plain = probe[:128]
    assert probe_in_band(calibration, plain, "sface-flip", (10.0, 5.0), 0.35)[2] is plain


@pytest.mark.shared_data
@pytest.mark.slow
def test_bands_are_fitted_on_a_small_lfw_dev_subset_and_saved(shared_data: Path,
                                                             tmp_path: Path) -> None:
    """The whole `eval lfw --degrade cctv-18 --degrade cctv-12 --bands --save-to` path on 10
    people: each copy is measured, every band gets pairs, a weight and thresholds, the held-out
    FAR is reported, and the saved file picks those bands."""
    from facelens.eval.lfw_bands import evaluate_cached
    from facelens.eval.lfw_report import evaluate, write_calibration
    from facelens.settings import Settings

    images = shared_data / "lfw-dev" / "images"
    people = [p for p in sorted(images.iterdir()) if len(list(p.glob("*.jpg"))) in (3, 4)][:8]
    root = tmp_path / "lfw" / "images"
    for person in people:
        (root / person.name).mkdir(parents=True)
        for src in sorted(person.glob("*.jpg")):
            (root / person.name / src.name).symlink_to(src)
    runtime, levels = Settings().runtime, ("cctv-18", "cctv-12")
    report, panels = evaluate(root.parent, runtime=runtime, workers=1, cache=tmp_path / "c",
                              singles=0, degrade=levels)
    assert list(panels) == ["clean", *levels]
    cctv = report["degraded"]["cctv-18"]
    assert 15 < cctv["median_interocular_px"] < 22 and cctv["faces_not_found"] == 0
    assert report["degraded"]["cctv-12"]["median_interocular_px"] < 15
    bands = evaluate_cached(root.parent, report, runtime, levels, tmp_path / "c", 1)
    assert [b["name"] for b in bands["calibration"]] == [b.name for b in DEFAULT_BANDS]
    for name, band in bands["per_band"].items():
        assert band["genuine_pairs"] > 0 and band["impostor_pairs"] > 0, name
        assert 0 <= band["held_out"]["banded"]["1e-02"]["far"] <= 1
    report["quality_bands"] = bands
    write_calibration(report, "subset", tmp_path / "points.json")
    saved = load_calibration("any", file=tmp_path / "points.json")
    name, poor = saved.for_faces((12.0, 10.0))
    assert name == "poor" and poor.operating_point("fusion", 1e-2).threshold == \
        bands["calibration"][2]["embedders"]["fusion"]["thresholds"]["1e-02"]
