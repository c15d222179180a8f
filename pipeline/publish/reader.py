"""Reading a published dataset back: one partition, or every published date of a job.

    ds = open_dataset("s3://bucket/datasets/digits-dcgan", storage_options)   # all dates
    ds = open_dataset("outputs/datasets/digits-dcgan/date=2026-11-25")          # one date
    len(ds), ds.class_names, ds.manifest
    ds.arrow.to_table(filter=pyarrow.dataset.field("label") == 3)    # pyarrow.dataset.Dataset
    loader = torch.utils.data.DataLoader(ds.torch(), batch_size=256, shuffle=True)
    datasets.load_dataset("parquet", data_files=ds.data_files, storage_options=...)

Only partitions with a ``manifest.json`` are seen, and only the files their manifests list,
so a reader never sees a half-written partition or a stale shard of an earlier run.
Manifest file paths are checked to stay inside their partition (:func:`safe_join`).

With plain pyarrow, use ``pyarrow.dataset.dataset(files, partitioning="hive",
partition_base_dir=root)``; ``pyarrow.parquet.ParquetDataset(files)`` needs
``partitioning=None`` (see :mod:`pipeline.publish.schema` on the ``date`` column).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from pipeline.publish.atomic import is_local_fs
from pipeline.publish.commit import read_manifest
from pipeline.publish.storage import join, redact, safe_join, storage_errors, url_to_fs

log = logging.getLogger(__name__)
_PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
DATE_PARTITIONING = pads.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


@dataclass(frozen=True)
class Partition:
    """One published date: its URL, its path inside the filesystem, and its manifest."""

    date: str
    url: str
    path: str
    manifest: dict[str, Any]

    @property
    def files(self) -> list[str]:
        return [safe_join(self.path, f["path"] if isinstance(f, dict) else f) for f in self.manifest["files"]]

    @property
    def rows(self) -> list[int]:
        return [int(f["rows"]) for f in self.manifest["files"]]


class SyntheticDataset:
    """A consistent, read-only view of published partitions (built from their manifests)."""

    def __init__(self, url: str, fs: Any, partitions: list[Partition], storage_options: Mapping[str, Any] | None):
        self.url = url
        self.fs = fs
        self.partitions = sorted(partitions, key=lambda p: p.date)
        self._so = dict(storage_options or {})
        names = {tuple(p.manifest.get("class_names") or ()) for p in self.partitions}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError(f"{redact(url, self._so)}: partitions disagree on class names (or have none)")
        formats = {p.manifest.get("format") for p in self.partitions} - {None}
        if len(formats) > 1:
            raise ValueError(f"{redact(url, self._so)}: partitions mix image formats {sorted(formats)}")

    def __repr__(self) -> str:
        return (f"SyntheticDataset({redact(self.url, self._so)!r}, rows={len(self)}, "
                f"dates={self.dates}, classes={len(self.class_names)})")

    def __len__(self) -> int:
        return sum(sum(p.rows) for p in self.partitions)

    @property
    def dates(self) -> list[str]:
        return [p.date for p in self.partitions]

    @property
    def class_names(self) -> list[str]:
        return list(self.partitions[0].manifest["class_names"])

    @property
    def manifests(self) -> dict[str, dict[str, Any]]:
        """Every partition's manifest, by date."""
        return {p.date: p.manifest for p in self.partitions}

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of a single partition; for several, a summary with each under ``partitions``."""
        if len(self.partitions) == 1:
            return self.partitions[0].manifest
        first = self.partitions[0].manifest
        return {"job": first.get("job"), "dates": self.dates, "num_rows": len(self),
                "class_names": self.class_names, "partitions": self.manifests}

    @property
    def files(self) -> list[str]:
        """Every data file (paths inside :attr:`fs`), in date then shard order."""
        return [f for p in self.partitions for f in p.files]

    @property
    def data_files(self) -> list[str]:
        """The data files as URLs (e.g. for ``datasets.load_dataset("parquet", data_files=...)``)."""
        return self.files if is_local_fs(self.fs) else [self.fs.unstrip_protocol(f) for f in self.files]

    @cached_property
    def arrow(self) -> pads.Dataset:
        """A ``pyarrow.dataset.Dataset`` of exactly the manifests' files, hive-partitioned on ``date``."""
        import pyarrow.fs as pafs

        filesystem = pafs.LocalFileSystem() if is_local_fs(self.fs) else pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        base = posixpath.dirname(self.partitions[0].path.rstrip("/"))
        with storage_errors(f"opening {self.url}", self._so):
            return pads.dataset(self.files, format="parquet", filesystem=filesystem,
                                partitioning=DATE_PARTITIONING, partition_base_dir=base)

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

        return ParquetImageDataset(self.fs, self.files, [r for p in self.partitions for r in p.rows],
                                   transform=transform, cache_files=cache_files)


def _partition_of(url: str, path: str, man: dict[str, Any]) -> Partition:
    m = _PARTITION_RE.match(posixpath.basename(path.rstrip("/")))
    return Partition(man.get("date") or (m.group(1) if m else ""), url, path.rstrip("/"), man)


def open_dataset(url: str, storage_options: Mapping[str, Any] | None = None) -> SyntheticDataset:
    """Open a published partition (``.../date=YYYY-MM-DD`` with a manifest) or a dataset root
    (``<output>/<job>``: every ``date=`` partition that has a manifest; unpublished ones are skipped)."""
    so = dict(storage_options or {})
    fs, path = url_to_fs(url, so)
    man = read_manifest(url, so)
    if man is not None:
        return SyntheticDataset(url, fs, [_partition_of(url, path, man)], so)
    children = None
    with storage_errors(f"listing {url}", so):
        fs.invalidate_cache(path)
        with contextlib.suppress(FileNotFoundError):
            children = fs.ls(path, detail=True)
    if children is None:
        raise FileNotFoundError(f"{redact(url, so)}: no such dataset")
    parts = []
    for e in sorted(children, key=lambda e: e["name"]):
        name = posixpath.basename(e["name"].rstrip("/"))
        if e.get("type") != "directory" or not _PARTITION_RE.match(name):
            continue
        child = join(url, name)
        m = read_manifest(child, so)
        if m is None:
            log.info("skipping %s: not published (no manifest)", redact(child, so))
            continue
        parts.append(_partition_of(child, join(path, name), m))
    if not parts:
        raise FileNotFoundError(f"{redact(url, so)}: no published partition here (no manifest.json, "
                                "and no date=YYYY-MM-DD folder with one)")
    return SyntheticDataset(url, fs, parts, so)
