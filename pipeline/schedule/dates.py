"""Logical dates: which runs of a schedule are due at a given moment, and when the next ones fire."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from pipeline.schedule.cron import check_cron, check_timezone

if TYPE_CHECKING:
    from pipeline.spec import ScheduleSpec


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: str) -> date:
    """A logical date written exactly ``YYYY-MM-DD``. (``date.fromisoformat`` also takes
    ``2026-W01-1``, i.e. 2025-12-29, and ``20260101``: one date, one spelling.)"""
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"{value!r}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r}: expected YYYY-MM-DD (a real calendar date)") from None


def parse_schedule(schedule: ScheduleSpec) -> tuple[str, ZoneInfo]:
    return check_cron(schedule.cron), ZoneInfo(check_timezone(schedule.timezone))


def as_aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(timezone.utc)")
    return now


def due_dates(schedule: ScheduleSpec, now: datetime, done: set[date], *, since: date | None = None) -> list[date]:
    """Logical dates to run now, oldest first.

    A date is due when its fire time is ``<= now``, it lies within ``schedule.catchup_days`` of
    the latest due date, it is not before ``since`` (the schedule's first attempted date;
    default: the oldest date in ``done``, or the latest due date when ``done`` is empty, so a
    first run runs only the latest date) and it is not in ``done``.
    """
    cron, tz = parse_schedule(schedule)
    try:
        fire = croniter(cron, as_aware(now).astimezone(tz) + timedelta(microseconds=1)).get_prev(datetime)
    except CroniterError:
        return []
    last = fire.astimezone(tz).date()
    if since is None:
        since = min(done) if done else last
    lo = max(last - timedelta(days=schedule.catchup_days), since)
    found: set[date] = set()
    while (d := fire.astimezone(tz).date()) >= lo:
        found.add(d)  # then jump to the last fire time of an earlier day: O(days), not O(fires)
        try:
            fire = croniter(cron, datetime.combine(d, dtime(0), tzinfo=tz)).get_prev(datetime)
        except CroniterError:
            break
    return sorted(found - set(done))


def next_runs(schedule: ScheduleSpec, now: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times after ``now``, aware, in the schedule's time zone.

    A wall time repeated by a DST fall-back is listed once, as cron fires it once.
    """
    cron, tz = parse_schedule(schedule)
    it = croniter(cron, as_aware(now).astimezone(tz))
    out: list[datetime] = []
    seen: set[datetime] = set()
    while len(out) < count:
        t = it.get_next(datetime)
        if t.replace(tzinfo=None) not in seen:
            seen.add(t.replace(tzinfo=None))
            out.append(t)
    return out


