"""`facelens objects IMAGE` (people, vehicles, screens and plates) and `facelens eval plates`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import (
    FPS_MAX,
    FPS_MIN,
    RECONNECTS,
    CameraName,
    JsonFlag,
    JsonOut,
    Reconnects,
    emit,
    emit_report,
    errors,
    opened_frames,
    out,
    progress,
    require_folder,
)

PlateRegion = StrEnum("PlateRegion", [(r, r) for r in ("us", "eu", "uk", "br", "in", "any")])
"""The plate format tables of scene/plates.py (FORMATS; a test keeps them equal): another
name was read as "any", silently."""
Region = Annotated[PlateRegion, typer.Option(help="Plate formats.")]


def objects(image: Path,
            region: Region = PlateRegion.us,
            as_json: JsonFlag = False) -> None:
    """People, vehicles and screens in IMAGE, with the plate read on each motor vehicle."""
    from facelens.scene.detect import MOTOR_VEHICLES, detect_objects
    from facelens.scene.plates import read_plate
    from facelens.vision.decode import load_image

    with errors():
        rgb = load_image(image)
        found = detect_objects(rgb)
        rows = []
        for name, score, box in zip(found.names, found.scores, found.boxes, strict=True):
            plate = read_plate(rgb, box, region.value) if name in MOTOR_VEHICLES else None
            rows.append({"class": name, "score": round(float(score), 3),
                         "box": [round(float(v), 1) for v in box],
                         "plate": plate.text if plate else None,
                         "plate_confidence": round(plate.confidence, 3) if plate else None})
    if as_json:
        emit({"image": str(image), "objects": rows})
        return
    table = Table(title=f"{escape(str(image))}: {len(rows)} object(s)")
    for col in ("class", "score", "box", "plate"):
        table.add_column(col)
    for row in rows:
        plate = f"{row['plate']} ({row['plate_confidence']:.2f})" if row["plate"] else ""
        table.add_row(row["class"], f"{row['score']:.2f}",
                      " ".join(f"{v:.0f}" for v in row["box"]), plate)
    out.print(table)


def eval_plates(folder: Path,
                region: Region = PlateRegion.us,
                limit: Annotated[int | None, typer.Option(help="Only the first N images.", min=1)]
                = None,
                json_out: JsonOut = None) -> None:
    """Plate reading on an openalpr-layout folder (<id>.jpg + <id>.txt): read_rate with the
    vehicle detector in the loop, read_rate_given_box, ms per image, error kinds."""
    require_folder(folder)  # before the imports: a wrong path is told at once
    from facelens.eval.plates import evaluate_plates

    with errors(), progress() as start:
        report = evaluate_plates(folder, region=region.value, limit=limit, progress=start)
    emit_report(report, json_out)


def watch_street(source: Annotated[str, typer.Argument(help="Video file, rtsp:// or http(s):// "
                                                             "URL, or /dev/videoN.")],
                 camera: CameraName = "cli",
                 fps: Annotated[float, typer.Option(help="Detection frames per second.",
                                                    min=FPS_MIN, max=FPS_MAX)] = 5.0,
                 rule: Annotated[list[str] | None, typer.Option(
                     help='Description to alert on for the run, e.g. "red car" or "child, red '
                          'top" (repeatable).')] = None,
                 plate: Annotated[list[str] | None, typer.Option(
                     help="Plate to alert on for the run (repeatable).")] = None,
                 region: Region = PlateRegion.us,
                 motion: Annotated[bool, typer.Option(help="Detect only when something "
                                                           "moves.")] = True,
                 faces: Annotated[bool, typer.Option(help="Perceived sex from faces large "
                                                          "enough (the face engine).")] = True,
                 out_video: Annotated[Path | None, typer.Option(
                     "--out", help="Write an annotated video (boxes and descriptions).")]
                 = None,
                 reconnects: Reconnects = RECONNECTS,
                 as_json: Annotated[bool, typer.Option(
                     "--json", help="One JSON line per alert as it happens; the counts at "
                                    "the end on stderr.")] = False) -> None:
    """People and vehicles in a video or stream: tracked, described, plates read; alerts for
    the --rule descriptions and --plate plates only. Passers-by that match nothing leave only
    the counts printed at the end."""
    from datetime import UTC, datetime, timedelta

    from facelens.events.hotlists import (
        DescriptionRule,
        Hotlists,
        PlateEntry,
        listed_plate,
        parse_description,
    )

    now = datetime.now(UTC)
    until = now + timedelta(days=1)  # a CLI run's lists live as long as the run
    # Parsed as the stored lists are ("" or "car red" alerted on every passer-by or car), but
    # a run on one's own video may ask for every person ("person"): its alerts are printed.
    with errors():
        rules = [DescriptionRule(text, *parse_description(text), reason="command line",
                                 added_by="cli", start=now, expires=until) for text in rule or []]
        plates = [PlateEntry(listed_plate(text), "command line", "cli", until)
                  for text in plate or []]

    def show(alert: dict[str, object]) -> None:
        shown = {k: v for k, v in alert.items() if k != "crop_jpeg"}
        if as_json:  # JSON Lines, as `watch --json`: a stream's alerts readable as they come
            print(json.dumps(shown), flush=True)
        else:
            out.print(f"[bold]alert[/bold] {escape(str(shown['matched']))} track "
                      f"{shown['track']} {shown['class']} {escape(str(shown['attributes']))}")

    with errors():
        frames = opened_frames(source, fps=fps, reconnects=reconnects)
        from facelens.api import Engine  # after the source: a wrong one is told at once
        from facelens.settings import get_settings
        from facelens.video.scene_watch import SceneWatch, watch_scene
        from facelens.video.source import SourceError

        scene = SceneWatch(camera, Hotlists(plates, rules), on_alert=show, gate=motion,
                           region=region.value, engine=Engine(get_settings()) if faces else None,
                           detect_side=get_settings().street_detect_side)
        summary = watch_scene(frames, scene, out_video, fps)
        if as_json:  # stdout holds only the alert lines
            print(json.dumps(summary, indent=1), file=sys.stderr)
        else:
            emit(summary)
        if summary["error"]:  # the counts above are of the frames before it
            raise SourceError(summary["error"])


def eval_street(folder: Path,
                json_out: JsonOut = None) -> None:
    """People and vehicles against the frames of FOLDER (../shared/data/street) labelled by
    eye (facelens/data/street_labels.json): count error, count recall, colour accuracy."""
    require_folder(folder)  # before the imports: a wrong path is told at once
    from facelens.eval.street import evaluate_street
    from facelens.settings import get_settings

    with errors(), progress() as start:
        report = evaluate_street(folder, side=get_settings().street_detect_side, progress=start)
    emit_report(report, json_out)


def bench_street(clips: Annotated[list[Path], typer.Argument(help="Video clips.")],
                 frames: Annotated[int, typer.Option(help="Frames per clip.", min=1)] = 60,
                 json_out: JsonOut = None) -> None:
    """720p street pipeline speed at 5 detection fps, with and without motion gating:
    CPU ms per frame and streams per machine."""
    from facelens.eval.scene_bench import bench_scene
    from facelens.settings import get_settings

    with errors():
        report = bench_scene(clips, side=get_settings().street_detect_side, most=frames)
    emit_report(report, json_out)


def bench_street_beside(clips: Annotated[list[Path], typer.Argument(help="Video clips.")],
                        enrol: Annotated[list[str], typer.Option(
                            help="NAME=PHOTO, repeatable: the watchlist the faces are "
                                 "identified against.")],
                        fps: Annotated[float, typer.Option(help="Frames per second.")] = 5.0,
                        rounds: Annotated[int, typer.Option(
                            help="Face-only / face + street pairs per clip.", min=1)] = 2,
                        json_out: JsonOut = None) -> None:
    """The face pipeline alone and with the street layer beside it (as a camera runs both),
    on the same frames: face CPU ms per frame of each, their ratio, and whether the face
    results (detections, tracks, alerts, names) are the same."""
    from facelens.cli.video import _people
    from facelens.eval.scene_bench import bench_beside
    from facelens.settings import get_settings

    with errors():
        report = bench_beside(get_settings(), clips, _people(enrol), fps=fps, rounds=rounds)
    emit_report(report, json_out)
