"""Bring-your-own-data end to end and fine-tuning (issue 7): an RGB 32x32 image folder through the
whole pipeline, genpipe's own output read back as a training source, and init_from."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.models import build_model
from pipeline.runner import run_job
from pipeline.spec import VAESpec
from pipeline.train import load_checkpoint, train
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.finetune import load_weights_for_finetune

pytestmark = pytest.mark.ray


def write_rgb_folder(root, n_per_class: int = 40, classes=("cat", "dog", "eel")) -> None:
    """Coloured 32x32 digits (0, 1, 2), one folder per class: a real 3-channel source."""
    from sklearn.datasets import load_digits

    d = load_digits()
    tint = np.array([[255, 80, 80], [80, 255, 80], [80, 80, 255]], np.float32)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        imgs = d.images[d.target == k][:n_per_class] / 16.0
        for i, a in enumerate(imgs):
            big = np.kron(a, np.ones((4, 4)))[..., None] * tint[k]
            Image.fromarray(big.astype(np.uint8), "RGB").save(root / name / f"{i:03d}.png")


def test_rgb_image_folder_end_to_end_and_round_trip(ray_local, tiny_spec, tmp_path):
    write_rgb_folder(tmp_path / "imgs")
    spec = tiny_spec("rgb", dataset={"source": "image_folder", "path": str(tmp_path / "imgs")},
                     train={"epochs": 1, "num_workers": 1, "batch_size": 32},
                     sample={"num_images": 60, "shard_size": 30, "num_actors": 1})
    out = run_job(spec, "2026-04-01")
    assert out.rows == 60

    from pipeline.publish import open_dataset

    ds = open_dataset(out.partition)
    assert ds.class_names == ["cat", "dog", "eel"]
    table = ds.to_table()
    img = Image.open(io.BytesIO(table.column("image")[0].as_py()["bytes"]))
    assert img.size == (32, 32) and img.mode == "RGB"
    x, y = ds.torch()[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= int(y) < 3

    # genpipe's own output is a training source (round trip): class names come back from its metadata
    from pipeline.data import load_dataset
    from pipeline.spec import DatasetSpec

    back = load_dataset(DatasetSpec(source="parquet", path=out.partition))
    assert back.class_names == ["cat", "dog", "eel"] and back.image_shape == (3, 32, 32)
    assert len(back.train_x) + len(back.test_x) == 60


def test_finetuning_continues_from_the_source_weights(ray_local, tiny_spec, tmp_path):
    vae = {"kind": "vae", "latent_dim": 8, "base_channels": 16}
    src_spec = tiny_spec("src", model=vae, train={"epochs": 4, "lr": 0.003, "num_workers": 1})
    src = train(src_spec, "2026-01-01", {"job": "src"})
    last = src.history[-1]["loss"]
    first_scratch = src.history[0]["loss"]
    assert first_scratch > 1.3 * last  # it learned something worth keeping

    ft_spec = tiny_spec("ft", model=vae, train={"epochs": 1, "lr": 0.003, "num_workers": 1,
                                                "init_from": src.checkpoint.url})
    ft = train(ft_spec, "2026-01-02", {"job": "ft"})
    # the fine-tuned run starts where the source ended, not from scratch
    assert ft.history[0]["epoch"] == 1
    assert abs(ft.history[0]["loss"] - last) < 0.15 * last
    assert ft.history[0]["loss"] < first_scratch / 1.2


def test_finetuning_with_another_class_count_needs_reinit(tmp_path):
    spec = VAESpec(kind="vae", latent_dim=8, base_channels=16)
    torch.manual_seed(0)
    ten = build_model(spec, (1, 8, 8), 10)
    three = build_model(spec, (1, 8, 8), 3)
    state = ten.state_dict()
    with pytest.raises(CheckpointError, match="init_label_map: reinit"):
        load_weights_for_finetune(three, state, "strict")
    skipped = load_weights_for_finetune(three, state, "reinit")
    assert {"decoder.embed.weight", "encoder.stem.0.weight"} <= set(skipped)
    # everything that does not depend on the class count came from the checkpoint
    own = three.nets["decoder"].state_dict()
    src = state["nets"]["decoder"]
    same = [k for k in own if k in src and own[k].shape == src[k].shape]
    assert same and all(torch.equal(own[k], src[k]) for k in same)
    with pytest.raises(CheckpointError, match="dcgan"):
        from pipeline.spec import DCGANSpec

        load_weights_for_finetune(build_model(DCGANSpec(), (1, 8, 8), 10), state, "strict")


def test_init_from_a_corrupted_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(str(tmp_path / "ck"))


def test_streaming_training_reads_through_ray_data(ray_local, tiny_spec, tmp_path):
    """dataset.streaming: the workers read their shard through Ray Data (get_dataset_shard)."""
    write_rgb_folder(tmp_path / "imgs")
    spec = tiny_spec("stream", dataset={"source": "image_folder", "path": str(tmp_path / "imgs"),
                                        "streaming": True, "channels": 3, "image_size": 32},
                     train={"epochs": 2, "num_workers": 1, "batch_size": 16},
                     sample={"num_images": 30, "shard_size": 30, "num_actors": 1})
    # with both CPUs taken by training workers, Ray Data could never read: refused up front
    from pipeline.runner import BadInput

    with pytest.raises(BadInput, match="dataset.streaming"):
        run_job(spec.model_copy(update={"train": spec.train.model_copy(update={"num_workers": 2})}), "2026-04-02")
    out = run_job(spec, "2026-04-02")
    assert out.rows == 30
    state, _ = load_checkpoint(out.checkpoint)
    hist = state["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and hist[0]["step"] > 0
    assert state["model"]["image_shape"] == [3, 32, 32] and state["model"]["num_classes"] == 3
