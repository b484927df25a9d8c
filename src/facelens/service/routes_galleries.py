"""/v1/galleries, /v1/subjects: gallery and subject CRUD, enrolment, identification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field

from facelens.errors import NoFaceError
from facelens.gallery.service import Correction, EnrolReport, Identification
from facelens.policy.door import Door, DoorDecision
from facelens.policy.live_face import embedded_main_face
from facelens.service.http import ApiError
from facelens.service.keys import Principal
from facelens.service.limits import quantised
from facelens.service.params import RowId
from facelens.service.routes_faces import run_audited
from facelens.service.security import probe_limiter, requires, service
from facelens.service.uploads import ConsentForm, Far, read_upload, read_uploads
from facelens.settings import NAME_PATTERN
from facelens.store.tables import Gallery, Subject, aware

router = APIRouter(prefix="/v1", tags=["galleries"])


class NewGallery(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    purpose: str = Field(min_length=1, max_length=100,
                         description="e.g. staff-door; purposes starting with 'watchlist' "
                                     "need a reason and an expiry per entry")
    embedder: str | None = None
    retention_days: int = Field(3 * 365, ge=1, le=36_500)
    """At most a century: a larger number is no policy (and overflows the database)."""


def gallery_payload(gallery: Gallery, subjects: int | None = None) -> dict[str, Any]:
    out = {"name": gallery.name, "purpose": gallery.purpose, "embedder": gallery.embedder,
           "retention_days": gallery.retention_days,
           "created_at": aware(gallery.created_at)}
    return out if subjects is None else {**out, "subjects": subjects}


def subject_payload(subject: Subject) -> dict[str, Any]:
    return {"id": subject.id, "name": subject.display_name, "external_id": subject.external_id,
            "templates": len(subject.templates),
            "consents": [{"purpose": c.purpose, "legal_basis": c.legal_basis,
                          "granted_at": aware(c.granted_at), "expires_at": aware(c.expires_at),
                          "recorded_by": c.recorded_by} for c in subject.consents],
            "watch_reason": subject.watch_reason, "watch_expires": aware(subject.watch_expires),
            "created_at": aware(subject.created_at), "last_seen_at": aware(subject.last_seen_at)}


@router.get("/galleries")
def list_galleries(request: Request, _: Principal = requires("enrol", "identify")
                   ) -> list[dict[str, Any]]:
    return [gallery_payload(g, n) for g, n in service(request).galleries.list_galleries()]


@router.post("/galleries", status_code=201)
def create_gallery(request: Request, body: NewGallery,
                   principal: Principal = requires("admin")) -> dict[str, Any]:
    state = service(request)
    gallery = state.galleries.create_gallery(body.name, body.purpose, embedder=body.embedder,
                                             retention_days=body.retention_days)
    state.audit.record(principal.label, "gallery.create", "ok", gallery=gallery.name,
                       purpose=gallery.purpose, embedder=gallery.embedder)
    return gallery_payload(gallery, 0)


@router.get("/galleries/{name}")
def get_gallery(request: Request, name: str,
                _: Principal = requires("enrol", "identify")) -> dict[str, Any]:
    state = service(request)
    return gallery_payload(state.galleries.gallery(name), len(state.galleries.subjects(name)))


@router.delete("/galleries/{name}", status_code=204)
def delete_gallery(request: Request, name: str,
                   principal: Principal = requires("admin")) -> Response:
    state = service(request)
    state.galleries.remove_gallery(name)
    state.audit.record(principal.label, "gallery.delete", "ok", gallery=name)
    return Response(status_code=204)


@router.get("/galleries/{name}/subjects")
def list_subjects(request: Request, name: str,
                  _: Principal = requires("enrol", "identify")) -> list[dict[str, Any]]:
    return [subject_payload(s) for s in service(request).galleries.subjects(name)]


@router.post("/galleries/{name}/subjects", status_code=201,
             summary="Enrol one person from one or more photos, with a consent record")
async def enrol(request: Request, name: str,
                subject_name: Annotated[str, Form(alias="name", min_length=1, max_length=200)],
                images: Annotated[list[UploadFile], File()],
                consent: ConsentForm,
                external_id: Annotated[str | None, Form(max_length=200)] = None,
                pin: Annotated[str | None, Form(description="4-12 digits: a second factor for "
                                                            "door decisions")] = None,
                principal: Principal = requires("enrol")) -> dict[str, Any]:
    state = service(request)
    uploads = await read_uploads(images)

    def work() -> EnrolReport:
        rgbs = [state.decode(data) for _, data in uploads]  # any bad file refuses them all
        return state.galleries.enroll(name, subject_name, list(rgbs), consent=consent.record,
                                      external_id=external_id, watch_reason=consent.watch_reason,
                                      watch_expires=consent.watch_expires,
                                      labels=[filename for filename, _ in uploads], pin=pin)

    report = await run_audited(state, principal.label, "enrol", work, gallery=name)
    await state.audited(principal.label, "enrol", "ok", gallery=name, subject=report.subject_id,
                       templates=report.templates, legal_basis=consent.record.legal_basis)
    return {"subject_id": report.subject_id, "name": report.name,
            "templates": report.templates,
            "skipped": [{"image": img, "reason": why} for img, why in report.skipped]}


@router.get("/subjects/{subject_id}")
def get_subject(request: Request, subject_id: str,
                _: Principal = requires("enrol", "identify")) -> dict[str, Any]:
    """The subject, and how many alerts name them per status: deleting the subject deletes
    those too, confirmed ones included."""
    state = service(request)
    subject = state.galleries.subject(subject_id)
    return {**subject_payload(subject), "gallery": subject.gallery.name,
            "alerts": state.events.counts(subject_id)}


@router.delete("/subjects/{subject_id}", status_code=204,
               summary="Delete a subject and every alert naming them, confirmed ones "
                       "included: its key is destroyed (crypto-shredding)")
def delete_subject(request: Request, subject_id: str,
                   principal: Principal = requires("enrol")) -> Response:
    """The subject's templates, consents, corrections and alerts (with their pictures) go;
    the audit log keeps the subject id and how many alerts went, per status."""
    state = service(request)
    alerts = state.events.counts(subject_id)
    state.galleries.delete_subject(subject_id)
    state.audit.record(principal.label, "subject.delete", "ok", subject=subject_id,
                       alerts_deleted=alerts)
    return Response(status_code=204)


def identification_payload(found: Identification, principal: Principal) -> dict[str, Any]:
    """A face and its candidates with their confidence bands; raw scores for the scores
    scope only."""
    candidates = []
    for c in found.candidates:
        item: dict[str, Any] = {"subject_id": c.subject_id, "name": c.name,
                                "confidence": c.band, "fpir_at_most": c.fpir}
        if principal.allows("scores"):
            item["score"] = quantised(c.score)
        candidates.append(item)
    return {"face": found.face.to_dict(), "unknown": found.unknown, "candidates": candidates}


@router.post("/galleries/{name}/identify", summary="Who is each face? Candidates or unknown")
async def identify(request: Request, name: str, image: Annotated[UploadFile, File()],
                   far: Far = 1e-3, top_k: Annotated[int, Form(ge=1, le=50)] = 5,
                   principal: Principal = requires("identify")) -> dict[str, Any]:
    state, data = service(request), await read_upload(image)

    def work() -> list[Identification]:
        rgb = state.decode(data)
        if not probe_limiter(request).allow(principal.id, rgb):
            raise ApiError(429, "near_duplicate_probes", "too many near-identical probes "
                           "from this key; vary the photos or wait")
        return state.galleries.identify(name, rgb, far=far, top_k=top_k)

    found = await run_audited(state, principal.label, "identify", work, gallery=name)
    named = [f.candidates[0].subject_id for f in found if f.candidates]
    await state.audited(principal.label, "identify", f"{len(named)}/{len(found)} known",
                       gallery=name, far=far, subjects=named)
    return {"gallery": name, "decision": found[0].decision if found else "no face found",
            "faces": [identification_payload(f, principal) for f in found]}


def correction_payload(correction: Correction) -> dict[str, Any]:
    return {"id": correction.id, "subject_id": correction.subject_id,
            "created_at": aware(correction.created_at)}


@router.post("/subjects/{subject_id}/not-this-person", status_code=201,
             summary="A reviewer's correction: this picture is not that subject")
async def not_this_person(request: Request, subject_id: str,
                          image: Annotated[UploadFile, File()],
                          principal: Principal = requires("identify")) -> dict[str, Any]:
    """Near-duplicates of the picture (re-encoded, re-cropped, the next frame) no longer match
    the subject; its other photos still do. Undo with DELETE on the correction."""
    state, data = service(request), await read_upload(image)

    def work() -> Correction:
        subject = state.galleries.subject(subject_id)
        face = embedded_main_face(state.galleries.engine, state.decode(data),
                                  subject.gallery.embedder)
        if face is None:
            raise NoFaceError("no face found")
        return state.galleries.not_this_person(subject_id, face)

    correction = await state.pool.run(work)
    await state.audited(principal.label, "not_this_person", "ok", subject=subject_id,
                        correction=correction.id)
    return correction_payload(correction)


@router.get("/subjects/{subject_id}/corrections", summary="The subject's corrections")
def list_corrections(request: Request, subject_id: str,
                     _: Principal = requires("identify")) -> list[dict[str, Any]]:
    return [correction_payload(c) for c in service(request).galleries.corrections(subject_id)]


@router.delete("/subjects/{subject_id}/corrections/{correction_id}", status_code=204,
               summary="Undo a correction: the picture may match the subject again")
def undo_correction(request: Request, subject_id: str, correction_id: RowId,
                    principal: Principal = requires("identify")) -> Response:
    state = service(request)
    state.galleries.undo_correction(subject_id, correction_id)
    state.audit.record(principal.label, "correction.undo", "ok", subject=subject_id,
                       correction=correction_id)
    return Response(status_code=204)


@router.post("/galleries/{name}/door", summary="Door: identify + liveness (+ PIN if enrolled)")
async def door(request: Request, name: str, image: Annotated[UploadFile, File()],
               liveness_session: Annotated[str, Form()],
               pin: Annotated[str | None, Form()] = None, far: Far = 1e-3,
               principal: Principal = requires("identify")) -> dict[str, Any]:
    """Opens only for an enrolled person who just passed a liveness challenge with this face,
    and who typed their PIN if they enrolled one."""
    state, data = service(request), await read_upload(image)
    gate = Door(state.galleries, state.liveness, state.lockout)

    def work() -> DoorDecision:
        return gate.decide(name, state.decode(data), caller=principal.id,
                           liveness_session=liveness_session, pin=pin, far=far)

    decision = await state.pool.run(work)
    await state.audited(principal.label, "door", "open" if decision.opened else "refused",
                        gallery=name, subject=decision.subject_id, reasons=decision.reasons)
    out: dict[str, Any] = {"open": decision.opened, "reasons": decision.reasons}
    if decision.who is not None:
        out.update(identification_payload(decision.who, principal)["candidates"][0])
    return out
