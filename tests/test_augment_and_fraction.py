"""What the generator is trained to imitate: augmentation never reaches its target, and
``dataset.train_fraction`` gives it exactly a stratified, seeded subset of the train split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data import load_dataset
from pipeline.models import build_model
from pipeline.spec import DatasetSpec, DCGANSpec, SpecError, VAESpec, parse_spec


def test_dcgan_augments_every_discriminator_input_and_nothing_else() -> None:
    torch.manual_seed(0)
    fam = build_model(DCGANSpec(latent_dim=8, base_channels=8), (1, 8, 8), 10)
    opts = fam.make_optimizers(fam.nets, parse_spec({"name": "t"}).train)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    y = torch.arange(16) % 10
    seen: list[torch.Tensor] = []

    def recorder(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return t.flip(-1)  # any label-preserving transform

    x_before = x.clone()
    fam.train_step(fam.nets, opts, x, y, augment=recorder)
    # three discriminator passes (real, fake for D, fake for G): each saw an augmented input
    assert len(seen) == 3
    assert torch.equal(seen[0], x_before)  # the real batch went to D through the augmentation
    assert not torch.equal(seen[1], x_before) and seen[1].shape == x.shape  # and so did the fakes
    assert torch.equal(x, x_before)  # the caller's batch (the imitation target) is untouched


def test_single_loss_families_refuse_augmentation() -> None:
    fam = build_model(VAESpec(kind="vae", latent_dim=8, base_channels=8), (1, 8, 8), 10)
    opts = fam.make_optimizers(fam.nets, parse_spec({"name": "t"}).train)
    with pytest.raises(ValueError, match="leak into samples"):
        fam.train_step(fam.nets, opts, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                       augment=lambda t: t)
    for kind in ("vae", "ddpm"):
        with pytest.raises(SpecError, match="dataset.augment"):
            parse_spec({"name": "t", "model": {"kind": kind}, "dataset": {"augment": {"enabled": True}}})
    assert parse_spec({"name": "t"}).dataset.augment.enabled is False  # off unless a spec asks


def test_train_fraction_gives_stratified_seeded_counts() -> None:
    full = load_dataset(DatasetSpec())
    part = load_dataset(DatasetSpec(train_fraction=0.1))
    counts_full = np.bincount(full.train_y.numpy(), minlength=10)
    counts = np.bincount(part.train_y.numpy(), minlength=10)
    assert counts.tolist() == [max(1, round(c * 0.1)) for c in counts_full]
    assert torch.equal(part.test_x, full.test_x)  # the held-out split never changes
    assert part.all_train_x is not None and torch.equal(part.all_train_x, full.train_x)
    again = load_dataset(DatasetSpec(train_fraction=0.1))
    assert torch.equal(again.train_x, part.train_x)  # seeded: the same subset every time
    other = load_dataset(DatasetSpec(train_fraction=0.1, split_seed=1))
    assert not torch.equal(other.train_x, part.train_x) or not torch.equal(other.test_x, part.test_x)
    # every subset image is one of the split's images
    flat = {bytes(r) for r in full.train_u8().reshape(len(full.train_x), -1)}
    assert all(bytes(r) in flat for r in part.train_u8().reshape(len(part.train_x), -1))
    assert load_dataset(DatasetSpec(train_fraction=1.0)).all_train_x is None
    for bad in (0, -0.1, 1.01):
        with pytest.raises(SpecError, match="dataset.train_fraction"):
            parse_spec({"name": "t", "dataset": {"train_fraction": bad}})
