"""Fault injection on real parts: a failure must cost a retry, never a row.

* a sampling actor killed mid-shard (``os._exit`` from the inert-unless-switched-on hook in
  :mod:`pipeline.faults`) -> its shard is redone, the dataset equals an undisturbed run's;
* a corrupted shard in an output being resumed -> detected and regenerated, same bytes;
* the driver killed (SIGKILL to its whole process group, embedded Ray included) -> the same
  command run again resumes the training run from its checkpoint and completes;
* S3 faults from a loopback TCP proxy in front of moto's S3 server (:mod:`faultproxy`): cut
  requests, a lost response, an outage, a stall -> retried with bounded backoff, the run
  completes with every row; a lasting outage -> one clear error line, nothing half-published,
  and the same command completes once the store is back.

The jobs share one training run (same name, training config and storage), so only the first
test trains; the others go straight to sampling (what they are about).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from faultproxy import FaultProxy, moto_server
from proctree import descendants

from pipeline.faults import ENV as FAULTS_ENV
from pipeline.runner import BadInput, run_job
from pipeline.spec import JobSpec, deep_merge, parse_spec

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-05-01"
N, SHARD = 300, 50
NSHARDS = N // SHARD
ACCESS_KEY = "AKIDFAULTSFAKE0000000"
SECRET = "SECRETfake-faults-7f3e9a1c"
BUCKET = "genpipe-faults"


def spec_dict(storage: Path | str, output: str, **over: Any) -> dict[str, Any]:
    base = {
        "name": "faults",
        "dataset": {"source": "digits"},
        "model": {"kind": "dcgan", "latent_dim": 16, "base_channels": 8},
        "train": {"epochs": 1, "batch_size": 128, "num_workers": 1, "lr": 0.001},
        "sample": {"num_images": N, "shard_size": SHARD, "num_actors": 2, "batch_size": 256, "output": str(output)},
        "gate": {"measure": False},
        "storage": str(storage),
    }
    return deep_merge(base, over)


def fspec(storage: Path | str, output: str | Path, **over: Any) -> JobSpec:
    return parse_spec(spec_dict(storage, str(output), **over))


def read_partition(partition: str, so: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """(manifest as JSON, table sorted by id) of a published partition (the URL of its data
    folder), read through its manifest."""
    import pyarrow as pa

    from pipeline.publish.partition import Partition

    part = Partition.from_url(partition, so)
    man = part.read_manifest()
    tables = []
    for f in man.files:
        with part.fs.open(part.data_file(f.path), "rb") as fh:
            tables.append(pq.read_table(fh))
    return man.to_json(), pa.concat_tables(tables).sort_by("id")


def partition_of(partition: str) -> Any:
    from pipeline.publish.partition import Partition

    return Partition.from_url(partition)


def assert_complete_and_equal(man: dict[str, Any], table: Any, baseline: Any) -> None:
    """Exactly N rows, unique ids, each shard once, and the same images as the undisturbed run."""
    assert man["num_rows"] == N and table.num_rows == N
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == N
    assert sorted(f["index"] for f in man["files"]) == list(range(NSHARDS))
    assert len({f["path"] for f in man["files"]}) == NSHARDS
    shard_col = table.column("shard").to_pylist()
    assert sorted(shard_col) == sorted(i for i in range(NSHARDS) for _ in range(SHARD))
    for col in ("id", "seed", "label", "image"):
        assert table.column(col).to_pylist() == baseline.column(col).to_pylist(), col


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults-runs")


@pytest.fixture(scope="module")
def baseline(ray_cluster, storage, tmp_path_factory):
    """An undisturbed run (trains the shared checkpoint); returns (outcome, table sorted by id, spec)."""
    import ray

    if not ray.is_initialized():  # a multi-node test may have stopped the session cluster
        ray.init(num_cpus=2, dashboard_host="127.0.0.1", log_to_driver=True, logging_level="WARNING")
    spec = fspec(storage, tmp_path_factory.mktemp("faults-baseline"))
    out = run_job(spec, DATE)
    assert out.status == "published" and out.rows == N
    return out, read_partition(out.partition)[1], spec


# ------------------------------------------------------------------------------------- sampling


def test_a_sampling_actor_killed_mid_shard_costs_a_retry_not_a_row(ray_local, baseline, storage, tmp_path,
                                                                   monkeypatch):
    markers = tmp_path / "markers"  # the actor holding shard 1 calls os._exit(137) after generating it
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"sample_exit_on_shard": 1, "marker_dir": str(markers)}))
    out = run_job(fspec(storage, tmp_path / "out"), DATE)
    assert (markers / "sample_exit_on_shard-1").exists()  # the kill really happened
    assert out.status == "published" and out.rows == N and out.shards == NSHARDS
    man, table = read_partition(out.partition)
    assert_complete_and_equal(man, table, baseline[1])
    shards = {f"part-{i:05d}-of-{NSHARDS:05d}.parquet" for i in range(NSHARDS)}
    assert set(os.listdir(out.partition)) == shards  # no strays: the data folder holds the shards only
    assert set(os.listdir(partition_of(out.partition).state_path)) == {"manifest.json", "report", "run.json"}


def test_a_corrupted_shard_in_an_output_being_resumed_is_regenerated(ray_local, baseline):
    out, _, spec = baseline
    part = Path(out.partition)
    original = {f.name: f.read_bytes() for f in sorted(part.glob("part-*.parquet"))}
    assert len(original) == NSHARDS
    victim = part / f"part-00002-of-{NSHARDS:05d}.parquet"
    victim.write_bytes(original[victim.name][: len(original[victim.name]) // 2])  # truncated
    Path(partition_of(out.partition).manifest_path).unlink()  # the partition is unpublished: the run resumes

    again = run_job(spec, DATE)
    assert again.status == "published" and again.rows == N
    assert again.shards_skipped == NSHARDS - 1  # the five intact shards were kept
    assert {f.name: f.read_bytes() for f in sorted(part.glob("part-*.parquet"))} == original  # same bytes


def _copy_published(baseline: Any, tmp_path: Path) -> tuple[JobSpec, Any]:
    """The published baseline copied to a fresh output (as a user has it), its spec, its partition."""
    from pipeline.publish.partition import Partition

    out, _, spec = baseline
    shutil.copytree(partition_of(out.partition).root_path, tmp_path / "out" / spec.name)
    return fspec(spec.storage, tmp_path / "out"), Partition.of(str(tmp_path / "out"), spec.name, DATE)


def test_a_published_partition_with_a_deleted_and_a_truncated_shard_is_repaired(ray_local, baseline, tmp_path):
    """Issue 13, item 4: the rerun said "already-published" and exited 0, and `genpipe inspect` then
    failed. It now checks the files against the manifest and regenerates what is missing."""
    spec, part = _copy_published(baseline, tmp_path)
    data = Path(part.data_path)
    original = {f.name: f.read_bytes() for f in sorted(data.glob("part-*.parquet"))}
    names = sorted(original)
    (data / names[1]).unlink()
    (data / names[4]).write_bytes(original[names[4]][:-100])
    check = part.check()
    assert check.present and check.problem and names[1] in check.problem
    again = run_job(spec, DATE)
    assert again.status == "published" and again.rows == N and again.shards_skipped == NSHARDS - 2
    assert {f.name: f.read_bytes() for f in sorted(data.glob("part-*.parquet"))} == original  # same bytes
    man, table = read_partition(again.partition)
    assert_complete_and_equal(man, table, baseline[1])
    from pipeline.publish import open_dataset

    assert len(open_dataset(again.partition)) == N  # what `genpipe inspect` reads
    assert run_job(spec, DATE).status == "already-published"


@pytest.mark.parametrize("edit", ["num_rows", "consistent"])
def test_an_edited_manifest_row_count_is_not_trusted(ray_local, baseline, tmp_path, edit):
    spec, part = _copy_published(baseline, tmp_path)
    path = Path(part.manifest_path)
    doc = json.loads(path.read_text())
    if edit == "num_rows":
        doc["num_rows"] = 999
    else:  # every count edited to agree with each other: only the files and the plan disagree
        doc["files"][0]["rows"] += 1
        doc["num_rows"] += 1
        doc["num_images"] += 1
    path.write_text(json.dumps(doc))
    assert not part.check().ok
    again = run_job(spec, DATE)
    assert again.status == "published" and again.shards_skipped == NSHARDS  # the shards were fine
    man, table = read_partition(again.partition)
    assert_complete_and_equal(man, table, baseline[1])


def test_a_leftover_temp_file_is_removed_by_a_rerun_of_a_published_partition(ray_local, baseline, tmp_path):
    """Issue 13 (low): a partial temp file stayed in .staging/ after a disk-full failure, even
    after a successful rerun."""
    spec, part = _copy_published(baseline, tmp_path)
    staging = Path(part.staging_path)
    staging.mkdir()
    (staging / f"part-00003-of-{NSHARDS:05d}.parquet.0123abcd").write_bytes(b"PAR1 partial")
    assert run_job(spec, DATE).status == "already-published"
    assert not staging.exists()


@pytest.mark.parametrize("planted", ["report", "run.json"])
def test_a_symlink_inside_the_partition_is_refused_before_any_work(storage, tmp_path, planted):
    """Issue 13, item 3: a symlinked _report/ received the report outside the partition, and a
    symlinked .genpipe-run.json had its outside target overwritten."""
    from pipeline.publish.partition import Partition

    part = Partition.of(str(tmp_path / "out"), "faults", DATE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.json").write_text("keep me")
    Path(part.state_path).mkdir(parents=True)
    if planted == "report":
        Path(part.report_path).symlink_to(outside, target_is_directory=True)
    else:
        Path(part.run_state_path).symlink_to(outside / "precious.json")
    spec_path = _write_spec(tmp_path / "job.yaml", spec_dict(storage, str(tmp_path / "out")))
    res = _cli(["run", spec_path, "--date", DATE])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "symbolic link" in errors[0], res.output
    assert sorted(p.name for p in outside.iterdir()) == ["precious.json"]
    assert (outside / "precious.json").read_text() == "keep me"


# ----------------------------------------------------------------------------------- provenance
# A shard is this run's only when its footer names this run's spec hash and checkpoint digest;
# before that check, every one of these published another run's rows under this run's manifest.


def plan_seeds(spec: JobSpec) -> list[int]:
    """The seed of every image of ``spec``'s plan, in id order (digits: 10 classes)."""
    from pipeline.sample.plan import make_plan

    return [int(x) for sh in make_plan(spec.sample, 10, spec.name, DATE).shards() for x in sh.seeds]


