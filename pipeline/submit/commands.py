"""``submit``, ``wait``, ``status``, ``list_jobs``, ``logs``, ``stop``: what the CLI calls."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pipeline.feasibility import check_snapshot
from pipeline.spec import JobSpec
from pipeline.submit.client import (
    BAD_INPUT,
    CONNECT_TIMEOUT_S,
    JOB_FAILED,
    OK,
    TERMINAL,
    SubmitError,
    _client,
    _errors,
    _existing,
    _job_dict,
    _redact,
    _short,
    remote_snapshot,
    resolve_address,
)
from pipeline.submit.package import (
    _stage_package,
    build_entrypoint,
    cluster_path_problems,
    head_is_this_machine,
    localize_paths,
    logical_date,
    submission_id,
)


@dataclass(frozen=True)
class SubmitResult:
    submission_id: str
    status: str  # PENDING / RUNNING / SUCCEEDED / FAILED / STOPPED
    existing: bool  # the id was already on the cluster: nothing new was started
    address: str
    message: str | None = None

    @property
    def exit_code(self) -> int:
        return JOB_FAILED if self.status in ("FAILED", "STOPPED") else OK


# ---------------------------------------------------------------------------- commands


def submit(
    spec_path: str | Path,
    spec: JobSpec,
    *,
    address: str | None,
    date: str | dt.date,
    wait: bool = False,
    extra_args: Sequence[str] = (),
    log: Callable[[str], Any] = print,
    python: str | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
    runtime_env: dict[str, Any] | None = None,
    cwd: str | Path | None = None,
    check_resources: bool = True,
    attempt: int = 0,
    poll_s: float = 1.0,
    wait_timeout_s: float | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> SubmitResult:
    """Submit ``spec`` for logical ``date`` to the cluster at ``address`` (dashboard URL).

    Idempotent: when the submission id is already on the cluster, nothing is started and
    the existing job is reported (``existing=True``). ``wait`` follows the job to its end
    and raises ``SubmitError(1)`` unless it succeeds. ``python`` pins the interpreter the
    job runs with on the cluster. ``entrypoint_num_cpus`` (default: none) reserves CPUs
    for the driver; left unset, Ray runs the driver on the head node
    (``JobManager._get_label_selector``), which is where it belongs on a cluster whose
    head takes no work (cluster.yaml). ``extra_args`` go after ``run SPEC --date D``.
    ``runtime_env``: the user's Ray runtime environment (``--runtime-env FILE``), merged with
    genpipe's own (its ``working_dir`` is genpipe's package; ``env_vars`` are merged).
    Relative local paths (``storage``, ``sample.output``, ...) are resolved against ``cwd``
    (default: the current directory) when the cluster's head is this machine, and refused otherwise.
    """
    date = logical_date(date)
    if cluster_path_problems(spec) and head_is_this_machine(resolve_address(address)):
        spec, changed = localize_paths(spec, cwd or Path.cwd())
        for name, path in changed.items():
            log(f"{name}: {path} (a relative path; the cluster's head is this machine)")
    problems = cluster_path_problems(spec)
    if problems:
        raise SubmitError(BAD_INPUT, "; ".join(problems))
    sid = submission_id(spec, date, attempt)
    client, url, token = _client(address, connect_timeout=connect_timeout)

    with _errors(url, token, sid):
        info = _existing(client, sid)
        if info is not None:
            again = (
                " (a rerun of this date needs a new attempt number)"
                if str(info.status) in ("FAILED", "STOPPED")
                else ""
            )
            log(f"{sid}: already submitted to {url} (status {info.status}); not starting another{again}")
            result = SubmitResult(sid, str(info.status), True, url, info.message)
            return _wait(client, url, token, result, log, poll_s, wait_timeout_s) if wait else result

        if check_resources:
            _check_remote_resources(spec, url, token, entrypoint_num_cpus or 0.0, log)

        spec_name = (
            Path(spec_path).name if str(spec_path).endswith((".yaml", ".yml")) else f"{spec.name}.yaml"
        )
        env: dict[str, Any] = {k: v for k, v in (runtime_env or {}).items() if k != "working_dir"}
        if python:
            env["env_vars"] = {**env.get("env_vars", {}), "GENPIPE_PYTHON": python}
        kwargs: dict[str, Any] = {}
        if entrypoint_num_cpus:
            kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
        if entrypoint_num_gpus:
            kwargs["entrypoint_num_gpus"] = entrypoint_num_gpus
        with tempfile.TemporaryDirectory(prefix="genpipe-submit-") as tmp:
            stage = Path(tmp)
            _stage_package(stage, spec, spec_name)
            env["working_dir"] = str(stage)
            try:
                client.submit_job(
                    entrypoint=build_entrypoint(spec_name, date, extra_args),
                    submission_id=sid,
                    runtime_env=env,
                    metadata={
                        "genpipe_job": spec.name,
                        "genpipe_date": date,
                        "genpipe_spec_hash": spec.spec_hash(),
                        "genpipe_spec": str(spec_path),
                    },
                    **kwargs,
                )
                existing = False
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise
                existing = True  # lost a race with another submit of the same id
        info = client.get_job_info(sid)
        verb = "already submitted to" if existing else "submitted to"
        log(f"{sid}: {verb} {url} (status {info.status})")
        result = SubmitResult(sid, str(info.status), existing, url, info.message)
        return _wait(client, url, token, result, log, poll_s, wait_timeout_s) if wait else result


def _check_remote_resources(
    spec: JobSpec, url: str, token: str | None, driver_cpus: float, log: Callable
) -> None:
    try:
        snap, static = remote_snapshot(url, token)
    except Exception as exc:  # noqa: BLE001 - the pre-flight is best effort; the job re-checks
        log(
            f"note: could not read the cluster's resources ({_short(_redact(str(exc), token), 120)}); not checked"
        )
        return
    problems = check_snapshot(spec, snap, driver_cpus=driver_cpus)
    if not problems:
        return
    if static:
        raise SubmitError(BAD_INPUT, "the cluster can never run this job: " + "; ".join(problems))
    log(
        "warning: the cluster's current nodes can't run this job (" + "; ".join(problems) + "); "
        "it may autoscale, so submitting anyway (the job re-checks against the autoscaler's limits)"
    )


def _wait(
    client: Any,
    url: str,
    token: str | None,
    result: SubmitResult,
    log: Callable[[str], Any],
    poll_s: float,
    timeout_s: float | None,
) -> SubmitResult:
    sid = result.submission_id
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = result.status
    with _errors(url, token, sid):
        while True:
            info = client.get_job_info(sid)
            status = str(info.status)
            if status != last:
                log(f"{sid}: {status}")
                last = status
            if status in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise SubmitError(JOB_FAILED, f"{sid}: still {status} after {timeout_s:g} s", sid, status)
            time.sleep(poll_s)
    done = SubmitResult(sid, status, result.existing, url, info.message)
    if status != "SUCCEEDED":
        raise _job_failed(client, info, sid, status, token)
    return done


def _job_failed(client: Any, info: Any, sid: str, status: str, token: str | None) -> SubmitError:
    """The job's own one-line error (``genpipe: error: ...`` from the CLI inside the
    cluster) when there is one, else Ray's message. A driver that exited with 2 (bad input,
    e.g. resources the cluster can never give, found inside the cluster) keeps code 2."""
    reason = ""
    with contextlib.suppress(Exception):
        errors = [ln for ln in client.get_job_logs(sid).splitlines() if ln.startswith("genpipe: error:")]
        reason = errors[-1].removeprefix("genpipe: error:").strip() if errors else ""
    if not reason and info.message:
        reason = info.message
    why = f": {_short(_redact(reason, token), 500)}" if reason else ""
    code = BAD_INPUT if getattr(info, "driver_exit_code", None) == BAD_INPUT else JOB_FAILED
    return SubmitError(code, f"{sid}: job {status}{why} (see `genpipe logs {sid}`)", sid, status)


def wait(
    address: str | None,
    id: str,
    *,
    log: Callable[[str], Any] = print,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> SubmitResult:
    """Wait for job ``id`` to end; ``SubmitError(1)`` unless it succeeded."""
    client, url, token = _client(address)
    with _errors(url, token, id):
        info = client.get_job_info(id)
    return _wait(
        client,
        url,
        token,
        SubmitResult(id, str(info.status), True, url, info.message),
        log,
        poll_s,
        timeout_s,
    )


def status(address: str | None, id: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """One job as a dict, or (no ``id``) every genpipe job on the cluster, oldest first."""
    if id is None:
        return list_jobs(address)
    client, url, token = _client(address)
    with _errors(url, token, id):
        return _job_dict(client.get_job_info(id))


def list_jobs(address: str | None, *, all_jobs: bool = False) -> list[dict[str, Any]]:
    """Jobs submitted by genpipe (``all_jobs``: every submitted job), oldest first."""
    client, url, token = _client(address)
    with _errors(url, token):
        jobs = [_job_dict(j) for j in client.list_jobs() if j.submission_id]
    if not all_jobs:
        jobs = [j for j in jobs if j["job"]]
    return sorted(jobs, key=lambda j: j["start_time"] or 0)


def logs(address: str | None, id: str, follow: bool = False, out: TextIO | None = None) -> str:
    """Write the job's logs to ``out`` (default stdout); ``follow`` streams them until the
    job ends. Returns the job's status."""
    out = out or sys.stdout
    client, url, token = _client(address)
    with _errors(url, token, id):
        if not follow:
            out.write(client.get_job_logs(id))
        else:
            client.get_job_info(id)  # a clean "no job" error before opening the websocket

            async def _tail() -> None:
                async for chunk in client.tail_job_logs(id):
                    out.write(chunk)
                    out.flush()

            asyncio.run(_tail())
        out.flush()
        return str(client.get_job_info(id).status)


def stop(address: str | None, id: str) -> bool:
    """Ask the job to stop; True when it was still running."""
    client, url, token = _client(address)
    with _errors(url, token, id):
        return bool(client.stop_job(id))
