"""Conditional DCGAN (Radford et al. 2015, conditioned as in Mirza & Osindero 2014).

The generator maps (z, label embedding) to a small spatial map and doubles it with
transposed convolutions until it reaches the image size; the discriminator mirrors it
and sees the label as extra one-hot channels. Depth follows the image size.
Sampling uses an EMA of the generator's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import AdversarialFamily, ImageShape, register


def upsampling_plan(size: int, max_doublings: int = 4) -> tuple[int, int]:
    """(start side, number of doublings) so that start * 2**k is as close to ``size`` as possible.

    8 -> (2, 2); 28 -> (7, 2); 32 -> (4, 3); 64 -> (4, 4). A size that doesn't divide
    evenly is generated at the next size up and resized.
    """
    min_start = 2 if size <= 8 else 4
    start, k = size, 0
    while start % 2 == 0 and start // 2 >= min_start and k < max_doublings:
        start //= 2
        k += 1
    if k == 0:  # odd or tiny sizes: start small and resize at the end
        k = max(1, min(max_doublings, int(size).bit_length() - 2))
        start = -(-size // (2**k))
    return start, k


class Generator(nn.Module):
    def __init__(self, image_shape: ImageShape, num_classes: int, latent_dim: int, base: int):
        super().__init__()
        c, h, w = image_shape
        self.out_size = (h, w)
        self.start, k = upsampling_plan(max(h, w))
        width = [min(base * 2 ** (k - i), base * 8) for i in range(k + 1)]
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Sequential(
            nn.Linear(2 * latent_dim, width[0] * self.start * self.start, bias=False),
            nn.BatchNorm1d(width[0] * self.start * self.start),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for i in range(k):
            last = i == k - 1
            cout = c if last else width[i + 1]
            layers.append(nn.ConvTranspose2d(width[i], cout, 4, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)
        self.width0 = width[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], dim=1))
        h = h.view(-1, self.width0, self.start, self.start)
        x = self.body(h)
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return torch.tanh(x)


class Discriminator(nn.Module):
    """Strided convolutions -> features; a real/fake logit with a projection term for the label
    (Miyato & Koyama 2018) and an auxiliary classifier head (AC-GAN, Odena et al. 2017).

    The two label paths make samples follow their label strongly, which is what a synthetic
    training set for classifiers needs (it is measured: classification accuracy score).
    """

    def __init__(self, image_shape: ImageShape, num_classes: int, base: int):
        super().__init__()
        c, h, w = image_shape
        _, k = upsampling_plan(max(h, w))
        layers: list[nn.Module] = []
        cin = c
        for i in range(k):
            cout = min(base * 2**i, base * 8)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.body(torch.zeros(1, c, h, w)).numel()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(flat, 4 * base), nn.LeakyReLU(0.2, True))
        self.adv = nn.Linear(4 * base, 1)
        self.embed = nn.Embedding(num_classes, 4 * base)
        self.cls = nn.Linear(4 * base, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(self.body(x))
        adv = self.adv(h).squeeze(1) + (self.embed(y) * h).sum(1)
        return adv, self.cls(h)


@register
class DCGAN(AdversarialFamily):
    kind = "dcgan"
    version = 3  # 2: projection + auxiliary-classifier discriminator; 3: augmentation on D inputs only

    def build(self) -> dict[str, nn.Module]:
        s = self.spec
        return {
            "generator": Generator(self.image_shape, self.num_classes, s.latent_dim, s.base_channels),
            "discriminator": Discriminator(self.image_shape, self.num_classes, s.base_channels),
        }
