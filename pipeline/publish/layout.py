"""Names and places of a published partition: shard file names, the partition URL, ShardInfo."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.publish.schema import check_date
from pipeline.publish.storage import SafeMessage, join, url_to_fs

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SHARD_RE = re.compile(r"^part-(\d{5,})-of-(\d{5,})\.parquet$")
_JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class ManifestError(ValueError, SafeMessage):
    """A manifest that cannot be used (unreadable, or inconsistent with its shards)."""


@dataclass
class ShardInfo:
    """One committed shard file. ``path`` is relative to the partition; ``label_counts``
    (rows per label) feeds the manifest's ``label_counts`` and is not written per file."""

    index: int
    path: str
    rows: int
    bytes: int
    sha256: str
    label_counts: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "index": self.index, "rows": self.rows, "bytes": self.bytes,
                "sha256": self.sha256}


def shard_name(i: int, n: int) -> str:
    """``part-00000-of-00042.parquet``: file name of shard ``i`` of ``n``."""
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard index {i} out of range for {n} shard(s)")
    return f"part-{i:05d}-of-{n:05d}.parquet"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """(index, num_shards) of a shard file name, or None if it is not one."""
    m = SHARD_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def partition_url(output_url: str, job: str, date: str) -> str:
    """``<output>/<job>/date=<YYYY-MM-DD>`` (hive-style partition on the logical date)."""
    if not isinstance(job, str) or not _JOB_RE.match(job) or ".." in job:
        raise ValueError(f"job name {job!r} cannot be a path component")
    return join(output_url, job, f"date={check_date(date)}")


def partition_fs(partition: str, so: Mapping[str, Any] | None) -> tuple[Any, str]:
    """(filesystem, partition path without a trailing slash)."""
    fs, path = url_to_fs(partition, so)
    return fs, path.rstrip("/")
