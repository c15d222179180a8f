"""The generator families (gan, dcgan, vae, ddpm) behind the one ModelFamily interface.

Fast CPU tests on tiny networks: training steps, the per-image sampling contract, exact
checkpoint round trips, DDIM / guidance behaviour, a real learning check on real digits,
and training through DDP (gloo, one process) so gradient sync goes through the wrapped nets.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.models import REGISTRY, build_model
from pipeline.models.base import ModelFamily
from pipeline.models.ddpm import beta_schedule, ddim_timesteps, resolution_levels
from pipeline.rng import seeded_normal
from pipeline.spec import DCGANSpec, DDPMSpec, GANSpec, TrainSpec, VAESpec

KINDS = ["gan", "dcgan", "vae", "ddpm"]
LOSS_KEYS = {"gan": {"loss_d", "loss_g", "loss_cls"}, "dcgan": {"loss_d", "loss_g", "loss_cls"},
             "vae": {"loss", "loss_recon", "loss_kl"}, "ddpm": {"loss"}}
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
NUM_CLASSES = 10


def small_spec(kind: str, **kw: object) -> GANSpec | DCGANSpec | VAESpec | DDPMSpec:
    """Tiny networks; ema_decay=0 so the EMA net equals the trained net unless a test says otherwise."""
    common: dict[str, object] = {"latent_dim": 8, "base_channels": 8, "ema_decay": 0.0}
    if kind == "gan":
        return GANSpec(kind="gan", **{**common, "hidden": 8, **kw})
    if kind == "dcgan":
        return DCGANSpec(**{**common, **kw})
    if kind == "vae":
        return VAESpec(kind="vae", **{**common, **kw})
    return DDPMSpec(kind="ddpm", **{**common, "timesteps": 20, "sample_steps": 4, **kw})


def make(kind: str, shape: tuple[int, int, int] = (1, 8, 8), seed: int = 0, **kw: object) -> ModelFamily:
    torch.manual_seed(seed)
    return build_model(small_spec(kind, **kw), shape, NUM_CLASSES)


def random_batch(shape: tuple[int, int, int], n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g) * 2 - 1, torch.randint(0, NUM_CLASSES, (n,), generator=g)


def train(fam: ModelFamily, steps: int, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3,
          nets: dict[str, nn.Module] | None = None) -> list[dict[str, float]]:
    nets = nets if nets is not None else fam.nets
    opts = fam.make_optimizers(nets, TrainSpec(lr=lr))
    out = []
    for _ in range(steps):
        out.append(fam.train_step(nets, opts, x, y, contextlib.nullcontext()))
        fam.update_ema()
    return out


def sample(fam: ModelFamily, seeds: list[int], labels: list[int], net: nn.Module | None = None) -> torch.Tensor:
    s = torch.tensor(seeds, dtype=torch.int64)
    with torch.inference_mode():
        return fam.generate(net if net is not None else fam.ema, seeded_normal(s, fam.noise_shape()),
                            torch.tensor(labels), s)


def all_tensors(fam: ModelFamily) -> dict[str, torch.Tensor]:
    out = {f"ema.{k}": v for k, v in fam.ema.state_dict().items()}
    for name, net in fam.nets.items():
        out.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
    return out


def test_registry_holds_every_family() -> None:
    assert set(KINDS) <= set(REGISTRY)
    for kind in KINDS:
        assert REGISTRY[kind].kind == kind


# -- training -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_train_steps_return_finite_documented_losses(kind: str, shape: tuple[int, int, int]) -> None:
    fam = make(kind, shape)
    x, y = random_batch(shape)
    before = {k: v.clone() for k, v in all_tensors(fam).items()}
    for losses in train(fam, 3, x, y):
        assert set(losses) == LOSS_KEYS[kind]
        assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values()), losses
    after = all_tensors(fam)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = [k for k in after if not k.startswith("ema.") and not torch.equal(before[k], after[k])]
    assert changed, "no weight moved"


@pytest.mark.parametrize("kind", KINDS)
def test_train_step_calls_the_nets_it_is_given(kind: str) -> None:
    """The training loop passes DDP-wrapped nets; train_step must run those, not self.nets."""

    class Spy(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, *args: torch.Tensor) -> object:
            self.calls += 1
            return self.inner(*args)

    fam = make(kind)
    spies = {k: Spy(v) for k, v in fam.nets.items()}
    train(fam, 1, *random_batch((1, 8, 8)), nets=spies)
    assert all(s.calls > 0 for s in spies.values()), {k: s.calls for k, s in spies.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_train_step_under_bf16_autocast(kind: str) -> None:
    fam = make(kind)
    x, y = random_batch((1, 8, 8))
    opts = fam.make_optimizers(fam.nets, TrainSpec())
    losses = fam.train_step(fam.nets, opts, x, y, torch.autocast("cpu", dtype=torch.bfloat16))
    assert set(losses) == LOSS_KEYS[kind] and all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("kind", KINDS)
def test_train_step_through_ddp(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One-process gloo group: the nets wrapped exactly as the training loop wraps them."""
    assert not dist.is_initialized()
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        fam = make(kind)
        ddp = {k: DistributedDataParallel(v) for k, v in fam.nets.items()}
        x, y = random_batch((1, 8, 8))
        for losses in train(fam, 2, x, y, nets=ddp):
            assert set(losses) == LOSS_KEYS[kind] and all(math.isfinite(v) for v in losses.values())
    finally:
        dist.destroy_process_group()


