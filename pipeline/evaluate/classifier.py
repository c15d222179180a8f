"""A small CNN classifier: the yardstick behind FID features, CAS and augmentation uplift.

Inception-v3 weights can't be downloaded here and are the wrong yardstick for 8x8 or
28x28 digits anyway, so, as in the "MNIST FID" literature, the feature space is a small
classifier trained on the real data of the job itself. The same recipe trains the fresh
classifiers of the classification accuracy score (Ravuri & Vinyals 2019, "Classification
Accuracy Score for Conditional Generative Models") and of the augmentation-uplift test.

Inputs everywhere are what the sampler writes and what the data layer gives for real
data: uint8 arrays of shape (N, H, W, C), C in {1, 3}, with int64 labels. They are mapped
to [-1, 1] by the inverse of the sampler's rule ``((x + 1) * 127.5).round().clip(0, 255)``.

Training is deterministic given ``seed``: weight init runs under a forked, seeded global
RNG and every shuffle / augmentation draw comes from a private ``torch.Generator``, so
training does not disturb (and is not disturbed by) the caller's random state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`SmallCNN`; plain ints so it round-trips through a checkpoint."""

    in_channels: int
    height: int
    width: int
    num_classes: int
    base_width: int = 32
    feature_dim: int = 128

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained (optimiser, budget, augmentation, width). The real
    baseline, CAS and uplift share one recipe, so their accuracies differ only by the data.

    ``steps_for(n)`` is the optimiser-step budget for a training set of ``n`` images: the
    callers that compare two training sets (CAS vs real, uplift base vs augmented) give
    both the *same* number of steps, so a comparison measures data, not compute.
    """

    epochs: int = 25
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    min_steps: int = 300
    max_steps: int | None = 20_000
    base_width: int = 32
    feature_dim: int = 128

    def steps_for(self, n: int) -> int:
        steps = max(self.min_steps, self.epochs * math.ceil(max(n, 1) / self.batch_size))
        return min(steps, self.max_steps) if self.max_steps else steps


#: the feature network (trained once per dataset and cached): the wider net
FEATURE_RECIPE = Recipe(base_width=32)
# the fresh classifiers of CAS and uplift are pipeline.evaluate.probe's (several seeds at once)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """VGG-style CNN for 8..64 px images: (two 3x3 convs + max-pool) per stage until the
    side is 4 px, one more conv block, global average pool, then a ``feature_dim``-wide
    penultimate layer (:meth:`features`) and a linear head."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [_conv_block(cfg.in_channels, cfg.base_width)]
        c, side, stage = cfg.base_width, min(cfg.height, cfg.width), 0
        while side > 4 and stage < 4:
            cout = min(cfg.base_width * 2**stage, 256)
            layers += [_conv_block(c, cout), _conv_block(cout, cout), nn.MaxPool2d(2)]
            c, side, stage = cout, side // 2, stage + 1
        cout = min(c * 2, 256)
        layers += [_conv_block(c, cout), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(cout, cfg.feature_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, feature_dim): the FID feature space."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


# -- array plumbing -------------------------------------------------------------------------


def check_images(images_u8: np.ndarray, name: str = "images") -> np.ndarray:
    """Validate a (N, H, W, C) uint8 array (C in {1, 3}); returns it as a contiguous array."""
    a = np.asarray(images_u8)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected uint8 (N, H, W, C) with C in (1, 3), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def check_labels(
    labels: np.ndarray | torch.Tensor, n: int, num_classes: int, name: str = "labels"
) -> np.ndarray:
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    y = y.astype(np.int64).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{name}: {len(y)} labels for {n} images")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name}: labels outside 0..{num_classes - 1}")
    return y


@dataclass(frozen=True)
class RealSplit:
    """The job's real data as every metric reads it: train and held-out test images
    (N, H, W, C uint8, contiguous) with int64 labels in ``0..num_classes-1``. Build it with
    :meth:`checked`, which validates once what every metric would otherwise re-check."""

    train_x: np.ndarray  # what the generator was trained on (a stratified subset with dataset.train_fraction)
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    all_train_x: np.ndarray | None = None  # the whole real train split when train_x is a subset of it
    all_train_y: np.ndarray | None = None

    @classmethod
    def checked(cls, train_x: np.ndarray, train_y: np.ndarray | torch.Tensor, test_x: np.ndarray,
                test_y: np.ndarray | torch.Tensor, num_classes: int, all_train_x: np.ndarray | None = None,
                all_train_y: np.ndarray | torch.Tensor | None = None) -> RealSplit:
        train_x, test_x = check_images(train_x, "real_train"), check_images(test_x, "real_test")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise ValueError(f"image shapes differ: real train {train_x.shape[1:]}, real test {test_x.shape[1:]}")
        ax = ay = None
        if all_train_x is not None and all_train_y is not None and len(all_train_x) != len(train_x):
            ax = check_images(all_train_x, "real_all_train")
            if ax.shape[1:] != train_x.shape[1:]:
                raise ValueError(f"image shapes differ: real train {train_x.shape[1:]}, whole split {ax.shape[1:]}")
            ay = check_labels(all_train_y, len(ax), num_classes, "real_all_train_labels")
        return cls(train_x, check_labels(train_y, len(train_x), num_classes, "real_train_labels"),
                   test_x, check_labels(test_y, len(test_x), num_classes, "real_test_labels"), int(num_classes),
                   ax, ay)

    @property
    def pool_x(self) -> np.ndarray:
        """The whole real train split (``train_x`` unless the generator saw a subset of it)."""
        return self.train_x if self.all_train_x is None else self.all_train_x

    @property
    def pool_y(self) -> np.ndarray:
        return self.train_y if self.all_train_y is None else self.all_train_y

    @property
    def generator_saw_all(self) -> bool:
        return self.all_train_x is None


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy``, also for a read-only array (one from Ray's object store, when the
    evaluation's classifiers train as Ray tasks) without its warning: the tensors made from it here
    are only read, or copied first."""
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def u8_to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> float32 NCHW in [-1, 1] (inverse of the sampler's rounding rule)."""
    t = from_numpy(check_images(images_u8)).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0).contiguous()


