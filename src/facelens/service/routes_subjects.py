"""/v1/subjects/{id}: rename, add photos, list and delete single templates (no vector is ever
shown), the reference picture; every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, Response, UploadFile
from pydantic import BaseModel, Field

from facelens.gallery.service import EnrolReport
from facelens.service.keys import Principal
from facelens.service.routes_faces import run_audited
from facelens.service.security import requires, service
from facelens.service.uploads import read_uploads
from facelens.store.tables import aware

router = APIRouter(prefix="/v1/subjects", tags=["galleries"])


class SubjectChange(BaseModel):
    name: str = Field(min_length=1, max_length=200)


@router.patch("/{subject_id}", summary="Rename a subject")
def rename(request: Request, subject_id: str, body: SubjectChange,
           principal: Principal = requires("enrol")) -> dict[str, Any]:
    state = service(request)
    state.galleries.rename_subject(subject_id, body.name)
    state.audit.record(principal.label, "subject.rename", "ok", subject=subject_id)
    subject = state.galleries.subject(subject_id)
    return {"id": subject.id, "name": subject.display_name}


@router.get("/{subject_id}/reference.jpg", summary="The subject's reference picture (the best "
            "enrolment face), for reviewing their alerts",
            responses={200: {"content": {"image/jpeg": {}}}}, response_class=Response)
def reference_picture(request: Request, subject_id: str,
                      _: Principal = requires("enrol", "events")) -> Response:
    """Sealed like the templates (gone when the subject is); shown as event snapshots are."""
    picture = service(request).galleries.reference_picture(subject_id)
    return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/{subject_id}/templates", summary="The subject's templates (not their vectors)")
def templates(request: Request, subject_id: str,
              _: Principal = requires("enrol")) -> list[dict[str, Any]]:
    return [{"id": t.id, "embedder": t.embedder, "quality": round(t.quality, 3),
             "created_at": aware(t.created_at)}
            for t in service(request).galleries.templates(subject_id)]


@router.post("/{subject_id}/images", status_code=201,
             summary="Add photos to a subject: one template per usable photo")
async def add_photos(request: Request, subject_id: str,
                     images: Annotated[list[UploadFile], File()],
                     principal: Principal = requires("enrol")) -> dict[str, Any]:
    state = service(request)
    uploads = await read_uploads(images)

    def work() -> EnrolReport:
        rgbs = [state.decode(data) for _, data in uploads]
        return state.galleries.add_photos(subject_id, list(rgbs),
                                          [name for name, _ in uploads])

    report = await run_audited(state, principal.label, "subject.add_photos", work,
                               subject=subject_id)
    await state.audited(principal.label, "subject.add_photos", "ok", subject=subject_id,
                        templates=report.templates)
    return {"subject_id": subject_id, "added": report.templates,
            "skipped": [{"image": img, "reason": why} for img, why in report.skipped]}


@router.delete("/{subject_id}/templates/{template_id}", status_code=204,
               summary="Delete one template (not the last: delete the subject instead)")
def delete_template(request: Request, subject_id: str, template_id: int,
                    principal: Principal = requires("enrol")) -> Response:
    state = service(request)
    state.galleries.delete_template(subject_id, template_id)
    state.audit.record(principal.label, "subject.delete_template", "ok", subject=subject_id,
                       template=template_id)
    return Response(status_code=204)
