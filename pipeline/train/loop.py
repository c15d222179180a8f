"""The training loop that runs inside every Ray Train worker, top to bottom.

DDP over gloo (CPU) or nccl (GPU) is set up by Ray Train; this function only sees its
rank. Its batches come from :func:`pipeline.data.source.worker_batches` (in memory: its
``DistributedSampler`` slice, re-ordered each epoch with ``set_epoch``; streamed: its Ray Data
shard), and it steps the model family's nets, wrapped by ``prepare_model``.
Rank 0 writes a checkpoint every ``checkpoint_every`` epochs and at the end; all ranks
call ``ray.train.report`` then, and only then (it is a barrier, and each call waits for the
controller's next poll), the same number of times. Epoch progress goes to the progress actor.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from typing import Any

import torch

from pipeline.faults import maybe_exit
from pipeline.rng import derive_seed
from pipeline.spec import JobSpec


def _ddp_kwargs() -> dict[str, Any]:
    """How the loop wraps each net in DDP: no buffer sync before every forward. DDP's default sends
    rank 0's buffers (BatchNorm running statistics) to every rank before every forward, four
    collectives per GAN step. Training-mode forwards use batch statistics, rank 0's own buffers are
    never changed by it, and only rank 0 checkpoints (a resume loads its buffers on every rank):
    rank 0's checkpoint is the same bit for bit (``test_models.py``), a DDP step on 2 CPUs ~11 %
    faster. ``forward_sync_buffers`` where this torch has it (``broadcast_buffers`` is deprecated
    there; the buffers are still synced once, at wrap time, where they are equal anyway)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if new else "broadcast_buffers": False}