def assert_rows_are_the_runs_own(partition: str, spec: JobSpec) -> tuple[dict[str, Any], Any]:
    man, table = read_partition(partition)
    assert man["spec_hash"] == spec.spec_hash() and man["num_rows"] == N
    assert table.column("seed").to_pylist() == plan_seeds(spec)
    assert set(table.column("checkpoint").to_pylist()) == {man["checkpoint_digest"]}
    from pipeline.publish.provenance import footer_provenance

    for f in man["files"]:
        prov = footer_provenance(pq.read_metadata(Path(partition) / f["path"]).metadata)
        assert (prov["spec_hash"], prov["checkpoint_digest"]) == (man["spec_hash"], man["checkpoint_digest"])
    assert sorted(p.name for p in Path(partition).iterdir()) == sorted(f["path"] for f in man["files"])  # no strays
    state = Path(partition_of(partition).state_path)
    assert not (state / "lease.json").exists() and not (state / "staging").exists()  # released, cleaned
    return man, table


def test_overwrite_after_a_seed_change_republishes_rows_with_the_new_seeds(ray_local, baseline, tmp_path):
    out, old_table, spec = baseline
    shutil.copytree(partition_of(out.partition).root_path, tmp_path / "out" / spec.name)  # as a user has it
    reseeded = fspec(spec.storage, tmp_path / "out", sample={"seed": 4242})
    assert plan_seeds(reseeded) != plan_seeds(spec)
    with pytest.raises(BadInput, match="--overwrite"):
        run_job(reseeded, DATE)
    again = run_job(reseeded, DATE, overwrite=True)
    assert again.status == "published" and again.rows == N and again.shards_skipped == 0
    _, table = assert_rows_are_the_runs_own(again.partition, reseeded)
    assert table.column("seed").to_pylist() != old_table.column("seed").to_pylist()


