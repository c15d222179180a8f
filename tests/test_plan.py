"""The shard plan and per-image seeds are pure functions: no Ray, no batching effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.rng import seeded_normal
from pipeline.sample.plan import class_counts, image_seeds, make_plan, spread_labels
from pipeline.spec import SampleSpec


def test_plan_is_deterministic_and_covers_every_image_once() -> None:
    s = SampleSpec(num_images=1003, shard_size=100)
    a, b = make_plan(s, 10, "job", "2026-01-01"), make_plan(s, 10, "job", "2026-01-01")
    assert a == b and a.num_shards == 11
    sa, sb = a.shards(), b.shards()
    assert sum(x.count for x in sa) == 1003
    assert all(np.array_equal(x.seeds, y.seeds) and np.array_equal(x.labels, y.labels) for x, y in zip(sa, sb, strict=True))
    seeds = np.concatenate([x.seeds for x in sa])
    assert len(np.unique(seeds)) == 1003 and seeds.min() >= 0
    counts = np.bincount(np.concatenate([x.labels for x in sa]), minlength=10)
    assert counts.max() - counts.min() <= 1


def test_plan_changes_with_date_and_seed() -> None:
    s = SampleSpec(num_images=10, shard_size=10)
    base = make_plan(s, 10, "job", "2026-01-01").shard(0).seeds
    assert not np.array_equal(base, make_plan(s, 10, "job", "2026-01-02").shard(0).seeds)
    assert not np.array_equal(base, make_plan(SampleSpec(num_images=10, shard_size=10, seed=1), 10, "job",
                                              "2026-01-01").shard(0).seeds)


def test_a_shard_alone_equals_its_slice_of_the_whole() -> None:
    p = make_plan(SampleSpec(per_class={0: 50, 3: 20, 9: 5}, shard_size=16), 10, "j", "2026-01-01")
    whole = p.shards()
    for i in (0, 2, p.num_shards - 1):
        one = p.shard(i)
        assert np.array_equal(one.labels, whole[i].labels) and np.array_equal(one.seeds, whole[i].seeds)
    assert np.array_equal(image_seeds(p.base_seed, 16, 16), whole[1].seeds)


def test_per_class_counts_are_exact_and_spread() -> None:
    counts = {0: 30, 1: 10, 2: 60}
    labels = spread_labels(counts)
    assert {k: int((labels == k).sum()) for k in counts} == counts
    first = labels[:10]  # an even spread: every prefix carries roughly the requested mix
    assert (first == 2).sum() in (5, 6, 7) and (first == 1).sum() in (0, 1, 2)


def test_labels_outside_the_dataset_are_refused() -> None:
    with pytest.raises(ValueError, match="sample.labels"):
        class_counts(SampleSpec(labels=[3, 12]), 10)
    with pytest.raises(ValueError, match="sample.per_class"):
        class_counts(SampleSpec(per_class={10: 5}), 10)


def test_seeded_noise_is_per_image() -> None:
    seeds = torch.tensor(image_seeds(123, 0, 64))
    z = seeded_normal(seeds, (4, 5))
    assert z.shape == (64, 4, 5)
    assert torch.equal(seeded_normal(seeds[10:11], (4, 5)), z[10:11])
    assert torch.equal(seeded_normal(seeds.flip(0), (4, 5)), z.flip(0))
    big = seeded_normal(torch.tensor(image_seeds(7, 0, 2000)), (64,))
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    assert not torch.equal(seeded_normal(seeds, (4, 5), stream=1), z)


# ---------------------------------------------------------------- O(shards): issue 13, item 6

#: sha256 (first 16 hex) of every shard's labels and seeds, recorded before labels were computed per
#: shard: the published rows of these plans must never change
PINNED = [
    ({"num_images": 1003, "shard_size": 100}, "b3fd5a08885e7676"),
    ({"per_class": {0: 50, 3: 20, 9: 5}, "shard_size": 16}, "e11d76a72263844d"),
    ({"per_class": {0: 3, 1: 1, 2: 6, 4: 9, 7: 12, 8: 24}, "shard_size": 7}, "60a41c175c806756"),
    ({"per_class": {i: 1000 + 37 * i for i in range(10)}, "shard_size": 999}, "1ad633847c4626ab"),
    ({"labels": [2, 5, 7], "num_images": 50, "shard_size": 8}, "4d91773018d26055"),
]


def _digest(plan) -> str:
    import hashlib

    h = hashlib.sha256()
    for s in plan.shards():
        h.update(s.labels.tobytes())
        h.update(s.seeds.tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("lazy", [False, True], ids=["whole-sequence", "per-shard"])
def test_shard_contents_are_pinned(lazy: bool, monkeypatch) -> None:
    import pipeline.sample.plan as plan_mod

    if lazy:  # every per_class plan computes its shards' labels alone
        monkeypatch.setattr(plan_mod, "EAGER_LABELS_MAX", 0)
    for kw, digest in PINNED:
        assert _digest(make_plan(SampleSpec(**kw), 10, "job", "2026-01-01")) == digest, kw


def test_a_slice_of_the_spread_equals_the_slice_of_the_whole() -> None:
    from pipeline.sample.plan import spread_slice

    rng = np.random.default_rng(0)
    for _ in range(40):  # counts with many ties between classes' keys (1, 3, 9 ... share keys)
        labels = rng.choice(40, int(rng.integers(1, 10)), replace=False)
        counts = {int(k): int(rng.choice([1, 2, 3, 6, 9, 10, 27, 100, 999])) for k in labels}
        whole = spread_labels(counts)
        for _ in range(4):
            a = int(rng.integers(0, len(whole)))
            b = int(rng.integers(1, len(whole) - a + 1))
            assert np.array_equal(spread_slice(counts, a, b), whole[a:a + b]), (counts, a, b)


def test_a_ten_billion_image_plan_is_small() -> None:
    """The plan of the largest job the spec allows, and any of its shards, take O(shard) memory
    (before: the labels of all 10^10 images were built, 80 GB, and the driver died)."""
    import tracemalloc

    spec = SampleSpec(per_class={0: 4_000_000_000, 1: 3_000_000_000, 7: 3_000_000_000}, shard_size=100_000)
    tracemalloc.start()
    try:
        plan = make_plan(spec, 10, "job", "2026-01-01")
        assert plan.total == 10**10 and plan.num_shards == 100_000
        for i in (0, 1, 50_000, plan.num_shards - 1):
            shard = plan.shard(i)
            assert shard.count == 100_000 and shard.start == i * 100_000
            assert np.bincount(shard.labels, minlength=8)[[0, 1, 7]].tolist() == [40_000, 30_000, 30_000]
            assert np.array_equal(shard.seeds, image_seeds(plan.base_seed, i * 100_000, 100_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"  # one shard: 100k labels + seeds = 1.6 MB, plus work
    uniform = make_plan(SampleSpec(num_images=10**10, shard_size=100_000), 10, "job", "2026-01-01")
    assert np.bincount(uniform.shard(99_999).labels).tolist() == [10_000] * 10


def test_plans_of_too_many_shards_are_refused() -> None:
    from pipeline.spec import MAX_SHARDS, SpecError, parse_spec

    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "x", "sample": {"num_images": 10**10, "shard_size": 1}})
    (problem,) = exc.value.problems
    assert problem.startswith("sample.shard_size:") and f"more than {MAX_SHARDS}" in problem
    assert ">= 100000" in problem  # says what would do
    with pytest.raises(SpecError, match="sample.per_class"):
        parse_spec({"name": "x", "sample": {"per_class": {0: 10**10, 1: 1}, "shard_size": 10**6}})
    parse_spec({"name": "x", "sample": {"num_images": 10**10, "shard_size": 10**5}})  # the largest: fine


def test_the_encode_path_does_not_import_torch(tmp_path) -> None:
    """An encode task (split layout) unpickles a Shard and a ShardContext and commits a shard:
    none of that may import torch (~3 s of CPU in every fresh worker), so pipeline.rng imports
    it lazily. Run in a fresh interpreter, since this one has torch already."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(f"""
        import pickle, sys
        from datetime import UTC, datetime
        import numpy as np
        from pipeline.publish.partition import Partition
        from pipeline.sample.fanout import ShardContext, _encode_task, _warm_encode_worker
        from pipeline.sample.plan import make_plan
        from pipeline.spec import SampleSpec

        _warm_encode_worker()
        plan = make_plan(SampleSpec(num_images=20, shard_size=10), 10, "job", "2026-01-01")
        ctx = ShardContext(partition=Partition.of({str(tmp_path / "out")!r}, "job", "2026-01-01"),
                           class_names=[str(i) for i in range(10)], fmt="png", model="dcgan",
                           checkpoint_digest="d", created_at=datetime(2026, 1, 1, tzinfo=UTC), spec_hash="h")
        shard, ctx = pickle.loads(pickle.dumps((plan.shard(1), ctx)))
        out = _encode_task(np.zeros((shard.count, 8, 8, 1), np.uint8), shard, ctx)
        assert out["info"].rows == 10, out
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
