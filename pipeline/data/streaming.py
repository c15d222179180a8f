"""Ray Data datasets for file-backed sources too large to load whole into every worker.

:func:`streaming_dataset` lists the files of an ``image_folder`` or ``parquet`` source on the
driver (cheap: names, and for Parquet only the label column), peeks at one image for the shape,
and returns lazy Ray Data datasets that read, decode and normalise the images in Ray tasks:

    sd = streaming_dataset(spec.dataset, storage_options=spec.storage_options)
    trainer = TorchTrainer(loop, datasets={"train": sd.train}, ...)
    # in the per-worker loop:
    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=64, device=...):
        x, y = batch["image"], batch["label"]   # float32 (B, C, H, W) in [-1, 1]; int64 (B,)

Decoding uses the same rules as the in-memory sources (:func:`pipeline.data.folder.decode_image`),
except that the channel count and image size must be known before reading everything: they are
``dataset.channels`` / ``dataset.image_size`` when set, else those of the first image (every
other image is then converted to that channel count, and one of a different size is an error
naming it). Set both in the spec for streamed datasets with mixed content.

The train/test split is by content: an image is in the test split when a hash of its encoded
bytes and ``dataset.split_seed`` falls below ``dataset.test_fraction``. It is deterministic,
needs no global shuffle, and keeps duplicate images on one side; it is not the stratified split
of the in-memory path, so a job must use one path for both training and evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.base import DataError
from pipeline.data.folder import decode_image, display_name, is_local, list_image_folder, open_fs
from pipeline.data.parquet_source import classlabel_names, list_parquet_files, read_label_space
from pipeline.spec import DatasetSpec

if TYPE_CHECKING:
    import torch

STREAMING_SOURCES = ("image_folder", "parquet")


@dataclass
class StreamingData:
    """Lazy train/test Ray datasets with rows {"image": float32 (C, H, W), "label": int64}."""

    train: Any  # ray.data.Dataset
    test: Any  # ray.data.Dataset
    class_names: list[str]
    image_shape: tuple[int, int, int]  # (C, H, W)
    key: str  # identity of the data (source, files, shape, split): cache key for feature nets

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- the DataSource interface (pipeline/data/source.py) --

    @property
    def info(self) -> Any:
        from pipeline.data.info import DataInfo

        return DataInfo.of(self, streaming=True)

    def ray_datasets(self) -> dict[str, Any]:
        """What Ray Train hands its workers: each reads its shard of ``train``, never the whole."""
        return {"train": self.train}

    def eval_split(self, cap: int) -> Any:
        """The evaluation's real data in memory: this dataset's own test split and the first ``cap``
        images of its train split (the same content-hash split training used)."""
        from pipeline.data.base import ImageDataset

        test_x, test_y = to_tensors(self.test)
        train_x, train_y = to_tensors(self.train.limit(cap))
        return ImageDataset(train_x, train_y, test_x, test_y, self.class_names, self.key)


def is_test_item(data: bytes, seed: int, test_fraction: float) -> bool:
    """The content-hash split rule: True when this encoded image belongs to the test split."""
    h = hashlib.blake2b(digest_size=8)
    h.update(seed.to_bytes(8, "little"))
    h.update(data)
    return int.from_bytes(h.digest(), "little") / 2.0**64 < test_fraction


@dataclass
class _Decode:
    """map_batches function: split filter + decode + normalise (pyarrow batch in, numpy out)."""

    image_field: str
    label_field: str
    label_map: dict[Any, int] | None  # parquet: raw label -> class index
    path_root: str | None  # image_folder: root folder (fs path), classes are its sub-folders
    class_index: dict[str, int] | None  # image_folder: class folder name -> index
    want_test: bool
    seed: int
    test_fraction: float
    shape: tuple[int, int, int]
    resize: int | None
    scheme: str  # "s3://" etc. for error messages ("" for local files)

    def _labels(self, batch: Any, paths: list[str]) -> list[int]:
        if self.class_index is not None:  # image_folder: the class is the first folder below the root
            out = []
            prefix = f"{self.path_root}/"
            for p in paths:
                at = p.find(prefix)
                cls = p[at + len(prefix):].split("/", 1)[0] if at >= 0 else None
                if cls not in self.class_index:
                    raise DataError(f"{self.scheme}{p}: not inside a class folder of {self.scheme}{self.path_root}")
                out.append(self.class_index[cls])
            return out
        raw = batch.column(self.label_field).to_pylist()
        return [self.label_map[v] for v in raw] if self.label_map is not None else raw

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        import pyarrow as pa

        col = batch.column(self.image_field).combine_chunks()
        if pa.types.is_struct(col.type):
            col = col.field("bytes")
        images = col.to_pylist()
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else [""] * len(images)
        labels = self._labels(batch, paths)
        c, h, w = self.shape
        xs, ys = [], []
        for i, data in enumerate(images):
            name = f"{self.scheme}{paths[i]}" if paths[i] else f"row {i}"
            if data is None:
                raise DataError(f"{name}: null image")
            if is_test_item(data, self.seed, self.test_fraction) != self.want_test:
                continue
            a = decode_image(data, name, self.resize, c)
            if a.shape[:2] != (h, w):
                raise DataError(f"{name}: image is {a.shape[1]}x{a.shape[0]}, expected {w}x{h}; set "
                                "dataset.image_size to resize every image")
            xs.append(a.reshape(h, w, c))
            ys.append(labels[i])
        if not xs:
            return {"image": np.zeros((0, c, h, w), np.float32), "label": np.zeros((0,), np.int64)}
        x = np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        return {"image": x, "label": np.asarray(ys, dtype=np.int64)}


def streaming_dataset(spec: DatasetSpec, storage_options: dict[str, Any] | None = None,
                      batch_size: int = 256) -> StreamingData:
    """Build lazy Ray Data train/test datasets for an ``image_folder`` or ``parquet`` source.

    Needs an initialised Ray (``ray.init`` or inside a Ray job). ``storage_options`` go to
    fsspec for object storage; the filesystem is shipped to the read tasks with them.
    ``batch_size`` is the decode batch size of ``map_batches`` (not the training batch).
    """
    import ray.data

    if spec.source not in STREAMING_SOURCES:
        raise DataError(f"dataset.source: streaming reads {' or '.join(STREAMING_SOURCES)}, not "
                        f"{spec.source!r} (that source fits in memory: use the in-memory path)")
    assert spec.path
    common: dict[str, Any] = {"want_test": False, "seed": spec.split_seed, "test_fraction": spec.test_fraction,
                              "resize": spec.image_size}
    if spec.source == "image_folder":
        fs, classes, items = list_image_folder(spec.path, storage_options)
        files = [f for f, _ in items]
        first, first_name = fs.cat_file(files[0]), display_name(fs, files[0])
        root = open_fs(spec.path, storage_options)[1].rstrip("/")
        ds = ray.data.read_binary_files(files, filesystem=None if is_local(fs) else fs, include_paths=True)
        common.update(image_field="bytes", label_field="", label_map=None, path_root=root,
                      class_index={c: i for i, c in enumerate(classes)})
    else:
        fs, files = list_parquet_files(spec.path, storage_options)
        classes, label_map, first, first_name = _parquet_labels(fs, files, spec)
        ds = ray.data.read_parquet(files, filesystem=None if is_local(fs) else fs,
                                   columns=[spec.image_column, spec.label_column], partitioning=None,
                                   include_paths=True)
        common.update(image_field=spec.image_column, label_field=spec.label_column, label_map=label_map,
                      path_root=None, class_index=None)
    a = decode_image(first, first_name, spec.image_size, spec.channels)
    shape = (1 if a.ndim == 2 else 3, int(a.shape[0]), int(a.shape[1]))
    scheme = "" if is_local(fs) else display_name(fs, "")
    ident = {"source": spec.source, "files": files, "classes": classes, "shape": shape, "streaming": True,
             "split_seed": spec.split_seed, "test_fraction": spec.test_fraction}
    key = f"{spec.source}-{hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]}"
    split = {}
    for name, want_test in (("train", False), ("test", True)):
        fn = _Decode(**dict(common, want_test=want_test, shape=shape, scheme=scheme))
        split[name] = ds.map_batches(fn, batch_size=batch_size, batch_format="pyarrow")
    return StreamingData(split["train"], split["test"], classes, shape, key)


def _parquet_labels(fs: Any, files: list[str], spec: DatasetSpec
                    ) -> tuple[list[str], dict[Any, int] | None, bytes, str]:
    """Class names and raw->index label map from the label column only, plus the first image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw: list[Any] = []
    kinds: set[str] = set()
    names = None
    first: bytes | None = None
    for f in files:
        name = display_name(fs, f)
        try:
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                names = names or classlabel_names(pf.schema_arrow.metadata, spec.label_column)
                col = pf.read(columns=[spec.label_column]).column(0).combine_chunks()
                if first is None and pf.metadata.num_rows:
                    img = pf.read_row_group(0, columns=[spec.image_column]).column(0).combine_chunks()
                    img = img.field("bytes") if pa.types.is_struct(img.type) else img
                    first = img[0].as_py()
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        kinds.add("int" if pa.types.is_integer(col.type) else "str")
        raw.extend(col.to_pylist())
    if first is None:
        raise DataError(f"{spec.path}: the Parquet files hold no rows")
    y, classes = read_label_space(raw, kinds, names, spec.path)
    return classes, dict(zip(raw, y.tolist(), strict=True)), first, display_name(fs, files[0])


def to_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a (small) streamed split, e.g. the test split for evaluation: (x NCHW, y)."""
    import torch

    xs, ys = [], []
    for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        xs.append(torch.from_numpy(np.asarray(b["image"], dtype=np.float32)))
        ys.append(torch.from_numpy(np.asarray(b["label"], dtype=np.int64)))
    if not xs:
        raise DataError("the split is empty")
    return torch.cat(xs), torch.cat(ys)
