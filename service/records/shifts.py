"""Time buckets of the reports: the hours and the shifts of a plant's local time zone. Stored times are UTC without a
zone; a bucket is named by when it starts in local time. A shift that crosses midnight (22:00-06:00) belongs to the
day it starts on. Parsing raises ValueError with one line (the settings show it at start)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_SHIFTS = "early=06:00-14:00,late=14:00-22:00,night=22:00-06:00"
SHIFT = re.compile(r"^(?:(?P<name>[A-Za-z0-9 ._-]{1,32})=)?(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)$")
DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class Shift:
    """One shift of every day: `start` to `end` local time (end exclusive; end <= start: it ends the next day)."""

    name: str
    start: int  # minutes after local midnight
    end: int

    @property
    def crosses_midnight(self) -> bool:
        """Whether the shift ends on the day after it starts."""
        return self.end <= self.start

    def minutes(self) -> set[int]:
        """The minutes of the day (0-1439) the shift covers."""
        if self.crosses_midnight:
            return set(range(self.start, DAY_MINUTES)) | set(range(0, self.end))
        return set(range(self.start, self.end))


def _minutes(text: str, item: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{item!r}: {text} is not a time of day (00:00-23:59)")
    return 60 * hours + minutes


def parse_shifts(text: str) -> tuple[Shift, ...]:
    """Shifts from `[name=]HH:MM-HH:MM,...` (e.g. "early=06:00-14:00,late=14:00-22:00,night=22:00-06:00"; unnamed
    ones are "shift 1", "shift 2", ...). Raises ValueError (one line) for a bad item, a repeated name or shifts that
    overlap; gaps between shifts are allowed."""
    shifts: list[Shift] = []
    for n, item in enumerate((part.strip() for part in text.split(",")), start=1):
        match = SHIFT.match(item)
        if match is None:
            raise ValueError(f"{item!r} is not [name=]HH:MM-HH:MM (e.g. early=06:00-14:00)")
        start, end = _minutes(match["start"], item), _minutes(match["end"], item)
        if start == end:
            raise ValueError(f"{item!r}: a shift must not start and end at the same time")
        shifts.append(Shift(match["name"] or f"shift {n}", start, end))
    names = [s.name for s in shifts]
    if len(set(names)) != len(names):
        raise ValueError(f"shift names must be unique: {', '.join(names)}")
    for i, first in enumerate(shifts):
        for second in shifts[i + 1 :]:
            if first.minutes() & second.minutes():
                raise ValueError(f"the shifts {first.name!r} and {second.name!r} overlap")
    return tuple(shifts)


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Berlin, UTC). Raises ValueError (one line) for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


def local(stored: datetime, zone: ZoneInfo) -> datetime:
    """A stored time (UTC, no zone) as an aware time in `zone`."""
    return stored.replace(tzinfo=UTC).astimezone(zone)


def hour_start(stored: datetime, zone: ZoneInfo) -> datetime:
    """The start of the local hour holding a stored time, aware in `zone` (the two 02:00 hours of a DST change back
    are two hours: their UTC times differ)."""
    return local(stored, zone).replace(minute=0, second=0, microsecond=0)


def hours(since: datetime, until: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """The starts of the local hours that [since, until) (stored times) touches, in order, aware in `zone`."""
    start = hour_start(since, zone).astimezone(UTC)
    while start < until.replace(tzinfo=UTC):
        yield start.astimezone(zone)
        start += timedelta(hours=1)


@dataclass(frozen=True)
class ShiftSlot:
    """One shift on one day: its name, the day it starts, and its start and end (aware, local time)."""

    shift: Shift
    day: date
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """e.g. "2026-03-01 night"."""
        return f"{self.day.isoformat()} {self.shift.name}"


def slot(shift: Shift, day: date, zone: ZoneInfo) -> ShiftSlot:
    """The shift on `day` (the day it starts)."""
    start = datetime.combine(day, time(shift.start // 60, shift.start % 60), tzinfo=zone)
    end_day = day + timedelta(days=1) if shift.crosses_midnight else day
    end = datetime.combine(end_day, time(shift.end // 60, shift.end % 60), tzinfo=zone)
    return ShiftSlot(shift, day, start, end)


def shift_of(stored: datetime, shifts: tuple[Shift, ...], zone: ZoneInfo) -> ShiftSlot | None:
    """The shift slot holding a stored time, None when it falls between shifts."""
    at = local(stored, zone)
    minute = at.hour * 60 + at.minute
    for shift in shifts:
        if shift.crosses_midnight:
            if minute >= shift.start:
                return slot(shift, at.date(), zone)
            if minute < shift.end:
                return slot(shift, at.date() - timedelta(days=1), zone)
        elif shift.start <= minute < shift.end:
            return slot(shift, at.date(), zone)
    return None


def shift_slots(since: datetime, until: datetime, shifts: tuple[Shift, ...], zone: ZoneInfo) -> list[ShiftSlot]:
    """Every shift slot overlapping [since, until) (stored times), in time order."""
    begin, end = since.replace(tzinfo=UTC), until.replace(tzinfo=UTC)
    day, last = local(since, zone).date() - timedelta(days=1), local(until, zone).date()
    slots = []
    while day <= last:
        slots += [s for s in (slot(shift, day, zone) for shift in shifts) if s.start < end and s.end > begin]
        day += timedelta(days=1)
    return sorted(slots, key=lambda s: s.start)
