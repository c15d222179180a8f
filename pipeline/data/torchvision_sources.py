"""torchvision's MNIST, Fashion-MNIST and CIFAR-10, loaded by torchvision's own dataset classes.

Where the files live: ``dataset.path`` (a local folder; default ``~/.cache/genpipe/<source>``),
in the layout torchvision uses:

- ``mnist``:         ``<path>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
- ``fashion_mnist``: ``<path>/FashionMNIST/raw/...`` (same four idx files)
- ``cifar10``:       ``<path>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``

``dataset.download: true`` lets torchvision fetch them (machines with internet only). The
datasets' own train/test splits are kept as genpipe's split, so ``dataset.test_fraction`` and
``dataset.split_seed`` do not apply to these sources. Class names are the dataset's own
(``.classes``: ``"0 - zero"``..., ``"T-shirt/top"``..., ``"airplane"``...).

CIFAR-10 files are Python pickles. torchvision checks each one against the md5 of the official
release before unpickling it, and genpipe keeps that check on: besides catching truncated
downloads, it means a pickle that is not the genuine CIFAR-10 release is never unpickled (a
pickle can run code). Tests that write their own CIFAR pickles register those files' md5s in
torchvision's table (``CIFAR10.train_list`` etc.) instead of switching the check off.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from pipeline.data.base import DataError, ImageDataset, finish, source
from pipeline.spec import DatasetSpec

DEFAULT_ROOT = "~/.cache/genpipe"
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def data_root(spec: DatasetSpec) -> Path:
    """The local folder a torchvision source reads (``dataset.path`` or ``~/.cache/genpipe/<source>``)."""
    raw = spec.path or f"{DEFAULT_ROOT}/{spec.source}"
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    elif "://" in raw:
        raise DataError(f"dataset.path: {spec.source} reads a local folder, got {raw!r}; copy the files to "
                        "local disk, or publish them as Parquet / an image folder and use that source")
    return Path(raw).expanduser()


def _not_found(folder: Path, missing: list[str], source_name: str) -> DataError:
    return DataError(f"{source_name}: files not found in {folder}: {', '.join(missing)}; set "
                     "`dataset.download: true` (needs internet) or place the files there")


def _tensor_from_u8(images_hwc: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> float32 NCHW in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images_hwc))
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(127.5).sub_(1.0).contiguous()


def _combine(train_u8: np.ndarray, train_y: np.ndarray, test_u8: np.ndarray, test_y: np.ndarray,
             class_names: list[str], spec: DatasetSpec, files: list[str]) -> ImageDataset:
    """Stack the dataset's own splits and hand them to :func:`finish` with that split."""
    u8 = np.concatenate([train_u8, test_u8])
    y = np.concatenate([train_y, test_y]).astype(np.int64)
    h = hashlib.sha256(u8.tobytes())
    h.update(y.tobytes())
    n = len(train_y)
    split = (np.arange(n), np.arange(n, len(y)))
    ident = {"source": spec.source, "digest": h.hexdigest()[:16], "files": files, "own_split": True}
    return finish(_tensor_from_u8(u8), y, list(class_names), spec, ident, split=split)


# ---------------------------------------------------------------------------------------- MNIST family


def _load_mnist_like(spec: DatasetSpec, cls_name: str) -> ImageDataset:
    import torchvision.datasets as tvd
    from torchvision.datasets.mnist import read_image_file, read_label_file

    cls = getattr(tvd, cls_name)
    root = data_root(spec)
    raw = root / cls_name / "raw"
    if not spec.download:
        missing = [f for f in _IDX_FILES if not (raw / f).is_file()]
        # torchvision also accepts its legacy processed/{training,test}.pt cache
        legacy = all((root / cls_name / "processed" / f).is_file() for f in ("training.pt", "test.pt"))
        if missing and not legacy:
            raise _not_found(raw, missing, spec.source)
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=spec.download)
        except Exception as exc:  # torchvision raises bare AssertionError / ValueError / RuntimeError
            raise _explain_mnist_error(raw, exc, read_image_file, read_label_file, spec) from exc
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        targets = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
        if data.ndim != 3 or data.dtype != np.uint8:
            raise DataError(f"{raw}: expected (N, H, W) uint8 images, got {data.dtype} {data.shape}")
        if len(data) != len(targets):
            which = "train" if train else "t10k"
            raise DataError(f"{raw / f'{which}-labels-idx1-ubyte'}: {len(targets)} labels for "
                            f"{len(data)} images in {which}-images-idx3-ubyte")
        parts.append((data, targets))
        classes = list(ds.classes)
    (trx, tr_y), (tex, te_y) = parts
    return _combine(trx, tr_y, tex, te_y, classes, spec, list(_IDX_FILES))


