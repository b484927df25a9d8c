"""/v1/me, /v1/keys, /v1/audit, /v1/events, /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facelens.gallery.index_cache import IndexCache
from facelens.service.http import ApiError, metrics
from facelens.service.keys import Principal
from facelens.service.params import Moment
from facelens.service.security import requires, service, still_allowed
from facelens.store.tables import Event, EventStatus, as_utc, aware

router = APIRouter(tags=["admin"])


@router.get("/v1/me", summary="The calling key: id, name, scopes; whether the server "
                               "estimates age and sex")
def me(request: Request, principal: Principal = requires()) -> dict[str, Any]:
    return {"id": principal.id, "name": principal.name, "scopes": sorted(principal.scopes),
            "attributes": service(request).settings.attributes}


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)


@router.get("/v1/keys")
def list_keys(request: Request, _: Principal = requires("admin")) -> list[dict[str, Any]]:
    return [{"id": k.id, "name": k.name, "scopes": k.scopes, "created_at": aware(k.created_at),
             "revoked_at": aware(k.revoked_at)} for k in service(request).keys.list()]


@router.post("/v1/keys", status_code=201, summary="Make a key; the key is shown only here")
def create_key(request: Request, body: NewKey,
               principal: Principal = requires("admin")) -> dict[str, Any]:
    state = service(request)
    made, key = state.keys.create(body.name, body.scopes)
    state.audit.record(principal.label, "key.create", "ok", key_id=made.id,
                       scopes=sorted(made.scopes))
    return {"id": made.id, "name": made.name, "scopes": sorted(made.scopes), "key": key}


@router.delete("/v1/keys/{key_id}", status_code=204)
def revoke_key(request: Request, key_id: str,
               principal: Principal = requires("admin")) -> Response:
    state = service(request)
    state.keys.revoke(key_id)
    state.audit.record(principal.label, "key.revoke", "ok", key_id=key_id)
    return Response(status_code=204)


@router.get("/v1/audit")
def audit_entries(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  _: Principal = requires("admin")) -> list[dict[str, Any]]:
    return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
             "gallery": e.gallery, "subject": e.subject, "outcome": e.outcome,
             "detail": json.loads(e.detail), "hash": e.hash}
            for e in service(request).audit.entries(limit)]


@router.get("/v1/audit/verify", summary="Check the hash chain of the audit log")
def audit_verify(request: Request, _: Principal = requires("admin")) -> dict[str, Any]:
    check = service(request).audit.verify()
    return {"ok": check.ok, "entries": check.entries, "broken_at": check.broken_at,
            "reason": check.reason}


EventKind = Literal["face", "plate", "rule"]
"""What an event is of (Event.kind): a filter naming no kind matched nothing, silently."""


def event_payload(event: Event) -> dict[str, Any]:
    return {"id": event.id, "kind": event.kind, "camera": event.camera, "at": aware(event.at),
            "gallery": event.gallery, "hotlist_id": event.hotlist_id, "rule_id": event.rule_id,
            "subject_id": event.subject_id, "subject_name": event.subject_name,
            "confidence": event.confidence, "status": event.status,
            "has_snapshot": event.snapshot is not None, "has_frame": event.frame is not None,
            "reviewed_by": event.reviewed_by,
            "reviewed_at": aware(event.reviewed_at), "details": event.details}


@router.get("/v1/events", tags=["events"], responses={200: {"headers": {"X-Next-Cursor": {
    "description": "When more events match: the `cursor` of the next page",
    "schema": {"type": "string"}}}}})
def list_events(request: Request, response: Response,
                status: EventStatus | None = None,
                camera: str | None = None,
                subject_id: str | None = None,
                gallery: str | None = None,
                kind: Annotated[EventKind | None, Query()] = None,
                plate: Annotated[str | None, Query(
                    description="Alerts of the hotlist entries for this plate")] = None,
                since: Annotated[Moment | None, Query(
                    description="ISO-8601; events at or after it")] = None,
                cursor: Annotated[int | None, Query(
                    description="The X-Next-Cursor header of the previous page")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                _: Principal = requires("events")) -> list[dict[str, Any]]:
    """Newest first, narrowed by every filter given. When more events match, the response
    carries `X-Next-Cursor`: pass it as `cursor` for the next page."""
    found = service(request).events.list(
        status, limit + 1, camera=camera, subject_id=subject_id, gallery=gallery, kind=kind,
        plate=plate, since=since and as_utc(since), before=cursor)
    if len(found) > limit:
        found = found[:limit]
        response.headers["X-Next-Cursor"] = str(found[-1].id)
    return [event_payload(e) for e in found]


@router.get("/v1/events/stream", tags=["events"],
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(request: Request,
                        after: Annotated[int | None, Query(
                            description="The last event id already shown (default: now)")] = None,
                        max_s: Annotated[float, Query(gt=0, le=3600)] = 300,
                        _: Principal = requires("events")) -> StreamingResponse:
    """Server-Sent Events: each event recorded after `after` as `event: alert` with the
    event's JSON (`id:` its id, so a client resumes from it); a comment every 15 s keeps
    proxies open. The stream ends after `max_s` seconds: reconnect with the last id."""
    events = service(request).events

    def newest() -> int:
        found = events.list(limit=1)
        return found[0].id if found else 0

    async def stream() -> AsyncIterator[str]:
        last = after if after is not None else await run_in_threadpool(newest)
        started = quiet = time.monotonic()
        yield "retry: 2000\n\n"
        while (time.monotonic() - started < max_s and not await request.is_disconnected()
               and await run_in_threadpool(still_allowed, request, "events")):
            fresh = await run_in_threadpool(events.list, None, 100, after=last)
            for event in fresh:
                last = event.id
                body = json.dumps(event_payload(event), default=str)
                yield f"id: {event.id}\nevent: alert\ndata: {body}\n\n"
                quiet = time.monotonic()
            if time.monotonic() - quiet > 15:
                yield ": still here\n\n"
                quiet = time.monotonic()
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


STREAM_POLL_S = 1.0
"""How often the stream looks for new events: cameras record from other threads and
processes, so the database is the one place every new event shows up."""


@router.get("/v1/events/{event_id}", tags=["events"])
def get_event(request: Request, event_id: int,
              _: Principal = requires("events")) -> dict[str, Any]:
    return event_payload(service(request).events.get(event_id))


@router.get("/v1/events/{event_id}/snapshot", tags=["events"],
            responses={200: {"content": {"image/jpeg": {}}}})
def event_snapshot(request: Request, event_id: int,
                   _: Principal = requires("events")) -> Response:
    """The matched person's best shot."""
    return Response(service(request).events.image(event_id), media_type="image/jpeg",
                    headers={"Cache-Control": "no-store"})


