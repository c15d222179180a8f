"""One writer per partition: a create-only lease object in the partition, held while a run
samples, commits and publishes it.

The lease is :class:`pipeline.schedule.lease.Lease` (the one schedules use for dates; see
:mod:`pipeline.schedule` for what it guarantees and assumes of the storage) on
``<partition>/.genpipe-lease.json``: dot-prefixed, so Parquet readers of the data folder never
see it (nor its ``.tmp-*`` / ``.takeover-*`` companions). A second run of the same partition
is refused with :class:`PartitionBusy` while the lease is live; the holder renews it from a
heartbeat thread and deletes it when it is done (in a ``finally``). A holder that died
(SIGKILL, lost machine) leaves it to expire after ``ttl`` seconds; then the next run takes
it over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.publish.layout import partition_fs
from pipeline.publish.storage import SafeMessage, join, redact, storage_errors

if TYPE_CHECKING:
    from pipeline.schedule.lease import Lease

log = logging.getLogger(__name__)

LEASE_NAME = ".genpipe-lease.json"
#: seconds a lease lives without a heartbeat (renewed every ttl/3): how long a crashed writer
#: blocks the next run of its partition
DEFAULT_TTL = 60.0


class PartitionBusy(RuntimeError, SafeMessage):
    """Another run holds the partition's writer lease (or took it over from this one)."""


def lease_for(partition: str, storage_options: Mapping[str, Any] | None = None, *, ttl: float = DEFAULT_TTL,
              owner: str | None = None, clock: Callable[[], datetime] | None = None) -> Lease:
    """The (not yet acquired) writer lease of ``partition``."""
    from pipeline.schedule.lease import Lease, default_owner

    fs, ppath = partition_fs(partition, storage_options)
    return Lease(fs, join(ppath, LEASE_NAME), owner or default_owner(), ttl, clock)


@contextmanager
def partition_lease(partition: str, storage_options: Mapping[str, Any] | None = None, *, ttl: float = DEFAULT_TTL,
                    owner: str | None = None, clock: Callable[[], datetime] | None = None,
                    heartbeat: float | None = None) -> Iterator[Lease]:
    """Hold the partition's writer lease for the block (renewed in the background, released at
    the end whatever happens); :class:`PartitionBusy` if another run holds it."""
    so = storage_options or {}
    where = redact(partition, so)
    with storage_errors(f"taking the writer lease of {partition}", so):
        lease = lease_for(partition, so, ttl=ttl, owner=owner, clock=clock)
        won = lease.acquire()
        until = None if won else (lease.read() or {}).get("expires_at")
    if not won:
        raise PartitionBusy(
            f"{where} is being written by another run ({redact(str(lease.held_by), so)}"
            + (f", lease valid until {until}" if until else "")
            + "): not writing it twice. Wait for that run to finish; if it died, run again once its lease "
              f"has expired (at most {ttl:g} s after it stopped)")
    try:
        with lease.keep_alive(heartbeat):
            yield lease
    finally:
        with suppress(Exception):  # never mask the block's own error; an unreleased lease just expires
            lease.release()


def check_still_held(lease: Lease, partition: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Renew now; :class:`PartitionBusy` if the lease was lost (expired and taken over)."""
    so = storage_options or {}
    with storage_errors(f"renewing the writer lease of {partition}", so):
        ok = lease.renew()
    if not ok:
        raise PartitionBusy(f"{redact(partition, so)}: lost the writer lease to {redact(str(lease.held_by), so)} "
                            "(this run stalled past its expiry); not publishing")
