"""Liveness on the shared close-up clips annotated by eye (data/liveness_shared.json).

- Deliberate actions: each annotated turn and eye closure, with a little context, through
  the judge's own face follower and action finder: found or missed; and the same finder on
  stretches free of that action (false).
- Whole 3-action sessions: every blink/turn_left/turn_right triple of one clip taken in the
  order the person did them, the span from the first to the last (started at rest: before any
  head motion the first action falls in), sampled as the API samples an answer, judged whole
  (continuity, identity, passive cues, actions): BPCER with its Wilson 95% interval.
- Continuity: every shared clip and the Hamilton clip in 3-second windows sampled at 5–30
  fps, and as a high-resolution webcam would send them (1080p VP8 / VP9, uneven timestamps,
  dropped frames) through the API's decoder: a refusal for continuity is a false reject.
- Replayed recordings against server-chosen prompt timing: how often the genuine sessions
  above, replayed unedited, happen to fit a session's random prompts.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from importlib import resources
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from facelens.api import Engine
from facelens.face import Face
from facelens.liveness.answer import MAX_FRAMES, video_frames
from facelens.liveness.judge import (
    REACTION_S,
    FaceFollower,
    eye_and_yaw,
    find_actions,
    judge,
    off_schedule,
)
from facelens.liveness.sessions import prompt_times
from facelens.video.source import evenly_spaced

Progress = Callable[[str, int], Callable[[int], None]]
SAMPLING_FPS = (5, 10, 15, 30)
WINDOW_S = 3.0
PAD_S = 0.4
"""Context kept around an annotated segment."""
EYE_EVENTS = ("blink", "wink", "closed")
CONTINUITY = ("jumped", "differ in shape")
"""Judge reasons that refuse an answer as not one continuous take."""
SCHEDULES = 2000


def annotations() -> dict[str, Any]:
    text = resources.files("facelens.data").joinpath("liveness_shared.json").read_text()
    return dict(json.loads(text))


def load(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a clip (RGB) and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], fps


def wilson(errors: int, total: int) -> list[float] | None:
    """The Wilson score 95% interval of errors/total."""
    if total == 0:
        return None
    z, p = 1.96, errors / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _kind(action: str) -> str:
    return "blink" if action in EYE_EVENTS else action


class Measured:
    """One pass over a clip: the faces detected in every frame, and the eye aspect ratio and
    yaw of the face the judge's follower keeps (liveness/judge.py's own code)."""

    def __init__(self, engine: Engine, frames: list[np.ndarray]) -> None:
        follower = FaceFollower()
        self.faces: list[list[Face]] = []
        ear, yaw = [], []
        for rgb in frames:
            faces, _ = engine.detect_rgb(rgb, quality=False)
            self.faces.append(faces)
            face = follower.pick(faces, rgb.shape[1])
            eye, turn = eye_and_yaw(rgb, face) if face is not None else (np.nan, np.nan)
            ear.append(eye)
            yaw.append(turn)
        self.width = frames[0].shape[1]
        self.ear, self.yaw = np.array(ear, np.float32), np.array(yaw, np.float32)


def detection(clips: dict[str, tuple[list[np.ndarray], float]], measured: dict[str, Measured],
              notes: dict[str, Any]) -> dict[str, Any]:
    """Found / missed per annotated action (by grade), and false actions where none was."""
    tally: dict[str, Counter[str]] = {}
    turns = {part: Counter[str]() for part in ("chosen_on", "held_out")}
    false: dict[str, dict[str, Any]] = {}
    for name, (frames, fps) in clips.items():
        clip = notes["clips"][name]
        ear, yaw = measured[name].ear, measured[name].yaw
        pad = round(PAD_S * fps)
        for event in clip["events"]:
            kind = _kind(event["action"])
            if kind == "tilt":
                continue
            part = slice(max(0, event["start"] - pad), event["end"] + pad + 1)
            found = find_actions(ear[part], yaw[part], [kind])[kind] is not None
            for counts in (tally.setdefault(f"{kind} ({event['grade']})", Counter()),
                           *([turns[_turn_set(notes, name)]] if kind != "blink" else [])):
                counts["annotated"] += 1
                counts["found" if found else "missed"] += 1
        for kind in ("turn_left", "turn_right", "blink"):
            if kind == "blink" and not clip["eyes_annotated"]:
                continue
            busy = np.zeros(len(frames), bool)
            spans = [(e["start"], e["end"]) for e in clip["events"]
                     if _kind(e["action"]) == kind] + [tuple(u) for u in clip["unclear"]]
            for start, end in spans:
                busy[max(0, start - pad):end + pad + 1] = True
            width = round(WINDOW_S * fps)
            starts = [s for s in range(0, len(frames) - width + 1, width)
                      if not busy[s:s + width].any()]
            seen = false.setdefault(kind, {"windows": 0, "false": 0, "where": []})
            for s in starts:
                seen["windows"] += 1
                if find_actions(ear[s:s + width], yaw[s:s + width], [kind])[kind] is not None:
                    seen["false"] += 1
                    seen["where"].append(f"{name} frames {s}-{s + width - 1}")
    rates = {k: {**c, "rate": round(c["found"] / c["annotated"], 4)} for k, c in tally.items()}
    every = turns["chosen_on"] + turns["held_out"]
    return {"per_action": rates,
            "deliberate_turns": {
                "what": "every annotated turn, clear and slight", **_found(every),
                "turn_rule_chosen_on": notes["turn_rule_chosen_on"],
                **{part: _found(counts) for part, counts in turns.items()}},
            "false_in_windows_without_it": false,
            "window_s": WINDOW_S}


def _turn_set(notes: dict[str, Any], clip: str) -> str:
    return "chosen_on" if clip in notes["turn_rule_chosen_on"] else "held_out"


def _found(counts: Counter[str]) -> dict[str, Any]:
    found, annotated = counts["found"], counts["annotated"]
    return {"annotated": annotated, "found": found, "missed": counts["missed"],
            "rate": round(found / max(annotated, 1), 4), "interval_95": wilson(found, annotated)}


def _triples(clip: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every (blink, turn_left, turn_right) set of one clip's events, in the order done;
    events that overlap have no order (a wink during a turn) and are not combined."""
    events = []
    for e in clip["events"]:
        kind = _kind(e["action"])
        if kind in ("blink", "turn_left", "turn_right"):
            at = e.get("yaw_passes_at")
            events.append({**e, "kind": kind,
                           "at": at if at is not None else (e["start"] + e["end"]) // 2})
    triples = []
    for chosen in combinations(sorted(events, key=lambda e: e["at"]), 3):
        apart = all(a["end"] < b["start"] for a, b in pairwise(chosen))
        if apart and {e["kind"] for e in chosen} == {"blink", "turn_left", "turn_right"}:
            triples.append(list(chosen))
    return triples


def at_rest(clip: dict[str, Any], frame: int, pad: int) -> int:
    """`frame`, or the start (less `pad`) of the annotated head motion it falls in: a session
    starts with the head at rest, as an answer does before its first prompt (a wink done
    during a turn would otherwise start a session mid-turn)."""
    moved = True
    while moved:
        moved = False
        for e in clip["events"]:
            if e["action"] in ("turn_left", "turn_right", "tilt") and \
                    e["start"] - pad < frame <= e["end"] + pad:
                frame, moved = e["start"] - pad, True
    return max(0, frame)


def sessions(engine: Engine, clips: dict[str, tuple[list[np.ndarray], float]],
             notes: dict[str, Any], progress: Progress, rng: random.Random
             ) -> dict[str, Any]:
    """Whole 3-action sessions composed from each clip's annotated segments in real order."""
    made = [(name, t) for name in clips if notes["clips"][name]["eyes_annotated"]
            for t in _triples(notes["clips"][name])]
    advance = progress("3-action sessions", len(made))
    results, replays = [], []
    for name, triple in made:
        frames, fps = clips[name]
        pad = round(PAD_S * fps)
        first = at_rest(notes["clips"][name], triple[0]["start"] - pad, pad)
        last = triple[-1]["end"] + pad + 1
        indices = evenly_spaced(list(range(first, min(last, len(frames)))), MAX_FRAMES)
        verdict = judge(engine, [frames[i] for i in indices], [e["kind"] for e in triple])
        grade = "clear" if all(e["grade"] == "clear" for e in triple) else "slight"
        results.append({"clip": name, "frames": [first, last - 1], "grade": grade,
                        "challenge": [e["kind"] for e in triple], "passed": verdict.passed,
                        "reasons": verdict.reasons})
        if verdict.passed:  # a genuine recording an attacker could replay unedited
            times = [(i - first) / fps for i in indices]
            fits = sum(not off_schedule(verdict.performed, times, prompt_times(3, rng))
                       for _ in range(SCHEDULES))
            replays.append(fits / SCHEDULES)
        advance(1)
    summary = {}
    for label, chosen in (
            ("all", results),
            ("clear_turns_only", [r for r in results if r["grade"] == "clear"]),
            ("held_out", [r for r in results if _turn_set(notes, r["clip"]) == "held_out"])):
        rejected = sum(not r["passed"] for r in chosen)
        summary[label] = {"sessions": len(chosen), "rejected": rejected,
                          "bpcer": round(rejected / max(len(chosen), 1), 4),
                          "interval_95": wilson(rejected, len(chosen)),
                          "clips": sorted({r["clip"] for r in chosen})}
    return {"what": "every blink (or wink), turn_left, turn_right triple of one clip's annotated "
                    "segments, in the order the person did them, started at rest; the span "
                    f"sampled to at most {MAX_FRAMES} frames as the API samples an answer; the "
                    "whole judge",
            **summary, "sessions": results,
            "replayed_recordings_vs_prompt_timing": {
                "what": "each passed session replayed unedited against random server-chosen "
                        f"prompt times ({SCHEDULES} draws each): the share it still fits",
                "recordings": len(replays),
                "mean_fit": round(float(np.mean(replays)), 4) if replays else None,
                "max_fit": round(float(np.max(replays)), 4) if replays else None,
                "best_recording_for_an_attacker_who_knows_the_draw": best_recording_fit(rng)}}


def best_recording_fit(rng: random.Random) -> dict[str, Any]:
    """The recording an attacker who knows how prompts are drawn would make: the action times
    (on a 0.25 s grid) that fit the most random sessions, and that share."""
    prompts = np.array([prompt_times(3, rng) for _ in range(SCHEDULES)])
    low, high = REACTION_S

    def fits(t: float, column: int) -> np.ndarray:
        return (t >= prompts[:, column] + low) & (t <= prompts[:, column] + high)

    best = (0.0, (0.0, 0.0, 0.0))
    grid = np.arange(0.5, 8.0, 0.25)
    for first in grid[grid <= 5.0]:
        one = fits(first, 0)
        for second in first + grid[grid >= 2.0]:
            two = one & fits(second, 1)
            for third in second + grid[grid >= 2.0]:
                share = float((two & fits(third, 2)).mean())
                if share > best[0]:
                    best = (share, (first, second, third))
    return {"fit": round(best[0], 4), "action_times_s": [round(t, 2) for t in best[1]]}


def _jumps(faces: list[list[Face]], width: int) -> tuple[int, int]:
    """(jumps, frames with the face) of the judge's follower over detections."""
    follower = FaceFollower()
    present = sum(follower.pick(f, width) is not None for f in faces)
    return follower.jumps, present


def continuity(clips: dict[str, tuple[list[np.ndarray], float]],
               measured: dict[str, Measured]) -> dict[str, Any]:
    """The judge's continuity check (its face follower) on 3-second windows of every clip
    sampled at 5-30 fps, over the detections of each frame."""
    per_clip: dict[str, dict[str, Any]] = {}
    for name, (_, fps) in clips.items():
        rows = per_clip[name] = {}
        faces = measured[name].faces
        for target in SAMPLING_FPS:
            step = max(1, round(fps / target))
            width = max(5, round(WINDOW_S * fps / step))
            sampled = faces[::step]
            windows = [sampled[s:s + width] for s in range(0, len(sampled) - width + 1, width)]
            results = [_jumps(w, measured[name].width) for w in windows]
            rows[f"{fps / step:.1f}fps"] = {
                "windows": len(windows), "continuity_refused": sum(j > 0 for j, _ in results),
                "face_in_under_80pct": sum(p < 0.8 * len(w) for (_, p), w in
                                           zip(results, windows, strict=True))}
    refused = sum(r["continuity_refused"] for c in per_clip.values() for r in c.values())
    windows = sum(r["windows"] for c in per_clip.values() for r in c.values())
    return {"what": "the judge's face follower (liveness/judge.py) over every frame's "
                    f"detections, {WINDOW_S:.0f}-second windows at each sampling rate",
            "windows": windows, "continuity_refused": refused, "per_clip": per_clip}


def webcam_like(frames: list[np.ndarray], fps: float, codec: str, rng: random.Random) -> bytes:
    """`frames` as a 1080p webcam recording in WebM: letterboxed to 1920x1080, uneven
    timestamps (±30%), 10% of frames dropped at random and one burst of 5."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as out:
        stream = out.add_stream(codec, rate=1000)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "b": "4M"}
        burst = rng.randrange(max(1, len(frames) - 5))
        clock = 0.0
        for index, rgb in enumerate(frames):
            clock += rng.uniform(0.7, 1.3) / fps
            if rng.random() < 0.1 or burst <= index < burst + 5:
                continue
            scale = min(1920 / rgb.shape[1], 1080 / rgb.shape[0])
            shown = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
            canvas = np.zeros((1080, 1920, 3), np.uint8)
            top, left = (1080 - shown.shape[0]) // 2, (1920 - shown.shape[1]) // 2
            canvas[top:top + shown.shape[0], left:left + shown.shape[1]] = shown
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = round(clock * 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


def webcam(engine: Engine, clips: dict[str, tuple[list[np.ndarray], float]],
           progress: Progress, rng: random.Random) -> dict[str, Any]:
    """The first WINDOW_S+1 seconds of each clip sent as a 1080p VP8 and VP9 webcam answer,
    decoded by the API's decoder, checked by the judge's follower."""
    rows: dict[str, dict[str, Any]] = {}
    advance = progress("1080p VP8/VP9 answers", len(clips))
    for name, (frames, fps) in clips.items():
        part = frames[:round((WINDOW_S + 1) * fps)]
        for codec in ("libvpx", "libvpx-vp9"):
            shown = video_frames(webcam_like(part, fps, codec, rng), limit_pixels=1920 * 1080)
            jumps, present = _jumps([engine.detect_rgb(f, quality=False)[0] for f in shown],
                                    1920)
            rows[f"{name} {codec}"] = {"frames": len(shown), "continuity_refused": jumps > 0,
                                       "face_in": present}
        advance(1)
    return {"what": "1920x1080 WebM, uneven timestamps, 10% dropped frames and a burst of 5, "
                    "decoded by the API's answer decoder (liveness/answer.py)",
            "answers": len(rows),
            "continuity_refused": sum(r["continuity_refused"] for r in rows.values()),
            "per_answer": rows}


def run_real(engine: Engine, shared_root: Path, hamilton: Path | None, progress: Progress,
             seed: int = 0) -> dict[str, Any]:
    """Everything above on the shared clips (and the Hamilton clip for continuity)."""
    notes = annotations()
    clips = {name: load(shared_root / name) for name in notes["clips"]
             if (shared_root / name).is_file()}
    if not clips:
        return {"skipped": f"no annotated clips under {shared_root}"}
    rng = random.Random(seed)
    everything = dict(clips)
    if hamilton is not None and hamilton.is_file():
        everything[hamilton.name] = load(hamilton)
    advance = progress("detect and measure every frame", len(everything))
    measured = {}
    for name, (frames, _) in everything.items():
        measured[name] = Measured(engine, frames)
        advance(1)
    return {"annotation": notes["method"], "clips": sorted(clips),
            "detection": detection(clips, measured, notes),
            "continuity": continuity(everything, measured),
            "sessions": sessions(engine, clips, notes, progress, rng),
            "webcam": webcam(engine, everything, progress, rng)}
