"""Turning a checkpoint plus (seeds, labels) into uint8 images: shared by the sampling
actors, the quality evaluation and anyone who wants to regenerate one image by its seed."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from pipeline.models import build_model, to_uint8
from pipeline.models.base import ModelFamily
from pipeline.rng import seeded_normal
from pipeline.spec import JobSpec
from pipeline.train.checkpoint import CheckpointInfo, TrainState


def pick_device(use_gpu: bool) -> torch.device:
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def load_generator(
    ckpt_url: str, spec: JobSpec, device: torch.device | str = "cpu"
) -> tuple[ModelFamily, CheckpointInfo]:
    """The model family from a checkpoint, its EMA net in eval mode on ``device``."""
    ts = TrainState.load(ckpt_url, spec.storage_options, "cpu")
    fam = build_model(spec.model, ts.image_shape, ts.num_classes)
    ts.restore(fam)
    fam.ema.to(device).eval()
    for net in fam.nets.values():  # training nets are not needed to sample: free them
        net.to("meta")
    assert ts.info is not None  # set by load
    return fam, ts.info


#: rows per generator call. A fixed shape makes every image's arithmetic independent of the
#: batch it travels in (kernels are chosen by shape; a row's result never depends on the
#: other rows), so bytes don't change with batch size, shard layout or actor count.
BLOCK = {"cpu": 256, "cuda": 4096}


@torch.inference_mode()
def generate_u8(
    fam: ModelFamily,
    seeds: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1024,
    bf16: bool = True,
) -> np.ndarray:
    """(N, H, W, C) uint8 images; image i is a function of (weights, seeds[i], labels[i]) only.

    ``batch_size`` is how many images move to the host at once; the generator itself always
    runs on blocks of ``BLOCK[device]`` rows (the tail block padded), see above.
    """
    net = fam.ema
    device = next(net.parameters()).device
    block = BLOCK.get(device.type, 256)
    use_bf16 = bf16 and device.type == "cuda"
    n = len(seeds)
    c, h, w = fam.image_shape
    out = np.empty((n, h, w, c), dtype=np.uint8)
    step = max(block, (batch_size // block) * block)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        s = torch.from_numpy(np.array(seeds[lo:hi], dtype=np.int64)).to(device)
        y = torch.from_numpy(np.array(labels[lo:hi], dtype=np.int64)).to(device)
        pad = -len(s) % block
        if pad:
            s = torch.cat([s, s[:1].expand(pad)])
            y = torch.cat([y, y[:1].expand(pad)])
        z = seeded_normal(s, fam.noise_shape())
        chunks = []
        for b in range(0, len(s), block):
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
            with ctx:
                x = fam.generate(net, z[b:b + block], y[b:b + block], s[b:b + block])
            chunks.append(to_uint8(x))
        out[lo:hi] = torch.cat(chunks)[: hi - lo].cpu().numpy()
    return out


def regenerate(ckpt_url: str, spec: JobSpec, seed: int, label: int, **kw: Any) -> np.ndarray:
    """One image (H, W, C uint8) from its recorded seed and label."""
    fam, _ = load_generator(ckpt_url, spec, kw.pop("device", "cpu"))
    return generate_u8(fam, np.array([seed], dtype=np.int64), np.array([label], dtype=np.int64), **kw)[0]
