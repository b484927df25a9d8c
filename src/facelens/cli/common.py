"""Shared pieces of the CLI: consoles, the error guard, JSON output, progress bars, and the
engine and calibration the environment's settings name (the CLI is an entry point)."""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from facelens.errors import FacelensError

if TYPE_CHECKING:
    from facelens.api import Engine
    from facelens.matching.calibration import Calibration
    from facelens.settings import Settings
    from facelens.video.source import Frame

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error = one line, even in a pipe

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
FAR_MIN, FAR_MAX = 1e-5, 1e-1
"""The FAR / FPIR a command may ask for: the REST API's range (service/uploads.py), beyond
which no calibrated point or fitted tail answers."""
Reconnects = Annotated[int, typer.Option(
    help="Live sources: reconnections in a row (backing off 0.5 s to 10 s) before giving up "
         "with exit 2. `facelens serve` runs cameras that never give up.", min=0)]
RECONNECTS = 5
"""A CLI watch gives up on a dead stream after ~15 s of reconnecting: a wrong URL is said,
not retried for ever."""
FPS_MIN, FPS_MAX = 0.01, 60.0
"""Frames per second a video command may process: at most a camera's (CameraConfig), at
least one frame in 100 s (0 would mean "every frame" to the source)."""


@contextmanager
def errors() -> Iterator[None]:
    """Turn facelens errors, and a setting's refused value, into one stderr line and their
    exit code; never a traceback."""
    try:
        yield
    except FacelensError as e:
        _refuse(str(e), e.exit_code)
    except ValueError as e:
        from facelens.settings import SettingRefused  # imported by whatever raised it

        if not isinstance(e, SettingRefused):
            raise
        _refuse(str(e), e.exit_code)


def _refuse(message: str, exit_code: int) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(_one_line(message))}", highlight=False)
    raise typer.Exit(exit_code) from None


def _one_line(message: str) -> str:
    """`message` with its control characters escaped: a file name it quotes may hold a line
    break, and the error must stay one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def emit(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=1, default=str) + "\n")


def require_folder(path: Path) -> None:
    """Exit 2 with one line unless `path` is a folder (before any work)."""
    if not path.is_dir():
        err.print(f"[red]error:[/red] {escape(str(path))} is not a folder", highlight=False)
        raise typer.Exit(2)


def opened_frames(source: str, *, fps: float | None, reconnects: int) -> Iterator[Frame]:
    """A video command's frames, its source opened first (its first frame read): a missing
    file or a dead stream is refused (SourceError, exit 2 under `errors()`) before the
    models, the engine and the database load, not seconds later. Ctrl-C while a stream
    connects ends with no frames, as it would during them."""
    from facelens.video.source import VideoSource

    frames = VideoSource(source, fps=fps, max_retries=reconnects).frames()
    try:
        first = next(frames, None)
    except KeyboardInterrupt:
        return iter(())
    return frames if first is None else itertools.chain([first], frames)


def writable(target: Path | None) -> Path | None:
    """An output file option's check while parsing (a Typer callback): exit 2 at once unless
    `target` can be written, so an evaluation of many minutes does not end in a traceback."""
    if target is None:
        return None
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab"):  # append: nothing is lost yet
            pass
    except OSError as e:
        raise typer.BadParameter(f"cannot write {target}: {e.strerror or e}") from None
    if not existed:
        target.unlink()
    return target


JsonOut = Annotated[Path | None, typer.Option(help="Write the JSON report here.",
                                              callback=writable)]


def camera_name(name: str) -> str:
    """--camera's check while parsing: a camera's name as the service's (settings.NAME_PATTERN);
    it goes into events, MQTT topics and logs, where "../x" or "a/#" must not."""
    from facelens.settings import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, name):
        raise typer.BadParameter(f"{name!r}: ASCII letters, digits, _ . - only, not starting "
                                 "with a dot, at most 100 characters")
    return name


Workers = Annotated[int, typer.Option(help="Processes (1 thread each).", min=1)]
CameraName = Annotated[str, typer.Option(help="Camera name on alerts and counts.",
                                         callback=camera_name)]


def save_json(report: Any, target: Path | None) -> None:
    """Write a report to the --json-out file, when one is given."""
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1) + "\n")


def emit_report(report: Any, target: Path | None) -> None:
    """A report on stdout, and in the --json-out file when one is given."""
    save_json(report, target)
    emit(report)


def environment_settings() -> Settings:
    """The environment's settings, or exit 2 with one line naming the refused variable (a
    command reading them outside `errors()` ended in pydantic's traceback)."""
    from facelens.settings import get_settings

    with errors():
        return get_settings()


def environment_engine() -> Engine:
    """The engine under the environment's settings."""
    from facelens.api import default_engine

    return default_engine()


def calibration_in_force() -> Calibration:
    """The calibration in force under the environment's settings, without loading a model."""
    from facelens.matching.calibration import load_calibration
    from facelens.models.runtime import runtime_label

    settings = environment_settings()
    return load_calibration(runtime_label(settings.runtime), settings.calibration_dir,
                            settings.calibration_file)


@contextmanager
def progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """progress(label, total) -> advance(n), drawn on stderr."""
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        def start(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)
        yield start
