"""The published table: Arrow schema, PNG encoding, and building one shard's table.

Two image formats (``sample.format``):

``png`` (default)
    ``image`` is the Hugging Face ``Image`` layout ``struct<bytes: binary, path: string>``
    (exactly ``binary``, not ``large_binary``); ``bytes`` holds a PNG, ``path`` is null.
    The schema metadata key ``huggingface`` declares ``Image`` and ``ClassLabel(names)``, so
    ``datasets.load_dataset("parquet", data_files=...)`` decodes images to PIL and labels to
    class names.
``raw``
    ``image`` is ``binary`` holding the uint8 pixels in H, W, C order, with ``height``,
    ``width`` and ``channels`` (int16) columns to reshape them. No encode cost; larger files
    (zstd-compressed). Hugging Face sees ``image`` as a plain ``Value("binary")`` (there is no
    HF type for raw pixels), ``label`` is still a ``ClassLabel``.

Metadata columns (both formats), in this order after the image columns:

=============  ========================  ===================================================
``label``      int64 (``ClassLabel``)     class index into ``class_names``
``id``         string                     ``{job}/{date}/{global_index:09d}``
                                          (:func:`pipeline.sample.plan.image_ids`): the
                                          image's index in the whole plan, so an id does not
                                          change when ``shard_size`` or the actor count does
``seed``       int64                      the image's own seed (regenerate it from this alone)
``shard``      int32                      shard index
``model``      string                     model kind (``dcgan``, ``vae``, ``ddpm``)
``checkpoint`` string                     sha256 of the checkpoint's ``state.pt``
``job``        string                     job name
``date``       string ``YYYY-MM-DD``      logical date (a real column because ``datasets``
                                          ignores hive folders)
``created_at`` timestamp[us, UTC]         when the partition's first attempt started (one
                                          value per partition so re-runs write identical bytes)
=============  ========================  ===================================================

The files of one date lie in ``data/logical_date=D/`` (:mod:`pipeline.publish.layout`): the hive
key is not ``date``, so readers that infer a hive key's type (``dictionary<string>`` in pandas
and ``pyarrow.parquet``, ``Date`` in polars and DuckDB) add a ``logical_date`` column beside
``date`` instead of clashing with it.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from datetime import date as date_cls
from typing import Any

import deflate as _libdeflate
import numpy as np
import pyarrow as pa

FORMATS = ("png", "raw")
IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
RAW_SHAPE_COLUMNS = ("height", "width", "channels")
TIMESTAMP = pa.timestamp("us", tz="UTC")
META_FIELDS: list[pa.Field] = [
    pa.field("label", pa.int64()),
    pa.field("id", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("shard", pa.int32()),
    pa.field("model", pa.string()),
    pa.field("checkpoint", pa.string()),
    pa.field("job", pa.string()),
    pa.field("date", pa.string()),
    pa.field("created_at", TIMESTAMP),
]
#: columns that are one value per shard (dictionary-encoded in Parquet)
CONSTANT_COLUMNS = ("shard", "model", "checkpoint", "job", "date", "created_at")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PNG_COLOR = {1: 0, 3: 2, 4: 6}  # grayscale, RGB, RGBA
_CHUNK_BYTES = 512 * 2**20  # keep each binary chunk well under binary's 2 GiB offset limit


def check_date(d: str) -> str:
    """``d`` if it is a real ``YYYY-MM-DD`` date, else ValueError."""
    if not isinstance(d, str) or not _DATE_RE.match(d):
        raise ValueError(f"date must be YYYY-MM-DD, got {d!r}")
    date_cls.fromisoformat(d)
    return d


def _hf_value(t: pa.DataType) -> dict[str, str]:
    return {"dtype": "timestamp[us, tz=UTC]" if t == TIMESTAMP else str(t), "_type": "Value"}


def output_schema(class_names: Sequence[str], fmt: str = "png") -> pa.Schema:
    """The Arrow schema of every published shard, with Hugging Face features in its metadata."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("class_names must not be empty")
    if fmt == "png":
        fields = [pa.field("image", IMAGE_STRUCT)]
        features: dict[str, Any] = {"image": {"_type": "Image"}}
    else:
        fields = [pa.field("image", pa.binary())] + [pa.field(c, pa.int16()) for c in RAW_SHAPE_COLUMNS]
        features = {"image": _hf_value(pa.binary())} | {c: _hf_value(pa.int16()) for c in RAW_SHAPE_COLUMNS}
    fields += META_FIELDS
    for f in META_FIELDS:
        features[f.name] = {"names": names, "_type": "ClassLabel"} if f.name == "label" else _hf_value(f.type)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema(fields, metadata=meta)


