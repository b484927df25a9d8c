"""The CLI misused as a demanding user would (subprocesses, a scratch data directory): out of
range options, unwritable outputs, dead streams. Each answer is one line on stderr with exit
2, never a traceback, a silent default or a hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

CLI = Path(sys.executable).with_name("facelens")


def facelens(*args: object, data_dir: Path, timeout: float = 300
             ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FACELENS_DATA_DIR=str(data_dir))
    env.pop("FACELENS_MASTER_KEY", None)
    env.pop("COLUMNS", None)
    run = subprocess.run([str(CLI), *map(str, args)], cwd=data_dir.parent, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {run.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of grey frames: enough to start every video command."""
    path = tmp_path_factory.mktemp("clip") / "grey.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("target", ["folder", "notes.txt"])
def test_an_unwritable_annotated_video_is_one_line_before_any_frame(clip: Path, tmp_path: Path,
                                                                    target: str) -> None:
    (tmp_path / "folder").mkdir()
    run = facelens("watch-street", clip, "--no-faces", "--out", tmp_path / target,
                   data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert "cannot write the annotated video" in one_line_error(run)
    assert not (tmp_path / "notes.txt").exists()


OUT_OF_RANGE = [
    (["verify", "{photo}", "{photo}", "--far", "2"], "--far"),
    (["identify", "G", "{photo}", "--far", "5"], "--far"),
    (["identify", "G", "{photo}", "--far", "0"], "--far"),
    (["identify", "G", "{photo}", "--top-k", "0"], "--top-k"),
    (["watch", "{clip}", "--gallery", "G", "--far", "1"], "--far"),
    (["watch", "{clip}", "--gallery", "G", "--fps", "0"], "--fps"),
    (["watch", "{clip}", "--gallery", "G", "--cooldown", "-5"], "--cooldown"),
    (["watch", "{clip}", "--gallery", "G", "--camera", "../door"], "--camera"),
    (["watch-street", "{clip}", "--camera", "door/#"], "--camera"),
    (["watch-street", "{clip}", "--fps", "-1"], "--fps"),
    (["gallery", "create", "G", "--purpose", "p", "--retention-days", "-5"],
     "--retention-days"),
    (["enroll", "G", " ", "{photo}", "--recorded-by", "HR"], "name"),
    (["enroll", "G", "Ada", "{photo}", "--recorded-by", "HR", "--consent-days", "0"],
     "--consent-days"),
    (["enroll", "G", "Ada", "{photo}", "--recorded-by", "HR", "--watch-reason", "r",
      "--watch-days", "0"], "--watch-days"),
]


@pytest.mark.parametrize(("args", "option"), OUT_OF_RANGE,
                         ids=[" ".join(a[:1] + a[-2:]) for a, _ in OUT_OF_RANGE])
def test_an_option_out_of_its_range_is_refused_before_any_work(
        args: list[str], option: str, clip: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    """Before: a FAR of 5 was a traceback, of 2 the 1e-2 point; --top-k 0 answered "unknown"
    for an enrolled face; --fps 0 watched every frame; --consent-days 0 meant "never expires";
    a negative retention purged everyone at the next purge; a camera named "../door" or
    "door/#" went into events and MQTT topics; a blank name enrolled a nameless subject."""
    filled = [a.format(photo=fixtures_dir / "obama.jpg", clip=clip) for a in args]
    run = facelens(*filled, data_dir=tmp_path / "data")
    assert run.returncode == 2, run.stdout
    assert f"Invalid value for '{option}'" in run.stderr, run.stderr
    assert not (tmp_path / "data").exists()  # refused while parsing: no store was opened


NO_COUNTS = [
    (["bench", "search", "--n", "0"], "--n"),
    (["bench", "search", "--n", "100", "--queries", "0"], "--queries"),
    (["bench", "--images", "{folder}", "--count", "0"], "--count"),
    (["bench", "street", "{clip}", "--frames", "0"], "--frames"),
    (["eval", "lfw", "{folder}", "--workers", "0"], "--workers"),
    (["eval", "plates", "{folder}", "--limit", "0"], "--limit"),
]


@pytest.mark.parametrize(("args", "option"), NO_COUNTS,
                         ids=[" ".join(a[:2] + a[-2:-1]) for a, _ in NO_COUNTS])
def test_a_count_below_one_is_refused_while_parsing(args: list[str], option: str, clip: Path,
                                                     tmp_path: Path) -> None:
    """Before: bench search --n 0, --queries 0 and bench --count 0 were tracebacks."""
    filled = [a.format(folder=tmp_path, clip=clip) for a in args]
    run = facelens(*filled, data_dir=tmp_path / "data")
    assert run.returncode == 2, run.stdout
    assert f"Invalid value for '{option}'" in run.stderr, run.stderr
UNKNOWN_NAMES = [
    (["verify", "{photo}", "{photo}", "--embedder", "facenet"], "--embedder"),
    (["objects", "{photo}", "--region", "fr"], "--region"),
    (["watch-street", "{clip}", "--region", "fr"], "--region"),
    (["eval", "plates", "{folder}", "--region", "fr"], "--region"),
]


@pytest.mark.parametrize(("args", "option"), UNKNOWN_NAMES,
                         ids=[" ".join(a[:1] + a[-2:]) for a, _ in UNKNOWN_NAMES])
def test_an_unknown_name_is_refused_with_the_choices(
        args: list[str], option: str, clip: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    """Before: an unknown embedder was exit 3 ("no calibrated thresholds", as for a missing
    model file); an unknown plate region was read as "any", silently."""
    filled = [a.format(photo=fixtures_dir / "obama.jpg", clip=clip, folder=tmp_path)
              for a in args]
    run = facelens(*filled, data_dir=tmp_path / "data")
    assert run.returncode == 2, run.stdout
    assert f"Invalid value for '{option}'" in run.stderr, run.stderr


def test_the_choices_are_the_library_s_names() -> None:
    from typing import get_args

    from facelens.cli.faces import EmbedderName
    from facelens.cli.scene import PlateRegion
    from facelens.scene.plates import FORMATS
    from facelens.settings import Embedder

    assert [e.value for e in EmbedderName] == list(get_args(Embedder))
    assert [r.value for r in PlateRegion] == list(FORMATS)


def test_keys_create_names_every_scope() -> None:
    """The help lists the scopes by hand (importing the service's key table costs the CLI
    ~0.8 s at start): it left out payment."""
    from typer.testing import CliRunner

    from facelens.cli import app
    from facelens.service.keys import SCOPES

    shown = " ".join(CliRunner().invoke(app, ["keys", "create", "--help"]).output.split())
    assert f"Repeat for several scopes: {', '.join(SCOPES)}." in shown.replace("│ ", "")


def test_watch_street_json_is_one_line_per_alert_and_the_counts_on_stderr(
        shared_data: Path, tmp_path: Path) -> None:
    """Before: each alert was pretty-printed over many lines and the summary followed on
    stdout, so no JSON or JSON Lines reader could parse it."""
    run = facelens("watch-street", shared_data / "street" / "bgslibrary_video02.avi",
                   "--fps", "2", "--rule", "car", "--no-faces", "--json",
                   data_dir=tmp_path / "data")
    assert run.returncode == 0, run.stderr
    alerts = [json.loads(line) for line in run.stdout.splitlines()]
    assert alerts and {a["matched"] for a in alerts} == {"rule:car"}
    summary = json.loads(run.stderr[run.stderr.index("{"):])
    assert summary["frames"] > 0 and summary["tracks_per_class"]["car"] > 0


def test_ctrl_c_ends_watch_street_with_its_counts_and_a_playable_video(
        shared_data: Path, tmp_path: Path) -> None:
    """Ctrl-C is how a live stream's watch ends. Before: exit 130 and no counts at all."""
    out = tmp_path / "annotated.mp4"
    env = dict(os.environ, FACELENS_DATA_DIR=str(tmp_path / "data"))
    watching = subprocess.Popen(
        [str(CLI), "watch-street", shared_data / "street" / "intel_one-by-one-person-detection.mp4",
         "--no-faces", "--out", out], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.2)  # frames are being written: the loop runs
    watching.send_signal(signal.SIGINT)
    stdout, stderr = watching.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert watching.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and 0 < summary["frames"] < 139 * 5
    with av.open(str(out)) as played:
        assert sum(1 for _ in played.decode(video=0)) > 0


@pytest.mark.parametrize("reconnects", [[], ["--reconnects", "1"]], ids=["default", "one"])
def test_a_dead_stream_is_given_up_with_exit_2(reconnects: list[str], tmp_path: Path) -> None:
    """Nothing listens on port 1. Before: reconnected for ever, a warning every 10 s."""
    started = time.monotonic()
    run = facelens("watch-street", "rtsp://127.0.0.1:1/x", "--no-faces", *reconnects,
                   data_dir=tmp_path / "data", timeout=120)
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rtsp://127.0.0.1:1/x: gave up after"), run.stderr
    assert time.monotonic() - started < 60


def test_enroll_folder_names_a_missing_folder(tmp_path: Path, fixtures_dir: Path) -> None:
    """Before: "has no sub-folders (one per person)" for a path that does not exist."""
    for folder in (tmp_path / "absent", fixtures_dir / "obama.jpg"):
        run = facelens("enroll-folder", "G", folder, "--recorded-by", "HR",
                       data_dir=tmp_path / "data")
        assert run.returncode == 2
        assert one_line_error(run) == f"error: {folder} is not a folder"


def test_serve_on_a_taken_port_is_exit_2_not_model_missing(tmp_path: Path) -> None:
    """Before: uvicorn's exit 3, this CLI's "a model file is missing"; --port 0 served on the
    default port."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run = facelens("serve", "--port", port, data_dir=tmp_path / "data", timeout=60)
    assert run.returncode == 2
    assert one_line_error(run).startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    run = facelens("serve", "--port", 0, data_dir=tmp_path / "data", timeout=60)
    assert run.returncode == 2 and "Invalid value for '--port'" in run.stderr


UNWRITABLE_REPORTS = [
    ["eval", "plates", "{folder}", "--json-out", "{target}"],
    ["eval", "lfw", "{folder}", "--plot", "{target}"],
    ["eval", "lfw", "{folder}", "--save-to", "{target}"],
    ["calibrate", "{folder}", "--save-to", "{target}"],
    ["bench", "street", "{clip}", "--json-out", "{target}"],
    ["detect", "{photo}", "--draw", "{target}"],
    ["analyze", "{photo}", "--draw", "{target}"],
]


@pytest.mark.parametrize("args", UNWRITABLE_REPORTS, ids=[" ".join(a[:2] + a[-2:-1])
                                                          for a in UNWRITABLE_REPORTS])
def test_an_unwritable_report_is_refused_before_the_evaluation(
        args: list[str], clip: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    """Before: the evaluation ran (minutes, for eval lfw) and ended in a traceback; so did
    detect --draw."""
    (tmp_path / "a file").write_text("not a folder")
    filled = [a.format(folder=tmp_path, clip=clip, photo=fixtures_dir / "obama.jpg",
                       target=tmp_path / "a file" / "out.png") for a in args]
    run = facelens(*filled, data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert f"Invalid value for '{args[-2]}': cannot write" in run.stderr, run.stderr


def test_enroll_says_what_it_did_in_words(fixtures_dir: Path, tmp_path: Path) -> None:
    """Before: a Python dict's repr ({'subject_id': …, 'skipped': [...]})."""
    data_dir = tmp_path / "data"
    assert facelens("gallery", "create", "G", "--purpose", "door",
                    data_dir=data_dir).returncode == 0
    Image.new("RGB", (200, 200), (120, 130, 140)).save(tmp_path / "grey.png")
    run = facelens("enroll", "G", "Ada", fixtures_dir / "obama.jpg", tmp_path / "grey.png",
                   "--recorded-by", "HR", data_dir=data_dir)
    assert run.returncode == 0, run.stderr
    enrolled, skipped = run.stdout.splitlines()
    assert enrolled.startswith("enrolled Ada: subject ") and enrolled.endswith(", 1 template(s)")
    assert skipped == f"  skipped {tmp_path / 'grey.png'}: no face found"


def test_names_and_paths_are_printed_as_they_are_not_as_markup(fixtures_dir: Path,
                                                              tmp_path: Path) -> None:
    """A name is anyone's text (REST enrolment too). Before: a subject named "[/x]" made
    identify and gallery show tracebacks, and a photo named "[red]a.jpg" was shown as a.jpg."""
    data_dir = tmp_path / "data"
    assert facelens("gallery", "create", "G", "--purpose", "[/door]",
                    data_dir=data_dir).returncode == 0
    assert facelens("enroll", "G", "[/x]", fixtures_dir / "obama.jpg", "--recorded-by", "HR",
                    data_dir=data_dir).returncode == 0
    named = facelens("identify", "G", fixtures_dir / "obama2.jpg", data_dir=data_dir)
    assert named.returncode == 0 and ": [/x] (high" in named.stdout, named.stdout
    for listing in (("gallery", "show", "G"), ("gallery", "list")):
        shown = facelens(*listing, data_dir=data_dir)
        assert shown.returncode == 0 and ("[/x]" in shown.stdout or "[/door]" in shown.stdout)
    photo = tmp_path / "[red]a.jpg"
    photo.write_bytes((fixtures_dir / "obama.jpg").read_bytes())
    detected = facelens("detect", photo.name, "--draw", "[red]drawn.png", data_dir=data_dir)
    assert detected.returncode == 0 and "[red]a.jpg: 1 face(s)" in detected.stdout
    assert "drawn: [red]drawn.png" in detected.stderr
