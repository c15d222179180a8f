"""Talking to a cluster's Jobs API: address, token, short timeouts, errors mapped to exit codes
(1 job failed, 2 bad input, 3 unreachable), the cluster's resources. See :mod:`pipeline.submit`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import GenpipeError
from pipeline.feasibility import ClusterSnapshot, normalize_node

OK, JOB_FAILED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 300.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")

class SubmitError(GenpipeError):
    """A submit/status/logs/stop failure with the exit code the CLI should return (``code``,
    also its ``exit_code``): 1 job failed, 2 bad input, 3 cluster unreachable (or refused us)."""

    def __init__(self, code: int, message: str, submission_id: str | None = None, status: str | None = None):
        self.code = self.exit_code = code
        self.message = message
        self.submission_id = submission_id
        self.status = status
        super().__init__(message)


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


