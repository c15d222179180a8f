"""Per-image randomness that does not depend on batching.

Every generated image has its own 63-bit seed. Its noise is a pure function of that
seed (a counter-based generator: an integer hash of (seed, stream, element index),
turned Gaussian by Box-Muller), computed for a whole batch in a few vectorised ops on
whatever device the batch lives on. So:

* an image can be regenerated alone from its recorded seed;
* results do not depend on batch size, shard layout or actor count;
* there is no per-image Python loop (a ``torch.Generator`` per image costs ~10 us each,
  which would cap a GPU sampler far below what the generator network can do).

All integer arithmetic stays below 2**63, so there is no signed overflow.

torch is imported inside the functions that need it: :func:`derive_seed` (used by the shard
plan, which every encode task and sampling actor imports) must not cost a process torch's
~3 s import when it only encodes.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M32 = 0xFFFFFFFF
_C1 = 0x045D9F3B  # < 2**27, so (x < 2**32) * C1 < 2**59
_C2 = 0x0119DE1F


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * _C1) & _M32
    x = (((x >> 16) ^ x) * _C2) & _M32
    return (x >> 16) ^ x


def _key(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    lo = seeds & _M32
    hi = (seeds >> 32) & _M32
    return _mix32(_mix32(lo ^ _mix32(hi + 0x9E3779B9)) ^ ((stream * 0x2545F491) & _M32))


def seeded_uniform(seeds: torch.Tensor, numel: int, stream: int = 0) -> torch.Tensor:
    """(B, numel) floats in (0, 1), one independent stream per seed."""
    import torch

    seeds = seeds.to(torch.int64).reshape(-1, 1)
    key = _key(seeds, stream)
    idx = torch.arange(numel, device=seeds.device, dtype=torch.int64).reshape(1, -1)
    h = _mix32(_mix32(key ^ idx) + ((idx * 0x27D4EB2F) & _M32) & _M32)
    return (h.to(torch.float64) + 0.5) / 4294967296.0


def seeded_normal(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """(B, *shape) standard normal float32 tensor; row i depends only on seeds[i] and stream."""
    import torch

    numel = math.prod(shape)
    half = (numel + 1) // 2
    u = seeded_uniform(seeds, 2 * half, stream)
    u1, u2 = u[:, :half], u[:, half:]
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = 2.0 * math.pi * u2
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :numel]
    return z.to(torch.float32).reshape(len(seeds), *shape)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (job name, date, index ...)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1
