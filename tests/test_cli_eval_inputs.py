"""`facelens eval …` and `facelens calibrate` on bad folders, photos and videos: exit 2,
stderr ending in one line that names what is wrong (after any progress bar), no traceback,
and no features computed for minutes first."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facelens.cli import app


def _people(root: Path, fixtures: Path, photos: dict[str, list[str]]) -> Path:
    """An LFW-layout folder: a sub-folder per person holding copies of fixture photos."""
    for person, names in photos.items():
        (root / person).mkdir(parents=True)
        for i, name in enumerate(names, 1):
            shutil.copy(fixtures / name, root / person / f"{person}_{i:04d}.jpg")
    return root


def _noise(root: Path, _fixtures: Path) -> Path:
    """Two people, two faceless photos each."""
    rng = np.random.default_rng(0)
    for person in ("ann", "bob"):
        (root / person).mkdir(parents=True)
        for i in (1, 2):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), np.uint8)).save(
                root / person / f"{person}_{i:04d}.jpg")
    return root


def _files(files: dict[str, str]) -> Callable[[Path, Path], Path]:
    def make(root: Path, _fixtures: Path) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root
    return make


def _photos(photos: dict[str, list[str]]) -> Callable[[Path, Path], Path]:
    return lambda root, fixtures: _people(root, fixtures, photos)


def _plates_label(text: str) -> Callable[[Path, Path], Path]:
    def make(root: Path, fixtures: Path) -> Path:
        root.mkdir()
        shutil.copy(fixtures / "obama.jpg", root / "a.jpg")
        (root / "a.txt").write_text(text)
        return root
    return make


def _missing(root: Path, _fixtures: Path) -> Path:
    return root


def _a_file(root: Path, _fixtures: Path) -> Path:
    root.write_text("not a folder\n")
    return root


def _empty(root: Path, _fixtures: Path) -> Path:
    root.mkdir()
    return root


LFW = ("eval", "lfw")
CASES = [
    # (command, folder maker, what the message must say)
    (LFW, _missing, "is not a folder"),
    (LFW, _a_file, "is not a folder"),
    (LFW, _empty, "no photos"),
    (LFW, _files({"bob/notes.txt": "hi\n", "readme.md": "hi\n"}), "no photos"),
    (LFW, _files({"bob/bob_0001.jpg": "text\n", "bob/bob_0002.jpg": "text\n",
                  "eve/eve_0001.jpg": "text\n"}),
     "bob_0001.jpg: not an image"),
    (LFW, _photos({"obama": ["obama.jpg", "obama2.jpg"]}), "only 1 person"),
    (LFW, _photos({"obama": ["obama.jpg"]}), "only 1 person"),
    (LFW, _photos({"obama": ["obama.jpg"], "biden": ["biden.jpg"]}), "nobody has 2 photos"),
    (LFW, _noise, "no faces found"),
    (("calibrate", "--dry-run"), _empty, "no photos"),
    (("calibrate", "--dry-run"), _photos({"obama": ["obama.jpg", "obama2.jpg"]}),
     "only 1 person"),
    (("calibrate", "--dry-run"), _a_file, "is not a folder"),
    (("eval", "identify"), _empty, "no photos"),
    (("eval", "identify"), _photos({"obama": ["obama.jpg", "obama2.jpg", "obama.jpg"],
                                    "biden": ["biden.jpg", "biden.jpg"]}),
     "too few people for held-out half"),
    (("eval", "demographics", "--group", "GROUP"), _photos(
        {"obama": ["obama.jpg", "obama2.jpg"], "biden": ["biden.jpg"]}),
     "photos of 0 people in group 'g'"),
    (("eval", "plates"), _empty, "no plate labels"),
    (("eval", "plates"), _plates_label("a.jpg 1 2\n"), "a.txt: not a plate label"),
    (("eval", "plates"), _plates_label("a.jpg x y w h ABC123\n"), "a.txt: not a plate label"),
    (("eval", "plates"), _plates_label("b.jpg 1 2 3 4 ABC123\n"), "its image b.jpg is not"),
    (("eval", "plates"), _missing, "is not a folder"),
    (("eval", "street"), _empty, "labelled clips are not in it"),
    (("eval", "street"), _files({name: "not a video\n" for name in (
        "bgslibrary_video02.avi", "facenet_video.mp4", "intel_car-detection.mp4",
        "intel_one-by-one-person-detection.mp4", "intel_person-bicycle-car-detection.gif")}),
     "bgslibrary_video02.avi: not a video"),
]
FEATURES = {"lfw", "calibrate", "identify", "demographics"}
"""Commands that take --workers and --cache (a per-image feature cache)."""


@pytest.mark.parametrize(("command", "make", "says"), CASES,
                         ids=[f"{' '.join(c[:2])}: {s}" for c, _, s in CASES])
def test_bad_folder_exits_2_with_one_line(tmp_path: Path, fixtures_dir: Path,
                                          command: tuple[str, ...],
                                          make: Callable[[Path, Path], Path], says: str
                                          ) -> None:
    folder = make(tmp_path / "input", fixtures_dir)
    group = tmp_path / "group.txt"
    group.write_text("nobody_here\n")
    args = [f"g={group}" if a == "GROUP" else a for a in command]
    if FEATURES & set(command):
        args += ["--workers", "1", "--cache", str(tmp_path / "cache")]
    _refused_fast([*args, str(folder)], says)


def _refused_fast(args: list[str], says: str, exit_code: int = 2) -> None:
    """`facelens ARGS` exits `exit_code` within 30 s, stderr's last line an error saying
    `says`, no traceback."""
    start = time.perf_counter()
    result = CliRunner().invoke(app, args)
    seconds = time.perf_counter() - start

    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    *progress_bars, last = result.stderr.strip().splitlines()
    assert last.startswith("error: ") and says in last, last
    assert not any("error" in line for line in progress_bars), result.stderr
    assert seconds < 30, f"{seconds:.0f} s before saying the input is bad"


def _clip(path: Path) -> Path:
    """A real (faceless) 2 s video: were the inputs not checked first, the evaluation would
    run on it."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(20):
        writer.write(rng.integers(0, 255, (120, 160, 3), np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize(("photo", "says", "exit_code"), [
    ("missing.jpg", "missing.jpg: no such file", 2),
    ("text.jpg", "text.jpg: not an image", 2),
    ("noise.jpg", "noise.jpg: no face found", 1),  # a readable photo without a face: no face
])
def test_eval_watch_refuses_a_bad_enrolment_photo(tmp_path: Path, photo: str, says: str,
                                                  exit_code: int) -> None:
    (tmp_path / "text.jpg").write_text("not a photo\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)).save(
        tmp_path / "noise.jpg")
    _refused_fast(["eval", "watch", str(_clip(tmp_path / "clip.mp4")),
                   "--enrol", f"ann={tmp_path / photo}"], says, exit_code)


@pytest.mark.parametrize(("make", "says"), [
    (_missing, "is not a folder"),
    (_a_file, "is not a folder"),
    (_files({"bob/notes.txt": "hi\n"}), "no .jpg photos to print attacks from"),
])
def test_eval_liveness_checks_its_photos_before_the_video(
        tmp_path: Path, fixtures_dir: Path, make: Callable[[Path, Path], Path], says: str
) -> None:
    folder = make(tmp_path / "input", fixtures_dir)
    _refused_fast(["eval", "liveness", "--video", str(_clip(tmp_path / "clip.mp4")),
                   "--lfw", str(folder), "--recaptures", "0"], says)


def test_eval_liveness_checks_its_videos_first(tmp_path: Path, fixtures_dir: Path) -> None:
    folder = _photos({"obama": ["obama.jpg"]})(tmp_path / "input", fixtures_dir)
    _refused_fast(["eval", "liveness", "--video", str(_clip(tmp_path / "clip.mp4")),
                   "--video", str(tmp_path / "gone.mp4"), "--lfw", str(folder)],
                  "gone.mp4: no such video file")
