"""Sample-quality measurement and the quality gate.

Pure functions on uint8 (N, H, W, C) image arrays with int64 labels; no Ray needed.

* :mod:`~pipeline.evaluate.classifier` -- the small CNN behind every metric
* :mod:`~pipeline.evaluate.features` -- the per-dataset feature net, cached in storage
* :mod:`~pipeline.evaluate.fid` -- Fréchet distance (Heusel et al. 2017)
* :mod:`~pipeline.evaluate.cas` -- classification accuracy score (Ravuri & Vinyals 2019)
* :mod:`~pipeline.evaluate.uplift` -- augmentation uplift on a small real subset
* :mod:`~pipeline.evaluate.baselines` -- the real-only baselines, cached per dataset
* :mod:`~pipeline.evaluate.memorization` -- d1/d2 < 1/3 near-copies (Gu et al. 2025)
* :mod:`~pipeline.evaluate.gate` -- all of the above in one dict, and the GateSpec check
"""

from pipeline.evaluate.baselines import baseline_key, baseline_url, cached_baseline
from pipeline.evaluate.cas import cas_report, classification_accuracy_score
from pipeline.evaluate.classifier import (
    FEATURE_RECIPE,
    PROBE_RECIPE,
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
from pipeline.evaluate.gate import check_gate, evaluate_quality
from pipeline.evaluate.memorization import MemorizationResult, memorization, nearest_two
from pipeline.evaluate.uplift import augmentation_uplift, stratified_subset, uplift_baselines

__all__ = [
    "baseline_key",
    "baseline_url",
    "cached_baseline",
    "uplift_baselines",
    "FEATURE_RECIPE",
    "PROBE_RECIPE",
    "ClassifierConfig",
    "MemorizationResult",
    "RealSplit",
    "Recipe",
    "SmallCNN",
    "accuracy",
    "augmentation_uplift",
    "cache_path",
    "cas_report",
    "check_gate",
    "classification_accuracy_score",
    "evaluate_quality",
    "extract_features",
    "fid",
    "frechet_distance",
    "frechet_distance_from_stats",
    "get_feature_net",
    "memorization",
    "nearest_two",
    "predict",
    "stratified_subset",
    "train_classifier",
]
