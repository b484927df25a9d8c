"""/v1/galleries/{name}/subjects/zip: bulk enrolment from a zip of folders, one per person,
reported person by person as it goes (gallery/bulk.py holds the policy)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from facelens.errors import FacelensError
from facelens.gallery.bulk import Audit, Outcome, Person, ZipArchive, enrol_people
from facelens.service.http import ApiError, unstorable
from facelens.service.keys import Principal
from facelens.service.limits import Overloaded
from facelens.service.routes_faces import failure
from facelens.service.security import requires, service, still_allowed
from facelens.service.state import ServiceState
from facelens.service.uploads import ConsentFields, ConsentForm, charge_pixels

router = APIRouter(prefix="/v1", tags=["galleries"])


@router.post("/galleries/{name}/subjects/zip", summary="Enrol many people from a zip of "
             "folders (one per person), reporting each as it is done (NDJSON)",
             response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
async def enrol_zip(request: Request, name: str, archive: Annotated[UploadFile, File()],
                    consent: ConsentForm,
                    update: Annotated[bool, Form(description="Re-enrol people already "
                                                             "enrolled from a folder of the "
                                                             "same name")] = False,
                    principal: Principal = requires("enrol")) -> StreamingResponse:
    """The first line says how many people the zip holds ({"people": n}); then one line per
    person as it is done: {"done": i, "name", "status": enrolled|kept|refused, "subject_id",
    "templates", "reason", "skipped"}; the last line totals them ({"summary": {...}}). Revoking
    the key stops it before the next person: the summary then counts them as `not_reached`
    and `stopped` says why."""
    state = service(request)
    galleries = state.galleries
    galleries.gallery(name)  # an unknown gallery is a 404 before the upload is read
    consent.record.check()
    people = (await run_in_threadpool(ZipArchive, archive.file)).people()

    def audit(action: str, outcome: str, **fields: Any) -> None:
        state.audit.record(principal.label, action, outcome, **fields)

    async def lines() -> AsyncIterator[bytes]:
        yield _line({"people": len(people)})
        totals: dict[str, int] = {}
        for done, person in enumerate(people, start=1):
            if not await run_in_threadpool(still_allowed, request, "enrol"):
                left = len(people) - done + 1
                audit("enrol.zip", "stopped", gallery=name, reason="key revoked",
                      not_reached=left)
                yield _line({"summary": {**totals, "not_reached": left},
                             "stopped": f"the key was revoked: {left} people not enrolled"})
                return
            outcome = await _enrol_one(state, name, person, consent, audit, update)
            totals[outcome.status] = totals.get(outcome.status, 0) + 1
            yield _line({"done": done, **outcome.payload()})
        yield _line({"summary": totals})

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode() + b"\n"


async def _enrol_one(state: ServiceState, gallery: str, person: Person, consent: ConsentFields,
                     audit: Audit, update: bool) -> Outcome:
    """One person of a zip: photos read and charged to the key here, enrolled in the pool
    (waiting for a free thread rather than failing the rest of the zip)."""
    try:
        photos = await run_in_threadpool(lambda: [p.read() for p in person.images])
        for data in photos:
            charge_pixels(data)
    except (FacelensError, ApiError) as e:
        audit("enrol", **failure(e), gallery=gallery, external_id=person.name)
        return Outcome(person.name, "refused", reason=str(e))
    one = Person(person.name, photos, person.labels)

    def work() -> Outcome:
        return next(enrol_people(state.galleries, gallery, [one], consent.record, audit=audit,
                                 update=update, watch_reason=consent.watch_reason,
                                 watch_expires=consent.watch_expires, decode=state.decode))

    while True:
        try:
            return await state.pool.run(work)
        except Overloaded:
            await asyncio.sleep(0.5)
        except sa.exc.DataError as e:  # a form value PostgreSQL cannot store (a NUL): the
            # answer has begun, so the person is refused rather than the stream cut short
            reason = unstorable(e)
            audit("enrol", "refused", reason=reason, gallery=gallery, external_id=person.name)
            return Outcome(person.name, "refused", reason=reason)
