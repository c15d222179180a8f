"""Uplift: does adding the generated images help a classifier? Three protocols, named for
what the generator saw, so nobody misreads a number.

* ``uplift_distill`` -- the classifier gets a small stratified subset (``distill_fraction``,
  10 %) of the images the generator was trained on, with or without the synthetic images.
  The generator saw more real data than the classifier: this measures how much of it the
  synthetic images pass on ("distillation"), not whether they help a user who has only the
  subset.
* ``uplift_same_data`` -- the classifier gets exactly the real images the generator was
  trained on, with or without synthetic images: the question of a user with little data
  (train the generator on ``dataset.train_fraction`` of the split to ask it).
* ``uplift_full`` -- the whole real train split, with or without synthetic images. When the
  generator saw the whole split this is the same experiment as ``uplift_same_data``.

Each is a paired difference per probe seed (same real rows and seed on both sides), reported
as a mean with a 95 % interval. How many synthetic images join the real ones is a measured
choice (``synthetic_ratio``: at most that many synthetic images per real image, a fresh draw per
seed; ``None`` = all), recorded in ``bench/results/quality-digits.json``. Each probe trains to
convergence on its own training set (:mod:`pipeline.evaluate.probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.data.base import stratified_subset
from pipeline.evaluate.classifier import check_labels
from pipeline.evaluate.probe import PROBE, ProbeRecipe, mean_ci95, probe_accuracies


def real_rows(labels: np.ndarray, fraction: float | None, seeds: Sequence[int]) -> list[np.ndarray]:
    """Per seed, the real rows a classifier trains on: a stratified subset, or all of them."""
    if fraction is None or fraction >= 1:
        return [np.arange(len(labels))] * len(seeds)
    return [stratified_subset(labels, fraction, int(s)) for s in seeds]


def synthetic_rows(num_synthetic: int, num_real: int, ratio: float | None, seed: int) -> np.ndarray:
    """The synthetic rows added to ``num_real`` real ones: at most ``ratio * num_real``, drawn by seed."""
    take = num_synthetic if ratio is None else min(num_synthetic, max(1, int(round(ratio * num_real))))
    if take >= num_synthetic:
        return np.arange(num_synthetic)
    return np.sort(np.random.default_rng([int(seed), 1]).choice(num_synthetic, size=take, replace=False))


def base_accuracies(
    base_x: np.ndarray, base_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int, *,
    seeds: Sequence[int], fraction: float | None = None, recipe: ProbeRecipe = PROBE,
    device: str | torch.device = "cpu",
) -> list[float]:
    """The real-only side of :func:`uplift` (no synthetic image involved, so it can be cached)."""
    return probe_accuracies(base_x, base_y, test_x, test_y, num_classes, seeds, recipe, device,
                            members=real_rows(base_y, fraction, seeds))


def uplift(
    base_x: np.ndarray,
    base_y: np.ndarray,
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    fraction: float | None = None,
    synthetic_ratio: float | None = None,
    recipe: ProbeRecipe = PROBE,
    device: str | torch.device = "cpu",
    base_acc: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy of (real rows + synthetic) minus accuracy of (real rows alone), per seed.

    ``base_x/base_y``: the real images the classifier may use; ``fraction``: a stratified
    subset of them per seed (None: all). ``base_acc``: the real-only accuracies per seed when
    already known (from :func:`base_accuracies` with the same arguments, e.g. cached).
    Returns ``mean``, ``ci95``, ``per_seed``, ``base_acc``/``aug_acc`` (means) and their
    per-seed lists, ``num_real``, ``num_synthetic``, ``synthetic_ratio``, ``seeds``.
    """
    seeds = [int(s) for s in seeds]
    design = UpliftDesign.build(base_x, base_y, synth_u8, synth_labels, num_classes, seeds=seeds,
                                fraction=fraction, synthetic_ratio=synthetic_ratio)
    base = [float(b) for b in (base_acc if base_acc is not None else base_accuracies(
        base_x, base_y, test_x, test_y, num_classes, seeds=seeds, fraction=fraction, recipe=recipe, device=device))]
    if len(base) != len(seeds):
        raise ValueError(f"base_acc has {len(base)} values for {len(seeds)} seeds")
    aug = probe_accuracies(design.pool_x, design.pool_y, test_x, test_y, num_classes, seeds, recipe, device,
                           members=design.members)
    return design.summary(base, aug)


@dataclass(frozen=True)
class UpliftDesign:
    """The classifiers of one uplift's augmented side: per seed, its real rows and synthetic rows,
    as ``members`` of one pool (the real images, then the synthetic ones)."""

    seeds: list[int]
    rows: list[np.ndarray]  # per seed: the real rows
    synthetic: list[np.ndarray]  # per seed: the synthetic rows added
    pool_x: np.ndarray
    pool_y: np.ndarray
    members: list[np.ndarray]
    synthetic_ratio: float | None

    @classmethod
    def build(cls, base_x: np.ndarray, base_y: np.ndarray, synth_u8: np.ndarray, synth_labels: np.ndarray,
              num_classes: int, *, seeds: Sequence[int], fraction: float | None,
              synthetic_ratio: float | None,
              pool: tuple[np.ndarray, np.ndarray] | None = None) -> UpliftDesign:
        """``pool``: :meth:`pool` of the same arrays when already made (protocols that share the
        real images share one pool, and one copy of it in the object store)."""
        seeds = [int(s) for s in seeds]
        rows = real_rows(base_y, fraction, seeds)
        syn = [synthetic_rows(len(synth_u8), len(r), synthetic_ratio, s) for r, s in zip(rows, seeds, strict=True)]
        pool_x, pool_y = pool if pool is not None else cls.pool(base_x, base_y, synth_u8, synth_labels, num_classes)
        members = [np.concatenate([r, len(base_x) + s]) for r, s in zip(rows, syn, strict=True)]
        return cls(seeds, rows, syn, pool_x, pool_y, members, synthetic_ratio)

    @staticmethod
    def pool(base_x: np.ndarray, base_y: np.ndarray, synth_u8: np.ndarray, synth_labels: np.ndarray,
             num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The real images, then the synthetic ones: what every member of the augmented side draws from."""
        y_syn = check_labels(synth_labels, len(synth_u8), num_classes, "synth_labels")
        return np.concatenate([base_x, synth_u8]), np.concatenate([np.asarray(base_y, np.int64), y_syn])

    def summary(self, base_acc: Sequence[float], aug_acc: Sequence[float]) -> dict[str, Any]:
        """The uplift's figures from the per-seed real-only and augmented accuracies."""
        base, aug = [float(b) for b in base_acc], [float(a) for a in aug_acc]
        if len(base) != len(self.seeds):
            raise ValueError(f"base_acc has {len(base)} values for {len(self.seeds)} seeds")
        per_seed = [a - b for a, b in zip(aug, base, strict=True)]
        ci = mean_ci95(per_seed)
        return {
            "mean": ci["mean"], "ci95": ci["ci95"], "per_seed": per_seed,
            "base_acc": float(np.mean(base)), "aug_acc": float(np.mean(aug)),
            "base_acc_per_seed": base, "aug_acc_per_seed": aug,
            "num_real": int(len(self.rows[0])), "num_synthetic": int(len(self.synthetic[0])),
            "synthetic_ratio": self.synthetic_ratio, "seeds": self.seeds,
        }
