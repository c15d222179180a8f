"""Submit a job to a Ray cluster through Ray's Jobs API, and watch, list and stop it.

``submit`` ships a small package (this ``pipeline`` package, the validated spec and a
launcher script) as the job's ``working_dir`` and runs ``python -m pipeline run SPEC
--date D`` inside the cluster. The submission id is a pure function of (job, logical date,
spec hash), so a repeated submit finds the job already there and reports it instead of
starting a second one.

Three things Ray leaves to the caller, handled here:

* **Token auth.** Ray 2.60's client attaches the token only when ``RAY_AUTH_MODE=token``
  is set in the *client's* environment (``get_auth_headers_if_auth_enabled`` in
  ``ray/_private/authentication/http_token_authentication.py`` returns ``{}`` otherwise),
  and a head with token auth answers 401 "Missing authentication token". We look the
  token up ourselves, in Ray's own order (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
  ``~/.ray/auth_token``), and pass it as an ``Authorization: Bearer`` header through the
  client's public ``headers=`` argument; Ray keeps a user-given Authorization header
  (same function) and sends it on every request, the log websocket included
  (``JobSubmissionClient.tail_job_logs``). The token never goes into a message.
* **The interpreter.** Ray runs the entrypoint with ``/bin/sh -c`` in the environment of
  the job-supervisor actor (``JobSupervisor._exec_entrypoint`` /
  ``run`` in ``ray/dashboard/modules/job/job_supervisor.py``), i.e. the PATH the head was
  started with: a head started as ``/venv/bin/ray start`` without activating the venv
  finds some other ``python`` without Ray or torch. Ray puts nothing in that environment
  that names its interpreter, and runtime_env ``py_executable`` only changes how *worker*
  processes start, not the shell entrypoint. So the entrypoint is a small launcher
  (``ENTRY_SCRIPT``) that uses ``$GENPIPE_PYTHON`` when set, else the interpreter of the
  Ray process that launched it (read from the ``ray/_raylet*.so`` that process has mapped:
  ``<prefix>/lib/pythonX.Y/site-packages`` -> ``<prefix>/bin/pythonX.Y``), else
  ``python3`` from PATH.
* **Fast failure.** The client has no timeout of its own; every request here gets a
  short connect timeout so an unreachable cluster is reported (exit code 3) in seconds.
  Ray's client also lets ``RAY_ADDRESS`` silently override an explicit address
  (``get_address_for_submission_client``); an address given here wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from pipeline.feasibility import ClusterSnapshot, check_snapshot, normalize_node
from pipeline.spec import JobSpec

OK, JOB_FAILED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 300.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
ENTRY_SCRIPT_NAME = "genpipe_entry.sh"
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")

ENTRY_SCRIPT = r"""#!/bin/sh
# genpipe job launcher: run `python -m pipeline "$@"` with the cluster's own Python.
# Ray runs a job's entrypoint with /bin/sh and the PATH the head was started with, where
# `python` may be another interpreter, without Ray, torch or the project. In order:
#  1. $GENPIPE_PYTHON (set in the cluster's environment, or by `genpipe submit --python`)
#  2. the interpreter of the Ray process that started us (the job supervisor), found from
#     the ray/_raylet*.so it has mapped: <prefix>/lib/pythonX.Y/site-packages/ray/...
#     -> <prefix>/bin/pythonX.Y (Linux /proc; walks up a few parents)
#  3. python3, then python, from PATH
py="${GENPIPE_PYTHON:-}"
pid=$PPID
n=0
while [ -z "$py" ] && [ "$n" -lt 6 ] && [ -n "$pid" ] && [ "$pid" -gt 1 ] && [ -r "/proc/$pid/maps" ]; do
  so=$(grep -m1 -o '/[^ ]*/ray/_raylet[^/ ]*\.so' "/proc/$pid/maps" 2>/dev/null)
  if [ -n "$so" ]; then
    sp=${so%/ray/_raylet*}
    ver=${sp%/*}
    ver=${ver##*/}
    prefix=${sp%/*/*/*}
    for c in "$prefix/bin/$ver" "$prefix/bin/python3" "$prefix/bin/python"; do
      if [ -x "$c" ]; then py=$c; break; fi
    done
    break
  fi
  pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
  n=$((n + 1))
