"""/v1/liveness/sessions: start a challenge, answer it with a short video or frames."""

from __future__ import annotations

import io
from typing import Annotated, Any

import av
import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile

from facelens.errors import BadImageError
from facelens.liveness.judge import Judgement, judge
from facelens.service.keys import Principal
from facelens.service.routes_faces import read_upload
from facelens.service.security import requires, service
from facelens.video.source import evenly_spaced

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])
MAX_FRAMES = 90
"""Frames judged per answer (a longer video is sampled down to this many)."""
MAX_DECODED = 1800
"""Frames decoded at most (a minute at 30 fps): an answer is a few seconds long."""


def video_frames(data: bytes, limit_pixels: int) -> list[np.ndarray]:
    """Decode an uploaded video (MP4, WebM, …) into at most MAX_FRAMES evenly spaced frames.
    Memory stays bounded however long the video: the kept frames are thinned by half (and
    the stride doubled) whenever they reach twice the limit; decoding stops at MAX_DECODED."""
    kept: list[np.ndarray] = []
    stride = 1
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > limit_pixels:
                raise BadImageError("video frames are over the pixel limit")
            for number, frame in enumerate(container.decode(stream)):
                if number >= MAX_DECODED:
                    break
                if number % stride == 0:
                    kept.append(frame.to_ndarray(format="rgb24"))
                if len(kept) >= 2 * MAX_FRAMES:
                    kept, stride = kept[::2], stride * 2
    except (av.FFmpegError, IndexError, ValueError) as e:
        raise BadImageError(f"not a readable video: {type(e).__name__}") from e
    return evenly_spaced(kept, MAX_FRAMES)


@router.post("/sessions", status_code=201, summary="Start a challenge (expires in 3 minutes)")
def start(request: Request, principal: Principal = requires("verify")) -> dict[str, Any]:
    session = service(request).liveness.create(principal.id)
    return {**session.public(), "nonce": session.nonce}


@router.get("/sessions/{session_id}")
def status(request: Request, session_id: str,
           principal: Principal = requires("verify")) -> dict[str, Any]:
    return service(request).liveness.get(session_id, principal.id).public()


@router.post("/sessions/{session_id}", summary="Answer the challenge: a video, or frames")
async def answer(request: Request, session_id: str, nonce: Annotated[str, Form()],
                 video: Annotated[UploadFile | None, File()] = None,
                 frames: Annotated[list[UploadFile] | None, File()] = None,
                 principal: Principal = requires("verify")) -> dict[str, Any]:
    state = service(request)
    session = state.liveness.begin_answer(session_id, principal.id, nonce)
    judgement: Judgement | None = None
    try:
        if video is not None:
            data = await video.read()
            pixels = int(state.settings.max_image_mp * 1e6)

            def work() -> Judgement:
                return judge(video_frames(data, pixels), session.challenge)
        else:
            uploads = [await read_upload(f) for f in frames or []][:MAX_FRAMES]

            def work() -> Judgement:
                return judge([state.decode(d) for d in uploads], session.challenge)

        judgement = await state.pool.run(work)
    finally:
        state.liveness.finish(session, judgement)
        await state.audited(principal.label, "liveness", session.state, session=session_id)
    return session.public()
