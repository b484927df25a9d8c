"""When a subject stops being searchable: its watchlist entry or every consent has lapsed.

Identification, 1:1 checks against a subject, cameras and doors all ask `lapsed` before a
subject may match, so an entry that expired a minute ago never matches even if the retention
purge has not run yet; the purge then deletes it. Enrolment refuses dates already past.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from facelens.gallery.errors import GalleryError
from facelens.store.tables import Consent, Subject, aware


def lapsed(subject: Subject, consents: Iterable[Consent], now: datetime | None = None
           ) -> str | None:
    """Why `subject` may no longer match ("watchlist entry expired …", "consent expired …"),
    or None while it may."""
    now = now or datetime.now(UTC)
    watch = aware(subject.watch_expires)
    if watch is not None and watch <= now:
        return f"watchlist entry expired {watch:%Y-%m-%d %H:%M} UTC"
    ends = [aware(c.expires_at) for c in consents]
    if not ends:
        return "no consent record"
    if all(end is not None and end <= now for end in ends):
        last = max(end for end in ends if end is not None)
        return f"consent expired {last:%Y-%m-%d %H:%M} UTC"
    return None


def refuse_past(what: str, moment: datetime | None, now: datetime | None = None) -> None:
    """Refuse (GalleryError) an expiry that is not in the future."""
    now = now or datetime.now(UTC)
    when = aware(moment)
    if when is not None and when <= now:
        raise GalleryError(f"{what} {when:%Y-%m-%d} is in the past: give a future date "
                           "(an expired entry would never match)")
