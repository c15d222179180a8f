"""End to end through Ray's Jobs API: a real head node (`ray start --head --block` on
loopback ports, started here as a subprocess and stopped by its process group), a tiny
job submitted with genpipe's ``submit``, its status, logs and published output; a
repeated submit that starts nothing; fast failures (unreachable cluster, bad input,
resources the cluster can never give); and token auth found by genpipe itself.

The head is started the way a cluster often is: with the venv's ``ray`` binary but
without the venv on PATH, so ``python`` in the job's shell is some other interpreter
without Ray or torch. The job still runs: the entrypoint launcher finds the cluster's own
Python (pipeline/submit/).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from pipeline.spec import load_spec
from pipeline.submit import SubmitError, list_jobs, logs, status, stop, submission_id, submit

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DATE = "2026-11-20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    url: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path


def start_head(log_dir: Path, env_extra: dict[str, str], num_cpus: int = 2) -> Head:
    # Ray's Unix sockets live under the temp dir, and their paths are limited to ~107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="gpray", dir="/tmp"))
    dash = free_port()
    env = dict(os.environ)
    # a head started outside the project's virtualenv: the venv is not on its PATH
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != VENV_BIN.resolve()
    )
    for k in (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "RAY_ADDRESS",
        "RAY_API_SERVER_ADDRESS",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
    ):
        env.pop(k, None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # SIGTERM: stop now, don't drain for 30 s
    env.update(env_extra)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(free_port()),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dash),
        "--include-dashboard", "true",
        "--dashboard-agent-listen-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--min-worker-port", "0", "--max-worker-port", "0",
        "--num-cpus", str(num_cpus), "--num-gpus", "0",
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip
    log = log_dir / f"head-{dash}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=temp_dir, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    head = Head(f"http://127.0.0.1:{dash}", proc, temp_dir, log)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            stop_head(head)
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # Up when the autoscaler monitor has reported once (genpipe's resource pre-flight
            # reads that report to tell a static cluster from an autoscaling one), or when
            # it answers 401: token auth enforced, nothing more to read without the token.
            r = requests.get(head.url + "/api/cluster_status", timeout=2)
            if r.status_code == 401 or (
                r.ok and (r.json()["data"].get("clusterStatus") or {}).get("autoscalerReport")
            ):
                return head
        except (requests.RequestException, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            stop_head(head)
            pytest.fail(f"the head's Jobs API did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _session_members(sid: int) -> list[int]:
    """Processes in the session ``ray start`` leads (Ray's workers get process groups of
    their own but stay in the session)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:
            out.append(int(d.name))
    return out


