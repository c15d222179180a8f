"""Distributed training on Ray Train: the per-worker loop, the TorchTrainer set-up, checkpoints.

Its names are imported on first use (PEP 562): Ray Train's controller unpickles
:class:`pipeline.train.backend.TorchBackendConfig`, and importing this package must not import
torch there (see :mod:`pipeline.train.backend`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["CheckpointInfo", "TrainResult", "load_checkpoint", "train"]

if TYPE_CHECKING:
    from pipeline.train.checkpoint import CheckpointInfo, load_checkpoint
    from pipeline.train.trainer import TrainResult, train


def __getattr__(name: str):
    if name in ("CheckpointInfo", "load_checkpoint"):
        from pipeline.train import checkpoint as where
    elif name in ("TrainResult", "train"):
        from pipeline.train import trainer as where
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(where, name)
