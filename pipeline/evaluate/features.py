"""The FID feature network: a classifier trained on the job's real data, cached per dataset.

Inception-v3 weights are unavailable offline and measure the wrong things on 8x8 or 28x28
digits, so, as the "MNIST FID" literature does, the feature space is the penultimate layer
of a small classifier trained on the real training split (Heusel et al. 2017 define FID
for any feature embedding; only the real-vs-real floor gives the scale meaning).

The trained net is stored at ``<cache_url>/features-<dataset_key>.pt`` (any fsspec URL),
so every evaluation of every model of the same dataset measures in the same space. The
file holds a ``state_dict`` and a plain-typed metadata dict, and is read back with
``torch.load(..., weights_only=True)``: a cache file cannot run code. Writes are atomic: a
local file is written under a temporary name and ``os.replace``d; an object store gets
one whole-object PUT. A cache file that is unreadable or was made for another dataset
shape is replaced by a freshly trained one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
import uuid
from dataclasses import asdict
from typing import Any

import fsspec
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem

from pipeline.evaluate.classifier import (
    FEATURE_RECIPE,
    ClassifierConfig,
    Recipe,
    SmallCNN,
    accuracy,
    check_images,
    train_classifier,
)

log = logging.getLogger(__name__)

#: bump when the architecture or the payload layout changes: old cache files are retrained
CACHE_FORMAT = 1
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def cache_file(cache_url: str, name: str, dataset_key: str) -> str:
    """``<cache_url>/<name>`` for a cache file of ``dataset_key`` (part of ``name``), once the key
    is known to be a safe file name (it comes from data paths and specs)."""
    if not KEY_RE.match(dataset_key):
        raise ValueError(f"dataset_key {dataset_key!r} is not a safe file name")
    return cache_url.rstrip("/") + "/" + name


def cache_path(cache_url: str, dataset_key: str) -> str:
    """The URL of the cached feature net of ``dataset_key`` under ``cache_url``."""
    return cache_file(cache_url, f"features-{dataset_key}.pt", dataset_key)


def _encode(model: SmallCNN, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": CACHE_FORMAT, "state_dict": state, "meta": meta}, buf)
    return buf.getvalue()


def _decode(data: bytes) -> tuple[SmallCNN, dict[str, Any]]:
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(
            f"cache format {payload.get('format') if isinstance(payload, dict) else '?'} != {CACHE_FORMAT}"
        )
    meta = dict(payload["meta"])
    model = SmallCNN(ClassifierConfig.from_dict(meta["arch"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), meta


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        # object stores (and memory://) publish a whole object in one PUT: no partial reads
        fs.pipe_file(path, data)


def get_feature_net(
    cache_url: str,
    dataset_key: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    num_classes: int,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    storage_options: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    recipe: Recipe = FEATURE_RECIPE,
    device: str | torch.device = "cpu",
) -> tuple[SmallCNN, dict[str, Any]]:
    """Load the cached feature net of ``dataset_key``, or train it on the real train split and cache it.

    Returns ``(model, info)``; ``info`` has ``test_acc`` (accuracy on the real test split,
    as measured when the net was trained), ``from_cache``, ``url``, ``dataset_key``,
    ``num_train``, ``arch``, ``recipe``, ``seed`` and ``seconds`` (load or train time).
    The model is in eval mode on ``device``.
    """
    t0 = time.perf_counter()
    url = cache_path(cache_url, dataset_key)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    train_images = check_images(train_images, "train_images")
    want_arch = {
        "in_channels": train_images.shape[3],
        "height": train_images.shape[1],
        "width": train_images.shape[2],
        "num_classes": int(num_classes),
    }

    reason = "not cached"
    if fs.exists(path):
        try:
            model, meta = _decode(fs.cat_file(path))
            got = {k: meta["arch"][k] for k in want_arch}
            if got != want_arch or meta.get("dataset_key") != dataset_key:
                raise ValueError(f"cached net is for {got} / {meta.get('dataset_key')}, need {want_arch}")
            info = dict(meta, from_cache=True, url=url, seconds=time.perf_counter() - t0)
            return model.to(device), info
        except Exception as exc:  # unreadable or stale cache: retrain and overwrite
            reason = f"cache unusable ({type(exc).__name__}: {exc})"
            log.warning("feature net %s: %s; retraining", url, reason)

    model = train_classifier(train_images, train_labels, num_classes, seed=seed, recipe=recipe, device=device)
    test_acc = accuracy(model, test_images, test_labels)
    meta = {
        "arch": model.cfg.to_dict(),
        "recipe": asdict(recipe),
        "seed": int(seed),
        "dataset_key": dataset_key,
        "num_train": int(len(train_images)),
        "num_test": int(len(test_images)),
        "test_acc": float(test_acc),
        "torch_version": str(torch.__version__),
        "created_unix": float(time.time()),
    }
    write_atomic(fs, path, _encode(model, meta))
    info = dict(meta, from_cache=False, url=url, reason=reason, seconds=time.perf_counter() - t0)
    return model, info
