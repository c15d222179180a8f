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
_NAMES = {3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
          4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}}
_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _field_values(text: str, idx: int) -> set[int]:
    """Values one cron field matches, in the portable Vixie-cron syntax (no L, W, #, ?, H)."""
    name, lo, hi = _FIELDS[idx]
    out: set[int] = set()
    for item in text.lower().split(","):
        m = re.fullmatch(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?", item)
        if not m or (m.group(2) and m.group(1) != "*" and "-" not in m.group(1)):
            raise ValueError(f"{name} field {text!r}: {item!r} is not portable cron syntax "
                             "(use numbers, names, '*', ranges a-b, lists and '*/n' or 'a-b/n' steps)")
        step = int(m.group(2) or 1)
        if m.group(1) == "*":
            a, b = lo, (6 if idx == 4 else hi)
        else:
            try:
                nums = [int(p) if p.isdigit() else _NAMES.get(idx, {})[p] for p in m.group(1).split("-")]
            except KeyError:
                raise ValueError(f"{name} field {text!r}: unknown name in {item!r}") from None
            a, b = nums[0], nums[-1]
        if not (lo <= a <= b <= hi) or step < 1:
            raise ValueError(f"{name} field {text!r}: {item!r} is outside {lo}-{hi} or empty")
        out.update(range(a, b + 1, step))
    return (out - {7}) | {0} if idx == 4 and 7 in out else out


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
    try:
        for i, f in enumerate(fields):
            _field_values(f, i)
    except ValueError as exc:
        raise ValueError(f"schedule.cron: {expr!r}: {exc}") from None
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
        raise ValueError(f"schedule.cron: {expr!r} is not a valid cron expression or never fires") from None
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


