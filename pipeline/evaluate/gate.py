"""The quality gate: every sample-quality metric in one flat dict, and the check against a GateSpec.

``evaluate_quality`` measures a batch of generated, labelled images against the job's
real data:

* ``fid`` -- Fréchet distance (Heusel et al. 2017) between generated and real-train
  features of the cached feature net, beside ``fid_real_floor`` (real train vs real
  test in the same space: the scale of a home-made feature space is arbitrary, so a
  generated FID only means something next to the real-vs-real figure);
* ``cas`` -- classification accuracy score (Ravuri & Vinyals 2019), beside ``real_acc``
  (the same recipe and step budget trained on the real train split) and their ratio;
* ``uplift_mean`` -- augmentation uplift on a 10 % real subset, mean over seeds;
* ``memorization`` -- share of samples whose nearest training image is much closer than
  the second nearest (d1/d2 < 1/3, Gu et al. 2025).

``check_gate`` turns a :class:`~pipeline.spec.GateSpec` and those metrics into a list of
human-readable failures; an empty list is a pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.baselines import baseline_key, cached_baseline
from pipeline.evaluate.cas import cas_report, classification_accuracy_score
from pipeline.evaluate.classifier import (
    FEATURE_RECIPE,
    PROBE_RECIPE,
    RealSplit,
    Recipe,
    check_images,
    check_labels,
    extract_features,
)
from pipeline.evaluate.features import get_feature_net
from pipeline.evaluate.fid import frechet_distance
from pipeline.evaluate.memorization import RATIO_THRESHOLD, memorization
from pipeline.evaluate.uplift import augmentation_uplift, seed_list_of, uplift_baselines
from pipeline.spec import GateSpec


def evaluate_quality(
    real: RealSplit,
    synth_u8: np.ndarray,
    synth_labels: np.ndarray,
    cache_url: str,
    dataset_key: str,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    device: str | torch.device = "cpu",
    recipe: Recipe = PROBE_RECIPE,
    feature_recipe: Recipe = FEATURE_RECIPE,
    uplift_seeds: int = 3,
    uplift_fraction: float = 0.1,
    uplift_max_synthetic: int | None = None,
) -> dict[str, Any]:
    """Measure generated images against real data; returns a flat JSON-able metrics dict.

    ``real``: the checked real split (:meth:`RealSplit.checked`); ``synth_u8``: uint8 (N, H, W, C)
    with int64 labels. The feature net is loaded from (or trained into)
    ``<cache_url>/features-<dataset_key>.pt``; the real-only baselines (CAS's ``real_acc``, the
    uplift's real-subset accuracies) likewise from ``baselines-<dataset_key>-*.json`` there
    (:mod:`pipeline.evaluate.baselines`): a dataset evaluated before costs half the time.
    ``seed`` fixes the fresh classifiers (CAS, real baseline, uplift subsets); ``recipe`` is their training recipe.

    Keys: ``feature_net_test_acc``, ``feature_net_from_cache``, ``fid``, ``fid_real_floor``,
    ``cas``, ``real_acc``, ``cas_ratio``, ``uplift_mean``, ``uplift_per_seed``,
    ``uplift_base_acc``, ``uplift_aug_acc``, ``memorization``, ``num_synthetic``,
    ``num_real_train``, ``num_real_test``, ``eval_seconds`` and a few more details.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    synth_u8 = check_images(synth_u8, "synthetic")
    if real.train_x.shape[1:] != synth_u8.shape[1:]:
        raise ValueError(f"image shapes differ: real {real.train_x.shape[1:]}, synthetic {synth_u8.shape[1:]}")
    y_syn = check_labels(synth_labels, len(synth_u8), real.num_classes, "synth_labels")
    if len(synth_u8) < 2:
        raise ValueError(f"need at least 2 synthetic images, got {len(synth_u8)}")
    timings: dict[str, float] = {}

    def lap(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    say("feature net: loading or training")
    net, info = get_feature_net(
        cache_url,
        dataset_key,
        real.train_x,
        real.train_y,
        real.num_classes,
        real.test_x,
        real.test_y,
        storage_options,
        seed=0,
        recipe=feature_recipe,
        device=device,
    )
    say(
        f"feature net: test accuracy {info['test_acc']:.4f} ({'cached' if info['from_cache'] else 'trained'})"
    )
    f_train = extract_features(net, real.train_x)
    f_test = extract_features(net, real.test_x)
    f_syn = extract_features(net, synth_u8)
    fid_value = frechet_distance(f_train, f_syn)
    fid_floor = frechet_distance(f_train, f_test)
    lap("fid", t)
    say(f"fid {fid_value:.3f} (real floor {fid_floor:.3f})")

    # real-only baselines: measured once per dataset, recipe, seeds and device (see baselines.py)
    t = time.perf_counter()
    common = {"recipe": asdict(recipe), "num_classes": real.num_classes, "num_train": len(real.train_x),
              "num_test": len(real.test_x), "steps": recipe.steps_for(len(real.train_x))}
    real_acc, real_cached = cached_baseline(
        cache_url, dataset_key, baseline_key("real_acc", device, seed=int(seed), **common),
        lambda: classification_accuracy_score(real.train_x, real.train_y, real.test_x, real.test_y, real.num_classes,
                                              seed=seed, steps=common["steps"], recipe=recipe, device=device),
        storage_options)
    seed_list = seed_list_of(uplift_seeds, seed)
    base_acc, base_cached = cached_baseline(
        cache_url, dataset_key,
        baseline_key("uplift_base", device, seeds=seed_list, fraction=float(uplift_fraction), **common),
        lambda: uplift_baselines(real, fraction=uplift_fraction, seeds=seed_list, recipe=recipe, device=device),
        storage_options)
    lap("baselines", t)
    say(f"real baselines: accuracy {real_acc:.4f}, uplift subsets {', '.join(f'{b:.4f}' for b in base_acc)} "
        f"({'cached' if real_cached and base_cached else 'measured'})")

    t = time.perf_counter()
    cas = cas_report(
        real,
        synth_u8,
        y_syn,
        seed=seed,
        recipe=recipe,
        device=device,
        real_acc=float(real_acc),
    )
    lap("cas", t)
    say(f"cas {cas['cas']:.4f} vs real {cas['real_acc']:.4f}")

    t = time.perf_counter()
    up = augmentation_uplift(
        real,
        synth_u8,
        y_syn,
        fraction=uplift_fraction,
        seeds=seed_list,
        max_synthetic=uplift_max_synthetic,
        recipe=recipe,
        device=device,
        progress=say,
        base_acc=base_acc,
    )
    lap("uplift", t)
    say(f"uplift {up['uplift_mean']:+.4f}")

    t = time.perf_counter()
    mem = memorization(synth_u8, real.train_x, threshold=RATIO_THRESHOLD, device=device)
    lap("memorization", t)
    say(f"memorization {mem.fraction:.4f}")

    return {
        "feature_net_test_acc": float(info["test_acc"]),
        "feature_net_from_cache": bool(info["from_cache"]),
        "fid": float(fid_value),
        "fid_real_floor": float(fid_floor),
        "cas": float(cas["cas"]),
        "real_acc": float(cas["real_acc"]),
        "cas_ratio": float(cas["cas_ratio"]),
        "classifier_steps": int(cas["steps"]),
        "baselines_from_cache": bool(real_cached and base_cached),
        "uplift_mean": float(up["uplift_mean"]),
        "uplift_per_seed": list(up["uplift_per_seed"]),
        "uplift_base_acc": float(up["base_acc"]),
        "uplift_aug_acc": float(up["aug_acc"]),
        "uplift_fraction": float(up["fraction"]),
        "uplift_num_real": int(up["num_real_subset"]),
        "uplift_num_synthetic": int(up["num_synthetic_used"]),
        "memorization": float(mem.fraction),
        "memorization_threshold": float(mem.threshold),
        "num_synthetic": int(len(synth_u8)),
        "num_real_train": int(len(real.train_x)),
        "num_real_test": int(len(real.test_x)),
        "seed": int(seed),
        "stage_seconds": timings,
        "eval_seconds": round(time.perf_counter() - t0, 3),
    }


#: (GateSpec field, metric key, direction): "max" fails above the threshold, "min" below it
_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("fid_max", "fid", "max"),
    ("cas_min", "cas", "min"),
    ("memorization_max", "memorization", "max"),
    ("uplift_min", "uplift_mean", "min"),
)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def check_gate(gate: GateSpec, metrics: dict[str, Any]) -> list[str]:
    """Human-readable failures of ``metrics`` against ``gate`` (empty list = pass).

    Thresholds that are ``None`` are skipped. A metric the gate needs that is missing or
    not a finite number fails the gate (never a silent pass).
    """
    failures: list[str] = []
    for field, key, direction in _CHECKS:
        limit = getattr(gate, field)
        if limit is None:
            continue
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key} missing ({field} {_fmt(limit)})")
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            failures.append(f"{key} {value!r} is not a number ({field} {_fmt(limit)})")
            continue
        if not math.isfinite(v):
            failures.append(f"{key} is {v} ({field} {_fmt(limit)})")
        elif direction == "max" and v > limit:
            failures.append(f"{key} {_fmt(v)} > {field} {_fmt(limit)}")
        elif direction == "min" and v < limit:
            failures.append(f"{key} {_fmt(v)} < {field} {_fmt(limit)}")
    return failures
