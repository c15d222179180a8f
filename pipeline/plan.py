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

from pipeline.spec import JobSpec

#: one sampling actor's bundle (generation); encode tasks take one CPU each
SAMPLE_ACTOR_GPU = {"CPU": 1.0, "GPU": 1.0}
SAMPLE_ACTOR_CPU = {"CPU": 1.0}


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


def train_resources(spec: JobSpec) -> Resources:
    t = spec.train
    b = {k: float(v) for k, v in t.resources_per_worker.items()}
    b["CPU"] = float(t.cpus_per_worker)
    if t.use_gpu:
        b["GPU"] = 1.0
    return Resources(t.num_workers, {k: v for k, v in b.items() if v > 0}, t.use_gpu)


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


def sample_resources(spec: JobSpec, num_shards: int,
                     cluster_resources: Mapping[str, float] | None = None) -> Resources:
    gpu = sample_uses_gpu(spec)
    n = default_num_actors(spec, cluster_resources)
    return Resources(None if n is None else min(n, max(1, num_shards)),
                     dict(SAMPLE_ACTOR_GPU if gpu else SAMPLE_ACTOR_CPU), gpu)


def eval_resources(spec: JobSpec, largest_node_cpus: float | None = None, cap: float = 4.0) -> Resources:
    """The quality evaluation runs after training, on the sampler's kind of device, with as many
    CPUs as the training workers held (free again by then), at most ``cap`` and at most the
    largest node's (so it can never pend), never fewer than one."""
    gpu = sample_uses_gpu(spec)
    want = spec.train.num_workers * spec.train.cpus_per_worker
    cpus = max(1.0, min(cap, want, largest_node_cpus if largest_node_cpus is not None else want))
    return Resources(1 if spec.gate.measure else 0, {"CPU": cpus, **({"GPU": 1.0} if gpu else {})}, gpu)


@dataclass(frozen=True)
class DataInfo:
    image_shape: tuple[int, int, int]
    class_names: list[str]
    key: str
    num_train: int | None  # None for a streamed dataset (not counted up front)
    num_test: int | None
    streaming: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def of(cls, data: Any, streaming: bool = False) -> DataInfo:
        """From an ``ImageDataset`` or a ``StreamingData``."""
        n_train = None if streaming else len(data.train_x)
        n_test = None if streaming else len(data.test_x)
        return cls(tuple(int(v) for v in data.image_shape), list(data.class_names), str(data.key), n_train, n_test,
                   streaming)


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
              cluster_resources: Mapping[str, float] | None = None,
              largest_node_cpus: float | None = None) -> RunPlan:
        from pipeline.publish.layout import partition_url
        from pipeline.publish.storage import join
        from pipeline.sample.plan import make_plan
        from pipeline.train.trainer import run_name

        shard_plan = make_plan(spec.sample, data.num_classes, spec.name, date)  # O(classes), not O(images)
        per_label = {int(k): int(v) for k, v in shard_plan.counts.items() if v}
        root = join(spec.storage, spec.name, "train")
        name = run_name(spec, date)
        g = spec.gate
        return cls(
            spec=spec, date=date, spec_hash=spec.spec_hash(), train_hash=spec.train_hash(), data=data,
            train=train_resources(spec),
            sample=sample_resources(spec, shard_plan.num_shards, cluster_resources),
            evaluate=eval_resources(spec, largest_node_cpus),
            sample_mode=sample_mode(spec), train_root=root, run_name=name, run_url=join(root, name),
            partition=partition_url(spec.sample.output, spec.name, date),
            cache_url=join(spec.storage, "_cache", "features"),
            shards=ShardSummary(shard_plan.num_shards, shard_plan.total, shard_plan.shard_size,
                                dict(sorted(per_label.items()))),
            eval=EvalPlan(g.measure, g.eval_images, [spec.train.seed + i for i in range(g.seeds)], g.probe,
                          g.distill_fraction, g.synthetic_ratio, g.uplift_metric),
        )

    def to_json(self) -> dict[str, Any]:
        """Everything but the spec's credentials, JSON-able (the spec through ``public_spec``)."""
        from pipeline.redaction import public_spec

        d = {k: v for k, v in asdict(self).items() if k != "spec"}
        d["spec"] = public_spec(self.spec)
        d["data"]["image_shape"] = list(self.data.image_shape)
        d["shards"]["per_label"] = {str(k): v for k, v in self.shards.per_label.items()}
        return d
