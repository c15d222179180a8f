"""Fan-out sampling: Ray actors hold the generator, shards of the plan become committed
Parquet files.

Two layouts, chosen by ``sample.mode`` (``auto``: ``split`` when sampling on GPUs):

* ``fused`` -- each actor generates, encodes and writes whole shards. Best when the
  generator itself runs on the CPU cores (nothing to overlap with).
* ``split`` -- GPU actors only generate: a shard's uint8 pixels go through Ray's object
  store to a CPU task that encodes and commits it, on any core of the cluster. The GPU
  keeps generating the next shard while every CPU encodes (encoding is the bottleneck:
  ~20-30 k PNG/s per core against millions of images/s from the GPU), so a GPU actor reserves
  no CPU (``pipeline.plan.sample_actor_bundle``).

Either way in-flight work is bounded (``inflight_per_actor`` shards generated ahead per
actor, at most ``encode_slots`` shards waiting to be encoded), so memory stays flat
whatever N is. Each shard is deterministic and committed exactly once: a shard that
already reads back complete, with this run's spec hash and checkpoint digest in its footer, is
skipped (one left by another spec or checkpoint is removed and regenerated), an actor that
dies mid-shard costs a retry
(``max_restarts``/``max_task_retries``), never a duplicate or a gap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from pipeline.faults import maybe_exit
from pipeline.sample.plan import Shard, ShardPlan, image_ids
from pipeline.spec import JobSpec

if TYPE_CHECKING:
    from pipeline.plan import RunPlan
    from pipeline.publish.partition import Partition


@dataclass(frozen=True)
class ShardContext:
    """What every shard of one publish shares (small: shipped to the cluster once). The job,
    date and storage options are the partition's."""

    partition: Partition
    class_names: list[str]
    fmt: str
    model: str
    checkpoint_digest: str
    created_at: datetime
    faults: dict[str, Any] | None = None  # see pipeline/faults.py
    spec_hash: str = ""  # with checkpoint_digest: the provenance stamped into, and required of, every shard
    #: sample.filter resolved for this run: min_confidence, max_attempts, judge_url, judge_digest (None: off)
    filter: dict[str, Any] | None = None

    @property
    def job(self) -> str:
        return self.partition.job

    @property
    def date(self) -> str:
        return self.partition.date

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.partition.storage_options

    @property
    def provenance(self) -> Any:
        from pipeline.publish.provenance import Provenance

        return Provenance(self.spec_hash, self.checkpoint_digest)


@dataclass
class Drawn:
    """One shard's generated rows: the images, the seed each was drawn from (the plan's own, or
    with ``sample.filter`` the candidate that was kept) and the filter's counts (None: no filter)."""

    images: np.ndarray
    seeds: np.ndarray
    filter_stats: dict[str, Any] | None = None


def commit_shard(drawn: Drawn | np.ndarray, shard: Shard, ctx: ShardContext, encode_workers: int = 1) -> Any:
    """Encode (PNG or raw) and commit one shard; returns its ShardInfo."""
    from pipeline.publish.provenance import stamp_filter_stats
    from pipeline.publish.schema import build_table

    if not isinstance(drawn, Drawn):
        drawn = Drawn(drawn, shard.seeds)
    table = build_table(
        drawn.images, shard.labels, drawn.seeds, image_ids(ctx.job, ctx.date, shard), shard.index,
        class_names=ctx.class_names, fmt=ctx.fmt, model=ctx.model, checkpoint=ctx.checkpoint_digest,
        job=ctx.job, date=ctx.date, created_at=ctx.created_at, workers=encode_workers,
    )
    if drawn.filter_stats is not None:
        table = stamp_filter_stats(table, drawn.filter_stats)
    return ctx.partition.write_shard(shard.index, shard.num_shards, table, provenance=ctx.provenance)


