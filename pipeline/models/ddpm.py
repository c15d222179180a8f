"""Class-conditional DDPM with classifier-free guidance and DDIM sampling.

* Training is Ho, Jain & Abbeel 2020 ("Denoising Diffusion Probabilistic Models"): draw
  t ~ U{0..T-1} and eps ~ N(0, I), form x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps and
  regress the network's eps prediction onto eps (the "simple" MSE loss).
* Noise schedule: ``linear`` (Ho et al., betas 1e-4..0.02 rescaled to T steps as in
  improved-diffusion) or ``cosine`` (Nichol & Dhariwal 2021, "Improved DDPM").
* Conditioning: the label embedding has one extra "null" class; during training each label
  is replaced by it with probability ``cond_drop_prob`` so one network learns both the
  conditional and the unconditional model (Ho & Salimans 2022, "Classifier-Free Diffusion
  Guidance"). Sampling uses eps_uncond + w * (eps_cond - eps_uncond), both halves in one
  batched forward.
* Sampling: DDIM with eta = 0 (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit
  Models") over ``sample_steps`` evenly spaced timesteps, so an image is a deterministic
  function of its x_T (the per-image seeded noise) and its label.
* Network: a small UNet (Ronneberger et al. 2015 as used by Ho et al.): residual blocks
  with GroupNorm and a FiLM scale/shift from the (time + label) embedding (Dhariwal &
  Nichol 2021), self-attention at the lowest resolution. Resolutions are halved while the
  side stays even and >= 4, at most three levels: 8 -> 8,4; 28 -> 28,14,7;
  32 -> 32,16,8; 64 -> 64,32,16. Every layer is per-image (no batch statistics).

Loss keys returned by ``train_step``: ``loss`` (the eps-prediction MSE).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import ImageShape, SingleLossFamily, register
from pipeline.spec import DDPMSpec

CHANNEL_MULTS = (1, 2, 2)  # width of each resolution level, in units of base_channels
DROPOUT = 0.0


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (a divisor of ``channels``)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


# -- noise schedule ------------------------------------------------------------------------
def beta_schedule(name: str, timesteps: int) -> torch.Tensor:
    """Betas (T,) in float64. ``linear``: Ho et al. 2020, rescaled by 1000/T; ``cosine``: Nichol & Dhariwal 2021."""
    if name == "linear":
        scale = 1000.0 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    elif name == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1.0 - f[1:] / f[:-1]
    else:
        raise ValueError(f"unknown noise schedule {name!r}; expected 'linear' or 'cosine'")
    return betas.clamp(0.0, 0.999)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` strictly increasing training timesteps from 0 to T-1, evenly spaced (integer arithmetic)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"DDIM steps must lie in [1, {timesteps}], got {steps}")
    if steps == 1:
        return [timesteps - 1]
    return [i * (timesteps - 1) // (steps - 1) for i in range(steps)]


# -- the UNet ------------------------------------------------------------------------------
def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style position embedding of (B,) timesteps -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM by the embedding, GN-SiLU-dropout-conv (zero-initialised), plus a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = DROPOUT):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of one image (residual, zero-initialised output)."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = 4 if channels % 4 == 0 and channels >= 64 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (b, hw, c)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(a).transpose(1, 2).reshape(b, c, h, w)


def resolution_levels(h: int, w: int, max_levels: int = len(CHANNEL_MULTS)) -> int:
    """How many resolutions the UNet uses: halve while both sides are even and stay >= 4."""
    levels = 1
    while levels < max_levels and h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= 4:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


class UNet(nn.Module):
    """eps_theta(x_t, t, y). Label ``num_classes`` is the null (unconditional) label."""

    def __init__(self, image_shape: ImageShape, num_classes: int, base: int):
        super().__init__()
        c, h, w = image_shape
        levels = resolution_levels(h, w)
        ch = [base * m for m in CHANNEL_MULTS[:levels]]
        emb_dim = 4 * base
        self.base = base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim)

        self.conv_in = nn.Conv2d(c, base, 3, 1, 1)
        self.down = nn.ModuleList()
        cin = base
        for i, cout in enumerate(ch):
            last = i == levels - 1
            down = nn.Identity() if last else nn.Conv2d(cout, cout, 3, 2, 1)
            self.down.append(nn.ModuleList([ResBlock(cin, cout, emb_dim), down]))
            cin = cout
        self.mid = ResBlock(ch[-1], ch[-1], emb_dim)
        self.mid_attn = SelfAttention(ch[-1])
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            up: nn.Module = (
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, 1, 1))
                if i > 0
                else nn.Identity()
            )
            self.up.append(nn.ModuleList([ResBlock(2 * ch[i], ch[i], emb_dim), up]))
        self.norm_out = group_norm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], c, 3, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.base)) + self.label_emb(y)
        h = self.conv_in(x)
        skips: list[torch.Tensor] = []
        for block, down in self.down:
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid_attn(self.mid(h, emb))
        for block, up in self.up:
            h = up(block(torch.cat([h, skips.pop()], dim=1), emb))
        return self.conv_out(F.silu(self.norm_out(h)))


# -- the family ----------------------------------------------------------------------------
@register
class DDPM(SingleLossFamily):
    """Conditional DDPM family: one net ``unet`` (its EMA copy samples with guided DDIM)."""

    kind = "ddpm"
    sampler_net = "unet"
    optimizer = "unet"

    def __init__(self, spec: DDPMSpec, image_shape: ImageShape, num_classes: int):
        super().__init__(spec, image_shape, num_classes)
        self.null_label = num_classes
        self.alphas_cumprod = torch.cumprod(1.0 - beta_schedule(spec.schedule, spec.timesteps), dim=0)  # float64

    def build(self) -> dict[str, nn.Module]:
        return {"unet": UNet(self.image_shape, self.num_classes, self.spec.base_channels)}

    def noise_shape(self) -> tuple[int, ...]:
        return tuple(self.image_shape)

    # -- training -------------------------------------------------------------------------
    def losses(
        self,
        nets: dict[str, nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager = contextlib.nullcontext(),
    ) -> dict[str, torch.Tensor]:
        """Ho et al.'s simple loss ||eps - eps_theta(x_t, t, y)||^2 with label dropout, in float32."""
        b = x.shape[0]
        x0 = x.float()
        t = torch.randint(0, self.spec.timesteps, (b,), device=x.device)
        eps = torch.randn_like(x0)
        abar = self.alphas_cumprod.to(device=x.device, dtype=torch.float32)[t].view(b, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps
        drop = torch.rand(b, device=x.device) < self.spec.cond_drop_prob
        y_in = torch.where(drop, torch.full_like(y, self.null_label), y)
        with autocast:
            pred = nets["unet"](x_t, t, y_in)
        return {"loss": F.mse_loss(pred.float(), eps)}

    # -- sampling -------------------------------------------------------------------------
    def guided_eps(self, net: nn.Module, x: torch.Tensor, t: int, y: torch.Tensor, w: float) -> torch.Tensor:
        """eps_uncond + w * (eps_cond - eps_uncond); cond and uncond share one batched forward."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if w == 1.0:
            return net(x, tt, y).float()
        null = torch.full_like(y, self.null_label)
        if w == 0.0:
            return net(x, tt, null).float()
        eps_c, eps_u = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).float().chunk(2)
        return eps_u + w * (eps_c - eps_u)

    @torch.no_grad()
    def ddim_sample(self, net: nn.Module, x_T: torch.Tensor, y: torch.Tensor, steps: int, w: float) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from x_T over ``steps`` timesteps; returns x_0 in [-1, 1]."""
        abar = self.alphas_cumprod.tolist()
        ts = ddim_timesteps(self.spec.timesteps, steps)
        x = x_T.float()
        for i in reversed(range(len(ts))):
            a_t = abar[ts[i]]
            a_prev = abar[ts[i - 1]] if i > 0 else 1.0
            eps = self.guided_eps(net, x, ts[i], y, w)
            x0 = ((x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)).clamp(-1.0, 1.0)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)  # consistent with the clipped x0
            x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        return x.clamp(-1.0, 1.0)

    @torch.no_grad()
    def dpm_solver_sample(self, net: nn.Module, x_T: torch.Tensor, y: torch.Tensor, steps: int,
                          w: float) -> torch.Tensor:
        """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models", Algorithm 2): the probability-flow ODE in log-SNR time with the
        data prediction x0 (clipped to [-1, 1], the thresholding the paper recommends for guided
        sampling), second order from the previous step's x0; the first step and the last (to the
        clean image, sigma = 0) are first order, as diffusers' ``lower_order_final``. Same
        timesteps as DDIM; one network call per step. Returns x_0 in [-1, 1]."""
        abar = self.alphas_cumprod.tolist()
        ts = list(reversed(ddim_timesteps(self.spec.timesteps, steps)))
        x = x_T.float()
        x0_prev, lam_prev = None, 0.0
        for i, t in enumerate(ts):
            a_t, s_t = math.sqrt(abar[t]), math.sqrt(1.0 - abar[t])
            lam = math.log(a_t / s_t)
            eps = self.guided_eps(net, x, t, y, w)
            x0 = ((x - s_t * eps) / a_t).clamp(-1.0, 1.0)
            if i == len(ts) - 1:  # to sigma = 0: the first-order step lands on x0 itself
                x = x0
                break
            t_next = ts[i + 1]
            a_n, s_n = math.sqrt(abar[t_next]), math.sqrt(1.0 - abar[t_next])
            h = math.log(a_n / s_n) - lam
            d = x0
            if x0_prev is not None:  # second order: extrapolate x0 from the last two steps
                r = (lam - lam_prev) / h
                d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
            x = (s_n / s_t) * x - a_n * math.expm1(-h) * d
            x0_prev, lam_prev = x0, lam
        return x.clamp(-1.0, 1.0)

    def generate(self, net: nn.Module, noise: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Images from x_T = noise (B, C, H, W): ``sampler`` (DDIM or DPM-Solver++ 2M) in ``sample_steps``
        steps with ``guidance_scale``."""
        solve = self.dpm_solver_sample if self.spec.sampler == "dpm++2m" else self.ddim_sample
        return solve(net, noise, y, self.spec.sample_steps, float(self.spec.guidance_scale))
