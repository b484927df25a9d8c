"""/v1/hotlists/plates and /v1/rules: what the street layer may alert on. Reading needs the
events scope; adding and deleting needs admin, and every change is audited. Each entry needs
a reason and an expiry (plates: at most a year ahead; rules: at most 30 days).

/v1/cameras/{name}/counts: the street counts (tracks per class and minute or hour), read with
the events scope like the cameras' other views."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from facelens.errors import FacelensError, NotFoundError
from facelens.events.counts import Bucket, SceneCounts
from facelens.events.hotlist_store import HotlistStore
from facelens.service.keys import Principal
from facelens.service.params import Moment, RowId
from facelens.service.security import requires, service
from facelens.service.uploads import EndTime
from facelens.settings import NAME_PATTERN
from facelens.store.tables import PlateHotlistEntry, SceneRule, as_utc, aware, utcnow

router = APIRouter(tags=["scene"])
CameraName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100)]
"""A camera's name as cameras are named: another can have no counts."""
SPAN = {"minute": timedelta(days=2), "hour": timedelta(days=93)}
"""The longest window one request may ask for per bucket size (at most ~3,000 buckets), and,
less a day, its default: the last day by minute, the last 92 days by hour."""


class NewPlate(BaseModel):
    plate: str = Field(min_length=2, max_length=40)
    reason: str = Field(min_length=3, max_length=500)
    expires_at: EndTime


class NewRule(BaseModel):
    description: str = Field(min_length=2, max_length=200,
                             examples=["red car", "child, red top"])
    reason: str = Field(min_length=3, max_length=500)
    expires_at: EndTime
    cameras: list[str] = Field(default_factory=list, max_length=100)
    """Cameras it applies to; empty: every camera."""
    active_from: Moment | None = None
    active_to: EndTime | None = None


def _hotlists(request: Request) -> HotlistStore:
    return HotlistStore(service(request).store)


def _live(expires_at: datetime) -> bool:
    expires = aware(expires_at)
    return expires is not None and expires > utcnow()


def plate_payload(row: PlateHotlistEntry) -> dict[str, Any]:
    return {"id": row.id, "plate": row.plate, "plate_key": row.plate_key, "reason": row.reason,
            "expires_at": aware(row.expires_at), "added_by": row.added_by,
            "created_at": aware(row.created_at), "live": _live(row.expires_at)}


def rule_payload(row: SceneRule) -> dict[str, Any]:
    """`live` until it can match no more: a past active_to ends it as its expiry does."""
    expires, until = aware(row.expires_at), aware(row.active_to)
    assert expires is not None
    return {"id": row.id, "description": row.description, "cameras": row.cameras,
            "active_from": aware(row.active_from), "active_to": until,
            "reason": row.reason, "expires_at": expires, "added_by": row.added_by,
            "created_at": aware(row.created_at),
            "live": _live(min(expires, until) if until else expires)}


@router.get("/v1/hotlists/plates")
def list_plates(request: Request, _: Principal = requires("events")) -> list[dict[str, Any]]:
    return [plate_payload(row) for row in _hotlists(request).plates()]


@router.post("/v1/hotlists/plates", status_code=201)
def add_plate(request: Request, body: NewPlate,
              principal: Principal = requires("admin")) -> dict[str, Any]:
    row = _hotlists(request).add_plate(body.plate, body.reason, as_utc(body.expires_at),
                                       principal.label)
    payload = plate_payload(row)
    service(request).audit.record(principal.label, "hotlist.add", "ok", hotlist_id=row.id,
                                  plate=row.plate, reason=row.reason,
                                  expires_at=payload["expires_at"].isoformat())
    return payload


@router.delete("/v1/hotlists/plates/{entry_id}", status_code=204)
def delete_plate(request: Request, entry_id: RowId,
                 principal: Principal = requires("admin")) -> Response:
    _hotlists(request).delete("plate", entry_id)
    service(request).audit.record(principal.label, "hotlist.delete", "ok", hotlist_id=entry_id)
    return Response(status_code=204)


@router.get("/v1/rules")
def list_rules(request: Request, _: Principal = requires("events")) -> list[dict[str, Any]]:
    return [rule_payload(row) for row in _hotlists(request).rules()]


@router.post("/v1/rules", status_code=201)
def add_rule(request: Request, body: NewRule,
             principal: Principal = requires("admin")) -> dict[str, Any]:
    row = _hotlists(request).add_rule(
        body.description, body.reason, as_utc(body.expires_at), principal.label, body.cameras,
        body.active_from and as_utc(body.active_from), body.active_to and as_utc(body.active_to))
    payload = rule_payload(row)
    service(request).audit.record(principal.label, "rule.add", "ok", rule_id=row.id,
                                  description=row.description, reason=row.reason,
                                  cameras=row.cameras,
                                  expires_at=payload["expires_at"].isoformat())
    return payload


@router.delete("/v1/rules/{entry_id}", status_code=204)
def delete_rule(request: Request, entry_id: RowId,
                principal: Principal = requires("admin")) -> Response:
    _hotlists(request).delete("rule", entry_id)
    service(request).audit.record(principal.label, "rule.delete", "ok", rule_id=entry_id)
    return Response(status_code=204)


Since = Annotated[Moment | None, Query(description="Default: one span before `until`.")]
Until = Annotated[Moment | None, Query(description="Default: now.")]
BucketSize = Annotated[Bucket, Query()]


@router.get("/v1/cameras/{name}/counts")
def camera_counts(request: Request, name: CameraName, since: Since = None, until: Until = None,
                  bucket: BucketSize = "minute",
                  _: Principal = requires("events")) -> dict[str, Any]:
    """Tracks the camera's street layer counted per class, in minute or hour buckets (UTC)
    from `since` up to `until`. Only buckets with counts are listed; `totals` sums them per
    class."""
    return _counts(request, name, since, until, bucket)


@router.get("/v1/counts")
def all_counts(request: Request, since: Since = None, until: Until = None,
               bucket: BucketSize = "minute",
               _: Principal = requires("events")) -> dict[str, Any]:
    """The same summed over every camera (removed ones too, until their counts expire)."""
    return _counts(request, None, since, until, bucket)


def _counts(request: Request, camera: str | None, since: datetime | None,
            until: datetime | None, bucket: Bucket) -> dict[str, Any]:
    end = as_utc(until) if until else utcnow()
    start = as_utc(since) if since else end - (SPAN[bucket] - timedelta(days=1))
    if bucket == "hour":  # whole hours only: the first bucket is not a part of one
        start = start.replace(minute=0, second=0, microsecond=0)
    if not start < end <= start + SPAN[bucket]:
        raise FacelensError(f"since must be before until, at most {SPAN[bucket].days} days "
                            f"apart for {bucket} buckets")
    counts = SceneCounts(service(request).store)
    if camera is not None and not counts.kept_for(camera) and camera not in {
            c.name for c in service(request).cameras.configs()}:
        raise NotFoundError(f"no camera {camera!r}, and no counts kept of one of that name")
    buckets = counts.series(camera, start, end, bucket)
    totals: dict[str, int] = {}
    for row in buckets:
        for kind, tracks in row["counts"].items():
            totals[kind] = totals.get(kind, 0) + tracks
    return {"camera": camera, "bucket": bucket, "since": start, "until": end,
            "totals": totals, "buckets": buckets}
