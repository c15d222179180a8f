"""Can the cluster ever run the job? Pure cases over what Ray reports, then a real
two-node cluster (ray.cluster_utils.Cluster) checked through cluster_snapshot()."""

from __future__ import annotations

import pytest

from pipeline.feasibility import (
    ClusterSnapshot,
    FeasibilityError,
    check_feasible,
    check_snapshot,
    cluster_snapshot,
    ensure_feasible,
    is_node_local,
)
from pipeline.spec import parse_spec


def spec(**over):
    base = {
        "name": "f",
        "storage": "s3://bucket/runs",
        "sample": {"output": "s3://bucket/datasets", "num_images": 1000, "shard_size": 100},
    }
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_spec(base)


def node(cpu=0.0, gpu=0.0, alive=True, **extra):
    res = {"CPU": cpu, "memory": 8e9, "object_store_memory": 2e9, **extra}
    if gpu:
        res["GPU"] = gpu
    return {"NodeID": "n", "Alive": alive, "Resources": res}


def totals(nodes):
    out = {}
    for n in nodes:
        if n["Alive"]:
            for k, v in n["Resources"].items():
                out[k] = out.get(k, 0) + v
    return out


def check(s, nodes, **kw):
    return check_feasible(s, totals(nodes), nodes, **kw)


# ---------------------------------------------------------------------------- resources


def test_default_cpu_job_fits_a_laptop():
    assert check(spec(), [node(cpu=2)]) == []


def test_gpus_missing_are_named_with_counts():
    s = spec(train={"use_gpu": True, "num_workers": 4})
    problems = check(s, [node(cpu=16)])
    assert problems[0] == "train needs 4 GPUs (4 workers x 1 GPU; the cluster has 0)"
    assert any(p.startswith("sample needs 1 GPU") for p in problems)


def test_enough_gpus_in_total_but_spread_over_nodes():
    s = spec(train={"use_gpu": True, "num_workers": 2})
    assert check(s, [node(cpu=4, gpu=1), node(cpu=4, gpu=1)]) == []
    assert check(s, [node(cpu=4, gpu=1)]) == ["train needs 2 GPUs (2 workers x 1 GPU; the cluster has 1)"]


def test_no_single_node_can_host_one_worker():
    s = spec(train={"num_workers": 1, "cpus_per_worker": 6})
    (p,) = check(s, [node(cpu=4), node(cpu=4)])
    assert p == "train: no node can host one worker needing {CPU: 6}; the largest node offers {CPU: 4}"


def test_workers_that_fit_in_total_but_not_packed():
    s = spec(train={"num_workers": 3, "cpus_per_worker": 2})
    (p,) = check(s, [node(cpu=3), node(cpu=3)])
    assert "3 workers needing {CPU: 2} each don't fit on the nodes (room for 2)" in p


def test_custom_resource_per_worker():
    s = spec(train={"num_workers": 2, "resources_per_worker": {"accelerator_type:A10G": 1}})
    (p,) = check(s, [node(cpu=8)])
    assert p == "train needs 2 accelerator_type:A10G (2 workers x 1 accelerator_type:A10G; the cluster has 0)"
    assert check(s, [node(cpu=8, **{"accelerator_type:A10G": 2})]) == []


def test_dead_nodes_do_not_count():
    s = spec(train={"use_gpu": True, "num_workers": 1})
    assert check(s, [node(cpu=4), node(cpu=4, gpu=8, alive=False)])[0].startswith("train needs 1 GPU ")


def test_state_api_node_format():
    s = spec(train={"use_gpu": True, "num_workers": 2})
    nodes = [
        {"node_id": "a", "state": "ALIVE", "is_head_node": True, "resources_total": {"CPU": 2}},
        {"node_id": "b", "state": "ALIVE", "resources_total": {"CPU": 8, "GPU": 2}},
        {"node_id": "c", "state": "DEAD", "resources_total": {"CPU": 8, "GPU": 2}},
    ]
    assert check_feasible(s, {"CPU": 10, "GPU": 2}, nodes) == []
    s4 = spec(train={"use_gpu": True, "num_workers": 4})
    assert check_feasible(s4, {"CPU": 10, "GPU": 2}, nodes)[0].startswith("train needs 4 GPUs")


