"""One small interface for every generator family, and the registry that picks one by name.

A family owns its networks (``nets``), knows how to take one training step on a batch,
and how to turn per-image noise plus labels into images in [-1, 1]. The training loop,
the sampler and the checkpoint code only talk to this interface (torchtitan's habit:
components chosen by name from a registry; the loop knows nothing of the model).
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.spec import TrainSpec

ImageShape = tuple[int, int, int]  # (channels, height, width)
Augment = Callable[[torch.Tensor], torch.Tensor]  # a differentiable, label-preserving image transform


class ModelFamily(ABC):
    kind: ClassVar[str]
    #: the net whose EMA copy generates images (generator / decoder / unet)
    sampler_net: ClassVar[str]
    #: bump when the architecture or training step changes: runs (and their checkpoints) are
    #: named by it, so an upgraded genpipe trains afresh instead of loading foreign weights
    version: ClassVar[int] = 1

    def __init__(self, spec: Any, image_shape: ImageShape, num_classes: int):
        self.spec = spec
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.nets: dict[str, nn.Module] = self.build()
        self.ema: nn.Module = copy.deepcopy(self.nets[self.sampler_net]).eval().requires_grad_(False)
        self.ema_updates = 0

    # -- building -------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> dict[str, nn.Module]:
        """Create the trainable networks, keyed by name."""

    @abstractmethod
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the per-image noise that ``generate`` consumes."""

    def make_optimizers(self, nets: dict[str, nn.Module], train: TrainSpec) -> dict[str, torch.optim.Optimizer]:
        return {
            name: torch.optim.Adam(net.parameters(), lr=train.lr, betas=tuple(train.betas))
            for name, net in nets.items()
        }

    # -- training -------------------------------------------------------------------------
    @abstractmethod
    def train_step(
        self,
        nets: dict[str, nn.Module],
        opts: dict[str, torch.optim.Optimizer],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager,
        augment: Augment | None = None,
    ) -> dict[str, float]:
        """One optimisation step on a batch (x in [-1, 1], NCHW; y int64). Returns losses.

        ``nets`` are the (possibly DDP-wrapped) versions of ``self.nets``. ``augment`` (adversarial
        families only) is applied to every image the discriminator sees, real and generated alike,
        never to what the generator is trained to imitate.
        """

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of the sampler net, with the usual warm-up (decay <= (1 + n) / (10 + n) after n
        updates, as TensorFlow's ExponentialMovingAverage) so a short run's EMA is not mostly
        its random initialisation (0.999**1000 = 37%)."""
        self.ema_updates += 1
        n = self.ema_updates
        decay = min(float(self.spec.ema_decay), (1.0 + n) / (10.0 + n))
        src = self.nets[self.sampler_net]
        for e, p in zip(self.ema.parameters(), src.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), src.buffers(), strict=True):
            e.copy_(b)

    # -- sampling -------------------------------------------------------------------------
    @abstractmethod
    def generate(self, net: nn.Module, noise: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (NCHW float) from per-image noise and labels.

        ``seeds`` are the per-image seeds, for families that need more randomness than
        ``noise`` (stochastic samplers draw it with :func:`pipeline.rng.seeded_normal`).
        Must be a per-image function: image i depends only on noise[i], y[i], seeds[i].
        """

    # -- state ----------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> ModelFamily:
        for n in self.nets.values():
            n.to(device)
        self.ema.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "ema": self.ema.state_dict(),
            "ema_updates": self.ema_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint holds a {state.get('kind')!r} model, the spec asks for {self.kind!r}")
        if tuple(state.get("image_shape", ())) != self.image_shape:
            raise ValueError(
                f"checkpoint image shape {tuple(state.get('image_shape', ()))} != dataset's {self.image_shape}"
            )
        if state.get("num_classes") != self.num_classes:
            raise ValueError(f"checkpoint has {state.get('num_classes')} classes, the dataset {self.num_classes}")
        for k, v in self.nets.items():
            v.load_state_dict(state["nets"][k])
        self.ema.load_state_dict(state["ema"])
        self.ema_updates = int(state.get("ema_updates", 0))


class SingleLossFamily(ModelFamily):
    """A family trained by one optimizer on one loss (VAE, DDPM): it defines ``losses`` and names
    its optimizer; the training step is the same for all of them."""

    #: key of the optimizer in ``make_optimizers``' dict
    optimizer: ClassVar[str]

    @abstractmethod
    def losses(
        self,
        nets: dict[str, nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        """The batch's losses; ``"loss"`` is the one optimised, the others are reported."""

    def train_step(
        self,
        nets: dict[str, nn.Module],
        opts: dict[str, torch.optim.Optimizer],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager = contextlib.nullcontext(),
        augment: Augment | None = None,
    ) -> dict[str, float]:
        if augment is not None:  # spec validation refuses this; a direct caller is told why
            raise ValueError(f"{self.kind} imitates its training images: augmenting them would leak into samples")
        return optimize(opts[self.optimizer], self.losses(nets, x, y, autocast))


@contextlib.contextmanager
def _frozen(net: nn.Module) -> Any:
    """``net``'s weights take no gradient inside (its inputs still do), and under DDP its gradient
    all-reduce is off (``no_sync``): the generator's loss used to fill the discriminator's ``.grad``
    and all-reduce it on every step, only for the discriminator's next ``zero_grad`` to drop it.
    The same figures, bit for bit (``test_models.py``); a third less all-reduce per GAN step."""
    params = [p for p in net.parameters() if p.requires_grad]
    sync = net.no_sync() if hasattr(net, "no_sync") else contextlib.nullcontext()
    with sync:
        try:
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            for p in params:
                p.requires_grad_(True)


class AdversarialFamily(ModelFamily):
    """A conditional GAN (dcgan, gan): a ``generator(z, y)`` and a ``discriminator(x, y) ->
    (real/fake logit, class logits)`` trained with the same step: non-saturating loss with
    one-sided label smoothing plus an auxiliary-classifier term on both sides (AC-GAN). The
    families differ in their networks only."""

    sampler_net = "generator"

    def noise_shape(self) -> tuple[int, ...]:
        return (self.spec.latent_dim,)

    def train_step(
        self,
        nets: dict[str, nn.Module],
        opts: dict[str, torch.optim.Optimizer],
        x: torch.Tensor,
        y: torch.Tensor,
        autocast: contextlib.AbstractContextManager = contextlib.nullcontext(),
        augment: Augment | None = None,
    ) -> dict[str, float]:
        g, d = nets["generator"], nets["discriminator"]
        aug = augment or (lambda t: t)  # ADA-style: on every discriminator input, real and fake
        bce = nn.functional.binary_cross_entropy_with_logits
        ce = nn.functional.cross_entropy
        b = x.shape[0]
        real_target = torch.full((b,), 1.0 - self.spec.label_smoothing, device=x.device)
        zeros = torch.zeros(b, device=x.device)
        z = torch.randn(b, self.spec.latent_dim, device=x.device)
        with autocast:
            fake = g(z, y)
            adv_real, cls_real = d(aug(x), y)
            adv_fake, _ = d(aug(fake.detach()), y)
        loss_cls = ce(cls_real.float(), y)
        loss_d = bce(adv_real.float(), real_target) + bce(adv_fake.float(), zeros) + loss_cls
        opts["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["discriminator"].step()
        with _frozen(d):  # the generator's loss trains the generator only (see _frozen)
            with autocast:
                adv, cls = d(aug(fake), y)
            loss_g = bce(adv.float(), torch.ones(b, device=x.device)) + ce(cls.float(), y)
            opts["generator"].zero_grad(set_to_none=True)
            loss_g.backward()
        opts["generator"].step()
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), "loss_cls": float(loss_cls.detach())}

    def generate(self, net: nn.Module, noise: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return net(noise, y)


REGISTRY: dict[str, type[ModelFamily]] = {}


def register(cls: type[ModelFamily]) -> type[ModelFamily]:
    REGISTRY[cls.kind] = cls
    return cls


def family(kind: str) -> type[ModelFamily]:
    import pipeline.models  # noqa: F401  (registers every family)

    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(REGISTRY)}") from None


def build_model(spec: Any, image_shape: ImageShape, num_classes: int) -> ModelFamily:
    return family(spec.kind)(spec, image_shape, num_classes)


def optimize(opt: torch.optim.Optimizer, losses: dict[str, torch.Tensor], key: str = "loss") -> dict[str, float]:
    """One optimizer step on ``losses[key]``; returns every loss as a float (for families whose
    training step is a single loss)."""
    opt.zero_grad(set_to_none=True)
    losses[key].backward()
    opt.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW float -> NHWC uint8 on the same device."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
