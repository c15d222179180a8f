"""The ``genpipe`` command: the only place that reads argv, YAML paths and the environment.

Exit codes: 0 success, 1 the job failed (training error, quality gate), 2 bad input
(spec, data, paths, resources the cluster can never give), 3 cluster unreachable,
130 / 143 stopped by SIGINT / SIGTERM (cleanly: running the same command again resumes).
Every failure is one line on stderr, never a traceback (GENPIPE_DEBUG=1 shows it).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

import typer

from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNREACHABLE, GenpipeError
from pipeline.spec import JobSpec, SpecError, load_spec, parse_overrides

app = typer.Typer(
    name="genpipe",
    help="Train class-conditional image generators on Ray, gate them on quality, publish synthetic datasets.",
    no_args_is_help=True,
    add_completion=True,  # genpipe --install-completion / --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    epilog="""**Examples**

* `genpipe validate jobs/*.yaml`
* `genpipe run jobs/digits-dcgan.yaml --date 2026-11-25 --set train.epochs=5`
* `genpipe inspect outputs/datasets/digits-dcgan --grid grid.png`
* `genpipe submit jobs/mnist-dcgan-gpu.yaml --address http://127.0.0.1:8265 --wait`
* `genpipe status` / `genpipe list` / `genpipe logs ID --follow` / `genpipe stop ID`
* `genpipe schedule run-due jobs/nightly-augment.yaml` (from cron, a systemd timer or a k8s CronJob)
* `genpipe schedule show jobs/nightly-augment.yaml`
* `genpipe schedule emit jobs/nightly-augment.yaml --format k8s`

Exit codes: 0 success, 1 job failed, 2 bad input, 3 cluster unreachable.""",
)
schedule_app = typer.Typer(help="Nightly schedules with logical dates (for cron, systemd timers, k8s CronJobs).",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM

#: the signal that stopped this command, if one did (SIGTERM is turned into KeyboardInterrupt)
_stopped_by: list[int] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM stops the command as Ctrl-C does: a KeyboardInterrupt unwinds every ``finally``
    (sampling actors killed, the partition lease released, embedded Ray shut down at exit).
    Ray's own handler instead called ``sys.exit`` inside a Ray call, and the driver died with
    SIGABRT and a C++ stack dump. Once only: a second SIGTERM does not interrupt the clean-up."""
    if _stopped_by:
        return
    _stopped_by.append(signum)
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM like SIGINT (main thread only; ``runner.ensure_ray`` puts it back after ray.init)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _one_line(msg: str) -> str:
    """Messages can carry newlines (a remote traceback inside a Ray error): keep one line, and
    of a traceback only its last line (the exception)."""
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    frame = next((i for i, ln in enumerate(lines) if ln.startswith(("Traceback", 'File "'))), None)
    if frame is not None:
        lines = [*lines[:frame], "...", lines[-1]]
    return " ".join(lines)


def _err(msg: str, code: int) -> typer.Exit:
    from pipeline.publish.storage import redact

    typer.echo(f"genpipe: error: {_one_line(redact(msg))}", err=True)
    return typer.Exit(code)


def _remote_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, without Ray's wrapper (whose text is the remote traceback)."""
    rex = sys.modules.get("ray.exceptions")
    while rex is not None and isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    return exc