def test_sampling_actors():
    gpu = {"use_gpu": True, "num_workers": 1}
    s = spec(train=gpu, sample={"num_actors": 3})
    (p,) = check(s, [node(cpu=8, gpu=2)])
    assert p == "sample needs 3 GPUs (3 actors x 1 GPU; the cluster has 2)"
    # never more actors than shards: 1000 images / 500 per shard = 2 actors
    assert check(spec(train=gpu, sample={"num_actors": 3, "shard_size": 500}), [node(cpu=8, gpu=2)]) == []
    # sampling on CPU after training on GPU
    assert check(spec(train=gpu, sample={"use_gpu": False, "num_actors": 3}), [node(cpu=8, gpu=1)]) == []
    # CPU-only cluster, too many CPU actors for its CPUs
    (p,) = check(spec(sample={"num_actors": 4}), [node(cpu=2)])
    assert p == "sample needs 4 CPUs (4 actors x 1 CPU; the cluster has 2)"


def test_split_layout_gpu_actors_take_no_cpu_but_an_encode_task_must_fit():
    gpu = {"use_gpu": True, "num_workers": 1}
    # auto on GPUs is split: two GPU actors and the encode tasks share one CPU
    assert check(spec(train=gpu, sample={"num_actors": 2}), [node(cpu=1, gpu=2)]) == []
    # fused: each actor encodes too, so each holds a CPU
    (p,) = check(spec(train=gpu, sample={"num_actors": 2, "mode": "fused"}), [node(cpu=1, gpu=2)])
    assert p == "sample needs 2 CPUs (2 actors x 1 CPU; the cluster has 1)"
    # GPUs but no CPU at all: nowhere to encode (training reports its own shortfall first)
    problems = check(spec(train={"use_gpu": True, "num_workers": 1, "cpus_per_worker": 0},
                          sample={"num_actors": 1}), [node(cpu=0, gpu=1)])
    assert problems == ["sample needs 1 CPU (1 encode task x 1 CPU; the cluster has 0)"]
    # split on CPUs: the actors hold CPUs, an encode task needs one more beside them
    (p,) = check(spec(sample={"num_actors": 2, "mode": "split"}), [node(cpu=2)])
    assert p == "sample needs 3 CPUs (2 actors + 1 encode task x 1 CPU; the cluster has 2)"
    assert check(spec(sample={"num_actors": 1, "mode": "split"}), [node(cpu=2)]) == []


def test_driver_cpus_are_held_the_whole_job():
    s = spec(train={"num_workers": 2})
    assert check(s, [node(cpu=2)]) == []
    (p,) = check(s, [node(cpu=2)], driver_cpus=0.5)
    assert p == "train needs 2.5 CPUs (2 workers x 1 CPU + 0.5 for the driver; the cluster has 2)"
    assert check(s, [node(cpu=3)], driver_cpus=0.5) == []


def test_autoscaler_node_types_count():
    s = spec(train={"use_gpu": True, "num_workers": 4, "cpus_per_worker": 3})
    head = [node(cpu=0)]
    gpu_type = {"name": "gpu", "resources": {"CPU": 4, "GPU": 1}, "max_count": 4}
    assert check(s, head) != []
    assert check(s, head, node_types=[gpu_type]) == []
    (p,) = check(s, head, node_types=[dict(gpu_type, max_count=2)])
    assert p == (
        "train needs 12 CPUs (4 workers x 3 CPUs; the cluster has 8) and 4 GPUs (4 workers x 1 GPU; the cluster has 2)"
    )
    assert check(s, head, node_types=[dict(gpu_type, max_count=-1)]) == []
    small = {"name": "small-gpu", "resources": {"CPU": 2, "GPU": 1}, "max_count": 10}
    assert "no node can host one worker" in check(s, head, node_types=[small])[0]


def test_nothing_reported():
    assert check_feasible(spec(), {}, [])[0] == "train needs 2 CPUs (2 workers x 1 CPU; the cluster has 0)"


# ---------------------------------------------------------------------------- local paths


@pytest.mark.parametrize(
    "url, local",
    [
        ("outputs/x", True),
        ("/mnt/nfs/x", True),
        ("file:///data/x", True),
        ("memory://x", True),
        ("s3://b/x", False),
        ("gs://b/x", False),
        ("", False),
    ],
)
def test_is_node_local(url, local):
    assert is_node_local(url) is local


def test_local_paths_refused_on_more_than_one_node():
    s = spec(storage="/data/runs", sample={"output": "file:///data/datasets"})
    two = [node(cpu=2), node(cpu=2)]
    problems = check(s, two)
    assert len(problems) == 2
    assert problems[0].startswith("storage '/data/runs' is a local path but the cluster has 2 nodes")
    assert "shared_storage: true" in problems[0]
    assert problems[1].startswith("sample.output 'file:///data/datasets' is a local path")
    assert check(s, [node(cpu=2)]) == []  # one node: local is fine
    assert check(spec(storage="/data/runs", shared_storage=True), two) == []  # NFS on every node
    assert check(spec(), two) == []  # object storage


