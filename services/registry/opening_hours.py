"""When a venue is open: its opening hours are wall-clock times on days of the week in the venue's
time zone, so 08:00-22:00 stays 08:00-22:00 across a daylight saving change (that day is an hour
shorter or longer). A period whose close is at or before its open ends on the next day."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo

import msgspec
from msgspec import Meta

from shared.validation import FieldInvalid

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[
    str,
    Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9](?!\n)$", description="a 24-hour time HH:MM, like 08:00"),
]


class OpeningPeriod(msgspec.Struct, kw_only=True):
    """Open from ``open`` to ``close`` (wall-clock times in the venue's time zone) on each of
    ``days``; a close at or before the open is on the next day (past midnight)."""

    days: Annotated[list[Day], Meta(min_length=1, max_length=7)]
    open: ClockTime
    close: ClockTime

    def __post_init__(self) -> None:
        if len(set(self.days)) != len(self.days):
            raise FieldInvalid("days", "must name each day once")


OpeningHours = Annotated[
    list[OpeningPeriod],
    Meta(
        min_length=1,
        max_length=50,
        description="when the venue is open, in its time zone (UTC without one); null: always open",
    ),
]


_DAYS: tuple[Day, ...] = get_args(Day)  # Monday first, as date.weekday() counts


@functools.cache
def zone(name: str | None) -> tzinfo:
    """A venue's time zone; a venue without one keeps UTC."""
    return UTC if name is None else ZoneInfo(name)


def is_open(at: datetime, hours: Sequence[OpeningPeriod] | None, tz: tzinfo) -> bool:
    """Whether the venue is open at ``at`` (an aware time); no opening hours: always."""
    if hours is None:
        return True
    # A period that opened yesterday may still run past midnight.
    yesterday = at.astimezone(tz).date() - timedelta(days=1)
    return any(start <= at < end for start, end in _periods(yesterday, 2, hours, tz))


def next_opening(at: datetime, hours: Sequence[OpeningPeriod] | None, tz: tzinfo) -> datetime:
    """The first moment from ``at`` on when the venue is open: ``at`` itself if it is open."""
    if is_open(at, hours, tz):
        return at
    assert hours  # a closed venue has opening hours, and they list at least one period
    # Every period opens at least once a week: the next opening is within today and 7 days on.
    return min(start for start, _ in _periods(at.astimezone(tz).date(), 8, hours, tz) if start > at)


def _periods(
    first: date, days: int, hours: Sequence[OpeningPeriod], tz: tzinfo
) -> Iterator[tuple[datetime, datetime]]:
    """The periods that open on ``days`` days from ``first``, as instants (start, end).

    A wall-clock time the zone skips (02:30 on a spring-forward night) is read with the offset
    before the change, so it falls the gap's length later (03:30); one the zone repeats (a
    fall-back night) is its first occurrence."""
    for offset in range(days):
        day = first + timedelta(days=offset)
        name = _DAYS[day.weekday()]
        for period in hours:
            if name in period.days:
                start = datetime.combine(day, _clock(period.open))
                end = datetime.combine(day, _clock(period.close))
                if end <= start:
                    end += timedelta(days=1)
                yield _instant(start, tz), _instant(end, tz)


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    return wall.replace(tzinfo=tz).astimezone(UTC)


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))
