"""Street pipeline speed: how many 720p streams one machine's cores keep up with at 5
detection fps, with tracking, attributes and plates (vehicles only), with and without motion
gating; and the face pipeline alone against the face pipeline with the street layer beside it.

Each clip's frames are sampled at `fps`, scaled to 1280×720 and decoded before timing (a
camera decodes in its own thread); then `SceneWatch.process` runs over them on one thread
and the process CPU time per frame is taken. Streams per machine = cores × 1000 /
(fps × CPU ms per frame): every model session runs on one thread, so streams scale by cores.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2

from facelens.eval.watch_eval import enrolled_gallery
from facelens.gallery.service import Galleries
from facelens.settings import Settings
from facelens.video.scene_watch import SceneWatch
from facelens.video.source import Frame, VideoSource
from facelens.video.watch import Watcher
from facelens.vision.decode import ImageSource

WIDTH, HEIGHT = 1280, 720


def frames_720p(clip: Path, fps: float, most: int) -> list[Frame]:
    out = []
    for frame in VideoSource(str(clip), fps=fps).frames():
        out.append(Frame(frame.index, frame.time, cv2.resize(frame.rgb, (WIDTH, HEIGHT),
                                                             interpolation=cv2.INTER_LINEAR)))
        if len(out) >= most:
            break
    return out


def bench_scene(clips: list[Path], *, side: int | None, fps: float = 5.0, most: int = 60,
                cores: int | None = None) -> dict[str, Any]:
    """CPU ms per frame and streams per machine, gated and ungated, per clip and overall, with
    the detector's input `side` (settings.street_detect_side)."""
    cores = cores or len(os.sched_getaffinity(0))
    rows, totals = [], {True: [0.0, 0], False: [0.0, 0]}
    for clip in clips:
        frames = frames_720p(clip, fps, most)
        row: dict[str, Any] = {"clip": clip.name, "frames": len(frames)}
        for gate in (False, True):
            scene = SceneWatch(camera=clip.stem, gate=gate, detect_side=side)
            if frames:
                scene.process(frames[0])  # models opened and warmed outside the timing
            scene = SceneWatch(camera=clip.stem, gate=gate, detect_side=side)
            cpu = time.process_time()
            for frame in frames:
                scene.process(frame)
            spent = (time.process_time() - cpu) * 1000
            key = "gated" if gate else "ungated"
            row[f"{key}_cpu_ms_per_frame"] = round(spent / max(len(frames), 1), 1)
            row[f"{key}_detected_frames"] = scene.detected
            totals[gate][0] += spent
            totals[gate][1] += len(frames)
        rows.append(row)
    out: dict[str, Any] = {"fps": fps, "cores": cores, "size": f"{WIDTH}x{HEIGHT}",
                           "detect_side": side, "clips": rows}
    for gate, (spent, count) in totals.items():
        key = "gated" if gate else "ungated"
        per_frame = spent / max(count, 1)
        out[f"{key}_cpu_ms_per_frame"] = round(per_frame, 1)
        out[f"{key}_streams"] = round(cores * 1000 / (fps * max(per_frame, 1e-6)), 2)
    return out


def _face_run(galleries: Galleries, frames: list[Frame], *, beside: bool) -> dict[str, Any]:
    """One pass as a camera makes it (video/camera.py): `beside`, the street layer on each
    frame, then the face Watcher on it in the same thread (taking the screens the street
    layer found). CPU time of each part; the face results that must not change."""
    watcher = Watcher("bench", galleries, ["watch"])
    scene = SceneWatch("bench", engine=galleries.engine,
                       detect_side=galleries.engine.settings.street_detect_side) if beside else None
    face_s = scene_s = 0.0
    alerts = []
    for frame in frames:
        if scene is not None:
            start = time.process_time()
            scene.process(frame)
            scene_s += time.process_time() - start
        start = time.process_time()
        alerts += watcher.process(frame, scene.latest if scene is not None else None)
        face_s += time.process_time() - start
    alerts += watcher.finish(frames[-1].time)
    stats = watcher.stats
    return {"face_s": face_s, "scene_s": scene_s, "result": {
        "detections": stats.detections, "embeddings": stats.embeddings, "tracks": stats.tracks,
        "alerts": sorted((a.name, a.track_id, a.flagged or "") for a in alerts),
        "named_tracks": sorted(watcher.named.items())}}


def _median_ms(runs: list[dict[str, Any]], part: str, frames: int) -> float:
    """The median over runs of `part`'s CPU seconds, in ms per frame."""
    return round(statistics.median(r[part] for r in runs) * 1000 / frames, 1)


def bench_beside(settings: Settings, clips: list[Path], people: Mapping[str, ImageSource], *,
                 fps: float = 5.0, rounds: int = 2) -> dict[str, Any]:
    """Per clip, on the same decoded frames at `fps` (the clip's own size), face only and face
    + street layer alternated `rounds` times (ABAB: load that comes and goes hits both): face
    CPU ms per frame of each (median over rounds) and their ratio, street CPU ms per frame,
    and whether every run's face results are the same (detections, embeddings, tracks,
    alerts, who each track is named as)."""
    galleries, _ = enrolled_gallery(settings, people)
    rows = []
    for clip in clips:
        frames = list(VideoSource(str(clip), fps=fps).frames())
        _face_run(galleries, frames[:3], beside=True)  # models opened outside the timing
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(rounds):
            for beside in (False, True):
                runs[beside].append(_face_run(galleries, frames, beside=beside))
        alone = _median_ms(runs[False], "face_s", len(frames))
        with_scene = _median_ms(runs[True], "face_s", len(frames))
        scene_ms = _median_ms(runs[True], "scene_s", len(frames))
        results = [r["result"] for r in runs[False] + runs[True]]
        rows.append({
            "clip": clip.name, "frames": len(frames),
            "size": f"{frames[0].rgb.shape[1]}x{frames[0].rgb.shape[0]}",
            "face_cpu_ms_per_frame_alone": alone,
            "face_cpu_ms_per_frame_beside_scene": with_scene,
            "face_beside_over_alone": round(with_scene / max(alone, 1e-6), 3),
            "face_rounds_ms_per_frame": {
                key: [round(r["face_s"] * 1000 / len(frames), 1) for r in runs[beside]]
                for key, beside in (("alone", False), ("beside_scene", True))},
            "scene_cpu_ms_per_frame": scene_ms,
            "both_cpu_ms_per_frame": round(with_scene + scene_ms, 1),
            "face_results_equal": all(r == results[0] for r in results),
            "face_results": results[0]})
    return {"fps": fps, "rounds": rounds, "enrolled": sorted(people), "clips": rows}
