"""`facelens eval depiction`: faces on screens raise no normal alert, real people lose none.

Real material: every face track of each real clip (at least 3 observations) is checked by
each depiction cue on up to 5 of its frames: a real track flagged is a lost alert. Made-up
material: a clip of enrolled people (and its recaptures through headless chromium) re-shown
on a phone held sideways or a monitor (dark bezel, perspective from a hand-held pose, a glare
band, the screen's gamma) composited into moving street footage; the watch pipeline runs on
it with the people enrolled, and every alert must be flagged as a depiction. `--variants`
(`composite_variants`): the made-up composites alone over a range of screen widths and poses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.eval.attacks import paste_plane, plane_homography
from facelens.eval.recapture import RECIPES, available, recaptured
from facelens.eval.watch_eval import enrolled_gallery
from facelens.liveness.passive import REALNESS_MIN
from facelens.models.antispoof import AntiSpoof
from facelens.settings import Settings
from facelens.video.depiction import CUES, ScreenMemory
from facelens.video.rigid_region import RegionFollower
from facelens.video.source import Frame, VideoSource
from facelens.video.tracker import IouTracker
from facelens.video.watch import Watcher

Progress = Callable[[str, int], Callable[[int], None]]
SCREENS = {"phone": {"width": 0.35, "bezel": 0.06, "colour": (10, 10, 12)},
           "monitor": {"width": 0.55, "bezel": 0.025, "colour": (28, 28, 30)}}
"""Width of the screen (share of the frame's), bezel width (share of the picture), colour."""
_antispoof = AntiSpoof()


def load(path: Path, step: int, limit: int | None = None) -> list[Frame]:
    frames = list(VideoSource(str(path)).frames())[::step]
    return frames[:limit] if limit else frames


def recapture(shown: list[np.ndarray], street: list[np.ndarray], kind: str, seed: int,
              width: float | None = None) -> list[np.ndarray]:
    """`shown` re-shown on a `kind` screen held in front of moving `street` footage (the
    screen `width` of the frame's, else the kind's own; the pose and glare drawn by `seed`)."""
    rng = np.random.default_rng(seed)
    spec = SCREENS[kind] | ({"width": width} if width else {})
    h, w = street[0].shape[:2]
    gamma = rng.uniform(0.75, 1.3)
    phase = rng.uniform(0, 6, 5)
    out = []
    for i, picture in enumerate(shown):
        background = cv2.resize(street[i % len(street)], (w, h))
        screen = np.clip(255 * (picture.astype(np.float32) / 255) ** gamma, 0, 255)
        sh, sw = screen.shape[:2]
        yy, xx = np.mgrid[:sh, :sw].astype(np.float32)
        band = np.exp(-(((xx - yy * 0.8) / sw - 0.3 - 0.1 * math.sin(i / 20 + phase[0])) ** 2)
                      / 0.01)  # a diagonal glare band sliding slowly
        screen = np.clip(screen + 90 * band[..., None], 0, 255).astype(np.uint8)
        bezel = max(4, round(sw * spec["bezel"]))
        screen = cv2.copyMakeBorder(screen, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT,
                                    value=spec["colour"])
        yaw, pitch, roll = (12 * math.sin(i / 23 + phase[1]), 8 * math.sin(i / 31 + phase[2]),
                            4 * math.sin(i / 17 + phase[3]))
        centre = (w * (0.5 + 0.06 * math.sin(i / 29 + phase[4])),
                  h * (0.5 + 0.04 * math.cos(i / 37)))
        homography = plane_homography(screen.shape[1], screen.shape[0], yaw=yaw, pitch=pitch,
                                      roll=roll, scale=spec["width"] * w / screen.shape[1],
                                      center=centre, focal=1.2 * w)
        out.append(paste_plane(background, screen, homography))
    return out


def flagged_tracks(settings: Settings, frames: list[Frame]) -> dict[str, Any]:
    """Every face track of at least 3 observations, and those each depiction cue (and any of
    them: `flagged`) flags: the per-frame cues on any of up to 5 of its frames (its best, and
    every 4th observation from the first), as many as the watch pipeline looks at per track;
    the rigid region on every frame, as the pipeline follows it; a remembered screen
    (`ScreenMemory`, looked for as the pipeline does) holding it in any frame. The
    `antispoof` model is reported apart: tracks with a frame below the liveness threshold."""
    from facelens.api import Engine

    engine = Engine(settings)
    tracker = IouTracker()
    best: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    sampled: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    seen_count: dict[int, int] = {}
    follower, memory = RegionFollower(), ScreenMemory()
    held: dict[int, str] = {}
    for tick, frame in enumerate(frames):
        faces, _ = engine.detect_rgb(frame.rgb)
        seen = tracker.update(faces, tick)[0]
        follower.observe(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY),
                         [(t.id, t.box) for t in seen])
        if seen:
            memory.observe(frame.time, frame.rgb)
        for track in seen:
            if track.id not in held and (name := memory.holding(track.face.box, frame.time)):
                held[track.id] = name
            quality = track.face.quality.score if track.face.quality else 0.0
            n = seen_count[track.id] = seen_count.get(track.id, 0) + 1
            if track.id not in best or quality > best[track.id][0]:
                best[track.id] = (quality, frame.rgb, track.face.box.copy())
            if n % 4 == 1 and len(sampled.setdefault(track.id, [])) < 4:
                sampled[track.id].append((frame.rgb, track.face.box.copy()))
    tracks = [k for k, n in seen_count.items() if n >= 3]
    per_cue: dict[str, dict[int, str]] = {cue: {} for cue in CUES}
    per_cue["rigid"] = {k: "moving frame" for k in tracks if follower.regions[k].rigid}
    per_cue["remembered screen"] = {k: held[k] for k in tracks if k in held}
    lowest_realness = {}
    for k in tracks:
        shots = [best[k][1:], *sampled[k]]
        for rgb, box in shots:
            for cue, check in CUES.items():
                if k not in per_cue[cue] and (found := check(rgb, box, None, 0.0)):
                    per_cue[cue][k] = found
        lowest_realness[k] = min(float(_antispoof.score(rgb, [box])[0]) for rgb, box in shots)
    fused = set().union(*per_cue.values())
    return {"tracks": len(tracks), "flagged": len(fused),
            "flagged_by": {cue: len(found) for cue, found in per_cue.items()}
            | {"antispoof (not fused)": sum(r < REALNESS_MIN for r in lowest_realness.values())},
            "flagged_as": sorted({v for found in per_cue.values() for v in found.values()}),
            "lowest_realness": round(min(lowest_realness.values(), default=1.0), 3)}


