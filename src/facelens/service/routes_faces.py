"""/v1/detect, /v1/analyze, /v1/embed, /v1/verify: the engine's verbs over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile

from facelens.errors import FacelensError
from facelens.face import Comparison, Face, Verdict
from facelens.policy.verification import Verification
from facelens.service.http import ApiError
from facelens.service.keys import Principal
from facelens.service.limits import Overloaded, quantised
from facelens.service.security import requires, service
from facelens.service.state import ServiceState
from facelens.service.uploads import Far, read_upload

router = APIRouter(prefix="/v1", tags=["faces"])
T = TypeVar("T")


def faces_payload(rgb_shape: tuple[int, ...], faces: list[Face], *,
                  with_embedding: bool = False) -> dict[str, Any]:
    return {"width": rgb_shape[1], "height": rgb_shape[0],
            "faces": [f.to_dict(with_embedding=with_embedding) for f in faces]}


async def _faces(request: Request, image: UploadFile,
                 find: Callable[[np.ndarray], list[Face]], *,
                 with_embedding: bool = False) -> dict[str, Any]:
    """Decode the upload and run `find` on it, both on the inference pool."""
    state, data = service(request), await read_upload(image)

    def work() -> dict[str, Any]:
        rgb = state.decode(data)
        return faces_payload(rgb.shape, find(rgb), with_embedding=with_embedding)

    return await state.pool.run(work)


@router.post("/detect", summary="Find faces: boxes, 5 landmarks, quality")
async def detect(request: Request, image: Annotated[UploadFile, File()],
                 _: Principal = requires("detect")) -> dict[str, Any]:
    return await _faces(request, image, service(request).galleries.engine.detect)


@router.post("/analyze", summary="Faces with quality and (opt-in) age and perceived sex")
async def analyze(request: Request, image: Annotated[UploadFile, File()],
                  attributes: Annotated[bool, Form()] = True,
                  _: Principal = requires("detect")) -> dict[str, Any]:
    state = service(request)
    if attributes and not state.settings.attributes:
        raise ApiError(403, "forbidden", "age and sex estimation is disabled on this server "
                       "(FACELENS_ATTRIBUTES=false)")
    engine = state.galleries.engine
    return await _faces(request, image, lambda rgb: engine.analyze(rgb, attributes=attributes))


@router.post("/embed", summary="Faces with their embeddings (export scope only)")
async def embed(request: Request, image: Annotated[UploadFile, File()],
                _: Principal = requires("export")) -> dict[str, Any]:
    return await _faces(request, image, service(request).galleries.engine.embed,
                        with_embedding=True)


def failure(e: Exception) -> dict[str, str]:
    """How a failed request is audited: "refused" with the message the caller saw for input or
    a rule it broke, or for a full inference queue (a 429, not a fault); "error" for anything
    else (the server log has the details)."""
    if isinstance(e, FacelensError | ApiError):
        return {"outcome": "refused", "reason": str(e)[:200]}
    if isinstance(e, Overloaded):
        return {"outcome": "refused", "reason": f"overloaded ({e})"[:200]}
    return {"outcome": "error", "reason": "internal error"}


async def run_audited(state: ServiceState, actor: str, action: str, work: Callable[[], T],
                      **fields: Any) -> T:
    """`work` on the inference pool; when it raises, an audit row (`action`, its failure()
    outcome and reason, `fields`) is written before the error goes on to the caller. A success
    is the route's to audit: its outcome names what was found."""
    try:
        return await state.pool.run(work)
    except Exception as e:
        await state.audited(actor, action, **failure(e), **fields)
        raise


def verdict_payload(verdict: Verdict, band: str, principal: Principal) -> dict[str, Any]:
    """The verdict with its confidence band; the score and thresholds for the scores scope
    only."""
    out = verdict.to_dict()
    if not principal.allows("scores"):
        del out["score"], out["threshold"]
        out.pop("far_threshold", None)
    else:
        out["score"] = quantised(out["score"])
    out["confidence"] = band
    return out


@router.post("/verify", summary="Same person? Two images, or an image and an enrolled subject")
async def verify(request: Request,
                 image_a: Annotated[UploadFile | None, File()] = None,
                 image_b: Annotated[UploadFile | None, File(
                     description="With a liveness session: the live capture (selfie).")] = None,
                 image: Annotated[UploadFile | None, File()] = None,
                 subject_id: Annotated[str | None, Form()] = None,
                 liveness_session: Annotated[str | None, Form(
                     description="A passed session; required by payment galleries and "
                                 "keys.")] = None,
                 far: Far = 1e-3,
                 principal: Principal = requires("verify")) -> dict[str, Any]:
    state = service(request)
    verification = Verification(state.galleries, state.liveness, state.lockout)
    if subject_id and image is not None:
        if (left := verification.locked_for(principal.id, subject_id)) > 0:
            await state.audited(principal.label, "verify", "locked", subject=subject_id)
            raise ApiError(423, "verification_locked",
                           f"too many failed verifications of this subject; retry in "
                           f"{left:.0f} s", {"Retry-After": str(round(left) + 1)})
        data = await read_upload(image)

        def work() -> Comparison:
            verdict = verification.against_subject(
                subject_id, state.decode(data), caller=principal.id,
                key_scopes=principal.scopes, liveness_session=liveness_session, far=far)
            return Comparison(verdict.faces[1], [verdict])
    elif image_a is not None and image_b is not None and not subject_id:
        a, b = await read_upload(image_a), await read_upload(image_b)

        def work() -> Comparison:
            live = state.decode(b)
            return verification.between(state.decode(a), live, caller=principal.id,
                                        key_scopes=principal.scopes,
                                        liveness_session=liveness_session, far=far)
    else:
        raise ApiError(400, "bad_request", "send image_a and image_b, or image and subject_id")
    comparison = await run_audited(state, principal.label, "verify", work, subject=subject_id)
    verdict = comparison.best
    await state.audited(principal.label, "verify", "match" if verdict.match else "no_match",
                        subject=subject_id, far=far, liveness=liveness_session,
                        faces_compared=len(comparison.verdicts))
    out = verdict_payload(verdict, verification.band(verdict), principal)
    if subject_id is None:  # CompareFaces: every face of image_b, with its box
        out["face_matches"] = [verdict_payload(v, verification.band(v), principal)
                               for v in comparison.matches]
        out["unmatched_faces"] = [f.to_dict() for f in comparison.unmatched
                                  if isinstance(f, Face)]
    return out
