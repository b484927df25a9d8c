"""SFace shift TTA (vision/tta.py, Settings.sface_shift_tta) on real fixture faces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facelens.api import Engine
from facelens.eval.degrade import degrade, level
from facelens.eval.lfw import facelens_features
from facelens.eval.lfw_report import facelens_cached, features_cache_kind
from facelens.settings import Settings
from facelens.vision.align import align_batch
from facelens.vision.detect import detect_faces
from facelens.vision.embed import SFace, embed_faces, mirrored, sface
from facelens.vision.tta import SHIFTS_PX, embed_shifted, shifted_chips


def test_each_faces_first_shifted_chip_is_the_aligned_chip(
        load_rgb: Callable[[str], np.ndarray]) -> None:
    rgb = load_rgb("two_people.jpg")
    landmarks = np.stack([f.landmarks for f in detect_faces(rgb)])
    assert len(landmarks) == 2
    chips = shifted_chips(rgb, landmarks)
    assert chips.shape == (2 * len(SHIFTS_PX), 112, 112, 3)
    aligned = align_batch(rgb, landmarks)
    assert np.array_equal(chips[0], aligned[0])
    assert np.array_equal(chips[len(SHIFTS_PX)], aligned[1])
    # a 2-px shift moves the chip's content by 2 px: column x of the shifted chip is x-2
    right = chips[1].astype(int)
    assert np.abs(right[:, 10:100] - chips[0][:, 8:98].astype(int)).mean() < 2


@pytest.fixture
def sface_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every SFace run from here on (one entry per session run)."""
    runs: list[int] = []
    original = SFace.raw

    def counted(self: SFace, chips: np.ndarray) -> np.ndarray:
        runs.append(len(chips))
        return original(self, chips)

    monkeypatch.setattr(SFace, "raw", counted)
    return runs


def test_passes_the_caller_has_are_not_run_again_and_the_vectors_stay(
        load_rgb: Callable[[str], np.ndarray], sface_passes: list[int]) -> None:
    """Given the (0, 0) chip's plain and mirror vectors, embed_shifted runs only the other
    passes, and averages to the same vectors as when it runs them all."""
    rgb = load_rgb("two_people.jpg")
    landmarks = np.stack([f.landmarks for f in detect_faces(rgb)])
    model = sface(Settings().runtime)
    aligned = align_batch(rgb, landmarks)
    plain, mirror = model.raw(aligned), model.raw(mirrored(aligned))
    sface_passes.clear()
    every = embed_shifted(model.raw, rgb, landmarks)
    faces, shifts = len(landmarks), len(SHIFTS_PX)
    assert sface_passes == [faces * 2 * shifts]
    for known, passes in (({"plain": plain}, 2 * shifts - 1),
                          ({"mirror": mirror}, 2 * shifts - 1),
                          ({"plain": plain, "mirror": mirror}, 2 * shifts - 2)):
        sface_passes.clear()
        reused = embed_shifted(model.raw, rgb, landmarks, **known)
        assert sface_passes == [faces * passes]
        assert np.abs(reused - every).max() < 1e-5
    assert float(every[0] @ every[1]) < 0.5  # two people: the faces were not mixed up


def test_shift_tta_after_the_plain_pass_runs_only_the_rest(
        load_rgb: Callable[[str], np.ndarray], sface_passes: list[int]) -> None:
    """verify's cascade embeds "sface" first, then sface-flip: with the setting on, the
    shifts reuse that plain pass and give the vectors a fresh embedding gives."""
    rgb = load_rgb("obama.jpg")
    runtime = Settings().runtime
    fresh = embed_faces(rgb, detect_faces(rgb), "sface-flip", runtime=runtime,
                        shift_tta=True)
    faces = detect_faces(rgb)
    embed_faces(rgb, faces, "sface", runtime=runtime)
    sface_passes.clear()
    cascaded = embed_faces(rgb, faces, "sface-flip", runtime=runtime, shift_tta=True)
    assert sface_passes == [2 * len(SHIFTS_PX) - 1]
    assert np.abs(cascaded - fresh).max() < 1e-5


