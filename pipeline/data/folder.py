"""``image_folder``: one sub-folder per class, as torchvision's ``ImageFolder``, on any fsspec URL.

    <path>/<class name>/**/<image>.{png,jpg,jpeg,bmp,gif,ppm,pgm,tif,tiff,webp}

Class folders are sorted by name and numbered from 0; the folder name is the class name.
Files are found recursively under each class folder; hidden files and folders (``.name``)
and files with other extensions are skipped. ``path`` is a local folder or an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``); files are fetched and decoded in
parallel threads.

Decoding (Pillow), shared with the Parquet source and the streaming reader:

- size: with ``dataset.image_size`` every image is resized (shorter side, bicubic with
  antialiasing) and centre-cropped to a square of that size, as torchvision's
  ``Resize(s) + CenterCrop(s)``; without it, every image must be the same square size, and
  the first one that differs is named in the error;
- channels: ``dataset.channels`` forces grayscale (1) or RGB (3); otherwise the dataset is
  grayscale when every image is, else RGB (grayscale images are repeated to 3 channels);
- an image Pillow cannot decode (truncated, not an image) is a :class:`DataError` naming it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.base import DataError, ImageDataset, finish, source
from pipeline.spec import DatasetSpec

if TYPE_CHECKING:
    import torch

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MIN_SIDE = 8


# ------------------------------------------------------------------------------------------- decoding


def decode_image(data: bytes, name: str, image_size: int | None = None, channels: int | None = None
                 ) -> np.ndarray:
    """Decode one encoded image to uint8 (H, W) for grayscale or (H, W, 3) for colour.

    ``channels`` forces the output (1 -> (H, W), 3 -> (H, W, 3)); ``None`` keeps the image's
    own kind. ``image_size`` resizes the shorter side and centre-crops to a square.
    ``name`` (file, or file and row) is used in the error when the bytes do not decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            gray = im.mode in GRAY_MODES or (im.mode == "P" and _gray_palette(im))
            if im.mode.startswith("I;16") or im.mode == "I":
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
            want = channels or (1 if gray else 3)
            im = im.convert("L" if want == 1 else "RGB")
            if image_size:
                im = _resize_center_crop(im, image_size)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None


def _gray_palette(im: Any) -> bool:
    pal = im.getpalette() or []
    rgb = np.asarray(pal[: len(pal) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())


def _resize_center_crop(im: Any, size: int) -> Any:
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def stack_images(arrays: Sequence[np.ndarray], names: Sequence[str], channels: int | None) -> np.ndarray:
    """Decoded images -> one (N, H, W, C) uint8 array, applying the size and channel rules above."""
    if not arrays:
        raise DataError("no images")
    h, w = arrays[0].shape[:2]
    for a, n in zip(arrays, names, strict=True):
        if a.shape[:2] != (h, w):
            raise DataError(f"{n}: image is {a.shape[1]}x{a.shape[0]} but {names[0]} is {w}x{h}; set "
                            "dataset.image_size to resize every image to one square size")
    if h != w:
        raise DataError(f"{names[0]}: images are {w}x{h}, not square; set dataset.image_size to resize "
                        "and centre-crop them")
    if h < MIN_SIDE:
        raise DataError(f"{names[0]}: images are {w}x{h}, smaller than {MIN_SIDE}x{MIN_SIDE}; set "
                        "dataset.image_size")
    c = channels or (1 if all(a.ndim == 2 for a in arrays) else 3)
    out = np.empty((len(arrays), h, w, c), dtype=np.uint8)
    for i, a in enumerate(arrays):
        if a.ndim == 2:
            out[i] = a[..., None]  # broadcasts to 3 channels when c == 3
        elif c == 1:  # only when a caller decoded without forcing channels
            out[i, ..., 0] = np.asarray(_to_l(a))
        else:
            out[i] = a
    return out


def _to_l(a: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(a, mode="RGB").convert("L")


def decode_many(items: Sequence[Any], fetch: Callable[[Any], bytes], name_of: Callable[[Any], str],
                spec: DatasetSpec, threads: int | None = None) -> np.ndarray:
    """Fetch and decode ``items`` in parallel threads; returns (N, H, W, C) uint8 in input order."""

    def one(item: Any) -> np.ndarray:
        name = name_of(item)
        try:
            data = fetch(item)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 (fsspec backends raise many kinds)
            raise DataError(f"{name}: cannot read ({type(exc).__name__}: {exc})") from None
        return decode_image(data, name, spec.image_size, spec.channels)

    n = threads or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, min(n, len(items)))) as pool:
        arrays = list(pool.map(one, items))
    return stack_images(arrays, [name_of(i) for i in items], spec.channels)


