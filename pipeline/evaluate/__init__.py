"""Sample-quality measurement and the quality gate.

Pure functions on uint8 (N, H, W, C) image arrays with int64 labels; no Ray needed.

* :mod:`~pipeline.evaluate.classifier` -- the small CNN behind the feature space
* :mod:`~pipeline.evaluate.probe` -- the probe classifiers of CAS and uplift, several seeds at once
* :mod:`~pipeline.evaluate.features` -- the per-dataset feature net, cached in storage
* :mod:`~pipeline.evaluate.fid` -- Fréchet distance (Heusel et al. 2017)
* :mod:`~pipeline.evaluate.cas` -- classification accuracy score (Ravuri & Vinyals 2019)
* :mod:`~pipeline.evaluate.uplift` -- uplift under three protocols (distill, same data, full)
* :mod:`~pipeline.evaluate.baselines` -- the real-only baselines, cached per dataset
* :mod:`~pipeline.evaluate.memorization` -- d1/d2 < 1/3 near-copies (Gu et al. 2025)
* :mod:`~pipeline.evaluate.gate` -- all of the above in one dict, and the GateSpec check
"""

from pipeline.evaluate.baselines import baseline_key, baseline_url, cached_baseline
from pipeline.evaluate.cas import cas_report, real_accuracies
from pipeline.evaluate.classifier import (
    FEATURE_RECIPE,
    ClassifierConfig,
    RealSplit,
    Recipe,
    SmallCNN,
    accuracy,
    extract_features,
    predict,
    train_classifier,
)
from pipeline.evaluate.features import cache_path, get_feature_net
from pipeline.evaluate.fid import fid, frechet_distance, frechet_distance_from_stats
from pipeline.evaluate.gate import UPLIFTS, check_gate, evaluate_quality
from pipeline.evaluate.memorization import MemorizationResult, memorization, nearest_two
from pipeline.evaluate.probe import PROBE, ProbeRecipe, mean_ci95, probe_accuracies
from pipeline.evaluate.uplift import base_accuracies, stratified_subset, synthetic_rows, uplift

__all__ = [
    "FEATURE_RECIPE", "PROBE", "UPLIFTS", "ClassifierConfig", "MemorizationResult", "ProbeRecipe", "RealSplit",
    "Recipe", "SmallCNN", "accuracy", "base_accuracies", "baseline_key", "baseline_url", "cache_path",
    "cached_baseline", "cas_report", "check_gate", "evaluate_quality", "extract_features", "fid",
    "frechet_distance", "frechet_distance_from_stats", "get_feature_net", "mean_ci95", "memorization",
    "nearest_two", "predict", "probe_accuracies", "real_accuracies", "stratified_subset", "synthetic_rows",
    "train_classifier", "uplift",
]
