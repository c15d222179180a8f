"""Optional filtering at sampling time (``sample.filter``): drop generated images that a classifier
trained on the real data assigns to another class, or to their own class with low confidence.

Exactly-once and byte determinism hold because filtering is a per-row function of the plan:
row ``j`` of a shard tries the candidate seeds ``candidate_seed(seed_j, 0), (seed_j, 1), ...`` in
order (attempt 0 is the plan's own seed) and keeps the first candidate the judge accepts. After
``max_attempts`` rejections it keeps the candidate the judge liked best, so a shard never holds
fewer rows than the plan asks for. Each image is still a function of (weights, seed, label) only
(see :mod:`pipeline.sample.generate`), and the row records the seed it was drawn from, so any
published image can be regenerated alone. The same spec and checkpoint give the same rows,
whatever the batch size or the number of actors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.sample.plan import splitmix64

_MASK63 = np.uint64(2**63 - 1)
_ATTEMPT = np.uint64(0xD1B54A32D192ED03)  # an odd 64-bit constant: attempt k's offset is k times it


def candidate_seeds(seeds: np.ndarray, attempt: int) -> np.ndarray:
    """The seeds a row tries on ``attempt`` (0: the plan's own seeds, unchanged)."""
    s = np.asarray(seeds, dtype=np.int64)
    if attempt == 0:
        return s.copy()
    with np.errstate(over="ignore"):
        mixed = splitmix64(s.astype(np.uint64) ^ (_ATTEMPT * np.uint64(attempt)))
    return (mixed & _MASK63).astype(np.int64)


@dataclass
class FilterStats:
    """Per label: images generated (``tried``), rows filled by an accepted image, and rows that
    kept the best of ``max_attempts`` rejected candidates (``forced``)."""

    tried: dict[int, int] = field(default_factory=dict)
    accepted: dict[int, int] = field(default_factory=dict)
    forced: dict[int, int] = field(default_factory=dict)

    def add(self, other: FilterStats) -> FilterStats:
        for mine, theirs in ((self.tried, other.tried), (self.accepted, other.accepted),
                             (self.forced, other.forced)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        return self

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FilterStats:
        """The counts of :meth:`to_json` (the rates are recomputed)."""
        return cls(*({int(k): int(v) for k, v in (d.get(part) or {}).items()}
                     for part in ("tried", "accepted", "forced")))

    def acceptance(self) -> dict[int, float]:
        """Accepted images / images generated, per label."""
        return {k: self.accepted.get(k, 0) / t for k, t in sorted(self.tried.items()) if t}

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"tried": {str(k): v for k, v in sorted(self.tried.items())},
                "accepted": {str(k): v for k, v in sorted(self.accepted.items())},
                "forced": {str(k): v for k, v in sorted(self.forced.items())},
                "acceptance_rate": {str(k): round(v, 4) for k, v in self.acceptance().items()}}


Generate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (seeds, labels) -> uint8 NHWC images
Judge = Callable[[np.ndarray], np.ndarray]  # uint8 NHWC images -> class probabilities (N, classes)


def filtered_generate(generate: Generate, judge: Judge, seeds: np.ndarray, labels: np.ndarray, *,
                      min_confidence: float, max_attempts: int) -> tuple[np.ndarray, np.ndarray, FilterStats]:
    """(images, seeds used, stats) for the rows ``(seeds, labels)``: see the module docstring.

    A candidate is accepted when the judge's most likely class is its label and that class's
    probability is at least ``min_confidence``."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    seeds = np.asarray(seeds, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(seeds)
    images: np.ndarray | None = None
    used = seeds.copy()
    best = np.full(n, -1.0)
    done = np.zeros(n, dtype=bool)
    stats = FilterStats()
    for attempt in range(max_attempts):
        rows = np.flatnonzero(~done)
        if len(rows) == 0:
            break
        cand = candidate_seeds(seeds[rows], attempt)
        imgs = generate(cand, labels[rows])
        if images is None:
            images = np.empty((n, *imgs.shape[1:]), dtype=imgs.dtype)
        prob = np.asarray(judge(imgs), dtype=np.float64)
        own = prob[np.arange(len(rows)), labels[rows]]
        ok = (prob.argmax(1) == labels[rows]) & (own >= min_confidence)
        better = own > best[rows]
        take = ok | better  # an accepted image always replaces; otherwise keep the best so far
        images[rows[take]] = imgs[take]
        used[rows[take]] = cand[take]
        best[rows[take]] = np.where(ok[take], np.inf, own[take])
        done[rows[ok]] = True
        for lab, cnt in zip(*np.unique(labels[rows], return_counts=True), strict=True):
            stats.tried[int(lab)] = stats.tried.get(int(lab), 0) + int(cnt)
        for lab, cnt in zip(*np.unique(labels[rows[ok]], return_counts=True), strict=True):
            stats.accepted[int(lab)] = stats.accepted.get(int(lab), 0) + int(cnt)
    for lab, cnt in zip(*np.unique(labels[~done], return_counts=True), strict=True):
        stats.forced[int(lab)] = int(cnt)
    assert images is not None
    return images, used, stats


# -- the judge: a classifier trained on the generator's own real training images ---------------

#: rows per judge call: a fixed shape, so a row's probabilities never depend on the other rows
#: of its call (the same rule as the generator's blocks, see pipeline/sample/generate.py)
JUDGE_BLOCK = 256


def judge_key(dataset_key: str, train_fraction: float, split_seed: int) -> str:
    """Cache key of the judge of a dataset: the FID feature net's own key when the generator saw
    the whole train split (one net for both), else one per subset the generator was trained on
    (a judge trained on more real images than the generator saw would smuggle them in)."""
    if train_fraction >= 1:
        return dataset_key
    return f"{dataset_key}-f{train_fraction:.6g}-s{int(split_seed)}"


def ensure_judge(spec: Any, data: Any, device: str = "cpu") -> dict[str, Any]:
    """Load (or train and cache, under ``<storage>/_cache/features``) the judge of ``spec``'s data;
    returns ``{"url", "digest", "test_acc", "num_train", "key"}``. ``digest`` is the sha256 of the
    cache file: every sampling actor checks it reads the same judge."""
    import hashlib

    import fsspec

    from pipeline.evaluate.features import get_feature_net
    from pipeline.publish.storage import join

    ds = spec.dataset
    key = judge_key(data.key, ds.train_fraction, ds.split_seed)
    cache_url = join(spec.storage, "_cache", "features")
    _, info = get_feature_net(cache_url, key, data.train_u8(), data.train_y.numpy(), data.num_classes,
                              data.test_u8(), data.test_y.numpy(), spec.storage_options, seed=0, device=device)
    with fsspec.open(info["url"], "rb", **spec.storage_options) as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"url": info["url"], "digest": digest, "test_acc": float(info["test_acc"]),
            "num_train": int(info["num_train"]), "key": key}


def load_judge(url: str, digest: str, storage_options: dict[str, Any] | None, device: Any) -> Judge:
    """The judge at ``url`` as a :data:`Judge` (uint8 NHWC -> class probabilities), refusing a
    file whose sha256 is not ``digest`` (the cache was replaced since the run began)."""
    import hashlib

    import fsspec
    import torch

    from pipeline.evaluate.classifier import u8_to_tensor
    from pipeline.evaluate.features import _decode

    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        raw = f.read()
    got = hashlib.sha256(raw).hexdigest()
    if got != digest:
        raise RuntimeError(f"sample.filter: the judge at {url} changed during the run "
                           f"(sha256 {got[:12]}, expected {digest[:12]}): run the job again")
    net, _ = _decode(raw)
    net = net.to(device).eval()

    @torch.inference_mode()
    def judge(images_u8: np.ndarray) -> np.ndarray:
        n = len(images_u8)
        out = np.empty((n, net.cfg.num_classes), dtype=np.float32)
        for lo in range(0, n, JUDGE_BLOCK):
            x = u8_to_tensor(images_u8[lo:lo + JUDGE_BLOCK])
            m = len(x)
            if m < JUDGE_BLOCK:  # pad the tail block: same shape, same kernels, same numbers
                x = torch.cat([x, x[:1].expand(JUDGE_BLOCK - m, *x.shape[1:])])
            out[lo:lo + m] = torch.softmax(net(x.to(device)).float(), 1)[:m].cpu().numpy()
        return out

    return judge