def watch(settings: Settings, people: dict[str, Path], frames: list[Frame],
          modes: tuple[str, ...] = ("with_cue", "without_cue")) -> dict[str, Any]:
    """The watch pipeline with the cue and without it: normal and flagged alerts."""
    galleries, _ = enrolled_gallery(settings, people)
    out = {}
    for mode in modes:
        depictions = mode == "with_cue"
        watcher = Watcher("eval", galleries, ["watch"], depictions=depictions)
        alerts = [a for f in frames for a in watcher.process(f)]
        alerts += watcher.finish(frames[-1].time)
        out[mode] = {"normal_alerts": sum(a.flagged is None for a in alerts),
                     "flagged": sorted(str(a.flagged) for a in alerts if a.flagged)}
    return out


def run_depiction_eval(settings: Settings, people: dict[str, Path], real: list[Path],
                       shown: Path, backgrounds: list[Path], *, step: int = 3,
                       chromium: bool = True, progress: Progress) -> dict[str, Any]:
    """Real clips: tracks flagged (goal 0) and the watch run with `people` enrolled. Made-up:
    `shown` (and with `chromium`, its recaptures through a browser, eval/recapture.py) on a
    phone and a monitor over each background; alerts must all be flagged. The full-screen
    recaptures are watched as they are too (a screen grab: no bezel, no camera)."""
    report: dict[str, Any] = {"sampled_every": step, "real": {}, "made_up": {}}
    advance = progress("real clips", len(real))
    for clip in real:
        frames = load(clip, step)
        report["real"][clip.name] = flagged_tracks(settings, frames) | watch(
            settings, people, frames)
        advance(1)
    grabs = [recaptured(shown, recipe) for recipe in RECIPES] if chromium and available() \
        else []
    advance = progress("recaptures", len(grabs) + 2 * len(backgrounds) * (1 + len(grabs)))
    for grab in grabs:
        frames = load(grab, step)
        report["made_up"][f"{grab.name} full-screen"] = \
            flagged_tracks(settings, frames) | watch(settings, people, frames)
        advance(1)
    for source in [shown, *grabs]:
        shown_frames = load(source, step)
        for seed, background in enumerate(backgrounds):
            street = [f.rgb for f in load(background, step)]
            for kind in SCREENS:
                made = recapture([f.rgb for f in shown_frames], street, kind, seed)
                frames = [Frame(f.index, f.time, rgb) for f, rgb in zip(shown_frames, made,
                                                                       strict=True)]
                report["made_up"][f"{source.name} on a {kind} over {background.name}"] = \
                    flagged_tracks(settings, frames) | watch(settings, people, frames)
                advance(1)
    return report


def composite_variants(settings: Settings, people: dict[str, Path], shown: Path,
                       backgrounds: list[Path], screens: dict[str, list[float]],
                       seeds: range, *, step: int = 3, progress: Progress) -> dict[str, Any]:
    """`shown` on every screen kind and width of `screens` (share of the frame's width) over
    each background, posed by each seed: the watch pipeline's alerts with the cues (normal
    ones are depictions missed), and per background their tally, overall and per screen.
    Shows a cue general rather than fitted to one composite."""
    shown_frames = load(shown, step)
    composites: dict[str, dict[str, Any]] = {}
    by_screen: dict[str, dict[str, list[dict[str, Any]]]] = {}
    advance = progress("composites", len(backgrounds) * len(seeds)
                       * sum(len(widths) for widths in screens.values()))
    for background in backgrounds:
        street = [f.rgb for f in load(background, step)]
        for seed in seeds:
            for kind, widths in screens.items():
                for width in widths:
                    made = recapture([f.rgb for f in shown_frames], street, kind, seed, width)
                    frames = [Frame(f.index, f.time, rgb)
                              for f, rgb in zip(shown_frames, made, strict=True)]
                    result = watch(settings, people, frames, ("with_cue",))["with_cue"]
                    composites[f"{kind} {width} over {background.name}, seed {seed}"] = result
                    by_screen.setdefault(background.name, {}).setdefault(
                        f"{kind} {width}", []).append(result)
                    advance(1)
    summary = {name: tally([r for rs in per_screen.values() for r in rs])
               | {"by_screen": {screen: tally(rs) for screen, rs in per_screen.items()}}
               for name, per_screen in by_screen.items()}
    return {"sampled_every": step, "seeds": list(seeds), "screens": screens,
            "summary": summary, "composites": composites}


def tally(results: list[dict[str, Any]]) -> dict[str, int]:
    """Alerts of watch runs with the cues: all, normal (depictions missed), and the runs
    keeping at least one normal alert."""
    return {"composites": len(results),
            "alerts": sum(r["normal_alerts"] + len(r["flagged"]) for r in results),
            "normal_alerts": sum(r["normal_alerts"] for r in results),
            "composites_keeping_a_normal_alert": sum(r["normal_alerts"] > 0 for r in results)}
