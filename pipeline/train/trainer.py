"""The Ray Train set-up: a ``TorchTrainer`` whose run lives in the job's storage.

A run is named by the logical date and the hash of the training config, under
``<storage>/<job>/train/``. Running the same job again uses the same ``RunConfig(name,
storage_path)``, so Ray Train V2 finds the run's latest checkpoint and the loop resumes
from it; a finished run is recognised from its ``done.json`` and not trained again.

Before a resume the driver checks the checkpoint Ray Train would hand the workers
(:func:`resume_point`). A damaged one (truncated, changed, missing) used to fail every rerun in
the workers, for good. Now the run's record (Ray's snapshot) and each damaged checkpoint are set
aside (renamed ``*.damaged-<time>``), the run resumes from its newest intact checkpoint (passed
to the loop as ``start_from``), and a warning says so; with none intact the job stops with a
CheckpointError (exit 2) naming the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import EXIT_FAILED, BadInput, GenpipeError
from pipeline.faults import from_env as faults_from_env
from pipeline.plan import run_name, train_resources  # noqa: F401  (run_name: part of this module's API)
from pipeline.spec import JobSpec
from pipeline.train.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, verify_checkpoint
from pipeline.train.loop import train_loop_per_worker

log = logging.getLogger("genpipe")
DONE_FILE = "done.json"
#: Ray Train V2's record of a run's checkpoints (read-only to us, but for setting it aside)
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
_CKPT_DIR = re.compile(r"epoch-(\d+)")
POLL_INTERVAL_S = "0.5"  # Ray Train controller poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S)


class TrainingError(GenpipeError, RuntimeError):
    """Training failed after Ray Train's own retries (exit code 1)."""

    exit_code = EXIT_FAILED
    name_in_message = True


@dataclass
class TrainResult:
    checkpoint: CheckpointInfo
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    skipped: bool = False  # the run had already finished: nothing trained
    seconds: float = 0.0
    recovered_from: str | None = None  # the run's newest checkpoint was damaged: resumed from this one
    #: where the call's wall time went, in seconds (see :func:`_phases`); empty when nothing trained
    phases: dict[str, float] = field(default_factory=dict)


def _phases(t_call: float, t_fit: float, t_fitted: float, t_end: float, timings: dict[str, float] | None
            ) -> dict[str, float]:
    """The call's wall time split at rank 0's own marks (``timings`` from the loop's return value,
    wall-clock times; on a multi-node cluster they carry that node's clock offset):

    before_fit (the driver: done and resume checks, data opened), worker_start (Ray Train's
    controller and worker group started, the process group set up, up to the loop's first line),
    worker_setup (the loop's imports, model, DDP wrap, checkpoint load, data), epochs (the steps),
    reports (checkpoint writes and ``ray.train.report``, each waiting for the controller's poll),
    finish (the loop's return to ``fit()`` returning: the worker group shut down), after_fit (the
    final checkpoint read back, done.json written)."""
    out = {"before_fit": t_fit - t_call}
    if timings:
        out.update(worker_start=timings["entered"] - t_fit, worker_setup=timings["ready"] - timings["entered"],
                   epochs=timings["left"] - timings["ready"] - timings["reports_s"], reports=timings["reports_s"],
                   finish=t_fitted - timings["left"])
    else:  # an older loop's checkpoint run, or a resume that had nothing left to do
        out["fit"] = t_fitted - t_fit
    out["after_fit"] = t_end - t_fitted
    return {k: round(v, 3) for k, v in out.items()}


