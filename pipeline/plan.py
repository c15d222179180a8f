"""RunPlan: a job spec and its logical date, resolved once into the facts every stage reads.

Parse once, then ``build()`` (torchtitan's habit): the data's shape and classes, each stage's
resource request (computed by the stage's own small config, as Ray's ``ScalingConfig`` computes
its bundle), whether each stage uses GPUs, the run and partition URLs, the shard plan and the
evaluation plan. The plan is typed and serialisable (``to_json``), so ``genpipe plan`` can print
it and a worker can be handed it; deriving one of these facts anywhere else is a bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.data.source import DataInfo
from pipeline.spec import JobSpec

__all__ = ["DataInfo", "EvalPlan", "Resources", "RunPlan", "ShardSummary", "eval_resources", "predict",
           "run_name", "sample_actor_bundle", "sample_mode", "sample_resources", "sample_uses_gpu",
           "train_resources"]

#: one sampling actor's bundle (generation); encode tasks take one CPU each
SAMPLE_ACTOR_GPU = {"CPU": 1.0, "GPU": 1.0}  # fused: the actor also encodes and writes
#: split layout on GPUs: the actor only launches kernels and hands pixels to the object store; the
#: encode tasks do the CPU work, so it reserves no CPU and every core's slot can encode
SAMPLE_ACTOR_GPU_SPLIT = {"CPU": 0.0, "GPU": 1.0}
SAMPLE_ACTOR_CPU = {"CPU": 1.0}  # generating on the CPU takes a core, either layout
#: one encode task of the split layout
SAMPLE_ENCODE_TASK = {"CPU": 1.0}


@dataclass(frozen=True)
class Resources:
    """One stage's request: ``count`` bundles at once (workers, actors, tasks); ``count`` is None
    while it depends on a cluster not seen yet (sampling's default actor count)."""

    count: int | None
    bundle: dict[str, float]
    uses_gpu: bool

    def total(self) -> dict[str, float]:
        n = self.count or 1
        return {k: v * n for k, v in self.bundle.items()}


def run_name(spec: JobSpec, date: str, attempt: int = 0) -> str:
    """``<date>-<hash of the training config and the model family's version>[-retryN]``."""
    import hashlib

    from pipeline.models.base import family

    h = hashlib.sha256(f"{spec.train_hash()}:{family(spec.model.kind).version}".encode()).hexdigest()
    suffix = f"-retry{attempt}" if attempt else ""
    return f"{date}-{h[:10]}{suffix}"


def train_resources(spec: JobSpec) -> Resources:
    """One bundle per Ray Train worker: ``CPU`` always present (an explicit 0 too: left out, Ray
    Train would reserve one), one GPU per worker when training on GPUs, custom resources as given."""
    t = spec.train
    b = {k: float(v) for k, v in t.resources_per_worker.items() if float(v) > 0}
    b["CPU"] = float(t.cpus_per_worker)
    if t.use_gpu:
        b["GPU"] = 1.0
    return Resources(t.num_workers, b, t.use_gpu)


def sample_uses_gpu(spec: JobSpec) -> bool:
    return spec.train.use_gpu if spec.sample.use_gpu is None else spec.sample.use_gpu


def sample_mode(spec: JobSpec) -> str:
    """``fused`` (actors generate, encode, write) or ``split`` (GPU actors generate, CPU tasks encode)."""
    if spec.sample.mode != "auto":
        return spec.sample.mode
    return "split" if sample_uses_gpu(spec) else "fused"


def default_num_actors(spec: JobSpec, cluster_resources: Mapping[str, float] | None) -> int | None:
    """``sample.num_actors``, else one per GPU (GPU sampling) or min(2, CPUs); None without a cluster."""
    if spec.sample.num_actors:
        return spec.sample.num_actors
    if cluster_resources is None:
        return None
    if sample_uses_gpu(spec):
        return max(1, int(cluster_resources.get("GPU", 1)))
    return max(1, min(2, int(cluster_resources.get("CPU", 1))))


def sample_actor_bundle(spec: JobSpec) -> dict[str, float]:
    """One sampling actor's bundle. ``CPU`` is always present (an explicit 0 too: left out, the
    actor would get Ray's default of one CPU to schedule it)."""
    if not sample_uses_gpu(spec):
        return dict(SAMPLE_ACTOR_CPU)
    return dict(SAMPLE_ACTOR_GPU_SPLIT if sample_mode(spec) == "split" else SAMPLE_ACTOR_GPU)


def sample_resources(spec: JobSpec, num_shards: int,
                     cluster_resources: Mapping[str, float] | None = None) -> Resources:
    gpu = sample_uses_gpu(spec)
    n = default_num_actors(spec, cluster_resources)
    return Resources(None if n is None else min(n, max(1, num_shards)), sample_actor_bundle(spec), gpu)


def eval_resources(spec: JobSpec) -> Resources:
    """The quality evaluation: one task on the sampler's kind of device, one CPU. Its probes run one
    intra-op thread: measured on the 2-core machine, two threads made the batched probes ~10x
    slower whenever anything else ran (OpenMP threads spinning against other processes), for at
    most ~1.4x on an idle machine."""
    gpu = sample_uses_gpu(spec)
    return Resources(1 if spec.gate.measure else 0, {"CPU": 1.0, **({"GPU": 1.0} if gpu else {})}, gpu)


@dataclass(frozen=True)
class ShardSummary:
    num_shards: int
    rows: int
    shard_size: int
    per_label: dict[int, int]


@dataclass(frozen=True)
class EvalPlan:
    measure: bool
    images: int
    seeds: list[int]
    probe: str
    distill_fraction: float
    synthetic_ratio: float | None
    uplift_metric: str


@dataclass(frozen=True)
class RunPlan:
    spec: JobSpec
    date: str
    spec_hash: str
    train_hash: str
    data: DataInfo
    train: Resources
    sample: Resources
    evaluate: Resources
    sample_mode: str
    train_root: str  # <storage>/<job>/train: Ray Train's storage_path
    run_name: str
    run_url: str
    partition: str
    cache_url: str
    shards: ShardSummary
    eval: EvalPlan
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, spec: JobSpec, date: str, data: DataInfo, *,
              cluster_resources: Mapping[str, float] | None = None) -> RunPlan:
        from pipeline.publish.layout import partition_url
        from pipeline.publish.storage import join
        from pipeline.sample.plan import make_plan

        shard_plan = make_plan(spec.sample, data.num_classes, spec.name, date)  # O(classes), not O(images)
        per_label = {int(k): int(v) for k, v in shard_plan.counts.items() if v}
        root = join(spec.storage, spec.name, "train")
        name = run_name(spec, date)
        g = spec.gate
        return cls(
            spec=spec, date=date, spec_hash=spec.spec_hash(), train_hash=spec.train_hash(), data=data,
            train=train_resources(spec),
            sample=sample_resources(spec, shard_plan.num_shards, cluster_resources),
            evaluate=eval_resources(spec),
            sample_mode=sample_mode(spec), train_root=root, run_name=name, run_url=join(root, name),
            partition=partition_url(spec.sample.output, spec.name, date),
            cache_url=join(spec.storage, "_cache", "features"),
            shards=ShardSummary(shard_plan.num_shards, shard_plan.total, shard_plan.shard_size,
                                dict(sorted(per_label.items()))),
            eval=EvalPlan(g.measure, g.eval_images, [spec.train.seed + i for i in range(g.seeds)], g.probe,
                          g.distill_fraction, g.synthetic_ratio, g.uplift_metric),
        )

    def on_cluster(self, cluster_resources: Mapping[str, float]) -> RunPlan:
        """This plan on a connected cluster: the sampling actor count resolved (``sample.num_actors``,
        else one per GPU or min(2, CPUs), never more than there are shards)."""
        from dataclasses import replace

        return replace(self, sample=sample_resources(self.spec, self.shards.num_shards, cluster_resources))

    def to_json(self) -> dict[str, Any]:
        """Everything but the spec's credentials, JSON-able (the spec through ``public_spec``)."""
        from pipeline.redaction import public_spec

        d = {k: v for k, v in asdict(self).items() if k != "spec"}
        d["spec"] = public_spec(self.spec)
        d["data"]["image_shape"] = list(self.data.image_shape)
        d["shards"]["per_label"] = {str(k): v for k, v in self.shards.per_label.items()}
        return d


