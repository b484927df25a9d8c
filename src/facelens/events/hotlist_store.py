"""Plate hotlist entries and description rules in the database: added with a reason and an
expiry, deleted, and loaded as a `Hotlists` snapshot for matching (events/hotlists.py).

Each entry holds a data key, wrapped by the master key, that its alerts' crops are sealed
under; deleting the entry deletes its events (the foreign key cascades) and the key with them.
Expired entries stay listed (for review) but are never in a snapshot, so never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from facelens.errors import FacelensError, NotFoundError
from facelens.events.hotlists import (
    DescriptionRule,
    Hotlists,
    PlateEntry,
    check_description,
    listed_plate,
    parse_description,
)
from facelens.events.hotlists import plate_key as key_of
from facelens.settings import NAME_PATTERN
from facelens.store.crypto import new_data_key
from facelens.store.database import Store
from facelens.store.tables import (
    SCENE_ENTRIES,
    PlateHotlistEntry,
    SceneAlertWindow,
    SceneRule,
    aware,
    entry_owner,
    utcnow,
)

MAX_PLATE_DAYS = 365
"""The longest a plate entry may run before someone renews it."""
MAX_RULE_DAYS = 30
"""Description rules are for a search (a missing child), not standing surveillance."""


def _expiry(expires_at: datetime, max_days: int, now: datetime) -> datetime:
    expires = aware(expires_at)
    assert expires is not None
    if expires <= now:
        raise FacelensError("expires_at must be in the future")
    if expires > now + timedelta(days=max_days):
        raise FacelensError(f"expires_at may be at most {max_days} days ahead")
    return expires


def to_rule(row: SceneRule) -> DescriptionRule | None:
    """The rule as matched: live from active_from until active_to or expiry, whichever first.
    None for a description stored before every word had to be understood ("car red"): what it
    would match is not what it says."""
    try:
        kind, wanted = parse_description(row.description)
    except FacelensError:
        return None
    expires = aware(row.expires_at)
    until = aware(row.active_to)
    assert expires is not None
    return DescriptionRule(name=str(row.id), kind=kind, wanted=wanted, reason=row.reason,
                           added_by=row.added_by, start=aware(row.active_from) or expires,
                           expires=min(expires, until) if until else expires,
                           cameras=frozenset(row.cameras))


@dataclass
class Loaded:
    """A snapshot for matching, and which stored entry each plate key and rule name is."""

    hotlists: Hotlists
    plate_ids: dict[str, int] = field(default_factory=dict)

    def target(self, matched: str) -> tuple[str, int] | None:
        """("plate", id) or ("rule", id) for SceneWatch's "plate:<text>" / "rule:<name>"."""
        kind, _, name = matched.partition(":")
        if kind == "plate":
            found = self.plate_ids.get(key_of(name))
            return None if found is None else ("plate", found)
        return ("rule", int(name)) if kind == "rule" and name.isdigit() else None


class HotlistStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.sessions = store.sessions

    def add_plate(self, plate: str, reason: str, expires_at: datetime,
                  added_by: str) -> PlateHotlistEntry:
        plate = listed_plate(plate)
        key = key_of(plate)
        now = utcnow()
        expires = _expiry(expires_at, MAX_PLATE_DAYS, now)
        with self.sessions.begin() as s:
            if s.scalar(sa.select(PlateHotlistEntry.id).where(
                    PlateHotlistEntry.plate_key == key, PlateHotlistEntry.expires_at > now)):
                raise FacelensError(f"{plate!r} is on the hotlist already")
            row = PlateHotlistEntry(plate_key=key, plate=plate,
                                    reason=reason, expires_at=expires, added_by=added_by,
                                    created_at=now, wrapped_key=b"")
            self._with_key(s, row, "plate")
        return row

    def add_rule(self, description: str, reason: str, expires_at: datetime, added_by: str,
                 cameras: list[str] | None = None, active_from: datetime | None = None,
                 active_to: datetime | None = None) -> SceneRule:
        check_description(description)
        odd = [c for c in cameras or [] if not re.fullmatch(NAME_PATTERN, c)]
        if odd:  # a rule for no camera that can exist would never match
            raise FacelensError(f"{odd[0][:100]!r} is not a camera name")
        now = utcnow()
        expires = _expiry(expires_at, MAX_RULE_DAYS, now)
        start = aware(active_from) or now
        if active_to is not None and aware(active_to) <= start:  # type: ignore[operator]
            raise FacelensError("active_to must be after active_from")
        if start >= expires:  # it would never be live
            raise FacelensError("active_from must be before expires_at")
        with self.sessions.begin() as s:
            row = SceneRule(description=description.strip(), cameras=sorted(set(cameras or [])),
                            active_from=start, active_to=aware(active_to), reason=reason,
                            expires_at=expires, added_by=added_by, created_at=now,
                            wrapped_key=b"")
            self._with_key(s, row, "rule")
        return row

    def _with_key(self, s: Session, row: PlateHotlistEntry | SceneRule,
                  kind: str) -> None:
        s.add(row)
        s.flush()  # the id the key is wrapped for
        row.wrapped_key = self.store.master.wrap(new_data_key(), entry_owner(kind, row.id))

    def plates(self) -> list[PlateHotlistEntry]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(PlateHotlistEntry).order_by(PlateHotlistEntry.id)))

    def rules(self) -> list[SceneRule]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(SceneRule).order_by(SceneRule.id)))

    def delete(self, kind: str, entry_id: int) -> None:
        """Delete an entry, its alerts, the key their crops were sealed under and its cameras'
        cool-downs (which would still say when it last alerted where)."""
        table = SCENE_ENTRIES[kind]
        with self.sessions.begin() as s:
            if not s.execute(sa.delete(table).where(table.id == entry_id)).rowcount:
                raise NotFoundError(f"no {kind} entry {entry_id}")
            _forget_windows(s, [entry_owner(kind, entry_id)])

    def purge_expired(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete the plate entries and rules past their expiry, with their alerts and the
        keys their crops were sealed under, as an expired watchlist subject goes: a lapsed
        search leaves nothing behind. Returns how many (plates, rules) went."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            gone = {kind: list(s.scalars(sa.delete(table).where(table.expires_at <= now)
                                         .returning(table.id)))
                    for kind, table in SCENE_ENTRIES.items()}
            _forget_windows(s, [entry_owner(kind, i) for kind, ids in gone.items() for i in ids])
        self.store.checkpoint()  # secure_delete: the freed pages are overwritten now
        return len(gone["plate"]), len(gone["rule"])

    def load(self, now: datetime | None = None) -> Loaded:
        """The live (unexpired) entries as a snapshot to match against, without those stored
        before their text was checked that a reading can never match, or can match as another
        plate (a Cyrillic С was dropped from the key: "ABС123" matched AB123)."""
        now = now or utcnow()
        with self.sessions() as s:
            plates = [p for p in s.scalars(sa.select(PlateHotlistEntry).where(
                PlateHotlistEntry.expires_at > now)) if _readable(p.plate)]
            rules = list(s.scalars(sa.select(SceneRule).where(SceneRule.expires_at > now)))
        loaded = Loaded(Hotlists(
            [PlateEntry(p.plate, p.reason, p.added_by, aware(p.expires_at) or now)
             for p in plates], [rule for r in rules if (rule := to_rule(r)) is not None]))
        loaded.plate_ids = {p.plate_key: p.id for p in plates}
        return loaded


def _readable(plate: str) -> bool:
    try:
        listed_plate(plate)
    except FacelensError:
        return False
    return True


def _forget_windows(s: Session, owners: list[str]) -> None:
    """Drop the cameras' cool-down windows of deleted entries (`entry_owner` names)."""
    if owners:
        s.execute(sa.delete(SceneAlertWindow).where(SceneAlertWindow.target.in_(owners)))
