"""HTTP plumbing: JSON errors with stable codes, the body-size guard, Prometheus metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facelens.errors import (
    BadImageError,
    ConflictError,
    FacelensError,
    ImageTooLargeError,
    ModelMissingError,
    NoFaceError,
    NotFoundError,
    UnsupportedImageError,
)
from facelens.liveness.answer import BadTimesError
from facelens.liveness.sessions import SessionExpired, SessionRefused
from facelens.policy.live_face import LivenessRequired
from facelens.service.limits import InferencePool, Overloaded

log = logging.getLogger("facelens.service")

# Most specific first: the first matching class decides the status and code.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (ImageTooLargeError, 413, "image_too_large"),
    (UnsupportedImageError, 415, "unsupported_media_type"),
    (BadImageError, 422, "bad_image"),
    (NoFaceError, 422, "no_face"),
    (NotFoundError, 404, "not_found"),
    (BadTimesError, 422, "bad_times"),
    (SessionExpired, 410, "liveness_expired"),
    (SessionRefused, 403, "liveness_refused"),
    (LivenessRequired, 403, "liveness_required"),
    (ConflictError, 409, "conflict"),
    (ModelMissingError, 503, "model_missing"),
    (FacelensError, 400, "rule_violation"),
]
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, for programs: validation_error, not_found, …")
    message: str = Field(description="For people: what was wrong (a field first: `name: …`)")


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused: `error.code` says why"}}
"""What every route's refusals carry, for /openapi.json: FastAPI documented its own 422 body
({"detail": [...]}), which the error handlers never send."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


REQUEST_AUDITED: ContextVar[bool] = ContextVar("facelens_request_audited", default=False)
"""Whether the request being served wrote an audit row already (enrol, identify, verify, the
liveness answer and the door audit their own refusals): a refusal then adds none."""
UNAUDITED = frozenset({("POST", "/v1/detect"), ("POST", "/v1/analyze"), ("POST", "/v1/embed"),
                       ("POST", "/v1/liveness/sessions")})
"""Routes that change nothing and whose answers are not audited, though POSTed."""


