"""A map-style torch Dataset over published shard files (imports torch: loaded lazily)."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

_RAW = ("height", "width", "channels")


class ParquetImageDataset(Dataset):
    """``(image, label)`` by global row index over a list of shard files.

    ``image`` is a float32 CHW tensor in [0, 1], or ``transform(PIL.Image)`` if a transform is
    given. Works for both the PNG and the raw format. Picklable (DataLoader workers each keep
    their own small LRU cache of decoded shard columns).
    """

    def __init__(self, fs: Any, files: list[str], rows: list[int], *,
                 transform: Callable[[Any], Any] | None = None, cache_files: int = 4):
        if len(files) != len(rows):
            raise ValueError("files and rows differ in length")
        self.fs = fs
        self.files = list(files)
        self.offsets = np.cumsum([0, *rows]).astype(np.int64)
        self.transform = transform
        self.cache_files = max(1, cache_files)
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _load(self, f: int) -> dict[str, Any]:
        hit = self._cache.get(f)
        if hit is not None:
            self._cache.move_to_end(f)
            return hit
        data = self.fs.cat_file(self.files[f])
        names = pq.read_schema(pa.BufferReader(data)).names
        cols = ["image", "label"] + [c for c in _RAW if c in names]
        t = pq.read_table(pa.BufferReader(data), columns=cols)
        img = t.column("image").combine_chunks()
        entry = {
            "png": pa.types.is_struct(img.type),
            "image": img.field("bytes") if pa.types.is_struct(img.type) else img,
            "label": t.column("label").to_numpy(),
            "shape": [t.column(c).to_numpy() for c in _RAW] if "height" in names else None,
        }
        self._cache[f] = entry
        while len(self._cache) > self.cache_files:
            self._cache.popitem(last=False)
        return entry

    def pixels(self, i: int) -> tuple[np.ndarray, int]:
        """(H, W, C) uint8 pixels and the label of row ``i``."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        f = int(np.searchsorted(self.offsets, i, side="right") - 1)
        r = i - int(self.offsets[f])
        e = self._load(f)
        raw = e["image"][r].as_py()
        if e["png"]:
            from PIL import Image

            arr = np.asarray(Image.open(io.BytesIO(raw)))
        else:
            h, w, c = (int(s[r]) for s in e["shape"])
            arr = np.frombuffer(raw, np.uint8).reshape(h, w, c)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr, int(e["label"][r])

    def __getitem__(self, i: int) -> tuple[Any, int]:
        arr, label = self.pixels(i)
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)), label
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0), label
