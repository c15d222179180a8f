"""Fréchet distance between feature distributions (FID, Heusel et al. 2017, "GANs Trained
by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium").

Each set of features is summarised by a Gaussian (mean, covariance) and

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

The trace of the matrix square root is computed in the symmetric form
``tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})`` (the same eigenvalues as ``S_a S_b``): two
symmetric eigendecompositions in float64, no complex parts, no iteration, and no
``eps * I`` offset needed when a covariance is singular (fewer samples than dimensions).

The feature space here is a small classifier trained on the job's real data (see
:mod:`pipeline.evaluate.features`), so absolute values are on an arbitrary scale: always
read an FID beside the real-vs-real floor that :func:`pipeline.evaluate.gate.evaluate_quality`
reports. FID is also biased upward for small sample counts; compare like with like.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluate.classifier import SmallCNN, extract_features


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b) (squared 2-Wasserstein)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64).ravel(), np.asarray(mu_b, np.float64).ravel()
    sa, sb = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sa.shape != sb.shape or sa.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"shape mismatch: mu {mu_a.shape}/{mu_b.shape}, sigma {sa.shape}/{sb.shape}")
    root_a = _sqrt_psd(sa)
    m = root_a @ sb @ root_a
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    d = float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * tr_covmean)
    # exact arithmetic gives d >= 0; only round-off (~1e-12 relative) can make it negative
    return max(d, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two (N, D) feature arrays (Heusel et al. 2017), in float64."""
    fa, fb = np.asarray(feats_a), np.asarray(feats_b)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature arrays must be (N, D) with the same D, got {fa.shape} and {fb.shape}")
    return frechet_distance_from_stats(*feature_stats(fa), *feature_stats(fb))


def fid(model: SmallCNN, images_a: np.ndarray, images_b: np.ndarray) -> float:
    """FID of two uint8 (N, H, W, C) image sets in ``model``'s penultimate feature space."""
    return frechet_distance(extract_features(model, images_a), extract_features(model, images_b))
