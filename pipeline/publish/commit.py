"""The commit protocol: exactly-once shards, then a manifest written last.

Layout of one published partition (``<output>/<job>/date=<YYYY-MM-DD>/``)::

    part-00000-of-00003.parquet   deterministic names: a pure function of (job, date, index)
    part-00001-of-00003.parquet
    part-00002-of-00003.parquet
    manifest.json                 written last: files, rows, sha256, spec hash, metrics
    .staging/                     temporary files (local disk); hidden from Parquet readers

A shard counts as done only when its file reads back complete with the expected row count
(:func:`verify_shard`); each shard file is committed once, atomically (:mod:`.atomic`), and a
second writer of the same shard verifies and accepts the first one's file. Given a
:class:`~.provenance.Provenance` (the run's spec hash and checkpoint digest), the commit stamps
it into the file's footer and a file is accepted only when its footer names that provenance: a
shard left by another spec or checkpoint is removed and written again, never reused. The partition
counts as published only when ``manifest.json`` exists: readers that need a consistent view
read the files it lists (:func:`pipeline.publish.reader.open_dataset`).

Note: ``manifest.json`` is not Parquet, so tools that read a whole directory
(``pyarrow.dataset.dataset(dir)``, ``datasets.load_dataset("parquet", data_dir=dir)``) trip on
it; pass them the manifest's file list, or a ``*.parquet`` glob.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.publish.atomic import STAGING_DIR, put_create_only
from pipeline.publish.layout import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SHARD_RE,
    ManifestError,
    ShardInfo,
    parse_shard_name,
    partition_url,
    shard_name,
)
from pipeline.publish.layout import partition_fs as _fs
from pipeline.publish.manifest import (
    existing_state,
    list_shards,
    read_manifest,
    remove_partition,
    remove_stale,
    shard_infos_from_manifest,
    unpublish,
    write_manifest,
)
from pipeline.publish.parquet_io import inspect_parquet, label_counts, parquet_bytes
from pipeline.publish.provenance import Provenance, metadata_of_bytes
from pipeline.publish.storage import StorageError, join, redact, storage_errors, with_retries

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME", "MANIFEST_VERSION", "SHARD_RE", "ManifestError", "Provenance", "ShardInfo",
    "existing_state", "list_shards", "parse_shard_name", "partition_url", "read_manifest", "remove_partition", "remove_shard", "remove_stale",
    "shard_infos_from_manifest", "shard_name", "unpublish", "verify_shard", "write_manifest", "write_shard",
]


# -------------------------------------------------------------------------------------------- shards


def write_shard(
    partition: str,
    index: int,
    num_shards: int,
    table: pa.Table,
    storage_options: Mapping[str, Any] | None = None,
    *,
    provenance: Provenance | None = None,
) -> ShardInfo:
    """Commit ``table`` as shard ``index`` of ``num_shards`` exactly once; returns the committed file's info.

    ``provenance`` is stamped into the file's footer. If the shard already exists (a duplicate
    or retried writer finished it), the existing file is verified and accepted; an existing
    file that is corrupt, incomplete or (given ``provenance``) written by another spec or
    checkpoint is removed and written again (once).
    """
    name = shard_name(index, num_shards)
    if provenance is not None:
        table = provenance.stamp(table, index, num_shards)
    data = parquet_bytes(table)
    mine = ShardInfo(index, name, table.num_rows, len(data), hashlib.sha256(data).hexdigest(), label_counts(table))
    url = join(partition, name)
    so = storage_options
    with storage_errors(f"writing {url}", so):
        fs, ppath = _fs(partition, so)
        path, staging = join(ppath, name), join(ppath, STAGING_DIR)
        for attempt in (0, 1):
            try:
                with_retries(lambda: put_create_only(fs, path, data, staging), what=f"writing {name}")
            except FileExistsError:
                theirs = verify_shard(partition, index, num_shards, table.num_rows, so, provenance=provenance)
                if theirs is not None:
                    if theirs.sha256 != mine.sha256:
                        log.warning("%s was committed by another writer with different bytes: keeping it",
                                    redact(url, so or {}))
                    else:
                        log.info("%s was already committed (duplicate writer): accepted", redact(url, so or {}))
                    return theirs
                if attempt:
                    raise StorageError(f"{redact(url, so or {})}: exists but is not a complete shard of this run, "
                                       "and rewriting it failed") from None
                log.warning("%s exists but is not a complete shard of this run: removing it and writing again",
                            redact(url, so or {}))
                remove_shard(partition, index, num_shards, so)
                continue
            _check_committed(fs, path, len(data), table.num_rows)
            return mine
    raise AssertionError("unreachable")  # pragma: no cover


def _check_committed(fs: Any, path: str, size: int, rows: int) -> None:
    """The footer of a just-written file reads back with the right size and row count."""
    fs.invalidate_cache(path)
    got = with_retries(lambda: fs.size(path), what="checking a written shard")
    if got != size:
        raise StorageError(f"{posixpath.basename(path)}: {got} bytes in storage, wrote {size}")

    def footer_rows() -> int:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows

    n = with_retries(footer_rows, what="reading back a written shard")
    if n != rows:
        raise StorageError(f"{posixpath.basename(path)}: footer says {n} rows, wrote {rows}")


def verify_shard(
    partition: str,
    index: int,
    num_shards: int,
    expected_rows: int,
    storage_options: Mapping[str, Any] | None = None,
    *,
    expected_sha256: str | None = None,
    provenance: Provenance | None = None,
) -> ShardInfo | None:
    """The shard's info if its file is complete (footer, row count, page CRCs, shard index
    and, when given, sha256 and the footer's provenance all check out); None if it is missing,
    truncated, corrupt or (given ``provenance``) written by another spec or checkpoint.

    Reads the whole file (sha256 and page checksums). Storage errors other than "not found"
    are raised (redacted): an unreachable store must not look like a missing shard.
    """
    name = shard_name(index, num_shards)
    url = join(partition, name)
    with storage_errors(f"verifying {url}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        path = join(ppath, name)
        fs.invalidate_cache(path)
        try:
            data = with_retries(lambda: fs.cat_file(path), what=f"reading {name}")
        except FileNotFoundError:
            return None
    problem, counts = inspect_parquet(data, expected_rows, index)
    if problem:
        log.warning("%s is not a complete shard: %s", redact(url, storage_options or {}), problem)
        return None
    if provenance is not None:
        foreign = provenance.problem(metadata_of_bytes(data), index, num_shards)
        if foreign:
            log.warning("%s is not this run's shard: %s", redact(url, storage_options or {}), foreign)
            return None
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        log.warning("%s: sha256 %s differs from the expected %s", redact(url, storage_options or {}), sha[:12],
                    expected_sha256[:12])
        return None
    return ShardInfo(index, name, expected_rows, len(data), sha, counts)


def remove_shard(partition: str, index: int, num_shards: int,
                 storage_options: Mapping[str, Any] | None = None) -> bool:
    """Delete one shard file (e.g. one that :func:`verify_shard` rejected); False if it was absent."""
    name = shard_name(index, num_shards)
    with storage_errors(f"removing {join(partition, name)}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        try:
            with_retries(lambda: fs.rm_file(join(ppath, name)), what=f"removing {name}")
        except FileNotFoundError:
            return False
        fs.invalidate_cache(join(ppath, name))
    return True
