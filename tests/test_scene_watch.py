"""The street pipeline: colours from the palette, hotlist and rule matching, tracks and
alerts over the street clips, and that a passer-by who matches nothing leaves no trace."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from facelens.eval.street import LABELS, labelled_frames
from facelens.events.hotlists import DescriptionRule, Hotlists, PlateEntry, parse_description
from facelens.scene.attributes import PALETTE, describe_person, dominant_colour
from facelens.scene.detect import detect_objects
from facelens.video.scene_watch import SceneWatch, watch_scene
from facelens.video.source import VideoSource

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _rule(text: str, **kw: object) -> DescriptionRule:
    kind, wanted = parse_description(text)
    fields = {"name": text, "kind": kind, "wanted": wanted, "reason": "test",
              "added_by": "tester", "start": NOW - timedelta(hours=1),
              "expires": NOW + timedelta(hours=1), **kw}
    return DescriptionRule(**fields)  # type: ignore[arg-type]


def test_palette_names_plain_colours() -> None:
    box = np.array([0, 0, 100, 100], np.float32)
    for rgb, name in (((200, 20, 20), "red"), ((250, 250, 250), "white"), ((10, 10, 10), "black"),
                      ((30, 60, 200), "blue"), ((128, 128, 128), "grey")):
        frame = np.full((100, 100, 3), rgb, np.uint8)
        colour = dominant_colour(frame, box, (0.0, 1.0))
        assert (colour.value, colour.confidence) == (name, 1.0)
        assert colour.value in PALETTE


def test_person_lower_colour_unknown_when_the_legs_leave_the_frame() -> None:
    frame = np.full((200, 100, 3), (200, 20, 20), np.uint8)
    cut = describe_person(frame, np.array([10, 10, 90, 200], np.float32), 200)
    whole = describe_person(frame, np.array([10, 10, 90, 150], np.float32), 200)
    assert cut["lower"].value == "unknown" and cut["lower"].confidence == 0.0
    assert whole["lower"].value == "red" and whole["upper"].value == "red"
    assert "sex" not in cut and "age_group" not in cut  # never guessed from colours


def test_descriptions_parse_and_rules_match_only_confident_live_attributes() -> None:
    assert parse_description("red car") == ("car", {"colour": "red"})
    assert parse_description("child, red top, blue trousers") == (
        "person", {"age_group": "child", "upper": "red", "lower": "blue"})
    red_car = _rule("red car")
    assert red_car.matches("car", {"colour": ("red", 0.8)})
    assert not red_car.matches("car", {"colour": ("red", 0.2)})  # a guess raises nothing
    assert not red_car.matches("truck", {"colour": ("red", 0.9)})
    assert _rule("red vehicle").matches("truck", {"colour": ("red", 0.9)})
    assert not _rule("red vehicle").matches("person", {"colour": ("red", 0.9)})
    lists = Hotlists(rules=[red_car, _rule("black top", cameras=frozenset({"gate"}))])
    assert [r.name for r in lists.rule_hits("street", "car", {"colour": ("red", 0.9)}, NOW)] \
        == ["red car"]
    assert lists.rule_hits("street", "person", {"upper": ("black", 0.9)}, NOW) == []
    assert lists.rule_hits("street", "car", {"colour": ("red", 0.9)},
                           NOW + timedelta(hours=2)) == []  # expired
    lists.plates.append(PlateEntry("ab-12 o3", "stolen", "tester", NOW + timedelta(days=1)))
    assert lists.plate_hit("AB12O3", NOW) is not None
    assert lists.plate_hit("AB1203", NOW + timedelta(days=2)) is None


def test_labelled_parking_frame_colour(shared_data: Path) -> None:
    """The labelled parking-lot frame with one red car: found as a car, described red."""
    import json

    labels = [f for f in json.loads(LABELS.read_text())["frames"]
              if f["clip"] == "intel_car-detection.mp4" and f["vehicle_colours"] == ["red"]]
    (label, rgb), = labelled_frames(shared_data / "street", labels)
    cars = detect_objects(rgb).of("car")
    assert len(cars) == label["counts"]["car"] == 1
    colour = dominant_colour(rgb, cars.boxes[0], (0.35, 0.8))
    assert colour.value == "red" and colour.confidence > 0.5


@pytest.mark.parametrize("clip", ["intel_one-by-one-person-detection.mp4",
                                  "intel_car-detection.mp4"])
def test_street_clip_alerts_on_rules_and_keeps_nothing_else(
        shared_data: Path, clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A rule that fits raises one alert per track with a crop; a passer-by that matches no
    rule leaves no file, no log line, and only a count."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC)
    # NanoDet calls some top-down cars buses: the car clip's rule names any vehicle.
    rule = _rule("black top" if "person" in clip else "red vehicle",
                 start=now - timedelta(hours=1), expires=now + timedelta(hours=1))
    alerts: list[dict[str, object]] = []
    scene = SceneWatch("street", hotlists=Hotlists(rules=[rule]), on_alert=alerts.append)
    source = VideoSource(str(shared_data / "street" / clip), fps=5)
    summary = watch_scene(source.frames(), scene)
    assert summary["detected_frames"] < summary["frames"]  # motion gating skipped some
    kinds = ("person",) if "person" in clip else ("car", "bus", "truck")
    assert sum(summary["tracks_per_class"].get(k, 0) for k in kinds) >= 2
    assert alerts, "the rule matched no track"
    assert all(a["matched"] == f"rule:{rule.name}" and a["crop_jpeg"] for a in alerts)
    assert len({a["track"] for a in alerts}) == len(alerts)  # once per track
    assert set(scene.counts) and all(c[0] == "street" for c in scene.counts)
    assert os.listdir(tmp_path) == []
    facelens_logs = [r for r in caplog.records if r.name.startswith("facelens")]
    assert facelens_logs == []


def test_cli_watch_street_alerts_and_writes_annotated_video(shared_data: Path,
                                                            tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from facelens.cli.scene import watch_street

    app = typer.Typer()
    app.command("street")(watch_street)
    app.command("unused")(lambda: None)  # two commands: typer keeps the subcommand name
    out = tmp_path / "annotated.mp4"
    result = CliRunner().invoke(app, ["street", str(shared_data / "street" / "facenet_video.mp4"),
                                      "--rule", "person", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{\n "camera"'):])
    assert summary["tracks_per_class"]["person"] >= 3
    assert '"matched": "rule:person"' in result.output
    assert out.stat().st_size > 10_000


def test_perceived_sex_only_from_a_face_matched_to_the_person(shared_data: Path,
                                                              engine: object) -> None:
    """Walkers facing the camera: their faces land inside their person boxes and give a
    perceived sex with a confidence; without the face engine every sex stays unknown."""
    frames = list(VideoSource(str(shared_data / "street" / "facenet_video.mp4"), fps=5).frames())
    with_faces = SceneWatch("street", engine=engine)  # type: ignore[arg-type]
    without = SceneWatch("street")
    for frame in frames:
        with_faces.process(frame)
        without.process(frame)
    told = [t for t in with_faces.tracks()
            if t.state["description"].attributes()["sex"][0] != "unknown"]
    assert len(told) >= 2
    for track in told:
        value, confidence = track.state["description"].attributes()["sex"]
        assert value in ("female", "male") and 0.5 <= confidence <= 1.0
        fx1, fy1, fx2, fy2 = track.state["face_box"]
        x1, y1, x2, y2 = track.box
        assert x1 - 1 <= fx1 and fx2 <= x2 + 1 and y1 - 1 <= fy1 and fy2 <= y2 + 1
    assert all(t.state["description"].attributes()["sex"] == ("unknown", 0.0)
               for t in without.tracks())