done
if [ -z "$py" ]; then py=$(command -v python3 || command -v python); fi
echo "genpipe: job runs with $py"
exec "$py" -m pipeline "$@"
"""


class SubmitError(Exception):
    """A submit/status/logs/stop failure with the exit code the CLI should return:
    1 job failed, 2 bad input, 3 cluster unreachable (or refused us)."""

    def __init__(self, code: int, message: str, submission_id: str | None = None, status: str | None = None):
        self.code = code
        self.message = message
        self.submission_id = submission_id
        self.status = status
        super().__init__(message)


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


# ---------------------------------------------------------------------------- auth


def find_auth_token() -> str | None:
    """The cluster token, looked up as Ray does: ``RAY_AUTH_TOKEN``, then the file named by
    ``RAY_AUTH_TOKEN_PATH`` (unreadable or empty is an error, as in Ray), then
    ``~/.ray/auth_token``. ``None`` when there is none."""
    tok = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if tok:
        return tok
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            tok = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise SubmitError(
                BAD_INPUT, f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token file ({exc.strerror})"
            ) from None
        if not tok:
            raise SubmitError(BAD_INPUT, f"RAY_AUTH_TOKEN_PATH={path}: the token file is empty")
        return tok
    default = Path.home() / ".ray" / "auth_token"
    try:
        tok = default.read_text().strip()
    except OSError:
        return None
    return tok or None


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "<token>") if token else text


# ---------------------------------------------------------------------------- ids, paths


def logical_date(date: str | dt.date) -> str:
    if isinstance(date, dt.date):
        return date.isoformat()
    try:
        return dt.date.fromisoformat(str(date)).isoformat()
    except ValueError:
        raise SubmitError(BAD_INPUT, f"--date {date!r}: expected a date like 2026-01-31") from None


def submission_id(spec: JobSpec, date: str | dt.date, attempt: int = 0) -> str:
    """``genpipe-<job>-<YYYY-MM-DD>-<spec hash[:8]>`` (``-r<attempt>`` for a deliberate
    retry): deterministic, and made of characters Ray accepts in ids, URLs and log file
    names ([a-z0-9_-])."""
    sid = f"genpipe-{spec.name}-{logical_date(date)}-{spec.spec_hash()[:8]}"
    return f"{sid}-r{attempt}" if attempt else sid


def cluster_path_problems(spec: JobSpec) -> list[str]:
    """Relative local paths mean nothing on a cluster: the job runs in a temporary copy of
    its working_dir there, and what it writes to a relative path is lost with it."""
    out = []
    for name, url in (
        ("storage", spec.storage),
        ("sample.output", spec.sample.output),
        ("dataset.path", spec.dataset.path),
        ("train.init_from", spec.train.init_from),
    ):
        if url and "://" not in url and not os.path.isabs(url):
            out.append(
                f"{name} {url!r} is a relative path: on a cluster it would land in the job's "
                "temporary working directory. Use an absolute path or a URL (s3://...)"
            )
    return out


def build_entrypoint(spec_file: str, date: str, extra_args: Sequence[str] = ()) -> str:
    args = ["run", spec_file, "--date", date, *extra_args]
    return " ".join(["sh", ENTRY_SCRIPT_NAME, *map(shlex.quote, args)])


def _stage_package(dest: Path, spec: JobSpec, spec_name: str) -> None:
    """What the cluster gets: ``pipeline/`` (this very package), the validated spec (CLI
    overrides applied) and the launcher. A few hundred kB, far under Ray's upload limit,
    and content-hashed by Ray, so an unchanged project is not uploaded twice."""
    pkg = Path(__file__).resolve().parent
    shutil.copytree(pkg, dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    (dest / spec_name).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    (dest / ENTRY_SCRIPT_NAME).write_text(ENTRY_SCRIPT)


# ---------------------------------------------------------------------------- client


def resolve_address(address: str | None) -> str:
    """The dashboard URL: the argument, else ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``.
    ``host:port`` means ``http://host:port``."""
    addr = address or next((os.environ[k] for k in _ADDRESS_ENV if os.environ.get(k)), None)
    if not addr:
        raise SubmitError(BAD_INPUT, "no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    addr = addr.strip().rstrip("/")
    if "://" not in addr:
        addr = "http://" + addr
    scheme = addr.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise SubmitError(
            BAD_INPUT, f"address {addr!r}: expected the dashboard URL of the head node, e.g. http://HEAD:8265"
        )
    return addr


@contextlib.contextmanager
def _env_without(names: Sequence[str]) -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(address: str | None, *, connect_timeout: float = CONNECT_TIMEOUT_S):
    """A ``JobSubmissionClient`` that sends our token and gives up on a dead address
    within ``connect_timeout`` seconds. Returns (client, url, token)."""
    from ray.job_submission import JobSubmissionClient

    class _Client(JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):  # noqa: ANN001 - Ray's signature
            # forwarded to requests.request (SubmissionClient._do_request); uploads get longer
            read = UPLOAD_TIMEOUT_S if method == "PUT" else READ_TIMEOUT_S
            kwargs.setdefault("timeout", (connect_timeout, read))
            return super()._do_request(method, endpoint, **kwargs)

    url = resolve_address(address)
    token = find_auth_token()
    with _errors(url, token), _env_without(_ADDRESS_ENV):
        client = _Client(url, headers=_auth_headers(token))
    return client, url, token


@contextlib.contextmanager
def _errors(url: str, token: str | None, job: str | None = None) -> Iterator[None]:
    """Turn what Ray's client and requests raise into a SubmitError with an exit code."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except SubmitError:
        raise
    except AuthenticationError as exc:
        reason = (
            "rejected the token"
            if "Forbidden" in str(exc) or "invalid" in str(exc).lower()
            else "needs a token"
        )
        raise SubmitError(
            UNREACHABLE,
            f"cluster at {url} {reason}: put it in RAY_AUTH_TOKEN, a file named by "
            "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (`ray get-auth-token` on the head prints it)",
            job,
        ) from None
    except (requests.exceptions.RequestException, ConnectionError, TimeoutError) as exc:
        raise SubmitError(
            UNREACHABLE, _redact(f"cluster unreachable at {url}: {_short(exc)}", token), job
        ) from None
    except RuntimeError as exc:
        text = _redact(str(exc), token)
        if "status code 404" in text and job:
            raise SubmitError(BAD_INPUT, f"no job {job!r} on the cluster at {url}", job) from None
        raise SubmitError(UNREACHABLE, f"cluster at {url} failed the request: {_short(text)}", job) from None
    except Exception as exc:  # aiohttp errors from the log websocket, and the like
        if type(exc).__module__.startswith("aiohttp"):
            raise SubmitError(
                UNREACHABLE, _redact(f"cluster unreachable at {url}: {_short(exc)}", token), job
            ) from None
        raise


def _short(exc: BaseException | str, limit: int = 300) -> str:
    s = " ".join(str(exc).split()) or type(exc).__name__
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _job_dict(info: Any) -> dict[str, Any]:
    md = dict(info.metadata or {})
    return {
        "submission_id": info.submission_id,
        "status": str(info.status),
        "job": md.get("genpipe_job"),
        "date": md.get("genpipe_date"),
        "spec_hash": md.get("genpipe_spec_hash"),
        "message": info.message,
        "error_type": info.error_type,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "driver_exit_code": info.driver_exit_code,
        "entrypoint": info.entrypoint,
        "metadata": md,
    }


def _existing(client: Any, sid: str) -> Any | None:
    """The job with this submission id, or None (Ray answers 404 for an unknown id)."""
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        if "status code 404" in str(exc):
            return None
        raise


# ---------------------------------------------------------------------------- resources


def _get_json(url: str, path: str, token: str | None, params: dict[str, Any] | None = None) -> Any:
    import requests

    r = requests.get(
        url + path, params=params, headers=_auth_headers(token), timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    )
    r.raise_for_status()
    return r.json()


def remote_snapshot(url: str, token: str | None) -> tuple[ClusterSnapshot, bool]:
    """Alive nodes from the state API over HTTP, and whether the cluster is static (no
    autoscaler that could add nodes). Static is only claimed when the autoscaler monitor
    reports its read-only provider (every node its own ``node_<id>`` type,
    ``ray/autoscaler/_private/monitor.py``); anything else counts as "may autoscale"."""
    data = _get_json(url, "/api/v0/nodes", token, {"limit": 10000, "detail": "true"})
    rows = data["data"]["result"]["result"]
    nodes = [m for m in (normalize_node(n) for n in rows) if m is not None]
    totals: dict[str, float] = {}
    for n in nodes:
        for k, v in n["resources"].items():
            totals[k] = totals.get(k, 0.0) + v
    static = False
    try:
        cs = _get_json(url, "/api/cluster_status", token)["data"].get("clusterStatus") or {}
        rep = cs.get("autoscalerReport") or {}
        mapping = rep.get("nodeTypeMapping") or {}
        static = (
            rep.get("legacy") is True
            and not rep.get("pendingLaunches")
            and not rep.get("pendingNodes")
            and all(str(v) == f"node_{k}" for k, v in mapping.items())
        )
    except Exception:  # noqa: BLE001 - no status: don't claim static
        static = False
    return ClusterSnapshot(resources=totals, nodes=nodes, autoscaling=not static), static


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
    """
    date = logical_date(date)
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
        runtime_env: dict[str, Any] = {}
        if python:
            runtime_env["env_vars"] = {"GENPIPE_PYTHON": python}
        kwargs: dict[str, Any] = {}
        if entrypoint_num_cpus:
            kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
        with tempfile.TemporaryDirectory(prefix="genpipe-submit-") as tmp:
            stage = Path(tmp)
            _stage_package(stage, spec, spec_name)
            runtime_env["working_dir"] = str(stage)
            try:
                client.submit_job(
                    entrypoint=build_entrypoint(spec_name, date, extra_args),
                    submission_id=sid,
                    runtime_env=runtime_env,
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
