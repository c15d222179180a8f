"""Conditional VAE (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; conditioned on
the class label as in Sohn, Lee & Yan 2015, "Learning Structured Output Representation using
Deep Conditional Generative Models").

* encoder q(z | x, y): the label enters as one-hot channels next to the image; strided
  convolutions halve the image until the decoder's start size; a linear head gives the mean
  and log-variance of a diagonal Gaussian over z.
* decoder p(x | z, y): (z, label embedding) -> a small spatial map, doubled by
  (nearest upsample + 3x3 conv) stages until the image size (the depth plan is dcgan's
  ``upsampling_plan``: 8 -> 2x2 and two doublings, 28 -> 7x7 and two, 32 -> 4x4 and three).
  Its output, the mean of p(x | z, y), goes through tanh into [-1, 1].
* likelihood: a Gaussian with one shared variance set to its maximum-likelihood value, the
  batch's mean squared error ("optimal sigma", Rybkin, Daniilidis & Levine 2021, "Simple and
  Effective VAE Training with Calibrated Decoders"). A fixed variance (plain MSE) or a
  Bernoulli (BCE) decoder weighs the KL term so heavily on grey-level data that the posterior
  collapses: on the 8x8 digits both gave KL ~1-2 nats and near-identical samples per class,
  the calibrated decoder ~20 nats and varied samples. It also adapts to each dataset's scale.
* loss per image (nats, summed over pixels): Gaussian NLL + beta * KL(q || N(0, I)), averaged
  over the batch (beta-VAE weighting, Higgins et al. 2017; beta=1 is the ELBO). The NLL of a
  density can be negative, and so can the loss.

Only GroupNorm is used, so encoder and decoder are per-image functions in train and eval
mode alike. Sampling decodes z ~ N(0, I) (the per-image seeded noise) with the EMA decoder.

Loss keys returned by ``train_step``: ``loss`` (= loss_recon + beta * loss_kl),
``loss_recon`` (Gaussian NLL, nats per image), ``loss_kl`` (nats per image).
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import ImageShape, SingleLossFamily, register
from pipeline.models.dcgan import upsampling_plan
from pipeline.spec import TrainSpec

MIN_VAR = 1e-3  # floor of the decoder variance (sigma ~0.03, about 4 grey levels of 255)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (a divisor of ``channels``)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class Encoder(nn.Module):
    """q(z | x, y): returns (mu, logvar), each (B, latent_dim)."""

    def __init__(self, image_shape: ImageShape, num_classes: int, latent_dim: int, base: int):
        super().__init__()
        c, h, w = image_shape
        self.num_classes = num_classes
        start, k = upsampling_plan(max(h, w))
        width = [min(base * 2**i, base * 4) for i in range(k + 1)]
        self.stem = nn.Sequential(nn.Conv2d(c + num_classes, width[0], 3, 1, 1), group_norm(width[0]), nn.SiLU())
        self.body = nn.Sequential(
            *itertools.chain.from_iterable(
                (nn.Conv2d(width[i], width[i + 1], 4, 2, 1), group_norm(width[i + 1]), nn.SiLU()) for i in range(k)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(start)  # identity for sizes the plan divides exactly
        self.head = nn.Linear(width[k] * start * start, 2 * latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        h = self.pool(self.body(self.stem(torch.cat([x, onehot], dim=1))))
        mu, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """p(x | z, y): returns its mean (B, C, H, W), in [-1, 1]."""

    def __init__(self, image_shape: ImageShape, num_classes: int, latent_dim: int, base: int):
        super().__init__()
        c, h, w = image_shape
        self.out_size = (h, w)
        self.start, k = upsampling_plan(max(h, w))
        width = [min(base * 2 ** (k - i), base * 4) for i in range(k + 1)]
        self.width0 = width[0]
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Linear(2 * latent_dim, width[0] * self.start * self.start)
        self.norm0 = group_norm(width[0])
        self.body = nn.Sequential(
            *itertools.chain.from_iterable(
                (
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(width[i], width[i + 1], 3, 1, 1),
                    group_norm(width[i + 1]),
                    nn.SiLU(),
                )
                for i in range(k)
            )
        )
        self.out = nn.Conv2d(width[k], c, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], dim=1)).view(-1, self.width0, self.start, self.start)
        x = self.out(self.body(F.silu(self.norm0(h))))
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return torch.tanh(x)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over latent dims (Kingma & Welling, App. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def calibrated_gaussian_nll(mean: torch.Tensor, x: torch.Tensor, min_var: float = MIN_VAR) -> torch.Tensor:
    """-log N(x; mean, s2 I) per image, summed over pixels, with s2 the batch's mean squared
    error (its maximum-likelihood value, held constant for the gradient; Rybkin et al. 2021)."""
    se = (x - mean).pow(2).flatten(1)
    var = se.mean().detach().clamp(min=min_var)
    return se.sum(dim=1) / (2.0 * var) + 0.5 * se.shape[1] * torch.log(2.0 * math.pi * var)


@register
class ConditionalVAE(SingleLossFamily):
    """Conditional VAE family: nets ``encoder`` and ``decoder``; the EMA decoder generates."""

    kind = "vae"
    sampler_net = "decoder"
    optimizer = "vae"

    def build(self) -> dict[str, nn.Module]:
        s = self.spec
        return {
            "encoder": Encoder(self.image_shape, self.num_classes, s.latent_dim, s.base_channels),
            "decoder": Decoder(self.image_shape, self.num_classes, s.latent_dim, s.base_channels),
        }

    def noise_shape(self) -> tuple[int, ...]:
        return (self.spec.latent_dim,)

    def make_optimizers(self, nets: dict[str, nn.Module], train: TrainSpec) -> dict[str, torch.optim.Optimizer]:
        """One Adam over encoder + decoder: the ELBO is one objective of both."""
        params = itertools.chain(nets["encoder"].parameters(), nets["decoder"].parameters())
        return {"vae": torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas))}

    # -- training -------------------------------------------------------------------------
    def losses(
        self,
        nets: dict[str, nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager = contextlib.nullcontext(),
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO terms, per image, batch-averaged, in float32. ``loss`` is what is minimised."""
        with autocast:
            mu, logvar = nets["encoder"](x, y)
            mu, logvar = mu.float(), logvar.float()
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterization trick
            mean = nets["decoder"](z, y)
        recon = calibrated_gaussian_nll(mean.float(), x.float()).mean()
        kl = kl_to_standard_normal(mu, logvar).mean()
        return {"loss": recon + self.spec.beta * kl, "loss_recon": recon, "loss_kl": kl}

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, net: nn.Module, noise: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Decode prior samples z = noise (B, latent_dim) given labels into images in [-1, 1]."""
        return net(noise, y).float()
