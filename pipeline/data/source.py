"""One interface over the two kinds of real data: :class:`DataSource`.

An in-memory :class:`~pipeline.data.base.ImageDataset` (small datasets, every worker holds it) and a
streamed :class:`~pipeline.data.streaming.StreamingData` (Ray Data, larger than memory) both offer:

* ``info`` -- a :class:`DataInfo`: shape, classes, cache key, sizes (typed, serialisable: it is
  what Ray Train workers are told about the data);
* ``ray_datasets()`` -- the Ray Data datasets to hand to Ray Train (None: workers load the data);
* ``eval_split(cap)`` -- the in-memory real split the evaluation reads.

:func:`open_source` is the one place on the driver that picks the kind, and :func:`worker_batches`
the one place in a training worker: per-worker batches for an epoch, whatever the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.data.info import DataInfo

if TYPE_CHECKING:
    import torch

    from pipeline.data.base import ImageDataset
    from pipeline.spec import DatasetSpec, JobSpec


class DataSource(Protocol):
    """The real data of a job, in memory or streamed (see the module docstring)."""

    @property
    def info(self) -> DataInfo: ...

    def ray_datasets(self) -> dict[str, Any] | None: ...

    def eval_split(self, cap: int) -> ImageDataset: ...


def open_source(spec: DatasetSpec) -> DataSource:
    """The job's real data: streamed (listing and one peek, nothing read yet) when
    ``dataset.streaming``, else loaded into memory. DataError (exit 2) when it cannot be."""
    if spec.streaming:
        from pipeline.data.streaming import streaming_dataset

        return streaming_dataset(spec, spec.storage_options or None)
    from pipeline.data import load_dataset

    return load_dataset(spec)


@dataclass
class EpochBatches:
    """One Ray Train worker's view of the training data."""

    batch_size: int  # per worker
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (images, labels)
    order: Callable[[int], int] | None  # epoch -> CRC32 of this worker's sample order (None: streamed)


def worker_batches(spec: JobSpec, rank: int, world: int) -> EpochBatches:
    """Batches for worker ``rank`` of ``world``: a seeded per-epoch order (``set_epoch``), so a
    resumed run sees the order an uninterrupted one would. In memory: every worker loads the
    (small) dataset and takes its DistributedSampler slice; streamed: its Ray Data shard
    (``get_dataset_shard``), shuffled locally with a seed of (train seed, rank, epoch)."""
    import zlib

    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from pipeline.rng import derive_seed

    tr = spec.train
    if spec.dataset.streaming:
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        batch = tr.batch_size

        def streamed(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
            for b in shard.iter_torch_batches(batch_size=batch, drop_last=True, local_shuffle_buffer_size=8 * batch,
                                              local_shuffle_seed=derive_seed(tr.seed, rank, epoch) % 2**31):
                yield b["image"], b["label"]

        return EpochBatches(batch, streamed, None)

    from pipeline.data import load_dataset

    data = load_dataset(spec.dataset)
    dataset = TensorDataset(data.train_x, data.train_y)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=tr.seed, drop_last=True)
    batch = min(tr.batch_size, max(1, len(dataset) // world))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)

    def in_memory(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        sampler.set_epoch(epoch)  # a new order every epoch, the same one for a resumed run
        return loader

    def order(epoch: int) -> int:  # recorded per epoch: resumed runs can be checked
        sampler.set_epoch(epoch)
        return zlib.crc32(torch.tensor(list(sampler), dtype=torch.int64).numpy().tobytes())

    return EpochBatches(batch, in_memory, order)
