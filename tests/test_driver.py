"""The driver process as an operator sees it (issue 13, items 8 and 9, and the metrics endpoint):

* an address nothing answers at fails within seconds with exit 3 (it took 824 s for a closed
  GCS port, 34 s for a closed ``ray://`` one), and nothing is started;
* SIGTERM during sampling stops the run cleanly: exit 143 and one genpipe line (it was SIGABRT,
  exit 134, and a Ray C++ stack dump); the same command then resumes and publishes every row;
* the embedded cluster exposes no metrics endpoint on the machine's network address.

Each run is the real CLI in a subprocess in its own session, with its own Ray temp dir (which
marks every process of its embedded Ray), so the test ends only processes it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from proctree import descendants

from pipeline.faults import ENV as FAULTS_ENV

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-06-01"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", FAULTS_ENV, "GENPIPE_DEBUG")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _spec(tmp_path: Path, **sample: Any) -> Path:
    spec = {
        "name": "driver",
        "dataset": {"source": "digits"},
        "model": {"kind": "dcgan", "latent_dim": 8, "base_channels": 8},
        "train": {"epochs": 1, "batch_size": 256, "num_workers": 1, "lr": 0.001},
        "sample": {"num_images": 200, "shard_size": 100, "num_actors": 1, **sample,
                   "output": str(tmp_path / "out")},
        "gate": {"measure": False},
        "storage": str(tmp_path / "runs"),
    }
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with block ends: nothing listens there


#: ensure_ray given an address nothing answers at, timed from after the imports
PROBE = """
import sys, time
import ray
from pipeline.runner import ensure_ray
t0 = time.monotonic()
try:
    ensure_ray(sys.argv[1])
except ConnectionError as exc:
    print(f"{time.monotonic() - t0:.3f} {exc}")
else:
    print("connected?!")
"""


@pytest.mark.parametrize("scheme", ["", "ray://"], ids=["gcs", "ray-client"])
def test_an_address_nothing_answers_at_fails_in_seconds(tmp_path: Path, scheme: str) -> None:
    port = _closed_port()
    proc = subprocess.run([sys.executable, "-c", PROBE, f"{scheme}127.0.0.1:{port}"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seconds, message = proc.stdout.strip().split(" ", 1)
    assert float(seconds) < 10, proc.stdout  # was 824 s (gcs) and 34 s (ray://)
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message


@pytest.mark.parametrize("how", ["env", "option"])
def test_the_cli_says_cluster_unreachable_with_exit_3(tmp_path: Path, how: str) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    argv = ["run", str(_spec(tmp_path)), "--date", DATE] + (["--address", address] if how == "option" else [])
    env = _env(RAY_ADDRESS=address) if how == "env" else _env()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # the imports (torch, sklearn) take most of it here
    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert len(errors) == 1 and "cluster unreachable" in errors[0] and address in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def _alive(marker: str) -> set[int]:
    """Live processes whose command line names ``marker`` (the run's own Ray temp dir)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    alive = set()
    for line in out.splitlines():
        p, stat, *args = line.split(None, 2)
        if not stat.startswith("Z") and int(p) != os.getpid() and args and marker in args[0]:
            alive.add(int(p))
    return alive


def _machine_ip() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # TEST-NET-1: routing only
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


@pytest.mark.e2e
def test_sigterm_during_sampling_stops_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    n, shard = 6000, 100
    spec_path = _spec(tmp_path, num_images=n, shard_size=shard, batch_size=100)
    cmd = [sys.executable, "-m", "pipeline", "run", str(spec_path), "--date", DATE]
    ray_tmp = tempfile.mkdtemp(prefix="gpterm-", dir="/tmp")  # short: socket paths stay < 108 bytes
    env = _env(RAY_TMPDIR=ray_tmp, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    log = (tmp_path / "first.log").open("w+")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics_checked = False
    try:
        deadline = time.monotonic() + 400
        while not list((tmp_path / "out").rglob("part-*.parquet")):  # sampling has begun
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the run ended before sampling (rc {proc.returncode}):\n{log.read()[-3000:]}"
                            f"{proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "sampling did not start in time"
            time.sleep(0.05)
        # the embedded cluster's metrics endpoint: not on the machine's network address
        ports = list(Path(ray_tmp).rglob("metrics_export_port_*"))
        ip = _machine_ip()
        if ports and ip:
            port = int(ports[0].read_text().strip())
            assert port <= 0 or _refused(ip, port), f"the metrics endpoint answers on {ip}:{port}"  # -1: none
            metrics_checked = True
        family = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # the driver only, as `kill PID` or a supervisor would
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    log.seek(0)
    out = log.read() + stderr
    assert proc.returncode == 143, out[-4000:]
    # the driver's own output: no traceback, no C++ stack dump. (Lines from Ray's worker processes,
    # "(Name pid=N) ...", are theirs: on a machine with several Ray clusters, Ray Train's
    # PlacementGroupCleaner prints a State API traceback of its own in every run.)
    driver = "\n".join(ln for ln in out.splitlines() if not re.match(r"(\x1b\[[0-9;]*m)?\(", ln))
    assert "Traceback" not in driver and "SIGABRT" not in driver and "*** " not in driver, driver[-4000:]
    ours = [ln for ln in stderr.splitlines() if ln.startswith("genpipe: ")]
    assert ours == ["genpipe: stopped by SIGTERM: nothing half-published; run the same command again to resume"], \
        stderr[-3000:]
    assert metrics_checked or _machine_ip() is None
    deadline = time.monotonic() + 60
    while (left := _alive(ray_tmp) | {p for p in family if _pid_alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in left:  # ours only: processes of the run we started
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes of the stopped driver survived: {left}"
    assert not list((tmp_path / "out").rglob("manifest.json"))  # stopped before publishing

    try:
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
                                start_new_session=True)
    finally:
        deadline = time.monotonic() + 30
        while (left := _alive(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for p in left:
            os.kill(p, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    (manifest,) = list((tmp_path / "out").rglob("manifest.json"))
    man = json.loads(manifest.read_text())
    assert man["num_rows"] == n and len(man["files"]) == n // shard


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
