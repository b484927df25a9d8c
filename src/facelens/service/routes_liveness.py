"""/v1/liveness/sessions: start a challenge, answer it with a short video or frames."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from facelens.liveness.answer import answer_frames
from facelens.liveness.judge import Judgement, judge
from facelens.service.keys import Principal
from facelens.service.security import requires, service
from facelens.service.state import API_FORMATS
from facelens.service.uploads import read_upload

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])


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
        recorded = await video.read() if video is not None else None
        stills = [] if video is not None else [await read_upload(f) for f in frames or []]
        pixels = int(state.settings.max_image_mp * 1e6)

        def work() -> Judgement:
            shown = answer_frames(recorded, stills, limit_pixels=pixels, formats=API_FORMATS)
            return judge(state.galleries.engine, shown, session.challenge)

        judgement = await state.pool.run(work)
    finally:
        state.liveness.finish(session, judgement)
        await state.audited(principal.label, "liveness", session.state, session=session_id)
    return session.public()
