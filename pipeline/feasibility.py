"""Can this cluster ever run this job? Checked before running or submitting, so a job
fails fast with one line naming what is missing instead of pending forever.

``check_feasible`` is a pure function over what Ray reports (``ray.cluster_resources()``,
``ray.nodes()``, or the state API's node list over HTTP), so it is unit tested without
Ray. ``cluster_snapshot`` reads those numbers from a connected Ray.

What "ever" means:

* Static cluster (``ray start`` by hand, ``ray.init()``, a fixed KubeRay group): only the
  alive nodes count.
* Autoscaling cluster (``ray up cluster.yaml``, KubeRay with autoscaling): the node types
  the autoscaler may launch count too, up to their ``max_count``. Inside the cluster that
  configuration is read from the GCS, the same source Ray Train uses for its own check
  (``ray._private.state.state.get_max_resources_from_cluster_config``). Over HTTP (the
  submitting laptop) it is not available: ``submit`` then only warns, and the job re-checks
  inside the cluster where it is.

Resource shapes assumed for the job's stages (keep in step with the runner):

* one training worker = ``train.resources_per_worker`` with ``CPU: train.cpus_per_worker``
  and, when ``train.use_gpu``, ``GPU: 1`` (as ``pipeline/train/trainer.py`` builds the
  ``ScalingConfig``); all ``train.num_workers`` of them at once (one placement group).
  Train V2's controller actor takes 0 CPU.
* one sampling actor = ``pipeline.plan.sample_actor_bundle``: ``{GPU: 1}`` when sampling on
  GPU in the split layout (the encode tasks do the CPU work), ``{CPU: 1, GPU: 1}`` on GPU in the
  fused layout, else ``{CPU: 1}`` (``pipeline/sample/fanout.py``); all actors at once:
  ``sample.num_actors`` (capped by the number of shards), by default one per GPU, else
  ``min(2, CPUs)``. In the split layout one encode task (``{CPU: 1}``) must fit beside them.
  The quality-gate task is ``{CPU: 1, GPU: 1}`` on GPU, else ``{CPU: 1}``.
* the stages run one after another, so their needs are not added up; the job driver's
  own reservation (``driver_cpus``, the Jobs API ``entrypoint_num_cpus``) is held
  throughout and is added to each.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError
from pipeline.plan import SAMPLE_ENCODE_TASK, sample_actor_bundle, sample_mode, train_resources
from pipeline.spec import JobSpec

NODE_LOCAL_SCHEMES = ("file", "local", "memory")
_EPS = 1e-9


class FeasibilityError(GenpipeError, ValueError):
    """The cluster can never run the job. ``problems`` holds one line per problem (exit code 2)."""

    exit_code = EXIT_BAD_INPUT
    name_in_message = True

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ClusterSnapshot:
    """What a cluster can offer: its alive nodes and, when it autoscales, the node types
    it may add. ``nodes`` and ``node_types`` entries are plain dicts:
    ``{"node_id", "resources", "is_head"}`` and ``{"name", "resources", "max_count"}``
    (``max_count`` -1 = unbounded)."""

    resources: dict[str, float]
    nodes: list[dict[str, Any]]
    node_types: list[dict[str, Any]] = field(default_factory=list)
    autoscaling: bool = False

    def __iter__(self):  # ``resources, nodes = cluster_snapshot()`` (drops node_types: prefer check_snapshot)
        return iter((self.resources, self.nodes))


# ---------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _fmt(res: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_num(v)}" for k, v in sorted(res.items())) + "}"


def _plural(n: float, word: str) -> str:
    return f"{_num(n)} {word}" + ("" if n == 1 else "s")


def _amount(n: float, resource: str) -> str:
    """``4 GPUs``, ``1 CPU``, ``2 accelerator_type:A10G`` (custom names are not pluralized)."""
    return _plural(n, resource) if resource in ("CPU", "GPU") else f"{_num(n)} {resource}"


def normalize_node(n: Mapping[str, Any]) -> dict[str, Any] | None:
    """One node in a common shape, from ``ray.nodes()`` ("Alive", "Resources"), the state
    API ("state", "resources_total") or our own shape; ``None`` for a dead node."""
    if "Alive" in n:
        alive = bool(n["Alive"])
    elif "state" in n:
        alive = str(n["state"]).upper() == "ALIVE"
    else:
        alive = bool(n.get("alive", True))
    if not alive:
        return None
    res = n.get("Resources", n.get("resources_total", n.get("resources", {}))) or {}
    return {
        "node_id": n.get("NodeID", n.get("node_id", "")),
        "resources": {str(k): float(v) for k, v in res.items()},
        "is_head": bool(n.get("is_head_node", n.get("is_head", False))) or "node:__internal_head__" in res,
    }


def _capacity(offer: Mapping[str, float], bundle: Mapping[str, float]) -> float:
    """How many copies of ``bundle`` fit in ``offer`` (identical bundles pack exactly)."""
    fits = math.inf
    for k, need in bundle.items():
        if need > 0:
            fits = min(fits, math.floor((offer.get(k, 0.0) + _EPS) / need))
    return fits


def _with_driver(offer: Mapping[str, float], driver_cpus: float) -> dict[str, float]:
    out = dict(offer)
    out["CPU"] = max(0.0, out.get("CPU", 0.0) - driver_cpus)
    return out


def is_node_local(url: str | None) -> bool:
    """A plain path or file:// / local:// / memory:// URL: seen by one node only."""
    if not url:
        return False
    if "://" not in url:
        return True
    return url.split("://", 1)[0].lower() in NODE_LOCAL_SCHEMES


