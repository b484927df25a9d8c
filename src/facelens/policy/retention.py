"""The retention pass: every rule that deletes data by age or expiry, applied once. The service
runs it every `purge_interval_h` hours and `facelens gallery purge` on demand (say with the
service stopped), so either leaves behind nothing the other would have deleted."""

from __future__ import annotations

from dataclasses import dataclass

from facelens.events.counts import SceneCounts
from facelens.events.hotlist_store import HotlistStore
from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.settings import Settings


@dataclass(frozen=True)
class Purged:
    """What one pass deleted."""

    subjects: list[str]
    """Ids of the subjects whose consent or watchlist entry lapsed, or who were not seen within
    their gallery's retention."""
    expired_events: int
    """Unreviewed alerts older than `event_retention_days`."""
    expired_counts: int
    """Street count rows older than `counts_retention_days`."""
    expired_plates: int
    expired_rules: int
    """Plate hotlist entries and description rules past their expiry (with their alerts)."""
    expired_windows: int
    """Cameras' cool-down windows that had ended."""

    def audit_fields(self) -> dict[str, int]:
        """The counts as the audit record of a purge holds them (`deleted`: subjects)."""
        return {"deleted": len(self.subjects), "expired_events": self.expired_events,
                "expired_counts": self.expired_counts, "expired_plates": self.expired_plates,
                "expired_rules": self.expired_rules, "expired_windows": self.expired_windows}


def apply_retention(galleries: Galleries, settings: Settings) -> Purged:
    """Apply every retention rule once to the store `galleries` opened."""
    store = galleries.store
    events = EventStore(store)
    subjects = galleries.purge()
    expired_events = events.expire_unconfirmed(settings.event_retention_days)
    expired_counts = SceneCounts(store).prune(settings.counts_retention_days)
    expired_windows = events.forget_ended_cooldowns()
    # Last: it checkpoints SQLite's write-ahead log, so the pages every deletion above freed
    # are overwritten now (secure_delete), not at some later checkpoint.
    plates, rules = HotlistStore(store).purge_expired()
    return Purged(subjects, expired_events, expired_counts, plates, rules, expired_windows)