def storage_for_ray(url: str, storage_options: dict[str, Any]) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train from an fsspec URL.

    Local paths go to Ray as they are; anything else goes through a pyarrow wrapper of the
    same fsspec filesystem the rest of the pipeline uses (same endpoint and credentials).
    """
    import pyarrow.fs as pafs

    from pipeline.publish.storage import is_local, url_to_fs

    fs, path = url_to_fs(url, storage_options)
    if is_local(url):
        return path, None
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _read_done(run_url: str, storage_options: dict[str, Any]) -> tuple[dict[str, Any], tuple] | None:
    """(done.json, the final checkpoint it names) of a finished run; None if the run has not
    finished, or if its marker or final checkpoint is damaged (said, and the run is resumed instead:
    it finishes again and rewrites the marker)."""
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(join(run_url, DONE_FILE), storage_options)
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as f:
            done = json.loads(f.read())
        if not isinstance(done, dict) or not isinstance(done.get("checkpoint"), str):
            raise ValueError("no checkpoint named")
    except (OSError, ValueError) as exc:
        log.warning("%s: not a valid completion marker (%s): ignored, the run is resumed",
                    join(run_url, DONE_FILE), str(exc).splitlines()[0][:200])
        return None
    try:
        return done, load_checkpoint(done["checkpoint"], storage_options)
    except CheckpointError as exc:
        log.warning("%s names a checkpoint that cannot be used (%s): the run is resumed",
                    join(run_url, DONE_FILE), exc)
        return None


def _snapshot_dirs(raw: bytes) -> tuple[list[str], str | None] | None:
    """(checkpoint dirs listed, the latest one) from Ray's snapshot; None if it does not parse."""
    try:
        snap = json.loads(raw)
        listed = [r["checkpoint_dir_name"] for r in snap.get("checkpoint_results", [])]
        latest = (snap.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(isinstance(d, str) for d in listed) or not (latest is None or isinstance(latest, str)):
        return None
    return listed, latest


def resume_point(run_url: str, storage_options: dict[str, Any]) -> tuple[dict[str, str], str] | None:
    """Make sure Ray Train will not resume this run from a damaged checkpoint.

    None when there is nothing to resume, or Ray's snapshot of the run parses, every checkpoint it
    lists exists and the latest is intact: Ray Train resumes from it as usual. Otherwise the
    snapshot and every damaged checkpoint directory are renamed aside, and the answer is
    (``start_from`` for the loop: the newest intact checkpoint, mode ``resume``; what was wrong).
    CheckpointError when the run has checkpoints but none is intact."""
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(run_url, storage_options)
    snap_path = join(path, SNAPSHOT_FILE)
    if not fs.exists(snap_path):
        return None  # a new run (or one that never registered a checkpoint): Ray starts from scratch
    parsed = _snapshot_dirs(fs.cat_file(snap_path))
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    on_disk = sorted((d for d in names if _CKPT_DIR.fullmatch(d)), key=lambda d: int(d.split("-")[1]),
                     reverse=True)
    problems: dict[str, str] = {}
    if parsed is None:
        why = f"{SNAPSHOT_FILE} does not parse"
    else:
        listed, latest = parsed
        missing = [d for d in listed if d not in names]
        if latest is None and not missing:
            return None  # nothing registered yet: Ray starts from scratch
        if not missing and latest is not None and (problem := verify_checkpoint(join(run_url, latest),
                                                                                storage_options)) is None:
            return None  # the usual resume
        if missing:
            why = f"checkpoint(s) {', '.join(missing)} listed by {SNAPSHOT_FILE} are gone"
        else:
            problems[latest] = problem
            why = f"checkpoint {latest} is damaged ({problem})"
    intact = None
    for d in on_disk:
        if d in problems:
            continue
        problem = verify_checkpoint(join(run_url, d), storage_options)
        if problem is None:
            intact = d
            break
        problems[d] = problem
    if intact is None:
        detail = "; ".join(f"{d}: {p}" for d, p in problems.items()) or "no checkpoint directories"
        raise CheckpointError(f"{run_url}: no intact checkpoint to resume the training run from ({why}; {detail}): "
                              "remove that directory to train from scratch")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in [SNAPSHOT_FILE, *problems]:  # aside, not deleted: evidence, and Ray must not find them
        if name in names:
            fs.mv(join(path, name), join(path, f"{name}.damaged-{stamp}"), recursive=True)
    return {"url": join(run_url, intact), "mode": "resume"}, why


def _write_done(run_url: str, storage_options: dict[str, Any], info: dict[str, Any]) -> None:
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(join(run_url, DONE_FILE), storage_options)
    fs.pipe(path, json.dumps(info, indent=1).encode())


def train(
    spec: JobSpec,
    date: str,
    meta: dict[str, Any],
    *,
    attempt: int = 0,
    start_from: dict[str, str] | None = None,
    progress_actor: Any = None,
    data: Any = None,
) -> TrainResult:
    """Train (or resume, or skip if finished) the job's model; returns its final checkpoint.

    ``data`` is the job's :class:`~pipeline.data.source.DataSource`, opened once by the caller
    (opened here when None): its ``info`` is what workers are told of the data, its
    ``ray_datasets()`` what Ray Train shards among them (streamed data only)."""
    import ray
    import ray.train

    from pipeline.publish.storage import join
    from pipeline.train.pg_guard import new_key, release
    from pipeline.train.ray_trainer import GenpipeTorchTrainer

    t0, t_call = time.perf_counter(), time.time()
    so = spec.storage_options
    root = join(spec.storage, spec.name, "train")
    name = run_name(spec, date, attempt)
    run_url = join(root, name)
    done = _read_done(run_url, so)
    if done is not None:
        _, (state, info) = done
        return TrainResult(info, list(state.get("history", [])), skipped=True)

    if spec.train.init_from and start_from is None:
        start_from = {"url": spec.train.init_from, "mode": "init"}
    recovered_from = None
    if (fallback := resume_point(run_url, so)) is not None:  # the run's own checkpoint wins over start_from
        start_from, why = fallback
        recovered_from = start_from["url"]
        log.warning("training run %s: %s; resuming from %s, the newest intact checkpoint (the damaged "
                    "files are kept as *.damaged-*)", run_url, why, start_from["url"].rsplit("/", 1)[-1])
    tr = spec.train
    worker_resources = train_resources(spec).bundle  # the one definition feasibility checks too
    storage_path, storage_fs = storage_for_ray(root, so)
    # Ray Train's INFO lines (each report's full metrics, worker-group start-up) are forwarded
    # into the job's output; genpipe reports progress itself. Ray's system log files under the
    # session directory keep every level. GENPIPE_RAY_TRAIN_LOG_LEVEL=INFO brings them back.
    ray_train_log_level = os.environ.get("GENPIPE_RAY_TRAIN_LOG_LEVEL", "WARNING").upper()
    # Ray Train V2 propagates this from the driver to its controller, which takes each worker's
    # report (and the final result) on its poll: 2 s by default, i.e. up to 2 s of idle workers
    # per report. A user's own setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", POLL_INTERVAL_S)
    require_train_v2()
    if data is None:
        from pipeline.data.source import open_source

        data = open_source(spec.dataset)
    from pipeline.redaction import public_spec

    pg_key = new_key(name)
    trainer = GenpipeTorchTrainer(
        train_loop_per_worker,
        pg_key=pg_key,
        datasets=data.ray_datasets(),  # streamed: each worker reads its shard, never the whole dataset
        train_loop_config={
            # credentials stay out of the config: Ray Train records it (dashboard run state); the
            # free-text description goes through the same masking as a published spec
            "spec": {**spec.model_dump(mode="json", exclude={"storage_options": True,
                                                             "dataset": {"storage_options"}}),
                     "description": public_spec(spec).get("description")},
            "secrets": ray.put({"storage": dict(so), "dataset": dict(spec.dataset.storage_options)}),
            "train_hash": spec.train_hash(),
            "meta": meta,
            "data": data.info.to_json(),
            "start_from": start_from,
            "progress_actor": progress_actor,
            "faults": faults_from_env(),
            "ray_train_log_level": ray_train_log_level,
        },
        torch_config=backend_config(spec),
        scaling_config=ray.train.ScalingConfig(
            num_workers=tr.num_workers, use_gpu=tr.use_gpu, resources_per_worker=worker_resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=tr.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level=ray_train_log_level),
        ),
    )
    t_fit = time.time()
    try:
        result = trainer.fit()
    finally:  # the worker group's placement group, if Ray Train's controller died holding it
        if (left := release(pg_key)) is not None:
            log.warning("training run %s: Ray Train's controller exited without removing its placement "
                        "group %s: removed", run_url, left)
    t_fitted = time.time()
    if result.error is not None:
        raise TrainingError(f"training failed: {result.error}") from None
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint")
    ckpt_url = _ray_path_to_url(root, storage_path, result.checkpoint.path)
    state, info = load_checkpoint(ckpt_url, so)
    history = list(state.get("history", []))
    resumed = int((result.return_value or {}).get("start_epoch", 0)) > 0
    _write_done(run_url, so, {"checkpoint": ckpt_url, "digest": info.digest, "epoch": info.epoch})
    resumed = resumed or recovered_from is not None
    phases = _phases(t_call, t_fit, t_fitted, time.time(), (result.return_value or {}).get("timings"))
    return TrainResult(info, history, resumed=resumed, seconds=time.perf_counter() - t0,
                       recovered_from=recovered_from, phases=phases)


