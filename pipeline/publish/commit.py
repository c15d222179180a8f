"""The commit protocol, shard by shard: each shard file committed exactly once, verified by
reading it back, with its run's provenance in its footer (see :mod:`pipeline.publish.layout`
for where the files live and :class:`pipeline.publish.partition.Partition` for the whole
protocol: run state, resume, manifest written last, listing, removal).

A shard counts as done only when its file reads back complete with the expected row count
(:func:`verify_shard`); each shard file is committed once, atomically (:mod:`.atomic`), and a
second writer of the same shard verifies and accepts the first one's file. Given a
:class:`~.provenance.Provenance` (the run's spec hash and checkpoint digest), the commit stamps
it into the file's footer and a file is accepted only when its footer names that provenance: a
shard left by another spec or checkpoint is removed and written again, never reused.

Every function takes a :class:`~.layout.PartitionLocation` (a ``Partition`` is one) or the URL
of a partition's data or state folder.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.publish.atomic import put_create_only
from pipeline.publish.card import update_card
from pipeline.publish.layout import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SHARD_RE,
    LayoutError,
    ManifestError,
    PartitionLocation,
    ShardInfo,
    parse_shard_name,
    partition_url,
    shard_name,
)
from pipeline.publish.manifest import (
    Manifest,
    data_listing,
    load_manifest,
    parse_manifest_bytes,
    remove_manifest,
)
from pipeline.publish.parquet_io import inspect_parquet, label_counts, parquet_bytes
from pipeline.publish.provenance import Provenance, filter_stats_of, metadata_of_bytes
from pipeline.publish.storage import StorageError, join, redact, storage_errors, url_to_fs, with_retries

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME", "MANIFEST_VERSION", "SHARD_RE", "LayoutError", "Manifest", "ManifestError", "Provenance",
    "ShardInfo", "as_partition", "list_shards", "parse_shard_name", "partition_url", "read_manifest",
    "remove_data_file", "remove_shard", "shard_name", "unpublish", "verify_shard", "write_shard",
]


def as_partition(where: PartitionLocation | str, storage_options: dict[str, Any] | None = None) -> PartitionLocation:
    """``where`` itself (a :class:`~.layout.PartitionLocation`, a ``Partition`` included), or the
    location of the partition whose data or state folder the URL ``where`` names."""
    if isinstance(where, PartitionLocation):
        return where
    part = PartitionLocation.from_url(where, storage_options)
    if part is None:
        raise LayoutError(f"{redact(str(where), storage_options or {})} names no partition "
                          "(expected <root>/data/logical_date=YYYY-MM-DD)")
    return part


def write_shard(where: PartitionLocation | str, index: int, num_shards: int, table: pa.Table,
                storage_options: dict[str, Any] | None = None, *,
                provenance: Provenance | None = None) -> ShardInfo:
    """Commit ``table`` as shard ``index`` of ``num_shards`` exactly once; returns the committed file's info.

    ``provenance`` is stamped into the file's footer. If the shard already exists (a duplicate
    or retried writer finished it), the existing file is verified and accepted; an existing
    file that is corrupt, incomplete or (given ``provenance``) written by another spec or
    checkpoint is removed and written again (once).
    """
    part = as_partition(where, storage_options)
    name = shard_name(index, num_shards)
    if provenance is not None:
        table = provenance.stamp(table, index, num_shards)
    data = parquet_bytes(table)
    mine = ShardInfo(index, name, table.num_rows, len(data), hashlib.sha256(data).hexdigest(), label_counts(table),
                     filter_stats_of(table.schema.metadata))
    so = part.storage_options
    url = part.data_file_url(name)
    with storage_errors(f"writing {url}", so):
        fs, path = part.fs, part.data_file(name)
        part.guard(path)
        part.guard(part.staging_path)
        for attempt in (0, 1):
            try:
                with_retries(lambda: put_create_only(fs, path, data, part.staging_path), what=f"writing {name}")
            except FileExistsError:
                theirs = verify_shard(part, index, num_shards, table.num_rows, provenance=provenance)
                if theirs is not None:
                    if theirs.sha256 != mine.sha256:
                        log.warning("%s was committed by another writer with different bytes: keeping it",
                                    redact(url, so))
                    else:
                        log.info("%s was already committed (duplicate writer): accepted", redact(url, so))
                    return theirs
                if attempt:
                    raise StorageError(f"{redact(url, so)}: exists but is not a complete shard of this run, "
                                       "and rewriting it failed") from None
                log.warning("%s exists but is not a complete shard of this run: removing it and writing again",
                            redact(url, so))
                remove_shard(part, index, num_shards)
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


def verify_shard(where: PartitionLocation | str, index: int, num_shards: int, expected_rows: int,
                 storage_options: dict[str, Any] | None = None, *, expected_sha256: str | None = None, provenance: Provenance | None = None) -> ShardInfo | None:
    """The shard's info if its file is complete (footer, row count, page CRCs, shard index
    and, when given, sha256 and the footer's provenance all check out); None if it is missing,
    truncated, corrupt or (given ``provenance``) written by another spec or checkpoint.

    Reads the whole file (sha256 and page checksums). Storage errors other than "not found"
    are raised (redacted): an unreachable store must not look like a missing shard.
    """
    part = as_partition(where, storage_options)
    name = shard_name(index, num_shards)
    so = part.storage_options
    url = part.data_file_url(name)
    with storage_errors(f"verifying {url}", so):
        fs, path = part.fs, part.data_file(name)
        part.guard(path)
        fs.invalidate_cache(path)
        try:
            data = with_retries(lambda: fs.cat_file(path), what=f"reading {name}")
        except FileNotFoundError:
            return None
    problem, counts = inspect_parquet(data, expected_rows, index)
    if problem:
        log.warning("%s is not a complete shard: %s", redact(url, so), problem)
        return None
    metadata = metadata_of_bytes(data)
    if provenance is not None:
        foreign = provenance.problem(metadata, index, num_shards)
        if foreign:
            log.warning("%s is not this run's shard: %s", redact(url, so), foreign)
            return None
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        log.warning("%s: sha256 %s differs from the expected %s", redact(url, so), sha[:12], expected_sha256[:12])
        return None
    return ShardInfo(index, name, expected_rows, len(data), sha, counts, filter_stats_of(metadata))


def remove_data_file(part: PartitionLocation, name: str) -> bool:
    """Delete one file of the partition's data folder; False if it was absent."""
    with storage_errors(f"removing {part.data_file_url(name)}", part.storage_options):
        fs, path = part.fs, part.data_file(name)
        part.guard(path)
        try:
            with_retries(lambda: fs.rm_file(path), what=f"removing {name}")
        except FileNotFoundError:
            return False
        fs.invalidate_cache(path)
    return True


