"""Track templates on real frames: the quality-weighted mean of a track's embedded frames
(video/template.py), the by-eye annotation of the shared clips, and per-track identity recall
of templates vs the single best shot (`facelens eval tracks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facelens.api import Engine
from facelens.eval.watch_eval import (
    enrolment_still,
    face_truth,
    load_track_truth,
    run_track_eval,
)
from facelens.settings import Settings
from facelens.video.source import VideoSource
from facelens.video.template import Template

CLIP = "liveness/intel_head-pose-female-and-male.gif"


def _no_progress(_label: str, _total: int) -> Any:
    return lambda _n: None


@pytest.fixture(scope="module")
def fusion_engine() -> Engine:
    return Engine(Settings(embedder="fusion"))


@pytest.fixture(scope="module")
def woman_frames(shared_data: Path, fusion_engine: Engine) -> list[tuple[float, np.ndarray]]:
    """(quality, fused embedding) of the woman (left half) in every 6th frame of the Intel
    two-person clip."""
    out = []
    for frame in VideoSource(str(shared_data / CLIP)).frames():
        if frame.index % 6:
            continue
        faces = [f for f in fusion_engine.embed(frame.rgb)
                 if (f.box[0] + f.box[2]) / 2 < frame.rgb.shape[1] / 2]
        assert len(faces) == 1, f"frame {frame.index}: the woman is found once"
        face = faces[0]
        assert face.embedding is not None and face.quality is not None
        out.append((face.quality.score, face.embedding))
    return out


def _enrolment(shared_data: Path, engine: Engine, name: str) -> np.ndarray:
    source = load_track_truth()["enrol"][name]
    (face,) = engine.embed(enrolment_still(shared_data, source))
    assert face.embedding is not None
    return face.embedding


def test_template_beats_the_average_frame_and_keeps_fused_halves(
        shared_data: Path, fusion_engine: Engine,
        woman_frames: list[tuple[float, np.ndarray]]) -> None:
    woman = _enrolment(shared_data, fusion_engine, "intel-woman")
    man = _enrolment(shared_data, fusion_engine, "intel-man")
    template = Template()
    for tick, (quality, vector) in enumerate(woman_frames):
        template.add(tick, quality, {"fusion": vector})
    mean = template.mean("fusion")
    weights = np.array(template.weights)
    frame_scores = np.array([v @ woman for _, v in woman_frames])
    # the weighted mean direction scores at least the weighted mean of its frames' scores
    assert mean @ woman >= float(weights @ frame_scores / weights.sum()) - 1e-6
    assert mean @ woman > mean @ man + 0.1  # fused impostor scores sit near 0.57
    # each half keeps its fusion weight, so the dot product stays a weighted sum of cosines
    half = len(mean) // 2
    first = woman_frames[0][1]
    assert np.linalg.norm(mean[:half]) == pytest.approx(np.linalg.norm(first[:half]), abs=1e-5)
    assert np.linalg.norm(mean[half:]) == pytest.approx(np.linalg.norm(first[half:]), abs=1e-5)
    assert np.allclose(template.mean("fusion", last_only=True), woman_frames[-1][1], atol=1e-5)


def test_annotation_names_faces_by_shot_and_band() -> None:
    truth = load_track_truth()
    hamilton = next(c for c in truth["clips"] if c["file"].endswith("hamilton_clip.mp4"))
    box = np.array([530.0, 40.0, 570.0, 90.0])  # centre x 0.86 of 640 px
    assert face_truth(hamilton, 0, box, 640) == "lin-manuel-miranda"
    assert face_truth(hamilton, 60, box, 640) is None  # the audience shot: nobody enrolled
    assert face_truth(hamilton, 100, box, 640) is None  # too small for his close-up
    close_up = np.array([200.0, 60.0, 285.0, 160.0])
    assert face_truth(hamilton, 100, close_up, 640) == "lin-manuel-miranda"
    assert face_truth(hamilton, 250, box, 640) is None  # not the Obama band
    left = np.array([50.0, 150.0, 80.0, 180.0])
    assert face_truth(hamilton, 10, left, 640) == "alex-lacamoire"
    enrolled = set(truth["enrol"])
    assert {p["name"] for c in truth["clips"] for s in c["shots"] for p in s["people"]} <= enrolled


def test_both_people_recalled_per_track_with_few_embeddings(shared_data: Path) -> None:
    truth = load_track_truth()
    truth["clips"] = [c for c in truth["clips"] if c["file"] == CLIP]
    truth["enrol"] = {k: v for k, v in truth["enrol"].items() if k.startswith("intel-")}
    report = run_track_eval(Settings(), shared_data, truth, progress=_no_progress)
    for mode in ("template", "best_shot"):
        result = report["total"][mode]
        assert result["enrolled_tracks"] == 2 and result["recalled"] == 2, mode
        assert result["named_wrong"] == 0
        assert result["embeddings_per_detection"] <= 0.1
    # a template alert needs two separated frames; the best shot alerts on one
    assert report["total"]["template"]["embeddings"] >= 4
    assert report["total"]["best_shot"]["embeddings"] >= 2