def _encode_task(drawn: Drawn, shard: Shard, ctx: ShardContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    info = commit_shard(drawn, shard, ctx)
    return {"info": info, "skipped": False, "seconds": time.perf_counter() - t0}


class SamplerActor:
    """Holds one generator (EMA weights) in memory, on a GPU when it was given one."""

    def __init__(self, spec_json: dict[str, Any], ckpt_url: str, use_gpu: bool):
        import torch

        from pipeline.sample.generate import load_generator, pick_device

        self.spec = JobSpec.model_validate(spec_json)
        self.device = pick_device(use_gpu)
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        else:
            torch.backends.cudnn.benchmark = False  # same kernels every time: repeatable bytes
        self.fam, self.ckpt = load_generator(ckpt_url, self.spec, self.device)
        self._judge: Any = None

    def generate(self, shard: Shard, ctx: ShardContext) -> Drawn:
        from pipeline.sample.generate import generate_u8

        def draw(seeds: np.ndarray, labels: np.ndarray) -> np.ndarray:
            return generate_u8(self.fam, seeds, labels, batch_size=self.spec.sample.batch_size,
                               bf16=self.spec.train.bf16)

        if ctx.filter is None:
            drawn = Drawn(draw(shard.seeds, shard.labels), shard.seeds)
        else:
            from pipeline.sample.filter import filtered_generate, load_judge

            f = ctx.filter
            if self._judge is None:
                self._judge = load_judge(f["judge_url"], f["judge_digest"], self.spec.storage_options, self.device)
            images, seeds, stats = filtered_generate(draw, self._judge, shard.seeds, shard.labels,
                                                     min_confidence=f["min_confidence"],
                                                     max_attempts=f["max_attempts"])
            drawn = Drawn(images, seeds, stats.to_json())
        maybe_exit(ctx.faults, "sample_exit_on_shard", shard.index)
        return drawn

    def run_shard(self, shard: Shard, ctx: ShardContext) -> dict[str, Any]:
        """fused layout: generate, encode and commit in this process."""
        t0 = time.perf_counter()
        info = commit_shard(self.generate(shard, ctx), shard, ctx)
        return {"info": info, "skipped": False, "seconds": time.perf_counter() - t0}

    def digest(self) -> str:
        return self.ckpt.digest


def done_shards(plan: ShardPlan, ctx: ShardContext, threads: int = 16) -> dict[int, Any]:
    """Shards already committed (resume): :meth:`Partition.done_shards` for this plan and this
    run's provenance (anything else of the plan is removed, so it is regenerated)."""
    return ctx.partition.done_shards(plan.num_shards, lambda i: min(plan.shard_size, plan.total - i * plan.shard_size),
                                     ctx.provenance, threads)


def _shard_files_present(plan: ShardPlan, ctx: ShardContext) -> int:
    """How many shard files of this plan are listed (a listing, nothing read): at least
    ``num_shards`` minus this many shards are still to do, whatever the resume scan finds."""
    from pipeline.publish.layout import parse_shard_name

    return len({p[0] for p in map(parse_shard_name, ctx.partition.shard_names()) if p and p[1] == plan.num_shards})


def _warm_encode_worker() -> None:
    """Import what an encode task needs, in a worker that will run encode tasks next (the
    resume scan and the actors' start-up run meanwhile)."""
    import pipeline.publish.partition  # noqa: F401
    import pipeline.publish.provenance  # noqa: F401
    import pipeline.publish.schema  # noqa: F401


def sample_shards(
    run: RunPlan | JobSpec,
    plan: ShardPlan,
    ckpt_url: str,
    ctx: ShardContext,
    *,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    inflight_per_actor: int = 2,
    encode_slots: int | None = None,
) -> list[Any]:
    """Write every shard of ``plan`` (skipping complete ones); returns ShardInfos in shard order.

    ``run`` is the job's :class:`~pipeline.plan.RunPlan` (its ``sample`` resources and
    ``sample_mode`` say how many actors, on which devices, in which layout), or a bare spec, whose
    plan facts are then resolved here the same way (pipeline.plan), on the connected cluster.

    The actors that are certainly needed (one per shard file not even listed, up to the actor
    count) are created, and in the split layout the encode workers warmed, before the resume scan,
    so that their start-up overlaps it; the rest, if the scan finds more to do, after it."""
    from pipeline.plan import RunPlan, sample_mode, sample_resources

    if isinstance(run, RunPlan):
        spec, res, mode = run.spec, run.sample, run.sample_mode
    else:
        spec, res, mode = run, sample_resources(run, plan.num_shards), sample_mode(run)
    cluster = ray.cluster_resources()
    if res.count is None:  # a plan built before the cluster was known
        res = sample_resources(spec, plan.num_shards, cluster)
    use_gpu = res.uses_gpu
    actor_cls = ray.remote(SamplerActor).options(
        num_cpus=res.bundle.get("CPU", 1.0), num_gpus=res.bundle.get("GPU", 0.0), max_restarts=3, max_task_retries=3,
    )
    spec_json = spec.model_dump(mode="json")
    encode = ray.remote(_encode_task).options(num_cpus=1, max_retries=3)
    if encode_slots is None:
        encode_slots = max(2, 2 * int(cluster.get("CPU", 1)))

    actors: list[Any] = []
    try:
        sure = plan.num_shards - _shard_files_present(plan, ctx)  # to do whatever the scan finds
        actors += [actor_cls.remote(spec_json, ckpt_url, use_gpu) for _ in range(min(res.count or 1, sure))]
        if mode == "split" and sure > 0:
            free_cpus = int(cluster.get("CPU", 1) - len(actors) * res.bundle.get("CPU", 1.0))
            warm = ray.remote(_warm_encode_worker).options(num_cpus=1)
            for _ in range(max(1, min(free_cpus, sure))):
                warm.remote()  # fire and forget: the encode tasks queue behind them on the same workers

        results: dict[int, Any] = done_shards(plan, ctx)
        for i, info in sorted(results.items()):
            if on_shard:
                on_shard({"info": info, "skipped": True, "seconds": 0.0, "index": i})
        todo = [i for i in range(plan.num_shards) if i not in results][::-1]
        if not todo:
            return [results[i] for i in range(plan.num_shards)]
        n_actors = min(res.count or 1, len(todo))  # never fewer than created above (sure <= len(todo))
        actors += [actor_cls.remote(spec_json, ckpt_url, use_gpu) for _ in range(n_actors - len(actors))]
        ctx_ref = ray.put(ctx)

        gen_pending: dict[ray.ObjectRef, tuple[int, int]] = {}  # generate ref -> (shard, actor)
        out_pending: dict[ray.ObjectRef, int] = {}  # result ref -> shard
        load = [0] * n_actors
        while todo or gen_pending or out_pending:
            for a in range(n_actors):
                while todo and load[a] < inflight_per_actor and len(out_pending) < encode_slots:
                    i = todo.pop()
                    shard = plan.shard(i)  # O(shard): labels and seeds computed for it alone
                    load[a] += 1
                    if mode == "fused":
                        ref = actors[a].run_shard.remote(shard, ctx_ref)
                        gen_pending[ref] = (i, a)
                        out_pending[ref] = i
                    else:
                        gref = actors[a].generate.remote(shard, ctx_ref)
                        gen_pending[gref] = (i, a)
                        out_pending[encode.remote(gref, shard, ctx_ref)] = i
            ready, _ = ray.wait(list(set(gen_pending) | set(out_pending)), num_returns=1, fetch_local=False)
            for ref in ready:
                if ref in gen_pending:  # an actor finished generating (split) or the whole shard (fused)
                    _, a = gen_pending.pop(ref)
                    load[a] -= 1
                if ref in out_pending:
                    i = out_pending.pop(ref)
                    out = ray.get(ref)
                    results[i] = out["info"]
                    if on_shard:
                        on_shard(dict(out, index=i))
    finally:
        for actor in actors:
            ray.kill(actor)
    return [results[i] for i in range(plan.num_shards)]
