"""TrainState (issue 14, item 2): one value that a checkpoint directory holds, saved and loaded
by the loop, the sampler and fine-tuning; the files keep their names, keys and format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pipeline.models import build_model
from pipeline.spec import DCGANSpec, TrainSpec, VAESpec
from pipeline.train.checkpoint import (
    FORMAT,
    META_FILE,
    STATE_FILE,
    CheckpointError,
    TrainState,
    load_checkpoint,
    save_checkpoint_dir,
    verify_checkpoint,
)

SHAPE, CLASSES = (1, 8, 8), 10
MODEL = VAESpec(kind="vae", latent_dim=8, base_channels=8)


def trained(seed: int = 0):
    """A small VAE after two optimizer steps (so the optimizer has state) and its optimizers."""
    torch.manual_seed(seed)
    fam = build_model(MODEL, SHAPE, CLASSES)
    opts = fam.make_optimizers(fam.nets, TrainSpec())
    for _ in range(2):
        fam.train_step(fam.nets, opts, torch.rand(4, *SHAPE) * 2 - 1, torch.randint(0, CLASSES, (4,)))
        fam.update_ema()
    return fam, opts


def state_of(fam, opts) -> TrainState:
    return TrainState.capture(fam, opts, epoch=3, step=42, history=[{"epoch": 3, "loss": 0.5}],
                              train_hash="abc", meta={"job": "toy", "kind": "vae"})


def same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_train_state_round_trip(tmp_path: Path) -> None:
    fam, opts = trained()
    ts = state_of(fam, opts)
    digest = ts.save(str(tmp_path / "ck"))

    data = (tmp_path / "ck" / STATE_FILE).read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    assert meta == {"job": "toy", "kind": "vae", "epoch": 3, "step": 42, "format": FORMAT, "sha256": digest}
    assert verify_checkpoint(str(tmp_path / "ck")) is None

    back = TrainState.load(str(tmp_path / "ck"))
    assert (back.epoch, back.step, back.history, back.train_hash, back.meta, back.format) == \
        (3, 42, [{"epoch": 3, "loss": 0.5}], "abc", {"job": "toy", "kind": "vae"}, FORMAT)
    assert (back.kind, back.image_shape, back.num_classes) == ("vae", SHAPE, CLASSES)
    assert same_tensors(back.model, ts.model) and same_tensors(back.opts, ts.opts)
    assert back.info is not None and back.info.digest == digest and back.info.epoch == 3
    assert back.info.url == str(tmp_path / "ck")
    assert TrainState.load(str(tmp_path / "ck" / STATE_FILE)).info.url == str(tmp_path / "ck")

    # restored into a fresh model and optimizers, they are the saved ones
    fresh, fresh_opts = trained(seed=1)
    assert not same_tensors(fresh.ema.state_dict(), fam.ema.state_dict())
    back.restore(fresh, fresh_opts)
    assert same_tensors(fresh.state_dict(), fam.state_dict())
    assert same_tensors({k: o.state_dict() for k, o in fresh_opts.items()},
                        {k: o.state_dict() for k, o in opts.items()})


def test_the_file_keeps_its_keys_and_older_checkpoints_load(tmp_path: Path) -> None:
    fam, opts = trained()
    state_of(fam, opts).save(str(tmp_path / "new"))
    raw = torch.load(tmp_path / "new" / STATE_FILE, weights_only=True)
    assert set(raw) == {"format", "model", "opts", "epoch", "step", "history", "train_hash", "meta"}
    assert raw["format"] == 1

    # what loop.py wrote before TrainState (the dict built inline) reads as a TrainState
    old = {"format": 1, "model": fam.state_dict(), "opts": {k: o.state_dict() for k, o in opts.items()},
           "epoch": 2, "step": 7, "history": [{"epoch": 1}, {"epoch": 2}], "train_hash": "h", "meta": {"job": "x"}}
    save_checkpoint_dir(str(tmp_path / "old"), old, {"job": "x", "epoch": 2, "step": 7})
    ts = TrainState.load(str(tmp_path / "old"))
    assert (ts.epoch, ts.step, ts.train_hash, [h["epoch"] for h in ts.history]) == (2, 7, "h", [1, 2])
    state, info = load_checkpoint(str(tmp_path / "old"))  # the plain-dict reader is the same file
    assert same_tensors(state, old) and info.digest == ts.info.digest


def test_save_and_load_through_an_fsspec_url() -> None:
    fam, opts = trained()
    url = "memory://genpipe-test-checkpoint/run/epoch-00003"
    digest = state_of(fam, opts).save(url)
    back = TrainState.load(url)
    assert back.info.digest == digest and same_tensors(back.model, fam.state_dict())


def test_a_damaged_checkpoint_raises_checkpoint_error(tmp_path: Path) -> None:
    fam, opts = trained()
    ck = tmp_path / "ck"
    state_of(fam, opts).save(str(ck))
    state = ck / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a write cut short
    with pytest.raises(CheckpointError, match="corrupted or unreadable"):
        TrainState.load(str(ck))
    assert "does not match the sha256" in verify_checkpoint(str(ck))

    state.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"{ck}: corrupted or unreadable") as ei:
        TrainState.load(str(ck))
    assert ei.value.exit_code == 2
    with pytest.raises(CheckpointError, match="^run checkpoint: corrupted"):
        TrainState.load(str(ck), where="run checkpoint")

    torch.save({"format": 99, "model": {}}, state)  # a torch file, not ours
    with pytest.raises(CheckpointError, match="not a genpipe checkpoint"):
        TrainState.load(str(ck))
    torch.save({"format": 1, "model": {}, "epoch": "three"}, state)
    with pytest.raises(CheckpointError, match="not a genpipe checkpoint"):
        TrainState.load(str(ck))

    with pytest.raises(CheckpointError, match="no checkpoint there"):
        TrainState.load(str(tmp_path / "nothing"))


def test_restoring_into_another_model_raises_checkpoint_error() -> None:
    fam, opts = trained()
    ts = state_of(fam, opts)
    with pytest.raises(CheckpointError, match="checkpoint holds a 'vae' model, the spec asks for 'dcgan'"):
        ts.restore(build_model(DCGANSpec(), SHAPE, CLASSES))
    with pytest.raises(CheckpointError, match="checkpoint has 10 classes, the dataset 3"):
        ts.restore(build_model(MODEL, SHAPE, 3))
    other = build_model(MODEL, SHAPE, CLASSES)
    with pytest.raises(CheckpointError, match="no state for optimizer"):
        ts.restore(other, {"extra": torch.optim.SGD(other.ema.parameters(), lr=0.1), **opts})
