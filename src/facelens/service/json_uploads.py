"""Base64 JSON bodies for the routes that take uploads, as Rekognition and CompreFace accept.

Every such route reads a multipart form. A JSON body sent to one of them is rewritten into that
form before the route sees it: the fields the route reads as files are base64-decoded into file
parts (a list into several; a `data:` URL prefix is allowed), the others become form fields.
The routes, their checks and their OpenAPI stay as they are; which fields are files is read
from the app's own OpenAPI document, so a new upload route takes JSON without a change here.
URLs are never fetched.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facelens.service.http import error_response

Upload = tuple[re.Pattern[str], frozenset[str]]
"""A route that takes uploads: its path (as a pattern) and the names of its file fields."""


def upload_routes(spec: dict[str, Any]) -> list[Upload]:
    """The POST routes of an OpenAPI document whose body is multipart, with their file fields
    (binary strings, or arrays of them)."""
    schemas = spec.get("components", {}).get("schemas", {})
    found = []
    for path, operations in spec.get("paths", {}).items():
        body = operations.get("post", {}).get("requestBody", {}).get("content", {})
        if "multipart/form-data" not in body:
            continue
        schema = body["multipart/form-data"]["schema"]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        files = frozenset(name for name, field in schema.get("properties", {}).items()
                          if "application/octet-stream" in json.dumps(field))
        if files:
            pattern = re.escape(path).replace(r"\{", "{").replace(r"\}", "}")
            found.append((re.compile("^" + re.sub(r"{[^}]+}", "[^/]+", pattern) + "$"), files))
    return found


class JsonError(ValueError):
    """The JSON body cannot become the route's form."""


def as_multipart(body: bytes, files: frozenset[str]) -> tuple[bytes, str]:
    """A JSON object as multipart/form-data (body, boundary): `files` base64-decoded."""
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JsonError(f"not JSON: {e}") from None
    except RecursionError:  # "[[[[…": Python's parser recurses once per level
        raise JsonError("not JSON: nested too deeply") from None
    if not isinstance(fields, dict):
        raise JsonError("the body must be a JSON object")
    boundary = "facelens-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        for number, item in enumerate(values):
            if item is None:
                continue
            if isinstance(item, dict | list):
                raise JsonError(f"{name}: a value, or a list of values")
            if name in files:
                data, filename = _decoded(name, item), f"{name}-{number}"
                head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
                        "\r\nContent-Type: application/octet-stream")
            else:
                data = (str(item).lower() if isinstance(item, bool) else str(item)).encode()
                head = f'Content-Disposition: form-data; name="{name}"'
            parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), boundary


def _decoded(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise JsonError(f"{name}: base64 text expected")
    if value.startswith("data:"):  # data:image/jpeg;base64,....
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise JsonError(f"{name}: not valid base64") from None


class JsonUploads:
    """ASGI middleware: a JSON POST to an upload route becomes its multipart form. It sits
    inside BodyLimit, so the JSON it reads whole is already bounded."""

    def __init__(self, app: ASGIApp, spec: Callable[[], dict[str, Any]]) -> None:
        self.app, self.spec = app, spec
        self._routes: list[Upload] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        files = self._files(scope) if scope["type"] == "http" else None
        if files is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            body, boundary = as_multipart(b"".join(chunks), files)
        except JsonError as e:
            await error_response(422, "bad_json", str(e))(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"]
                   if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                    (b"content-length", str(len(body)).encode())]
        sent = False

        async def replayed() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the client's disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replayed, send)

    def _files(self, scope: Scope) -> frozenset[str] | None:
        """The file fields of the upload route a JSON POST is for, or None."""
        if scope["method"] != "POST":
            return None
        kind = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            return None
        if self._routes is None:
            self._routes = upload_routes(self.spec())
        path = scope.get("path", "")
        return next((files for pattern, files in self._routes if pattern.match(path)), None)
