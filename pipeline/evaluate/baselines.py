"""The gate's real-only baselines, measured once per dataset and cached beside the feature net.

CAS's ``real_acc`` (a classifier trained on the real train split) and the uplift's per-seed
``base_acc`` (one trained on a small real subset) never see a generated image: they are
functions of the real data, the classifier recipe, the seeds and the device. Yet they were
about half of every evaluation, re-measured by each nightly run and each gate retry of the
same dataset. Each value is stored as a small JSON file

    <cache_url>/baselines-<dataset_key>-<digest>.json

where ``digest`` covers everything the value depends on (recipe, seeds, step budget, subset
fraction, split sizes, device type, torch version, :data:`BASELINE_FORMAT`); ``dataset_key``
already names the dataset's content. One file per value, written whole (atomic rename on
local disk, one PUT on object stores): concurrent runs at worst compute the same value twice.
An unreadable or mismatched file is recomputed and overwritten, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import fsspec
import torch

from pipeline.evaluate.features import cache_file, write_atomic

log = logging.getLogger(__name__)

#: bump when what a baseline measures changes (recipe semantics, subset drawing): old files are ignored
BASELINE_FORMAT = 2  # 2: probe ensembles (probe.py), per-seed lists


def baseline_key(kind: str, device: str | torch.device, **depends: Any) -> dict[str, Any]:
    """Everything a cached baseline depends on, as a JSON-able dict."""
    return {"kind": kind, "format": BASELINE_FORMAT, "device": torch.device(device).type,
            "torch": str(torch.__version__).split("+")[0], **depends}


def baseline_url(cache_url: str, dataset_key: str, key: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_file(cache_url, f"baselines-{dataset_key}-{digest}.json", dataset_key)


def _locate(cache_url: str, dataset_key: str, key: dict[str, Any],
            storage_options: dict[str, Any] | None) -> tuple[str, Any, str, Any]:
    """(url, filesystem, path, the key as stored) of ``key``'s baseline file."""
    url = baseline_url(cache_url, dataset_key, key)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return url, fs, path, json.loads(json.dumps(key, sort_keys=True, default=str))


def read_baseline(cache_url: str, dataset_key: str, key: dict[str, Any],
                  storage_options: dict[str, Any] | None = None) -> Any | None:
    """The stored value for ``key``, or None. The stored file repeats ``key`` and is used only if
    it matches exactly (a digest collision or a hand-edited file is recomputed)."""
    url, fs, path, want = _locate(cache_url, dataset_key, key, storage_options)
    try:
        if fs.exists(path):
            doc = json.loads(fs.cat_file(path))
            if doc.get("key") == want and "value" in doc:
                return doc["value"]
            log.warning("baseline %s does not match its key; recomputing", url)
    except Exception as exc:  # noqa: BLE001 (unreadable, malformed, storage hiccup: recompute)
        log.warning("baseline %s unusable (%s: %s); recomputing", url, type(exc).__name__, exc)
    return None


def write_baseline(cache_url: str, dataset_key: str, key: dict[str, Any], value: Any,
                   storage_options: dict[str, Any] | None = None) -> None:
    """Store ``value`` for ``key``; a cache that cannot be written costs a warning, not the evaluation."""
    url, fs, path, want = _locate(cache_url, dataset_key, key, storage_options)
    try:
        write_atomic(fs, path, json.dumps({"key": want, "value": value}, sort_keys=True).encode())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not cache baseline %s (%s: %s)", url, type(exc).__name__, exc)


def cached_baseline(
    cache_url: str,
    dataset_key: str,
    key: dict[str, Any],
    compute: Callable[[], Any],
    storage_options: dict[str, Any] | None = None,
) -> tuple[Any, bool]:
    """``(value, from_cache)``: the stored value for ``key``, or ``compute()`` stored for next time."""
    value = read_baseline(cache_url, dataset_key, key, storage_options)
    if value is not None:
        return value, True
    value = compute()
    write_baseline(cache_url, dataset_key, key, value, storage_options)
    return value, False