@router.get("/v1/events/{event_id}/frame", tags=["events"],
            responses={200: {"content": {"image/jpeg": {}}}})
def event_frame(request: Request, event_id: int,
                _: Principal = requires("events")) -> Response:
    """The whole frame, every face but the matched one blurred."""
    return Response(service(request).events.image(event_id, "frame"), media_type="image/jpeg",
                    headers={"Cache-Control": "no-store"})


def _review(request: Request, event_id: int, status: str, principal: Principal
            ) -> dict[str, Any]:
    state = service(request)
    event = state.events.review(event_id, status, principal.label)
    state.audit.record(principal.label, f"event.{status[:-2]}", "ok", subject=event.subject_id,
                       event=event_id)
    if state.cameras.sink is not None:  # webhooks and MQTT hear the review as they heard the alert
        state.cameras.sink.send({"type": "review", "event_id": event.id, "camera": event.camera,
                                 "subject_id": event.subject_id, "status": event.status,
                                 "reviewed_by": event.reviewed_by,
                                 "reviewed_at": aware(event.reviewed_at)})
    return event_payload(event)


class BulkReview(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=500)
    status: EventStatus = Field(description="confirmed or dismissed")


@router.post("/v1/events/review", tags=["events"],
             summary="Confirm or dismiss several events at once")
def review_events(request: Request, body: BulkReview,
                  principal: Principal = requires("events")) -> list[dict[str, Any]]:
    """Each event is reviewed (and audited, and published) as by its own confirm or dismiss;
    an unknown id refuses the request before any is changed."""
    if body.status not in ("confirmed", "dismissed"):
        raise ApiError(422, "validation_error", "status: confirmed or dismissed")
    state = service(request)
    for event_id in body.ids:
        state.events.get(event_id)  # NotFoundError (404) for an unknown id
    return [_review(request, event_id, body.status, principal) for event_id in body.ids]


@router.post("/v1/events/{event_id}/confirm", tags=["events"])
def confirm_event(request: Request, event_id: int,
                  principal: Principal = requires("events")) -> dict[str, Any]:
    return _review(request, event_id, "confirmed", principal)


@router.post("/v1/events/{event_id}/dismiss", tags=["events"])
def dismiss_event(request: Request, event_id: int,
                  principal: Principal = requires("events")) -> dict[str, Any]:
    return _review(request, event_id, "dismissed", principal)


@router.delete("/v1/events/{event_id}", tags=["events"], status_code=204)
def delete_event(request: Request, event_id: int,
                 principal: Principal = requires("events")) -> Response:
    state = service(request)
    state.events.delete(event_id)
    state.audit.record(principal.label, "event.delete", "ok", event=event_id)
    return Response(status_code=204)


@router.get("/metrics", tags=["admin"], responses={200: {"content": {"text/plain": {}}}})
def prometheus(request: Request, _: Principal = requires("metrics")) -> Response:
    m = metrics(request.app)
    m["pending"].set(service(request).pool.pending)
    indexes = CollectorRegistry()  # read from the cache at each scrape
    indexes.register(IndexCacheMetrics(service(request).galleries.cache))
    return Response(generate_latest(m["registry"]) + generate_latest(indexes),
                    media_type=CONTENT_TYPE_LATEST)


class IndexCacheMetrics(Collector):
    """How this replica keeps its gallery indexes current: deltas applied one by one, full
    id compares, builds and repairs (the costly path), and each held index's size and
    version."""

    def __init__(self, cache: IndexCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.cache.stats
        for name, value, doc in (
                ("deltas", stats.deltas, "Gallery changes applied to an index one by one"),
                ("announced", stats.announced, "Gallery changes announced by other replicas"),
                ("loads", stats.loads, "Saved indexes taken as they were (current)"),
                ("builds", stats.builds, "Indexes built from all decrypted templates"),
                ("full_checks", stats.full_checks, "Shared indexes' ids compared with the "
                 "database's"),
                ("repairs", stats.repairs, "Full checks that added or removed ids"),
                ("gaps", stats.gaps, "Gallery versions no announcement covered in time")):
            yield CounterMetricFamily(f"facelens_index_{name}", doc, value=value)
        faces = GaugeMetricFamily("facelens_index_faces", "Faces in each held gallery index",
                                  labels=["gallery"])
        version = GaugeMetricFamily("facelens_index_version", "Gallery version each held "
                                    "index is current at", labels=["gallery"])
        for gallery, size, at in self.cache.held():
            faces.add_metric([gallery], size)
            version.add_metric([gallery], at)
        yield faces
        yield version
