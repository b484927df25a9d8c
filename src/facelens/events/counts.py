"""Street counts in the database (table scene_counts): tracks per camera, minute (UTC) and
class, added to by the cameras, read back per minute or hour, pruned by age.

This is all the street layer keeps about passers-by: a row holds a number, never a track.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from facelens.store.database import Store
from facelens.store.tables import SceneCount, as_utc, utcnow

Bucket = Literal["minute", "hour"]
CountKey = tuple[str, str, datetime]
"""(camera, class, minute)."""


def minute_of(moment: datetime) -> datetime:
    """The UTC minute `moment` falls in."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


class SceneCounts:
    def __init__(self, store: Store) -> None:
        self.sessions = store.sessions

    def add(self, counts: Mapping[CountKey, int]) -> None:
        """Add to the stored counts in one transaction: an upsert per (camera, minute, class),
        so two flushes of one minute (or two workers) sum rather than overwrite."""
        rows = [{"camera": camera, "kind": kind, "minute": minute_of(minute), "tracks": n}
                for (camera, kind, minute), n in counts.items() if n > 0]
        if not rows:
            return
        with self.sessions.begin() as s:
            dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            for row in rows:
                insert = dialect.insert(SceneCount).values(**row)
                s.execute(insert.on_conflict_do_update(
                    index_elements=["camera", "minute", "kind"],
                    set_={"tracks": SceneCount.tracks + insert.excluded.tracks}))

    def series(self, camera: str | None, since: datetime, until: datetime,
               bucket: Bucket = "minute") -> list[dict[str, Any]]:
        """Buckets in [since, until) that hold counts, oldest first: {"at", "counts": {class:
        tracks}}; `camera` None sums every camera."""
        with self.sessions() as s:
            at = self._bucket(s.get_bind().dialect.name, bucket)
            query = (sa.select(at.label("at"), SceneCount.kind, sa.func.sum(SceneCount.tracks))
                     .where(SceneCount.minute >= minute_of(since),
                            SceneCount.minute < until.astimezone(UTC))
                     .group_by(at, SceneCount.kind).order_by(at))
            if camera is not None:
                query = query.where(SceneCount.camera == camera)
            rows = s.execute(query).all()
        out: dict[datetime, dict[str, int]] = {}
        for moment, kind, tracks in rows:
            start = moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)
            out.setdefault(as_utc(start), {})[kind] = int(tracks)
        return [{"at": at_, "counts": counts} for at_, counts in out.items()]

    def kept_for(self, camera: str) -> bool:
        """Whether any counts of `camera` are kept (a removed camera's, until they expire)."""
        with self.sessions() as s:
            return s.scalars(sa.select(SceneCount.camera).where(SceneCount.camera == camera)
                             .limit(1)).first() is not None

    @staticmethod
    def _bucket(dialect: str, bucket: Bucket) -> Any:
        """The SQL expression of a row's bucket start (UTC)."""
        if bucket == "minute":
            return SceneCount.minute
        if dialect == "postgresql":  # date_trunc of a timestamptz would use the session's zone
            return sa.func.date_trunc("hour", sa.func.timezone("UTC", SceneCount.minute))
        return sa.func.strftime("%Y-%m-%d %H:00:00", SceneCount.minute)

    def prune(self, older_than_days: float) -> int:
        """Delete counts older than the retention period; how many rows went."""
        cutoff = utcnow() - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            return int(s.execute(sa.delete(SceneCount).where(SceneCount.minute < cutoff))
                       .rowcount)
