"""Training-time augmentation: a small random rotation and shift per image (classic recipe)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.spec import AugmentSpec


def random_affine(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate by U(-r, r) degrees and shift by U(-s, s) of the side, per image; border = background."""
    if not spec.enabled:
        return x
    n = x.shape[0]
    dev = x.device
    u = torch.rand(n, 3, generator=generator).to(dev) * 2 - 1
    ang = u[:, 0] * math.radians(spec.max_rotation)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = u[:, 1:] * spec.max_shift * 2  # grid coords span 2 units per side
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # pad with the background (-1 after normalisation): shift the signal so zero-padding means -1
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
