"""A venue's opening hours: wall-clock periods in its time zone, past midnight and across daylight
saving changes (no stack: the module is pure time arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from services.registry.models import OpeningPeriod
from services.registry.opening_hours import is_open, next_opening, zone

BERLIN = zone("Europe/Berlin")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def hours(*periods: dict) -> list[OpeningPeriod]:
    return msgspec.convert(list(periods), list[OpeningPeriod])


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


OFFICE = hours({"days": WEEKDAYS, "open": "08:00", "close": "18:00"})
# A bar: open evenings past midnight, Friday and Saturday only.
BAR = hours({"days": ["fri", "sat"], "open": "20:00", "close": "02:00"})


def test_without_opening_hours_a_venue_is_always_open():
    at = utc("2026-11-26T03:00:00")
    assert is_open(at, None, UTC) and next_opening(at, None, UTC) == at


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-11-26T07:59:59", False),  # a Thursday, before opening
        ("2026-11-26T08:00:00", True),  # the open is inclusive
        ("2026-11-26T17:59:59", True),
        ("2026-11-26T18:00:00", False),  # the close is not
        ("2026-11-28T12:00:00", False),  # Saturday
    ],
)
def test_a_period_on_weekdays_in_the_venues_time_zone(local, expected):
    assert is_open(berlin(local), OFFICE, BERLIN) is expected


def test_the_time_zone_decides_and_utc_is_the_default():
    at = utc("2026-11-26T07:30:00")  # 08:30 in Berlin (CET, +01:00)
    assert is_open(at, OFFICE, BERLIN) and not is_open(at, OFFICE, zone(None))


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-11-27T19:59:00", False),  # Friday evening, before
        ("2026-11-27T23:00:00", True),
        ("2026-11-28T01:59:00", True),  # Saturday small hours: still Friday's period
        ("2026-11-28T02:00:00", False),
        ("2026-11-29T01:00:00", True),  # Sunday small hours: Saturday's period
        ("2026-11-30T01:00:00", False),  # Monday small hours: Sunday has no period
    ],
)
def test_a_close_before_the_open_runs_past_midnight(local, expected):
    assert is_open(berlin(local), BAR, BERLIN) is expected


def test_a_close_equal_to_the_open_is_a_whole_day():
    day = hours({"days": ["sun"], "open": "06:00", "close": "06:00"})
    assert is_open(berlin("2026-11-29T06:00:00"), day, BERLIN)
    assert is_open(berlin("2026-11-30T05:59:00"), day, BERLIN)
    assert not is_open(berlin("2026-11-30T06:00:00"), day, BERLIN)


def test_the_next_opening_is_the_next_periods_start():
    assert next_opening(berlin("2026-11-26T19:00:00"), OFFICE, BERLIN) == berlin("2026-11-27T08:00:00")
    # Friday evening after closing: Monday morning.
    assert next_opening(berlin("2026-11-27T18:30:00"), OFFICE, BERLIN) == berlin("2026-11-30T08:00:00")
    # Monday small hours, the bar closed: Friday evening.
    assert next_opening(berlin("2026-11-30T03:00:00"), BAR, BERLIN) == berlin("2026-12-04T20:00:00")
    # Open: now.
    at = berlin("2026-11-27T09:00:00")
    assert next_opening(at, OFFICE, BERLIN) == at


def test_the_earliest_of_several_periods_opens_first():
    split = hours(
        {"days": ["mon"], "open": "14:00", "close": "18:00"},
        {"days": ["mon"], "open": "09:00", "close": "12:00"},
    )
    assert next_opening(berlin("2026-11-30T12:30:00"), split, BERLIN) == berlin("2026-11-30T14:00:00")
    assert next_opening(berlin("2026-11-30T07:00:00"), split, BERLIN) == berlin("2026-11-30T09:00:00")


def test_wall_clock_hours_hold_across_a_spring_forward():
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST. 08:00 is 07:00 UTC before, 06:00 UTC after.
    assert next_opening(utc("2026-03-28T20:00:00"), OFFICE, BERLIN) == utc("2026-03-30T06:00:00")
    daily = hours({"days": ["sat", "sun"], "open": "08:00", "close": "22:00"})
    assert next_opening(utc("2026-03-28T21:30:00"), daily, BERLIN) == utc("2026-03-29T06:00:00")
    assert is_open(utc("2026-03-28T07:00:00"), daily, BERLIN)  # 08:00 CET
    assert not is_open(utc("2026-03-29T05:59:00"), daily, BERLIN)  # 07:59 CEST
    # The bar's Saturday period (20:00-02:00) ends where 02:00 would be (01:00 UTC), and a period
    # opening in the skipped hour opens the gap's length later.
    assert is_open(utc("2026-03-29T00:59:00"), BAR, BERLIN)
    assert not is_open(utc("2026-03-29T01:00:00"), BAR, BERLIN)
    night = hours({"days": ["sun"], "open": "02:30", "close": "05:00"})
    assert next_opening(utc("2026-03-28T23:00:00"), night, BERLIN) == berlin("2026-03-29T03:30:00")
    assert not is_open(utc("2026-03-29T01:29:00"), night, BERLIN)
    assert is_open(utc("2026-03-29T01:30:00"), night, BERLIN)


def test_wall_clock_hours_hold_across_a_fall_back():
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET. 08:00 is 06:00 UTC before, 07:00 UTC after.
    daily = hours({"days": ["sat", "sun"], "open": "08:00", "close": "22:00"})
    assert next_opening(utc("2026-10-24T21:00:00"), daily, BERLIN) == utc("2026-10-25T07:00:00")
    assert not is_open(utc("2026-10-25T06:30:00"), daily, BERLIN)  # 07:30 CET
    # A close in the repeated hour is its first occurrence: the bar closes at 02:00 CEST.
    assert is_open(utc("2026-10-24T23:59:00"), BAR, BERLIN)
    assert not is_open(utc("2026-10-25T00:00:00"), BAR, BERLIN)
    # A period across the repeated hour is an hour longer: 01:00 CEST to 03:00 CET is three hours.
    late = hours({"days": ["sun"], "open": "01:00", "close": "03:00"})
    assert is_open(utc("2026-10-24T23:00:00"), late, BERLIN)
    assert is_open(utc("2026-10-25T01:59:00"), late, BERLIN)  # 02:59 CET, the second time round
    assert not is_open(utc("2026-10-25T02:00:00"), late, BERLIN)


@pytest.mark.parametrize(
    ("period", "field"),
    [
        ({"days": [], "open": "08:00", "close": "18:00"}, "days"),
        ({"days": ["monday"], "open": "08:00", "close": "18:00"}, "days"),
        ({"days": ["mon", "mon"], "open": "08:00", "close": "18:00"}, "days"),
        ({"days": ["mon"], "open": "8:00", "close": "18:00"}, "open"),
        ({"days": ["mon"], "open": "08:00", "close": "24:00"}, "close"),
        ({"days": ["mon"], "open": "08:00\n", "close": "18:00"}, "open"),
        ({"days": ["mon"], "open": "08:00"}, "close"),
    ],
)
def test_a_malformed_period_is_refused(period, field):
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert(period, OpeningPeriod)
