"""`facelens eval watch VIDEO --enrol NAME=PHOTO …`: the camera pipeline against identifying
every face in every frame (the baseline), on the same detections.

Reports the alerts, embeddings per face detection, identity recall of both (faces the
baseline names, and how many of those the pipeline's tracks carry the same identity for),
who else either named, and processing speed against the video's own duration.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from facelens.gallery.service import ConsentRecord, Galleries
from facelens.geometry import iou
from facelens.settings import Settings
from facelens.video.source import VideoSource
from facelens.video.watch import Watcher

Progress = Any


def enrolled_gallery(settings: Settings, people: dict[str, Path]
                     ) -> tuple[Galleries, dict[str, str]]:
    """A throwaway watchlist gallery of `people` under `settings` but in a data directory of
    its own; returns it and subject id -> name."""
    scratch = settings.model_copy(update={"data_dir": Path(tempfile.mkdtemp()),
                                          "database_url": None, "milvus_uri": None})
    galleries = Galleries(scratch)
    galleries.create_gallery("watch", "watchlist-eval")
    names = {}
    for name, photo in people.items():
        report = galleries.enroll("watch", name, [photo],
                                  consent=ConsentRecord("evaluation", "consent", "eval"),
                                  watch_reason="evaluation",
                                  watch_expires=datetime.now(UTC) + timedelta(days=1))
        names[report.subject_id] = name
    return galleries, names


def run_watch_eval(settings: Settings, video: Path, people: dict[str, Path], *,
                   fps: float | None = None, progress: Progress) -> dict[str, Any]:
    """The camera pipeline and the every-frame baseline on `video`, engine under `settings`."""
    galleries, names = enrolled_gallery(settings, people)
    frames = list(VideoSource(str(video)).frames())
    interval = frames[-1].time / max(len(frames) - 1, 1)
    duration = frames[-1].time + interval  # the last frame lasts one interval too

    advance = progress("every-frame baseline", len(frames))
    baseline: list[list[tuple[np.ndarray, str | None]]] = []
    start = time.perf_counter()
    for frame in frames:
        found = galleries.identify("watch", frame.rgb)
        baseline.append([(r.face.box, r.candidates[0].subject_id if r.candidates else None)
                         for r in found])
        advance(1)
    baseline_s = time.perf_counter() - start

    advance = progress("pipeline", len(frames))
    watcher = Watcher("eval", galleries, ["watch"])
    per_frame: list[list[tuple[int, np.ndarray]]] = []
    alerts = []
    step = max(1, round(1 / (interval * fps))) if fps else 1
    start = time.perf_counter()
    for frame in frames[::step]:
        alerts.extend(watcher.process(frame))
        per_frame.append(list(watcher.frame_tracks))
        advance(step)
    alerts.extend(watcher.finish(frames[-1].time))
    pipeline_s = time.perf_counter() - start

    named_by_baseline = agreed = 0
    baseline_people: Counter[str] = Counter()
    for tracks, truth in zip(per_frame, baseline[::step], strict=True):
        for box, subject in truth:
            if subject is None:
                continue
            named_by_baseline += 1
            baseline_people[names[subject]] += 1
            if tracks:
                overlap = iou(box[None], np.stack([b for _, b in tracks]))[0]
                best = int(np.argmax(overlap))
                if overlap[best] > 0.5 and watcher.named.get(tracks[best][0]) == subject:
                    agreed += 1
    alerted = Counter(a.name for a in alerts if not a.flagged)
    return {
        "video": str(video), "frames": len(frames), "duration_s": round(duration, 2),
        "sampled_every": step, "enrolled": sorted(people),
        "alerts": [a.payload() for a in alerts],
        "alerts_per_person": dict(alerted),
        "named_not_enrolled": sorted(set(alerted) - set(people)),
        "detections": watcher.stats.detections, "embeddings": watcher.stats.embeddings,
        "embeddings_per_detection": round(watcher.stats.embeddings
                                          / max(watcher.stats.detections, 1), 4),
        "tracks": watcher.stats.tracks,
        "identity_recall": {
            "baseline_named_faces": named_by_baseline,
            "baseline_people": dict(baseline_people),
            "baseline": 1.0 if named_by_baseline else None,
            "pipeline": round(agreed / named_by_baseline, 4) if named_by_baseline else None,
            "people_alerted_of_baseline": f"{len(set(alerted) & set(baseline_people))}/"
                                          f"{len(baseline_people)}",
        },
        "speed": {"pipeline_s": round(pipeline_s, 2), "baseline_s": round(baseline_s, 2),
                  "pipeline_x_realtime": round(duration / pipeline_s, 2),
                  "baseline_x_realtime": round(duration / baseline_s, 2)},
    }