def _textbook_adversarial_step(fam: ModelFamily, opts: dict[str, torch.optim.Optimizer], x: torch.Tensor,
                               y: torch.Tensor, nets: dict[str, nn.Module] | None = None) -> None:
    """The AC-GAN step as written before ``_frozen``: the generator's backward also fills the
    discriminator's .grad (under DDP: and all-reduces it), which its next zero_grad drops."""
    nets = nets if nets is not None else fam.nets
    g, d = nets["generator"], nets["discriminator"]
    bce, ce = nn.functional.binary_cross_entropy_with_logits, nn.functional.cross_entropy
    b = x.shape[0]
    z = torch.randn(b, fam.spec.latent_dim)
    fake = g(z, y)
    adv_real, cls_real = d(x, y)
    adv_fake, _ = d(fake.detach(), y)
    loss_d = bce(adv_real, torch.full((b,), 1.0 - fam.spec.label_smoothing)) + bce(adv_fake, torch.zeros(b)) \
        + ce(cls_real, y)
    opts["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    opts["discriminator"].step()
    adv, cls = d(fake, y)
    loss_g = bce(adv, torch.ones(b)) + ce(cls, y)
    opts["generator"].zero_grad(set_to_none=True)
    loss_g.backward()
    opts["generator"].step()


@pytest.mark.parametrize("kind", ["gan", "dcgan"])
def test_generator_step_trains_the_generator_only_and_changes_no_figure(kind: str) -> None:
    """The generator's loss leaves the discriminator without gradients (and its weights trainable
    again after), and three steps end on the same weights, bit for bit, as the textbook step."""
    x, y = random_batch((1, 8, 8), n=8)
    fams = [make(kind, ema_decay=0.9), make(kind, ema_decay=0.9)]
    opts = [f.make_optimizers(f.nets, TrainSpec(lr=1e-3)) for f in fams]
    d = fams[0].nets["discriminator"]
    at_d_step: list[list[torch.Tensor]] = []
    d_step = opts[0]["discriminator"].step
    opts[0]["discriminator"].step = lambda *a, **k: (at_d_step.append([p.grad.clone() for p in d.parameters()]),
                                                     d_step(*a, **k))[1]
    torch.manual_seed(1)
    for _ in range(3):
        fams[0].train_step(fams[0].nets, opts[0], x, y, contextlib.nullcontext())
        fams[0].update_ema()
        # the generator's backward added nothing to the discriminator's gradients
        assert all(torch.equal(p.grad, g) for p, g in zip(d.parameters(), at_d_step[-1], strict=True))
    assert all(p.requires_grad for p in d.parameters())
    assert all(p.grad is not None for p in fams[0].nets["generator"].parameters())
    torch.manual_seed(1)
    for _ in range(3):
        _textbook_adversarial_step(fams[1], opts[1], x, y)
        fams[1].update_ema()
    a, b = all_tensors(fams[0]), all_tensors(fams[1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def _ddp_rank(rank: int, store_path: str, out: str, textbook: bool) -> None:
    """One rank of a 2-rank gloo group: 3 dcgan steps on its own batch, either as the training loop
    takes them (``DDP_KWARGS``, ``train_step``) or as before (DDP's defaults, the textbook step);
    rank 0 saves every tensor."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    try:
        from pipeline.train.loop import DDP_KWARGS

        fam = make("dcgan", ema_decay=0.9)
        nets = {k: DistributedDataParallel(v, **({} if textbook else DDP_KWARGS)) for k, v in fam.nets.items()}
        opts = fam.make_optimizers(nets, TrainSpec(lr=1e-3))
        x, y = random_batch((1, 8, 8), n=8, seed=rank)
        torch.manual_seed(10 + rank)
        for _ in range(3):
            if textbook:
                _textbook_adversarial_step(fam, opts, x, y, nets=nets)
            else:
                fam.train_step(nets, opts, x, y, contextlib.nullcontext())
            fam.update_ema()
        if rank == 0:
            torch.save(all_tensors(fam), out)
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # Both ranks are done and the file is written. Tearing gloo down (destroy_process_group, or the
    # interpreter's exit) races its pair threads and now and then aborts a rank with "terminate
    # called without an active exception" (SIGABRT, seen once in CI); leaving without destructors
    # skips that race, and the checkpoint the test compares is already on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_ddp_steps_checkpoint_the_same_rank0_as_before(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two real gloo ranks with different batches: the loop's DDP (no buffer broadcast, the
    generator's step not syncing the discriminator) against DDP's defaults with the textbook step.
    Rank 0's weights, BatchNorm statistics and EMA, what a checkpoint holds, are identical bit for bit."""
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    got = {}
    for textbook in (False, True):
        out = tmp_path / f"rank0-{textbook}.pt"
        procs = [mp.Process(target=_ddp_rank, args=(r, str(tmp_path / f"store-{textbook}"), str(out), textbook))
                 for r in (0, 1)]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.join(120)
        finally:
            for p in procs:  # a hung rank would hold pytest's exit for gloo's timeout
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0, 0]
        got[textbook] = torch.load(out)
    assert any("running_mean" in k for k in got[False]), "the dcgan has BatchNorm buffers to test"
    a, b = got[False], got[True]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


# -- sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape", [*SHAPES, (3, 64, 64), (1, 10, 10), (3, 12, 20)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("kind", KINDS)
def test_generate_shape_and_range(kind: str, shape: tuple[int, int, int]) -> None:
    fam = make(kind, shape)
    out = sample(fam, list(range(5)), [0, 1, 2, 3, 9])
    assert out.shape == (5, *shape) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_generate_is_per_image(kind: str) -> None:
    """Image i depends only on (noise[i], label[i], seed[i]): batch of 8 vs batch of 3."""
    fam = make(kind, (1, 8, 8))
    train(fam, 2, *random_batch((1, 8, 8), n=8))  # move off the (partly zero) initialisation
    seeds, labels = [11, 12, 13, 14, 15, 16, 17, 18], [0, 1, 2, 3, 4, 5, 6, 7]
    big = sample(fam, seeds, labels)
    rows = [6, 1, 3]
    small = sample(fam, [seeds[i] for i in rows], [labels[i] for i in rows])
    torch.testing.assert_close(small, big[rows], atol=1e-5, rtol=0)
    assert not torch.allclose(big[0], big[1]), "different seeds and labels gave the same image"


# -- checkpoints --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips_exactly(kind: str) -> None:
    fam = make(kind, ema_decay=0.5)  # an EMA that differs from the trained weights
    train(fam, 2, *random_batch((1, 8, 8)))
    buf = io.BytesIO()
    torch.save(fam.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    other = make(kind, seed=1, ema_decay=0.5)
    assert any(not torch.equal(a, b) for a, b in zip(all_tensors(fam).values(), all_tensors(other).values(), strict=True))
    other.load_state_dict(state)
    mine, theirs = all_tensors(fam), all_tensors(other)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    ema_p = dict(fam.ema.named_parameters())
    net_p = dict(fam.nets[fam.sampler_net].named_parameters())
    assert any(not torch.equal(ema_p[k], net_p[k]) for k in ema_p), "the EMA was not exercised"
    assert other.ema_updates == fam.ema_updates == 2
    assert torch.equal(sample(fam, [1, 2], [3, 4]), sample(other, [1, 2], [3, 4]))


@pytest.mark.parametrize("kind", KINDS)
def test_resume_continues_exactly(kind: str) -> None:
    """Models, EMA and optimizers restored from a checkpoint continue exactly as an uninterrupted
    run (the training loop's resume: the same global RNG state on both sides)."""
    x, y = random_batch((1, 8, 8), n=8)

    def steps(fam: ModelFamily, opts: dict[str, torch.optim.Optimizer], n: int) -> None:
        for _ in range(n):
            fam.train_step(fam.nets, opts, x, y, contextlib.nullcontext())
            fam.update_ema()

    def checkpoint(fam: ModelFamily, opts: dict[str, torch.optim.Optimizer]) -> dict[str, object]:
        buf = io.BytesIO()
        torch.save({"model": fam.state_dict(), "opts": {k: o.state_dict() for k, o in opts.items()}}, buf)
        return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    whole = make(kind, ema_decay=0.5)
    opts = whole.make_optimizers(whole.nets, TrainSpec(lr=1e-3))
    steps(whole, opts, 2)
    state = checkpoint(whole, opts)
    torch.manual_seed(7)
    steps(whole, opts, 3)

    resumed = make(kind, seed=1, ema_decay=0.5)
    ropts = resumed.make_optimizers(resumed.nets, TrainSpec(lr=1e-3))
    resumed.load_state_dict(state["model"])
    for k, o in ropts.items():
        o.load_state_dict(state["opts"][k])
    torch.manual_seed(7)
    steps(resumed, ropts, 3)
    a, b = all_tensors(whole), all_tensors(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert resumed.ema_updates == whole.ema_updates == 5
    assert torch.equal(sample(whole, [1, 2, 3], [0, 5, 9]), sample(resumed, [1, 2, 3], [0, 5, 9]))


@pytest.mark.parametrize("kind", KINDS)
def test_ema_warms_up(kind: str) -> None:
    """With decay 0.999 an EMA after a few steps must not still be ~all random initialisation."""
    fam = make(kind, ema_decay=0.999)
    init = {k: v.clone() for k, v in fam.ema.named_parameters()}
    train(fam, 3, *random_batch((1, 8, 8)))
    net = dict(fam.nets[fam.sampler_net].named_parameters())
    moved = [(p - init[k]).norm() / (net[k] - init[k]).norm() for k, p in fam.ema.named_parameters()
             if (net[k] - init[k]).norm() > 0]
    assert min(moved) > 0.5, min(moved)


@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_another_kind(kind: str) -> None:
    fam = make(kind)
    for other in KINDS:
        if other != kind:
            with pytest.raises(ValueError, match=f"holds a '{other}' model, the spec asks for '{kind}'"):
                fam.load_state_dict(make(other).state_dict())
    wrong_shape = build_model(small_spec(kind), (1, 28, 28), NUM_CLASSES)
    with pytest.raises(ValueError, match="image shape"):
        fam.load_state_dict(wrong_shape.state_dict())


# -- DDPM specifics -----------------------------------------------------------------------
@pytest.mark.parametrize("timesteps,steps", [(20, 4), (20, 20), (400, 50), (1000, 7), (10, 1), (37, 36)])
def test_ddim_timesteps_span_the_chain(timesteps: int, steps: int) -> None:
    ts = ddim_timesteps(timesteps, steps)
    assert len(ts) == steps and ts[-1] == timesteps - 1 and (steps == 1 or ts[0] == 0)
    assert all(a < b for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [10, 400, 1000])
def test_beta_schedules(name: str, timesteps: int) -> None:
    abar = torch.cumprod(1 - beta_schedule(name, timesteps), 0)
    assert abar.shape == (timesteps,) and abar.dtype == torch.float64
    assert (abar > 0).all() and (abar < 1).all() and (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.95 and abar[-1] < 0.05


def test_unet_resolution_levels() -> None:
    assert [resolution_levels(s, s) for s in (8, 28, 32, 64, 10, 9)] == [2, 3, 3, 3, 2, 1]


def test_ddim_is_deterministic_and_steps_and_guidance_matter() -> None:
    fam = make("ddpm", timesteps=40, sample_steps=4, guidance_scale=3.0, cond_drop_prob=0.5)
    train(fam, 3, *random_batch((1, 8, 8), n=8))
    state = fam.state_dict()

    def variant(**kw: object) -> ModelFamily:
        v = build_model(fam.spec.model_copy(update=kw), fam.image_shape, NUM_CLASSES)
        v.load_state_dict(state)
        return v

    seeds, labels = [1, 2, 3, 4], [0, 3, 5, 9]
    base = sample(fam, seeds, labels)
    assert torch.equal(base, sample(fam, seeds, labels)), "DDIM with eta=0 must be deterministic"
    more_steps = sample(variant(sample_steps=20), seeds, labels)
    unguided = sample(variant(guidance_scale=0.0), seeds, labels)
    assert (base - more_steps).abs().max() > 1e-3
    assert (base - unguided).abs().max() > 1e-3
    # guidance 0 is the unconditional model: the label no longer matters
    torch.testing.assert_close(unguided, sample(variant(guidance_scale=0.0), seeds, [7, 7, 7, 7]))
    assert (base - sample(fam, seeds, [7, 7, 7, 7])).abs().max() > 1e-3


# -- learning -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,drop", [("vae", 0.5), ("ddpm", 0.4)])
def test_a_few_dozen_steps_lower_the_loss_on_real_digits(kind: str, drop: float) -> None:
    """Held-fixed randomness (reparameterisation / t and eps draws) so before and after compare.

    The loss must fall by ``drop`` of its size (the VAE's Gaussian NLL may end below zero)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images[:16].astype(np.float32) / 16.0)[:, None] * 2 - 1
    y = torch.from_numpy(d.target[:16]).long()
    fam = make(kind)

    def fixed_loss() -> float:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(1234)
            return float(fam.losses(fam.nets, x, y)["loss"])  # type: ignore[attr-defined]

    before = fixed_loss()
    losses = [s["loss"] for s in train(fam, 40, x, y, lr=2e-3)]
    after = fixed_loss()
    assert after < before - drop * abs(before), (before, after, losses[:3], losses[-3:])
