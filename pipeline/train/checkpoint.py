"""Checkpoint files: one ``state.pt`` (plain tensors and Python values) plus ``meta.json``.

Everything needed to resume is inside: model nets, EMA, optimizers, epoch, step, the
loss history and the hash of the training config. The RNG state at an epoch boundary is a
pure function of (seed, rank, epoch) (see loop.py), so a resumed run draws exactly the
numbers an uninterrupted run would have drawn. Loading is always ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT = 1


class CheckpointError(GenpipeError, ValueError):
    """A checkpoint that is missing, corrupted or belongs to another model (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class CheckpointInfo:
    url: str  # fsspec URL of the checkpoint directory
    digest: str  # sha256 of state.pt, recorded in every published row
    epoch: int
    meta: dict[str, Any]


def save_checkpoint_dir(directory: str, state: dict[str, Any], meta: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    with open(os.path.join(directory, STATE_FILE), "wb") as f:
        f.write(data)
    meta = dict(meta, format=FORMAT, sha256=hashlib.sha256(data).hexdigest())
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def load_state_bytes(data: bytes, where: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise CheckpointError(f"{where}: corrupted or unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{where}: not a genpipe checkpoint")
    return state


def load_checkpoint(
    url: str, storage_options: dict | None = None, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], CheckpointInfo]:
    """Read a checkpoint directory (any fsspec URL). Returns (state, info)."""
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(url, storage_options)
    state_path = join(path, STATE_FILE) if not path.endswith(STATE_FILE) else path
    try:
        with fs.open(state_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{url}: no checkpoint there ({STATE_FILE} missing)") from None
    state = load_state_bytes(data, url, map_location)
    digest = hashlib.sha256(data).hexdigest()
    meta = state.get("meta", {})
    return state, CheckpointInfo(url=url.removesuffix("/" + STATE_FILE), digest=digest,
                                 epoch=int(state.get("epoch", 0)), meta=meta)


def verify_checkpoint(url: str, storage_options: dict | None = None) -> str | None:
    """None if the checkpoint directory at ``url`` is intact, else what is wrong with it: missing
    or unreadable files, a ``state.pt`` whose sha256 differs from the one ``meta.json`` recorded
    when it was written (a bit flip torch.load would not notice), or one torch cannot load."""
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(url, storage_options)
    try:
        with fs.open(join(path, STATE_FILE), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"{STATE_FILE} missing"
    except OSError as exc:
        return f"{STATE_FILE} unreadable ({exc})"
    try:
        meta = json.loads(fs.cat_file(join(path, META_FILE)))
        recorded = meta.get("sha256") if isinstance(meta, dict) else None
    except FileNotFoundError:
        recorded = None  # written before meta.json carried the digest: torch.load decides
    except (OSError, ValueError):
        return f"{META_FILE} unreadable"
    if recorded is not None and recorded != hashlib.sha256(data).hexdigest():
        return f"{STATE_FILE} does not match the sha256 in {META_FILE} (truncated or changed)"
    try:
        load_state_bytes(data, url)
    except CheckpointError as exc:
        return str(exc).removeprefix(f"{url}: ")
    return None

