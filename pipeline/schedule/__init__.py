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

from pipeline.schedule.cron import MACROS, check_cron, check_timezone
from pipeline.schedule.dates import due_dates, next_runs
from pipeline.schedule.emit import emit
from pipeline.schedule.lease import Lease, ScheduleState, default_owner
from pipeline.schedule.run import RunDueResult, retention_victims, run_due

__all__ = ["MACROS", "check_cron", "check_timezone", "due_dates", "next_runs", "ScheduleState", "Lease", "default_owner", "RunDueResult", "retention_victims", "run_due", "emit"]