def predict(plan: RunPlan) -> dict[str, Any]:
    """What ``genpipe run`` would do now, read from storage without changing anything:
    ``partition`` (unpublished / already-published / published-by-another-spec), ``train``
    (reuse / resume / scratch, with the checkpoint) and ``shards_reusable`` (complete shards of
    this spec and checkpoint that a run would skip)."""
    import json

    from pipeline.publish.partition import Expected, Partition
    from pipeline.publish.storage import join, url_to_fs

    so = plan.spec.storage_options
    out: dict[str, Any] = {}
    part = Partition.of(plan.spec.sample.output, plan.spec.name, plan.date, so)
    # the run's own test (pipeline.runner): manifest, files, footers and checksums all verified
    check = part.check(Expected(plan.shards.rows, plan.shards.shard_size))
    if not check.present:
        out["partition"] = "unpublished"
    elif check.spec_hash is None:
        out["partition"] = "unreadable-manifest"
        out["action"] = f"refused unless --overwrite ({check.problem})"
        return out
    elif check.spec_hash != plan.spec_hash:
        out["partition"] = "published-by-another-spec"
        out["action"] = "refused unless --overwrite (a different spec published this date)"
    elif check.problem is None:
        out["partition"] = "already-published"
        out["action"] = f"nothing to do: {plan.partition} holds {check.manifest.num_rows} rows of this spec"
        return out
    else:
        out["partition"] = "damaged"
        out["problem"] = check.problem
    fs, run_path = url_to_fs(plan.run_url, so)
    done_path = join(run_path, "done.json")
    digest = None
    if fs.exists(done_path):
        done = json.loads(fs.cat_file(done_path))
        digest = done.get("digest")
        out["train"] = {"action": "reuse", "checkpoint": done.get("checkpoint"), "epoch": done.get("epoch")}
    else:
        epochs = sorted(p.rsplit("/", 1)[-1] for p in (fs.ls(run_path, detail=False) if fs.exists(run_path) else [])
                        if p.rsplit("/", 1)[-1].startswith("epoch-"))
        out["train"] = ({"action": "resume", "checkpoint": join(plan.run_url, epochs[-1]),
                         "epoch": int(epochs[-1].split("-")[1])} if epochs else {"action": "scratch"})
    out["shards_reusable"] = _reusable_shards(plan, digest) if digest else 0
    out.setdefault("action", {"reuse": "sample and publish with the finished run's checkpoint",
                              "resume": "resume training from the last checkpoint, then evaluate, sample, publish",
                              "scratch": "train from scratch, then evaluate, sample, publish"}[out["train"]["action"]])
    return out


def _reusable_shards(plan: RunPlan, checkpoint_digest: str) -> int:
    from pipeline.publish.commit import list_shards, parse_shard_name, verify_shard
    from pipeline.publish.provenance import Provenance

    prov = Provenance(plan.spec_hash, checkpoint_digest)
    n, size, total = plan.shards.num_shards, plan.shards.shard_size, plan.shards.rows
    count = 0
    for name in list_shards(plan.partition, plan.spec.storage_options):
        parsed = parse_shard_name(name)
        if parsed and parsed[1] == n:
            rows = min(size, total - parsed[0] * size)
            count += verify_shard(plan.partition, parsed[0], n, rows, plan.spec.storage_options,
                                  provenance=prov) is not None
    return count