def class_names_of(schema: pa.Schema) -> list[str] | None:
    """ClassLabel names from a schema's ``huggingface`` metadata (None if absent)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        label = json.loads(raw)["info"]["features"]["label"]
        return list(label["names"]) if label.get("_type") == "ClassLabel" else None
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------- PNG
#
# The deflate step is libdeflate (PyPI ``deflate``, which bundles it), measured against zlib and
# ISA-L in bench/png_deflate.py (bench/results/deflate-cpu.json). Bytes are a function of the pixels,
# the level and the libdeflate build: :func:`encoder_info` names them (the manifest records it).
# Another libdeflate version may compress differently -- other bytes -- but every PNG always decodes
# to exactly the pixels it was given.

PNG_DEFLATE = "libdeflate"
#: libdeflate's level for PNGs: the fastest level whose output is no larger than zlib level 1's
#: (level 1 is faster still but up to 2.8% larger on smooth images: bench/results/deflate-cpu.json)
PNG_LEVEL = 2


def encoder_info() -> dict[str, Any]:
    """What makes the PNG bytes: ``{"png_deflate": "libdeflate", "version": ..., "level": ...}``.

    ``version`` is the ``deflate`` package's (each release bundles one libdeflate: 0.9.0 bundles
    libdeflate 1.25); ``libdeflate`` is that bundled version where known.
    """
    from importlib.metadata import version

    v = version("deflate")
    return {"png_deflate": PNG_DEFLATE, "version": v, "libdeflate": _BUNDLED_LIBDEFLATE.get(v), "level": PNG_LEVEL}


#: the libdeflate each ``deflate`` release bundles (its CHANGELOG); None for a release not listed
_BUNDLED_LIBDEFLATE = {"0.9.0": "1.25", "0.8.1": "1.24", "0.8.0": "1.22"}


def _chunk(tag: bytes, data: bytes) -> bytes:
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _check_level(level: int) -> int:
    if not 0 <= level <= 12:
        raise ValueError(f"PNG level must be 0..12 (libdeflate's levels), got {level}")
    return level


def _png_batch(a: np.ndarray, compress: Callable[[Any], bytes], workers: int = 1) -> list[bytes]:
    """PNGs of a checked (N, H, W, C) uint8 batch, ``compress`` making each zlib stream.

    The ``Sub`` filter runs once over the whole batch in numpy; only ``compress`` runs per image.
    (bench/png_deflate.py passes other compressors to this same code.)
    """
    n, h, w, c = a.shape
    rows = a.reshape(n, h, w * c)
    raw = np.empty((n, h, w * c + 1), np.uint8)
    raw[:, :, 0] = 1  # filter type Sub: byte - byte one pixel to the left (mod 256)
    raw[:, :, 1:c + 1] = rows[:, :, :c]
    np.subtract(rows[:, :, c:], rows[:, :, :-c], out=raw[:, :, c + 1:])
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR[c], 0, 0, 0))
    tail = _chunk(b"IEND", b"")
    idat_crc = zlib.crc32(b"IDAT")

    def one(r: np.ndarray) -> bytes:  # == head + _chunk(b"IDAT", z) + tail, without the copies
        z = compress(r)  # a contiguous row: passed as a buffer, not copied to bytes first
        return b"".join((head, struct.pack(">I4s", len(z), b"IDAT"), z, struct.pack(">I", zlib.crc32(z, idat_crc)), tail))

    if workers <= 1 or n < 2 * workers:
        return [one(r) for r in raw]
    with ThreadPoolExecutor(workers) as ex:  # libdeflate releases the GIL
        return list(ex.map(one, raw, chunksize=64))


def encode_png(img_u8_hwc: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """A PNG of an (H, W, C) or (H, W) uint8 image, C in 1, 3 (4 also works).

    A direct encoder (IHDR + one IDAT + IEND, every row with the ``Sub`` filter, libdeflate at
    ``level``): no timestamps or other ancillary chunks, so the same pixels always give the same
    bytes for a given libdeflate (:func:`encoder_info`); another version may give other bytes,
    never other pixels. Measured on one core (bench/results/deflate-cpu.json: scikit-learn digits,
    upscaled to 32x32 grey and tinted RGB, clean and with noise; CPU time):

    * against the same container with zlib level 1 (this encoder until libdeflate): 1.3-1.55x
      faster for the whole encode at 32x32 (the deflate step alone 1.45-1.6x), and never larger
      (0.991-0.999x the bytes); at 8x8 (digits' own size) 0.6x, as libdeflate's per-call set-up
      (~6 us) outweighs 72 bytes of input. libdeflate level 1 would be 1.6-2.5x faster but up to
      2.8% larger on smooth images, ISA-L 2.2-2.7x faster but up to 4% larger;
    * against Pillow's PNG (adaptive row filters, zlib level 6): 4.2-4.7x faster and 11-18%
      larger at 32x32 (5x faster, 4% larger at 8x8).
    """
    a = np.asarray(img_u8_hwc)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _PNG_COLOR or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be (H, W, C) with C in 1, 3 or 4, got shape {a.shape}")
    _check_level(level)
    return _png_batch(a[None], lambda b: _libdeflate.zlib_compress(b, level))[0]


def encode_pngs(images_u8: np.ndarray, level: int = PNG_LEVEL, workers: int = 1) -> list[bytes]:
    """PNGs of a (N, H, W, C) batch, byte-identical to :func:`encode_png` on each image.

    The ``Sub`` filter runs once over the whole batch in numpy; only libdeflate runs per image.
    ``workers`` > 1 spreads it over threads (it releases the GIL).
    """
    a = np.asarray(images_u8)
    if a.ndim == 3:
        a = a[..., None]
    if len(a) == 0:
        return []
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] not in _PNG_COLOR or 0 in a.shape[1:3]:
        return [encode_png(x, level) for x in a]  # let the single-image path raise its precise error
    _check_level(level)
    return _png_batch(a, lambda b: _libdeflate.zlib_compress(b, level), workers)


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, C) uint8 pixels of a PNG (any PNG, via PIL)."""
    import io

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(data)))
    return a[:, :, None] if a.ndim == 2 else a


