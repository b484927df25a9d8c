"""Shared pieces of the CLI: consoles, the error guard, JSON output, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from facelens.errors import FacelensError

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error = one line, even in a pipe

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def errors() -> Iterator[None]:
    """Turn facelens errors into one stderr line and their exit code; never a traceback."""
    try:
        yield
    except FacelensError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(e.exit_code) from None


def emit(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=1, default=str) + "\n")


@contextmanager
def progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """progress(label, total) -> advance(n), drawn on stderr."""
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        def start(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)
        yield start
