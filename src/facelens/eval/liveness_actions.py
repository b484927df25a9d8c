"""Real actions as challenge answers: the registry footage's blinks and turns, annotated by eye
(data/liveness_footage.json), each judged by the whole judge as the answer to a one-action
challenge, and blink-free stretches judged against "blink" (a false blink there is what lets a
replayed recording answer).

Nobody in the footage was asked to act: these are natural blinks and turns. A blink window is
the annotated frame ± half a WINDOW (about a second); blink-free windows keep CLEAR frames
from every annotated blink and unclear span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import islice
from typing import Any

import numpy as np

from facelens.eval import footage
from facelens.liveness.judge import judge
from facelens.video.source import VideoSource

Progress = Callable[[str, int], Callable[[int], None]]
WINDOW = 25
CLEAR = 15


def _windows(clip: dict[str, Any]) -> tuple[list[tuple[str, int]], list[int]]:
    """([(action, centre frame)], [blink-free window starts]) of one annotated clip."""
    actions = [("blink", b) for b in clip["blinks"]]
    actions += [(action, t) for action, at in clip["turns"].items() for t in at]
    first, last = clip["annotated_frames"]
    busy = np.zeros(last, bool)
    for b in clip["blinks"]:
        busy[max(0, b - CLEAR):b + CLEAR + 1] = True
    for start, end in clip["unclear"]:
        busy[max(0, start - CLEAR):end + CLEAR + 1] = True
    free = [s for s in range(first, last - WINDOW + 1, WINDOW) if not busy[s:s + WINDOW].any()]
    return actions, free


def _tally() -> dict[str, Any]:
    return {"annotated": 0, "found": 0, "passed_whole_judge": 0, "refused_for": Counter[str]()}


def real_actions(progress: Progress, clips: list[str]) -> dict[str, Any]:
    """The whole judge on each annotated action of the fetched `clips`, and on their
    blink-free windows against "blink"."""
    notes = footage.annotations()
    by_action: dict[str, dict[str, Any]] = {}
    per_clip: dict[str, dict[str, int]] = {}
    for name in clips:
        clip = notes["clips"][name]
        actions, free = _windows(clip)
        source = VideoSource(str(footage.clip_path(name))).frames()
        frames = [f.rgb for f in islice(source, clip["annotated_frames"][1] + WINDOW)]
        advance = progress(f"{name}: real actions", len(actions) + len(free))
        counts = per_clip[name] = {"actions": 0, "found": 0, "blink_free_windows": 0,
                                   "false_blinks": 0}
        for action, at in actions:
            start = max(0, at - WINDOW // 2)
            verdict = judge(frames[start:start + WINDOW], [action])
            tally = by_action.setdefault(action, _tally())
            found = verdict.performed[action] is not None
            tally["annotated"] += 1
            tally["found"] += found
            tally["passed_whole_judge"] += verdict.passed
            tally["refused_for"].update(verdict.reasons)
            counts["actions"] += 1
            counts["found"] += found
            advance(1)
        for start in free:
            verdict = judge(frames[start:start + WINDOW], ["blink"])
            counts["blink_free_windows"] += 1
            counts["false_blinks"] += verdict.performed["blink"] is not None
            advance(1)
    blinks = by_action.get("blink", _tally())
    return {
        "annotation": notes["annotation"],
        "window_frames": WINDOW,
        "by_action": by_action,
        "per_clip": per_clip,
        "blink_free": {"windows": sum(c["blink_free_windows"] for c in per_clip.values()),
                       "blink_found": sum(c["false_blinks"] for c in per_clip.values())},
        "blink_bpcer": round(1 - blinks["passed_whole_judge"] / max(blinks["annotated"], 1), 4),
    }
