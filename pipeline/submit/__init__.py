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

from pipeline.submit.client import (
    BAD_INPUT,
    CONNECT_TIMEOUT_S,
    JOB_FAILED,
    OK,
    READ_TIMEOUT_S,
    TERMINAL,
    UNREACHABLE,
    UPLOAD_TIMEOUT_S,
    SubmitError,
    find_auth_token,
    remote_snapshot,
    resolve_address,
)
from pipeline.submit.commands import SubmitResult, list_jobs, logs, status, stop, submit, wait
from pipeline.submit.package import (
    ENTRY_SCRIPT,
    ENTRY_SCRIPT_NAME,
    build_entrypoint,
    cluster_path_problems,
    logical_date,
    submission_id,
)

__all__ = ["BAD_INPUT", "CONNECT_TIMEOUT_S", "ENTRY_SCRIPT", "ENTRY_SCRIPT_NAME", "JOB_FAILED", "OK", "READ_TIMEOUT_S", "SubmitError", "SubmitResult", "TERMINAL", "UNREACHABLE", "UPLOAD_TIMEOUT_S", "build_entrypoint", "cluster_path_problems", "find_auth_token", "list_jobs", "logical_date", "logs", "remote_snapshot", "resolve_address", "status", "stop", "submission_id", "submit", "wait"]