def test_local_dataset_path_and_memory_urls():
    s = spec(dataset={"source": "image_folder", "path": "/data/images"})
    (p,) = check(s, [node(cpu=2), node(cpu=2)])
    assert p.startswith("dataset.path '/data/images' is a local path")
    s = spec(storage="memory://runs", shared_storage=True)
    (p,) = check(s, [node(cpu=2), node(cpu=2)])
    assert "lives in one process's memory" in p


def test_local_paths_refused_when_the_autoscaler_can_add_nodes():
    s = spec(storage="/data/runs")
    gpu_type = {"name": "gpu", "resources": {"CPU": 4, "GPU": 1}, "max_count": 2}
    (p,) = check(s, [node(cpu=2)], node_types=[gpu_type])
    assert "the cluster has 3 nodes" in p
    (p,) = check(s, [node(cpu=2)], node_types=[dict(gpu_type, max_count=-1)])
    assert "can grow to more than one node" in p


def test_snapshot_helpers():
    snap = ClusterSnapshot(resources={"CPU": 2.0}, nodes=[{"resources": {"CPU": 2.0}}])
    resources, nodes = snap  # the (resources, nodes) shape some callers unpack
    assert resources == {"CPU": 2.0} and len(nodes) == 1
    assert check_snapshot(spec(), snap) == []
    with pytest.raises(FeasibilityError) as ei:
        ensure_feasible(spec(train={"use_gpu": True}), snap)
    assert ei.value.problems[0].startswith("train needs 2 GPUs")


# ---------------------------------------------------------------------------- a real two-node cluster


@pytest.fixture(scope="module")
def two_nodes():
    """Head + one added node, each with 1 CPU. ``Cluster`` needs its own Ray, so a session
    Ray that is connected is shut down first (the session fixture re-inits lazily), and
    this cluster is torn down completely afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1, num_gpus=0)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.ray
def test_two_node_cluster_refuses_local_paths_and_missing_gpus(two_nodes, tmp_path):
    snap = cluster_snapshot()
    assert len(snap.nodes) == 2
    assert snap.resources["CPU"] == 2
    assert snap.node_types == [] and not snap.autoscaling  # static cluster

    local = spec(
        storage=str(tmp_path / "runs"),
        sample={"output": str(tmp_path / "ds"), "num_actors": 1},
        train={"num_workers": 1},
    )
    problems = check_snapshot(local, snap)
    assert [p.split(" ", 1)[0] for p in problems] == ["storage", "sample.output"]
    assert all("the cluster has 2 nodes" in p for p in problems)
    assert check_snapshot(local.model_copy(update={"shared_storage": True}), snap) == []

    gpu = spec(train={"use_gpu": True, "num_workers": 2})
    with pytest.raises(FeasibilityError) as ei:
        ensure_feasible(gpu)  # reads the connected cluster itself
    assert ei.value.problems[0] == "train needs 2 GPUs (2 workers x 1 GPU; the cluster has 0)"

    # 2 CPUs in total, but 1 per node: a 2-CPU worker fits nowhere
    (p,) = check_snapshot(
        spec(train={"num_workers": 1, "cpus_per_worker": 2}, sample={"num_actors": 1}), snap
    )
    assert p.startswith("train: no node can host one worker needing {CPU: 2}")


@pytest.mark.ray
def test_autoscaler_config_in_the_gcs_counts(two_nodes):
    """What an autoscaler (cluster launcher, KubeRay) stores in the GCS: the node types it
    may launch. Written here as the autoscaler writes it; read back by cluster_snapshot()."""
    import ray._raylet
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    cfg = autoscaler_pb2.ClusterConfig()
    g = cfg.node_group_configs.add(name="gpu", min_count=0, max_count=4)
    g.resources.update({"CPU": 4, "GPU": 1})
    key = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY
    ns = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    internal_kv._internal_kv_put(key, cfg.SerializeToString(), overwrite=True, namespace=ns)
    try:
        snap = cluster_snapshot()
        assert snap.autoscaling
        assert snap.node_types == [{"name": "gpu", "resources": {"CPU": 4.0, "GPU": 1.0}, "max_count": 4}]
        assert check_snapshot(spec(train={"use_gpu": True, "num_workers": 4}), snap) == []
        (p,) = check_snapshot(spec(train={"use_gpu": True, "num_workers": 5}), snap)
        assert p == "train needs 5 GPUs (5 workers x 1 GPU; the cluster has 4)"
    finally:
        internal_kv._internal_kv_del(key, namespace=ns)
    assert cluster_snapshot().node_types == []

