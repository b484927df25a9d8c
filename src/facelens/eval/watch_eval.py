"""`facelens eval watch VIDEO --enrol NAME=PHOTO …`: the camera pipeline against identifying
every face in every frame (the baseline), on the same detections.

Reports the alerts, embeddings per face detection, identity recall of both (faces the
baseline names, and how many of those the pipeline's tracks carry the same identity for),
who else either named, and processing speed against the video's own duration. The pipeline
runs twice at the same FPIR: with track templates (the default) and with the single best shot,
and each run's per-track identity recall is reported.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facelens.gallery.service import ConsentRecord, Galleries
from facelens.geometry import iou
from facelens.settings import Settings
from facelens.video.source import Frame, VideoSource
from facelens.video.watch import Watcher
from facelens.vision.decode import ImageSource, load_image

Progress = Any


def enrolled_gallery(settings: Settings, people: Mapping[str, ImageSource]
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

    step = max(1, round(1 / (interval * fps))) if fps else 1
    truth = baseline[::step]
    runs = {mode: _pipeline(galleries, frames, step, truth, template=mode == "template",
                            progress=progress)
            for mode in ("template", "best_shot")}
    run = runs["template"]
    alerts, watcher = run.pop("alerts_raw"), run.pop("watcher")
    runs["best_shot"].pop("watcher")
    best_shot_alerts = runs["best_shot"].pop("alerts_raw")
    named_faces = sum(subject is not None for faces in truth for _, subject in faces)
    baseline_people = Counter(names[s] for faces in truth for _, s in faces if s is not None)
    alerted = Counter(a.name for a in alerts if not a.flagged)
    return {
        "video": str(video), "frames": len(frames), "duration_s": round(duration, 2),
        "sampled_every": step, "enrolled": sorted(people),
        "alerts": [a.payload() for a in alerts],
        "alerts_per_person": dict(alerted),
        "named_not_enrolled": sorted(set(alerted) - set(people)),
        "detections": watcher.stats.detections, "embeddings": watcher.stats.embeddings,
        "embeddings_per_detection": run["embeddings_per_detection"],
        "tracks": watcher.stats.tracks,
        "identity_recall": {
            "baseline_named_faces": named_faces,
            "baseline_people": dict(baseline_people),
            "baseline": 1.0 if named_faces else None,
            "pipeline": run["face_recall"],
            "people_alerted_of_baseline": f"{len(set(alerted) & set(baseline_people))}/"
                                          f"{len(baseline_people)}",
        },
        "template_vs_best_shot": {mode: {k: v for k, v in r.items() if k != "speed_s"}
                                  for mode, r in runs.items()}
        | {"best_shot_alerts": [a.payload() for a in best_shot_alerts]},
        "speed": {"pipeline_s": run["speed_s"], "baseline_s": round(baseline_s, 2),
                  "pipeline_x_realtime": round(duration / run["speed_s"], 2),
                  "baseline_x_realtime": round(duration / baseline_s, 2)},
    }


def _pipeline(galleries: Galleries, frames: list[Frame], step: int,
              truth: list[list[tuple[np.ndarray, str | None]]], *, template: bool,
              progress: Progress) -> dict[str, Any]:
    """One run of the camera pipeline (track templates, or the single best shot), scored
    against the baseline's names: per face, and per track (a track the baseline names is the
    subject most of its named faces got; recalled when the pipeline names the same)."""
    label = "pipeline, track templates" if template else "pipeline, single best shot"
    advance = progress(label, len(frames))
    watcher = Watcher("eval", galleries, ["watch"], template=template)
    per_frame: list[list[tuple[int, np.ndarray]]] = []
    alerts = []
    start = time.perf_counter()
    for frame in frames[::step]:
        alerts.extend(watcher.process(frame))
        per_frame.append(list(watcher.frame_tracks))
        advance(step)
    alerts.extend(watcher.finish(frames[-1].time))
    took = time.perf_counter() - start

    named_faces = agreed = 0
    votes: dict[int, Counter[str]] = {}
    for tracks, faces in zip(per_frame, truth, strict=True):
        for box, subject in faces:
            if subject is None:
                continue
            named_faces += 1
            if not tracks:
                continue
            overlap = iou(box[None], np.stack([b for _, b in tracks]))[0]
            best = int(np.argmax(overlap))
            if overlap[best] > 0.5:
                track_id = tracks[best][0]
                votes.setdefault(track_id, Counter())[subject] += 1
                agreed += watcher.named.get(track_id) == subject
    recalled = sum(watcher.named.get(t) == v.most_common(1)[0][0] for t, v in votes.items())
    otherwise = sum(t in watcher.named and watcher.named[t] != v.most_common(1)[0][0]
                    for t, v in votes.items())
    unvoted = sum(t not in votes for t in watcher.named)
    return {"watcher": watcher, "alerts_raw": alerts,
            "alerts": sum(not a.flagged for a in alerts),
            "alert_margins": [a.margin for a in alerts if not a.flagged],
            "embeddings_per_detection": round(watcher.stats.embeddings
                                              / max(watcher.stats.detections, 1), 4),
            "face_recall": round(agreed / named_faces, 4) if named_faces else None,
            "baseline_named_tracks": len(votes),
            "track_recall": round(recalled / len(votes), 4) if votes else None,
            "tracks_named_otherwise": otherwise,
            "tracks_named_baseline_never_named": unvoted,
            "speed_s": round(took, 2)}


TRACK_TRUTH = "watch_tracks.json"
"""Who each face in the shared clips is, annotated by eye (src/facelens/data; its "method")."""
MODES = ("template", "best_shot")


def load_track_truth(file: Path | None = None) -> dict[str, Any]:
    """The annotation `file`, or the one shipped in the package."""
    text = (Path(file).read_text() if file is not None
            else resources.files("facelens.data").joinpath(TRACK_TRUTH).read_text())
    return dict(json.loads(text))


def enrolment_still(data: Path, source: dict[str, Any]) -> np.ndarray:
    """An enrolment picture: a photo, or frame `frame` of a clip (one outside the frames the
    evaluation watches)."""
    path = data / source["file"]
    if "frame" not in source:
        return load_image(path)
    for frame in VideoSource(str(path)).frames():
        if frame.index == source["frame"]:
            return frame.rgb
    raise ValueError(f"{path} has no frame {source['frame']}")


def face_truth(clip: dict[str, Any], index: int, box: np.ndarray, width: int) -> str | None:
    """Who the annotation says the face at `box` in frame `index` is: the person of that shot
    whose horizontal band holds the box centre (and whose "min_w", a fraction of the frame
    width, the box reaches: smaller boxes there are spurious); None for anyone not enrolled."""
    centre = float(box[0] + box[2]) / 2 / width
    size = float(box[2] - box[0]) / width
    for shot in clip["shots"]:
        if shot["frames"][0] <= index <= shot["frames"][1]:
            for person in shot["people"]:
                if person["x"][0] <= centre < person["x"][1] and size >= person.get("min_w", 0):
                    return str(person["name"])
    return None


def run_track_eval(settings: Settings, data: Path, truth: dict[str, Any], *,
                   fps: float | None = None, progress: Progress) -> dict[str, Any]:
    """Per-track identity against annotated identities, track templates vs the single best
    shot at the same FPIR, on every clip of `truth` (paths relative to `data`)."""
    stills = {name: enrolment_still(data, source) for name, source in truth["enrol"].items()}
    galleries, _ = enrolled_gallery(settings, stills)
    totals: dict[str, Counter[str]] = {mode: Counter() for mode in MODES}
    clips = []
    for clip in truth["clips"]:
        frames = list(VideoSource(str(data / clip["file"])).frames())
        first, last = clip.get("frames", [0, len(frames) - 1])
        interval = frames[-1].time / max(len(frames) - 1, 1)
        step = max(1, round(1 / (interval * fps))) if fps else 1
        watched = frames[first:last + 1:step]
        row: dict[str, Any] = {"clip": clip["file"], "frames": [first, last],
                               "sampled_every": step}
        for mode in MODES:
            counts = _track_run(galleries, clip, watched, template=mode == "template",
                                progress=progress)
            row[mode] = _rates(counts)
            totals[mode].update(counts)
        clips.append(row)
    return {"method": truth["method"], "enrolled": sorted(stills), "far": 1e-3,
            "clips": clips, "total": {mode: _rates(c) for mode, c in totals.items()}}


def _track_run(galleries: Galleries, clip: dict[str, Any], frames: list[Frame], *,
               template: bool, progress: Progress) -> Counter[str]:
    """One pipeline run over `frames`; each track's identity is the annotation most of its
    faces carry, and its decision the alert it raised (no cool-down, so every track that
    decides alerts). Tracks shorter than the pipeline's minimum observations never decide
    and are not counted."""
    advance = progress(f"{Path(clip['file']).name}: "
                       f"{'track templates' if template else 'single best shot'}", len(frames))
    watcher = Watcher("eval", galleries, ["watch"], template=template, cooldown_s=0.0)
    votes: dict[int, Counter[str | None]] = {}
    alerts = []
    for frame in frames:
        alerts.extend(watcher.process(frame))
        width = frame.rgb.shape[1]
        for track_id, box in watcher.frame_tracks:
            votes.setdefault(track_id, Counter())[face_truth(clip, frame.index, box,
                                                             width)] += 1
        advance(1)
    alerts.extend(watcher.finish(frames[-1].time))
    named = {a.track_id: a.name for a in alerts}
    counts: Counter[str] = Counter(detections=watcher.stats.detections,
                                   embeddings=watcher.stats.embeddings,
                                   flagged=sum(a.flagged is not None for a in alerts))
    for track_id, vote in votes.items():
        if sum(vote.values()) < watcher.min_observations:
            continue
        who, decision = vote.most_common(1)[0][0], named.get(track_id)
        if who is None:
            counts["unenrolled_tracks"] += 1
            counts["unenrolled_named"] += decision is not None
        else:
            counts["enrolled_tracks"] += 1
            counts["recalled"] += decision == who
            counts["named_wrong"] += decision not in (None, who)
    return counts


def _rates(counts: Counter[str]) -> dict[str, Any]:
    enrolled, unenrolled = counts["enrolled_tracks"], counts["unenrolled_tracks"]
    return dict(counts) | {
        "track_recall": round(counts["recalled"] / enrolled, 4) if enrolled else None,
        "embeddings_per_detection": round(counts["embeddings"]
                                          / max(counts["detections"], 1), 4),
        "unenrolled_named_rate": round(counts["unenrolled_named"] / unenrolled, 4)
        if unenrolled else None}
