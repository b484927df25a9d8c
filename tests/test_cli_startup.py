"""The CLI's start-up and its settings, as users run it (a subprocess): a wrong source is
refused before anything heavy loads, `watch --scene` detects as `watch-street` does, `serve`
and `worker` name NATS without its password and refuse it unreachable in one line, `keys`
needs no Redis, a refused FACELENS_* value is one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelens.gallery.service import Galleries
from facelens.settings import Settings

CLI = Path(sys.executable).with_name("facelens")


def _facelens(*args: object, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                         env=dict(os.environ, FACELENS_DATA_DIR=str(data_dir), **env),
                         timeout=600)
    assert "Traceback" not in run.stderr, run.stderr
    return run


ENGINE = ("facelens.api", "onnxruntime", "cv2", "sqlalchemy")
"""What a video command loads for its work (the face engine, model runtimes, the database):
none of it is needed to refuse a source."""


@pytest.mark.parametrize("command", [["watch-street"], ["watch", "--gallery", "staff"]])
def test_a_missing_source_is_refused_before_the_engine_loads(tmp_path: Path,
                                                             command: list[str]) -> None:
    """watch-street loaded the face engine (and watch the galleries' database) before opening
    its source, so a mistyped path was refused only seconds later."""
    missing = tmp_path / "no-such-clip.mp4"
    script = ("import json, sys\nimport facelens.cli\n"
              "try:\n"
              f"    facelens.cli.app({[command[0], str(missing), *command[1:]]!r}, "
              "prog_name='facelens')\n"
              "except SystemExit as e:\n"
              "    print(e.code, file=sys.stderr)\n"
              f"print(json.dumps([m for m in {ENGINE!r} if m in sys.modules]), file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, FACELENS_DATA_DIR=str(tmp_path / "data")),
                         timeout=120)
    *said, code, loaded = run.stderr.strip().splitlines()
    assert code == "2" and "no-such-clip.mp4" in " ".join(said), run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(loaded) == []


def test_watch_scene_detects_at_the_street_detect_side_as_watch_street(
        tmp_path: Path, shared_data: Path) -> None:
    """With street_detect_side set, `watch --gallery G --scene` counted the street clip's
    vehicles at the detector's default input (84 cars where watch-street counts 64 at 160)."""
    data_dir = tmp_path / "data"
    galleries = Galleries(Settings(data_dir=data_dir))
    galleries.create_gallery("watch", "watchlist-stage")
    galleries.store.close()
    clip = shared_data / "street" / "bgslibrary_video02.avi"
    side = {"FACELENS_STREET_DETECT_SIDE": "160"}
    street = _facelens("watch-street", clip, "--fps", 5, "--no-motion", "--no-faces", "--json",
                       data_dir=data_dir, **side)
    assert street.returncode == 0, street.stderr
    expected = json.loads(street.stderr)["tracks_per_class"]
    assert expected, "nothing counted: the comparison would prove nothing"
    both = _facelens("watch", clip, "--gallery", "watch", "--scene", "--fps", 5,
                     data_dir=data_dir, **side)
    assert both.returncode == 0, both.stderr
    line = next(x for x in both.stderr.splitlines() if x.startswith("street tracks: "))
    counted = {kind: int(n) for kind, n in
               (item.rsplit(" ", 1) for item in line.removeprefix("street tracks: ").split(", "))}
    assert counted == expected


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_keys_are_managed_while_redis_is_down(tmp_path: Path) -> None:
    """API keys live in the database: `keys create/list` failed on an unreachable Redis."""
    down = {"FACELENS_REDIS_URL": f"redis://127.0.0.1:{_free_port()}"}
    made = _facelens("keys", "create", "ops", "--scope", "admin", "--json",
                     data_dir=tmp_path / "data", **down)
    assert made.returncode == 0, made.stderr
    listed = _facelens("keys", "list", "--json", data_dir=tmp_path / "data", **down)
    assert listed.returncode == 0, listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)] == ["ops"]


