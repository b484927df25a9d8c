"""Liveness on the shared close-up clips annotated by eye: deliberate turns found in order by
the whole judge, continuity that survives dropped frames and a second face but not a cut to
another clip, prompt timing that refuses an unedited recording, and the learned passive model
converted from its npm carrier."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import av
import numpy as np
import pytest

from facelens.api import Engine
from facelens.eval.liveness_real import Measured, annotations, load
from facelens.liveness.judge import find_actions, judge, off_schedule
from facelens.liveness.passive import REALNESS_MIN
from facelens.liveness.sessions import FIRST_PROMPT_S, PROMPT_GAP_S, prompt_times
from facelens.models.antispoof import AntiSpoof


@pytest.fixture(scope="module")
def liveness_dir(shared_data: Path) -> Path:
    folder = shared_data / "liveness"
    if not (folder / "intel_head-pose-female.gif").is_file():
        pytest.skip(f"the shared liveness clips are not at {folder}")
    return folder


def test_the_annotated_turns_of_a_real_clip_answer_a_challenge_in_their_order(
        engine: Engine, liveness_dir: Path) -> None:
    """liveportrait_d12: turned left, then right, then left (annotated by eye), from rest.
    intel_head-pose-female starts turned 42 degrees right: the action finder still sees its
    right then left turn, and the judge refuses it as not starting facing the camera."""
    d12, _ = load(liveness_dir / "liveportrait_d12.mp4")
    events = annotations()["clips"]["liveportrait_d12.mp4"]["events"]
    assert [e["action"] for e in events if e["action"].startswith("turn")][:2] == [
        "turn_left", "turn_right"]
    answer = d12[15:105:2]  # from rest through the left turn (27-56) and the right (75-97)
    done = judge(engine, answer, ["turn_left", "turn_right"])
    assert done.passed, done.reasons
    assert done.performed["turn_left"] < done.performed["turn_right"]
    backwards = judge(engine, answer, ["turn_right", "turn_left"])
    assert not backwards.passed and backwards.performed["turn_left"] is None
    frames, _ = load(liveness_dir / "intel_head-pose-female.gif")
    assert annotations()["clips"]["intel_head-pose-female.gif"]["events"][0]["note"] == \
        "the clip starts turned"
    turned = judge(engine, frames[:19], ["turn_right", "turn_left"])
    assert turned.performed["turn_right"] < turned.performed["turn_left"]
    assert not turned.passed and turned.reasons == [
        "the answer did not start facing the camera (turned 42 degrees)"]


def test_a_slight_turn_from_rest_counts_and_sitting_off_axis_does_not(
        engine: Engine, liveness_dir: Path) -> None:
    """Turns are measured from the answer's starting pose: d3's slight right turn (annotated
    by eye, about 13 degrees) is found; the woman sitting 13-18 degrees off the camera's axis
    (annotated turn-free) turns neither way. The absolute 15-degree rule failed both."""
    notes = annotations()["clips"]
    d3, fps = load(liveness_dir / "liveportrait_d3.mp4")
    (slight,) = [e for e in notes["liveportrait_d3.mp4"]["events"]
                 if e["grade"] == "slight" and e["start"] == 196]
    pad = round(0.4 * fps)
    turning = Measured(engine, d3[slight["start"] - pad:slight["end"] + pad:2])
    assert np.nanmin(turning.yaw) > -15  # the absolute 15-degree rule missed it
    assert find_actions(turning.ear, turning.yaw, ["turn_right"])["turn_right"] is not None
    assert find_actions(turning.ear, turning.yaw, ["turn_left"])["turn_left"] is None
    seated, _ = load(liveness_dir / "intel_head-pose-female-and-male.gif")
    assert not [e for e in notes["intel_head-pose-female-and-male.gif"]["events"]
                if e["action"].startswith("turn")]
    off_axis = Measured(engine, seated)
    assert np.nanmedian(off_axis.yaw) > 10
    assert find_actions(off_axis.ear, off_axis.yaw, ["turn_left"])["turn_left"] is None
    assert find_actions(off_axis.ear, off_axis.yaw, ["turn_right"])["turn_right"] is None


def test_continuity_survives_dropped_frames_and_flicker_but_not_a_cut(
        engine: Engine, liveness_dir: Path) -> None:
    d12, _ = load(liveness_dir / "liveportrait_d12.mp4")
    # 5 fps sampling of 25 fps footage with its fastest head motion, frames missing at random
    rng = random.Random(0)
    sparse = [f for f in d12[20:120:5] if rng.random() > 0.15]
    flicker = [*sparse[:6], np.zeros_like(sparse[0]), *sparse[6:]]  # a frame with no face
    verdict = judge(engine, flicker, ["blink"])
    assert not any("jumped" in r or "shape" in r for r in verdict.reasons), verdict.reasons
    # the same person, cut to half the size in a corner: a slideshow, not one take
    moved = [np.zeros_like(f) for f in d12[15:30]]
    for small, big in zip(moved, d12[15:30], strict=True):
        small[:256, :256] = big[::2, ::2]
    cut = judge(engine, d12[:15] + moved, ["blink"])
    assert any("jumped" in r for r in cut.reasons), cut.reasons


def test_prompt_timing_refuses_a_recording_made_before_the_session() -> None:
    rng = random.Random(1)
    prompts = prompt_times(3, rng)
    assert FIRST_PROMPT_S[0] <= prompts[0] <= FIRST_PROMPT_S[1]
    gaps = np.diff(prompts)
    assert ((gaps >= PROMPT_GAP_S[0] - 0.05) & (gaps <= PROMPT_GAP_S[1] + 0.05)).all()
    times = [i / 10 for i in range(200)]  # 20 s at 10 fps
    on_time = {"blink": round((prompts[0] + 0.8) * 10), "turn_left": round((prompts[1] + 1) * 10),
               "turn_right": round((prompts[2] + 1.5) * 10)}
    assert off_schedule(on_time, times, prompts) == []
    recorded = {"blink": 10, "turn_left": 30, "turn_right": 50}  # done at 1, 3 and 5 s
    fits = sum(not off_schedule(recorded, times, prompt_times(3, rng)) for _ in range(500))
    assert fits < 25  # under 5% of sessions
    assert off_schedule({"blink": 10}, times, [5.0]) == ["blink at 1.0 s (prompted at 5.0 s)"]


def test_the_npm_antispoof_model_converts_and_passes_real_faces(
        engine: Engine, liveness_dir: Path) -> None:
    frames, _ = load(liveness_dir / "liveportrait_d0.mp4")
    faces, _ = engine.detect_rgb(frames[0], quality=False)
    score = AntiSpoof().score(frames[0], [faces[0].box])
    assert score.shape == (1,) and REALNESS_MIN < float(score[0]) < 1.0
    grey = np.full_like(frames[0], 128)
    assert float(AntiSpoof().score(grey, [faces[0].box])[0]) != pytest.approx(float(score[0]))


def test_a_chromium_recapture_of_real_turns_is_refused_only_by_prompt_timing(
        engine: Engine, liveness_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """d12's first 4 s played full-screen in chromium and grabbed back (another size, frame
    rate and codec) still show its left then right turn from rest: no passive cue is shown to
    stop it. Prompt times the recording could not know refuse it; the times it happens to fit
    do not."""
    from facelens.eval import recapture

    if not recapture.available():
        pytest.skip("chromium or playwright is not installed")
    monkeypatch.setenv("FACELENS_MODEL_CACHE", str(tmp_path))
    recipe = dataclasses.replace(recapture.RECIPES[0], seconds=4.2)
    path = recapture.recaptured(liveness_dir / "liveportrait_d12.mp4", recipe)
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time or 0.0))
    assert frames[0].shape[:2] == (recipe.viewport[1], recipe.viewport[0])
    ahead = [i for i, t in enumerate(times) if t <= 4.0][::3]  # both turns (1.1-3.9 s)
    shown, at = [frames[i] for i in ahead], [times[i] for i in ahead]
    asked = ["turn_left", "turn_right"]
    replayed = judge(engine, shown, asked)
    assert replayed.passed, replayed.reasons
    left, right = (at[replayed.performed[a]] - at[0] for a in asked)
    assert judge(engine, shown, asked, times=at, prompts=[left - 1.0, right - 1.0]).passed
    late = judge(engine, shown, asked, times=at, prompts=[2.0, 6.0])
    assert not late.passed and any("when prompted" in r for r in late.reasons)
