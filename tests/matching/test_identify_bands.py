"""Open-set 1:N by quality cell (a CCTV-like probe searched with its cell's weight and
thresholds) and with more enrolment photos per person, on real lfw-dev embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facelens.eval.identify_eval import OpenSetProtocol, banded, enrolment_photos
from facelens.eval.lfw import facelens_features, fuse, stack
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