def _augment(
    x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.125, max_rot_deg: float = 8.0
) -> torch.Tensor:
    """Light affine jitter (sub-pixel shift up to 1/8 of the side, small rotation), border-padded."""
    n = x.shape[0]
    r = torch.rand(n, 3, generator=gen) * 2 - 1
    r = r.to(x.device)
    ang = r[:, 0] * math.radians(max_rot_deg)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # affine_grid works in [-1, 1] coordinates: a shift of f * side is 2 f
    theta = torch.stack(
        [
            torch.stack([cos, -sin, r[:, 1] * 2 * max_shift], 1),
            torch.stack([sin, cos, r[:, 2] * 2 * max_shift], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# -- training and inference -----------------------------------------------------------------


def train_classifier(
    images_u8: np.ndarray,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    *,
    steps: int | None = None,
    recipe: Recipe | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on uint8 images; deterministic given ``seed``.

    ``epochs`` / ``batch_size`` override the recipe's (default :class:`Recipe`); ``steps``
    (if given) is the exact number of optimiser steps, cycling through reshuffled epochs;
    otherwise ``epochs`` full passes (or ``recipe.steps_for(n)`` when ``epochs`` is None).
    AdamW with a one-cycle (warm-up + cosine) schedule, label smoothing and light affine
    augmentation; the width of the network comes from the recipe.
    Returns the model in eval mode on ``device``.
    """
    r = recipe or Recipe()
    x_all = u8_to_tensor(images_u8)
    n = x_all.shape[0]
    if n == 0:
        raise ValueError("train_classifier: no images")
    y_all = from_numpy(check_labels(labels, n, num_classes))
    bs = max(1, min(int(batch_size or r.batch_size), n))
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = max(1, int(epochs) * math.ceil(n / bs))
    else:
        total = r.steps_for(n)
    if total < 1:
        raise ValueError(f"train_classifier: steps must be >= 1, got {total}")
    device = torch.device(device)
    cfg = ClassifierConfig(
        x_all.shape[1], x_all.shape[2], x_all.shape[3], num_classes, r.base_width, r.feature_dim
    )
    # the whole run (init, dropout) draws from a forked, seeded global RNG; shuffles and
    # augmentation from a private generator: deterministic, and the caller's RNG is untouched
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = SmallCNN(cfg).to(device).train()
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=total, pct_start=0.15)
        x_dev, y_dev = x_all.to(device), y_all.to(device)
        perm, pos, step = torch.randperm(n, generator=gen), 0, 0
        while step < total:
            # drop the ragged tail of an epoch (BatchNorm dislikes tiny batches); reshuffle
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos : pos + bs].to(device)
            pos += bs
            xb, yb = x_dev[idx], y_dev[idx]
            if r.augment:
                xb = _augment(xb, gen)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total, float(loss))
    return model.eval()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _batched(
    model: SmallCNN, images_u8: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor], batch: int
) -> torch.Tensor:
    a = check_images(images_u8)
    c, h, w = model.cfg.in_channels, model.cfg.height, model.cfg.width
    if a.shape[1:] != (h, w, c):
        raise ValueError(f"images are {a.shape[1:]} (H, W, C) but the classifier expects {(h, w, c)}")
    was_training = model.training
    model.eval()
    dev = _device_of(model)
    out = [fn(u8_to_tensor(a[i : i + batch]).to(dev)).float().cpu() for i in range(0, len(a), batch)]
    model.train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def predict(model: SmallCNN, images_u8: np.ndarray, batch: int = 512) -> np.ndarray:
    """Predicted class per image (int64)."""
    logits = _batched(model, images_u8, model, batch)
    return logits.argmax(1).numpy().astype(np.int64) if logits.numel() else np.zeros(0, np.int64)


def accuracy(model: SmallCNN, images_u8: np.ndarray, labels: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on uint8 images."""
    y = check_labels(labels, len(images_u8), model.cfg.num_classes)
    if len(y) == 0:
        return float("nan")
    return float((predict(model, images_u8) == y).mean())


def extract_features(model: SmallCNN, images_u8: np.ndarray, batch: int = 512) -> np.ndarray:
    """Penultimate-layer features (N, feature_dim) as float64, in eval mode."""
    f = _batched(model, images_u8, model.features, batch)
    if f.numel() == 0:
        return np.zeros((0, model.cfg.feature_dim))
    return f.numpy().astype(np.float64)
