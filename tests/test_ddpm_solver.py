"""The DDPM's samplers against an exact answer: for Gaussian data N(0, s^2 I) the noise predictor
is known in closed form, eps*(x_t) = sigma_t x_t / (alpha_t^2 s^2 + sigma_t^2), and the probability
flow ODE keeps x_t / sqrt(alpha_t^2 s^2 + sigma_t^2) constant, so x_0 = s x_T / sqrt(alpha_T^2 s^2 + sigma_T^2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models import build_model
from pipeline.spec import DDPMSpec

S = 0.3  # data scale: x0 stays inside [-1, 1], so the solvers' clipping never acts


class ExactEps(nn.Module):
    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.abar = abar

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a2 = self.abar[t].view(-1, 1, 1, 1).to(x.dtype)
        return (1 - a2).sqrt() * x / (a2 * S**2 + (1 - a2))


def _errors(sampler: str, steps: int) -> float:
    fam = build_model(DDPMSpec(kind="ddpm", timesteps=1000, schedule="cosine", sampler=sampler,
                               sample_steps=steps, guidance_scale=1.0, base_channels=8), (1, 4, 4), 2)
    net = ExactEps(fam.alphas_cumprod)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    a_T = float(fam.alphas_cumprod[999])
    exact = S * x_T / math.sqrt(a_T * S**2 + (1 - a_T))
    out = fam.generate(net, x_T, torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=torch.long))
    return float((out - exact).abs().max())


def test_dpm_solver_2m_is_second_order_and_ddim_first() -> None:
    # halving the step 4x: a second-order solver's error falls ~16x, a first-order one's ~4x
    ddim = _errors("ddim", 50) / _errors("ddim", 200)
    dpm = _errors("dpm++2m", 50) / _errors("dpm++2m", 200)
    assert 2.5 < ddim < 6, ddim
    assert dpm > 10, dpm
    assert _errors("dpm++2m", 200) < _errors("ddim", 200) / 3


def test_both_samplers_converge_to_the_exact_ode_solution() -> None:
    for sampler in ("ddim", "dpm++2m"):
        errs = [_errors(sampler, n) for n in (10, 25, 50, 200)]
        assert errs == sorted(errs, reverse=True), (sampler, errs)
    assert _errors("dpm++2m", 200) < 2e-3
