"""Ray's fixed costs that bound the free-generator probe on a small machine (bench/sampling.py).

Two measurements on a local Ray of ``--cpus`` logical CPUs (default: cores + 1, as the probe's
main run), each against its own plain baseline in the same run:

* **actor start-up**: how long an actor takes from ``.remote()`` to its first method's answer,
  first on a cluster whose prestarted workers have never run a task, then after tasks have used
  every worker (as in a job: the gate's tasks, the encode tasks of an earlier stage, the warm-up
  tasks of ``sample_shards``). Whether the actor got one of the existing worker processes or a
  new one is recorded; a task on an existing worker is the baseline.
* **idle cluster CPU**: CPU seconds per second of every process of the cluster (driver, workers,
  raylet, GCS, dashboard and its agents) while nothing runs, with the dashboard (as genpipe's
  embedded cluster and bench/sampling.py start it, metrics collection off) and without.

Writes ``results/ray-startup-cpu.json`` (``--out``); ``--quick`` runs fewer, shorter rounds and
records nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import ray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.records import emit, load_avg, write_records  # noqa: E402


def _start(cpus: int, dashboard: bool) -> None:
    ray.init(num_cpus=cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", logging_level="ERROR",
             log_to_driver=False, _system_config={"enable_metrics_collection": False})


def _processes() -> dict[int, tuple[float, str]]:
    out = {}
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = (t.user + t.system, " ".join(p.cmdline())[:60])
        except psutil.Error:
            pass
    return out


def _worker_pids() -> set[int]:
    return {pid for pid, (_, cmd) in _processes().items() if cmd.startswith("ray::")}


@ray.remote(num_cpus=1)
class Probe:
    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=1)
def _task(hold_s: float) -> int:
    time.sleep(hold_s)
    return os.getpid()


def actor_startup(cpus: int, rounds: int) -> None:
    _start(cpus, dashboard=True)
    try:
        time.sleep(3)  # the prestarted workers come up
        existing = _worker_pids()
        t = time.perf_counter()
        a = Probe.remote()
        pid = ray.get(a.pid.remote())
        first = time.perf_counter() - t
        emit(probe="actor_on_fresh_cluster", seconds=round(first, 3), reused_existing_worker=pid in existing,
             workers_before=len(existing))
        ray.kill(a)
        used: set[int] = set()
        rows = []
        for _ in range(rounds):
            time.sleep(0.5)
            used |= set(ray.get([_task.remote(0.3) for _ in range(cpus)]))  # every CPU's worker runs a task
            existing = _worker_pids()
            t = time.perf_counter()
            a = Probe.remote()
            pid = ray.get(a.pid.remote())
            actor_s = time.perf_counter() - t
            ray.kill(a)
            time.sleep(0.5)
            t = time.perf_counter()
            task_pid = ray.get(_task.remote(0.0))
            task_s = time.perf_counter() - t
            rows.append({"actor_s": round(actor_s, 3), "actor_reused_worker": pid in existing,
                         "actor_on_a_task_worker": pid in used, "task_s": round(task_s, 4),
                         "task_reused_worker": task_pid in existing or task_pid in used})
        actor = sorted(r["actor_s"] for r in rows)
        task = sorted(r["task_s"] for r in rows)
        emit(probe="actor_after_tasks", rounds=rows, actor_median_s=actor[len(actor) // 2],
             task_median_s=task[len(task) // 2],
             actor_reused_a_task_worker=sum(r["actor_on_a_task_worker"] for r in rows),
             actor_in_a_new_process=sum(not r["actor_reused_worker"] for r in rows),
             ratio_actor_vs_task=round(actor[len(actor) // 2] / max(task[len(task) // 2], 1e-6), 1))
    finally:
        ray.shutdown()


def idle_cpu(cpus: int, seconds: float) -> None:
    res = {}
    for dashboard in (True, False):
        _start(cpus, dashboard)
        try:
            ray.get([_task.remote(0.0) for _ in range(cpus)])
            time.sleep(5)  # start-up work done
            a = _processes()
            time.sleep(seconds)
            b = _processes()
        finally:
            ray.shutdown()
        per = sorted(((b[k][0] - a.get(k, (0.0, ""))[0]) / seconds, b[k][1]) for k in b)
        total = sum(x[0] for x in per)
        res[dashboard] = total
        emit(probe="idle_cluster_cpu", dashboard=dashboard, seconds=seconds, cores_busy=round(total, 3),
             share_of_machine=round(total / (os.cpu_count() or 1), 3),
             busiest=[{"cores": round(c, 3), "process": n} for c, n in per[-4:]])
    emit(probe="idle_summary", with_dashboard_cores=round(res[True], 3), without_dashboard_cores=round(res[False], 3),
         ratio=round(res[True] / max(res[False], 1e-9), 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=(os.cpu_count() or 1) + 1)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds; records nothing")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    emit(probe="setup", cpus=os.cpu_count(), ray_cpus=args.cpus, ray=ray.__version__,
         python=sys.version.split()[0], date=datetime.now(UTC).isoformat(timespec="seconds"),
         load_avg=load_avg())
    actor_startup(args.cpus, 2 if args.quick else 5)
    idle_cpu(args.cpus, 3.0 if args.quick else 20.0)
    emit(probe="end", load_avg=load_avg(),
         date=datetime.now(UTC).isoformat(timespec="seconds"))
    if args.quick and not args.out:
        return
    write_records(Path(args.out or ROOT / "bench" / "results" / "ray-startup-cpu.json"))


if __name__ == "__main__":
    main()
