"""Distributed training on Ray Train: the per-worker loop, the TorchTrainer set-up, checkpoints."""

from pipeline.train.checkpoint import CheckpointInfo, load_checkpoint
from pipeline.train.trainer import TrainResult, train

__all__ = ["CheckpointInfo", "TrainResult", "load_checkpoint", "train"]