def stop_head(head: Head) -> None:
    """Stop only what this test started: the head's process group, then anything left in
    its session (by pid). Never `ray stop`, never by name."""
    pgid = head.proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        head.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in _session_members(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.proc.wait(timeout=30)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    h = start_head(tmp_path_factory.mktemp("head"), {"RAY_AUTH_MODE": "disabled"})
    try:
        yield h
    finally:
        stop_head(h)


def write_tiny_spec(root: Path) -> Path:
    spec = {
        "name": "e2e-tiny",
        "dataset": {"source": "digits"},
        "model": {"kind": "dcgan", "latent_dim": 16, "base_channels": 8},
        "train": {"epochs": 1, "num_workers": 1, "batch_size": 128},
        "sample": {"num_images": 200, "shard_size": 100, "num_actors": 1, "output": str(root / "datasets")},
        "gate": {"measure": False},
        "storage": str(root / "runs"),
    }
    path = root / "jobs" / "e2e-tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    return write_tiny_spec(tmp_path_factory.mktemp("e2e"))


# ---------------------------------------------------------------------------- the job


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_submit_runs_the_job_inside_the_cluster(head, spec_file):
    spec = load_spec(spec_file)
    lines: list[str] = []
    t0 = time.monotonic()
    res = submit(spec_file, spec, address=head.url, date=DATE, wait=True, log=lines.append, poll_s=0.5)
    took = time.monotonic() - t0
    print(f"tiny job submitted and finished in {took:.1f} s")

    assert res.status == "SUCCEEDED" and not res.existing and res.exit_code == 0
    assert res.submission_id == submission_id(spec, DATE)
    assert res.submission_id.startswith(f"genpipe-e2e-tiny-{DATE}-")
    assert any("SUCCEEDED" in line for line in lines)

    st = status(head.url, res.submission_id)
    assert (st["status"], st["job"], st["date"], st["spec_hash"]) == (
        "SUCCEEDED",
        "e2e-tiny",
        DATE,
        spec.spec_hash(),
    )
    assert st["driver_exit_code"] == 0

    out = io.StringIO()
    assert logs(head.url, res.submission_id, out=out) == "SUCCEEDED"
    text = out.getvalue()
    # the launcher picked the cluster's own interpreter, not `python` from the head's PATH
    assert f"genpipe: job runs with {VENV_BIN}" in text, text[-3000:]
    assert "published" in text, text[-3000:]  # the runner's last word

    follow = io.StringIO()
    assert logs(head.url, res.submission_id, follow=True, out=follow) == "SUCCEEDED"
    assert "published" in follow.getvalue()

    state = Path(spec.sample.output) / "e2e-tiny" / "_genpipe" / f"logical_date={DATE}"
    manifest = json.loads((state / "manifest.json").read_text())
    assert manifest.get("num_rows", 200) == 200


@pytest.mark.e2e
def test_repeated_submit_reports_the_existing_job(head, spec_file):
    spec = load_spec(spec_file)
    lines: list[str] = []
    t0 = time.monotonic()
    res = submit(spec_file, spec, address=head.url, date=DATE, log=lines.append)
    assert time.monotonic() - t0 < 10
    assert res.existing and res.status == "SUCCEEDED"
    assert res.submission_id == submission_id(spec, DATE)
    assert "already submitted" in lines[0]
    jobs = [j for j in list_jobs(head.url) if j["job"] == "e2e-tiny" and j["date"] == DATE]
    assert [j["submission_id"] for j in jobs] == [res.submission_id]  # one job, not two
    # --wait on a finished job reports its end at once
    assert submit(spec_file, spec, address=head.url, date=DATE, wait=True, log=lines.append).existing


@pytest.mark.e2e
def test_unknown_job_and_impossible_resources_are_bad_input(head, spec_file):
    with pytest.raises(SubmitError) as ei:
        status(head.url, "genpipe-no-such-job")
    assert ei.value.code == 2 and "no job 'genpipe-no-such-job'" in ei.value.message

    spec = load_spec(spec_file, {"train": {"use_gpu": True, "num_workers": 2}})
    with pytest.raises(SubmitError) as ei:
        submit(spec_file, spec, address=head.url, date=DATE, log=lambda _: None)
    assert ei.value.code == 2
    assert "train needs 2 GPUs (2 workers x 1 GPU; the cluster has 0)" in ei.value.message
    assert not [j for j in list_jobs(head.url) if j["spec_hash"] == spec.spec_hash()], "nothing submitted"


@pytest.mark.e2e
def test_job_that_finds_impossible_resources_inside_the_cluster_exits_2(head, spec_file):
    """Skip the submit-side pre-flight: the job's own check (the runner, inside the
    cluster, with the autoscaler's view) refuses it, and --wait reports its one-line error
    with code 2."""
    spec = load_spec(spec_file, {"train": {"use_gpu": True}})
    with pytest.raises(SubmitError) as ei:
        submit(spec_file, spec, address=head.url, date="2026-11-19", wait=True, check_resources=False, poll_s=0.5,
               log=lambda _: None)  # fmt: skip
    assert ei.value.code == 2, ei.value.message
    assert ei.value.status == "FAILED"
    assert (
        ": job FAILED: the cluster can never run this job: train needs 1 GPU (1 worker x 1 GPU; the cluster has 0)"
        in (ei.value.message)
    )


# ---------------------------------------------------------------------------- pure parts (no head)


def test_find_auth_token_in_rays_order(tmp_path, monkeypatch):
    from pipeline.submit import find_auth_token

    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert find_auth_token() == "from-home"
    (tmp_path / "tok").write_text("  from-path \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert find_auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_auth_token() == "from-env"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "tok").write_text("")
    with pytest.raises(SubmitError) as ei:  # Ray treats an empty/unreadable token file as fatal too
        find_auth_token()
    assert ei.value.code == 2 and "token file is empty" in ei.value.message


def test_submission_id_is_a_pure_function_of_job_date_and_spec(spec_file):
    import re

    spec = load_spec(spec_file)
    sid = submission_id(spec, DATE)
    assert (
        sid == submission_id(load_spec(spec_file), DATE) == f"genpipe-e2e-tiny-{DATE}-{spec.spec_hash()[:8]}"
    )
    assert re.fullmatch(r"[a-z0-9_-]+", sid)
    assert submission_id(spec, "2026-11-21") != sid
    assert submission_id(load_spec(spec_file, {"train": {"epochs": 2}}), DATE) != sid
    # where the output goes is not part of the spec hash: same data, same job
    assert submission_id(load_spec(spec_file, {"sample": {"output": "/elsewhere"}}), DATE) == sid
    assert submission_id(spec, DATE, attempt=2) == sid + "-r2"


def test_launcher_finds_the_interpreter_of_the_ray_process_that_starts_it(tmp_path):
    """The launcher, started by a Python process that has Ray loaded (as the job
    supervisor is), with neither the venv on PATH nor GENPIPE_PYTHON: it picks that
    process's interpreter (the venv), not `python3` from PATH."""
    from pipeline.submit import ENTRY_SCRIPT, ENTRY_SCRIPT_NAME

    (tmp_path / ENTRY_SCRIPT_NAME).write_text(ENTRY_SCRIPT)
    (tmp_path / "pipeline").mkdir()  # a stand-in package: prints who runs it
    (tmp_path / "pipeline" / "__main__.py").write_text("import sys; print('RAN', sys.prefix, sys.argv[1:])")
    env = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                   if Path(p).resolve() != VENV_BIN.resolve()), "HOME": str(tmp_path)}  # fmt: skip
    parent = (
        "import subprocess, sys, ray._raylet\n"
        f"sys.exit(subprocess.run(['sh', '{ENTRY_SCRIPT_NAME}', 'run', 'a b.yaml']).returncode)"
    )
    out = subprocess.run(
        [sys.executable, "-c", parent], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert f"genpipe: job runs with {VENV_BIN}" in out.stdout
    assert f"RAN {sys.prefix} ['run', 'a b.yaml']" in out.stdout

    env["GENPIPE_PYTHON"] = sys.executable  # an explicit choice wins
    out = subprocess.run(
        ["sh", ENTRY_SCRIPT_NAME, "x"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert f"genpipe: job runs with {sys.executable}" in out.stdout and "RAN" in out.stdout


# ---------------------------------------------------------------------------- fast failures (no head)


def test_unreachable_cluster_exits_3_within_seconds(spec_file):
    port = free_port()  # bound and released: nothing listens there now
    url = f"http://127.0.0.1:{port}"
    spec = load_spec(spec_file)
    for call in (
        lambda: submit(spec_file, spec, address=url, date=DATE, log=lambda _: None),
        lambda: status(url, "x"),
        lambda: list_jobs(url),
        lambda: logs(url, "x", out=io.StringIO()),
        lambda: stop(url, "x"),
    ):
        t0 = time.monotonic()
        with pytest.raises(SubmitError) as ei:
            call()
        assert time.monotonic() - t0 < 10
        assert ei.value.code == 3
        assert ei.value.message.startswith(f"cluster unreachable at {url}")


def test_bad_input_before_contacting_the_cluster(tmp_path, spec_file):
    spec = load_spec(spec_file, {"storage": "outputs/runs"})
    with pytest.raises(SubmitError) as ei:  # a head elsewhere (TEST-NET-1): relative paths mean nothing there
        submit(spec_file, spec, address="http://192.0.2.123:9", date=DATE)
    assert ei.value.code == 2 and "storage 'outputs/runs' is a relative path" in ei.value.message
    with pytest.raises(SubmitError) as ei:
        submit(spec_file, load_spec(spec_file), address="http://127.0.0.1:9", date="2026-13-01")
    assert ei.value.code == 2 and "--date" in ei.value.message
    with pytest.raises(SubmitError) as ei:
        status("ray://127.0.0.1:10001", "x")
    assert ei.value.code == 2 and "dashboard URL" in ei.value.message


# ---------------------------------------------------------------------------- token auth

AUTH_CLIENT = textwrap.dedent(
    """
    import io, json, os, sys, time
    from pipeline.spec import load_spec
    from pipeline.submit import SubmitError, list_jobs, logs, status, stop, submit

    url, spec_file, date, wrong = sys.argv[1:5]
    out = {"auth_mode_env": os.environ.get("RAY_AUTH_MODE")}

    # what Ray's own client does without RAY_AUTH_MODE=token: no token sent
    from ray.job_submission import JobSubmissionClient
    try:
        JobSubmissionClient(url)
        out["ray_client"] = "ok"
    except Exception as exc:
        out["ray_client"] = type(exc).__name__ + ": " + str(exc).splitlines()[0]

    # genpipe: the token from ~/.ray/auth_token (HOME is a test dir)
    out["list"] = len(list_jobs(url, all_jobs=True))
    spec = load_spec(spec_file)
    res = submit(spec_file, spec, address=url, date=date, log=lambda s: None)
    out["submitted"] = res.submission_id
    deadline = time.time() + 120
    while time.time() < deadline:  # until the job's shell has started the launcher
        buf = io.StringIO()
        st = logs(url, res.submission_id, out=buf)
        out["launcher"] = [l for l in buf.getvalue().splitlines() if l.startswith("genpipe: job runs with")]
        if out["launcher"] or st in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(0.5)
    out["status"] = status(url, res.submission_id)["status"]
    out["stopped"] = stop(url, res.submission_id)

    # a wrong token from RAY_AUTH_TOKEN (which wins over the file): refused, token not echoed
    os.environ["RAY_AUTH_TOKEN"] = wrong
    try:
        list_jobs(url)
    except SubmitError as exc:
        out["wrong"] = [exc.code, exc.message]
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_token_auth_head_works_without_ray_auth_mode(tmp_path, spec_file):
    """A head that enforces token auth; the client has the token on disk and no
    RAY_AUTH_MODE. Ray's client fails ("Missing authentication token"); genpipe sends the
    token itself. The client runs in a fresh process so nothing in this test process (a
    ray.init elsewhere sets RAY_AUTH_MODE) can help it."""
    token = secrets.token_hex(24)
    head_token = tmp_path / "head_token"
    head_token.write_text(token)
    head_token.chmod(0o600)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token + "\n")
    (home / ".ray" / "auth_token").chmod(0o600)
    wrong = secrets.token_hex(24)

    t0 = time.monotonic()
    h = start_head(tmp_path, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(head_token)})
    try:
        assert requests.get(h.url + "/api/jobs/", timeout=5).status_code == 401
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
        env.update(HOME=str(home), PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-c", AUTH_CLIENT, h.url, str(spec_file), "2026-11-21", wrong],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        stop_head(h)
    print(f"token-auth head + submit took {time.monotonic() - t0:.1f} s")
    result_line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result_line, proc.stderr[-3000:]
    out = json.loads(result_line[0][len("RESULT ") :])

    assert out["auth_mode_env"] is None
    assert (
        out["ray_client"].startswith("AuthenticationError")
        and "Missing authentication token" in out["ray_client"]
    )
    assert out["list"] == 0
    assert out["submitted"].startswith("genpipe-e2e-tiny-2026-11-21-")
    assert out["status"] in ("RUNNING", "SUCCEEDED")
    assert out["launcher"] and out["launcher"][0].startswith(f"genpipe: job runs with {VENV_BIN}")
    code, message = out["wrong"]
    assert code == 3 and "rejected the token" in message
    for secret in (token, wrong):
        assert secret not in proc.stdout and secret not in proc.stderr, "a token leaked into output"


# ---------------------------------------------------------------------------- relative paths, local head


def test_relative_paths_resolve_only_for_a_head_on_this_machine(tmp_path):
    from pipeline.submit.package import cluster_path_problems, head_is_this_machine, localize_paths

    assert head_is_this_machine("http://127.0.0.1:8265") and head_is_this_machine("http://localhost:8265")
    assert head_is_this_machine(f"http://{socket.gethostname()}:8265")
    assert not head_is_this_machine("http://192.0.2.123:8265")  # TEST-NET-1: nobody's address
    assert not head_is_this_machine("http://no-such-host.invalid:8265")
    spec = load_spec(ROOT / "jobs/digits-dcgan.yaml")
    assert {p.split(" ")[0] for p in cluster_path_problems(spec)} == {"storage", "sample.output"}
    local, changed = localize_paths(spec, tmp_path)
    assert changed == {"storage": str(tmp_path / "outputs/runs"), "sample.output": str(tmp_path / "outputs/datasets")}
    assert local.storage == changed["storage"] and local.sample.output == changed["sample.output"]
    assert not cluster_path_problems(local) and local.spec_hash() == spec.spec_hash()  # same submission id
    with pytest.raises(SubmitError, match="relative path"):
        submit(ROOT / "jobs/digits-dcgan.yaml", spec, address="http://192.0.2.123:8265", date=DATE, log=print,
               connect_timeout=2)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_unmodified_default_job_submits_to_a_local_head(head, tmp_path, monkeypatch):
    # what the README's first example does, pointed at a head on this machine: relative storage and
    # sample.output land under the submitting directory, where the user looks for them
    from pipeline.publish import open_dataset

    monkeypatch.chdir(tmp_path)
    spec_path = ROOT / "jobs/digits-dcgan.yaml"
    lines: list[str] = []
    res = submit(spec_path, load_spec(spec_path), address=head.url, date=DATE, wait=True, log=lines.append,
                 poll_s=1.0)
    assert res.status == "SUCCEEDED", lines[-20:]
    assert any(f"sample.output: {tmp_path / 'outputs/datasets'}" in ln for ln in lines), lines
    ds = open_dataset(str(tmp_path / "outputs/datasets/digits-dcgan"))
    assert len(ds) == 10_000
