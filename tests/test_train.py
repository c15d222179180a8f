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
    # where the call's wall time went: rank 0's wall-clock marks fall inside fit() and in order,
    # so the phases are all >= 0 and add up to the call
    ph = res.phases
    assert list(ph) == ["before_fit", "worker_start", "worker_setup", "epochs", "reports", "finish", "after_fit"]
    assert all(v >= 0 for v in ph.values()), ph
    assert ph["epochs"] > 0 and ph["reports"] > 0 and ph["worker_start"] > 0
    assert sum(ph.values()) == pytest.approx(res.seconds, abs=0.05)

    state, info = load_checkpoint(res.checkpoint.url)
    assert set(state["model"]["nets"]) == {"generator", "discriminator"}
    assert set(state["opts"]) == {"generator", "discriminator"} and state["opts"]["generator"]["state"]
    assert state["epoch"] == 2 and state["step"] > 0 and "ema" in state["model"]
    assert state["train_hash"] == spec.train_hash() and len(info.digest) == 64

    # the finished run is recognised and not trained again
    again = train(spec, "2026-01-01", _meta(spec))
    assert again.skipped and again.checkpoint.digest == info.digest and again.phases == {}

    # with the completion marker gone, Ray Train V2 finds the run's last checkpoint (same name and
    # storage path) and the loop resumes from it instead of starting over
    run_dir = tmp_path / "runs" / spec.name / "train" / run_name(spec, "2026-01-01")
    os.remove(run_dir / DONE_FILE)
    resumed = train(spec, "2026-01-01", _meta(spec))
    assert resumed.resumed and not resumed.skipped
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_the_backend_config_reaches_ray_trains_controller_without_torch(tiny_spec, tmp_path):
    """What Ray Train's controller unpickles and calls of the backend (its set-up callbacks build
    ``backend_cls()``, read ``share_cuda_visible_devices``, ``framework``, ``train_func_context``)
    imports no torch in a fresh interpreter; Ray's own TorchConfig does (~1.8 s in a fresh process on
    the critical path of every training call). The set-up itself runs in the DDP test above."""
    import subprocess
    import sys

    import cloudpickle
    from ray.train.torch import TorchConfig

    from pipeline.train.backend import TorchBackendConfig
    from pipeline.train.trainer import backend_config

    assert backend_config(tiny_spec("gpu", train={"use_gpu": True})).backend == "nccl"
    cfg = backend_config(tiny_spec("cpu"))
    assert isinstance(cfg, TorchBackendConfig) and cfg.backend == "gloo"
    assert cfg.timeout_s == TorchConfig().timeout_s  # Ray's default process-group timeout
    assert cfg.to_dict() == TorchConfig(backend="gloo").to_dict()  # what Ray Train's run state records
    blob = tmp_path / "cfg.pkl"
    theirs = tmp_path / "theirs.pkl"
    blob.write_bytes(cloudpickle.dumps(cfg))
    theirs.write_bytes(cloudpickle.dumps(TorchConfig(backend="gloo")))
    check = (
        "import pickle, sys\n"
        "c = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "b = c.backend_cls()\n"
        "assert b.share_cuda_visible_devices is True and c.framework.name == 'TORCH'\n"
        "assert c.train_func_context is not None and c.backend == 'gloo'\n"
        "print('torch' in sys.modules)\n"
    )

    def imports_torch(path):
        out = subprocess.run([sys.executable, "-c", check, str(path)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"

    assert not imports_torch(blob)
    assert imports_torch(theirs)  # the check can see the import it guards against
    # the placement-group guard genpipe's trainer hands the controller (pipeline.train.ray_trainer)
    from pipeline.train.pg_guard import PlacementGroupGuard

    guard = tmp_path / "guard.pkl"
    guard.write_bytes(cloudpickle.dumps(PlacementGroupGuard("k")))
    out = subprocess.run([sys.executable, "-c", "import pickle, sys\n"
                          "assert pickle.loads(open(sys.argv[1], 'rb').read()).key == 'k'\n"
                          "print('torch' in sys.modules)", str(guard)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_genpipe_trainer_swaps_rays_helper_actors_for_the_drivers_guard(ray_local, tmp_path):
    """What the trainer hands Ray Train's controller: no DatasetManager without Ray Datasets (kept
    with them), and the driver's placement-group guard in place of Ray's cleaner process."""
    import ray.data
    import ray.train
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from pipeline.train.pg_guard import PlacementGroupGuard
    from pipeline.train.ray_trainer import GenpipeTorchTrainer

    def kinds(**kw):
        t = GenpipeTorchTrainer(lambda c: None, pg_key="k", scaling_config=ray.train.ScalingConfig(num_workers=1),
                                run_config=ray.train.RunConfig(name="cb", storage_path=str(tmp_path)), **kw)
        return [type(c) for c in t._create_default_callbacks()]

    plain = kinds()
    assert PlacementGroupGuard in plain and PlacementGroupCleanerCallback not in plain
    assert DatasetsCallback not in plain
    assert DatasetsCallback in kinds(datasets={"train": ray.data.range(4)})


def test_a_dead_controllers_placement_group_is_released_by_the_driver(ray_local, tmp_path):
    """Ray Train's controller killed mid-run (no graceful shutdown): its worker group's placement
    group outlives it, holding the job's CPUs (Ray's cleaner process, which genpipe leaves out,
    would have removed it within ~1 s); the driver's ``release`` removes it and the CPUs come back."""
    import time

    import ray
    import ray.train
    from ray.util.placement_group import placement_group_table

    from pipeline.train.backend import TorchBackendConfig
    from pipeline.train.pg_guard import new_key, release
    from pipeline.train.ray_trainer import GenpipeTorchTrainer

    def kill_the_controller(config):
        import time

        import ray
        import ray.train
        from ray.train.v2._internal.execution.context import get_train_context

        if ray.train.get_context().get_world_rank() == 0:
            ray.kill(get_train_context().controller_actor, no_restart=True)
        time.sleep(120)

    before = set(placement_group_table())
    key = new_key("controller-killed")
    trainer = GenpipeTorchTrainer(
        kill_the_controller, pg_key=key, torch_config=TorchBackendConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="controller-killed", storage_path=str(tmp_path)))
    with pytest.raises(ray.exceptions.RayActorError):
        trainer.fit()
    time.sleep(3)  # past the cleaner's 1 s check: nothing else removes the group
    left = {k: v["state"] for k, v in placement_group_table().items() if k not in before}
    assert list(left.values()) == ["CREATED"], left
    assert release(key) == next(iter(left))
    assert placement_group_table()[next(iter(left))]["state"] == "REMOVED"
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) >= 2
    assert release(key) is None  # the record is gone: a second call removes nothing


def test_release_leaves_a_live_controllers_group_and_never_raises(ray_local):
    """``fit()`` interrupted on the driver (SIGTERM, Ctrl-C) while the controller lives: the group
    is still the controller's, and ``release`` leaves it. A record it cannot read, or a GCS it
    cannot reach, is logged, not raised over the exception that ended ``fit()``."""
    import json
    import time

    import ray
    from ray._private.state import actors
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from pipeline.train.pg_guard import KV_NAMESPACE, new_key, release

    @ray.remote(num_cpus=0)
    class Controller:
        def id(self) -> str:
            return ray.get_runtime_context().get_actor_id()

    live = Controller.remote()
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=60)
    try:
        key = new_key("live")
        _internal_kv_put(key, json.dumps({"pg": pg.id.hex(), "controller": ray.get(live.id.remote())}).encode(),
                         namespace=KV_NAMESPACE)
        assert release(key) is None
        assert placement_group_table(pg)["state"] == "CREATED"  # the live controller's to shut down
        assert _internal_kv_get(key, namespace=KV_NAMESPACE) is None  # the record is consumed

        controller = ray.get(live.id.remote())
        ray.kill(live, no_restart=True)  # the same record once its controller is dead: released
        deadline = time.time() + 30
        while actors(controller).get("State") != "DEAD":
            assert time.time() < deadline
            time.sleep(0.1)
        _internal_kv_put(key, json.dumps({"pg": pg.id.hex(), "controller": controller}).encode(),
                         namespace=KV_NAMESPACE)
        assert release(key) == pg.id.hex()
        assert placement_group_table(pg)["state"] == "REMOVED"

        _internal_kv_put(key, b"not json", namespace=KV_NAMESPACE)
        assert release(key) is None  # logged, not raised
    finally:
        if placement_group_table(pg).get("state") not in (None, "REMOVED"):
            remove_placement_group(pg)


def test_the_backend_config_picks_and_shuts_down_as_rays_does(monkeypatch):
    """Ray's TorchConfig rules carried over: no backend given means nccl on GPU workers, gloo
    else; the shutdown wait reads TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S as an integer, and a
    value that is not one falls back to the default instead of raising after the calls went out."""
    import ray
    from ray.train.constants import (
        DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
    )
    from ray.train.torch import TorchConfig

    from pipeline.train.backend import TorchBackendConfig, resolve_backend

    assert TorchBackendConfig().backend is None and TorchBackendConfig().to_dict() == TorchConfig().to_dict()
    assert resolve_backend({"CPU": 1, "GPU": 1}) == "nccl"
    assert resolve_backend({"CPU": 2}) == resolve_backend({"CPU": 1, "GPU": 0}) == "gloo"

    class Group:  # the two calls on_shutdown makes of Ray Train's worker group
        def __len__(self):
            return 2

        def execute_async(self, fn, **kw):
            self.sent = (fn.__name__, kw)
            return ["future"]

    waits = []
    monkeypatch.setattr(ray, "get", lambda futures, timeout: waits.append(timeout))
    cfg = TorchBackendConfig()
    for value, expected in (("7", 7), ("soon", DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)):
        monkeypatch.setenv(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, value)
        group = Group()
        cfg.backend_cls().on_shutdown(group, cfg)
        assert group.sent == ("_shutdown_worker", {"destroy_process_group": True})
        assert waits.pop() == expected


def test_training_refuses_ray_train_v1(tiny_spec, monkeypatch):
    """genpipe's backend and resumption are Ray Train V2's; RAY_TRAIN_V2_ENABLED=0 is refused
    (exit 2) before Ray Train is asked for anything."""
    from pipeline.errors import BadInput

    spec = tiny_spec("v1")
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", "0")
    with pytest.raises(BadInput, match="RAY_TRAIN_V2_ENABLED=0"):
        train(spec, "2026-01-01", _meta(spec))


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


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(ray_local, tiny_spec, tmp_path, caplog):
    """Issue 13, item 7: a truncated latest checkpoint used to fail every rerun inside the workers."""
    import logging

    from pipeline.train.checkpoint import CheckpointError

    spec = tiny_spec("damaged", train={"epochs": 3, "num_workers": 1})
    first = train(spec, "2026-01-01", _meta(spec))
    run_dir = tmp_path / "runs" / spec.name / "train" / run_name(spec, "2026-01-01")
    assert first.checkpoint.epoch == 3 and (run_dir / "epoch-00002").is_dir()  # Ray keeps the last 2
    os.remove(run_dir / DONE_FILE)
    state = run_dir / "epoch-00003" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a write cut short

    with caplog.at_level(logging.WARNING, logger="genpipe"):
        again = train(spec, "2026-01-01", _meta(spec))
    assert again.recovered_from is not None and again.recovered_from.endswith("epoch-00002")
    warning = " ".join(r.getMessage() for r in caplog.records if r.name == "genpipe")
    assert "epoch-00003 is damaged" in warning and "resuming from epoch-00002" in warning
    assert again.checkpoint.epoch == 3 and [h["epoch"] for h in again.history] == [1, 2, 3]
    # epochs 1-2 come from the intact checkpoint, epoch 3 was trained again on the same sample order
    assert [h["order_crc32"] for h in again.history] == [h["order_crc32"] for h in first.history]
    assert list(run_dir.glob("epoch-00003.damaged-*")) and list(run_dir.glob("checkpoint_manager_snapshot.json.damaged-*"))
    load_checkpoint(again.checkpoint.url)  # the new final checkpoint is whole

    # a garbage completion marker: said, ignored, and the finished run is resumed (nothing to train)
    (run_dir / DONE_FILE).write_text("{not json")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genpipe"):
        third = train(spec, "2026-01-01", _meta(spec))
    assert any(DONE_FILE in r.getMessage() for r in caplog.records)
    assert third.checkpoint.digest == again.checkpoint.digest and json.loads((run_dir / DONE_FILE).read_text())

    # nothing intact left: one clear error naming the run directory (the CLI maps it to exit 2)
    os.remove(run_dir / DONE_FILE)
    for d in run_dir.glob("epoch-0000?"):
        (d / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no intact checkpoint") as exc:
        train(spec, "2026-01-01", _meta(spec))
    assert str(run_dir) in str(exc.value)