def train_bundle(spec: JobSpec) -> dict[str, float]:
    return {k: v for k, v in train_resources(spec).bundle.items() if v > 0}


# ---------------------------------------------------------------------------- the check


def check_feasible(
    spec: JobSpec,
    cluster_resources: Mapping[str, float],
    nodes: Iterable[Mapping[str, Any]],
    *,
    node_types: Iterable[Mapping[str, Any]] | None = None,
    driver_cpus: float = 0.0,
) -> list[str]:
    """Problems that stop ``spec`` from ever running on this cluster; empty = OK.

    ``cluster_resources``: totals as ``ray.cluster_resources()`` reports them (used for
    the totals in messages, and alone when no per-node list is given).
    ``nodes``: ``ray.nodes()`` / state API node dicts (dead nodes are skipped).
    ``node_types``: node types an autoscaler may launch (``resources``, ``max_count``).
    ``driver_cpus``: CPUs the job's driver holds for its whole life.
    """
    alive = [m for m in (normalize_node(n) for n in nodes) if m is not None]
    types = [
        {
            "name": t.get("name", "?"),
            "resources": dict(t.get("resources", {})),
            "max_count": int(t.get("max_count", 0)),
        }
        for t in (node_types or [])
        if int(t.get("max_count", 0)) != 0
    ]
    offers = [m["resources"] for m in alive] or ([dict(cluster_resources)] if cluster_resources else [])

    def total(key: str) -> float:
        s = sum(o.get(key, 0.0) for o in offers)
        for t in types:
            per = float(t["resources"].get(key, 0.0))
            if per > 0:
                if t["max_count"] < 0:
                    return math.inf
                s += per * t["max_count"]
        return s

    def capacity(bundle: Mapping[str, float]) -> float:
        # the driver's CPUs come off one node: the one where that costs the least
        caps = [_capacity(o, bundle) for o in offers]
        if driver_cpus > 0 and caps:
            losses = [
                c - _capacity(_with_driver(o, driver_cpus), bundle) for o, c in zip(offers, caps, strict=True)
            ]
            fit = [i for i, o in enumerate(offers) if o.get("CPU", 0.0) + _EPS >= driver_cpus]
            if not fit:
                return -1  # the driver itself never fits
            i = min(fit, key=lambda j: losses[j])
            caps[i] -= losses[i]
        cap = float(sum(caps))
        for t in types:
            c = _capacity(t["resources"], bundle)
            if c > 0:
                cap = math.inf if t["max_count"] < 0 else cap + c * t["max_count"]
        return cap

    def largest(bundle: Mapping[str, float]) -> str:
        pool = offers + [t["resources"] for t in types]
        if not pool:
            return "the cluster reports no nodes"
        best = max(pool, key=lambda o: tuple(o.get(k, 0.0) for k in sorted(bundle)))
        return "the largest node offers " + _fmt({k: best.get(k, 0.0) for k in sorted(bundle)})

    problems: list[str] = []
    if driver_cpus > 0 and capacity({"CPU": driver_cpus}) < 1:
        problems.append(
            f"the job driver needs {_amount(driver_cpus, 'CPU')} on one node; "
            f"the cluster has {_amount(total('CPU'), 'CPU')}"
        )
        return problems

    def need(stage: str, what: str, n: int, bundle: dict[str, float], counted: str | None = None) -> None:
        if not bundle or n <= 0:
            return
        short = []
        for k, v in sorted(bundle.items()):
            have = total(k)
            want = v * n + (driver_cpus if k == "CPU" else 0.0)
            if want > have + _EPS:
                each = f"{counted or _plural(n, what)} x {_amount(v, k)}"
                each += f" + {_num(driver_cpus)} for the driver" if k == "CPU" and driver_cpus else ""
                short.append(f"{_amount(want, k)} ({each}; the cluster has {_num(have)})")
        if short:
            problems.append(f"{stage} needs " + " and ".join(short))
            return
        cap = capacity(bundle)
        if cap < n:
            if cap <= 0:
                problems.append(
                    f"{stage}: no node can host one {what} needing {_fmt(bundle)}; {largest(bundle)}"
                )
            else:
                problems.append(
                    f"{stage}: {n} {what}s needing {_fmt(bundle)} each don't fit on the nodes "
                    f"(room for {_num(cap)}); {largest(bundle)}"
                )

    # training: all workers at once
    need("train", "worker", spec.train.num_workers, train_bundle(spec))

    # sampling: all actors at once (default count: one per GPU, or min(2, CPUs), so at least one)
    # and, in the split layout, room beside them for an encode task
    shards = math.ceil(spec.sample.total / spec.sample.shard_size)
    n = min(spec.sample.num_actors or 1, shards)
    actor = {k: v for k, v in sample_actor_bundle(spec).items() if v > 0}
    if sample_mode(spec) != "split":
        need("sample", "actor", n, actor)
    elif actor == SAMPLE_ENCODE_TASK:  # CPU actors: the encode tasks queue for the same CPUs
        need("sample", "actor", n + 1, actor, counted=f"{_plural(n, 'actor')} + 1 encode task")
    else:
        before = len(problems)
        need("sample", "actor", n, actor)
        if len(problems) == before:
            need("sample", "encode task", 1, dict(SAMPLE_ENCODE_TASK))

    # node-local paths on a cluster of more than one node
    n_nodes: float = len(alive) + sum(math.inf if t["max_count"] < 0 else t["max_count"] for t in types)
    if n_nodes > 1:
        problems.extend(local_path_problems(spec, n_nodes))
    return problems


