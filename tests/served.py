"""`facelens serve` as users run it, in a process of its own: a free port, its output in files,
returned once /healthz answers. The service, security and cluster tests start theirs here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

CLI = Path(sys.executable).with_name("facelens")
START_S = 120  # loading the models on a loaded 2-core machine


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    data_dir: Path

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
        return kb / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(data_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with FACELENS_DATA_DIR set and no terminal
    size, so the printed admin key is never wrapped."""
    env = {k: v for k, v in (base or os.environ).items() if k not in ("COLUMNS", "LINES")}
    env["FACELENS_DATA_DIR"] = str(data_dir)
    return env


def start_server(data_dir: Path, log_dir: Path, env: dict[str, str] | None = None,
                 name: str | None = None) -> Server:
    """A server on `data_dir` (run from its parent), logging to log_dir/NAME.out and .err
    (NAME: serve-PORT unless given)."""
    port = free_port()
    name = name or f"serve-{port}"
    stdout, stderr = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen([str(CLI), "serve", "--port", str(port)], stdout=out,
                                   stderr=err, env=serve_env(data_dir, env), cwd=data_dir.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited: {stderr.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, process, stdout, data_dir)
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(f"{name} did not answer /healthz within {START_S} s")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()


def printed_key(server: Server) -> str | None:
    """The admin key a first start prints once, if this start printed one."""
    for line in server.stdout.read_text().splitlines():
        if line.strip().startswith("fl_"):
            return line.strip()
    return None
