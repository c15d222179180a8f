"""Augmentation uplift: does adding the generated images help a classifier that is short
of real data?

The use case of the whole pipeline is augmenting classifier training with synthetic
data (in the spirit of the "train on synthetic" studies that grew out of Ravuri & Vinyals
2019; cf. Azizi et al. 2023, "Synthetic Data from Diffusion Models Improves ImageNet
Classification"), so the gate measures it directly: a classifier trained on a small real
subset (``fraction`` of the real train split, stratified per class, drawn by seed) versus
the same subset plus the synthetic images, both scored on the real test split. The
uplift is the accuracy difference, averaged over a few seeds (each seed draws its own
subset and initialisation, shared by the pair). Both classifiers of a pair get the same
number of optimiser steps, so the difference measures the data, not the compute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.classifier import (
    PROBE_RECIPE,
    RealSplit,
    Recipe,
    accuracy,
    check_labels,
    train_classifier,
)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of every class (at least one image per class), fixed by seed."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(len(idx) * fraction)))
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def seed_list_of(seeds: int | Sequence[int], seed: int = 0) -> list[int]:
    """``seeds`` as an explicit list: a count means ``seed, seed+1, ...``."""
    out = [seed + i for i in range(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not out:
        raise ValueError("need at least one seed")
    return out


def uplift_baselines(
    real: RealSplit,
    *,
    fraction: float = 0.1,
    seeds: int | Sequence[int] = 3,
    seed: int = 0,
    recipe: Recipe = PROBE_RECIPE,
    device: str | torch.device = "cpu",
) -> list[float]:
    """The real-subset accuracy of each seed: the ``base`` side of :func:`augmentation_uplift`
    (same subsets, seeds and step budget), which needs no synthetic image and can be cached."""
    steps = recipe.steps_for(len(real.train_x))
    out = []
    for s in seed_list_of(seeds, seed):
        sub = stratified_subset(real.train_y, fraction, s)
        m = train_classifier(real.train_x[sub], real.train_y[sub], real.num_classes, seed=s, steps=steps,
                             recipe=recipe, device=device)
        out.append(float(accuracy(m, real.test_x, real.test_y)))
    return out


def augmentation_uplift(
    real: RealSplit,
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    *,
    fraction: float = 0.1,
    seeds: int | Sequence[int] = 3,
    seed: int = 0,
    max_synthetic: int | None = None,
    recipe: Recipe = PROBE_RECIPE,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
    base_acc: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy of (real subset + synthetic) minus accuracy of (real subset alone).

    ``seeds``: a count (seeds ``seed, seed+1, ...``) or an explicit list. ``max_synthetic``
    caps the synthetic images added (a random draw per seed; default: all of them).
    ``base_acc``: the real-subset accuracies per seed when already known (from
    :func:`uplift_baselines` with the same arguments, e.g. cached).
    Returns ``uplift_mean``, ``uplift_per_seed``, ``base_acc`` / ``aug_acc`` (means) and
    their per-seed lists, ``num_real_subset``, ``num_synthetic_used``, ``steps``, ``seeds``.
    """
    seed_list = seed_list_of(seeds, seed)
    if base_acc is None:
        base_acc = uplift_baselines(real, fraction=fraction, seeds=seed_list, recipe=recipe, device=device)
    if len(base_acc) != len(seed_list):
        raise ValueError(f"base_acc has {len(base_acc)} values for {len(seed_list)} seeds")
    y_syn = check_labels(synth_labels, len(synth_u8), real.num_classes, "synth_labels")
    steps = recipe.steps_for(len(real.train_x))
    base, aug, n_sub, n_syn = [float(b) for b in base_acc], [], 0, 0
    for s, b in zip(seed_list, base, strict=True):
        sub = stratified_subset(real.train_y, fraction, s)
        syn = np.arange(len(synth_u8))
        if max_synthetic is not None and max_synthetic < len(syn):
            syn = np.sort(np.random.default_rng([s, 1]).choice(syn, size=max_synthetic, replace=False))
        x_aug = np.concatenate([real.train_x[sub], synth_u8[syn]])
        y_aug = np.concatenate([real.train_y[sub], y_syn[syn]])
        m_aug = train_classifier(x_aug, y_aug, real.num_classes, seed=s, steps=steps, recipe=recipe, device=device)
        aug.append(accuracy(m_aug, real.test_x, real.test_y))
        n_sub, n_syn = len(sub), len(syn)
        if progress is not None:
            progress(f"uplift seed {s}: base {b:.4f} -> augmented {aug[-1]:.4f}")
    per_seed = [a - b for a, b in zip(aug, base, strict=True)]
    return {
        "uplift_mean": float(np.mean(per_seed)),
        "uplift_per_seed": [float(u) for u in per_seed],
        "base_acc": float(np.mean(base)),
        "aug_acc": float(np.mean(aug)),
        "base_acc_per_seed": [float(b) for b in base],
        "aug_acc_per_seed": [float(a) for a in aug],
        "num_real_subset": int(n_sub),
        "num_synthetic_used": int(n_syn),
        "fraction": float(fraction),
        "steps": int(steps),
        "seeds": seed_list,
    }
