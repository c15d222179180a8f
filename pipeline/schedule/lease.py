"""Schedule state and the run-due lease, kept in the output storage (see :mod:`pipeline.schedule`
for the lease guarantee and what it assumes of the storage)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import fsspec

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

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


class Lease:
    """A lease object in storage (owner, token, expiry) so that runs never overlap.

    See the module docstring for exactly what is guaranteed. ``acquire`` creates the object
    create-only; an expired one is taken over through a create-only claim named after its
    token; ``renew`` and ``release`` act only for the acquiring token and only while more than
    ``margin`` seconds remain.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, owner: str, ttl_seconds: float,
                 clock: Clock | None = None, holder_gone: Callable[[dict[str, Any]], bool] | None = None):
        self.fs, self.path, self.owner, self.ttl = fs, path, owner, float(ttl_seconds)
        self.clock = clock or (lambda: datetime.now(UTC))
        #: optional proof that a record's holder is dead (e.g. its process is gone on this very
        #: machine): such a lease counts as expired and is taken over the same way
        self.holder_gone = holder_gone
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
        if now < _ts(rec["expires_at"]) and not (self.holder_gone and self.holder_gone(rec)):
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
                        log.warning("lease %s lost to %s", self.path, self.held_by)
                        return
                except Exception:
                    log.exception("lease heartbeat failed (will retry)")

        t = threading.Thread(target=beat, name="genpipe-lease", daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join(timeout=10)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