# -------------------------------------------------------------------------------------------- table


def _binary_column(values: list[bytes]) -> pa.ChunkedArray:
    chunks, cur, size = [], [], 0
    for v in values:
        if cur and size + len(v) > _CHUNK_BYTES:
            chunks.append(pa.array(cur, pa.binary()))
            cur, size = [], 0
        cur.append(v)
        size += len(v)
    chunks.append(pa.array(cur, pa.binary()))
    return pa.chunked_array(chunks, pa.binary())


def _utc(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    if not isinstance(ts, datetime):
        raise ValueError(f"created_at must be a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)  # naive = UTC


def build_table(
    images_u8: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    seeds: Sequence[int] | np.ndarray,
    ids: Sequence[str],
    shard: int,
    *,
    class_names: Sequence[str],
    fmt: str = "png",
    model: str,
    checkpoint: str,
    job: str,
    date: str,
    created_at: datetime | None,
    png_level: int = PNG_LEVEL,
    workers: int = 1,
) -> pa.Table:
    """One shard's table in the :func:`output_schema` layout.

    ``images_u8`` is (N, H, W, C) uint8; ``labels``/``seeds`` int64 and ``ids`` strings of
    length N. A naive ``created_at`` is taken as UTC; None means now.
    """
    imgs = np.asarray(images_u8)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.dtype != np.uint8 or imgs.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {imgs.dtype} {imgs.shape}")
    n = len(imgs)
    labels_a = np.asarray(labels, dtype=np.int64).reshape(-1)
    seeds_a = np.asarray(seeds, dtype=np.int64).reshape(-1)
    ids_l = [str(i) for i in ids]
    if not (len(labels_a) == len(seeds_a) == len(ids_l) == n):
        raise ValueError(f"lengths differ: {n} images, {len(labels_a)} labels, {len(seeds_a)} seeds, {len(ids_l)} ids")
    k = len(class_names)
    if n and (labels_a.min() < 0 or labels_a.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} (there are {k} class names)")
    if len(set(ids_l)) != n:
        raise ValueError("ids must be unique within a shard")
    if not 0 <= int(shard) < 2**31:
        raise ValueError(f"shard index out of range: {shard}")
    check_date(date)
    schema = output_schema(class_names, fmt)
    ts = _utc(created_at)

    cols: dict[str, Any] = {}
    if fmt == "png":
        data = _binary_column(encode_pngs(imgs, png_level, workers))
        paths = pa.nulls(n, pa.string())
        cols["image"] = pa.chunked_array(
            [pa.StructArray.from_arrays([c, paths.slice(off, len(c))], fields=list(IMAGE_STRUCT))
             for off, c in zip(np.cumsum([0] + [len(c) for c in data.chunks[:-1]]), data.chunks, strict=True)],
            IMAGE_STRUCT,
        )
    else:
        _, h, w, c = imgs.shape
        cols["image"] = _binary_column([a.tobytes() for a in imgs])
        for name, v in zip(RAW_SHAPE_COLUMNS, (h, w, c), strict=True):
            cols[name] = pa.array(np.full(n, v, np.int16))
    cols |= {
        "label": pa.array(labels_a),
        "id": pa.array(ids_l, pa.string()),
        "seed": pa.array(seeds_a),
        "shard": pa.array(np.full(n, int(shard), np.int32)),
        "model": pa.array([str(model)] * n, pa.string()),
        "checkpoint": pa.array([str(checkpoint)] * n, pa.string()),
        "job": pa.array([str(job)] * n, pa.string()),
        "date": pa.array([date] * n, pa.string()),
        "created_at": pa.array([ts] * n, TIMESTAMP),
    }
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
