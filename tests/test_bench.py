"""`facelens bench` (engine): the pairs it times and the shape of its report, on the fixtures.
Speed targets live in the report's `targets_met`, never in a test's pass/fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facelens.eval.bench import verify_pairs


@pytest.fixture(scope="module")
def people(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LFW-layout folder: one sub-folder per person."""
    root = tmp_path_factory.mktemp("people")
    for person, names in {"obama": ["obama.jpg", "obama2.jpg"], "biden": ["biden.jpg"],
                          "kit": ["kit_with_rose.jpg"]}.items():
        (root / person).mkdir()
        for name in names:
            shutil.copy(fixtures_dir / name, root / person / name)
    return root


def test_verify_pairs_are_half_one_person_half_two(people: Path) -> None:
    pairs = verify_pairs(people, 10)
    assert len(pairs) == 10
    same = [a.parent == b.parent for a, b in pairs]
    assert same == [True] * 5 + [False] * 5
    assert all(a != b for a, b in pairs)
    assert verify_pairs(people, 10) == pairs  # seeded: every run times the same pairs


def test_bench_reports_stages_overhead_and_verify_throughput(people: Path, repo_root: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cli = Path(sys.executable).with_name("facelens")
    run = subprocess.run([str(cli), "bench", "--images", str(people), "--count", "4",
                          "--pairs", "4", "--no-peer", "--json-out", str(out)],
                         cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert stages["images"] == 4 and stages["faces"] >= 4
    assert len(stages["engine_overhead_per_round"]) == stages["rounds"]
    assert stages["engine_overhead"] > 1.0  # the engine does more than its networks
    assert all(stages["median_ms"][k] > 0 for k in ("decode", "detect", "embed"))
    speeds = report["verify"]["pairs_per_second"]
    assert set(speeds) == {"fusion", "sface-flip", "sface"} and min(speeds.values()) > 0
    assert report["verify"]["pairs"] == 4
    assert "verify_throughput_vs_peer" not in report["targets_met"]  # no peer, no claim


def test_bench_search_times_the_index_asked_for_or_refuses_it(tmp_path: Path) -> None:
    """`--index` picks the ANN index compared with numpy; one this CPU cannot run is refused
    with exit 2 before any work."""
    from facelens.index import SignScanIndex

    cli = Path(sys.executable).with_name("facelens")
    out = tmp_path / "sign.json"
    run = subprocess.run([str(cli), "bench", "search", "--n", "40000", "--queries", "200",
                          "--index", "sign", "--json-out", str(out)],
                         capture_output=True, text=True, timeout=600)
    if not SignScanIndex.runs_here():
        assert run.returncode == 2 and f"this CPU has no {SignScanIndex.NEEDS}" in run.stderr
        assert not out.exists()
        return
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    for part in (report, report["uniform_worst_case"]):
        assert part["n"] == 40_000 and part["queries"] == 200
        assert "sign scan" in part["ann"]["params"]["backend"]
        assert part["ann"]["recall@1_mate_first"] >= 0.99
        assert part["exact"]["qps"] > 0 and part["ann"]["qps"] > 0
    # identification's answers (the best face above the open-set threshold, or unknown)
    agree = report["ann"]["answers_agree"]
    assert set(agree) == {"fpir_0.01", "fpir_0.001"}
    assert all(a["named_by_exact"] > 0 and a["agree"] >= 0.99 for a in agree.values())
    assert "answers_agree" not in report["uniform_worst_case"]["ann"]  # no threshold there
