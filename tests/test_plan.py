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
