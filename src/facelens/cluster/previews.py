"""Camera previews across processes: the API asks on `<prefix>.cameras.preview` (core NATS
request/reply, the camera's name as the body) and the worker running that camera answers with
its latest annotated frame; other workers stay silent."""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from facelens.cluster.bus import Bus

Preview = tuple[bytes | None, bool]
"""The latest annotated JPEG (None before the first frame) and whether the camera still runs."""


def previews_subject(prefix: str) -> str:
    return f"{prefix}.cameras.preview"


def ask_preview(bus: Bus, prefix: str, camera: str, timeout_s: float = 2.0) -> Preview | None:
    """The preview of `camera` from whichever worker runs it; None when none answers."""
    try:
        reply = bus.call(bus.nc.request(previews_subject(prefix), camera.encode(),
                                        timeout=timeout_s), timeout_s + 1.0)
    except (NatsError, TimeoutError):  # no worker runs it (no responders, or no answer)
        return None
    running, jpeg = reply.data[:1] == b"1", reply.data[1:]
    return (jpeg or None), running


def answer_previews(bus: Bus, prefix: str, lookup: Callable[[str], Preview | None]) -> object:
    """Answer preview requests for the cameras `lookup` knows (it must not block: it runs on the
    bus's loop). Returns the subscription."""

    async def answer(msg: Msg) -> None:
        found = lookup(msg.data.decode(errors="replace"))
        if found is not None:
            jpeg, running = found
            await msg.respond((b"1" if running else b"0") + (jpeg or b""))

    return bus.subscribe(previews_subject(prefix), answer)
