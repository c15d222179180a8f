"""Classification Accuracy Score (Ravuri & Vinyals 2019, "Classification Accuracy Score
for Conditional Generative Models").

Train a fresh classifier *only* on generated, labelled images and measure its accuracy on
the real test split. A conditional generator that captures each class well scores close to
a classifier trained on the real training split, which is reported beside it
(``real_acc``): the ratio ``cas / real_acc`` is comparable across datasets.

Both classifiers use the same recipe and the same number of optimiser steps (the real
train split's budget), so the difference measures the data, not the compute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.evaluate.classifier import PROBE_RECIPE, RealSplit, Recipe, accuracy, train_classifier


def classification_accuracy_score(
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    real_test_u8: np.ndarray,
    real_test_labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    steps: int | None = None,
    recipe: Recipe = PROBE_RECIPE,
    device: str | torch.device = "cpu",
) -> float:
    """Accuracy on the real test split of a classifier trained only on ``synth_u8``.

    ``steps`` defaults to ``recipe.steps_for(len(synth_u8))``.
    """
    n = steps if steps is not None else recipe.steps_for(len(synth_u8))
    model = train_classifier(
        synth_u8, synth_labels, num_classes, seed=seed, steps=n, recipe=recipe, device=device
    )
    return accuracy(model, real_test_u8, real_test_labels)


def cas_report(
    real: RealSplit,
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    *,
    seed: int = 0,
    recipe: Recipe = PROBE_RECIPE,
    device: str | torch.device = "cpu",
    real_acc: float | None = None,
) -> dict[str, Any]:
    """CAS and the real-trained accuracy beside it, with one shared step budget.

    ``real_acc``: the real-trained accuracy when already known (it depends on the real data,
    ``seed``, ``recipe`` and device only: see :mod:`pipeline.evaluate.baselines`).
    Returns ``{"cas", "real_acc", "cas_ratio", "steps"}``.
    """
    steps = recipe.steps_for(len(real.train_x))
    kw: dict[str, Any] = {"seed": seed, "steps": steps, "recipe": recipe, "device": device}
    if real_acc is None:
        real_acc = classification_accuracy_score(real.train_x, real.train_y, real.test_x, real.test_y,
                                                 real.num_classes, **kw)
    cas = classification_accuracy_score(synth_u8, synth_labels, real.test_x, real.test_y, real.num_classes, **kw)
    return {
        "cas": cas,
        "real_acc": real_acc,
        "cas_ratio": cas / real_acc if real_acc > 0 else float("nan"),
        "steps": steps,
    }
