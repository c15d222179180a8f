"""Fan-out sampling: Ray actors (one per GPU, or CPU actors) each load the checkpoint once
and turn shards of the plan into committed Parquet files.

Each shard is independent and deterministic, so an actor that dies mid-shard costs a
retry (Ray restarts the actor and re-runs the task), never a duplicate or a gap: a shard
that already reads back complete is skipped, one that doesn't is written again.
In-flight work is bounded (``inflight_per_actor`` shards per actor), so memory stays flat
whatever the dataset size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ray

from pipeline.faults import maybe_exit
from pipeline.sample.plan import Shard, ShardPlan, image_ids, spread_labels
from pipeline.spec import JobSpec


@dataclass(frozen=True)
class ShardContext:
    """What every shard of one publish shares (small: shipped to each actor once)."""

    partition: str
    job: str
    date: str
    class_names: list[str]
    fmt: str
    created_at: datetime
    faults: dict[str, Any] | None = None  # see pipeline/faults.py


class SamplerActor:
    """Holds one generator in memory; writes whole shards."""

    def __init__(self, spec_json: dict[str, Any], ckpt_url: str, use_gpu: bool):
        import torch

        from pipeline.sample.generate import load_generator, pick_device

        self.spec = JobSpec.model_validate(spec_json)
        self.device = pick_device(use_gpu)
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        else:
            torch.backends.cudnn.benchmark = False
        self.fam, self.ckpt = load_generator(ckpt_url, self.spec, self.device)

    def run_shard(self, shard: Shard, ctx: ShardContext) -> dict[str, Any]:
        from pipeline.publish.commit import verify_shard, write_shard
        from pipeline.publish.schema import build_table
        from pipeline.sample.generate import generate_u8

        so = self.spec.storage_options
        t0 = time.perf_counter()
        done = verify_shard(ctx.partition, shard.index, shard.num_shards, shard.count, so)
        if done is not None:
            return {"info": done, "skipped": True, "seconds": time.perf_counter() - t0}
        images = generate_u8(self.fam, shard.seeds, shard.labels, batch_size=self.spec.sample.batch_size,
                             bf16=self.spec.train.bf16)
        maybe_exit(ctx.faults, "sample_exit_on_shard", shard.index)
        table = build_table(
            images, shard.labels, shard.seeds, image_ids(ctx.job, ctx.date, shard), shard.index,
            class_names=ctx.class_names, fmt=ctx.fmt, model=self.spec.model.kind, checkpoint=self.ckpt.digest,
            job=ctx.job, date=ctx.date, created_at=ctx.created_at,
        )
        info = write_shard(ctx.partition, shard.index, shard.num_shards, table, so)
        return {"info": info, "skipped": False, "seconds": time.perf_counter() - t0}


def default_num_actors(spec: JobSpec, use_gpu: bool) -> int:
    if spec.sample.num_actors:
        return spec.sample.num_actors
    res = ray.cluster_resources()
    if use_gpu:
        return max(1, int(res.get("GPU", 1)))
    return max(1, min(2, int(res.get("CPU", 1))))


def sample_shards(
    spec: JobSpec,
    plan: ShardPlan,
    ckpt_url: str,
    ctx: ShardContext,
    *,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    inflight_per_actor: int = 2,
) -> list[Any]:
    """Write every shard of ``plan`` (skipping complete ones); returns ShardInfos in shard order."""
    use_gpu = spec.sample.use_gpu if spec.sample.use_gpu is not None else spec.train.use_gpu
    n_actors = min(default_num_actors(spec, use_gpu), plan.num_shards)
    actor_cls = ray.remote(SamplerActor).options(
        num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=3, max_task_retries=3,
    )
    actors = [actor_cls.remote(spec.model_dump(mode="json"), ckpt_url, use_gpu) for _ in range(n_actors)]
    ctx_ref = ray.put(ctx)
    labels = None if plan.cycle is not None else spread_labels(plan.counts)
    todo = list(range(plan.num_shards))[::-1]
    results: dict[int, Any] = {}
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}  # ref -> (shard, actor)
    load = [0] * n_actors
    try:
        while todo or pending:
            for a in range(n_actors):
                while todo and load[a] < inflight_per_actor:
                    i = todo.pop()
                    ref = actors[a].run_shard.remote(plan.shard(i, labels), ctx_ref)
                    pending[ref] = (i, a)
                    load[a] += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, a = pending.pop(ref)
                load[a] -= 1
                out = ray.get(ref)
                results[i] = out["info"]
                if on_shard:
                    on_shard(dict(out, index=i))
    finally:
        for actor in actors:
            ray.kill(actor)
    return [results[i] for i in range(plan.num_shards)]


def now_utc() -> datetime:
    return datetime.now(UTC)