def cli_errors(fn: F) -> F:
    """Map exceptions to one-line messages and exit codes: every error genpipe raises on purpose
    is a :class:`~pipeline.errors.GenpipeError` and carries its own ``exit_code``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        install_signal_handlers()
        try:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                cause = _remote_cause(exc)
                if cause is exc or os.environ.get("GENPIPE_DEBUG"):
                    raise
                raise cause from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            signum = _stopped_by[0] if _stopped_by else signal.SIGINT
            typer.echo(f"genpipe: stopped by {signal.Signals(signum).name}: nothing half-published; "
                       "run the same command again to resume", err=True)
            raise typer.Exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT) from None
        except SpecError as exc:  # a GenpipeError that prints one line per problem
            for p in exc.problems:
                typer.echo(f"{exc.source}: {p}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except GenpipeError as exc:
            raise _err(f"{type(exc).__name__}: {exc}" if exc.name_in_message else str(exc), exc.exit_code) from None
        except ConnectionError as exc:
            raise _err(f"cluster unreachable: {exc}", EXIT_UNREACHABLE) from None
        except (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            named = exc.filename is None or str(exc.filename) in str(exc)  # the line names the file
            raise _err(f"{type(exc).__name__}: {exc}" + ("" if named else f": {exc.filename}"),
                       EXIT_BAD_INPUT) from None
        except Exception as exc:
            if os.environ.get("GENPIPE_DEBUG"):
                raise
            code = getattr(exc, "exit_code", EXIT_FAILED)
            raise _err(f"{type(exc).__name__}: {exc}", code) from None

    return wrapper  # type: ignore[return-value]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s genpipe %(message)s", stream=sys.stderr)


def logical_date(value: str | None) -> str:
    from pipeline.schedule.dates import parse_date

    if value is None:
        return datetime.now(UTC).date().isoformat()
    try:
        return parse_date(value).isoformat()
    except ValueError as exc:
        raise SpecError("--date", [str(exc)]) from None


def load(spec_path: str, overrides: list[str] | None) -> JobSpec:
    return load_spec(spec_path, parse_overrides(overrides or []))


JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout (keys: README "
                                       "\"Machine-readable output\"); logs stay on stderr")]


def emit(json_out: bool, doc: Any, text: str | list[str]) -> None:
    """The command's result on stdout: ``doc`` as one JSON document, or the text lines."""
    import json

    if json_out:
        typer.echo(json.dumps(doc, indent=1, default=str, sort_keys=True))
    else:
        typer.echo(text if isinstance(text, str) else "\n".join(text))