def local_path_problems(spec: JobSpec, n_nodes: float) -> list[str]:
    """Node-local paths that other nodes can't see (Ray Train itself needs shared storage)."""
    where = "can grow to more than one node" if math.isinf(n_nodes) else f"has {_num(n_nodes)} nodes"
    out = []
    paths = [("storage", spec.storage), ("sample.output", spec.sample.output)]
    if spec.dataset.path:
        paths.append(("dataset.path", spec.dataset.path))
    for name, url in paths:
        if not is_node_local(url):
            continue
        if url.lower().startswith("memory://"):
            out.append(
                f"{name} {url!r} lives in one process's memory; the cluster {where}: use shared storage"
            )
        elif not spec.shared_storage:
            out.append(
                f"{name} {url!r} is a local path but the cluster {where}: workers on other nodes "
                "can't see it. Use an object-store URL (s3://, gs://) or, if every node mounts it "
                "at the same place (NFS), set shared_storage: true"
            )
    return out


def streaming_problems(spec: JobSpec, snap: ClusterSnapshot) -> list[str]:
    """A static cluster must keep a CPU free of the training workers for Ray Data's read tasks."""
    if not spec.dataset.streaming or snap.autoscaling:
        return []
    total = float(snap.resources.get("CPU", 0))
    used = spec.train.num_workers * spec.train.cpus_per_worker
    if used < total:
        return []
    return [f"dataset.streaming reads through Ray Data tasks, which need a CPU beyond the {used:g} the training "
            f"workers take (the cluster has {total:g}): lower train.num_workers or train.cpus_per_worker"]


def check_snapshot(spec: JobSpec, snap: ClusterSnapshot, *, driver_cpus: float = 0.0) -> list[str]:
    """Every reason the cluster in ``snap`` can never run ``spec`` (the check `run`, `plan` and
    `submit` all apply)."""
    return check_feasible(
        spec, snap.resources, snap.nodes, node_types=snap.node_types, driver_cpus=driver_cpus
    ) + streaming_problems(spec, snap)


def ensure_feasible(spec: JobSpec, snap: ClusterSnapshot | None = None, *, driver_cpus: float = 0.0) -> None:
    """Raise FeasibilityError when the (connected, or given) cluster can never run ``spec``."""
    problems = check_snapshot(spec, snap or cluster_snapshot(), driver_cpus=driver_cpus)
    if problems:
        raise FeasibilityError(problems)


# ---------------------------------------------------------------------------- reading a cluster


def cluster_snapshot() -> ClusterSnapshot:
    """Resources, alive nodes and autoscaler node types of the connected Ray cluster
    (``ray.init`` already done)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("cluster_snapshot() needs a connected Ray (call ray.init first)")
    nodes = [m for m in (normalize_node(n) for n in ray.nodes()) if m is not None]
    types = autoscaler_node_types()
    return ClusterSnapshot(
        resources={k: float(v) for k, v in ray.cluster_resources().items()},
        nodes=nodes,
        node_types=types,
        autoscaling=bool(types),
    )


def autoscaler_node_types() -> list[dict[str, Any]]:
    """Node types an autoscaler may launch, from the cluster config the autoscaler stores
    in the GCS (what Ray Train's own insufficient-resources check reads). Empty on a static
    cluster. Only node types with room to grow (``max_count`` above what is running, or
    unbounded) matter; to stay simple and safe this returns every type with
    ``max_count != 0`` and lets the caller add them on top of the alive nodes (an
    over-estimate, never a false refusal)."""
    try:
        from ray._private.state import state

        cfg = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - private API: absent or changed means "unknown"
        return []
    if cfg is None:
        return []
    out = []
    for g in cfg.node_group_configs:
        max_count = int(g.max_count)
        if max_count == 0:
            continue
        out.append(
            {
                "name": g.name,
                "resources": {k: float(v) for k, v in g.resources.items()},
                "max_count": -1 if max_count < 0 or max_count >= sys.maxsize else max_count,
            }
        )
    return out
