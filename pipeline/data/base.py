"""What every dataset source returns, and the registry that picks a source by name.

A source loads real images and labels into an :class:`ImageDataset`: float32 NCHW
tensors scaled to [-1, 1], int64 labels, class names, and a fixed train/test split.
The test split is never trained on: evaluation (FID, CAS, uplift) scores against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError
from pipeline.spec import DatasetSpec

if TYPE_CHECKING:
    import torch

    from pipeline.data.info import DataInfo

# No torch at import: the streamed sources' decode step (pipeline.data.streaming) runs in Ray
# Data's workers and is unpickled by Ray Train's controller, neither of which needs torch; the
# functions below that build tensors import it (tests/test_data_sources.py checks).


class DataError(GenpipeError, ValueError):
    """A dataset that cannot be loaded; the message names the file or field (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class ImageDataset:
    train_x: torch.Tensor  # float32 (N, C, H, W) in [-1, 1]
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    key: str  # identity of the data (source, options, content digest): cache key for feature nets
    # the whole train split when ``train_x`` is the dataset.train_fraction subset of it (else None)
    all_train_x: torch.Tensor | None = None
    all_train_y: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- the DataSource interface (pipeline/data/source.py) --

    @property
    def info(self) -> DataInfo:
        from pipeline.data.info import DataInfo

        return DataInfo.of(self, streaming=False)

    def ray_datasets(self) -> None:
        """None: every Ray Train worker loads this (small) dataset itself."""
        return None

    def eval_split(self, cap: int | None = None) -> ImageDataset:
        """The evaluation reads the whole in-memory dataset (``cap`` is for streamed ones)."""
        return self

    def train_u8(self) -> np.ndarray:
        return to_u8_hwc(self.train_x)

    def test_u8(self) -> np.ndarray:
        return to_u8_hwc(self.test_x)

    def all_train_u8(self) -> np.ndarray | None:
        return None if self.all_train_x is None else to_u8_hwc(self.all_train_x)

    def with_train_fraction(self, fraction: float, seed: int) -> ImageDataset:
        """The generator's training set: a stratified, seeded ``fraction`` of the train split
        (at least one image per class); the whole split stays in ``all_train_*`` for evaluation."""
        if not 0 < fraction <= 1:
            raise DataError(f"dataset.train_fraction must lie in (0, 1], got {fraction}")
        if fraction == 1:
            return self
        import torch

        idx = torch.from_numpy(stratified_subset(self.train_y.numpy(), fraction, seed))
        return ImageDataset(self.train_x[idx].contiguous(), self.train_y[idx].contiguous(), self.test_x, self.test_y,
                            self.class_names, self.key, self.train_x, self.train_y)


def to_u8_hwc(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> (N, H, W, C) uint8, the same rule the sampler uses."""
    from pipeline.models.base import to_uint8

    return to_uint8(x).cpu().numpy()


def from_u8_hwc(a: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> [-1, 1] NCHW float."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of every class (at least one image per class), fixed by seed."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(len(idx) * fraction)))
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): the same fraction of every class goes to test, fixed by seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def finish(
    images: torch.Tensor,
    labels: np.ndarray,
    class_names: list[str],
    spec: DatasetSpec,
    identity: dict,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> ImageDataset:
    """Common tail of every source: resize, channel conversion, split, cache key.

    ``images`` are float NCHW in [-1, 1]; ``split`` gives a source's own train/test split.
    """
    import torch
    import torch.nn.functional as F

    if spec.channels and images.shape[1] != spec.channels:
        if spec.channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images * w).sum(1, keepdim=True)
        else:
            images = images.expand(-1, 3, -1, -1).contiguous()
    if spec.image_size and tuple(images.shape[-2:]) != (spec.image_size, spec.image_size):
        images = F.interpolate(images, size=(spec.image_size, spec.image_size), mode="bilinear",
                               align_corners=False, antialias=True).clamp_(-1, 1)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"labels outside 0..{len(class_names) - 1}")
    tr, te = split if split is not None else stratified_split(labels, spec.test_fraction, spec.split_seed)
    y = torch.from_numpy(labels)
    ident = dict(identity, shape=list(images.shape[1:]), n=len(labels), split_seed=spec.split_seed,
                 test_fraction=spec.test_fraction)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ImageDataset(images[tr].contiguous(), y[tr], images[te].contiguous(), y[te], list(class_names),
                        f"{spec.source}-{key}")


SOURCES: dict[str, Callable[[DatasetSpec], ImageDataset]] = {}


def source(name: str) -> Callable[[Callable[[DatasetSpec], ImageDataset]], Callable[[DatasetSpec], ImageDataset]]:
    def deco(fn: Callable[[DatasetSpec], ImageDataset]) -> Callable[[DatasetSpec], ImageDataset]:
        SOURCES[name] = fn
        return fn

    return deco
