"""The reports' time buckets: shift settings, a shift crossing midnight, local hours across DST changes."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from service.records.shifts import (
    DEFAULT_SHIFTS,
    hour_start,
    hours,
    parse_shifts,
    parse_timezone,
    shift_of,
    shift_slots,
)

UTC_ZONE = parse_timezone("UTC")
BERLIN = parse_timezone("Europe/Berlin")  # UTC+1, UTC+2 from 2026-03-29 02:00 to 2026-10-25 03:00 local
SHIFTS = parse_shifts(DEFAULT_SHIFTS)


def test_shifts_parse_with_names_or_numbers():
    assert [(s.name, s.start, s.end) for s in SHIFTS] == [
        ("early", 360, 840),
        ("late", 840, 1320),
        ("night", 1320, 360),
    ]
    assert [s.name for s in parse_shifts("06:00-18:00, 18:00-06:00")] == ["shift 1", "shift 2"]
    assert [s.name for s in parse_shifts("day=08:00-16:00")] == ["day"]  # gaps are allowed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=06:00-14:00,b=13:00-15:00", "'a' and 'b' overlap"),
        ("a=22:00-06:00,b=05:00-07:00", "'a' and 'b' overlap"),  # across midnight
        ("a=06:00-25:00", "not a time of day"),
        ("a=06:00-06:00", "same time"),
        ("a=06:00-14:00,a=14:00-22:00", "unique"),
        ("6-14", r"is not \[name=\]HH:MM-HH:MM"),
        ("", r"is not \[name=\]HH:MM-HH:MM"),
    ],
)
def test_bad_shifts_are_refused_with_one_line(text, message):
    with pytest.raises(ValueError, match=message) as refused:
        parse_shifts(text)
    assert "\n" not in str(refused.value)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(ValueError, match="not an IANA time zone"):
        parse_timezone("Mars/Olympus")


@pytest.mark.parametrize(
    ("stored", "key"),
    [
        (datetime(2026, 3, 1, 22, 0), "2026-03-01 night"),  # its first minute
        (datetime(2026, 3, 1, 23, 30), "2026-03-01 night"),
        (datetime(2026, 3, 2, 0, 0), "2026-03-01 night"),  # after midnight: still the day it started
        (datetime(2026, 3, 2, 5, 59, 59), "2026-03-01 night"),
        (datetime(2026, 3, 2, 6, 0), "2026-03-02 early"),  # the boundary belongs to the shift starting
        (datetime(2026, 3, 2, 13, 59), "2026-03-02 early"),
        (datetime(2026, 3, 2, 14, 0), "2026-03-02 late"),
    ],
)
def test_a_shift_crossing_midnight_belongs_to_the_day_it_starts(stored, key):
    assert shift_of(stored, SHIFTS, UTC_ZONE).key == key


def test_shifts_are_local_time():
    # Berlin is UTC+1 in March: 21:30 UTC is 22:30 local, in the night shift; 05:00 UTC is 06:00 local
    assert shift_of(datetime(2026, 3, 1, 21, 30), SHIFTS, BERLIN).key == "2026-03-01 night"
    assert shift_of(datetime(2026, 3, 2, 4, 59), SHIFTS, BERLIN).key == "2026-03-01 night"
    assert shift_of(datetime(2026, 3, 2, 5, 0), SHIFTS, BERLIN).key == "2026-03-02 early"
    assert shift_of(datetime(2026, 3, 1, 21, 30), SHIFTS, UTC_ZONE).key == "2026-03-01 late"


def test_a_time_between_shifts_is_in_none():
    day_only = parse_shifts("day=08:00-16:00")
    assert shift_of(datetime(2026, 3, 1, 7, 59), day_only, UTC_ZONE) is None
    assert shift_of(datetime(2026, 3, 1, 16, 0), day_only, UTC_ZONE) is None
    assert shift_of(datetime(2026, 3, 1, 8, 0), day_only, UTC_ZONE).key == "2026-03-01 day"


def test_shift_slots_cover_the_range_in_order():
    slots = shift_slots(datetime(2026, 3, 1, 5, 0), datetime(2026, 3, 2, 7, 0), SHIFTS, UTC_ZONE)
    assert [s.key for s in slots] == [
        "2026-02-28 night",
        "2026-03-01 early",
        "2026-03-01 late",
        "2026-03-01 night",
        "2026-03-02 early",
    ]
    night = slots[3]
    assert (night.day, night.start.hour, night.end.date(), night.end.hour) == (
        date(2026, 3, 1),
        22,
        date(2026, 3, 2),
        6,
    )


def test_local_hours_follow_dst_changes():
    # the local day 2026-03-29 in Berlin (23:00 UTC the day before to 22:00 UTC) has 23 hours, 2026-10-25 has 25
    spring = list(hours(datetime(2026, 3, 28, 23, 0), datetime(2026, 3, 29, 22, 0), BERLIN))
    assert len(spring) == 23
    assert [h.hour for h in spring[:3]] == [0, 1, 3]
    autumn = list(hours(datetime(2026, 10, 24, 22, 0), datetime(2026, 10, 25, 23, 0), BERLIN))
    assert len(autumn) == 25
    assert [h.hour for h in autumn[:4]] == [0, 1, 2, 2]  # 02:00 twice: summer time, then winter time
    assert autumn[2].utcoffset() != autumn[3].utcoffset()


def test_an_hour_starts_on_the_local_hour():
    kolkata = parse_timezone("Asia/Kolkata")  # UTC+05:30: local hours start at half past UTC hours
    assert hour_start(datetime(2026, 3, 1, 8, 29), kolkata).isoformat() == "2026-03-01T13:00:00+05:30"
    assert hour_start(datetime(2026, 3, 1, 8, 30), kolkata).isoformat() == "2026-03-01T14:00:00+05:30"
    assert len(list(hours(datetime(2026, 3, 1, 8, 0), datetime(2026, 3, 1, 10, 0), kolkata))) == 3


def test_a_night_shift_over_a_dst_change_lasts_the_real_hours():
    # Berlin's clocks go from 02:00 to 03:00 on 2026-03-29 and from 03:00 back to 02:00 on 2026-10-25
    spring = shift_of(datetime(2026, 3, 28, 23, 0), SHIFTS, BERLIN)  # 00:00 local on the 29th
    autumn = shift_of(datetime(2026, 10, 24, 23, 0), SHIFTS, BERLIN)  # 01:00 local on the 25th
    assert (spring.key, autumn.key) == ("2026-03-28 night", "2026-10-24 night")
    assert (spring.end.astimezone(UTC_ZONE) - spring.start.astimezone(UTC_ZONE)).total_seconds() == 7 * 3600
    assert (autumn.end.astimezone(UTC_ZONE) - autumn.start.astimezone(UTC_ZONE)).total_seconds() == 9 * 3600
