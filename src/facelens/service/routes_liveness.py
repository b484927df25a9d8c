"""/v1/liveness/sessions: start a challenge, answer it with a short video or frames."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from facelens.liveness.answer import MAX_ANSWER_S, check_times, timed_answer
from facelens.liveness.judge import Judgement, judge
from facelens.service.http import ApiError
from facelens.service.keys import Principal
from facelens.service.security import requires, service
from facelens.service.state import API_FORMATS
from facelens.service.uploads import read_uploads

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])


@router.post("/sessions", status_code=201, summary="Start a challenge (expires in 3 minutes)")
def start(request: Request, principal: Principal = requires("verify")) -> dict[str, Any]:
    session = service(request).liveness.create(principal.id)
    return {**session.public(), "nonce": session.nonce}


@router.get("/sessions/{session_id}")
def status(request: Request, session_id: str,
           principal: Principal = requires("verify")) -> dict[str, Any]:
    return service(request).liveness.get(session_id, principal.id).public()


TIMES_HELP = ("With frames: when each was recorded, in seconds from the start of the "
              "recording, comma-separated (one per frame). Each action must be seen within 2 s "
              "of its prompt (the session's prompts_s, shown at those times into the "
              "recording): a clip recorded before the session cannot know them.")


def _seconds(times: str | None) -> list[float] | None:
    if times is None:
        return None
    try:
        parsed = [float(t) for t in times.split(",")]
    except ValueError:
        raise ApiError(422, "bad_times", "times: comma-separated seconds, one per frame") from None
    if not all(0 <= t <= MAX_ANSWER_S for t in parsed):  # also refuses nan and inf
        raise ApiError(422, "bad_times", f"times must lie between 0 and {MAX_ANSWER_S:g} s")
    return parsed


@router.post("/sessions/{session_id}", summary="Answer the challenge: a video, or frames")
async def answer(request: Request, session_id: str, nonce: Annotated[str, Form()],
                 video: Annotated[UploadFile | None, File()] = None,
                 frames: Annotated[list[UploadFile] | None, File()] = None,
                 times: Annotated[str | None, Form(description=TIMES_HELP)] = None,
                 principal: Principal = requires("verify")) -> dict[str, Any]:
    state = service(request)
    frame_times = _seconds(times)
    if video is None:
        check_times(frame_times, len(frames or []))
    session = state.liveness.begin_answer(session_id, principal.id, nonce)
    judgement: Judgement | None = None
    try:
        recorded = await video.read() if video is not None else None
        stills = [] if video is not None else [
            data for _, data in await read_uploads(frames or [])]
        pixels = int(state.settings.max_image_mp * 1e6)

        def work() -> Judgement:
            shown, when = timed_answer(recorded, stills, frame_times, limit_pixels=pixels,
                                       formats=API_FORMATS)
            return judge(state.galleries.engine, shown, session.challenge, times=when,
                         prompts=session.prompts_s)

        judgement = await state.pool.run(work)
    finally:
        state.liveness.finish(session, judgement)
        await state.audited(principal.label, "liveness", session.state, session=session_id)
    return session.public()
