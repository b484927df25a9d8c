"""The CLI's start-up and its settings, as users run it (a subprocess): a wrong source is
refused before anything heavy loads, `watch --scene` detects as `watch-street` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