def _explain_mnist_error(raw: Path, exc: Exception, read_image_file, read_label_file,
                         spec: DatasetSpec) -> DataError:
    """Find which idx file torchvision choked on (its errors don't say) and name it."""
    missing = [f for f in _IDX_FILES if not (raw / f).is_file()]
    if missing:
        if spec.download:
            return DataError(f"{spec.source}: download into {raw} failed ({exc}); place the files "
                             f"{', '.join(missing)} there instead")
        return _not_found(raw, missing, spec.source)
    for name in _IDX_FILES:
        reader = read_image_file if "images" in name else read_label_file
        try:
            reader(str(raw / name))
        except Exception as e:  # noqa: BLE001 (any parse failure means this file is bad)
            why = str(e) or "bad idx header (wrong magic number or dimensions)"
            return DataError(f"{raw / name}: not a valid idx file ({type(e).__name__}: {why})")
    return DataError(f"{spec.source}: torchvision could not read {raw}: {type(exc).__name__}: {exc}")


@source("mnist")
def load_mnist(spec: DatasetSpec) -> ImageDataset:
    """MNIST (28x28 grayscale, 60,000 train / 10,000 test) through ``torchvision.datasets.MNIST``."""
    return _load_mnist_like(spec, "MNIST")


@source("fashion_mnist")
def load_fashion_mnist(spec: DatasetSpec) -> ImageDataset:
    """Fashion-MNIST (28x28 grayscale) through ``torchvision.datasets.FashionMNIST``."""
    return _load_mnist_like(spec, "FashionMNIST")


# ------------------------------------------------------------------------------------------- CIFAR-10


def cifar_files(cls: type) -> list[tuple[str, str]]:
    """(file name, expected md5) for every file torchvision's CIFAR class reads."""
    return [(f, m) for f, m in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]


@source("cifar10")
def load_cifar10(spec: DatasetSpec) -> ImageDataset:
    """CIFAR-10 (32x32 RGB, 50,000 train / 10,000 test) through ``torchvision.datasets.CIFAR10``."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    root = data_root(spec)
    folder = root / CIFAR10.base_folder
    files = cifar_files(CIFAR10)
    if not spec.download:
        missing = [f for f, _ in files if not (folder / f).is_file()]
        if missing:
            raise _not_found(folder, missing, spec.source)
    parts = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=spec.download)
        except Exception as exc:  # noqa: BLE001 (RuntimeError, pickle errors, KeyError, ValueError...)
            raise _explain_cifar_error(root, files, exc, spec, check_integrity) from exc
        data = np.asarray(ds.data)
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
            raise DataError(f"{folder}: expected (N, 32, 32, 3) uint8 images, got {data.dtype} {data.shape}")
        parts.append((data, np.asarray(ds.targets, dtype=np.int64)))
        classes = [str(c) for c in ds.classes]
    (trx, tr_y), (tex, te_y) = parts
    return _combine(trx, tr_y, tex, te_y, classes, spec, [f for f, _ in files])


def _explain_cifar_error(root: Path, files: list[tuple[str, str]], exc: Exception, spec: DatasetSpec,
                         check_integrity) -> DataError:
    """Name the CIFAR file that is missing, fails its md5, or does not unpickle as a batch."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    for f, md5 in files:
        path = folder / f
        if not path.is_file():
            if spec.download:
                return DataError(f"{spec.source}: download into {root} failed ({exc}); place the "
                                 f"files of cifar-10-python.tar.gz in {folder} instead")
            return _not_found(folder, [f], spec.source)
        if not check_integrity(str(path), md5):
            return DataError(f"{path}: corrupt or not the official CIFAR-10 file (md5 mismatch); "
                             "delete it and download again, or place the original file there")
    # every file passed its md5 (so unpickling it is as safe as torchvision's own load): find the bad one
    for f, _ in files:
        try:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            key = CIFAR10.meta["key"] if f == CIFAR10.meta["filename"] else "data"
            entry[key]
        except Exception as e:  # noqa: BLE001
            return DataError(f"{folder / f}: not a CIFAR-10 batch ({type(e).__name__}: {e})")
    return DataError(f"{folder}: torchvision could not read CIFAR-10: {type(exc).__name__}: {exc}")
