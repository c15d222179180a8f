"""The shard plan: which images exist, with which label and seed, in which shard.

Pure functions of (total, shard size, label counts, base seed), so the driver, every
actor and a later re-run agree without talking to each other. Image ``i`` (a global
index) has seed ``image_seed(base, i)`` and label ``label_of(i)``; shard ``s`` holds
images ``[s * shard_size, min((s + 1) * shard_size, total))``. Nothing here depends on
batch size or on how many actors there are.

A plan's memory is O(1) and a shard's O(shard size + classes), whatever the total: seeds are a
hash of the image index, uniform labels a cycle, and explicit ``per_class`` labels (an even
spread, :func:`spread_labels`) are found for one shard at a time by :func:`spread_slice`, which
gives exactly the slice of the whole sequence without building it. The number of shards is
bounded by the spec (``pipeline.spec.MAX_SHARDS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

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


def _spread_keys(j: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Label k's j-th image sits at key (j + 0.5) / c_k: the very float operations of spread_labels."""
    return (j.astype(np.int64) + 0.5) / c


def _count_keys(t: float, c: np.ndarray, inclusive: bool) -> np.ndarray:
    """Per class, how many of its keys are < t (or <= t when ``inclusive``); exact (float keys
    are compared as spread_labels sorts them, an estimate is corrected until it is right)."""
    def below(j: np.ndarray) -> np.ndarray:  # key(j) < t (or <= t); j in [0, c)
        k = _spread_keys(np.clip(j, 0, c - 1), c)
        return (k <= t) if inclusive else (k < t)

    n = np.clip(np.ceil(t * c - 0.5), 0, c).astype(np.int64)
    while True:  # rounding moves the estimate by a step or two at most
        down = (n > 0) & ~below(n - 1)
        up = (n < c) & below(n) & ~down
        if not (down.any() or up.any()):
            return n
        n = n - down + up


def _key_at(position: int, c: np.ndarray) -> float:
    """The key of the element at ``position`` of the sorted sequence: the smallest key t with
    more than ``position`` keys <= t (bisection over the bit patterns of floats in [0, 1]).

    Class k has round(t * c_k) keys <= t, give or take one, so t lies within (K + 1) / N of
    (position + 1) / N: the search starts from that bracket (checked), which halves its steps."""
    def more_than_position(t: float) -> bool:
        return int(_count_keys(t, c, inclusive=True).sum()) > position

    n, k = int(c.sum()), len(c)
    lo_t, hi_t = max(0.0, (position - k - 1) / n), min(1.0, (position + k + 2) / n)
    if more_than_position(lo_t) or not more_than_position(hi_t):
        lo_t, hi_t = 0.0, 1.0
    lo, hi = int(np.float64(lo_t).view(np.int64)), int(np.float64(hi_t).view(np.int64))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if more_than_position(float(np.int64(mid).view(np.float64))):
            hi = mid
        else:
            lo = mid
    return float(np.int64(hi).view(np.float64))


def spread_slice(counts: dict[int, int], start: int, count: int) -> np.ndarray:
    """``spread_labels(counts)[start:start + count]`` without building the whole sequence:
    O(count + classes) memory, O(classes x 64) work to find the slice's ends."""
    items = [(k, c) for k, c in counts.items() if c > 0]
    total = sum(c for _, c in items)
    if count <= 0 or start >= total:
        return np.zeros(0, dtype=np.int64)
    count = min(count, total - start)
    labs = np.array([k for k, _ in items], dtype=np.int64)
    c = np.array([c for _, c in items], dtype=np.int64)
    t_first, t_last = _key_at(start, c), _key_at(start + count - 1, c)
    lo = _count_keys(t_first, c, inclusive=False)  # every key below the slice's first
    hi = _count_keys(t_last, c, inclusive=True)
    # all elements with t_first <= key <= t_last: the slice plus at most a tie per class at each end
    parts = [(np.full(h - lo_k, lab, dtype=np.int64), _spread_keys(np.arange(lo_k, h), ck))
             for lab, ck, lo_k, h in zip(labs.tolist(), c.tolist(), lo.tolist(), hi.tolist(), strict=True)
             if h > lo_k]
    labels = np.concatenate([p[0] for p in parts])
    keys = np.concatenate([p[1] for p in parts])
    order = np.lexsort((labels, keys))
    offset = start - int(lo.sum())
    return labels[order][offset:offset + count]


#: per_class plans up to this many images keep the whole label sequence (8 bytes an image) for
#: speed; larger ones compute each shard's slice alone
EAGER_LABELS_MAX = 1 << 20


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

    @cached_property
    def _all_labels(self) -> np.ndarray | None:
        """The whole label sequence of a small per_class plan, built once (None: compute per shard)."""
        if self.cycle is not None or self.total > EAGER_LABELS_MAX:
            return None
        return spread_labels(self.counts)

    def labels(self, start: int, count: int) -> np.ndarray:
        """Labels of images start .. start+count-1 (int64)."""
        if self.cycle is not None:
            idx = np.arange(start, start + count, dtype=np.int64) % len(self.cycle)
            return np.asarray(self.cycle, dtype=np.int64)[idx]
        if self._all_labels is not None:
            return self._all_labels[start:start + count].copy()
        return spread_slice(self.counts, start, count)

    def shard(self, index: int, all_labels: np.ndarray | None = None) -> Shard:
        """Shard ``index``; ``all_labels`` (spread_labels(counts), optional) only saves work."""
        if not 0 <= index < self.num_shards:
            raise IndexError(index)
        start = index * self.shard_size
        count = min(self.shard_size, self.total - start)
        if all_labels is not None and self.cycle is None:
            labels = all_labels[start:start + count].copy()
        else:
            labels = self.labels(start, count)
        return Shard(index, self.num_shards, start, labels, image_seeds(self.base_seed, start, count))

    def shards(self) -> list[Shard]:
        """Every shard (for tests and small plans: this list is O(total))."""
        return [self.shard(i) for i in range(self.num_shards)]


def make_plan(sample: SampleSpec, num_classes: int, job: str, date: str) -> ShardPlan:
    counts = class_counts(sample, num_classes)
    cycle = None if sample.per_class else tuple(counts)
    return ShardPlan(sum(counts.values()), sample.shard_size, base_seed(job, date, sample.seed), counts, cycle)


def image_ids(job: str, date: str, shard: Shard) -> list[str]:
    """Stable ids: the same image has the same id in every re-run."""
    return [f"{job}/{date}/{shard.start + i:09d}" for i in range(shard.count)]
