"""/v1/cameras: add, change (galleries, enable/disable, rate, zones and masks), remove; live
previews."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from facelens.errors import NotFoundError
from facelens.service.keys import Principal
from facelens.service.security import requires, service, still_allowed
from facelens.settings import CameraConfig, Polygon
from facelens.video.source import redacted

router = APIRouter(prefix="/v1/cameras", tags=["cameras"])
BOUNDARY = "facelensframe"


def _each_once(galleries: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in galleries:
        if name in seen:
            raise PydanticCustomError("duplicate_gallery", "'{name}' is listed twice",
                                      {"name": name})
        seen.add(name)
    return galleries


Galleries = Annotated[list[str], AfterValidator(_each_once)]
"""The galleries a camera watches, each once: each is looked up as the camera is saved and
searched for every face it sees; 300,000 copies of one name took a PATCH 3 minutes."""


class NewCamera(CameraConfig):
    galleries: Galleries = Field(default_factory=list)


class CameraChange(BaseModel):
    source: str | None = Field(None, min_length=1, max_length=2000)
    galleries: Galleries | None = None
    enabled: bool | None = None
    fps: float | None = Field(None, gt=0, le=60)
    motion: bool | None = None
    cooldown_s: float | None = Field(None, ge=0)
    far: float | None = Field(None, ge=1e-5, le=1e-1)
    zones: list[Polygon] | None = Field(None, max_length=20)
    masks: list[Polygon] | None = Field(None, max_length=20)
    scene: bool | None = None


@router.get("")
def list_cameras(request: Request, _: Principal = requires("events")) -> list[dict[str, Any]]:
    return service(request).cameras.describe()


@router.post("", status_code=201)
def add_camera(request: Request, body: NewCamera,
               principal: Principal = requires("admin")) -> dict[str, Any]:
    state = service(request)
    state.cameras.add(body)
    state.audit.record(principal.label, "camera.add", "ok", camera=body.name,
                       galleries=body.galleries)
    return state.cameras.describe(body.name)[0]


@router.patch("/{name}")
def change_camera(request: Request, name: str, body: CameraChange,
                  principal: Principal = requires("admin")) -> dict[str, Any]:
    state = service(request)
    changes = body.model_dump(exclude_none=True)
    try:
        state.cameras.update(name, changes)
    except ValidationError as e:  # the camera's settings with the changes break a bound of
        raise RequestValidationError(e.errors()) from e  # CameraConfig's (cooldown_s: a day)
    if "source" in changes:  # the audit chain keeps no stream passwords
        changes["source"] = redacted(changes["source"])
    for regions in ("zones", "masks"):  # the chain keeps how many, not every corner
        if regions in changes:
            changes[regions] = len(changes[regions])
    state.audit.record(principal.label, "camera.change", "ok", camera=name, **changes)
    return state.cameras.describe(name)[0]


@router.delete("/{name}", status_code=204)
def remove_camera(request: Request, name: str,
                  principal: Principal = requires("admin")) -> Response:
    state = service(request)
    state.cameras.remove(name)
    state.audit.record(principal.label, "camera.remove", "ok", camera=name)
    return Response(status_code=204)


@router.get("/{name}/preview.jpg", responses={200: {"content": {"image/jpeg": {}}}})
def preview_frame(request: Request, name: str, _: Principal = requires("events")) -> Response:
    """The latest processed frame with boxes and labels (held in memory only)."""
    preview, _ = service(request).cameras.preview(name)
    if preview is None:
        raise NotFoundError(f"camera {name!r} has no frame yet")
    return Response(preview, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


MJPEG = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


@router.get("/{name}/preview.mjpeg", responses={200: {"content": {MJPEG: {}}}})
async def preview_stream(request: Request, name: str,
                         _: Principal = requires("events")) -> StreamingResponse:
    """MJPEG of the processed frames (for players that send X-API-Key)."""
    cameras = service(request).cameras
    jpeg, running = await run_in_threadpool(cameras.preview, name)  # 404 before the stream
    pause = 0.2 if cameras.bus else 0.05  # each frame from a worker is a NATS round trip

    async def frames() -> AsyncIterator[bytes]:
        nonlocal jpeg, running
        last = None
        while (running and not await request.is_disconnected()
               and await run_in_threadpool(still_allowed, request, "events")):
            if jpeg is not None and jpeg != last:
                last = jpeg
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
            await asyncio.sleep(pause)
            try:
                jpeg, running = await run_in_threadpool(cameras.preview, name)
            except NotFoundError:  # the camera went away (removed, or its worker stopped)
                return

    return StreamingResponse(frames(), media_type=MJPEG)
