"""Reading a published dataset back: one partition, or every published date of a job.

    ds = open_dataset("s3://bucket/datasets/digits-dcgan", storage_options)   # all dates
    ds = open_dataset("outputs/datasets/digits-dcgan/data/logical_date=2026-11-25")  # one date
    len(ds), ds.class_names, ds.manifest
    ds.arrow.to_table(filter=pyarrow.dataset.field("label") == 3)    # pyarrow.dataset.Dataset
    loader = torch.utils.data.DataLoader(ds.torch(), batch_size=256, shuffle=True)
    datasets.load_dataset("parquet", data_files=ds.data_files, storage_options=...)

The consistent view: only partitions with a manifest are seen, and only the files their
manifests list, so a reader never sees a half-written partition or a stale shard of an earlier
run (pointing a reader at the bare ``data/`` folder shows every committed shard; see
:mod:`pipeline.publish.layout`). The columns are the files' own (``date`` included); no hive
column is added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from pipeline.publish.atomic import is_local_fs
from pipeline.publish.layout import locate
from pipeline.publish.manifest import Manifest
from pipeline.publish.partition import Partition, check_layout, published
from pipeline.publish.storage import redact, storage_errors, url_to_fs

log = logging.getLogger(__name__)


class SyntheticDataset:
    """A consistent, read-only view of published partitions (built from their manifests)."""

    def __init__(self, url: str, fs: Any, partitions: list[tuple[Partition, Manifest]],
                 storage_options: Mapping[str, Any] | None):
        self.url = url
        self.fs = fs
        self.partitions = sorted(partitions, key=lambda pm: pm[0].date)
        self._so = dict(storage_options or {})
        names = {tuple(m.class_names or ()) for _, m in self.partitions}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError(f"{redact(url, self._so)}: partitions disagree on class names (or have none)")
        formats = {m.format for _, m in self.partitions} - {None}
        if len(formats) > 1:
            raise ValueError(f"{redact(url, self._so)}: partitions mix image formats {sorted(formats)}")

    def __repr__(self) -> str:
        return (f"SyntheticDataset({redact(self.url, self._so)!r}, rows={len(self)}, "
                f"dates={self.dates}, classes={len(self.class_names)})")

    def __len__(self) -> int:
        return sum(m.num_rows for _, m in self.partitions)

    @property
    def dates(self) -> list[str]:
        return [p.date for p, _ in self.partitions]

    @property
    def class_names(self) -> list[str]:
        return list(self.partitions[0][1].class_names)

    @property
    def manifests(self) -> dict[str, Manifest]:
        """Every partition's manifest, by date."""
        return {p.date: m for p, m in self.partitions}

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of a single partition (None when the view holds several: see :attr:`manifests`)."""
        return self.partitions[0][1] if len(self.partitions) == 1 else None

    @property
    def files(self) -> list[str]:
        """Every data file (paths inside :attr:`fs`), in date then shard order."""
        return [p.data_file(f.path) for p, m in self.partitions for f in m.files]

    @property
    def rows(self) -> list[int]:
        return [f.rows for _, m in self.partitions for f in m.files]

    @property
    def data_files(self) -> list[str]:
        """The data files as URLs (e.g. for ``datasets.load_dataset("parquet", data_files=...)``)."""
        return self.files if is_local_fs(self.fs) else [self.fs.unstrip_protocol(f) for f in self.files]

    @cached_property
    def arrow(self) -> pads.Dataset:
        """A ``pyarrow.dataset.Dataset`` of exactly the manifests' files (their own columns, ``date`` included)."""
        import pyarrow.fs as pafs

        filesystem = pafs.LocalFileSystem() if is_local_fs(self.fs) else pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        with storage_errors(f"opening {self.url}", self._so):
            return pads.dataset(self.files, format="parquet", filesystem=filesystem, partitioning=None)

    def to_table(self, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """Read (some columns / rows of) the dataset into memory."""
        with storage_errors(f"reading {self.url}", self._so):
            return self.arrow.to_table(columns=columns, filter=filter)

    def torch(self, transform: Callable[[Any], Any] | None = None, cache_files: int = 4) -> Any:
        """A map-style ``torch.utils.data.Dataset`` of ``(image, label)``.

        The image is a float CHW tensor in [0, 1], or ``transform(PIL image)`` when given.
        Shards are read whole and kept in a small per-worker LRU cache (``cache_files``), so
        reading in order (or shuffling shard by shard) is fast; fully random access over many
        large shards re-reads files (use :attr:`arrow` / Ray Data for that scale).
        """
        from pipeline.publish.torch_data import ParquetImageDataset

        return ParquetImageDataset(self.fs, self.files, self.rows, transform=transform, cache_files=cache_files)


def open_dataset(url: str, storage_options: Mapping[str, Any] | None = None) -> SyntheticDataset:
    """Open one published partition (the URL of its data folder ``<root>/data/logical_date=D``
    or its state folder ``<root>/_genpipe/logical_date=D``) or a dataset root (``<output>/<job>``,
    or its ``data/`` folder: every date with a manifest; unpublished ones are skipped).

    A folder in genpipe 0.1's layout (``date=D/`` with ``manifest.json`` beside the shards) is
    refused (:class:`~pipeline.publish.layout.LayoutError`) with how to migrate it.
    """
    so = dict(storage_options or {})
    fs, _ = url_to_fs(url, so)
    part = Partition.from_url(url, so)
    if part is not None:
        man = part.read_manifest()
        if man is None:
            raise FileNotFoundError(f"{redact(url, so)}: no published partition here (it has no manifest)")
        return SyntheticDataset(url, fs, [(part, man)], so)
    root, _ = locate(url)
    rfs, rpath = url_to_fs(root, so)
    with storage_errors(f"listing {root}", so):
        rfs.invalidate_cache(rpath)
        if not rfs.exists(rpath):
            raise FileNotFoundError(f"{redact(url, so)}: no such dataset")
    check_layout(root, so)
    head, _, job = root.rstrip("/").rpartition("/")
    try:
        parts = published(head, job, so)
    except ValueError:  # not a job name: not a dataset root
        parts = []
    if not parts:
        raise FileNotFoundError(f"{redact(url, so)}: no published partition here (no "
                                "_genpipe/logical_date=YYYY-MM-DD/manifest.json)")
    return SyntheticDataset(url, fs, parts, so)
