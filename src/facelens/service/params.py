"""Request values several routes share, bounded where they are parsed: what follows (the UTC
conversion, a span added, a database column) never overflows on a value a client sent, so a
refusal names the field and an overflow past it is a fault of ours (500), not the client's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
"""The times a request may give: centuries from the ends of Python's calendar (years 1 and
9999), where 9999-12-31T23:59:59-12:00 in UTC, or a day's span past it, overflowed."""


def _within_calendar(moment: datetime) -> datetime:
    # Compared, not converted: comparing aware datetimes never overflows. Naive is UTC.
    if not EARLIEST <= (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) <= LATEST:
        raise PydanticCustomError("datetime_out_of_range",
                                  "must lie between {earliest} and {latest} (UTC)",
                                  {"earliest": EARLIEST.date().isoformat(),
                                   "latest": LATEST.date().isoformat()})
    return moment


Moment = Annotated[datetime, AfterValidator(_within_calendar)]
"""A point in time (ISO-8601; without an offset, UTC) between EARLIEST and LATEST."""

RowId = Annotated[int, Path(ge=1, lt=2**31)]
"""A row id in a path: what an INTEGER column holds (PostgreSQL's is 32-bit; SQLite's driver
raised OverflowError past 64 bits)."""
