"""`facelens eval depiction --variants`: the Hamilton clip on made-up screens over street
footage, per composite and tallied per background (docs/depiction-variants.json is its full
run). Here one large monitor, one pose, every 15th frame, over the office clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facelens.cli import app

PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")


def _arguments(data: Path, *extra: str) -> list[str]:
    video = data / "video"
    return ["eval", "depiction", *(f"--enrol={n}={video / n}.png" for n in PEOPLE),
            f"--shown={video / 'short_hamilton_clip.mp4'}",
            f"--background={data / 'street' / 'intel_one-by-one-person-detection.mp4'}",
            *extra]


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_large_monitor_composite_is_flagged_and_tallied(shared_data: Path,
                                                          tmp_path: Path) -> None:
    street = shared_data / "street" / "intel_one-by-one-person-detection.mp4"
    if not (shared_data / "video" / "short_hamilton_clip.mp4").is_file() or not street.is_file():
        pytest.skip(f"../shared/data is absent: {shared_data}/video or {street} not found")
    target = tmp_path / "variants.json"
    result = CliRunner().invoke(app, _arguments(
        shared_data, "--variants", "--screen=monitor=0.75", "--seeds=1", "--step=15",
        f"--json-out={target}"))
    assert result.exit_code == 0, result.output
    report = json.loads(target.read_text())

    assert report["screens"] == {"monitor": [0.75]} and report["seeds"] == [0]
    assert report["sampled_every"] == 15
    [(name, composite)] = report["composites"].items()
    assert name == f"monitor 0.75 over {street.name}, seed 0"
    # Both people alert from the screen, every alert flagged as a depiction.
    assert composite["normal_alerts"] == 0
    assert composite["flagged"] and all(f.startswith("depiction: ") for f in composite["flagged"])
    # The tally is the composites': overall and for the one screen.
    tallied = {"composites": 1, "alerts": len(composite["flagged"]), "normal_alerts": 0,
               "composites_keeping_a_normal_alert": 0}
    summary = report["summary"][street.name]
    assert summary == tallied | {"by_screen": {"monitor 0.75": tallied}}


@pytest.mark.parametrize(("extra", "says"), [
    (["--variants", "--screen=tv=0.5"], "KIND is one of phone, monitor"),
    (["--variants", "--screen=monitor=wide"], "use KIND=W1,W2"),
    (["--variants", "--real=clip.mp4"], "--variants uses no real clip"),
    ([], "give --real"),  # the full evaluation needs real clips
])
def test_bad_variant_options_exit_2_before_any_work(tmp_path: Path, extra: list[str],
                                                    says: str) -> None:
    result = CliRunner().invoke(app, _arguments(tmp_path, *extra))  # no file is opened
    assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output
