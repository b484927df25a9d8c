"""`facelens watch SOURCE --gallery G [--scene] [--out annotated.mp4]` and `facelens eval watch`."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from facelens.cli.common import (
    FAR_MAX,
    FAR_MIN,
    FPS_MAX,
    FPS_MIN,
    RECONNECTS,
    CameraName,
    JsonOut,
    Reconnects,
    emit_report,
    environment_settings,
    err,
    errors,
    opened_frames,
    out,
    writable,
)


def watch(source: Annotated[str, typer.Argument(help="Video file, rtsp:// or http(s):// URL, "
                                                     "or /dev/videoN.")],
          gallery: Annotated[list[str] | None, typer.Option(
              help="Gallery to match (repeatable); needed unless --scene.")] = None,
          camera: CameraName = "cli",
          fps: Annotated[float | None, typer.Option(
              help="Frames per second to process (default: every frame).", min=FPS_MIN,
              max=FPS_MAX)] = None,
          far: Annotated[float, typer.Option(help="FPIR per searched face.", min=FAR_MIN,
                                             max=FAR_MAX)] = 1e-3,
          cooldown: Annotated[float, typer.Option(help="Seconds between alerts for one "
                                                       "person.", min=0)] = 60.0,
          motion: Annotated[bool, typer.Option(help="Skip still frames.")] = False,
          scene: Annotated[bool, typer.Option(
              help="Also box, track and describe people and vehicles and read plates (the "
                   "street layer; counts printed at the end, no alerts without a hotlist: "
                   "see watch-street). Without --gallery, only that.")] = False,
          out_video: Annotated[Path | None, typer.Option(
              "--out", help="Write an annotated video (boxes, names, track ids).")] = None,
          reconnects: Reconnects = RECONNECTS,
          as_json: Annotated[bool, typer.Option("--json", help="One JSON line per alert.")]
          = False) -> None:
    """Watch a video or stream for the people in GALLERY; print alerts as they happen.
    Alerts are stored as events (and sent to configured webhooks/MQTT); faces that match
    nothing are never written anywhere. With --scene, people and vehicles are described
    beside the faces, in the same frames and the same annotated video."""
    if not gallery:
        if not scene:
            raise typer.BadParameter("give --gallery (repeatable), or --scene",
                                     param_hint="--gallery")
        from facelens.cli.scene import watch_street

        watch_street(source, camera=camera, fps=fps or 5.0, rule=None, plate=None,
                     motion=motion, out_video=out_video, reconnects=reconnects,
                     as_json=as_json)
        return
    with errors():
        frames = opened_frames(source, fps=fps, reconnects=reconnects)
    # After the source: a wrong one is told at once, not after the engine and database load.
    from facelens.events.hotlists import Hotlists
    from facelens.events.store import EventStore
    from facelens.gallery.service import Galleries
    from facelens.video.camera import alert_recorder, sinks_from
    from facelens.video.scene_watch import SceneWatch
    from facelens.video.watch import Alert, Watcher
    from facelens.video.writer import AnnotatedWriter

    settings = environment_settings()
    with errors():
        galleries = Galleries(settings)
        events = EventStore(galleries.store)
        sink = sinks_from(settings, events)
        store = alert_recorder(events, sink)

        def on_alert(alert: Alert, snapshot: bytes, frame: bytes) -> int | None:
            event_id = store(alert, snapshot, frame)
            alert.event_id = event_id
            if as_json:  # one line per alert (JSON Lines): readable while the video runs
                print(json.dumps(alert.payload()), flush=True)
            else:
                flag = f"  [yellow]{alert.flagged}: stored, not alerted[/yellow]" \
                    if alert.flagged else ""
                out.print(f"{alert.time:8.2f}s  {alert.camera}  [bold]{escape(alert.name)}[/bold] "
                          f"({alert.confidence}, {alert.margin:+.3f} above the threshold "
                          f"over {alert.frames} frames)  track #{alert.track_id}  event "
                          f"{event_id}{flag}")
            return event_id

        watcher = Watcher(camera, galleries, gallery, far=far, cooldown_s=cooldown,
                          motion=motion, on_alert=on_alert)
        street = SceneWatch(camera, Hotlists([], []), gate=motion, engine=galleries.engine,
                            detect_side=settings.street_detect_side) if scene else None
        writer = AnnotatedWriter(out_video, fps or 30.0) if out_video else None
        started, last = time.perf_counter(), 0.0
        try:
            for frame in frames:
                # The street layer first: its NanoDet pass serves the watcher's screens too.
                street_labels = street.process(frame) if street is not None else []
                watcher.process(frame, street.latest if street is not None else None)
                if writer:
                    writer.write(frame.rgb, list(watcher.labels) + street_labels)
                last = frame.time
            watcher.finish(last)
        except KeyboardInterrupt:
            err.print("stopped")
        finally:
            if writer:
                writer.close()
            sink.close()
    s = watcher.stats
    took = time.perf_counter() - started
    err.print(f"{s.frames} frames, {s.detections} faces detected, {s.tracks} tracks, "
              f"{s.embeddings} embeddings; {took:.1f} s for {last:.1f} s of video"
              + (f"; annotated video: {out_video}" if out_video else ""), markup=False)
    if street is not None:
        counted: Counter[str] = Counter()
        for (_camera, kind, _minute), n in street.counts.items():
            counted[kind] += n
        err.print("street tracks: " + (", ".join(f"{k} {n}" for k, n in counted.most_common())
                                       or "none"))


def _people(enrol: list[str]) -> dict[str, Path]:
    people = {}
    for item in enrol:
        name, _, photo = item.partition("=")
        if not photo:
            raise typer.BadParameter(f"--enrol {item!r}: use NAME=PHOTO")
        people[name] = Path(photo)
    return people


def eval_watch(video: Path,
               enrol: Annotated[list[str], typer.Option(help="NAME=PHOTO, repeatable.")],
               fps: Annotated[float | None, typer.Option(help="Pipeline frame rate (default: "
                                                              "every frame).")] = None,
               json_out: JsonOut = None) -> None:
    """The camera pipeline vs identifying every face in every frame: alerts, embeddings per
    detection, identity recall of both, speed against real time."""
    from facelens.cli.common import progress
    from facelens.eval.watch_eval import run_watch_eval
    from facelens.settings import get_settings

    people = _people(enrol)

    with errors(), progress() as start:
        report = run_watch_eval(get_settings(), video, people, fps=fps, progress=start)
    emit_report(report, json_out)


def eval_tracks(data: Annotated[Path, typer.Argument(help="The shared data folder the "
                                                           "annotation's paths start from.")],
                truth: Annotated[Path | None, typer.Option(help="Annotation JSON (default: "
                                                                "the packaged one).")] = None,
                fps: Annotated[float | None, typer.Option(help="Pipeline frame rate "
                                                               "(default: every frame).")] = None,
                json_out: JsonOut = None) -> None:
    """Per-track identity recall against annotated identities: track templates vs the single
    best shot at the same FPIR, with embedder calls per detection."""
    from facelens.cli.common import progress
    from facelens.eval.watch_eval import load_track_truth, run_track_eval
    from facelens.settings import get_settings

    with errors(), progress() as start:
        report = run_track_eval(get_settings(), data, load_track_truth(truth), fps=fps,
                                progress=start)
    emit_report(report, json_out)


def eval_liveness(video: Annotated[list[Path], typer.Option(help="Real footage for bona fide "
                                                                 "sequences (repeatable).")],
                  lfw: Annotated[Path, typer.Option(help="Photos for print attacks.")],
                  footage: Annotated[bool, typer.Option(help="Add the registry footage "
                                                             "(`make footage`).")] = True,
                  prints: int = 200, replays_per_window: int = 2,
                  recaptures: Annotated[int | None, typer.Option(
                      help="Windows per clip and recipe recaptured through chromium (0: "
                           "none; default: the evaluation's).")] = None,
                  shared: Annotated[Path | None, typer.Option(
                      help="The annotated close-up clips (default: the liveness/ folder "
                           "beside the LFW folder).")] = None,
                  plot: Annotated[Path | None, typer.Option(
                      help="Draw the passive detector's DET curves here (PNG).",
                      callback=writable)] = None,
                  json_out: JsonOut = None) -> None:
    """The liveness judge vs synthetic print and replay attacks, chromium recaptures and real
    actions: APCER per attack type, BPCER and APCER at fixed BPCER (ISO/IEC 30107-3 terms),
    with counts and what the set cannot show, and a DET plot."""
    from facelens.api import default_engine
    from facelens.cli.common import progress
    from facelens.eval.liveness_eval import run_liveness_eval

    with errors(), progress() as start:
        report = run_liveness_eval(default_engine(), video, lfw, prints=prints,
                                   clips=None if footage else [], shared=shared, plot=plot,
                                   replays_per_window=replays_per_window, progress=start,
                                   **({} if recaptures is None else {"recaptures": recaptures}))
    emit_report(report, json_out)


VARIANT_SCREENS = ("phone=0.22,0.35", "monitor=0.35,0.55,0.75")


def _screens(items: list[str]) -> dict[str, list[float]]:
    """KIND=W1,W2,… items as {kind: widths}."""
    from facelens.eval.depiction_eval import SCREENS

    screens = {}
    for item in items:
        kind, _, widths = item.partition("=")
        try:
            screens[kind] = [float(w) for w in widths.split(",")]
        except ValueError:
            raise typer.BadParameter(f"{item!r}: use KIND=W1,W2 (widths such as 0.35)",
                                     param_hint="--screen") from None
        if kind not in SCREENS or not all(0 < w <= 1 for w in screens[kind]):
            raise typer.BadParameter(f"{item!r}: KIND is one of {', '.join(SCREENS)}, widths "
                                     "in (0, 1]", param_hint="--screen")
    return screens


def eval_depiction(enrol: Annotated[list[str], typer.Option(help="NAME=PHOTO, repeatable.")],
                   shown: Annotated[Path, typer.Option(help="A clip of enrolled people to "
                                                            "re-show on screens.")],
                   background: Annotated[list[Path], typer.Option(
                       help="Street footage the screens are held in front of "
                            "(repeatable).")],
                   real: Annotated[list[Path] | None, typer.Option(
                       help="Real clip (repeatable): no track may be flagged. Needed "
                            "unless --variants.")] = None,
                   step: Annotated[int, typer.Option(help="Process every STEP-th frame.",
                                                     min=1)] = 3,
                   chromium: Annotated[bool, typer.Option(
                       help="Also SHOWN recaptured through headless chromium (not with "
                            "--variants).")] = True,
                   variants: Annotated[bool, typer.Option(
                       help="Instead: SHOWN on every --screen width over each background, "
                            "posed by each of --seeds; normal alerts per composite and "
                            "tallied per background.")] = False,
                   screen: Annotated[list[str] | None, typer.Option(
                       help="With --variants: KIND=W1,W2,… a screen kind (phone or monitor) "
                            "and its widths as shares of the frame's (repeatable; default: "
                            f"{' '.join(VARIANT_SCREENS)}).")] = None,
                   seeds: Annotated[int, typer.Option(
                       help="With --variants: poses and glare drawn by seeds 0 to "
                            "SEEDS-1.", min=1)] = 3,
                   json_out: JsonOut = None) -> None:
    """Faces on phones and monitors vs real people: real tracks flagged as depictions (goal
    0), and alerts on made-up recaptures (SHOWN on a screen over street footage; goal: every
    one flagged, none normal). With --variants, only made-up ones, over a range of screen
    widths and poses."""
    from facelens.cli.common import progress
    from facelens.eval.depiction_eval import composite_variants, run_depiction_eval
    from facelens.settings import get_settings

    people = _people(enrol)
    if variants and real:
        raise typer.BadParameter("--variants uses no real clip", param_hint="--real")
    if not variants and not real:
        raise typer.BadParameter("give --real (repeatable), or --variants", param_hint="--real")
    screens = _screens(screen or list(VARIANT_SCREENS))
    with errors(), progress() as start:
        report = composite_variants(get_settings(), people, shown, background, screens,
                                    range(seeds), step=step, progress=start) if variants \
            else run_depiction_eval(get_settings(), people, real or [], shown, background,
                                    step=step, chromium=chromium, progress=start)
    emit_report(report, json_out)
