"""Parquet bytes of one shard, and checking that bytes are one complete shard.

Writer choices (one place, so every shard is laid out the same way):

* row groups sized by bytes: ``TARGET_ROW_GROUP_BYTES`` (64 MiB) of in-memory table per row
  group, estimated from the table's average row size; a small shard is one row group;
* the image column uncompressed when it holds PNG (already deflated: zstd would burn CPU for
  ~0%), zstd when it holds raw pixels; every other column zstd;
* dictionary encoding only for the per-shard constant and low-cardinality columns (never for
  image bytes or ids, which are unique);
* statistics on the metadata columns only (min/max of image bytes are useless and large);
* page index on (``write_page_index``), so readers can skip pages by ``label``/``seed``/``id``;
* page CRC checksums on (``write_page_checksum``), so :func:`inspect_parquet` catches a flipped
  byte anywhere in the file, not only a truncated footer.
"""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

TARGET_ROW_GROUP_BYTES = 64 * 2**20
DICTIONARY_COLUMNS = ("label", "shard", "model", "checkpoint", "job", "date", "created_at",
                      "height", "width", "channels")


def leaf_paths(schema: pa.Schema) -> list[str]:
    """Dotted column paths of every leaf (``image.bytes``, ``image.path``, ``label`` ...)."""
    out: list[str] = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for f in t:
                walk(f"{prefix}.{f.name}", f.type)
        else:
            out.append(prefix)

    for f in schema:
        walk(f.name, f.type)
    return out


def rows_per_group(table: pa.Table, target_bytes: int = TARGET_ROW_GROUP_BYTES) -> int:
    """Rows per row group so that a group holds about ``target_bytes`` of data."""
    n = table.num_rows
    if n == 0:
        return 1
    per_row = max(1, table.nbytes // n)
    return max(1, min(n, target_bytes // per_row))


def writer_options(schema: pa.Schema) -> dict:
    """Keyword arguments for :class:`pyarrow.parquet.ParquetWriter` (see the module doc)."""
    leaves = leaf_paths(schema)
    png = pa.types.is_struct(schema.field("image").type) if "image" in schema.names else False
    compression = {p: ("none" if png and p.startswith("image.") else "zstd") for p in leaves}
    meta_leaves = [p for p in leaves if p != "image" and not p.startswith("image.")]
    return {
        "compression": compression,
        "use_dictionary": [c for c in DICTIONARY_COLUMNS if c in schema.names],
        "write_statistics": meta_leaves,
        "write_page_index": True,
        "write_page_checksum": True,
        "store_schema": True,
    }


def parquet_bytes(table: pa.Table, target_row_group_bytes: int = TARGET_ROW_GROUP_BYTES) -> bytes:
    """The complete Parquet file of ``table`` as bytes (deterministic for the same table)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, **writer_options(table.schema)) as w:
        w.write_table(table, row_group_size=rows_per_group(table, target_row_group_bytes))
    return sink.getvalue().to_pybytes()


def label_counts(table: pa.Table) -> dict[int, int]:
    """Rows per label value of a table with a ``label`` column."""
    return dict(sorted(Counter(table.column("label").to_pylist()).items()))


def inspect_parquet(
    data: bytes, expected_rows: int, shard_index: int | None = None
) -> tuple[str | None, dict[int, int]]:
    """(problem or None, label counts) for the bytes of one shard file.

    A shard is good when the footer parses, it holds ``expected_rows`` rows, every page's CRC
    matches (the whole file is decoded), it has ``image`` and ``label`` columns, and (when
    ``shard_index`` is given) its ``shard`` column holds that index only.
    """
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        return f"not a complete Parquet file ({len(data)} bytes, magic bytes missing)", {}
    try:
        pf = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
        rows = pf.metadata.num_rows
        if rows != expected_rows:
            return f"{rows} rows, expected {expected_rows}", {}
        names = pf.schema_arrow.names
        if "image" not in names or "label" not in names:
            return "no image/label columns", {}
        table = pf.read()
    except Exception as exc:  # noqa: BLE001 - any decode error means "not a good shard"
        return f"unreadable ({type(exc).__name__}: {exc})", {}
    if table.num_rows != expected_rows:
        return f"{table.num_rows} rows decoded, expected {expected_rows}", {}
    if shard_index is not None and "shard" in names and table.num_rows:
        found = set(table.column("shard").to_pylist())
        if found != {shard_index}:
            return f"shard column holds {sorted(found)[:5]}, expected {shard_index}", {}
    return None, label_counts(table)
