"""Request values several routes share, bounded where they are parsed: what follows (the UTC
conversion, a span added, a database column) never overflows on a value a client sent, so a
refusal names the field and an overflow past it is a fault of ours (500), not the client's."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
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


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number (and a string of one) as seconds since 1970: since=0.5 was 1970.
    if isinstance(value, int | float) or (isinstance(value, str) and NUMBER.fullmatch(value)):
        raise PydanticCustomError("datetime_number", "an ISO-8601 date or date and time, "
                                  "e.g. 2026-12-08T09:30:00Z, not a number")
    return value


Moment = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_within_calendar)]
"""A point in time (ISO-8601; without an offset, UTC) between EARLIEST and LATEST."""

RowId = Annotated[int, Path(ge=1, lt=2**31)]
"""A row id in a path: what an INTEGER column holds (PostgreSQL's is 32-bit; SQLite's driver
raised OverflowError past 64 bits)."""