def remove_shard(where: PartitionLocation | str, index: int, num_shards: int,
                 storage_options: dict[str, Any] | None = None) -> bool:
    """Delete one shard file (e.g. one that :func:`verify_shard` rejected); False if it was absent."""
    return remove_data_file(as_partition(where, storage_options), shard_name(index, num_shards))


def list_shards(where: PartitionLocation | str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted names of the shard files in a partition's data folder (none if it does not exist)."""
    part = as_partition(where, storage_options)
    with storage_errors(f"listing {part.data_url}", part.storage_options):
        part.guard(part.data_path)
        return sorted(n for n in data_listing(part) if parse_shard_name(n))


def unpublish(where: PartitionLocation | str, storage_options: dict[str, Any] | None = None) -> bool:
    """Delete the partition's manifest only, then rewrite the dataset card; False (and the card
    untouched) if there was none. The same as :meth:`Partition.unpublish`."""
    part = as_partition(where, storage_options)
    if not remove_manifest(part):
        return False
    update_card(part.output, part.job, part.storage_options)
    return True


def read_manifest(where: PartitionLocation | str, storage_options: dict[str, Any] | None = None) -> Manifest | None:
    """The manifest of a partition (a :class:`~.layout.PartitionLocation`, or the URL of its data
    or state folder), or of any folder that holds a ``manifest.json``; None if there is none.
    ManifestError if it is unreadable or inconsistent."""
    if isinstance(where, PartitionLocation):
        return load_manifest(where)
    part = PartitionLocation.from_url(where, storage_options, allow_old=True)
    if part is not None:
        return load_manifest(part)
    url = join(where, MANIFEST_NAME)
    so = storage_options or {}
    with storage_errors(f"reading {url}", so):
        fs, path = url_to_fs(url, so)
        fs.invalidate_cache(path)
        try:
            raw = with_retries(lambda: fs.cat_file(path), what="reading the manifest")
        except FileNotFoundError:
            return None
    return parse_manifest_bytes(raw, redact(url, so))
