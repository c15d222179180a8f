"""Cron expressions and time zones: validation with messages a user can act on (no JobSpec needed,
so the spec's own validators can use it)."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
# one item of the portable (Vixie cron) syntax: '*', a number or name, a range, each with an
# optional step; croniter parses it, this only refuses extensions (L, W, #, ?, H) that systemd
# and Kubernetes don't share, and a step on a single value ('5/15'), which implementations disagree on
_NAMES = {3: "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec", 4: "sun|mon|tue|wed|thu|fri|sat"}


def _item_re(idx: int) -> re.Pattern[str]:
    tok = rf"(?:\d+|{_NAMES[idx]})" if idx in _NAMES else r"\d+"
    return re.compile(rf"(?:\*|{tok}-{tok})(?:/\d+)?|{tok}")


_ITEMS = [_item_re(i) for i in range(5)]


def field_values(cron: str) -> list[set[int]]:
    """The values each of the 5 fields matches (day-of-week 0-6, Sunday 0), from croniter's
    ``expanded`` fields. ``cron`` must have passed :func:`check_cron`."""
    expanded = croniter(cron).expanded
    out = []
    for i, (_, lo, hi) in enumerate(_FIELDS):
        vals = expanded[i]
        if vals == ["*"]:
            out.append(set(range(lo, (6 if i == 4 else hi) + 1)))
        else:
            out.append({0 if (i == 4 and int(v) == 7) else int(v) for v in vals})
    return out


def check_cron(expr: str) -> str:
    """Validate a cron expression and return it as 5 space-separated fields (macros expanded).

    Only the syntax that cron, systemd and Kubernetes all understand is accepted, so the same
    spec schedules identically whatever triggers ``run-due``. Raises ValueError naming
    ``schedule.cron``.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("schedule.cron: empty cron expression; expected e.g. '0 2 * * *'")
    text = " ".join(expr.split())
    fields = MACROS.get(text.lower(), text).split()
    if len(fields) != 5:
        raise ValueError(f"schedule.cron: {expr!r} has {len(fields)} fields; expected 5 (minute hour "
                         f"day-of-month month day-of-week) or one of {', '.join(MACROS)}")
    for (name, _, _), f, item_re in zip(_FIELDS, fields, _ITEMS, strict=True):
        bad = [item for item in f.lower().split(",") if not item_re.fullmatch(item)]
        if bad:
            raise ValueError(f"schedule.cron: {expr!r}: {name} field {f!r}: {bad[0]!r} is not portable cron "
                             "syntax (use numbers, names, '*', ranges a-b, lists and '*/n' or 'a-b/n' steps)")
    dom, dow = fields[2], fields[4]
    if dom != "*" and dow != "*" and (dom.startswith("*") or dow.startswith("*")):
        raise ValueError(f"schedule.cron: {expr!r} restricts both day fields with a '*' step; cron "
                         "implementations disagree on that (AND vs OR): list the days explicitly")
    out = " ".join(fields)
    try:
        if not croniter.is_valid(out):
            raise CroniterError(out)
        croniter(out, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise ValueError(f"schedule.cron: {expr!r} is not a valid cron expression (a value out of range, "
                         "an unknown name) or it never fires") from None
    return out


def check_timezone(tz: str) -> str:
    """Validate an IANA time zone name (``UTC``, ``Europe/Berlin``). Raises ValueError naming ``schedule.timezone``."""
    try:
        if not isinstance(tz, str) or tz.lower() in ("localtime", "posixrules"):
            raise ValueError(tz)
        ZoneInfo(tz)
    except Exception:
        raise ValueError(f"schedule.timezone: {tz!r} is not an IANA time zone name (e.g. 'UTC', "
                         "'Europe/Berlin'; if the name is right, install the tzdata package)") from None
    return tz