def _stdout_for_results(json_out: bool) -> Any:
    """With ``--json``, whatever the work prints (Ray forwards its workers' output to the driver's
    stdout) goes to stderr, so stdout holds the one JSON document."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()


SpecArg = Annotated[str, typer.Argument(help="job spec YAML, e.g. jobs/digits-dcgan.yaml")]
DateOpt = Annotated[str | None, typer.Option("--date", help="logical date YYYY-MM-DD (default: today, UTC)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a field: --set train.epochs=3")]
AddrOpt = Annotated[str | None, typer.Option("--address", envvar="RAY_ADDRESS",
                                             help="Ray dashboard / Jobs API address, e.g. http://HEAD:8265")]


@app.command()
@cli_errors
def validate(specs: Annotated[list[str], typer.Argument(help="one or more job specs")],
             json_out: JsonOpt = False) -> None:
    """Check job specs; print every problem with its field path (exit 2 if any).

    Example: genpipe validate jobs/*.yaml
    """
    bad, docs = 0, []
    for path in specs:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            bad += 1
            docs.append({"spec": path, "ok": False, "problems": exc.problems})
            for p in exc.problems:
                typer.echo(f"{path}: {p}", err=True)
            continue
        docs.append({"spec": path, "ok": True, "name": spec.name, "model": spec.model.kind,
                     "dataset": spec.dataset.source, "images": spec.sample.total, "spec_hash": spec.spec_hash()})
        if not json_out:
            typer.echo(f"{path}: ok ({spec.name}: {spec.model.kind} on {spec.dataset.source}, "
                       f"{spec.sample.total} images)")
    if json_out:
        emit(True, {"specs": docs, "ok": not bad}, "")
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
@cli_errors
def run(
    spec_path: SpecArg,
    date_: DateOpt = None,
    overrides: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace a partition published by a different spec")] = False,
    address: Annotated[str | None, typer.Option("--address", help="ray://... or auto; default: RAY_ADDRESS, "
                                                "else an embedded local Ray")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a job here: train -> evaluate -> sample -> publish. Re-running resumes.

    Example: genpipe run jobs/digits-dcgan.yaml --date 2026-11-25
    """
    from dataclasses import asdict

    from pipeline.runner import run_job

    setup_logging()
    spec = load(spec_path, overrides)
    with _stdout_for_results(json_out):
        out = run_job(spec, logical_date(date_), overwrite=overwrite, address=address)
    emit(json_out, {"job": spec.name, "spec_hash": spec.spec_hash(), **asdict(out)},
         f"{out.status}: {out.rows} rows, {out.shards} shards -> {out.partition}")


@app.command()
@cli_errors
def submit(
    spec_path: SpecArg,
    address: AddrOpt = None,
    date_: DateOpt = None,
    overrides: SetOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the job to its end and exit 1 if it "
                                       "fails (default, as `ray job submit`); --no-wait returns at once")] = True,
    overwrite: Annotated[bool, typer.Option(help="pass --overwrite to the job")] = False,
    runtime_env: Annotated[str | None, typer.Option("--runtime-env", help="Ray runtime_env YAML/JSON file "
                                                    "(pip, env_vars, ...), merged with genpipe's")] = None,
    entrypoint_num_cpus: Annotated[float | None, typer.Option(help="CPUs reserved for the job's driver")] = None,
    entrypoint_num_gpus: Annotated[float | None, typer.Option(help="GPUs reserved for the job's driver")] = None,
    python: Annotated[str | None, typer.Option("--python", help="interpreter the job runs with on the "
                                               "cluster (default: the one running Ray there)")] = None,
) -> None:
    """Submit a job to a Ray cluster through the Jobs API (idempotent per job + date + spec).

    Follows the job to its end like `ray job submit` (--no-wait returns at once). Relative paths
    in the spec resolve against this directory when the head is this machine.

    Example: genpipe submit jobs/mnist-dcgan-gpu.yaml --address http://127.0.0.1:8265
    """
    import yaml

    from pipeline.submit import submit as do_submit

    spec = load(spec_path, overrides)
    env = None
    if runtime_env:
        try:
            env = yaml.safe_load(open(runtime_env).read())
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError("--runtime-env", [f"{runtime_env}: {exc}"]) from None
        if not isinstance(env, dict):
            raise SpecError("--runtime-env", [f"{runtime_env}: expected a mapping (pip, env_vars, ...)"])
    res = do_submit(spec_path, spec, address=address, date=logical_date(date_), wait=wait,
                    extra_args=["--overwrite"] if overwrite else [], log=typer.echo, python=python,
                    entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
                    runtime_env=env)
    typer.echo(f"{res.submission_id}: {res.status}" + (" (already submitted)" if res.existing else ""))
    if res.exit_code:
        raise typer.Exit(res.exit_code)


@app.command()
@cli_errors
def status(job_id: Annotated[str | None, typer.Argument(help="submission id; all jobs if left out")] = None,
           address: AddrOpt = None, json_out: JsonOpt = False) -> None:
    """Show a submitted job's status (or every job's).

    Example: genpipe status genpipe-digits-dcgan-2026-11-25-1a2b3c4d
    """
    from pipeline.submit import status as do_status

    res = do_status(address, job_id)
    jobs = res if isinstance(res, list) else [res]
    emit(json_out, {"jobs": jobs} if job_id is None else res,
         [f"{j.get('submission_id')}: {j.get('status')} {j.get('message') or ''}".rstrip() for j in jobs])


@app.command("list")
@cli_errors
def list_(address: AddrOpt = None,
          all_jobs: Annotated[bool, typer.Option("--all", help="include jobs not submitted by genpipe")] = False,
          json_out: JsonOpt = False) -> None:
    """List jobs on the cluster.

    Example: genpipe list --address http://127.0.0.1:8265
    """
    from pipeline.submit import list_jobs

    jobs = list_jobs(address, all_jobs=all_jobs)
    emit(json_out, {"jobs": jobs},
         [f"{j.get('submission_id')}\t{j.get('status')}\t{j.get('entrypoint', '')}" for j in jobs])


@app.command()
@cli_errors
def logs(job_id: Annotated[str, typer.Argument(help="submission id")], address: AddrOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False) -> None:
    """Print a job's logs.

    Example: genpipe logs genpipe-digits-dcgan-2026-11-25-1a2b3c4d --follow
    """
    from pipeline.submit import logs as do_logs

    do_logs(address, job_id, follow=follow, out=sys.stdout)


@app.command()
@cli_errors
def stop(job_id: Annotated[str, typer.Argument(help="submission id")], address: AddrOpt = None) -> None:
    """Stop a running job.

    Example: genpipe stop genpipe-digits-dcgan-2026-11-25-1a2b3c4d
    """
    from pipeline.submit import stop as do_stop

    typer.echo(f"{job_id}: {'stop requested' if do_stop(address, job_id) else 'not running'}")


@app.command()
@cli_errors
def inspect(
    url: Annotated[str, typer.Argument(help="a published partition or dataset root (any fsspec URL)")],
    grid: Annotated[str | None, typer.Option(help="write a per-class grid PNG here (none unless asked)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Summarise a published dataset: rows, per-label counts, shards, metrics; write a grid PNG.

    Example: genpipe inspect outputs/datasets/digits-dcgan/data/logical_date=2026-11-25
    """
    from pipeline.inspect import inspect_dataset

    if json_out:
        from pipeline.inspect import summarize

        doc = summarize(url)
        if grid:
            doc["grid"] = grid
            inspect_dataset(url, grid_path=grid)
    summary = "" if json_out else inspect_dataset(url, grid_path=grid)
    emit(json_out, doc if json_out else None, summary)


@app.command()
@cli_errors
def migrate(
    url: Annotated[str, typer.Argument(help="a dataset root (<sample.output>/<job>) in genpipe 0.1's layout")],
    spec_path: Annotated[str | None, typer.Option("--spec", help="take storage_options from this job spec "
                                                  "(object stores)")] = None,
) -> None:
    """Move genpipe 0.1 partitions (date=D/ with manifest.json beside the shards) into the dataset
    layout (data/logical_date=D/, _genpipe/logical_date=D/, README.md); manifests stay valid.

    Example: genpipe migrate outputs/datasets/digits-dcgan
    """
    from pipeline.publish.migrate import migrate as do_migrate

    so = load(spec_path, None).storage_options if spec_path else None
    moved = do_migrate(url, so, say=typer.echo)  # LayoutError: exit 2 (cli_errors)
    typer.echo(f"migrated {len(moved)} partition(s)" if moved else f"{url}: nothing in the old layout")


def _now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise SpecError("--now", [f"{value!r}: expected an ISO time, e.g. 2026-11-25T03:00:00+00:00"]) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _scheduled(spec_path: str, overrides: list[str] | None) -> JobSpec:
    spec = load(spec_path, overrides)
    if spec.schedule is None:
        raise SpecError(spec_path, ["schedule: this job has no schedule block"])
    return spec


NowOpt = Annotated[str | None, typer.Option("--now", help="pretend it is this time (ISO 8601); default: now")]


@schedule_app.command("run-due")
@cli_errors
def schedule_run_due(spec_path: SpecArg, address: AddrOpt = None, now: NowOpt = None,
                     overrides: SetOpt = None, json_out: JsonOpt = False) -> None:
    """Run (or submit) every logical date that is due, then apply retention. Safe to trigger often.

    Example (crontab): */15 * * * *  genpipe schedule run-due jobs/nightly-augment.yaml
    """
    from pipeline.schedule import run_due

    setup_logging()
    spec = _scheduled(spec_path, overrides)

    def run_one(d: date) -> Any:
        if address:
            from pipeline.submit import submit

            return submit(spec_path, spec, address=address, date=d.isoformat(), wait=True)
        from pipeline.runner import run_job

        return run_job(spec, d.isoformat())

    with _stdout_for_results(json_out):
        res = run_due(spec, now=_now(now), run_one=run_one, state_url=spec.storage)  # retention through Partition
    doc = {"job": spec.name, "lease_held_by": res.lease_held_by, "ran": [d.isoformat() for d in res.ran],
           "skipped": [d.isoformat() for d in res.skipped],
           "failed": {d.isoformat(): e for d, e in res.failed.items()}, "removed": res.removed_partitions}
    if res.lease_held_by:
        emit(json_out, doc, f"another run holds the lease ({res.lease_held_by}): nothing done")
        return
    emit(json_out, doc, f"ran: {[d.isoformat() for d in res.ran] or 'nothing due'}"
         + (f"; removed: {res.removed_partitions}" if res.removed_partitions else ""))
    if res.failed:
        raise _err("failed: " + "; ".join(f"{d}: {e}" for d, e in res.failed.items()), EXIT_FAILED)


@schedule_app.command("show")
@cli_errors
def schedule_show(spec_path: SpecArg, now: NowOpt = None, count: int = 5, json_out: JsonOpt = False) -> None:
    """Print the next fire times, the dates due now and the recorded state.

    Example: genpipe schedule show jobs/nightly-augment.yaml
    """
    from pipeline.schedule import ScheduleState, due_dates, next_runs

    spec = _scheduled(spec_path, None)
    t = _now(now)
    state = ScheduleState(spec.storage, spec.name, spec.storage_options).load()
    runs = [r.isoformat() for r in next_runs(spec.schedule, t, count)]
    due = [d.isoformat() for d in due_dates(spec.schedule, t, state.done_dates(), since=state.first_date)]
    recorded = {d.isoformat(): state.entry(d) for d in sorted(state.done_dates() | state.live_dates())}
    doc = {"job": spec.name, "cron": spec.schedule.cron, "timezone": spec.schedule.timezone,
           "catchup_days": spec.schedule.catchup_days, "retention": spec.schedule.retention, "next_runs": runs,
           "due": due, "state": recorded}
    emit(json_out, doc, [f"{spec.name}: cron '{spec.schedule.cron}' ({spec.schedule.timezone}), "
                         f"catch-up {spec.schedule.catchup_days} days, retention {spec.schedule.retention or 'all'}",
                         "next runs: " + ", ".join(runs), "due now: " + (", ".join(due) or "nothing"),
                         *[f"  {d}: {e}" for d, e in recorded.items()]])


@schedule_app.command("emit")
@cli_errors
def schedule_emit(spec_path: SpecArg,
                  fmt: Annotated[str, typer.Option("--format", help="crontab | systemd | k8s")] = "crontab",
                  address: AddrOpt = None) -> None:
    """Print an install snippet that triggers run-due: a crontab line, systemd units or a k8s CronJob.

    Example: genpipe schedule emit jobs/nightly-augment.yaml --format k8s > cronjob.yaml
    """
    from pipeline.schedule import emit

    if fmt not in ("crontab", "systemd", "k8s"):
        raise SpecError("--format", [f"{fmt!r}: expected crontab, systemd or k8s"])
    spec = _scheduled(spec_path, None)
    typer.echo(emit(spec, fmt, spec_path=spec_path, address=address))  # type: ignore[arg-type]


def _this_machine() -> Any:
    """The embedded cluster `run` would start here, without starting it: one node, this machine."""
    import os

    from pipeline.feasibility import ClusterSnapshot

    res = {"CPU": float(os.cpu_count() or 1)}
    try:
        import torch

        if torch.cuda.is_available():
            res["GPU"] = float(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch CUDA: a CPU machine
        pass
    return ClusterSnapshot(resources=res, nodes=[{"node_id": "local", "resources": res, "is_head": True}])


@app.command()
@cli_errors
def plan(
    spec_path: SpecArg,
    date_: DateOpt = None,
    overrides: SetOpt = None,
    address: Annotated[str | None, typer.Option("--address", help="check against this cluster's Jobs API "
                                                "(http://HEAD:8265); default: this machine, as `run` embeds it")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Dry run: what a run would do, changing nothing anywhere.

    Prints the resolved spec and its hash, the shard plan, each stage's resources and whether the
    cluster can ever provide them, the run and partition URLs, and what a run now would do (train
    from scratch, resume, reuse a finished run, skip complete shards, or nothing: already published).

    Example: genpipe plan jobs/digits-dcgan.yaml --json
    """
    import json

    from pipeline.data import load_dataset
    from pipeline.feasibility import check_snapshot
    from pipeline.plan import DataInfo, RunPlan, predict

    spec = load(spec_path, overrides)
    day = logical_date(date_)
    if spec.dataset.streaming:
        raise SpecError(spec_path, ["genpipe plan: dataset.streaming needs a cluster to list the data; "
                                    "use `genpipe run` (it plans the same way)"])
    data = DataInfo.of(load_dataset(spec.dataset))
    if address:
        from pipeline.submit.client import find_auth_token, remote_snapshot, resolve_address

        snap, _ = remote_snapshot(resolve_address(address), find_auth_token())
        where = address
    else:
        snap, where = _this_machine(), "this machine (embedded Ray)"
    p = RunPlan.build(spec, day, data, cluster_resources=snap.resources)
    problems = check_snapshot(spec, snap)
    doc = p.to_json()
    doc.update({"cluster": {"where": where, "resources": snap.resources, "feasible": not problems,
                            "problems": problems}, "prediction": predict(p)})
    if json_out:
        typer.echo(json.dumps(doc, indent=1, default=str))
    else:
        pr = doc["prediction"]
        lines = [f"job {spec.name} date={day}  spec {p.spec_hash[:12]}",
                 f"  data: {data.num_train} train / {data.num_test} test images {data.image_shape}, "
                 f"{data.num_classes} classes",
                 f"  train: {p.train.count} x {p.train.bundle}  ->  {p.run_url}",
                 f"  evaluate: {p.evaluate.bundle}, {p.eval.images} images, {len(p.eval.seeds)} probe seeds",
                 f"  sample: {p.sample.count or 'default'} x {p.sample.bundle} ({p.sample_mode}), "
                 f"{p.shards.rows} rows in {p.shards.num_shards} shards  ->  {p.partition}",
                 "  per label: " + ", ".join(f"{k}={v}" for k, v in p.shards.per_label.items()),
                 f"  cluster ({where}): " + ("can run it" if not problems else "can never run it: " + "; ".join(problems)),
                 f"  a run now would: {pr['action']}"
                 + (f" (skipping {pr['shards_reusable']} complete shards)" if pr.get("shards_reusable") else "")]
        typer.echo("\n".join(lines))
    if problems:
        raise typer.Exit(EXIT_BAD_INPUT)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
