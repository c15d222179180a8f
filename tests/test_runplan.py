"""RunPlan: the spec and date resolved once into the facts every stage reads (no Ray needed)."""

from __future__ import annotations

import json

from pipeline.data import load_dataset
from pipeline.plan import DataInfo, RunPlan
from pipeline.spec import parse_spec


def _spec(tmp_path, **over):
    from pipeline.spec import deep_merge

    base = {"name": "plan-test", "storage": str(tmp_path / "runs"),
            "sample": {"num_images": 1000, "shard_size": 300, "output": str(tmp_path / "data")},
            "storage_options": {"secret": "s3cr3t-plan-value"}}
    return parse_spec(deep_merge(base, over))


def test_plan_resolves_every_stage_once(tmp_path) -> None:
    spec = _spec(tmp_path, train={"num_workers": 3, "cpus_per_worker": 2})
    data = DataInfo.of(load_dataset(spec.dataset))
    plan = RunPlan.build(spec, "2026-03-04", data, cluster_resources={"CPU": 8})
    assert data.image_shape == (1, 8, 8) and data.num_classes == 10 and data.num_train == 1438
    assert plan.train.count == 3 and plan.train.bundle == {"CPU": 2.0} and not plan.train.uses_gpu
    assert plan.sample.count == 2 and plan.sample.bundle == {"CPU": 1.0} and plan.sample_mode == "fused"
    assert plan.evaluate.bundle == {"CPU": 1.0} and plan.evaluate.count == 1
    assert plan.shards.num_shards == 4 and plan.shards.rows == 1000
    assert sum(plan.shards.per_label.values()) == 1000 and set(plan.shards.per_label) == set(range(10))
    assert plan.run_url.startswith(plan.train_root) and plan.run_name.startswith("2026-03-04-")
    assert "2026-03-04" in plan.partition and plan.spec_hash == spec.spec_hash()
    assert plan.eval.seeds == [0, 1, 2, 3, 4] and plan.eval.probe == "mlp"
    doc = json.dumps(plan.to_json())
    assert "s3cr3t-plan-value" not in doc  # credentials never leave through the plan


def test_plan_without_a_cluster_leaves_the_default_actor_count_open(tmp_path) -> None:
    spec = _spec(tmp_path, train={"use_gpu": True})
    plan = RunPlan.build(spec, "2026-03-04", DataInfo.of(load_dataset(spec.dataset)))
    assert plan.sample.count is None and plan.sample.uses_gpu and plan.sample_mode == "split"
    assert plan.sample.bundle == {"CPU": 0.0, "GPU": 1.0}  # split: the encode tasks do the CPU work
    fused = _spec(tmp_path, train={"use_gpu": True}, sample={"mode": "fused"})
    assert RunPlan.build(fused, "2026-03-04", DataInfo.of(load_dataset(fused.dataset))).sample.bundle == {
        "CPU": 1.0, "GPU": 1.0}
    assert plan.train.bundle["GPU"] == 1.0 and plan.evaluate.bundle["GPU"] == 1.0
    pinned = _spec(tmp_path, sample={"num_actors": 8})  # never more actors than shards
    assert RunPlan.build(pinned, "2026-03-04", DataInfo.of(load_dataset(pinned.dataset))).sample.count == 4


def test_feasibility_reads_the_plans_bundles(tmp_path) -> None:
    from pipeline.feasibility import train_bundle
    from pipeline.plan import train_resources

    spec = _spec(tmp_path, train={"resources_per_worker": {"accel": 1}, "cpus_per_worker": 3})
    assert train_bundle(spec) == train_resources(spec).bundle == {"accel": 1.0, "CPU": 3.0}
