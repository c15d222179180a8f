"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grayscale images, 10 classes.

Ships inside scikit-learn, so it works offline; the default dataset of every demo job. The
bundled file is read directly (what ``sklearn.datasets.load_digits`` reads, the same arrays, see
tests/test_data_sources.py): importing scikit-learn costs ~3 CPU-seconds (SciPy with it), paid
by the driver, every Ray Train worker and the evaluation task of every run.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os

import numpy as np
import torch

from pipeline.data.base import ImageDataset, finish, source
from pipeline.spec import DatasetSpec


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images float64 (1797, 8, 8) of ink levels 0..16, targets int) as ``load_digits`` gives them:
    its ``digits.csv.gz`` (64 pixels and the label per row) read without importing scikit-learn;
    if that file is not where it has always been, ``load_digits`` itself."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = os.path.join(roots[0], "datasets", "data", "digits.csv.gz") if roots else ""
    if not os.path.isfile(path):
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@source("digits")
def load_digits_dataset(spec: DatasetSpec) -> ImageDataset:
    images, target = bundled_digits()
    pixels = images.astype(np.float32) / 16.0  # 0..16 ink levels -> [0, 1]
    x = torch.from_numpy(pixels)[:, None] * 2.0 - 1.0
    digest = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    return finish(x, target, [str(i) for i in range(10)], spec, {"source": "digits", "digest": digest})
