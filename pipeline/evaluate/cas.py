"""Classification Accuracy Score (Ravuri & Vinyals 2019, "Classification Accuracy Score
for Conditional Generative Models").

Train fresh classifiers *only* on generated, labelled images and measure their accuracy on
the real test split. A conditional generator that captures each class well scores close to
classifiers trained on the real images the generator itself was trained on, which are
reported beside it (``real_acc``): the ratio ``cas / real_acc`` is comparable across datasets.

Every figure is a mean over several probe seeds with its 95 % interval
(:mod:`pipeline.evaluate.probe`); each probe is trained to convergence on its own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.classifier import RealSplit
from pipeline.evaluate.probe import PROBE, ProbeRecipe, mean_ci95, probe_accuracies


def real_accuracies(real: RealSplit, seeds: Sequence[int], recipe: ProbeRecipe = PROBE,
                    device: str | torch.device = "cpu") -> list[float]:
    """Per seed: a probe trained on the generator's real training images, scored on the test split."""
    return probe_accuracies(real.train_x, real.train_y, real.test_x, real.test_y, real.num_classes, seeds,
                            recipe, device)


def cas_report(
    real: RealSplit,
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    recipe: ProbeRecipe = PROBE,
    device: str | torch.device = "cpu",
    real_acc: Sequence[float] | None = None,
) -> dict[str, Any]:
    """CAS and the real-trained accuracy beside it, per seed and as means with 95 % intervals.

    ``real_acc``: the per-seed real-trained accuracies when already known (they depend on the
    real data, seeds, recipe and device only: see :mod:`pipeline.evaluate.baselines`).
    Returns ``cas``, ``cas_ci95``, ``cas_per_seed``, ``real_acc``, ``real_acc_ci95``,
    ``real_acc_per_seed``, ``cas_ratio`` (mean CAS / mean real), ``cas_ratio_ci95`` (over the
    per-seed ratios), ``steps``.
    """
    seeds = [int(s) for s in seeds]
    real_list = [float(a) for a in (real_acc if real_acc is not None else real_accuracies(real, seeds, recipe, device))]
    if len(real_list) != len(seeds):
        raise ValueError(f"real_acc has {len(real_list)} values for {len(seeds)} seeds")
    cas = probe_accuracies(synth_u8, synth_labels, real.test_x, real.test_y, real.num_classes, seeds, recipe, device)
    return cas_summary(cas, real_list, recipe.steps_for(len(synth_u8)))


def cas_summary(cas: Sequence[float], real_acc: Sequence[float], steps: int) -> dict[str, Any]:
    """:func:`cas_report`'s figures from the per-seed CAS and real-trained accuracies."""
    cas, real_list = [float(a) for a in cas], [float(a) for a in real_acc]
    if len(cas) != len(real_list):
        raise ValueError(f"{len(cas)} CAS values for {len(real_list)} real accuracies")
    c, r = mean_ci95(cas), mean_ci95(real_list)
    ratios = [a / b if b > 0 else float("nan") for a, b in zip(cas, real_list, strict=True)]
    return {
        "cas": c["mean"], "cas_ci95": c["ci95"], "cas_per_seed": cas,
        "real_acc": r["mean"], "real_acc_ci95": r["ci95"], "real_acc_per_seed": real_list,
        "cas_ratio": c["mean"] / r["mean"] if r["mean"] > 0 else float("nan"),
        "cas_ratio_ci95": mean_ci95(ratios)["ci95"],
        "steps": int(steps),
    }