def require_train_v2() -> None:
    """genpipe's training runs on Ray Train V2 (its controller, run state and resumption; the
    backend of :mod:`pipeline.train.backend` sets the torchrun variables as V2's worker group
    needs them). ``RAY_TRAIN_V2_ENABLED=0`` would hand it V1's: refused up front (exit 2)."""
    from ray.train.v2._internal.constants import V2_ENABLED_ENV_VAR, is_v2_enabled

    if not is_v2_enabled():
        raise BadInput(f"{V2_ENABLED_ENV_VAR}={os.environ.get(V2_ENABLED_ENV_VAR)}: genpipe trains with "
                       "Ray Train V2 only (Ray 2.60's default); unset it")


def backend_config(spec: JobSpec):
    """The job's torch process-group set-up: nccl on GPU workers, gloo on CPU, by
    :class:`pipeline.train.backend.TorchBackendConfig`: Ray's own set-up, less the ~1.8 s torch
    import in Ray Train's controller (``bench/sampling.py``'s ``train_floor`` times both)."""
    from pipeline.train.backend import TorchBackendConfig

    return TorchBackendConfig(backend="nccl" if spec.train.use_gpu else "gloo")


def _ray_path_to_url(root_url: str, storage_path: str, ckpt_path: str) -> str:
    """Ray reports checkpoint paths without the URL scheme; put ours back."""
    if "://" in root_url and not root_url.startswith("file://"):
        scheme = root_url.split("://", 1)[0]
        return f"{scheme}://{ckpt_path.lstrip('/')}" if not ckpt_path.startswith(f"{scheme}://") else ckpt_path
    return ckpt_path
