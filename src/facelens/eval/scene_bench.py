"""Street pipeline speed: how many 720p streams one machine's cores keep up with at 5
detection fps, with tracking, attributes and plates (vehicles only), with and without motion
gating.

Each clip's frames are sampled at `fps`, scaled to 1280×720 and decoded before timing (a
camera decodes in its own thread); then `SceneWatch.process` runs over them on one thread
and the process CPU time per frame is taken. Streams per machine = cores × 1000 /
(fps × CPU ms per frame): every model session runs on one thread, so streams scale by cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cv2

from facelens.video.scene_watch import SceneWatch
from facelens.video.source import Frame, VideoSource

WIDTH, HEIGHT = 1280, 720


def frames_720p(clip: Path, fps: float, most: int) -> list[Frame]:
    out = []
    for frame in VideoSource(str(clip), fps=fps).frames():
        out.append(Frame(frame.index, frame.time, cv2.resize(frame.rgb, (WIDTH, HEIGHT),
                                                             interpolation=cv2.INTER_LINEAR)))
        if len(out) >= most:
            break
    return out


def bench_scene(clips: list[Path], *, fps: float = 5.0, most: int = 60,
                cores: int | None = None) -> dict[str, Any]:
    """CPU ms per frame and streams per machine, gated and ungated, per clip and overall."""
    cores = cores or len(os.sched_getaffinity(0))
    rows, totals = [], {True: [0.0, 0], False: [0.0, 0]}
    for clip in clips:
        frames = frames_720p(clip, fps, most)
        row: dict[str, Any] = {"clip": clip.name, "frames": len(frames)}
        for gate in (False, True):
            scene = SceneWatch(camera=clip.stem, gate=gate)
            if frames:
                scene.process(frames[0])  # models opened and warmed outside the timing
            scene = SceneWatch(camera=clip.stem, gate=gate)
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
    out: dict[str, Any] = {"fps": fps, "cores": cores, "size": f"{WIDTH}x{HEIGHT}", "clips": rows}
    for gate, (spent, count) in totals.items():
        key = "gated" if gate else "ungated"
        per_frame = spent / max(count, 1)
        out[f"{key}_cpu_ms_per_frame"] = round(per_frame, 1)
        out[f"{key}_streams"] = round(cores * 1000 / (fps * max(per_frame, 1e-6)), 2)
    return out
