"""Who is calling: API keys from `Authorization: Bearer …` or `X-API-Key`, checked for scope
and rate on every route but /healthz."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from facelens.service.http import REQUEST_AUDITED, ApiError
from facelens.service.keys import Principal
from facelens.service.limits import ProbeLimiter, RateLimiter
from facelens.service.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer fl_…")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)
CALLER: ContextVar[tuple[Request, Principal]] = ContextVar("facelens_caller")
"""The request being served and its key: what an upload's pixels are charged to."""


def service(request: Request) -> ServiceState:
    return request.app.state.facelens  # type: ignore[no-any-return]


def requires(*scopes: str) -> Any:
    """A dependency: the caller's Principal if its key holds one of `scopes` (admin holds all);
    any valid key when `scopes` is empty."""

    async def principal(request: Request,
                        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
                        header: str | None = Security(_header)) -> Principal:
        state = service(request)
        REQUEST_AUDITED.set(False)
        key = bearer.credentials if bearer else header
        if not key:
            raise ApiError(401, "unauthorized", "an API key is required "
                           "(Authorization: Bearer fl_… or X-API-Key)",
                           {"WWW-Authenticate": "Bearer"})
        found = state.keys.authenticate(key)
        if found is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key",
                           {"WWW-Authenticate": "Bearer"})
        request.state.principal = found  # a refusal from here on is audited as the key's
        if scopes and not found.allows(*scopes):
            raise ApiError(403, "forbidden",
                           f"this key lacks the {' or '.join(scopes)} scope")
        wait = state.limiter.allow(found.id)
        if wait:
            raise ApiError(429, "rate_limited", "too many requests for this key",
                           {"Retry-After": str(max(1, round(wait)))})
        request.state.api_key = key
        CALLER.set((request, found))  # the route runs in this task: uploads see it
        return found

    return Depends(principal)


def still_allowed(request: Request, *scopes: str) -> bool:
    """For an answer that streams: whether the key that opened it still holds `scopes`, so
    revoking a key ends its open streams (at once in this process, within the key cache's
    5 s in others) instead of at the stream's end, an hour later or never."""
    found = service(request).keys.authenticate(request.state.api_key)
    return found is not None and found.allows(*scopes)


def pixel_budget(request: Request) -> RateLimiter:
    """Decoded megapixels per key."""
    return service(request).pixel_budget


def probe_limiter(request: Request) -> ProbeLimiter:
    """Near-duplicate identify probes per key."""
    return service(request).probes
