"""Who wrote a shard: the spec hash and checkpoint digest of its run, stamped into the shard's
Parquet footer at commit (schema key-value metadata ``genpipe``).

A shard file found in a partition (resume, ``--overwrite``, a duplicate writer) is accepted only
when its footer names the same spec hash, checkpoint digest, shard index and shard count as the
run looking at it; anything else is a foreign shard: removed and written again, never published
under this run's manifest. Reading it needs only the footer (a few kB at the end of the file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FOOTER_KEY = b"genpipe"
FOOTER_VERSION = 1


@dataclass(frozen=True)
class Provenance:
    """What makes a shard this run's: the spec hash (what the rows are) and the checkpoint
    digest (which weights drew them)."""

    spec_hash: str
    checkpoint_digest: str

    def key(self) -> tuple[str, str]:
        return self.spec_hash, self.checkpoint_digest

    def footer(self, index: int, num_shards: int) -> dict[str, Any]:
        return {"version": FOOTER_VERSION, "spec_hash": self.spec_hash, "checkpoint_digest": self.checkpoint_digest,
                "shard": int(index), "num_shards": int(num_shards)}

    def stamp(self, table: pa.Table, index: int, num_shards: int) -> pa.Table:
        """``table`` with this provenance in its schema metadata (other keys, e.g. ``huggingface``, kept)."""
        meta = dict(table.schema.metadata or {})
        meta[FOOTER_KEY] = json.dumps(self.footer(index, num_shards), sort_keys=True).encode()
        return table.replace_schema_metadata(meta)

    def problem(self, metadata: Mapping[bytes, bytes] | None, index: int, num_shards: int) -> str | None:
        """None if a footer's metadata names this provenance and shard, else what differs."""
        found = footer_provenance(metadata)
        if found is None:
            return "its footer carries no genpipe provenance (written by another tool or an older genpipe)"
        want = self.footer(index, num_shards)
        diff = [k for k in ("spec_hash", "checkpoint_digest", "shard", "num_shards") if found.get(k) != want[k]]
        if not diff:
            return None
        return "written by another run: " + ", ".join(
            f"{k} {str(found.get(k))[:12]} != {str(want[k])[:12]}" for k in diff)


def footer_provenance(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The ``genpipe`` footer record of a Parquet file's key-value metadata (None if absent or garbled)."""
    return _footer_record(metadata, FOOTER_KEY)


def _footer_record(metadata: Mapping[bytes, bytes] | None, key: bytes) -> dict[str, Any] | None:
    """The JSON object under ``key`` in a Parquet footer's key-value metadata (None if absent or garbled)."""
    raw = (metadata or {}).get(key)
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def metadata_of_bytes(data: bytes) -> dict[bytes, bytes] | None:
    """Key-value metadata from the footer of a whole Parquet file held in memory."""
    return pq.read_metadata(pa.BufferReader(data)).metadata


def metadata_of_file(fs: Any, path: str) -> dict[bytes, bytes] | None:
    """Key-value metadata of a Parquet file in storage, reading only its footer."""
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.metadata


#: footer key of a shard's ``sample.filter`` counts (per label: tried, accepted, forced), so a
#: resumed run's manifest adds up every shard's counts, including those an earlier run wrote
FILTER_KEY = b"genpipe_filter"


def stamp_filter_stats(table: pa.Table, stats: Mapping[str, Any]) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[FILTER_KEY] = json.dumps(stats, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def filter_stats_of(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The filter counts stamped into a shard's footer (None: written without a filter, or garbled)."""
    return _footer_record(metadata, FILTER_KEY)
