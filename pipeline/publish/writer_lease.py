"""One writer per partition: a create-only lease object in the partition, held while a run
samples, commits and publishes it.

The lease is :class:`pipeline.schedule.lease.Lease` (the one schedules use for dates; see
:mod:`pipeline.schedule` for what it guarantees and assumes of the storage) on the partition's
``_genpipe/logical_date=D/lease.json``: in its state folder, so Parquet readers of the data
folder never see it (nor its ``.tmp-*`` / ``.takeover-*`` companions). A second run of the same partition
is refused with :class:`PartitionBusy` while the lease is live; the holder renews it from a
heartbeat thread and deletes it when it is done (in a ``finally``). A holder that died
(SIGKILL, a storage outage at release time) leaves it behind: a run on the same machine takes
it over at once when the holder's process is provably gone (the owner names the machine's boot
id and pid namespace, and the pid; in the same process, a lease no live block holds); anywhere
else it is taken over once it has expired, ``ttl`` seconds after the last heartbeat.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError
from pipeline.publish.layout import LEASE_NAME, PartitionLocation
from pipeline.publish.storage import SafeMessage, redact, storage_errors, with_retries

if TYPE_CHECKING:
    from pipeline.schedule.lease import Lease

log = logging.getLogger(__name__)

__all__ = ["LEASE_NAME", "PartitionBusy", "check_still_held", "lease_for", "partition_lease"]
#: seconds a lease lives without a heartbeat (renewed every ttl/3): how long a crashed writer
#: blocks the next run of its partition
DEFAULT_TTL = 60.0


#: tokens of the leases live ``partition_lease`` blocks of this process hold
_LIVE: set[str] = set()


class PartitionBusy(GenpipeError, RuntimeError, SafeMessage):
    """Another run holds the partition's writer lease (or took it over from this one). Exit
    code 2, as ``genpipe run`` has always refused a second writer."""

    exit_code = EXIT_BAD_INPUT


@cache
def machine_id() -> str | None:
    """This boot of this machine and this pid namespace (None where that cannot be told: then
    only expiry frees a lease): a pid means the same process only under the same id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot}/{ns}".encode()).hexdigest()[:16]


def owner_name() -> str:
    """``host:pid:nonce:machine`` (what :func:`holder_gone` reads back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{machine_id() or '-'}"


def describe(owner: str | None) -> str:
    """``host H, pid P`` for an :func:`owner_name`, else the owner as recorded."""
    parts = str(owner).split(":")
    return f"host {parts[0]}, pid {parts[1]}" if len(parts) == 4 else str(owner)


def holder_gone(rec: Mapping[str, Any]) -> bool:
    """True only when the record's holder provably no longer runs: its process, on this machine
    (same boot, same pid namespace), has exited, or it is this process and no live block holds it."""
    parts = str(rec.get("owner", "")).split(":")
    me = machine_id()
    if len(parts) != 4 or me is None or parts[3] != me or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return rec.get("token") not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False


def lease_for(partition: PartitionLocation, *, ttl: float = DEFAULT_TTL, owner: str | None = None,
              clock: Callable[[], datetime] | None = None) -> Lease:
    """The (not yet acquired) writer lease of ``partition``."""
    from pipeline.schedule.lease import Lease

    partition.guard(partition.lease_path)
    return Lease(partition.fs, partition.lease_path, owner or owner_name(), ttl, clock, holder_gone=holder_gone)


@contextmanager
def partition_lease(partition: PartitionLocation, *, ttl: float = DEFAULT_TTL, owner: str | None = None,
                    clock: Callable[[], datetime] | None = None, heartbeat: float | None = None) -> Iterator[Lease]:
    """Hold the partition's writer lease for the block (renewed in the background, released at
    the end whatever happens); :class:`PartitionBusy` if another run holds it."""
    so = partition.storage_options
    where = redact(partition.data_url, so)
    with storage_errors(f"taking the writer lease of {partition.data_url}", so):
        lease = lease_for(partition, ttl=ttl, owner=owner, clock=clock)
        won = lease.acquire()
        until = None if won else (lease.read() or {}).get("expires_at")
    if not won:
        raise PartitionBusy(
            f"{where} is being written by another run ({redact(describe(lease.held_by), so)}"
            + (f", lease valid until {until}" if until else "")
            + "): not writing it twice. Wait for that run to finish; if it died, run again once its lease "
              f"has expired (at most {ttl:g} s after it stopped)")
    token = lease.token
    _LIVE.add(token)
    try:
        with lease.keep_alive(heartbeat):
            yield lease
    finally:
        _LIVE.discard(token)  # from here on a leftover of this lease counts as dead in this process
        with suppress(Exception):  # never mask the block's own error; an unreleased lease is taken over
            with_retries(lease.release, attempts=3, what="releasing the writer lease")


def check_still_held(lease: Lease, partition: PartitionLocation) -> None:
    """Renew now; :class:`PartitionBusy` if the lease was lost (expired and taken over)."""
    so = partition.storage_options
    with storage_errors(f"renewing the writer lease of {partition.data_url}", so):
        ok = lease.renew()
    if not ok:
        raise PartitionBusy(f"{redact(partition.data_url, so)}: lost the writer lease to {redact(describe(lease.held_by), so)} "
                            "(this run stalled past its expiry); not publishing")
