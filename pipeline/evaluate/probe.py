"""The probe classifiers behind CAS and the uplifts: several seeds at once, each trained to convergence.

Every figure the gate reports about "does this data train a classifier" is a mean over
``n`` freshly trained classifiers (one per seed) with a 95 % interval, because one
classifier is noisy: on the digits test split one image is 0.28 points, and a 300-step CNN
varied by +-0.8 points between seeds. Each classifier gets a step budget that scales with
the size of *its own* training set (``ProbeRecipe.steps_for``, at least 1,000 steps), so a
real-only and a real+synthetic classifier are both converged: a shared fixed budget
diluted the real data and read as a loss from adding synthetic images.

Two kinds, chosen by ``gate.probe``:

* ``mlp`` (default) -- ``k`` two-hidden-layer MLPs on the pixels, trained in lock step as one
  batched matrix product (``torch.baddbmm``): five seeds cost about one CNN. Each member's
  initialisation, batch order and dropout masks come from its own seeded generator, so a
  member's result depends on its seed and data only, not on which other seeds share the batch.
* ``cnn`` -- the :class:`~pipeline.evaluate.classifier.SmallCNN` recipe, one seed after the
  other: the better yardstick for larger, natural images (CIFAR-10), slower on a CPU.

Both are checked against an independent classifier (an RBF SVM) in ``bench/quality.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.evaluate.classifier import (
    Recipe,
    accuracy,
    check_labels,
    from_numpy,
    train_classifier,
    u8_to_tensor,
)


@dataclass(frozen=True)
class ProbeRecipe:
    kind: str = "mlp"  # "mlp" | "cnn"
    hidden: int = 256
    epochs: int = 30  # passes over the classifier's own training set ...
    min_steps: int = 1000  # ... but never fewer steps than this
    max_steps: int = 20_000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2

    def steps_for(self, n: int) -> int:
        return int(min(self.max_steps, max(self.min_steps, self.epochs * math.ceil(max(n, 1) / self.batch_size))))

    def cnn_recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                      label_smoothing=self.label_smoothing, min_steps=self.min_steps, max_steps=self.max_steps,
                      base_width=16)


PROBE = ProbeRecipe()

#: two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (n = 2..31 seeds)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def mean_ci95(values: Sequence[float]) -> dict[str, Any]:
    """Mean of ``values`` with its 95 % interval (Student's t; no interval for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("mean_ci95: no values")
    m = float(v.mean())
    if len(v) == 1:
        return {"mean": m, "ci95": [None, None], "n": 1}
    t = _T975[min(len(v) - 2, len(_T975) - 1)] if len(v) <= 31 else 1.96
    h = t * float(v.std(ddof=1)) / math.sqrt(len(v))
    return {"mean": m, "ci95": [m - h, m + h], "n": int(len(v))}


def _mlp_accuracies(x_u8: np.ndarray, y: np.ndarray, test_u8: np.ndarray, test_y: np.ndarray, num_classes: int,
                    seeds: list[int], members: list[np.ndarray], recipe: ProbeRecipe,
                    device: torch.device) -> list[float]:
    x = u8_to_tensor(x_u8).flatten(1).to(device)
    xt = u8_to_tensor(test_u8).flatten(1).to(device)
    yt = from_numpy(test_y).to(device)
    yy = from_numpy(y).to(device)
    n, d, k, h = len(members[0]), x.shape[1], len(seeds), recipe.hidden
    own = torch.from_numpy(np.stack(members)).to(device)  # (k, n): each member's rows of the pool
    bs = max(1, min(recipe.batch_size, n))
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def layer(fan_in: int, fan_out: int) -> list[torch.Tensor]:  # nn.Linear's default init, per member
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.stack([(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound for g in gens])
        b = torch.stack([(torch.rand(1, fan_out, generator=g) * 2 - 1) * bound for g in gens])
        return [w.to(device).requires_grad_(), b.to(device).requires_grad_()]

    params = layer(d, h) + layer(h, h) + layer(h, num_classes)
    steps = recipe.steps_for(n)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.15)
    keep = 1.0 - recipe.dropout

    def forward(inp: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = params
        a = F.relu(torch.baddbmm(b1, inp, w1))
        if masks:
            a = a * masks[0]
        a = F.relu(torch.baddbmm(b2, a, w2))
        if masks:
            a = a * masks[1]
        return torch.baddbmm(b3, a, w3)

    perms = [torch.randperm(n, generator=g) for g in gens]
    pos = 0
    for _ in range(steps):
        if pos + bs > n:  # every member reshuffles at the same step (same epoch length)
            perms, pos = [torch.randperm(n, generator=g) for g in gens], 0
        idx = torch.gather(own, 1, torch.stack([p[pos:pos + bs] for p in perms]).to(device))  # (k, bs)
        pos += bs
        masks = None
        if recipe.dropout > 0:
            masks = [torch.stack([(torch.rand(bs, h, generator=g) < keep) for g in gens]).to(device) / keep
                     for _ in range(2)]
        logits = forward(x[idx], masks)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), yy[idx].reshape(-1),
                               label_smoothing=recipe.label_smoothing) * k  # sum over members of their means
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        correct = torch.zeros(k, device=device)
        for i in range(0, len(xt), 4096):
            chunk = xt[i:i + 4096].unsqueeze(0).expand(k, -1, -1)
            correct += (forward(chunk, None).argmax(-1) == yt[i:i + 4096]).sum(1)
    return [float(c) / max(len(xt), 1) for c in correct.cpu()]


def probe_accuracies(
    train_u8: np.ndarray,
    train_labels: np.ndarray,
    test_u8: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    seeds: Sequence[int],
    recipe: ProbeRecipe = PROBE,
    device: str | torch.device = "cpu",
    members: Sequence[np.ndarray] | None = None,
) -> list[float]:
    """Test accuracy of one probe classifier per seed, trained on ``train_u8`` (uint8 NHWC).

    ``members``: per seed, the rows of ``train_u8`` that seed's classifier trains on (all of the
    same length: e.g. a stratified subset drawn per seed); default: every row for every seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    if len(train_u8) == 0:
        raise ValueError("probe: no training images")
    y = check_labels(train_labels, len(train_u8), num_classes, "train_labels")
    yt = check_labels(test_labels, len(test_u8), num_classes, "test_labels")
    device = torch.device(device)
    rows = [np.asarray(m, dtype=np.int64) for m in members] if members is not None else \
        [np.arange(len(train_u8))] * len(seeds)
    if len(rows) != len(seeds) or len({len(r) for r in rows}) != 1 or len(rows[0]) == 0:
        raise ValueError("members: one non-empty row list per seed, all of the same length")
    if recipe.kind == "cnn":
        r = recipe.cnn_recipe()
        steps = recipe.steps_for(len(rows[0]))
        return [accuracy(train_classifier(train_u8[m], y[m], num_classes, seed=s, steps=steps, recipe=r,
                                          device=device), test_u8, yt) for s, m in zip(seeds, rows, strict=True)]
    if recipe.kind != "mlp":
        raise ValueError(f"unknown probe kind {recipe.kind!r}")
    with torch.random.fork_rng(devices=[]):
        return _mlp_accuracies(np.asarray(train_u8), y, np.asarray(test_u8), yt, num_classes, seeds, rows, recipe,
                               device)