async def audit_refusal(request: Request, status: int, message: str) -> None:
    """A write refused to a known key (its scope, the body's fields, an unknown id, a conflict)
    leaves an audit row: who tried what, and why it was refused; as the routes auditing their
    own refusals do. Not reads; not 401 (no key known: an anonymous caller must not grow the
    chain); not 429 (a refused flood must not write a row a request)."""
    principal = getattr(request.state, "principal", None)
    route = request.scope.get("route")
    if (principal is None or route is None or status == 429 or REQUEST_AUDITED.get()
            or request.method in ("GET", "HEAD", "OPTIONS")
            or (request.method, route.path) in UNAUDITED):
        return
    # The action is the route's name, as enrol, identify, verify and door name theirs.
    await request.app.state.facelens.audited(
        principal.label, route.name, "refused", status=status, reason=message[:200],
        request=f"{request.method} {request.url.path}"[:300])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, e: ApiError) -> JSONResponse:
        await audit_refusal(request, e.status, e.message)
        return error_response(e.status, e.code, e.message, e.headers)

    @app.exception_handler(FacelensError)
    async def _facelens(request: Request, e: FacelensError) -> JSONResponse:
        status, code = next((s, c) for cls, s, c in _STATUS if isinstance(e, cls))
        await audit_refusal(request, status, str(e))
        return error_response(status, code, str(e))

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, e: Overloaded) -> JSONResponse:
        metrics(app)["rejected"].inc()
        return error_response(429, "overloaded", f"busy ({e}); retry shortly",
                              {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = first.get("loc", ())
        if first.get("type") == "json_invalid":  # loc: ("body", the character it failed at)
            where, why = "body", (f"not valid JSON at character {loc[-1]}: "
                                  f"{first.get('ctx', {}).get('error', 'malformed')}")
        else:  # the body as a whole (absent, a list) is "body", not ""
            where = ".".join(str(p) for p in loc if p != "body") or "body"
            why = first.get("msg", "invalid request")
        message = f"{where}: {why}"
        await audit_refusal(request, 422, message)
        return error_response(422, "validation_error", message)

    @app.exception_handler(sa.exc.DataError)
    async def _unstorable(request: Request, e: sa.exc.DataError) -> JSONResponse:
        # Any field, query or path may carry such a value, so it is answered here.
        message = unstorable(e)
        await audit_refusal(request, 422, message)
        return error_response(422, "validation_error", message)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        if type(e).__module__.startswith("redis."):  # the replicas' shared state is away:
            log.error("shared state unavailable: %s", type(e).__name__)  # refuse, retry
            return error_response(503, "shared_state_unavailable", "the rate limits, "
                                  "lockouts and sessions store is unreachable; retry shortly",
                                  {"Retry-After": "5"})
        log.error("internal error: %s", type(e).__name__, exc_info=e)
        return error_response(500, "internal", "internal error; the server log has details")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> JSONResponse:
        await audit_refusal(request, e.status_code, str(e.detail))
        headers = getattr(e, "headers", None)
        if e.status_code == 405 and (allowed := allowed_methods(request.scope)):
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}  # every route's
        return error_response(e.status_code, _HTTP_CODES.get(e.status_code, "error"),
                              str(e.detail), headers)


def allowed_methods(scope: Scope) -> list[str]:
    """The methods the app answers at the scope's path: those of every route there (Starlette's
    405 named the first route's only, so GET /v1/galleries hid its POST), HEAD wherever GET is
    and OPTIONS (Methods answers both). None for a path no route holds, or only a static
    mount (StaticFiles answers for itself)."""
    allowed = {method for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
               for route in scope["app"].router.routes if not isinstance(route, Mount)
               and route.matches({**scope, "method": method})[0] is Match.FULL}
    if "GET" in allowed:
        allowed.add("HEAD")
    return sorted(allowed | {"OPTIONS"}) if allowed else []


class Methods:
    """HEAD wherever GET is, and OPTIONS saying which methods a path takes (RFC 9110 9.3.2,
    9.3.7): FastAPI's routes answered both with 405. A HEAD runs as the GET, its body
    dropped and, once the headers are out, the GET stopped (a stream would run for minutes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = (allowed_methods(scope) if scope["type"] == "http"
                   and scope["method"] in ("HEAD", "OPTIONS") else [])
        if not allowed:
            await self.app(scope, receive, send)
        elif scope["method"] == "OPTIONS":
            await Response(status_code=204, headers={"Allow": ", ".join(allowed)})(
                scope, receive, send)
        else:
            async def headers_only(message: Message) -> None:
                if message["type"] == "http.response.body":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    raise _HeadersSent
                await send(message)

            with contextlib.suppress(_HeadersSent):
                await self.app({**scope, "method": "GET"}, receive, headers_only)


class _HeadersSent(Exception):
    pass


def unstorable(e: sa.exc.DataError) -> str:
    """Why the database refused a value of the request (PostgreSQL: a NUL in text, an integer
    out of range): the caller's to fix, not a fault."""
    why = (str(e.orig).strip().splitlines() or ["a value the database cannot store"])[0]
    log.warning("refused a value the database cannot store: %s", why)
    return f"a value cannot be stored: {why}"


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413: by Content-Length before reading, and by
    counting as it streams (chunked uploads carry no length). Paths ending in one of
    `archive_paths` (zip uploads) may carry `archive_limit` bytes instead, unless JSON."""

    def __init__(self, app: ASGIApp, limit: int, archive_limit: int = 0,
                 archive_paths: tuple[str, ...] = ()) -> None:
        self.app, self.default_limit = app, limit
        self.archive_limit, self.archive_paths = max(archive_limit, limit), archive_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        # Only a multipart archive (spooled to disk) may be large: a JSON one is read whole
        # and re-encoded in memory (json_uploads), ~6x its size (228 MB took 1.4 GB).
        archive = (kind != b"application/json"
                   and str(scope.get("path", "")).endswith(self.archive_paths))
        limit = self.archive_limit if archive else self.default_limit
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        seen, exceeded = 0, False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                exceeded = True
                raise _TooLarge
            return message

        async def unless_exceeded(message: Message) -> None:
            if not exceeded:  # the app's own error for the aborted body is replaced below
                await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, unless_exceeded)
        if exceeded:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, "body_too_large",
                                  f"request body over the {limit / 2**20:g} MB limit",
                                  {"Connection": "close"})
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


INFERENCE_ROUTES = ("/detect", "/analyze", "/embed", "/verify", "/identify", "/subjects",
                    "/not-this-person", "/door")


class Admission:
    """Refuse inference requests with 429 while the pool is full, before their bodies are
    read or their keys looked up: an overloaded server spends almost nothing on what it
    cannot serve, so /healthz and the requests it can serve stay fast."""

    def __init__(self, app: ASGIApp, pool: Callable[[], InferencePool | None]) -> None:
        self.app, self.pool = app, pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pool = self.pool() if scope["type"] == "http" else None
        if (pool is not None and pool.full and scope["method"] == "POST"
                and scope["path"].endswith(INFERENCE_ROUTES)):
            metrics_of(scope)["rejected"].inc()
            response = error_response(429, "overloaded", f"busy ({pool.pending} requests in "
                                      "progress or queued); retry shortly", {"Retry-After": "1"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


CONSOLE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
DOCS_CSP = CONSOLE_CSP.replace("default-src 'self'", "default-src 'self'; "
                               "script-src 'self' 'unsafe-inline'")  # Swagger UI's inline boot


class SecurityHeaders:
    """Every answer: no MIME sniffing, no framing; the console and /docs also a CSP that
    loads scripts from this server only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = (CONSOLE_CSP if path.startswith("/console") else
               DOCS_CSP if path.startswith("/docs") else None)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer")]
                if csp:
                    headers.append((b"content-security-policy", csp.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_metrics(app: FastAPI) -> None:
    """Per-app registry (several apps may live in one test process)."""
    registry = CollectorRegistry()
    app.state.metrics = {
        "registry": registry,
        "requests": Counter("facelens_requests", "HTTP requests", ["route", "status"],
                            registry=registry),
        "latency": Histogram("facelens_request_seconds", "HTTP latency", ["route"],
                             registry=registry),
        "pending": Gauge("facelens_inference_pending", "Requests running or queued for "
                         "inference", registry=registry),
        "rejected": Counter("facelens_overload_rejections", "Requests refused with 429 "
                            "because the inference queue was full", registry=registry),
    }

    app.add_middleware(Measure)


class Measure:
    """Requests and latency per route, for /metrics. Plain ASGI: `@app.middleware("http")`
    (BaseHTTPMiddleware) adds a task and two memory streams to every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")  # set by the router
            m = metrics_of(scope)
            m["requests"].labels(label, str(status)).inc()
            m["latency"].labels(label).observe(time.perf_counter() - start)


def metrics(app: FastAPI) -> dict[str, Any]:
    return app.state.metrics  # type: ignore[no-any-return]


def metrics_of(scope: Scope) -> dict[str, Any]:
    return metrics(scope["app"])
