"""The Ray Train set-up: a ``TorchTrainer`` whose run lives in the job's storage.

A run is named by the logical date and the hash of the training config, under
``<storage>/<job>/train/``. Running the same job again uses the same ``RunConfig(name,
storage_path)``, so Ray Train V2 finds the run's latest checkpoint and the loop resumes
from it; a finished run is recognised from its ``done.json`` and not trained again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.faults import from_env as faults_from_env
from pipeline.spec import JobSpec
from pipeline.train.checkpoint import CheckpointInfo, load_checkpoint
from pipeline.train.loop import train_loop_per_worker

DONE_FILE = "done.json"
POLL_INTERVAL_S = "0.5"  # Ray Train controller poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S)


class TrainingError(RuntimeError):
    """Training failed after Ray Train's own retries."""


@dataclass
class TrainResult:
    checkpoint: CheckpointInfo
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    skipped: bool = False  # the run had already finished: nothing trained
    seconds: float = 0.0


def run_name(spec: JobSpec, date: str, attempt: int = 0) -> str:
    """``<date>-<hash of the training config and the model family's version>[-retryN]``."""
    import hashlib

    from pipeline.models.base import family

    h = hashlib.sha256(f"{spec.train_hash()}:{family(spec.model.kind).version}".encode()).hexdigest()
    suffix = f"-retry{attempt}" if attempt else ""
    return f"{date}-{h[:10]}{suffix}"


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


def _read_done(run_url: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(join(run_url, DONE_FILE), storage_options)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


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
) -> TrainResult:
    """Train (or resume, or skip if finished) the job's model; returns its final checkpoint."""
    import time

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.publish.storage import join

    t0 = time.perf_counter()
    so = spec.storage_options
    root = join(spec.storage, spec.name, "train")
    name = run_name(spec, date, attempt)
    run_url = join(root, name)
    done = _read_done(run_url, so)
    if done is not None:
        state, info = load_checkpoint(done["checkpoint"], so)
        return TrainResult(info, list(state.get("history", [])), skipped=True)

    if spec.train.init_from and start_from is None:
        start_from = {"url": spec.train.init_from, "mode": "init"}
    tr = spec.train
    worker_resources = dict(tr.resources_per_worker)
    worker_resources["CPU"] = tr.cpus_per_worker
    if tr.use_gpu:
        worker_resources["GPU"] = 1
    storage_path, storage_fs = storage_for_ray(root, so)
    # Ray Train's INFO lines (each report's full metrics, worker-group start-up) are forwarded
    # into the job's output; genpipe reports progress itself. Ray's system log files under the
    # session directory keep every level. GENPIPE_RAY_TRAIN_LOG_LEVEL=INFO brings them back.
    ray_train_log_level = os.environ.get("GENPIPE_RAY_TRAIN_LOG_LEVEL", "WARNING").upper()
    # Ray Train V2 propagates this from the driver to its controller, which takes each worker's
    # report (and the final result) on its poll: 2 s by default, i.e. up to 2 s of idle workers
    # per report. A user's own setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", POLL_INTERVAL_S)
    datasets = None
    if spec.dataset.streaming:  # workers read their shard through Ray Data, never the whole dataset
        from pipeline.data.streaming import streaming_dataset

        datasets = {"train": streaming_dataset(spec.dataset, spec.dataset.storage_options or None).train}
    trainer = TorchTrainer(
        train_loop_per_worker,
        datasets=datasets,
        train_loop_config={
            # credentials stay out of the config: Ray Train records it (dashboard run state)
            "spec": spec.model_dump(mode="json", exclude={"storage_options": True,
                                                          "dataset": {"storage_options"}}),
            "secrets": ray.put({"storage": dict(so), "dataset": dict(spec.dataset.storage_options)}),
            "train_hash": spec.train_hash(),
            "meta": meta,
            "start_from": start_from,
            "progress_actor": progress_actor,
            "faults": faults_from_env(),
            "ray_train_log_level": ray_train_log_level,
        },
        torch_config=TorchConfig(backend="nccl" if tr.use_gpu else "gloo"),
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
    result = trainer.fit()
    if result.error is not None:
        raise TrainingError(f"training failed: {result.error}") from None
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint")
    ckpt_url = _ray_path_to_url(root, storage_path, result.checkpoint.path)
    state, info = load_checkpoint(ckpt_url, so)
    history = list(state.get("history", []))
    resumed = int((result.return_value or {}).get("start_epoch", 0)) > 0
    _write_done(run_url, so, {"checkpoint": ckpt_url, "digest": info.digest, "epoch": info.epoch})
    return TrainResult(info, history, resumed=resumed, seconds=time.perf_counter() - t0)


def _ray_path_to_url(root_url: str, storage_path: str, ckpt_path: str) -> str:
    """Ray reports checkpoint paths without the URL scheme; put ours back."""
    if "://" in root_url and not root_url.startswith("file://"):
        scheme = root_url.split("://", 1)[0]
        return f"{scheme}://{ckpt_path.lstrip('/')}" if not ckpt_path.startswith(f"{scheme}://") else ckpt_path
    return ckpt_path
