"""What the abuse suite's tests share: the served target (its keys, RSS, peak RSS), the way
each upload route is called, and the run's sizes (`make fuzz` sets FUZZ_UPLOADS and
FUZZ_SCHEMA_EXAMPLES for the long run)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from served import Server

FUZZ_UPLOADS = int(os.environ.get("FUZZ_UPLOADS", "240"))
"""Fuzzed uploads per run over the four upload routes (make fuzz: 10,000)."""
FUZZ_SCHEMA_EXAMPLES = int(os.environ.get("FUZZ_SCHEMA_EXAMPLES", "1"))
"""Schemathesis examples per route and key (make fuzz: more)."""
CONSENT = {"legal_basis": "consent", "consent_purpose": "door access", "recorded_by": "desk"}


@dataclass
class Target:
    server: Server
    keys: dict[str, str]
    subject_id: str
    fixtures: Path

    @property
    def url(self) -> str:
        return self.server.url

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def rss_mb(self) -> float:
        return self.server.rss_mb()

    def peak_since_reset_mb(self) -> float:
        """VmHWM since the last reset_peak(): the most the process held meanwhile."""
        return _status_kb(self.server, "VmHWM") / 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.server.process.pid}/clear_refs").write_text("5")


def _status_kb(server: Server, field: str) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith(f"{field}:"))



def upload(target: Target, client: httpx.Client, route: str, files: tuple[bytes, ...],
           content_type: str = "image/jpeg") -> httpx.Response:
    """POST `files` to one of the upload routes the way a client would."""
    if route == "detect":
        return client.post("/v1/detect", headers=target.auth("detect"),
                           files={"image": ("x", files[0], content_type)})
    if route == "identify":
        return client.post("/v1/galleries/door/identify", headers=target.auth("identify"),
                           files={"image": ("x", files[0], content_type)})
    if route == "verify":
        second = files[1] if len(files) > 1 else (target.fixtures / "obama2.jpg").read_bytes()
        return client.post("/v1/verify", headers=target.auth("verify"),
                           files={"image_a": ("a", files[0], content_type),
                                  "image_b": ("b", second, "image/jpeg")})
    session = client.post("/v1/liveness/sessions", headers=target.auth("verify")).json()
    parts: Any = ([("video", ("v", files[0], content_type))] if route == "liveness-video" else
                  [("frames", (f"f{i}", f, content_type)) for i, f in enumerate(files)])
    return client.post(f"/v1/liveness/sessions/{session['id']}", headers=target.auth("verify"),
                       data={"nonce": session["nonce"]}, files=parts)
