"""The `facelens` command as users run it (a subprocess): exit codes, one-line errors on stderr
and never a traceback, JSON output, and the --draw picture."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

CLI = Path(sys.executable).with_name("facelens")


def facelens(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # As in a pipe or a CI log: no terminal width to inherit.
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    run = subprocess.run([str(CLI), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {run.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --- verify (needs src/facelens/data/operating_points.json) -----------------------------------


def test_verify_same_person_exits_0(repo_root: Path, fixtures_dir: Path) -> None:
    run = facelens("verify", fixtures_dir / "obama.jpg", fixtures_dir / "obama2.jpg",
                   cwd=repo_root)
    assert run.returncode == 0, run.stderr
    assert "MATCH" in run.stdout and "NO MATCH" not in run.stdout


def test_verify_different_people_exits_1(repo_root: Path, fixtures_dir: Path) -> None:
    run = facelens("verify", fixtures_dir / "obama.jpg", fixtures_dir / "biden.jpg",
                   cwd=repo_root)
    assert run.returncode == 1, run.stderr
    assert "NO MATCH" in run.stdout


def test_verify_json_names_the_operating_point(repo_root: Path, fixtures_dir: Path) -> None:
    run = facelens("verify", fixtures_dir / "obama.jpg", fixtures_dir / "biden.jpg",
                   "--far", "1e-4", "--json", cwd=repo_root)
    assert run.returncode == 1, run.stderr
    verdict = json.loads(run.stdout)
    assert verdict["match"] is False
    assert verdict["far"] == pytest.approx(1e-4)
    assert f"{verdict['embedder']} @ FAR 1e-04" in verdict["operating_point"]
    assert len(verdict["faces"]) == 2


# --- detect / analyze -------------------------------------------------------------------------


def test_detect_on_a_flat_grey_image_exits_1(repo_root: Path, tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    grey.write_bytes(png_bytes(Image.new("RGB", (400, 300), (128, 128, 128))))
    run = facelens("detect", grey, "--json", cwd=repo_root)
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["faces"] == []


def test_detect_json_and_draw(repo_root: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "drawn" / "out.png"
    image = fixtures_dir / "two_people.jpg"
    run = facelens("detect", image, "--draw", target, "--json", cwd=repo_root)
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)  # stdout is pure JSON; the "drawn:" note goes to stderr
    assert len(payload["faces"]) == 2
    for face in payload["faces"]:
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
        assert face["quality"]["score"] > 0
    with Image.open(target) as drawn, Image.open(image) as original:
        assert drawn.format == "PNG"
        assert drawn.size == original.size


def test_analyze_json_includes_attributes(repo_root: Path, fixtures_dir: Path) -> None:
    run = facelens("analyze", fixtures_dir / "two_people.jpg", "--json", cwd=repo_root)
    assert run.returncode == 0, run.stderr
    faces = json.loads(run.stdout)["faces"]
    assert len(faces) == 2
    for face in faces:
        attrs = face["attributes"]
        assert set(attrs) == {"age", "age_error", "sex", "sex_confidence"}
        assert attrs["sex"] in ("female", "male")
        assert 0 < attrs["age"] < 100


# --- bad input: exit 2, one line on stderr ----------------------------------------------------


def _huge_png() -> bytes:
    """A valid small PNG whose IHDR (CRC recomputed) claims 60000x60000."""
    data = bytearray(png_bytes(Image.new("RGB", (8, 8))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 60000, 60000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _bad_input(kind: str, tmp_path: Path, fixtures_dir: Path) -> Path:
    if kind == "text":
        path = tmp_path / "photo.jpg"
        path.write_text("this is not an image, only some text\n" * 20)
    elif kind == "truncated":
        path = tmp_path / "cut.jpg"
        data = (fixtures_dir / "obama.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif kind == "huge":
        path = tmp_path / "bomb.png"
        path.write_bytes(_huge_png())
    elif kind == "missing":
        path = tmp_path / "no-such-photo.jpg"
    elif kind == "brackets":  # Rich markup in a file name must be shown, not interpreted
        path = tmp_path / "odd[/b]name[bold].jpg"
    elif kind == "line break":  # named, yet the error stays one line
        path = tmp_path / "two\nlines.jpg"
        path.write_text("this is not an image either\n")
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("text", "not an image"),
    ("truncated", "truncated or corrupt"),
    ("empty", "empty file"),
    ("huge", "over the 40 MP limit"),
    ("missing", "no such file"),
    ("brackets", "no such file"),
    ("line break", "not an image"),
])
def test_bad_input_exits_2_with_one_line(repo_root: Path, fixtures_dir: Path, tmp_path: Path,
                                         kind: str, reason: str) -> None:
    path = _bad_input(kind, tmp_path, fixtures_dir)
    start = time.perf_counter()
    run = facelens("detect", path, cwd=repo_root)
    assert time.perf_counter() - start < 30
    assert run.returncode == 2, (run.returncode, run.stderr)
    line = one_line_error(run)
    assert reason in line
    # A script's log must show which input was bad: its name verbatim, control characters
    # escaped.
    assert str(path).replace("\n", "\\n") in line, line
    if kind in ("missing", "brackets"):
        assert line.endswith(str(path)), line
    assert run.stdout == ""


def test_verify_names_its_bad_image(repo_root: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    bad = _bad_input("text", tmp_path, fixtures_dir)
    run = facelens("verify", fixtures_dir / "obama.jpg", bad, cwd=repo_root)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert one_line_error(run) == f"error: {bad}: not an image (or an unsupported format)"


# --- a fast start --------------------------------------------------------------------------------

HEAVY = ("onnx", "onnxruntime", "openvino", "cv2", "dlib", "ai_edge_litert", "mediapipe",
         "fastapi", "starlette", "uvicorn", "av", "sqlalchemy")
"""Model runtimes, the web framework, the video library and the database: none is needed to
print help or the model cards."""


@pytest.mark.parametrize("argv", [None, ["--help"], ["models", "--json"]])
def test_help_and_model_cards_load_no_runtime_web_or_video_library(
        repo_root: Path, argv: list[str] | None) -> None:
    """`import facelens.cli`, then (if given) a command run in the same process: which of
    HEAVY ended up in sys.modules."""
    script = ("import json, sys\nimport facelens.cli\n"
              f"argv = {argv!r}\n"
              "if argv:\n"
              "    try:\n"
              "        facelens.cli.app(argv, prog_name='facelens')\n"
              "    except SystemExit as e:\n"
              "        assert not e.code, e.code\n"
              f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stderr.strip().splitlines()[-1]) == []


def test_models_names_the_calibration_in_force(repo_root: Path, tmp_path: Path) -> None:
    """The package's calibration until one is saved in the data directory, then that one,
    with the accuracy measured beside it on the model cards."""
    from facelens.matching.calibration import calibration_file
    from facelens.models.runtime import runtime_label
    from facelens.settings import Settings

    env = dict(os.environ, FACELENS_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run([str(CLI), "models", "--json"], cwd=repo_root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    name = calibration_file(runtime_label(Settings().runtime))
    assert f"calibration: package:{name} (lfw-dev" in run.stderr
    saved = tmp_path / "data" / "calibration"
    saved.mkdir(parents=True)
    (saved / name).write_text(json.dumps({"source": "my own faces", "embedders": {}}))
    (saved / "measured.json").write_text(json.dumps({"models": {"sface": "TAR 0.5 here"}}))
    run = subprocess.run([str(CLI), "models"], cwd=repo_root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"calibration: {saved / name} (my own faces)" in " ".join(run.stdout.split())
    assert "TAR 0.5 here" in run.stdout