def test_shift_tta_only_changes_the_sface_flip_half_a_little(
        load_rgb: Callable[[str], np.ndarray]) -> None:
    rgb = load_rgb("obama.jpg")
    runtime = Settings().runtime
    plain = detect_faces(rgb)
    shifted = detect_faces(rgb)
    base = embed_faces(rgb, plain, "fusion", runtime=runtime, fusion_weight=0.35)
    tta = embed_faces(rgb, shifted, "fusion", runtime=runtime, fusion_weight=0.35,
                      shift_tta=True)
    assert np.allclose(base[:, 128:], tta[:, 128:])  # dlib's half untouched
    cosine = float(base[0, :128] @ tta[0, :128]) / 0.35
    assert 0.97 < cosine < 0.9999  # the same face, not the same vector
    assert np.allclose(np.linalg.norm(tta, axis=1), 1.0, atol=1e-5)
    # plain sface (the verify cascade's first stage) never averages shifts
    assert np.array_equal(embed_faces(rgb, detect_faces(rgb), "sface", runtime=runtime),
                          embed_faces(rgb, detect_faces(rgb), "sface", runtime=runtime,
                                      shift_tta=True))
    direct = embed_shifted(sface(runtime).raw, rgb, np.stack([f.landmarks for f in plain]))
    assert np.allclose(direct, tta[:, :128] / np.sqrt(0.35), atol=1e-5)


def test_the_setting_reaches_the_engine_and_a_cctv_face_still_matches(
        load_rgb: Callable[[str], np.ndarray]) -> None:
    """Obama shrunk so his eyes are ~18 px apart, blurred and compressed (cctv-18), against
    his other portrait and against Biden, with the setting on and off."""
    rgb = load_rgb("obama.jpg")
    eyes = detect_faces(rgb)[0].landmarks
    small = degrade(rgb, level("cctv-18"), interocular_px=float(np.linalg.norm(eyes[0] - eyes[1])))
    scores = {}
    for on in (False, True):
        engine = Engine(Settings(sface_shift_tta=on))
        probe = engine.embed(small, second_chance=True)
        assert len(probe) == 1 and probe[0].embedding is not None
        vectors = [engine.embed(load_rgb(name))[0].embedding
                   for name in ("obama2.jpg", "biden.jpg")]
        scores[on] = [float(probe[0].embedding @ v) for v in vectors if v is not None]
    for genuine, impostor in scores.values():
        assert genuine > impostor + 0.15
    assert scores[True] != scores[False]
    assert np.allclose(scores[True], scores[False], atol=0.05)


def test_eval_features_average_shifts_when_asked_and_cache_apart(
        fixtures_dir: Path, tmp_path: Path, load_rgb: Callable[[str], np.ndarray],
        sface_passes: list[int]) -> None:
    """What `eval lfw` / `eval identify` / `calibrate` measure with the setting on: only
    sface-flip changes, its features are cached apart from the plain ones, and each SFace
    pass runs once (the plain and mirrored ones serve sface, sface-flip and the shifts)."""
    photo, runtime = fixtures_dir / "obama.jpg", Settings().runtime
    plain = facelens_features(photo, runtime=runtime)
    sface_passes.clear()
    tta = facelens_features(photo, runtime=runtime, shift_tta=True)
    assert sum(sface_passes) == 2 * len(SHIFTS_PX)
    rgb = load_rgb("obama.jpg")
    face = detect_faces(rgb, threads=1, second_chance=True)[0]
    every = embed_shifted(sface(runtime).raw, rgb, face.landmarks[None])[0]
    assert np.abs(tta["sface-flip"] - every).max() < 1e-5
    assert np.array_equal(plain["sface"], tta["sface"])
    assert np.array_equal(plain["dlib"], tta["dlib"])
    assert 0.97 < float(plain["sface-flip"] @ tta["sface-flip"]) < 0.9999
    cached = facelens_cached([photo], runtime, tmp_path, 1, None, shift_tta=True)
    assert (tmp_path / f"{features_cache_kind(runtime)}-shift-tta.pkl").is_file()
    assert np.allclose(cached[photo]["sface-flip"], tta["sface-flip"], atol=1e-6)
