"""Real actions as challenge answers: the registry footage's blinks and turns, annotated by eye
(data/liveness_footage.json), each judged by the whole judge as the answer to a one-action
challenge, and blink-free stretches judged against "blink" (a false blink there is what lets a
replayed recording answer).

Nobody in the footage was asked to act: these are natural blinks and turns. A blink window is
the annotated frame ± half a WINDOW (about a second); blink-free windows keep CLEAR frames
from every annotated blink and unclear span. Actions annotated after the thresholds were fixed
(a clip's `held_out_from` on) are also counted apart, as a held-out check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from facelens.api import Engine
from facelens.eval import footage
from facelens.liveness.judge import judge
from facelens.video.source import VideoSource

Progress = Callable[[str, int], Callable[[int], None]]
WINDOW = 25
CLEAR = 15
HELD_OUT = ("actions from each clip's `held_out_from` frame on, annotated after the blink and "
            "turn thresholds were fixed on the frames before it")


def _windows(clip: dict[str, Any]) -> tuple[list[tuple[str, int]], list[int]]:
    """([(action, centre frame)], [blink-free window starts]) of one annotated clip; no
    blink-free windows where its blinks were not annotated (no "blinks" key)."""
    blinks = clip.get("blinks")
    actions = [("blink", b) for b in blinks or ()]
    actions += [(action, t) for action, at in clip["turns"].items() for t in at]
    if blinks is None:
        return actions, []
    first, last = clip["annotated_frames"]
    busy = np.zeros(last, bool)
    for b in blinks:
        busy[max(0, b - CLEAR):b + CLEAR + 1] = True
    for start, end in clip["unclear"]:
        busy[max(0, start - CLEAR):end + CLEAR + 1] = True
    free = [s for s in range(first, last - WINDOW + 1, WINDOW) if not busy[s:s + WINDOW].any()]
    return actions, free


def _tally() -> dict[str, Any]:
    return {"annotated": 0, "found": 0, "passed_whole_judge": 0, "refused_for": Counter[str]()}


def real_actions(engine: Engine, progress: Progress, clips: list[str],
                 videos: Sequence[Path] = ()) -> dict[str, Any]:
    """The whole judge on each annotated action of the fetched `clips` (and of those `videos`
    annotated under `other_clips`), and on their blink-free windows against "blink"."""
    notes = footage.annotations()
    sources = [(name, footage.clip_path(name), notes["clips"][name]) for name in clips]
    sources += [(v.stem, v, notes["other_clips"][v.stem]) for v in videos
                if v.stem in notes["other_clips"]]
    by_action: dict[str, dict[str, Any]] = {}
    by_set: dict[str, dict[str, Any]] = {
        name: {"actions": {}, "blink_free_windows": 0, "false_blinks": 0}
        for name in ("rest", "held_out")}
    per_clip: dict[str, dict[str, int]] = {}
    for name, path, clip in sources:
        actions, free = _windows(clip)
        source = VideoSource(str(path)).frames()
        frames = [f.rgb for f in islice(source, clip["annotated_frames"][1] + WINDOW)]
        advance = progress(f"{name}: real actions", len(actions) + len(free))
        counts = per_clip[name] = {"actions": 0, "found": 0, "blink_free_windows": 0,
                                   "false_blinks": 0}
        held_out_from = clip.get("held_out_from", clip["annotated_frames"][1])
        for action, at in actions:
            start = max(0, at - WINDOW // 2)
            verdict = judge(engine, frames[start:start + WINDOW], [action])
            found = verdict.performed[action] is not None
            for tally in (by_action.setdefault(action, _tally()),
                          by_set[_set(at, held_out_from)]["actions"].setdefault(action,
                                                                                 _tally())):
                tally["annotated"] += 1
                tally["found"] += found
                tally["passed_whole_judge"] += verdict.passed
                tally["refused_for"].update(verdict.reasons)
            counts["actions"] += 1
            counts["found"] += found
            advance(1)
        for start in free:
            verdict = judge(engine, frames[start:start + WINDOW], ["blink"])
            for tally in (counts, by_set[_set(start, held_out_from)]):
                tally["blink_free_windows"] += 1
                tally["false_blinks"] += verdict.performed["blink"] is not None
            advance(1)
    return {
        "annotation": notes["annotation"],
        "window_frames": WINDOW,
        "by_action": by_action,
        "per_clip": per_clip,
        "blink_free": {"windows": sum(c["blink_free_windows"] for c in per_clip.values()),
                       "blink_found": sum(c["false_blinks"] for c in per_clip.values())},
        "blink_bpcer": _bpcer(by_action),
        "held_out": {"what": HELD_OUT, **_summary(by_set["held_out"])},
        "not_held_out": _summary(by_set["rest"]),
    }


def _set(frame: int, held_out_from: int) -> str:
    return "held_out" if frame >= held_out_from else "rest"


def _bpcer(by_action: dict[str, Any]) -> float | None:
    blinks = by_action.get("blink")
    return round(1 - blinks["passed_whole_judge"] / blinks["annotated"], 4) if blinks else None


def _summary(in_set: dict[str, Any]) -> dict[str, Any]:
    actions = in_set["actions"]
    return {"actions": {a: {k: t[k] for k in ("annotated", "found", "passed_whole_judge")}
                        for a, t in actions.items()},
            "blink_bpcer": _bpcer(actions),
            "blink_free_windows": in_set["blink_free_windows"],
            "false_blinks": in_set["false_blinks"]}
