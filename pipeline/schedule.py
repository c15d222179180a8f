"""Nightly schedules with logical dates, executed by the one-shot ``genpipe schedule run-due``.

Ray has no cron, so an outside trigger (cron, a systemd timer, a Kubernetes CronJob: see
:func:`emit`) calls ``run-due`` often enough; all state lives in the output storage under
``<state_url>/schedule/<job>/`` (``state.json`` and ``lease.json``). A fire time's *logical
date* is its calendar date in ``schedule.timezone``. A run is due for every logical date whose
fire time has passed, within ``catchup_days`` of the latest one and not before the schedule's
first attempted date (so a brand-new schedule runs only the latest date: no surprise backfill).

Lease guarantee (no overlapping runs): at most one holder at a time, provided that (1) the
storage has an atomic create-only write with read-after-write consistency (local POSIX disk:
``os.link``/``O_EXCL``; S3: ``If-None-Match: *`` via s3fs mode ``"create"``; ``memory://``: one
process only; other backends: only as good as their ``"xb"`` mode), (2) the clocks of competing
triggers agree to within ``Lease.margin`` seconds and (3) no process stalls longer than that
between a check and the write it guards. A holder stops renewing ``margin`` seconds before expiry
and an expired lease is taken over through a create-only claim on that lease generation, so two
takers cannot both win. A lease is not a fencing token: a holder frozen past expiry may still
finish the ``run_one`` it is in. That is tolerated because ``run_one`` is idempotent (submission
id = job + date) and a holder that finds its lease lost records nothing more.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import fsspec
import yaml
from croniter import CroniterError, croniter

if TYPE_CHECKING:
    from pipeline.spec import JobSpec, ScheduleSpec

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

# ---------------------------------------------------------------- validation
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


def _parse(schedule: ScheduleSpec) -> tuple[str, ZoneInfo]:
    return check_cron(schedule.cron), ZoneInfo(check_timezone(schedule.timezone))


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(timezone.utc)")
    return now


# ---------------------------------------------------------------- logical dates
def due_dates(schedule: ScheduleSpec, now: datetime, done: set[date], *, since: date | None = None) -> list[date]:
    """Logical dates to run now, oldest first.

    A date is due when its fire time is ``<= now``, it lies within ``schedule.catchup_days`` of
    the latest due date, it is not before ``since`` (the schedule's first attempted date;
    default: the oldest date in ``done``, or the latest due date when ``done`` is empty, so a
    first run runs only the latest date) and it is not in ``done``.
    """
    cron, tz = _parse(schedule)
    try:
        fire = croniter(cron, _aware(now).astimezone(tz) + timedelta(microseconds=1)).get_prev(datetime)
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
    cron, tz = _parse(schedule)
    it = croniter(cron, _aware(now).astimezone(tz))
    out: list[datetime] = []
    seen: set[datetime] = set()
    while len(out) < count:
        t = it.get_next(datetime)
        if t.replace(tzinfo=None) not in seen:
            seen.add(t.replace(tzinfo=None))
            out.append(t)
    return out


# ---------------------------------------------------------------- storage primitives
def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protos or "local" in protos


def _read(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def _tmp_name(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/.tmp-{uuid.uuid4().hex}-{name}"  # never matches a glob on the final name


def _write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace ``path`` whole: temp file + ``os.replace`` locally, one PUT on object stores."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if not _is_local(fs):
        fs.pipe_file(path, data)
        return
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist; False if it does."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if _is_local(fs):
        tmp = _tmp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, exclusive, and never shows a half-written file
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some FUSE/SMB mounts): O_EXCL
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        finally:
            os.unlink(tmp)
    try:
        if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            fs.pipe_file(path, data, mode="create")  # PUT with If-None-Match: *
        else:
            with fs.open(path, "xb") as f:
                f.write(data)
        return True
    except FileExistsError:
        return False
    except OSError:  # e.g. 409 ConditionalRequestConflict: a concurrent create won
        fs.invalidate_cache(path)
        if fs.exists(path):
            return False
        raise


def _url(state_url: str, job: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(state_url, **(storage_options or {}))
    return fs, f"{root.rstrip('/')}/schedule/{job}"


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


# ---------------------------------------------------------------- state
class ScheduleState:
    """Per-date record of a job's schedule: ``<state_url>/schedule/<job>/state.json``.

    Written only by the lease holder; each ``record_*`` re-reads, changes one date and replaces
    the object atomically. Statuses: ``running`` (attempt started), ``failed``, ``succeeded``
    (plus ``removed_at`` once retention deleted its partition).
    """

    def __init__(self, state_url: str, job: str, storage_options: dict[str, Any] | None = None,
                 *, clock: Clock | None = None):
        self.fs, base = _url(state_url, job, storage_options)
        self.path = f"{base}/state.json"
        self.job = job
        self.clock = clock or (lambda: datetime.now(UTC))
        self.data: dict[str, Any] = {"version": 1, "job": job, "first_date": None, "dates": {}}

    def load(self) -> ScheduleState:
        raw = _read(self.fs, self.path)
        if raw is not None:
            try:
                self.data = json.loads(raw)
            except ValueError:
                raise ValueError(f"{self.path}: schedule state is not valid JSON; fix or remove it") from None
        return self

    def _update(self, d: date, **fields: Any) -> None:
        self.load()
        entry = self.data["dates"].setdefault(d.isoformat(), {})
        entry.update(fields, updated_at=self.clock().astimezone(UTC).isoformat())
        first = self.data.get("first_date")
        if "status" in fields and (first is None or d.isoformat() < first):
            self.data["first_date"] = d.isoformat()
        _write_atomic(self.fs, self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())

    def record_start(self, d: date) -> None:
        """Mark an attempt (fixes the first date, so a crashed first run is caught up later)."""
        self.load()._update(d, status="running", attempts=self.entry(d).get("attempts", 0) + 1)

    def record_success(self, d: date, info: Any = None) -> None:
        try:
            json.dumps(info)
        except (TypeError, ValueError):
            info = repr(info)
        self._update(d, status="succeeded", info=info, error=None)

    def record_failure(self, d: date, error: str) -> None:
        self._update(d, status="failed", error=error[:4000])

    def record_removed(self, d: date) -> None:
        self._update(d, removed_at=self.clock().astimezone(UTC).isoformat())

    def entry(self, d: date) -> dict[str, Any]:
        return dict(self.data["dates"].get(d.isoformat(), {}))

    def _with(self, pred: Callable[[dict[str, Any]], bool]) -> set[date]:
        return {date.fromisoformat(k) for k, e in self.data["dates"].items() if pred(e)}

    def done_dates(self) -> set[date]:
        return self._with(lambda e: e.get("status") == "succeeded")

    def live_dates(self) -> set[date]:
        """Succeeded dates whose partition retention has not removed."""
        return self._with(lambda e: e.get("status") == "succeeded" and not e.get("removed_at"))

    @property
    def first_date(self) -> date | None:
        fd = self.data.get("first_date")
        return date.fromisoformat(fd) if fd else None


# ---------------------------------------------------------------- lease
class Lease:
    """A lease object in storage (owner, token, expiry) so that runs never overlap.

    See the module docstring for exactly what is guaranteed. ``acquire`` creates the object
    create-only; an expired one is taken over through a create-only claim named after its
    token; ``renew`` and ``release`` act only for the acquiring token and only while more than
    ``margin`` seconds remain.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, owner: str, ttl_seconds: float,
                 clock: Clock | None = None):
        self.fs, self.path, self.owner, self.ttl = fs, path, owner, float(ttl_seconds)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.margin = min(60.0, self.ttl / 10)
        self.token: str | None = None
        self.held_by: str | None = None
        self._lock = threading.RLock()

    @classmethod
    def for_job(cls, state_url: str, job: str, owner: str, ttl_seconds: float,
                storage_options: dict[str, Any] | None = None, clock: Clock | None = None) -> Lease:
        fs, base = _url(state_url, job, storage_options)
        return cls(fs, f"{base}/lease.json", owner, ttl_seconds, clock)

    @property
    def held(self) -> bool:
        return self.token is not None

    def read(self) -> dict[str, Any] | None:
        """The current lease record; an unreadable object counts as held until ttl after its mtime."""
        raw = _read(self.fs, self.path)
        if raw is None:
            return None
        try:
            rec = json.loads(raw)
            _ts(rec["expires_at"]), rec["owner"], rec["token"]
            return rec
        except (ValueError, KeyError, TypeError):
            info = self.fs.info(self.path)
            m = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            m = m if isinstance(m, datetime) else datetime.fromtimestamp(float(m), UTC)
            exp = (m if m.tzinfo else m.replace(tzinfo=UTC)) + timedelta(seconds=self.ttl)
            return {"owner": "<unreadable lease>", "token": "unreadable", "expires_at": exp.isoformat()}

    def _payload(self, token: str, now: datetime, acquired: str | None = None, ttl: float | None = None) -> bytes:
        return json.dumps({"owner": self.owner, "token": token, "acquired_at": acquired or now.isoformat(),
                           "expires_at": (now + timedelta(seconds=ttl or self.ttl)).isoformat()}).encode()

    def acquire(self) -> bool:
        """Take the lease if it is free or expired. On False, ``held_by`` names the holder."""
        with self._lock:
            for _ in range(3):
                won = self._try_acquire(self.clock(), uuid.uuid4().hex)
                if won is not None:
                    return won
            self.held_by = self.held_by or "<contended>"
            return False

    def _try_acquire(self, now: datetime, token: str) -> bool | None:
        rec = self.read()
        if rec is None:
            if _create_exclusive(self.fs, self.path, self._payload(token, now)):
                self.token, self.held_by = token, None
                return True
            return None  # someone created it meanwhile: look again
        if now < _ts(rec["expires_at"]):
            self.held_by = rec["owner"]
            return False
        stale, k = rec["token"], 0  # expired: claim the right to replace this generation
        while not _create_exclusive(self.fs, f"{self.path}.takeover-{stale}-{k}",
                                    self._payload(token, now, ttl=self.margin)):
            raw = _read(self.fs, f"{self.path}.takeover-{stale}-{k}")
            claim = json.loads(raw) if raw else None
            if claim and now < _ts(claim["expires_at"]):
                self.held_by = claim["owner"]  # another trigger is taking over right now
                return False
            k += 1  # that claimant died mid-takeover: claim the next slot
        marker = f"{self.path}.takeover-{stale}-{k}"
        try:
            cur = self.read()
            if cur is None or cur["token"] != stale:
                return None  # released or taken over meanwhile: look again
            _write_atomic(self.fs, self.path, self._payload(token, now))
            self.token, self.held_by = token, None
            return True
        finally:
            for p in self.fs.glob(f"{self.path}.takeover-{stale}-*") if self.token == token else [marker]:
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:  # a concurrent cleanup got there first
                    pass

    def _mine(self, rec: dict[str, Any] | None, now: datetime) -> bool:
        return (rec is not None and rec.get("token") == self.token
                and now < _ts(rec["expires_at"]) - timedelta(seconds=self.margin))

    def renew(self) -> bool:
        """Heartbeat: push the expiry ``ttl`` ahead. False (and no longer held) if the lease was lost."""
        with self._lock:
            if not self.token:
                return False
            now, rec = self.clock(), self.read()
            if not self._mine(rec, now):
                self.token, self.held_by = None, rec["owner"] if rec else None
                return False
            _write_atomic(self.fs, self.path, self._payload(self.token, now, rec["acquired_at"]))
            return True

    def release(self) -> bool:
        """Delete the lease if this owner still holds it (an expiring one is left to expire)."""
        with self._lock:
            if not self.token:
                return False
            ok = self._mine(self.read(), self.clock())
            if ok:
                self.fs.rm_file(self.path)
            self.token = None
            return ok

    @contextmanager
    def keep_alive(self, interval: float | None = None) -> Iterator[Lease]:
        """Renew from a background thread every ``ttl/3`` seconds while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval or max(1.0, self.ttl / 3)):
                try:
                    if not self.renew():
                        log.warning("schedule lease %s lost to %s", self.path, self.held_by)
                        return
                except Exception:
                    log.exception("schedule lease heartbeat failed (will retry)")

        t = threading.Thread(target=beat, name="genpipe-lease", daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join(timeout=10)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- run-due
@dataclass
class RunDueResult:
    """``skipped``: due dates not attempted this time (after a failure or a lost lease); they stay due."""

    ran: list[date] = field(default_factory=list)
    skipped: list[date] = field(default_factory=list)
    failed: dict[date, str] = field(default_factory=dict)
    lease_held_by: str | None = None
    removed_partitions: list[str] = field(default_factory=list)


def retention_victims(present: Iterable[date], succeeded: Iterable[date], keep: int) -> list[date]:
    """Partitions to delete to keep the newest ``keep`` succeeded ones: only dates older than
    every kept one, and nothing at all until ``keep`` succeeded partitions exist."""
    present = set(present)
    live = sorted(set(succeeded) & present)
    if keep < 1 or len(live) < keep:
        return []
    return sorted(d for d in present if d < live[-keep])


def run_due(spec: JobSpec, *, now: datetime, run_one: Callable[[date], Any], state_url: str,
            list_partitions: Callable[[], list[date]] | None = None,
            remove_partition: Callable[[date], None] | None = None, owner: str | None = None,
            storage_options: dict[str, Any] | None = None) -> RunDueResult:
    """Run every due logical date of ``spec`` once, oldest first, under the job's lease.

    Success is recorded per date only after ``run_one`` returns; the first failure is recorded
    and ends the loop (later dates wait for the next trigger). Retention runs only when every
    due date succeeded. The lease is released in ``finally``. ``storage_options`` defaults to
    ``spec.storage_options``; lease times are ``now`` plus the real time elapsed since the call.
    """
    sched = spec.schedule
    if sched is None:
        raise ValueError(f"job {spec.name!r} has no schedule: section")
    _parse(sched)
    now = _aware(now)
    opts = spec.storage_options if storage_options is None else storage_options
    t0 = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - t0)

    lease = Lease.for_job(state_url, spec.name, owner or default_owner(), sched.lease_seconds, opts, clock)
    res = RunDueResult()
    if not lease.acquire():
        res.lease_held_by = lease.held_by or "<unknown>"
        return res
    try:
        state = ScheduleState(state_url, spec.name, opts, clock=clock).load()
        due = due_dates(sched, now, state.done_dates(), since=state.first_date)
        for i, d in enumerate(due):
            if not lease.renew():
                res.lease_held_by, res.skipped = lease.held_by, due[i:]
                break
            state.record_start(d)
            try:
                with lease.keep_alive():
                    info = run_one(d)
            except Exception as exc:
                res.failed[d] = f"{type(exc).__name__}: {exc}"
                state.record_failure(d, res.failed[d])
                res.skipped = due[i + 1:]
                break
            if not lease.renew():  # lost while running: record nothing; the holder re-runs d (idempotent)
                res.failed[d] = f"lease lost to {lease.held_by} while running; not recorded"
                res.lease_held_by, res.skipped = lease.held_by, due[i + 1:]
                break
            state.record_success(d, info)
            res.ran.append(d)
        else:
            if sched.retention and list_partitions and remove_partition:
                for d in retention_victims(list_partitions(), state.load().live_dates(), sched.retention):
                    try:
                        remove_partition(d)
                    except Exception:
                        log.exception("retention: could not remove partition %s of %s", d, spec.name)
                        continue
                    state.record_removed(d)
                    res.removed_partitions.append(d.isoformat())
    finally:
        lease.release()
    return res


# ---------------------------------------------------------------- install snippets
def _dst_gaps(cron: str, tz: str, days: int = 800) -> dict[dtime, datetime]:
    """Wall times of the cron that a DST jump in ``tz`` skips over the next ``days`` days.

    Maps the wall time just after each gap (where cron and croniter run the skipped job) to an
    example skipped fire time. Conservative: day fields are ignored.
    """
    z, f = ZoneInfo(tz), cron.split()
    mins, hours, out = sorted(_field_values(f[0], 0)), sorted(_field_values(f[1], 1)), {}

    def exists(w: datetime) -> bool:
        return w.replace(tzinfo=z).astimezone(UTC).astimezone(z).replace(tzinfo=None) == w

    start = date.today()
    for i in range(days):
        d = start + timedelta(days=i)
        before = datetime.combine(d, dtime(0), tzinfo=z).utcoffset()
        if before is None or datetime.combine(d + timedelta(days=1), dtime(0), tzinfo=z).utcoffset() <= before:
            continue
        for w in (datetime.combine(d, dtime(h, m)) for h in hours for m in mins):
            if not exists(w):
                end = w
                while not exists(end):
                    end += timedelta(minutes=1)
                out.setdefault(end.time(), w)
    return out


def _on_calendar(cron: str, tz: str) -> tuple[list[str], list[str]] | None:
    """systemd ``OnCalendar=`` values for a 5-field cron, and comment lines; None if not expressible.

    Cron ORs day-of-month and day-of-week when both are restricted: that becomes two lines.
    systemd skips a wall time that a DST jump removes, where cron runs it right after the jump:
    such schedules get one more line at the end of the gap (a no-op trigger on other days).
    """
    try:
        fields = cron.split()
        mins, hours, doms, months, dows = (_field_values(f, i) for i, f in enumerate(fields))
        gaps = _dst_gaps(cron, tz)
    except (ValueError, KeyError):
        return None

    def lst(vals: set[int], full: range) -> str:
        return "*" if vals == set(full) else ",".join(f"{v:02d}" for v in sorted(vals))

    def lines(hm: str) -> list[str]:
        mon, days = lst(months, range(1, 13)), ",".join(_DOW[v] for v in sorted(dows))
        if not fields[2].startswith("*") and not fields[4].startswith("*"):
            return [f"{days} *-{mon}-* {hm} {tz}", f"*-{mon}-{lst(doms, range(1, 32))} {hm} {tz}"]
        prefix = "" if dows == set(range(7)) else f"{days} "
        return [f"{prefix}*-{mon}-{lst(doms, range(1, 32))} {hm} {tz}"]

    cal = lines(f"{lst(hours, range(24))}:{lst(mins, range(60))}:00")
    notes = []
    for end, skipped in sorted(gaps.items()):
        notes = [f"# Not exact in {tz}: DST skips fire times (e.g. {skipped:%Y-%m-%d %H:%M}); systemd would",
                 "# skip that date's trigger, cron runs it when the clock jumps. The extra line(s) fire",
                 "# at the end of the gap; on other days run-due finds nothing due (idempotent)."]
        cal += [c for c in lines(end.strftime("%H:%M:00")) if c not in cal]
    return cal, notes


def _sd_quote(s: str) -> str:
    return s if re.fullmatch(r"[\w@%+=:,./-]+", s) else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def emit(spec: JobSpec, fmt: Literal["crontab", "systemd", "k8s"], *, spec_path: str,
         address: str | None = None) -> str:
    """Install snippet that triggers ``genpipe schedule run-due <spec_path>`` on the job's cron.

    Any trigger that fires at or after each fire time works: run-due works out the due dates
    itself, is idempotent, and refuses overlaps, so a late or extra trigger is harmless.
    Credentials (``storage_options``) are never written into a snippet.
    """
    if spec.schedule is None:
        raise ValueError(f"job {spec.name!r} has no schedule: section")
    cron, tz = check_cron(spec.schedule.cron), check_timezone(spec.schedule.timezone)
    argv = ["genpipe", "schedule", "run-due", spec_path]
    unit = f"genpipe-{spec.name}"
    if fmt == "crontab":
        env = f"RAY_ADDRESS={json.dumps(address)} " if address else ""
        cmd = " ".join(shlex.quote(a) for a in argv).replace("%", "\\%")
        lines = [f"# genpipe schedule for job {spec.name}: add with `crontab -e`. Use an absolute spec path",
                 "# and genpipe's full path if it is not on cron's PATH."]
        if tz != "UTC":
            lines += ["# CRON_TZ needs cronie (RHEL, Fedora, Arch) and applies to every later line;",
                      "# Debian/Ubuntu cron ignores it: there use the systemd timer instead.", f"CRON_TZ={tz}"]
        return "\n".join([*lines, f"{cron} {env}{cmd} 2>&1 | logger -t {unit}"]) + "\n"
    if fmt == "systemd":
        cal, note = _on_calendar(cron, tz) or (["*:0/15"], [
            f"# cron {cron!r} has no exact OnCalendar equivalent: fire every 15 minutes instead;",
            "# run-due is idempotent and runs only the dates that are due."])
        env = [f"Environment={_sd_quote('RAY_ADDRESS=' + address)}"] if address else []
        service = ["# --- " + unit + ".service ---", "[Unit]", f"Description=genpipe run-due for job {spec.name}",
                   "Wants=network-online.target", "After=network-online.target", "", "[Service]",
                   "Type=oneshot", *env, "ExecStart=/usr/bin/env " + " ".join(_sd_quote(a) for a in argv)]
        timer = ["# --- " + unit + ".timer ---", f"# enable: systemctl enable --now {unit}.timer", "[Unit]",
                 f"Description=genpipe schedule for job {spec.name} (cron '{cron}' {tz})", "", "[Timer]",
                 *note, *(f"OnCalendar={c}" for c in cal), "Persistent=true", f"Unit={unit}.service", "",
                 "[Install]", "WantedBy=timers.target"]
        return "\n".join(service + [""] + timer) + "\n"
    if fmt == "k8s":
        name = re.sub(r"[^a-z0-9-]", "-", unit)[:52].rstrip("-")
        container: dict[str, Any] = {"name": "run-due", "image": "genpipe:latest", "command": argv}
        if address:
            container["env"] = [{"name": "RAY_ADDRESS", "value": address}]
        manifest = {
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "genpipe", "genpipe/job": spec.name}},
            "spec": {"schedule": cron, "timeZone": tz, "concurrencyPolicy": "Forbid",
                     "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                     "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": {
                         "restartPolicy": "Never", "containers": [container]}}}}},
        }
        head = [f"# genpipe schedule for job {spec.name}: kubectl apply -f <this file> (Kubernetes >= 1.27",
                "# for timeZone). Set image to one with genpipe installed and the spec at the given path",
                "# (baked in or mounted from a ConfigMap); give storage credentials via a Secret (envFrom)."]
        return "\n".join(head) + "\n" + yaml.safe_dump(manifest, sort_keys=False)
    raise ValueError(f"unknown format {fmt!r}: expected 'crontab', 'systemd' or 'k8s'")
