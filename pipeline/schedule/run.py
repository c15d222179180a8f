"""``run_due``: every due logical date once, oldest first, under the job's lease; then retention."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.schedule.dates import as_aware, due_dates, parse_schedule
from pipeline.schedule.lease import Lease, ScheduleState, default_owner

if TYPE_CHECKING:
    from pipeline.spec import JobSpec

log = logging.getLogger(__name__)

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


def job_partitions(spec: JobSpec, storage_options: dict[str, Any] | None = None
                   ) -> tuple[Callable[[], list[date]], Callable[[date], None]]:
    """(list the job's published dates, remove one date's partition), through
    :class:`pipeline.publish.partition.Partition` (removal takes the manifest down first)."""
    from pipeline.publish.partition import Partition, published

    so = spec.storage_options if storage_options is None else storage_options

    def list_partitions() -> list[date]:
        return [date.fromisoformat(p.date) for p, _ in published(spec.sample.output, spec.name, so, strict=False)]

    def remove_partition(d: date) -> None:
        Partition.of(spec.sample.output, spec.name, d.isoformat(), so).remove()

    return list_partitions, remove_partition


def run_due(spec: JobSpec, *, now: datetime, run_one: Callable[[date], Any], state_url: str,
            list_partitions: Callable[[], list[date]] | None = None,
            remove_partition: Callable[[date], None] | None = None, owner: str | None = None,
            storage_options: dict[str, Any] | None = None) -> RunDueResult:
    """Run every due logical date of ``spec`` once, oldest first, under the job's lease.

    Success is recorded per date only after ``run_one`` returns; the first failure is recorded
    and ends the loop (later dates wait for the next trigger). Retention runs only when every
    due date succeeded; ``list_partitions`` / ``remove_partition`` default to the job's own
    (:func:`job_partitions`). The lease is released in ``finally``. ``storage_options`` defaults to
    ``spec.storage_options``; lease times are ``now`` plus the real time elapsed since the call.
    """
    sched = spec.schedule
    if sched is None:
        raise ValueError(f"job {spec.name!r} has no schedule: section")
    parse_schedule(sched)
    now = as_aware(now)
    opts = spec.storage_options if storage_options is None else storage_options
    if list_partitions is None and remove_partition is None:
        list_partitions, remove_partition = job_partitions(spec, opts)
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


