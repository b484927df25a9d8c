"""/v1/detect, /v1/analyze, /v1/embed, /v1/verify: the engine's verbs over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile

from facelens import api
from facelens.errors import FacelensError, NoFaceError
from facelens.face import Face, Verdict
from facelens.matching.open_set import confidence_band
from facelens.service.http import ApiError
from facelens.service.keys import Principal
from facelens.service.security import requires, service
from facelens.service.state import ServiceState

router = APIRouter(prefix="/v1", tags=["faces"])
ACCEPTED_TYPES = {"image/jpeg", "image/png", "image/webp", "application/octet-stream"}
Far = Annotated[float, Form(ge=1e-5, le=1e-1, description="False-accept rate to decide at.")]


async def read_upload(upload: UploadFile) -> bytes:
    """The bytes of an uploaded image whose declared type (if any) is one we accept; what
    the bytes really are is checked again when they are decoded."""
    declared = (upload.content_type or "application/octet-stream").split(";")[0].strip()
    if declared not in ACCEPTED_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"{upload.filename or 'upload'}: {declared} is not JPEG, PNG or WebP")
    return await upload.read()


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
    return await _faces(request, image, api.detect)


@router.post("/analyze", summary="Faces with quality and (opt-in) age and perceived sex")
async def analyze(request: Request, image: Annotated[UploadFile, File()],
                  attributes: Annotated[bool, Form()] = True,
                  _: Principal = requires("detect")) -> dict[str, Any]:
    if attributes and not service(request).settings.attributes:
        raise ApiError(403, "forbidden", "age and sex estimation is disabled on this server "
                       "(FACELENS_ATTRIBUTES=false)")
    return await _faces(request, image, lambda rgb: api.analyze(rgb, attributes=attributes))


@router.post("/embed", summary="Faces with their embeddings (export scope only)")
async def embed(request: Request, image: Annotated[UploadFile, File()],
                _: Principal = requires("export")) -> dict[str, Any]:
    return await _faces(request, image, api.embed, with_embedding=True)


def verdict_payload(verdict: Verdict, principal: Principal) -> dict[str, Any]:
    decided_by = verdict.decided_by or verdict.embedder
    band, _ = confidence_band(decided_by, verdict.score) if verdict.match else ("none", None)
    out = verdict.to_dict()
    if not principal.allows("scores"):
        del out["score"], out["threshold"]
    out["confidence"] = band
    out["faces"] = [f.to_dict() for f in verdict.faces if f.detector != "gallery"]
    return out


def live_probe(state: ServiceState, principal: Principal, session_id: str | None,
               rgb: np.ndarray, required: bool) -> None:
    """Use up a passed liveness session on the face in `rgb` (it must be who passed it).
    Refused when a session is required (payment gallery or key) and none is given."""
    if session_id is None:
        if required:
            raise ApiError(403, "liveness_required", "this decision needs a passed liveness "
                           "session (liveness_session): payment galleries and keys never "
                           "decide on a still image")
        return
    faces = api.embed(rgb, embedder="sface")
    face_vector = api.main_face(faces).embedding if faces else None
    if face_vector is None:
        raise NoFaceError("no face to match against the liveness session")
    state.liveness.consume(session_id, principal.id, face_vector)


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
    if subject_id and image is not None:
        pair = (principal.id, subject_id)
        if (left := state.lockout.locked_for(pair)) > 0:
            await state.audited(principal.label, "verify", "locked", subject=subject_id)
            raise ApiError(423, "verification_locked",
                           f"too many failed verifications of this subject; retry in "
                           f"{left:.0f} s", {"Retry-After": str(round(left) + 1)})
        data = await read_upload(image)

        def work() -> Verdict:
            subject = state.galleries.subject(subject_id)
            rgb = state.decode(data)
            live_probe(state, principal, liveness_session, rgb, principal.needs_liveness
                       or subject.gallery.purpose.startswith("payment"))
            subject_face = state.galleries.subject_face(subject_id)
            return api.verify(subject_face, rgb, far=far, embedder=subject_face.embedder)
    elif image_a is not None and image_b is not None and not subject_id:
        a, b = await read_upload(image_a), await read_upload(image_b)
        pair = None

        def work() -> Verdict:
            selfie = state.decode(b)
            live_probe(state, principal, liveness_session, selfie, principal.needs_liveness)
            return api.verify(state.decode(a), selfie, far=far)
    else:
        raise ApiError(400, "bad_request", "send image_a and image_b, or image and subject_id")
    try:
        verdict = await state.pool.run(work)
    except (FacelensError, ApiError) as e:
        await state.audited(principal.label, "verify", type(e).__name__, subject=subject_id)
        raise
    if pair is not None:
        (state.lockout.succeeded if verdict.match else state.lockout.failed)(pair)
    await state.audited(principal.label, "verify", "match" if verdict.match else "no_match",
                        subject=subject_id, far=far, liveness=liveness_session)
    return verdict_payload(verdict, principal)
