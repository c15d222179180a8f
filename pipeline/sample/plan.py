"""The shard plan: which images exist, with which label and seed, in which shard.

Pure functions of (total, shard size, label counts, base seed), so the driver, every
actor and a later re-run agree without talking to each other. Image ``i`` (a global
index) has seed ``image_seed(base, i)`` and label ``label_of(i)``; shard ``s`` holds
images ``[s * shard_size, min((s + 1) * shard_size, total))``. Nothing here depends on
batch size or on how many actors there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.rng import derive_seed
from pipeline.spec import SampleSpec

_MASK63 = np.uint64(2**63 - 1)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser on uint64 (wrapping arithmetic is well defined in numpy)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def image_seeds(base_seed: int, start: int, count: int) -> np.ndarray:
    """63-bit seeds of images start .. start+count-1 (int64)."""
    idx = np.arange(start, start + count, dtype=np.uint64)
    return (splitmix64(idx ^ np.uint64(base_seed)) & _MASK63).astype(np.int64)


def base_seed(job: str, date: str, seed: int) -> int:
    return derive_seed("genpipe-sample", job, date, seed)


def class_counts(sample: SampleSpec, num_classes: int) -> dict[int, int]:
    """Images per label. Uniform over ``labels`` (default: all classes) unless ``per_class``."""
    if sample.per_class:
        bad = sorted(k for k in sample.per_class if k >= num_classes)
        if bad:
            raise ValueError(f"sample.per_class: labels {bad} outside the dataset's classes 0..{num_classes - 1}")
        return {k: v for k, v in sorted(sample.per_class.items()) if v > 0}
    labels = sample.labels if sample.labels is not None else list(range(num_classes))
    bad = sorted(k for k in labels if k >= num_classes)
    if bad:
        raise ValueError(f"sample.labels: {bad} outside the dataset's classes 0..{num_classes - 1}")
    q, r = divmod(sample.num_images, len(labels))
    return {lab: q + (1 if i < r else 0) for i, lab in enumerate(labels)}


def spread_labels(counts: dict[int, int]) -> np.ndarray:
    """All labels, spread evenly through the sequence (every prefix is close to the target mix).

    Label k's j-th image sits at key (j + 0.5) / count_k; sorting the keys interleaves the
    classes, so any shard carries about the requested proportions.
    """
    labels = np.concatenate([np.full(c, k, dtype=np.int64) for k, c in counts.items()])
    keys = np.concatenate([(np.arange(c) + 0.5) / c for c in counts.values()])
    order = np.lexsort((labels, keys))
    return labels[order]


@dataclass(frozen=True)
class Shard:
    index: int
    num_shards: int
    start: int
    labels: np.ndarray  # int64 (count,)
    seeds: np.ndarray  # int64 (count,)

    @property
    def count(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ShardPlan:
    total: int
    shard_size: int
    base_seed: int
    counts: dict[int, int]
    #: uniform plans cycle through these labels (image i has label cycle[i % len]): O(1) memory
    cycle: tuple[int, ...] | None = None

    @property
    def num_shards(self) -> int:
        return -(-self.total // self.shard_size)

    def shard(self, index: int, all_labels: np.ndarray | None = None) -> Shard:
        if not 0 <= index < self.num_shards:
            raise IndexError(index)
        start = index * self.shard_size
        count = min(self.shard_size, self.total - start)
        if self.cycle is not None:
            idx = np.arange(start, start + count, dtype=np.int64) % len(self.cycle)
            labels = np.asarray(self.cycle, dtype=np.int64)[idx]
        else:
            labels = (all_labels if all_labels is not None else spread_labels(self.counts))[start:start + count]
        return Shard(index, self.num_shards, start, labels.copy(), image_seeds(self.base_seed, start, count))

    def shards(self) -> list[Shard]:
        labels = None if self.cycle is not None else spread_labels(self.counts)
        return [self.shard(i, labels) for i in range(self.num_shards)]


def make_plan(sample: SampleSpec, num_classes: int, job: str, date: str) -> ShardPlan:
    counts = class_counts(sample, num_classes)
    cycle = None if sample.per_class else tuple(counts)
    return ShardPlan(sum(counts.values()), sample.shard_size, base_seed(job, date, sample.seed), counts, cycle)


def image_ids(job: str, date: str, shard: Shard) -> list[str]:
    """Stable ids: the same image has the same id in every re-run."""
    return [f"{job}/{date}/{shard.start + i:09d}" for i in range(shard.count)]