DDP_KWARGS: dict[str, Any] = _ddp_kwargs()


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _quiet_report_lines(level: str) -> None:
    """Ray 2.60 logs "Reporting training result ..." (one line per report, full metrics) through
    ``logging.getLogger(__file__)`` in its execution context module: a logger named by a path,
    so RunConfig's LoggingConfig (which filters ``ray.train.*``) does not reach it."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(level)


def _say(text: str) -> None:
    """One line on the worker's stdout, once: Ray Train patches ``print`` into its logger and
    also tees it to a redirected ``sys.stdout``, so a plain ``print`` reached the driver twice."""
    sys.__stdout__.write(text + "\n")
    sys.__stdout__.flush()


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    entered = time.time()  # wall clock (the driver's too): where the call's time goes, see TrainResult.phases
    import ray
    import ray.train
    import ray.train.torch

    from pipeline.data.augment import random_affine
    from pipeline.data.source import DataInfo, worker_batches
    from pipeline.models import build_model
    from pipeline.train.checkpoint import TrainState

    spec = JobSpec.model_validate(config["spec"])
    secrets = ray.get(config["secrets"]) if config.get("secrets") is not None else {}
    if secrets:  # credentials travel as an object ref, never inside the recorded config
        spec = spec.model_copy(update={
            "storage_options": secrets["storage"],
            "dataset": spec.dataset.model_copy(update={"storage_options": secrets["dataset"]})})
    tr = spec.train
    _quiet_report_lines(config.get("ray_train_log_level", "WARNING"))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(tr.cpus_per_worker)))

    info = DataInfo.from_json(config["data"])  # resolved once on the driver (the RunPlan's)
    image_shape, num_classes = info.image_shape, info.num_classes
    _seed_everything(derive_seed(tr.seed, "init"))  # identical initial weights on every rank
    fam = build_model(spec.model, image_shape, num_classes)
    fam.to(device)
    nets = {k: ray.train.torch.prepare_model(v, parallel_strategy_kwargs=DDP_KWARGS) for k, v in fam.nets.items()}
    opts = fam.make_optimizers(fam.nets, tr)

    resume_from: TrainState | None = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # resume this run (a worker-group restart or the same command run again)
        with ckpt.as_directory() as d:
            resume_from = TrainState.load(d, map_location=device, where="run checkpoint")
        if resume_from.train_hash != config["train_hash"]:
            raise ValueError("the run's checkpoint was written by a different training config")
    elif config.get("start_from"):  # a new run seeded from another checkpoint
        source = TrainState.load(config["start_from"]["url"], spec.storage_options, device)
        if config["start_from"]["mode"] == "resume":  # gate retry: continue the same training
            resume_from = source
        else:  # fine-tuning: weights only, fresh optimizers, epoch 0
            from pipeline.train.finetune import load_weights_for_finetune

            load_weights_for_finetune(fam, source.model, tr.init_label_map)
    start_epoch, step, history = 0, 0, []
    if resume_from is not None:
        resume_from.restore(fam, opts)
        start_epoch, step, history = resume_from.epoch, resume_from.step, list(resume_from.history)

    data = worker_batches(spec, rank, world)  # in memory or streamed: the DataSource's worker side
    batch = data.batch_size
    use_bf16 = device.type == "cuda" and tr.bf16
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    result: dict[str, Any] = {"epoch": start_epoch, "step": step}
    first_epoch = start_epoch
    ready, reports_s = time.time(), 0.0
    for epoch in range(start_epoch, tr.epochs):
        if rank == 0:
            maybe_exit(config.get("faults"), "train_exit_at_epoch", epoch)
        _seed_everything(derive_seed(tr.seed, rank, epoch))  # RNG state = f(seed, rank, epoch)
        aug_gen = torch.Generator().manual_seed(derive_seed(tr.seed, rank, epoch, "augment"))
        # ADA-style: what the discriminator sees (real and fake alike) is augmented, never the
        # generator's target (spec validation allows augmentation for adversarial families only)
        augment = (lambda t, g=aug_gen: random_affine(t, spec.dataset.augment, g)) \
            if spec.dataset.augment.enabled else None
        for n in nets.values():
            n.train()
        t0, sums, batches = time.perf_counter(), {}, 0
        for x, y in data.batches(epoch):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            losses = fam.train_step(nets, opts, x, y, autocast(), augment=augment)
            fam.update_ema()
            step += 1
            batches += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
        seconds = time.perf_counter() - t0
        metrics = {k: v / max(batches, 1) for k, v in sums.items()}
        if data.order is not None:
            metrics["order_crc32"] = data.order(epoch)
        metrics.update(epoch=epoch + 1, step=step, seconds=round(seconds, 3),
                       images_per_s=round(batches * batch * world / max(seconds, 1e-9), 1))
        history.append(metrics)
        last = epoch + 1 == tr.epochs
        if rank == 0:
            _say(f"epoch {epoch + 1}/{tr.epochs} "
                 + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("loss"))
                 + f" {metrics['images_per_s']:.0f} img/s")
            board = config.get("progress_actor")
            if board is not None:
                board.update.remote("train", epoch + 1, tr.epochs, metrics)
        # Ray Train's controller takes one report off each worker's queue (size 1) per poll
        # (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default), so a report per short epoch made
        # training wait seconds per epoch: report (with a checkpoint) only every checkpoint_every
        # epochs. Progress reaches the driver through the progress actor, which never blocks.
        if (epoch + 1) % tr.checkpoint_every == 0 or last:
            t_report = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                ckpt_obj = None
                if rank == 0:
                    TrainState.capture(fam, opts, epoch=epoch + 1, step=step, history=history,
                                       train_hash=config["train_hash"], meta=config["meta"]).save(tmp)
                    ckpt_obj = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt_obj, checkpoint_dir_name=f"epoch-{epoch + 1:05d}")
            reports_s += time.perf_counter() - t_report
        result = {"epoch": epoch + 1, "step": step, **metrics}
    result["history"] = history
    result["start_epoch"] = first_epoch
    result["timings"] = {"entered": entered, "ready": ready, "reports_s": reports_s, "left": time.time()}
    return result
