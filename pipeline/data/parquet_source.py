"""``parquet``: images and labels from a Parquet dataset, local or on object storage.

``dataset.path`` is a ``.parquet`` file, a folder (searched recursively, so hive partitions
such as ``date=2024-06-01/`` are fine), or a glob (``s3://bucket/ds/date=*/part-*.parquet``).
Only ``*.parquet`` files are read; ``manifest.json`` and other files are ignored, as are hidden
or underscore-prefixed files and folders (``.staging/``, ``_temporary/``).

- image column (``dataset.image_column``): the Hugging Face ``Image`` layout
  ``struct<bytes: binary, path: string>``, or plain ``binary`` bytes (PNG, JPEG, ...);
  decoded with the same rules as ``image_folder`` (see :mod:`pipeline.data.folder`);
- label column (``dataset.label_column``): integers or strings. Class names come from the
  ``ClassLabel`` names in the ``huggingface`` schema metadata when present (integer labels
  then index those names as-is); otherwise string labels are numbered in sorted order, and
  integer labels are numbered in sorted order with ``str(value)`` as the name (labels that
  already run 0..K-1 keep their values).

genpipe's own published output has exactly this layout, so a published synthetic dataset
can be read back as training data (a round trip).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pipeline.data.base import DataError, ImageDataset, finish, source
from pipeline.data.folder import content_digest, decode_many, display_name, is_local, open_fs, u8_to_tensor
from pipeline.spec import DatasetSpec

GLOB_CHARS = "*?["


def list_parquet_files(path: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """(filesystem, sorted Parquet file paths) for a file, folder or glob."""
    fs, p = open_fs(path, storage_options)
    try:
        if any(ch in p for ch in GLOB_CHARS):
            base = p[: min(p.index(ch) for ch in GLOB_CHARS if ch in p)].rsplit("/", 1)[0]
            found = []
            for m in fs.glob(p):
                found.extend(fs.find(m) if fs.isdir(m) else [m])
        elif fs.isdir(p):
            base, found = p.rstrip("/"), fs.find(p)
        elif fs.isfile(p):
            return fs, [p]
        else:
            raise DataError(f"{path}: no such file or folder")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (credentials, network, permissions)
        raise DataError(f"{path}: cannot list ({type(exc).__name__}: {exc})") from None
    files = sorted(f for f in found if f.endswith(".parquet") and not _skipped(f[len(base):]))
    if not files:
        raise DataError(f"{path}: no .parquet files found")
    return fs, files


def _skipped(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)


def classlabel_names(metadata: dict[bytes, bytes] | None, column: str) -> list[str] | None:
    """``ClassLabel`` names of ``column`` from a schema's ``huggingface`` metadata, if any."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        info = json.loads(raw)
        feats = info.get("info", {}).get("features") or info.get("features") or {}
        names = feats.get(column, {}).get("names")
    except (ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _read_file(fs: Any, f: str, spec: DatasetSpec, name: str) -> tuple[list[bytes], list[Any], Any, str]:
    """(image bytes, labels, schema metadata, label kind) of one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    img_col, lab_col = spec.image_column, spec.label_column
    try:
        with fs.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
            missing = [c for c in (img_col, lab_col) if c not in schema.names]
            if missing:
                raise DataError(f"{name}: no column {', '.join(map(repr, missing))} (columns: "
                                f"{', '.join(schema.names)}); set dataset.image_column / dataset.label_column")
            table = pf.read(columns=[img_col, lab_col])
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (ArrowInvalid for a non-Parquet file, OSError, ...)
        raise DataError(f"{name}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    col = table.column(img_col).combine_chunks()
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("bytes") < 0:
            raise DataError(f"{name}: column {img_col!r} is {col.type}; expected struct<bytes, path> or binary")
        col = col.field("bytes")
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise DataError(f"{name}: column {img_col!r} is {col.type}; expected struct<bytes, path> or binary")
    images = col.to_pylist()
    labels_arr = table.column(lab_col).combine_chunks()
    if pa.types.is_dictionary(labels_arr.type):
        labels_arr = labels_arr.dictionary_decode()
    if pa.types.is_integer(labels_arr.type):
        kind = "int"
    elif pa.types.is_string(labels_arr.type) or pa.types.is_large_string(labels_arr.type):
        kind = "str"
    else:
        raise DataError(f"{name}: label column {lab_col!r} is {labels_arr.type}; expected integers or strings")
    labels = labels_arr.to_pylist()
    for what, values in (("image", images), ("label", labels)):
        if None in values:
            raise DataError(f"{name}: row {values.index(None)} has no {what} (null)")
    return images, labels, schema.metadata, kind


def read_label_space(labels: Sequence[Any], kinds: set[str], names: list[str] | None,
                     where: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..K-1 and give the class names (rules in the module docstring)."""
    if len(kinds) > 1:
        raise DataError(f"{where}: label column is integer in some files and string in others")
    kind = kinds.pop() if kinds else "int"
    if names is not None:
        if kind == "int":
            y = np.asarray(labels, dtype=np.int64)
            bad = np.flatnonzero((y < 0) | (y >= len(names)))
            if len(bad):
                raise DataError(f"{where}: label {int(y[bad[0]])} is outside the {len(names)} ClassLabel "
                                "names in the huggingface metadata")
            return y, names
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(labels) - set(index))
        if not unknown:
            return np.asarray([index[v] for v in labels], dtype=np.int64), names
    distinct = sorted(set(labels))
    index = {v: i for i, v in enumerate(distinct)}
    return np.asarray([index[v] for v in labels], dtype=np.int64), [str(v) for v in distinct]


def load_parquet_dataset(spec: DatasetSpec, storage_options: dict[str, Any] | None = None) -> ImageDataset:
    """Load a Parquet image dataset (local or fsspec URL) into memory.

    ``storage_options`` go to fsspec; without them fsspec uses the environment's credentials.
    """
    assert spec.path
    fs, files = list_parquet_files(spec.path, storage_options)
    threads = min(len(files), (os.cpu_count() or 1) if is_local(fs) else 16)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        parts = list(pool.map(lambda f: _read_file(fs, f, spec, display_name(fs, f)), files))
    names = next((n for _, _, md, _ in parts if (n := classlabel_names(md, spec.label_column))), None)
    items: list[tuple[str, int, bytes]] = []
    raw_labels: list[Any] = []
    for f, (imgs, labs, _, _) in zip(files, parts, strict=True):
        items.extend((f, r, b) for r, b in enumerate(imgs))
        raw_labels.extend(labs)
    if not items:
        raise DataError(f"{spec.path}: the Parquet files hold no rows")
    labels, class_names = read_label_space(raw_labels, {k for *_, k in parts}, names, spec.path)
    u8 = decode_many(items, lambda it: it[2], lambda it: f"{display_name(fs, it[0])} row {it[1]}", spec,
                     threads=os.cpu_count() or 1)
    ident = {"source": "parquet", "digest": content_digest(u8, labels, class_names),
             "image_size": spec.image_size, "channels": spec.channels}
    return finish(u8_to_tensor(u8), labels, class_names, spec, ident)


@source("parquet")
def parquet_source(spec: DatasetSpec) -> ImageDataset:
    """The ``parquet`` source (credentials: dataset.storage_options, else the environment; see load_parquet_dataset)."""
    return load_parquet_dataset(spec, spec.storage_options or None)
