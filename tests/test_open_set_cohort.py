"""Open-set 1:N: cohort score normalisation (T-norm) on real embeddings, and thresholds fitted
on one half of lfw-dev's identities holding on the other half."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facelens.api import Engine
from facelens.eval.identify_eval import OpenSetProtocol, fitted_thresholds, fnir_at, held_out
from facelens.eval.lfw import facelens_features, fuse, stack
from facelens.matching.open_set import cohort_stats, t_normalised
from facelens.settings import Settings


@pytest.fixture(scope="module")
def fixture_faces(fixtures_dir: Path) -> dict[str, np.ndarray]:
    """sface-flip embeddings of every face in the fixture photos, named photo:index."""
    engine = Engine(Settings(embedder="sface-flip"))
    out = {}
    for photo in ("obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg",
                  "obama_and_biden.jpg", "kit_with_rose.jpg"):
        for i, face in enumerate(engine.embed(fixtures_dir / photo)):
            assert face.embedding is not None
            out[f"{photo}:{i}"] = face.embedding
    return out


def test_cohort_stats_are_the_top_k_similarities(fixture_faces: dict[str, np.ndarray]) -> None:
    vectors = np.stack(list(fixture_faces.values()))
    probes, cohort = vectors[:3], vectors[3:]
    for k in (2, 4, len(cohort) + 5):  # k beyond the cohort uses all of it
        mean, spread = cohort_stats(probes, cohort, k)
        for row, probe in enumerate(probes):
            nearest = np.sort(cohort @ probe)[::-1][:min(k, len(cohort))]
            assert mean[row] == pytest.approx(nearest.mean(), abs=1e-6)
            assert spread[row] == pytest.approx(nearest.std(), abs=1e-5)
    scores = probes @ cohort.T
    mean, spread = cohort_stats(probes, cohort, 3)
    normalised = t_normalised(scores, mean, spread)
    # a score at the probe's cohort mean is 0, one standard deviation above it is 1
    assert np.allclose(normalised * spread[:, None] + mean[:, None], scores, atol=1e-5)


def test_normalised_genuine_score_stands_out_from_the_cohort(
        fixture_faces: dict[str, np.ndarray]) -> None:
    """Obama's second portrait scores several cohort sigmas above Obama's similarity to a
    cohort of other people (Kit Harington, Rose Leslie, Biden), and Biden does not."""
    cohort = np.stack([v for n, v in fixture_faces.items()
                       if n.startswith(("kit_with_rose.jpg", "biden.jpg"))])
    assert len(cohort) == 3
    obama, obama2 = fixture_faces["obama.jpg:0"], fixture_faces["obama2.jpg:0"]
    mean, spread = cohort_stats(obama[None], cohort, 3)
    genuine, impostor = t_normalised(np.array([[obama2 @ obama, fixture_faces["biden.jpg:0"]
                                                @ obama]]), mean, spread)[0]
    assert genuine > 3.0
    assert impostor < 2.0  # Biden is in the cohort: within its spread


@pytest.fixture(scope="module")
def lfw_subset(lfw_open_set_photos: Callable[[int, int], list[Path]]) -> OpenSetProtocol:
    """Fused embeddings of 40 lfw-dev people with 3+ images (3 each) and 100 single-image
    people, the first in name order."""
    files = lfw_open_set_photos(40, 100)
    settings = Settings()
    rows = [facelens_features(f, runtime=settings.runtime) for f in files]
    emb = fuse(stack(rows, "sface-flip", 128), stack(rows, "dlib", 128),
               Engine(settings).fusion_weight())
    return OpenSetProtocol(files, emb)


def test_a_threshold_fitted_on_one_half_holds_on_the_other(lfw_subset: OpenSetProtocol
                                                          ) -> None:
    protocol = lfw_subset
    for measured in (0, 1):
        here, other = protocol.half == measured, protocol.half != measured
        top, hit, non, size = protocol.searches(here)
        assert size >= 10 and len(non) >= 80
        # ~100 non-mated searches per half: FPIR 1e-1 is what they can measure
        fitted = fitted_thresholds(protocol.impostor_scores(other), size, (1e-1, 1e-2))
        assert fitted["1e-02"] > fitted["1e-01"]  # stricter FPIR, higher threshold
        result = fnir_at(top, hit, non, fitted, (1e-1,))["1e-01"]
        assert result["measured_fpir"] <= 0.2  # within 2x of the asked 10%
        assert result["fnir"] < 0.1
        own = fnir_at(top, hit, non, None, (1e-1,))["1e-01"]
        assert own["fnir"] <= result["fnir"] or result["measured_fpir"] > 0.1


def test_held_out_report_compares_raw_and_t_norm(lfw_subset: OpenSetProtocol) -> None:
    report = held_out(lfw_subset, 1)
    assert report["cohort_size"] == int((~lfw_subset.multi & (lfw_subset.half == 0)).sum())
    raw, tnorm = report["raw"], report["tnorm_top200"]
    assert raw["mated_probes"] == tnorm["mated_probes"] and raw["rank1"] == tnorm["rank1"]
    # T-norm is a per-probe affine map: it cannot change which gallery entry is rank 1
    assert tnorm["fitted_on_other_half"]["1e-02"]["threshold"] > 1.0  # in cohort sigmas
    assert raw["fitted_on_other_half"]["1e-02"]["threshold"] < 1.0  # a cosine
