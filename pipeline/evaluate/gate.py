"""The quality gate: every sample-quality metric in one flat dict, and the check against a GateSpec.

``evaluate_quality`` measures a batch of generated, labelled images against the job's
real data:

* ``fid`` -- Fréchet distance (Heusel et al. 2017) between generated and real-train
  features of the cached feature net, beside ``fid_real_floor`` (real train vs real
  test in the same space: the scale of a home-made feature space is arbitrary, so a
  generated FID only means something next to the real-vs-real figure);
* ``cas`` -- classification accuracy score (Ravuri & Vinyals 2019), beside ``real_acc``
  (probes trained on the real images the generator saw) and their ratio, means over probe
  seeds with 95 % intervals;
* ``uplift_distill`` / ``uplift_same_data`` / ``uplift_full`` -- accuracy gained by adding the
  synthetic images, under three protocols named for what the generator saw (uplift.py);
* ``memorization`` -- share of samples whose nearest image among the generator's own training
  images is much closer than the second nearest (d1/d2 < 1/3, Gu et al. 2025).

``check_gate`` turns a :class:`~pipeline.spec.GateSpec` and those metrics into a list of
human-readable failures; an empty list is a pass.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.baselines import baseline_key, read_baseline, write_baseline
from pipeline.evaluate.cas import cas_summary
from pipeline.evaluate.classifier import (
    FEATURE_RECIPE,
    RealSplit,
    Recipe,
    check_images,
    check_labels,
    extract_features,
)
from pipeline.evaluate.executor import SERIAL, Executor, Pending
from pipeline.evaluate.features import get_feature_net
from pipeline.evaluate.fid import frechet_distance
from pipeline.evaluate.memorization import RATIO_THRESHOLD, memorization
from pipeline.evaluate.probe import PROBE, ProbeRecipe, probe_accuracies
from pipeline.evaluate.uplift import UpliftDesign, base_accuracies
from pipeline.spec import GateSpec

#: the three uplift protocols (see pipeline/evaluate/uplift.py)
UPLIFTS = ("uplift_distill", "uplift_same_data", "uplift_full")


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


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
    recipe: ProbeRecipe = PROBE,
    feature_recipe: Recipe = FEATURE_RECIPE,
    seeds: int = 5,
    distill_fraction: float = 0.1,
    synthetic_ratio: float | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Measure generated images against real data; returns a flat JSON-able metrics dict.

    ``real``: the checked real split (:meth:`RealSplit.checked`): ``train_x`` is what the
    generator was trained on, ``pool_x`` the whole real train split. ``synth_u8``: uint8
    (N, H, W, C) with int64 labels. The feature net is loaded from (or trained into)
    ``<cache_url>/features-<dataset_key>.pt``; the real-only probe accuracies likewise from
    ``baselines-<dataset_key>-*.json`` there (:mod:`pipeline.evaluate.baselines`).
    ``seeds`` probe classifiers (``seed, seed+1, ...``) stand behind every CAS and uplift figure.

    Keys: ``fid``, ``fid_real_floor``, ``cas`` (+ ``_ci95``, ``_per_seed``), ``real_acc``,
    ``cas_ratio`` (+ ``_ci95``), for each of ``uplift_distill``, ``uplift_same_data`` and
    ``uplift_full``: the mean, ``_ci95``, ``_per_seed``, ``_base_acc``, ``_aug_acc``,
    ``_num_real``, ``_num_synthetic``; ``memorization`` (against the generator's own training
    images), ``generator_train_images``, ``uplift_protocols`` (one sentence each),
    ``eval_seconds`` and a few more details.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    synth_u8 = check_images(synth_u8, "synthetic")
    if real.train_x.shape[1:] != synth_u8.shape[1:]:
        raise ValueError(f"image shapes differ: real {real.train_x.shape[1:]}, synthetic {synth_u8.shape[1:]}")
    y_syn = check_labels(synth_labels, len(synth_u8), real.num_classes, "synth_labels")
    if len(synth_u8) < 2:
        raise ValueError(f"need at least 2 synthetic images, got {len(synth_u8)}")
    run = executor or SERIAL
    t = time.perf_counter()
    # everything below is trained independently: submit it all, then gather (executor.py)
    say("feature net: loading or training")
    net_job = run.submit(get_feature_net, cache_url, dataset_key, real.pool_x, real.pool_y, real.num_classes,
                         real.test_x, real.test_y, storage_options, seed=0, recipe=feature_recipe, device=device)

    # real-only probe accuracies: functions of the real rows, recipe, seeds and device (cached)
    seed_list = [int(seed) + i for i in range(max(1, int(seeds)))]
    nc, tx, ty = real.num_classes, real.test_x, real.test_y
    common = {"recipe": asdict(recipe), "seeds": seed_list, "num_classes": nc, "test": _digest(tx, ty)}
    baselines: dict[str, tuple[dict[str, Any], Any]] = {}  # name -> (cache key, stored value or job)

    def baseline(name: str, kind: str, x: np.ndarray, y: np.ndarray, fraction: float | None) -> None:
        key = baseline_key(kind, device, rows=_digest(x, y), n=len(x), fraction=fraction, **common)
        value = read_baseline(cache_url, dataset_key, key, storage_options)
        baselines[name] = (key, value if value is not None else run.submit(
            base_accuracies, x, y, tx, ty, nc, seeds=seed_list, fraction=fraction, recipe=recipe, device=device))

    saw_all = real.generator_saw_all
    baseline("real", "probe_real", real.train_x, real.train_y, None)  # = the same-data uplift's base side
    baseline("uplift_distill", "probe_subset", real.train_x, real.train_y, distill_fraction)
    if not saw_all:
        baseline("uplift_full", "probe_real", real.pool_x, real.pool_y, None)
    cas_job = run.submit(probe_accuracies, synth_u8, y_syn, tx, ty, nc, seed_list, recipe, device)
    designs: dict[str, UpliftDesign] = {}
    aug_jobs: dict[str, Pending] = {}
    reals = {"generator's": (real.train_x, real.train_y), "split": (real.pool_x, real.pool_y)}
    protocol_data = {"uplift_distill": ("generator's", distill_fraction), "uplift_same_data": ("generator's", None)}
    if not saw_all:  # else uplift_full is the same experiment as uplift_same_data: not run twice
        protocol_data["uplift_full"] = ("split", None)
    pools = {src: UpliftDesign.pool(*reals[src], synth_u8, y_syn, nc) for src, _ in protocol_data.values()}
    for name, (src, fraction) in protocol_data.items():
        d = designs[name] = UpliftDesign.build(*reals[src], synth_u8, y_syn, nc, seeds=seed_list, fraction=fraction,
                                               synthetic_ratio=synthetic_ratio, pool=pools[src])
        aug_jobs[name] = run.submit(probe_accuracies, d.pool_x, d.pool_y, tx, ty, nc, seed_list, recipe, device,
                                    members=d.members)

    timings: dict[str, float] = {}  # seconds each part took where it ran (side by side: more than the wall)
    net, info = net_job.result()
    timings["feature_net"] = round(net_job.seconds, 3)
    say(f"feature net: test accuracy {info['test_acc']:.4f} ({'cached' if info['from_cache'] else 'trained'})")
    t1 = time.perf_counter()
    f_train = extract_features(net, real.pool_x)
    f_test = extract_features(net, real.test_x)
    f_syn = extract_features(net, synth_u8)
    fid_value = frechet_distance(f_train, f_syn)
    fid_floor = frechet_distance(f_train, f_test)
    timings["fid"] = round(time.perf_counter() - t1, 3)
    say(f"fid {fid_value:.3f} (real floor {fid_floor:.3f})")

    from_cache: list[bool] = []
    base: dict[str, list[float]] = {}
    for name, (key, got) in baselines.items():
        hit = not hasattr(got, "result")
        value = got if hit else got.result()
        if not hit:
            write_baseline(cache_url, dataset_key, key, value, storage_options)
            timings[f"baseline_{name}"] = round(got.seconds, 3)
        from_cache.append(hit)
        base[name] = [float(v) for v in value]
    base["uplift_same_data"] = base["real"]
    cas = cas_summary(cas_job.result(), base["real"], recipe.steps_for(len(synth_u8)))
    timings["cas"] = round(cas_job.seconds, 3)
    say(f"cas {cas['cas']:.4f} vs real {cas['real_acc']:.4f} (ratio {cas['cas_ratio']:.4f}, {len(seed_list)} seeds)")

    ups: dict[str, dict[str, Any]] = {}
    for name, job in aug_jobs.items():
        up = ups[name] = designs[name].summary(base[name], job.result())
        timings[name] = round(job.seconds, 3)
        say(f"{name} {up['mean']:+.4f} (real {up['num_real']} + synthetic {up['num_synthetic']}: "
            f"{up['base_acc']:.4f} -> {up['aug_acc']:.4f})")
    if saw_all:
        ups["uplift_full"] = ups["uplift_same_data"]
    n_gen = len(real.train_x)
    protocols = {
        "uplift_distill": f"the generator saw {n_gen} real images; the classifier gets "
                          f"{ups['uplift_distill']['num_real']} of them ({distill_fraction:.0%}) with or without "
                          "synthetic images: the generator saw more real data than the classifier",
        "uplift_same_data": f"the classifier gets the same {n_gen} real images the generator was trained on, "
                            "with or without synthetic images",
        "uplift_full": f"the classifier gets the whole real train split ({len(real.pool_x)} images) with or "
                       "without synthetic images" + (" (the same experiment as uplift_same_data: the generator "
                                                      "saw the whole split)" if real.generator_saw_all else ""),
    }

    t1 = time.perf_counter()
    mem = memorization(synth_u8, real.train_x, threshold=RATIO_THRESHOLD, device=device)
    timings["memorization"] = round(time.perf_counter() - t1, 3)
    say(f"memorization {mem.fraction:.4f} (against the generator's {n_gen} training images)")

    out: dict[str, Any] = {
        "feature_net_test_acc": float(info["test_acc"]),
        "feature_net_from_cache": bool(info["from_cache"]),
        "fid": float(fid_value),
        "fid_real_floor": float(fid_floor),
        "cas": float(cas["cas"]),
        "cas_ci95": cas["cas_ci95"],
        "cas_per_seed": cas["cas_per_seed"],
        "real_acc": float(cas["real_acc"]),
        "real_acc_ci95": cas["real_acc_ci95"],
        "real_acc_per_seed": cas["real_acc_per_seed"],
        "cas_ratio": float(cas["cas_ratio"]),
        "cas_ratio_ci95": cas["cas_ratio_ci95"],
        "probe": recipe.kind,
        "probe_seeds": seed_list,
        "baselines_from_cache": bool(all(from_cache)),
    }
    for name, up in ups.items():
        out.update({name: float(up["mean"]), f"{name}_ci95": up["ci95"], f"{name}_per_seed": up["per_seed"],
                    f"{name}_base_acc": up["base_acc"], f"{name}_aug_acc": up["aug_acc"],
                    f"{name}_num_real": up["num_real"], f"{name}_num_synthetic": up["num_synthetic"]})
    out.update({
        "uplift_protocols": protocols,
        "synthetic_ratio": synthetic_ratio,
        "memorization": float(mem.fraction),
        "memorization_threshold": float(mem.threshold),
        "generator_train_images": int(n_gen),
        "num_synthetic": int(len(synth_u8)),
        "num_real_train": int(len(real.pool_x)),
        "num_real_test": int(len(real.test_x)),
        "seed": int(seed),
        "stage_seconds": timings,
        "probes_wall_seconds": round(time.perf_counter() - t, 3),
        "eval_seconds": round(time.perf_counter() - t0, 3),
    })
    return out


#: (GateSpec field, metric key, direction): "max" fails above the threshold, "min" below it
_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("fid_max", "fid", "max"),
    ("cas_min", "cas", "min"),
    ("memorization_max", "memorization", "max"),
    ("uplift_min", "uplift", "min"),
)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class GateFailure(str):
    """One failed check: the human-readable message (the string itself) and ``metric``, the
    metric it is about, for callers that act on which check failed (the gate's retry)."""

    metric: str

    def __new__(cls, metric: str, message: str) -> GateFailure:
        self = super().__new__(cls, message)
        self.metric = metric
        return self

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return GateFailure, (self.metric, str(self))


def check_gate(gate: GateSpec, metrics: dict[str, Any]) -> list[GateFailure]:
    """Human-readable failures of ``metrics`` against ``gate`` (empty list = pass).

    Thresholds that are ``None`` are skipped. A metric the gate needs that is missing or
    not a finite number fails the gate (never a silent pass).
    """
    failures: list[GateFailure] = []
    for field, key, direction in _CHECKS:
        if key == "uplift":
            key = gate.uplift_metric
        limit = getattr(gate, field)
        if limit is None:
            continue
        value = metrics.get(key)
        if value is None:
            failures.append(GateFailure(key, f"{key} missing ({field} {_fmt(limit)})"))
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            failures.append(GateFailure(key, f"{key} {value!r} is not a number ({field} {_fmt(limit)})"))
            continue
        if not math.isfinite(v):
            failures.append(GateFailure(key, f"{key} is {v} ({field} {_fmt(limit)})"))
        elif direction == "max" and v > limit:
            failures.append(GateFailure(key, f"{key} {_fmt(v)} > {field} {_fmt(limit)}"))
        elif direction == "min" and v < limit:
            failures.append(GateFailure(key, f"{key} {_fmt(v)} < {field} {_fmt(limit)}"))
    return failures
