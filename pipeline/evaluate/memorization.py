"""Memorization: how many generated images are near-copies of one training image.

Following Gu et al. 2025 ("On Memorization in Diffusion Models", TMLR; code:
sail-sg/DiffMemorize), a generated sample x counts as memorized when its nearest training
image is much closer than the second nearest, in pixel L2:

    d(x, NN1) / d(x, NN2) < 1/3.

A sample that copies one training image has d1 ~ 0 and a ratio near 0; a novel sample
sits roughly equally far from its two nearest neighbours (ratio near 1).

Exact duplicate images in the training set are collapsed first: otherwise a copy of an
image that appears twice would have d1 = d2 = 0 and an undefined ratio, and the "second
nearest" would not be a different image at all.

Distances are computed in float32 with chunked ``torch.cdist`` (memory O(chunk x N_train)),
then the few best candidates of every sample are re-measured exactly in float64, so a
10k x 10k comparison fits in a few hundred MB and exact copies get d1 = 0 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluate.classifier import check_images, from_numpy

#: the memorization threshold of Gu et al. 2025
RATIO_THRESHOLD = 1.0 / 3.0


@dataclass
class MemorizationResult:
    fraction: float  # share of generated samples with d1/d2 < threshold
    ratios: np.ndarray | None  # (N,) d1/d2 per generated sample, float64
    nearest: np.ndarray | None  # (N,) index into the *given* train array of each sample's nearest image
    threshold: float
    num_train_unique: int


def _flat(a: np.ndarray) -> torch.Tensor:
    return from_numpy(check_images(a).reshape(len(a), -1)).to(torch.float32)


def _nearest_two(
    generated_u8: np.ndarray, train_u8: np.ndarray, chunk: int, candidates: int, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if generated_u8.shape[1:] != train_u8.shape[1:]:
        raise ValueError(f"generated images {generated_u8.shape[1:]} vs training images {train_u8.shape[1:]}")
    flat_train = np.ascontiguousarray(check_images(train_u8, "train").reshape(len(train_u8), -1))
    uniq, first = np.unique(flat_train, axis=0, return_index=True)
    if len(uniq) < 2:
        raise ValueError("need at least two distinct training images")
    device = torch.device(device)
    train = from_numpy(uniq).to(device=device, dtype=torch.float32)  # 0..255 exact in float32
    gen_all = _flat(generated_u8)
    k = min(candidates, len(uniq))
    d1s, d2s, nn = [], [], []
    for i in range(0, len(gen_all), chunk):
        g = gen_all[i : i + chunk].to(device)
        d = torch.cdist(g, train, compute_mode="use_mm_for_euclid_dist")  # float32, fast
        cand = d.topk(k, dim=1, largest=False).indices  # (b, k)
        # re-measure the candidates exactly: mm-based float32 distances lose small values
        g64 = g.double()
        exact = torch.stack([(g64 - train[cand[:, j]].double()).norm(dim=1) for j in range(k)], 1)
        exact, order = exact.sort(dim=1)
        d1s.append(exact[:, 0].cpu())
        d2s.append(exact[:, 1].cpu())
        nn.append(cand.gather(1, order[:, :1]).squeeze(1).cpu())
    if not d1s:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), len(uniq)
    nearest = first[torch.cat(nn).numpy()].astype(np.int64)
    return torch.cat(d1s).numpy(), torch.cat(d2s).numpy(), nearest, len(uniq)


def nearest_two(
    generated_u8: np.ndarray,
    train_u8: np.ndarray,
    chunk: int = 1024,
    candidates: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-L2 distances to the nearest and second-nearest *distinct* training images.

    Returns ``(d1, d2, nearest_index)``: float64 distances on the 0..255 pixel scale, and
    the index into ``train_u8`` of each sample's nearest image.
    """
    d1, d2, nearest, _ = _nearest_two(generated_u8, train_u8, chunk, candidates, device)
    return d1, d2, nearest


def memorization(
    generated_u8: np.ndarray,
    train_u8: np.ndarray,
    threshold: float = RATIO_THRESHOLD,
    return_ratios: bool = False,
    chunk: int = 1024,
    device: str | torch.device = "cpu",
) -> MemorizationResult:
    """Fraction of generated images whose nearest training image is much closer than the
    second nearest (d1/d2 < ``threshold``, 1/3 in Gu et al. 2025).

    With ``return_ratios`` the result also carries the per-sample ratios and the index of
    each sample's nearest training image.
    """
    d1, d2, nearest, n_uniq = _nearest_two(generated_u8, train_u8, chunk, 8, device)
    ratios = d1 / d2  # d2 > 0: the training images are distinct, so at most one is at distance 0
    frac = float((ratios < threshold).mean()) if len(ratios) else float("nan")
    return MemorizationResult(
        fraction=frac,
        ratios=ratios if return_ratios else None,
        nearest=nearest if return_ratios else None,
        threshold=float(threshold),
        num_train_unique=n_uniq,
    )