def test_a_rerun_after_a_crash_before_the_manifest_with_a_new_train_config_carries_its_checkpoint(
        ray_local, baseline, storage, tmp_path, monkeypatch):
    import pipeline.publish.partition as partition

    def crash(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt("the driver died before the manifest")

    monkeypatch.setattr(partition, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        run_job(fspec(storage, tmp_path / "out"), DATE)
    monkeypatch.undo()
    part = partition.Partition.of(str(tmp_path / "out"), "faults", DATE)
    assert len(list(Path(part.data_path).glob("part-*.parquet"))) == NSHARDS
    assert not Path(part.manifest_path).exists()
    assert not Path(part.lease_path).exists()  # released on the way out

    retrained = fspec(storage, tmp_path / "out", train={"epochs": 2})
    again = run_job(retrained, DATE)
    assert again.status == "published" and again.shards_skipped == 0  # every old shard was foreign
    man, _ = assert_rows_are_the_runs_own(again.partition, retrained)
    assert man["checkpoint"] == again.checkpoint != baseline[0].checkpoint
    assert man["checkpoint_digest"] != read_partition(baseline[0].partition)[0]["checkpoint_digest"]


def test_a_second_writer_of_a_partition_is_refused_exit_2_and_the_first_publishes(
        ray_local, baseline, storage, tmp_path, monkeypatch):
    """Two runs of one partition that differ only in sample.seed: the second is started (through
    the command line) while the first holds the partition, just before it samples."""
    import threading

    import pipeline.sample.fanout as fanout

    first = fspec(storage, tmp_path / "out", sample={"seed": 7})
    second_path = _write_spec(tmp_path / "second.yaml", spec_dict(storage, str(tmp_path / "out"),
                                                                  sample={"seed": 8}))
    real, second = fanout.sample_shards, {}

    def sample_with_a_rival(*a: Any, **k: Any) -> Any:
        if not second:
            second["started"] = True
            t = threading.Thread(target=lambda: second.update(res=_cli(["run", second_path, "--date", DATE])))
            t.start()
            t.join(timeout=300)
            assert not t.is_alive()
        return real(*a, **k)

    monkeypatch.setattr(fanout, "sample_shards", sample_with_a_rival)
    out = run_job(first, DATE)
    res = second["res"]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert "being written by another run" in errors[0], errors
    assert out.status == "published" and out.rows == N
    assert_rows_are_the_runs_own(out.partition, first)


# --------------------------------------------------------------------------------------- driver


def _alive(pids: set[int], pgid: int, marker: str) -> set[int]:
    """Live processes of the run: in ``pids``, in process group ``pgid``, or whose command line
    names ``marker`` (the run's own Ray temp dir: every process of its embedded Ray has it)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    alive = set()
    for line in out.splitlines():
        p, g, stat, *args = line.split(None, 3)
        if stat.startswith("Z") or int(p) == os.getpid():
            continue
        if int(p) in pids or int(g) == pgid or (args and marker in args[0]):
            alive.add(int(p))
    return alive


@pytest.mark.e2e
def test_a_killed_driver_resumes_when_the_same_command_runs_again(tmp_path):
    """``genpipe run`` in its own process group, with its own embedded Ray: SIGKILL to the group
    once the run's first checkpoint is registered, then the same command again."""
    from pipeline.train import load_checkpoint

    epochs = 40  # ~0.7 s an epoch on 2 cores: long enough to be killed mid-training
    spec = {
        "name": "driver-kill",
        "dataset": {"source": "digits"},
        "model": {"kind": "dcgan", "latent_dim": 16, "base_channels": 16},
        "train": {"epochs": epochs, "batch_size": 32, "num_workers": 1, "lr": 0.001, "checkpoint_every": 1},
        "sample": {"num_images": 100, "shard_size": 50, "num_actors": 1, "output": str(tmp_path / "out")},
        "gate": {"measure": False},
        "storage": str(tmp_path / "runs"),
    }
    spec_path = tmp_path / "driver-kill.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "pipeline", "run", str(spec_path), "--date", DATE]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", FAULTS_ENV, "GENPIPE_DEBUG")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # its own short Ray temp dir (socket paths must stay < 108 bytes): marks every process of it
    ray_tmp = tempfile.mkdtemp(prefix="gpkill-", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp
    train_root = tmp_path / "runs" / "driver-kill" / "train"

    log1 = (tmp_path / "first.log").open("w+")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log1, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 300
        run_dir = None
        while True:  # until Ray Train has registered epoch 1's checkpoint (its snapshot names it)
            snaps = list(train_root.glob(f"{DATE}-*/checkpoint_manager_snapshot.json"))
            if snaps:
                try:
                    if "epoch-00001" in snaps[0].read_text():
                        run_dir = snaps[0].parent
                        break
                except OSError:
                    pass
            if proc.poll() is not None:
                log1.seek(0)
                pytest.fail(f"the first run ended before it could be killed (rc {proc.returncode}):\n"
                            + log1.read()[-3000:])
            assert time.monotonic() < deadline, "no checkpoint registered in time"
            time.sleep(0.1)
        family = descendants(proc.pid) | {proc.pid}
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(family, pgid, ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
    left = _alive(family, pgid, ray_tmp)
    for p in left:  # ours: only processes of the group / tree we started
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes of the killed driver survived: {left}"
    assert not (run_dir / "done.json").exists()  # it really died mid-training
    # training goes on while the kill is prepared: the newest checkpoint registered when it died
    snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    kept = snap["latest_checkpoint_result"]["checkpoint_dir_name"]
    first_state, _ = load_checkpoint(str(run_dir / kept))
    done_epochs = int(kept.split("-")[1])
    assert [h["epoch"] for h in first_state["history"]] == list(range(1, done_epochs + 1))
    assert done_epochs < epochs

    try:
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
                                start_new_session=True)
        deadline = time.monotonic() + 30  # a finished run leaves no process behind either
        while (left := _alive(set(), -1, ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for p in left:
            os.kill(p, signal.SIGKILL)
        assert not left, f"processes of the finished run survived: {left}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    done = json.loads((run_dir / "done.json").read_text())  # the same run (same name) finished
    state, info = load_checkpoint(done["checkpoint"])
    history = state["history"]
    assert info.epoch == epochs and [h["epoch"] for h in history] == list(range(1, epochs + 1))
    # the epochs before the kill were carried over from the first process's checkpoint, not trained
    # again: the entries are identical, their wall-clock fields (seconds, images/s) included
    assert history[:done_epochs] == first_state["history"]
    printed = re.findall(rf"epoch (\d+)/{epochs}", second.stdout + second.stderr)  # rank 0's lines, via Ray's log
    assert printed and min(map(int, printed)) > done_epochs, printed  # the second loop began after them
    man = json.loads((tmp_path / "out" / "driver-kill" / "_genpipe" / f"logical_date={DATE}" / "manifest.json"
                      ).read_text())
    assert man["num_rows"] == 100 and man["checkpoint"] == done["checkpoint"]


# -------------------------------------------------------------------------------------- storage


@dataclass
class S3:
    endpoint: str
    proxy: FaultProxy

    @property
    def direct(self) -> dict[str, Any]:
        return {"key": ACCESS_KEY, "secret": SECRET,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    @property
    def via_proxy(self) -> dict[str, Any]:
        """Through the fault proxy, with the client's own retries off (botocore: one attempt, 2 s
        timeouts) so that what carries the run through is pipeline/publish's retry layer."""
        return {"key": ACCESS_KEY, "secret": SECRET,
                "client_kwargs": {"endpoint_url": self.proxy.endpoint, "region_name": "us-east-1"},
                "config_kwargs": {"retries": {"total_max_attempts": 1}, "connect_timeout": 2, "read_timeout": 2}}

    def keys(self, prefix: str) -> list[str]:
        from pipeline.publish.storage import url_to_fs

        fs, path = url_to_fs(f"s3://{BUCKET}/{prefix}", self.direct)
        fs.invalidate_cache()
        return sorted(k.removeprefix(f"{BUCKET}/{prefix}/") for k in fs.find(path))


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto")
    with moto_server((BUCKET,), ACCESS_KEY, SECRET) as endpoint:
        proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1])).start()
        try:
            yield S3(endpoint, proxy)
        finally:
            proxy.stop()


def test_unit_client_transport_errors_are_retried_by_the_publish_layer(s3):
    """Without this layer, a dropped connection during an outage fails the write at once
    (botocore's EndpointConnectionError is not an OSError, and s3fs does not retry it)."""
    from pipeline.publish.storage import url_to_fs, with_retries

    s3.proxy.clear()
    fs, _ = url_to_fs(f"s3://{BUCKET}/unit", s3.via_proxy)
    s3.proxy.on_request("/unit/a", "outage", seconds=0.8)
    t0 = time.monotonic()
    with_retries(lambda: fs.pipe_file(f"{BUCKET}/unit/a", b"x"), what="unit")
    assert time.monotonic() - t0 >= 0.8 and s3.proxy.fired("outage") == 1
    s3.proxy.clear()
    s3.proxy.outage(math.inf)
    t0 = time.monotonic()
    with pytest.raises(Exception) as ei:  # noqa: PT011 - the client's own type; bounded, not retried forever
        with_retries(lambda: fs.pipe_file(f"{BUCKET}/unit/b", b"x"), what="unit")
    assert "EndpointConnectionError" in type(ei.value).__name__ and time.monotonic() - t0 < 10
    s3.proxy.clear()


def test_transient_storage_faults_are_retried_and_the_run_completes(ray_local, baseline, storage, s3):
    p = s3.proxy
    p.clear()
    sh = [f"part-{i:05d}-of-{NSHARDS:05d}" for i in range(NSHARDS)]
    p.on_request(sh[1], "reset", count=2)  # shard 1's first two requests are cut
    p.on_request(sh[2], "lose-response")  # executed, but the answer is lost: the retried create-only PUT
    p.on_request(sh[3], "outage", seconds=0.8)  # the store is unreachable for 0.8 s
    p.on_request(sh[4], "stall", seconds=6)  # hangs: the client's 2 s read timeout fires
    p.on_request("manifest.json", "reset")  # the first manifest request is cut
    out = run_job(fspec(storage, f"s3://{BUCKET}/transient", storage_options=s3.via_proxy), DATE)
    fired, lines = dict(p.counters.fired), list(p.counters.lines)
    p.clear()
    assert fired == {"reset": 3, "lose-response": 1, "outage": 1, "stall": 1}, (fired, lines)
    assert any(ln.startswith("PUT ") and sh[2] in ln for ln in lines), lines  # the lost answer was a commit
    assert out.status == "published" and out.rows == N
    man, table = read_partition(out.partition, s3.direct)
    assert_complete_and_equal(man, table, baseline[1])


def _write_spec(path: Path, d: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(d))
    return str(path)


def _cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from pipeline.cli import app

    return CliRunner().invoke(app, args)


def test_a_lasting_storage_outage_fails_cleanly_and_a_rerun_completes(ray_local, baseline, storage, s3, tmp_path):
    p = s3.proxy
    p.clear()
    prefix = "outage"
    spec_path = _write_spec(tmp_path / "job.yaml", spec_dict(storage, f"s3://{BUCKET}/{prefix}",
                                                              storage_options=s3.via_proxy))
    p.on_request(f"part-00003-of-{NSHARDS:05d}", "outage", seconds=math.inf)  # down from shard 3 on
    t0 = time.monotonic()
    first = _cli(["run", spec_path, "--date", DATE])
    took = time.monotonic() - t0
    p.clear()
    assert first.exit_code == 1, first.output  # a failed job (storage), not bad input
    errors = [ln for ln in first.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert len(errors) == 1 and "Traceback" not in errors[0], first.stderr
    # e.g. "genpipe: error: StorageError: writing s3://.../part-00003-of-00006.parquet: EndpointConnectionError: ..."
    assert re.search(rf"StorageError: writing s3://{BUCKET}/{prefix}/\S+/part-\d{{5}}-of-{NSHARDS:05d}\.parquet",
                     errors[0]), errors[0]
    assert SECRET not in first.output and ACCESS_KEY not in first.output
    assert took < 120, took  # bounded backoff, no hang

    # nothing half-published: no manifest, and every shard object there is complete
    from pipeline.publish.commit import verify_shard

    keys = s3.keys(prefix)
    part = f"s3://{BUCKET}/{prefix}/faults/data/logical_date={DATE}"
    state = f"faults/_genpipe/logical_date={DATE}"
    assert f"{state}/manifest.json" not in keys and "faults/README.md" not in keys, keys
    shard_keys = [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")]
    for k in shard_keys:
        i = int(k.rsplit("/", 1)[-1][5:10])
        assert verify_shard(part, i, NSHARDS, SHARD, s3.direct) is not None, k
    assert len(shard_keys) < NSHARDS
    # besides the run state, the writer lease may be left: the store was down when the run let go of
    # it (the rerun below, on this machine, takes it over at once: its holder has ended)
    assert set(keys) - set(shard_keys) - {f"{state}/lease.json"} == {f"{state}/run.json"}, keys

    # the store is back: the same command completes, keeping what was committed
    second = _cli(["run", spec_path, "--date", DATE])
    assert second.exit_code == 0, second.output
    assert f"published: {N} rows, {NSHARDS} shards" in second.stdout
    man, table = read_partition(part, s3.direct)
    assert_complete_and_equal(man, table, baseline[1])
    assert f"{state}/lease.json" not in s3.keys(prefix)


def test_an_output_bucket_that_does_not_exist_is_one_line_exit_2_and_is_not_created(ray_local, baseline,
                                                                                   storage, s3, tmp_path):
    missing = "genpipe-no-such-bucket"
    spec_path = _write_spec(tmp_path / "job.yaml", spec_dict(storage, f"s3://{missing}/ds",
                                                              storage_options=s3.direct))
    res = _cli(["run", spec_path, "--date", DATE])
    from pipeline.publish.storage import url_to_fs

    fs, _ = url_to_fs(f"s3://{BUCKET}", s3.direct)
    fs.invalidate_cache()
    assert not fs.exists(missing), "the job created the bucket"
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert res.exit_code == 2 and len(errors) == 1 and missing in errors[0], res.output