def u8_to_tensor(u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> float32 NCHW in [-1, 1]."""
    import torch

    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def content_digest(u8: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> str:
    h = hashlib.sha256(u8.tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    h.update("\0".join(class_names).encode())
    return h.hexdigest()[:16]


# -------------------------------------------------------------------------------------------- listing


def open_fs(path: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a local path or URL."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise DataError(f"dataset.path: cannot open {path!r}: {exc}") from None


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/") if part)


def list_image_folder(path: str, storage_options: dict[str, Any] | None = None
                      ) -> tuple[Any, list[str], list[tuple[str, int]]]:
    """(filesystem, sorted class names, [(file path, class index)]) of a class-per-folder tree."""
    fs, root = open_fs(path, storage_options)
    root = root.rstrip("/")
    try:
        if not fs.isdir(root):
            what = "is a file, not a folder" if fs.exists(root) else "does not exist"
            raise DataError(f"{path}: {what}; image_folder needs a folder with one sub-folder per class")
        entries = fs.ls(root, detail=True)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (permissions, credentials, network)
        raise DataError(f"{path}: cannot list ({type(exc).__name__}: {exc})") from None
    class_dirs = sorted((e["name"].rstrip("/") for e in entries if e["type"] == "directory"
                         and not os.path.basename(e["name"].rstrip("/")).startswith(".")),
                        key=lambda p: os.path.basename(p))
    if not class_dirs:
        raise DataError(f"{path}: no class sub-folders found (expected {path}/<class name>/<image>.png)")
    classes = [os.path.basename(d) for d in class_dirs]
    files: list[tuple[str, int]] = []
    for idx, d in enumerate(class_dirs):
        found = sorted(f for f in fs.find(d) if f.lower().endswith(IMG_EXTENSIONS)
                       and not _hidden(f[len(d):]))
        if not found:
            raise DataError(f"{path}/{classes[idx]}: class folder has no image files "
                            f"({', '.join(IMG_EXTENSIONS)})")
        files.extend((f, idx) for f in found)
    return fs, classes, files


def is_local(fs: Any) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"file", "local"} & set(protos))


def display_name(fs: Any, p: str) -> str:
    """A path as the user would write it (with the URL scheme for object storage)."""
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return p if is_local(fs) else f"{proto}://{p}"


# --------------------------------------------------------------------------------------------- source


def load_image_folder(spec: DatasetSpec, storage_options: dict[str, Any] | None = None) -> ImageDataset:
    """Load a class-per-folder image tree (local or fsspec URL) into memory.

    ``storage_options`` go to fsspec (credentials, ``client_kwargs={"endpoint_url": ...}``);
    without them fsspec falls back to the environment (``AWS_*`` variables, instance roles).
    """
    assert spec.path
    fs, classes, files = list_image_folder(spec.path, storage_options)
    # object storage: many threads hide request latency; local disk: one per core is enough
    threads = (os.cpu_count() or 1) if is_local(fs) else None
    u8 = decode_many(files, lambda it: fs.cat_file(it[0]), lambda it: display_name(fs, it[0]), spec,
                     threads=threads)
    labels = np.fromiter((c for _, c in files), dtype=np.int64, count=len(files))
    ident = {"source": "image_folder", "digest": content_digest(u8, labels, classes),
             "image_size": spec.image_size, "channels": spec.channels}
    return finish(u8_to_tensor(u8), labels, classes, spec, ident)


@source("image_folder")
def image_folder_source(spec: DatasetSpec) -> ImageDataset:
    """The ``image_folder`` source (credentials: dataset.storage_options, else the environment; see load_image_folder)."""
    return load_image_folder(spec, spec.storage_options or None)
