"""What every route that takes a photo shares: accepted upload types, the `far` form field."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, UploadFile

from facelens.service.http import ApiError

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
