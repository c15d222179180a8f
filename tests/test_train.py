"""Distributed training on the session's real local Ray: 2 workers, DDP over gloo."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pipeline.faults import ENV as FAULTS_ENV
from pipeline.train import load_checkpoint, train
from pipeline.train.trainer import DONE_FILE, run_name

pytestmark = pytest.mark.ray


def _meta(spec):
    return {"job": spec.name, "class_names": [str(i) for i in range(10)], "image_shape": [1, 8, 8]}


def test_ddp_training_checkpoints_everything_and_resumes(ray_local, tiny_spec, tmp_path):
    spec = tiny_spec("ddp")
    res = train(spec, "2026-01-01", _meta(spec))
    assert not res.skipped and res.checkpoint.epoch == 2
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["loss_g"])) for h in res.history)
    # every epoch draws a new sample order (DistributedSampler.set_epoch)
    assert res.history[0]["order_crc32"] != res.history[1]["order_crc32"]

    state, info = load_checkpoint(res.checkpoint.url)
    assert set(state["model"]["nets"]) == {"generator", "discriminator"}
    assert set(state["opts"]) == {"generator", "discriminator"} and state["opts"]["generator"]["state"]
    assert state["epoch"] == 2 and state["step"] > 0 and "ema" in state["model"]
    assert state["train_hash"] == spec.train_hash() and len(info.digest) == 64

    # the finished run is recognised and not trained again
    again = train(spec, "2026-01-01", _meta(spec))
    assert again.skipped and again.checkpoint.digest == info.digest

    # with the completion marker gone, Ray Train V2 finds the run's last checkpoint (same name and
    # storage path) and the loop resumes from it instead of starting over
    run_dir = tmp_path / "runs" / spec.name / "train" / run_name(spec, "2026-01-01")
    os.remove(run_dir / DONE_FILE)
    resumed = train(spec, "2026-01-01", _meta(spec))
    assert resumed.resumed and not resumed.skipped
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_a_killed_worker_restarts_from_the_last_checkpoint(ray_local, tiny_spec, tmp_path, monkeypatch):
    spec = tiny_spec("fault", train={"epochs": 3, "max_failures": 1})
    markers = tmp_path / "markers"  # rank 0 calls os._exit at the start of epoch index 2
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"train_exit_at_epoch": 2, "marker_dir": str(markers)}))
    res = train(spec, "2026-01-01", _meta(spec))
    assert (markers / "train_exit_at_epoch-2").exists()  # the kill really happened
    # the count continues after the kill: epochs 1 and 2 came from the checkpoint, 3 was trained after
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert res.checkpoint.epoch == 3
    # the restarted workers see the very sample order of an uninterrupted run of the same training
    monkeypatch.delenv(FAULTS_ENV)
    plain = train(tiny_spec("plain", train={"epochs": 3}), "2026-01-01", _meta(spec))
    assert [h["order_crc32"] for h in res.history] == [h["order_crc32"] for h in plain.history]
    assert len({h["order_crc32"] for h in plain.history}) == 3
