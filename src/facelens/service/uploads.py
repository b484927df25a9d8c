"""What every route that takes a photo shares: accepted upload types, the pixel charge per key,
the `far` form field, expiry dates, and the consent fields both enrol forms carry."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import Depends, Form, Request, UploadFile
from pydantic import BeforeValidator

from facelens.gallery.service import ConsentRecord
from facelens.service.http import ApiError
from facelens.service.limits import HEAVY, HEAVY_PIXELS
from facelens.service.params import Moment
from facelens.service.security import CALLER, pixel_budget
from facelens.vision.decode import image_size

ACCEPTED_TYPES = {"image/jpeg", "image/png", "image/webp", "application/octet-stream"}
Far = Annotated[float, Form(ge=1e-5, le=1e-1, description="False-accept rate to decide at.")]


def end_of(day: date | None) -> datetime | None:
    """A date given for an expiry: the end of that day (UTC)."""
    return datetime.combine(day, time.max, UTC) if day else None


def _day_means_its_end(value: object) -> object:
    if isinstance(value, str) and len(value) == len("YYYY-MM-DD"):
        with contextlib.suppress(ValueError):
            return end_of(date.fromisoformat(value))
    return value


EndTime = Annotated[Moment, BeforeValidator(_day_means_its_end)]
"""An end time in a JSON body: a date alone means the end of that day (UTC), as the enrol forms'
expiry dates do (pydantic read it as the day's first instant)."""


@dataclass(frozen=True)
class ConsentFields:
    """What an enrolment form says of the person's consent and, for a watchlist, why and until
    when they are watched (one person's form and the zip's alike)."""

    record: ConsentRecord
    watch_reason: str | None
    watch_expires: datetime | None


def consent_fields(legal_basis: Annotated[str, Form(max_length=100)],
                   consent_purpose: Annotated[str, Form(min_length=1, max_length=500)],
                   recorded_by: Annotated[str, Form(min_length=1, max_length=200)],
                   consent_expires: Annotated[date | None, Form()] = None,
                   watch_reason: Annotated[str | None, Form(max_length=500)] = None,
                   watch_expires: Annotated[date | None, Form()] = None) -> ConsentFields:
    return ConsentFields(ConsentRecord(purpose=consent_purpose, legal_basis=legal_basis,
                                       recorded_by=recorded_by,
                                       expires_at=end_of(consent_expires)),
                         watch_reason, end_of(watch_expires))


ConsentForm = Annotated[ConsentFields, Depends(consent_fields)]


async def one_value_per_field(request: Request) -> None:
    """A form field the route reads as one value (all but its lists) is refused when sent
    several times: the last was taken alone, so obama and biden sent to /v1/detect answered
    biden's face with no word of obama's photo, name=a&name=b enrolled "b", and JSON's
    {"top_k": [1, 2]} (json_uploads: a list is several fields) asked for 2."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    route = request.scope.get("route")
    if kind not in FORMS or route is None:
        return
    form = await request.form()  # parsed already, for the route's own fields
    lists = _list_fields(request.app.openapi(), route.path)
    for field in form.keys() - lists:
        if (sent := form.getlist(field))[1:]:
            what = "value" if isinstance(sent[0], str) else "file"
            raise ApiError(422, "validation_error",
                           f"{field}: one {what} expected, {len(sent)} sent")


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _list_fields(spec: dict[str, Any], path: str) -> frozenset[str]:
    """The form fields of `path`'s POST that its OpenAPI schema says are arrays."""
    content = spec["paths"].get(path, {}).get("post", {}).get("requestBody", {}).get(
        "content", {})
    schema = next((content[kind]["schema"] for kind in FORMS if kind in content), {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return frozenset(name for name, field in schema.get("properties", {}).items()
                     if "array" in (field.get("type"), *(f.get("type") for f in
                                                          field.get("anyOf", ()))))


async def read_upload(upload: UploadFile) -> bytes:
    """The bytes of an uploaded image whose declared type (if any) is one we accept; what
    the bytes really are is checked again when they are decoded."""
    # Media types are case-insensitive (RFC 9110): IMAGE/JPEG is image/jpeg.
    declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if declared not in ACCEPTED_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"{upload.filename or 'upload'}: {declared} is not JPEG, PNG or WebP")
    data = await upload.read()
    charge_pixels(data)
    return data


async def read_uploads(images: list[UploadFile]) -> list[tuple[str, bytes]]:
    """Each uploaded image's name (its file name, else "image N") and bytes, read in order."""
    return [(u.filename or f"image {i}", await read_upload(u)) for i, u in enumerate(images)]


def charge_pixels(data: bytes) -> None:
    """Charge the caller's key the megapixels the header announces, before any is decoded."""
    size = image_size(data)
    caller = CALLER.get(None)
    if size is None or caller is None:
        return  # unreadable: the decoder refuses it for nothing
    if size[0] * size[1] > HEAVY_PIXELS:
        HEAVY.set(True)  # the route runs in this task: its pool.run sees it
    request, principal = caller
    wait = pixel_budget(request).allow(principal.id, size[0] * size[1] / 1e6)
    if wait:
        raise ApiError(429, "pixel_budget", "this key decoded too many megapixels; "
                       f"retry in {wait:.0f} s", {"Retry-After": str(max(1, round(wait)))})
