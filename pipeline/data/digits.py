"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grayscale images, 10 classes.

Ships inside scikit-learn, so it works offline; the default dataset of every demo job.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from pipeline.data.base import ImageDataset, finish, source
from pipeline.spec import DatasetSpec


@source("digits")
def load_digits_dataset(spec: DatasetSpec) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = d.images.astype(np.float32) / 16.0  # 0..16 ink levels -> [0, 1]
    x = torch.from_numpy(pixels)[:, None] * 2.0 - 1.0
    digest = hashlib.sha256(d.images.tobytes()).hexdigest()[:16]
    return finish(x, d.target, [str(i) for i in d.target_names], spec, {"source": "digits", "digest": digest})
