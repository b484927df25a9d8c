"""The face pipeline with the street layer beside it (as a camera runs both, sharing the face
engine): the same faces found, tracked and named as without it (`facelens bench
street-beside`; its speed figures go to docs/benchmarks.md, not to assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelens.eval.scene_bench import bench_beside
from facelens.settings import Settings


@pytest.mark.slow
def test_street_layer_beside_leaves_face_results_unchanged(shared_data: Path,
                                                           tmp_path: Path) -> None:
    video = shared_data / "video"
    report = bench_beside(Settings(data_dir=tmp_path / "data"),
                          [video / "short_hamilton_clip.mp4"],
                          {name: video / f"{name}.png"
                           for name in ("lin-manuel-miranda", "alex-lacamoire")},
                          fps=3, rounds=1)
    (row,) = report["clips"]
    assert row["face_results_equal"], row
    named = {name for name, _track, _flag in row["face_results"]["alerts"]}
    assert "lin-manuel-miranda" in named  # someone named: a run worth comparing
    assert named <= {"lin-manuel-miranda", "alex-lacamoire"}
    assert row["scene_cpu_ms_per_frame"] > 0 and row["face_cpu_ms_per_frame_alone"] > 0