def test_serve_refuses_an_unreachable_nats_in_one_line(tmp_path: Path) -> None:
    """It ended in a traceback with exit 3 (this CLI's "model missing"), from the app's
    start inside uvicorn."""
    run = _facelens("serve", "--port", _free_port(), data_dir=tmp_path / "data",
                    FACELENS_NATS_URL=f"nats://ops:s3cret@127.0.0.1:{_free_port()}")
    assert run.returncode == 1, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "NATS at nats://127.0.0.1:" in run.stderr and "s3cret" not in run.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_name_nats_without_its_password(tmp_path: Path, command: str) -> None:
    """Both printed the NATS URL as set, password and all, to a terminal or a log."""
    if not _reachable("127.0.0.1", 4222):
        pytest.skip("NATS unreachable at 127.0.0.1:4222")
    args = [str(CLI), command, *(["--port", str(_free_port())] if command == "serve" else [])]
    env = dict(os.environ, FACELENS_DATA_DIR=str(tmp_path / "data"),
               FACELENS_NATS_URL="nats://ops:s3cret@127.0.0.1:4222")
    said: list[str] = []
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          text=True) as running:
        watchdog = threading.Timer(300, running.kill)  # a hang fails the test, not the run
        watchdog.start()
        try:
            assert running.stderr is not None
            for line in running.stderr:
                said.append(line)
                if "nats://" in line:
                    break
        finally:
            watchdog.cancel()
            running.terminate()
    named = [line for line in said if "nats://" in line]
    assert named and "nats://127.0.0.1:4222" in named[0], said
    assert not [line for line in said if "s3cret" in line], said


def _tiny_clip(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("command", [["gallery", "list"], ["keys", "list"], ["serve"],
                                     ["worker"], ["watch", "{clip}", "--gallery", "staff"],
                                     ["watch-street", "{clip}", "--no-faces"], ["models"],
                                     ["eval", "lfw", "{folder}"], ["calibrate", "{folder}"],
                                     ["eval", "demographics", "{folder}", "--group", "a={group}"]])
def test_a_refused_setting_is_one_line_naming_its_variable(tmp_path: Path,
                                                           command: list[str]) -> None:
    """A bad FACELENS_* value ended every command in pydantic's traceback (watch, serve and
    worker read the settings outside the error guard; the rest as its many-line report)."""
    clip = str(_tiny_clip(tmp_path / "clip.mp4"))
    (folder := tmp_path / "people" / "ada").mkdir(parents=True)
    shutil.copy(clip, folder / "ada.jpg")  # never read: the settings are refused first
    (group := tmp_path / "group.txt").write_text("ada\n")
    given = {"{clip}": clip, "{folder}": str(folder.parent), "a={group}": f"a={group}"}
    run = _facelens(*[given.get(arg, arg) for arg in command],
                    data_dir=tmp_path / "data", FACELENS_RUNTIME="nope")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == ("error: FACELENS_RUNTIME: Input should be 'openvino', "
                                  "'openvino-bf16' or 'onnxruntime'"), run.stderr


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("FACELENS_PORT", "s3cret", "FACELENS_PORT: Input should be a valid integer"),
    ("FACELENS_STREET_DETECT_SIDE", "100", "FACELENS_STREET_DETECT_SIDE: Input should be a "
                                           "multiple of 32"),
    ("FACELENS_CAMERAS", "s3cret", "FACELENS_CAMERAS: not valid JSON for this setting"),
    ("FACELENS_CAMERAS", '[{"name": "door"}]', "FACELENS_CAMERAS[0].source: Field required"),
])
def test_a_refused_value_is_named_not_shown(tmp_path: Path, variable: str, value: str,
                                            said: str) -> None:
    """The line names the variable (and the entry inside a JSON one), never the value: it
    may be a password."""
    run = _facelens("keys", "list", data_dir=tmp_path / "data", **{variable: value})
    assert run.returncode == 2, run.stderr
    line = run.stderr.strip()
    assert line.startswith(f"error: {said}") and "\n" not in line, run.stderr
    assert "s3cret" not in line


def test_a_refused_value_from_the_config_file_names_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No FACELENS_RUNTIME is set: the line names the file's key instead."""
    from facelens.settings import SettingRefused, get_settings

    config = tmp_path / "facelens.toml"
    config.write_text('runtime = "nope"\n')
    monkeypatch.setenv("FACELENS_CONFIG", str(config))
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingRefused, match=f"^runtime in {config}: Input should be"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_a_config_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    """It ended every command in tomllib's traceback."""
    config = tmp_path / "facelens.toml"
    config.write_text('port = 80\nruntime = [\n')
    run = _facelens("gallery", "list", data_dir=tmp_path / "data", FACELENS_CONFIG=str(config))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().startswith(f"error: {config} is not valid TOML: "), run.stderr
    assert "Traceback" not in run.stderr
