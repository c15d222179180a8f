"""Sampling benchmark: the pipeline against a naive loop, the plain Ray Data peer and the
machine's own ceilings, all in one run with the same model, images and N.

    python bench/sampling.py            # N = 100,000 (1,000,000 on a GPU machine)
    python bench/sampling.py --quick    # small N: keeps the benchmark working (CI runs this)

Prints one JSON line per figure and writes them all to bench/results/ (device name and date
inside). The model is a DCGAN-sized conditional generator (32x32, latent 100, width 64) with
untrained weights, as in ../shared/bench/raydata_peer.py: throughput, not quality, is measured.
Also: Ray Train's overhead against a plain PyTorch loop, DDPM sampling with DDIM at 25 and
50 steps, and the sampling stage's peak memory at N and 10xN (must stay flat). Last, the
free-generator probe (``--free-generator`` runs only it): pre-made images instead of the model, so
that what is measured is genpipe's own part -- the pipeline against the Ray Data peer and the
all-core encode + write ceiling (see bench/README.md).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.records import emit, load_avg, write_records  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.sample.generate import generate_u8, load_generator  # noqa: E402
from pipeline.spec import JobSpec, load_spec, parse_spec  # noqa: E402
from pipeline.train.checkpoint import save_checkpoint_dir  # noqa: E402


def device_label(cuda: bool) -> str:
    """The device named in a result file's setup record."""
    return torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or 'x86_64'})"


def bench_spec(out: Path, n: int, shard: int, use_gpu: bool, **sample) -> JobSpec:
    return parse_spec({
        "name": "bench",
        "dataset": {"source": "digits", "image_size": 32},
        "model": {"kind": "dcgan", "latent_dim": 100, "base_channels": 64},
        "train": {"use_gpu": use_gpu, "num_workers": 1},
        "sample": dict({"num_images": n, "shard_size": shard, "output": str(out / "datasets"),
                        "batch_size": 8192 if use_gpu else 1024}, **sample),
        "gate": {"measure": False},
        "storage": str(out / "runs"),
    })


def make_checkpoint(spec: JobSpec, where: Path) -> str:
    torch.manual_seed(0)
    fam = build_model(spec.model, (1, 32, 32), 10)
    where.mkdir(parents=True, exist_ok=True)
    state = {"format": 1, "model": fam.state_dict(), "epoch": 0, "step": 0, "history": [], "meta": {}}
    save_checkpoint_dir(str(where), state, {"bench": True})
    return str(where)


def pil_png(a: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(b, format="PNG")
    return b.getvalue()


def naive(spec: JobSpec, ckpt: str, n: int, out: Path, device: str) -> float:
    """What a first script does: generate, PNG one by one with Pillow, one Parquet file, one process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = time.perf_counter()
    fam, _ = load_generator(ckpt, spec, device)
    pngs, labels = [], []
    for lo in range(0, n, 1000):
        k = min(1000, n - lo)
        seeds = np.arange(lo, lo + k, dtype=np.int64)
        imgs = generate_u8(fam, seeds, seeds % 10, batch_size=1000)
        pngs.extend(pil_png(a) for a in imgs)
        labels.extend((seeds % 10).tolist())
    pq.write_table(pa.table({"image": pa.array(pngs, pa.binary()), "label": labels}), out / "naive.parquet")
    return n / (time.perf_counter() - t)


class PeerGen:
    """The peer's generator stage (a Ray Data actor), running our model."""

    def __init__(self, spec_json: dict, ckpt: str, device: str):
        spec = JobSpec.model_validate(spec_json)
        torch.set_num_threads(1)
        self.fam, _ = load_generator(ckpt, spec, device)
        self.bs = spec.sample.batch_size

    def __call__(self, batch: dict) -> dict:
        ids = batch["id"].astype(np.int64)
        u8 = generate_u8(self.fam, ids, ids % 10, batch_size=self.bs)
        return {"id": ids, "img": u8[..., 0], "label": ids % 10}


def peer_encode(batch: dict) -> dict:
    return {"id": batch["id"], "label": batch["label"],
            "image": np.array([pil_png(a[..., None]) for a in batch["img"]], dtype=object)}


def raydata_peer(spec: JobSpec, ckpt: str, n: int, out: Path, device: str) -> float:
    """../shared/bench/raydata_peer.py's pipeline: GPU actor pool -> map_batches PNG -> write_parquet."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    dest = out / "peer"
    t = time.perf_counter()
    ds = ray.data.range(n).map_batches(
        PeerGen, fn_constructor_args=(spec.model_dump(mode="json"), ckpt, device),
        batch_size=spec.sample.batch_size, num_gpus=1 if gpus else 0,
        compute=ray.data.ActorPoolStrategy(size=max(gpus, 1)))
    ds.map_batches(peer_encode, batch_size=2048).write_parquet(str(dest))
    return n / (time.perf_counter() - t)


def pipeline_run(spec: JobSpec, ckpt: str, date: str = "2026-01-01", timeline: list | None = None
                 ) -> tuple[float, dict]:
    """genpipe's sampling stage end to end: shard plan, actors, encode, exactly-once commit, manifest.
    ``timeline``, if given, gets (seconds since start, shard rows, encode task seconds, its CPU
    seconds or None) per shard."""
    from pipeline.publish.partition import Partition
    from pipeline.sample.fanout import ShardContext, sample_shards
    from pipeline.sample.plan import make_plan

    plan = make_plan(spec.sample, 10, spec.name, date)
    ctx = ShardContext(partition=Partition.of(spec.sample.output, spec.name, date, spec.storage_options),
                       class_names=[str(i) for i in range(10)], fmt=spec.sample.format, model="dcgan",
                       checkpoint_digest="bench", created_at=datetime(2026, 1, 1, tzinfo=UTC),
                       spec_hash=spec.spec_hash())
    t = time.perf_counter()

    def on_shard(out: dict) -> None:
        if timeline is not None:
            timeline.append((time.perf_counter() - t, out["info"].rows, out["seconds"], out.get("cpu"),
                             out.get("thread_cpu")))

    infos = sample_shards(spec, plan, ckpt, ctx, on_shard=on_shard)
    ctx.partition.publish(infos, provenance=ctx.provenance, spec_hash=ctx.spec_hash, code_version="bench",
                          num_images=plan.total, class_names=ctx.class_names)
    dt = time.perf_counter() - t
    return plan.total / dt, {"shards": plan.num_shards, "seconds": round(dt, 2)}


def encode_ceiling(spec: JobSpec, ckpt: str, device: str, n: int = 40000, passes: int = 3) -> float:
    """All cores encoding with the pipeline's own encoder (Ray tasks), on the model's images."""
    import ray

    from pipeline.publish.schema import encode_pngs

    fam, _ = load_generator(ckpt, spec, device)
    seeds = np.arange(n, dtype=np.int64)
    imgs = generate_u8(fam, seeds, seeds % 10, batch_size=1024)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    enc = ray.remote(lambda chunk: len(encode_pngs(chunk))).options(num_cpus=1)
    chunks = [ray.put(c) for c in np.array_split(imgs, cpus * 4)]
    ray.get([enc.remote(c) for c in chunks[:cpus]])  # warm the workers
    best = 0.0
    for _ in range(passes):  # best pass: a ceiling, not an average over whatever else ran
        t = time.perf_counter()
        done = sum(ray.get([enc.remote(c) for c in chunks]))
        best = max(best, done / (time.perf_counter() - t))
    return best


def generator_ceiling(spec: JobSpec, ckpt: str, device: str, n: int) -> float:
    fam, _ = load_generator(ckpt, spec, device)
    bs = spec.sample.batch_size
    generate_u8(fam, np.arange(bs, dtype=np.int64), np.zeros(bs, np.int64), batch_size=bs)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    generate_u8(fam, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) % 10, batch_size=bs)
    return n / (time.perf_counter() - t)


def ddim_rates(device: str, quick: bool) -> None:
    """DDPM sampling rate with DDIM at 25 and 50 steps (classifier-free guidance on: 2 UNet passes
    per step). Times the sampler on one batch directly: generate_u8 pads every call to a fixed
    block (256 rows on CPU), which would bill a handful of probe images as a whole block."""
    from pipeline.rng import seeded_normal

    k = 4096 if device == "cuda" else (4 if quick else 16)  # CPU DDIM at 32x32 runs a few images/s
    for steps in (25, 50):
        spec = parse_spec({"name": "b", "model": {"kind": "ddpm", "timesteps": 1000, "sample_steps": steps},
                           "train": {"use_gpu": device == "cuda"}})
        fam = build_model(spec.model, (1, 32, 32), 10)
        net = fam.ema.to(device).eval()
        s = torch.arange(k, device=device)
        z = seeded_normal(s, fam.noise_shape())
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
        with torch.inference_mode(), ctx:
            fam.generate(net, z[:2], s[:2] % 10, s[:2])  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fam.generate(net, z, s % 10, s)
            if device == "cuda":
                torch.cuda.synchronize()
        emit(probe="ddpm_ddim", steps=steps, img_per_s=round(k / (time.perf_counter() - t), 2), images=k,
             guidance=float(spec.model.guidance_scale), params=sum(p.numel() for p in net.parameters()))


class PeakMemory:
    """Peak memory of this process and all its descendants (the local Ray cluster), polled.

    Sums USS (pages only that process holds), so pages shared between processes -- Ray's
    object store, the forked interpreters' common libraries -- count once, not once per process
    that maps them. The total is absolute (driver + whole local cluster): Ray prestarts idle
    workers at its own pace and turns them into actors, so "above the idle cluster" depends on
    how many happened to exist when the run began. Also keeps the largest sampling actor's USS.
    """

    def __init__(self, interval: float = 0.25, store: bool = False):
        import psutil

        self.proc, self.interval, self.peak, self.actor_peak = psutil.Process(), interval, 0, 0
        self.driver_peak = 0  # RSS of this process (the driver) alone
        self.store, self.store_peak = store, 0  # Ray object store bytes in use (store=True: polled too)
        self._stop = threading.Event()

    def _store_bytes(self) -> int:
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            if getattr(self, "_state", None) is None:  # this session's cluster (others may run here)
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(self._state, timeout_seconds=10)
            return int(reply.store_stats.object_store_bytes_used)
        except Exception as e:  # a private API: no figure rather than no benchmark
            print(f"object store usage unavailable: {type(e).__name__}: {e}"[:300], flush=True)
            self.store = False
            return 0

    def _sample(self) -> tuple[int, int]:
        import psutil

        total = actor = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                mem = p.memory_full_info()
                total += mem.uss
                if "SamplerActor" in " ".join(p.cmdline()):
                    actor = max(actor, mem.uss)
            except psutil.Error:
                pass
        return total, actor

    def wait_actors_gone(self, timeout: float = 60.0) -> None:
        """ray.kill returns before the process exits: a previous run's actors would be counted."""
        deadline = time.monotonic() + timeout
        while self._sample()[1] and time.monotonic() < deadline:
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self.wait_actors_gone()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            total, actor = self._sample()
            self.peak, self.actor_peak = max(self.peak, total), max(self.actor_peak, actor)
            self.driver_peak = max(self.driver_peak, self.proc.memory_info().rss)
            if self.store:
                self.store_peak = max(self.store_peak, self._store_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


class CpuMeter:
    """CPU seconds (user + system) spent by this process and all its descendants while in the
    ``with`` block, split into the driver, workers (Ray workers and actors, or pool processes) and
    the rest (Ray's own daemons: raylet, GCS, dashboard, agents). Polled, so a process that exits
    inside the block (a killed actor) counts up to its last poll. On a shared machine CPU seconds
    per image are far steadier than images/s: they do not count the time others hold the cores."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self._stop = threading.Event()
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[float, str]] = {}

    def _poll(self) -> None:
        import psutil

        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                if p.pid not in self._last:
                    args = p.cmdline()
                    cmd = " ".join(args)  # Ray workers and actors retitle themselves "ray::<what>"
                    worker = ((cmd.startswith("ray::") and "Dashboard" not in cmd) or "multiprocessing" in cmd
                              or (len(args) > 1 and args[1].endswith(("default_worker.py", "setup_worker.py"))))
                    kind = "driver" if p.pid == self.proc.pid else ("workers" if worker else "ray_daemons")
                else:
                    kind = self._last[p.pid][1]
                self._last[p.pid] = (t.user + t.system, kind)
            except psutil.Error:
                pass

    def __enter__(self) -> CpuMeter:
        self._poll()
        self._start = {pid: v[0] for pid, v in self._last.items()}
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._poll()
        self.seconds: dict[str, float] = {"driver": 0.0, "workers": 0.0, "ray_daemons": 0.0}
        for pid, (cpu, kind) in self._last.items():
            self.seconds[kind] += cpu - self._start.get(pid, 0.0)
        self.total = sum(self.seconds.values())


def training_set(spec: JobSpec, ckpt: str, device: str, n: int, where: Path) -> str:
    """A Parquet training set of the bench model's own images (PNG + label), read back through
    the ``parquet`` source: the probe needs no dataset download and no scikit-learn (the GPU
    machine has neither); images/s does not depend on what the pictures show."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.publish.schema import encode_pngs

    fam, _ = load_generator(ckpt, spec, device)
    seeds = np.arange(n, dtype=np.int64)
    imgs = generate_u8(fam, seeds, seeds % 10, batch_size=spec.sample.batch_size)
    where.mkdir(parents=True, exist_ok=True)
    path = where / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(encode_pngs(imgs), pa.binary()), "label": seeds % 10}), path)
    return str(path)


def overhead_spec(out: Path, data_path: str, use_gpu: bool, epochs: int) -> JobSpec:
    """One worker, large batches, few long epochs: the job whose epochs take a while."""
    batch = 1024 if use_gpu else 256
    return parse_spec({"name": "bench-train", "dataset": {"source": "parquet", "path": data_path},
                       "model": {"kind": "dcgan", "latent_dim": 100, "base_channels": 64},
                       "train": {"epochs": epochs, "batch_size": batch, "num_workers": 1, "use_gpu": use_gpu,
                                 "checkpoint_every": epochs, "cpus_per_worker": os.cpu_count() or 1},
                       "gate": {"measure": False}, "storage": str(out / "train-runs")})


def _empty_loop(config: dict) -> dict:
    return {"entered": time.time()}


def train_floor(spec: JobSpec, label: str, reps: int) -> float:
    """Ray Train's own fixed cost for this job's shape: ``fit()`` of a loop that returns at once, with
    the job's workers, resources, GPU and backend, the controller poll ``train()`` sets, no dataset
    and no checkpoint. Best of ``reps``; also split at the loop's first line. Beside it, in turns,
    Ray's stock ``TorchTrainer`` and ``TorchConfig`` in place of genpipe's trainer
    (:mod:`pipeline.train.ray_trainer`: no helper actor processes) and backend config (no torch
    import in Ray Train's controller, :mod:`pipeline.train.backend`)."""
    from functools import partial

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.plan import train_resources
    from pipeline.train.pg_guard import new_key, release
    from pipeline.train.ray_trainer import GenpipeTorchTrainer
    from pipeline.train.trainer import POLL_INTERVAL_S, backend_config

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", POLL_INTERVAL_S)
    tr = spec.train
    fits, to_loop, ray_fits = [], [], []
    for i in range(reps):
        for ours in ((True, False) if i % 2 == 0 else (False, True)):
            cfg = backend_config(spec) if ours else TorchConfig(backend=backend_config(spec).backend)
            key = new_key("floor")
            trainer_cls = partial(GenpipeTorchTrainer, pg_key=key) if ours else TorchTrainer
            t = time.time()
            res = trainer_cls(
                _empty_loop, torch_config=cfg,
                scaling_config=ray.train.ScalingConfig(num_workers=tr.num_workers, use_gpu=tr.use_gpu,
                                                       resources_per_worker=train_resources(spec).bundle),
                run_config=ray.train.RunConfig(name=f"floor-{tr.num_workers}-{i}-{'ours' if ours else 'ray'}",
                                               storage_path=str(Path(spec.storage) / "floor")),
            ).fit()
            if ours:
                release(key)
                fits.append(time.time() - t)
                to_loop.append(res.return_value["entered"] - t)
            else:
                ray_fits.append(time.time() - t)
    emit(probe="train_floor", job=label, workers=tr.num_workers, use_gpu=tr.use_gpu, fit_s=[round(x, 2) for x in fits],
         to_loop_s=[round(x, 2) for x in to_loop], best_fit_s=round(min(fits), 2),
         ray_torch_config_fit_s=[round(x, 2) for x in ray_fits], ray_torch_config_best_fit_s=round(min(ray_fits), 2),
         what="Ray Train fit() of a loop that returns at once, this job's scaling, genpipe's trainer and backend; "
              "ray_torch_config_*: the same with Ray's stock TorchTrainer and TorchConfig, in turns")
    return min(fits)


def _plain_loop(spec: JobSpec) -> dict:
    """The baseline: one process, all the workers' CPU threads, the same optimizer steps on the same
    global batch (workers x batch), epoch by epoch (wall seconds from the data load on)."""
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.data import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.train.num_workers * spec.train.cpus_per_worker)))
    t_plain = time.perf_counter()
    device = torch.device("cuda" if spec.train.use_gpu and torch.cuda.is_available() else "cpu")
    data = load_dataset(spec.dataset)
    fam = build_model(spec.model, data.image_shape, data.num_classes).to(device)
    opts = fam.make_optimizers(fam.nets, spec.train)
    world = spec.train.num_workers
    per_worker = min(spec.train.batch_size, max(1, len(data.train_x) // world))
    steps_per_epoch = (len(data.train_x) // world) // per_worker  # what each DDP worker does per epoch
    loader = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=per_worker * world, shuffle=True,
                        drop_last=True)
    rates, epochs_s = [], 0.0
    for _ in range(spec.train.epochs):
        t, seen = time.perf_counter(), 0
        for i, (x, y) in enumerate(loader):
            if i == steps_per_epoch:
                break
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
                "cpu", enabled=False)
            fam.train_step(fam.nets, opts, x.to(device), y.to(device), ctx)
            fam.update_ema()
            seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        epochs_s += dt
        rates.append(seen / dt)
    wall = time.perf_counter() - t_plain
    torch.set_num_threads(threads)
    return {"wall": wall, "epochs_s": epochs_s, "rate": float(np.median(rates[1:] or rates)), "world": world,
            "per_worker": per_worker, "train_images": len(data.train_x)}


def train_overhead(spec: JobSpec, label: str, floor_reps: int = 2, pairs: int = 1) -> None:
    """Ray Train as the user feels it: the whole ``train()`` call (worker start-up, per-checkpoint
    reports, checkpoint writes) against a plain single-process PyTorch loop doing the same optimizer
    steps (:func:`_plain_loop`), in ``pairs`` rounds that alternate which goes first (this machine's
    speed drifts by 10-20 % over minutes: the figures are the rounds' medians, each round beside
    them); then Ray Train's own floor for the job's shape (:func:`train_floor`), and the call less it."""
    from pipeline.train import train

    rounds = []
    for k in range(pairs):
        def ray_call(k: int = k) -> tuple[float, object]:
            t = time.perf_counter()
            res = train(spec, f"2026-01-{k + 1:02d}", {"bench": True})  # a new run each round
            return time.perf_counter() - t, res

        if k % 2:
            plain = _plain_loop(spec)
            ray_wall, res = ray_call()
        else:
            ray_wall, res = ray_call()
            plain = _plain_loop(spec)
        ray_rate = float(np.median([h["images_per_s"] for h in res.history[1:]] or [res.history[0]["images_per_s"]]))
        ray_epochs_s = sum(h["seconds"] for h in res.history)  # rank 0's own clock, steps only
        rounds.append({"ray_first": k % 2 == 0, "ray_train_img_per_s": round(ray_rate), "plain_img_per_s": round(plain["rate"]),
                       "ray_train_wall_s": round(ray_wall, 1), "plain_wall_s": round(plain["wall"], 1),
                       "wall_ratio": round(ray_wall / plain["wall"], 2), "ray_train_epochs_s": round(ray_epochs_s, 1),
                       "plain_epochs_s": round(plain["epochs_s"], 1),
                       "epochs_ratio": round(ray_epochs_s / plain["epochs_s"], 2), "ray_train_phases_s": res.phases})
    floor = train_floor(spec, label, floor_reps)

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    ray_wall, plain_wall = med("ray_train_wall_s"), med("plain_wall_s")
    ray_epochs_s, plain_epochs_s = med("ray_train_epochs_s"), med("plain_epochs_s")
    # steady state: median epoch rate after the first (warm-up) epoch; wall: the whole call, split
    # into the epochs' steps and everything else (start-up, reports and checkpoints, shutdown)
    emit(probe="train_overhead", job=label, pairs=pairs, ray_train_img_per_s=round(med("ray_train_img_per_s")),
         plain_img_per_s=round(med("plain_img_per_s")),
         overhead=round(1 - med("ray_train_img_per_s") / med("plain_img_per_s"), 3), ray_train_wall_s=ray_wall,
         plain_wall_s=plain_wall, wall_ratio=round(med("wall_ratio"), 2), ray_train_epochs_s=ray_epochs_s,
         ray_train_outside_epochs_s=round(ray_wall - ray_epochs_s, 1), plain_epochs_s=plain_epochs_s,
         plain_outside_epochs_s=round(plain_wall - plain_epochs_s, 1), epochs_ratio=round(med("epochs_ratio"), 2),
         ray_train_phases_s=rounds[0]["ray_train_phases_s"] if pairs == 1 else None,
         ray_train_floor_s=round(floor, 1),
         wall_ratio_less_floor=round(float(np.median([(r["ray_train_wall_s"] - floor) / r["plain_wall_s"]
                                                      for r in rounds])), 2),
         epochs=spec.train.epochs, workers=plain["world"], batch_per_worker=plain["per_worker"],
         train_images=plain["train_images"], rounds=rounds if pairs > 1 else None)


# ------------------------------------------------------------------------------- free generator
#
# A benchmark instrument, not a product feature: the model is replaced by pre-made uint8 images so
# that generating costs ~0 and what is left is genpipe's own part -- moving pixels to the encode
# tasks, encoding, the exactly-once commit and the manifest -- as on a GPU machine, where a
# DCGAN-sized generator makes millions of images/s.

FREE_POOL = 8192  # distinct pre-made images; image g of the plan is pool[g % FREE_POOL]


def free_pool(where: Path, spec: JobSpec, ckpt: str) -> tuple[str, str]:
    """Make the pre-made images once, save them as .npy; returns (path, what they are).

    Digits-like and realistic to compress: scikit-learn's digits upscaled bilinearly to 32x32 with
    rounded Gaussian noise (sigma 3 grey levels; bench/png_deflate.py's ``digits32_grey_noisy``).
    Without scikit-learn, the bench model's own (untrained, noise-like) outputs."""
    rng = np.random.default_rng(0)
    try:
        from PIL import Image
        from sklearn.datasets import load_digits

        d = np.clip(np.rint(load_digits().images * 255 / 16), 0, 255).astype(np.uint8)
        up = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR)) for a in d])
        reps = np.resize(np.arange(len(up)), FREE_POOL)
        noise = np.rint(rng.normal(0, 3, (FREE_POOL, 32, 32))).astype(np.int16)
        pool = np.clip(up[reps].astype(np.int16) + noise, 0, 255).astype(np.uint8)[..., None]
        what = "scikit-learn digits upscaled to 32x32 grey, noise sigma 3"
    except ImportError:
        fam, _ = load_generator(ckpt, spec, "cpu")
        seeds = np.arange(FREE_POOL, dtype=np.int64)
        pool = generate_u8(fam, seeds, seeds % 10, batch_size=1024)
        what = "the bench DCGAN's untrained outputs, 32x32 grey (no scikit-learn here)"
    path = where / "free-pool.npy"
    where.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(pool))
    return str(path), what


class FreeSource:
    """The pre-made images as a ring: image g is ``pool[g % len(pool)]``, and any run of up to
    ``longest`` consecutive images is a view (no copy) of one array, the pool followed by its own
    first ``longest`` images (repeated as needed). Generating then costs ~0: what a caller does with
    the view (Ray's copy into the object store, the encoder's read) is the pipeline's own work."""

    def __init__(self, pool_path: str, longest: int):
        pool = np.load(pool_path)
        self.size, self.longest = len(pool), longest
        self.ring = np.resize(pool, (self.size + longest, *pool.shape[1:]))  # np.resize repeats cyclically

    def slice(self, start: int, count: int) -> np.ndarray:
        if count > self.longest:
            raise ValueError(f"{count} images in one slice; this source was made for {self.longest}")
        at = start % self.size
        return self.ring[at:at + count]

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Images ``ids``: a view when they are consecutive (and few enough), else gathered."""
        if 0 < len(ids) <= self.longest and np.array_equal(ids, ids[0] + np.arange(len(ids))):
            return self.slice(int(ids[0]), len(ids))
        return self.ring[ids % self.size]


class FreeSamplerActor:
    """Stands in for :class:`pipeline.sample.fanout.SamplerActor` (same constructor and methods):
    ``generate`` returns the shard's slice of the pre-made images. ``ckpt_url`` is the pool's .npy."""

    def __init__(self, spec_json: dict, ckpt_url: str, use_gpu: bool):
        self.spec = JobSpec.model_validate(spec_json)
        self.source = FreeSource(ckpt_url, self.spec.sample.shard_size)

    def generate(self, shard, ctx) -> np.ndarray:
        return self.source.slice(shard.start, shard.count)

    def run_shard(self, shard, ctx) -> dict:
        from pipeline.sample.fanout import commit_shard

        t0 = time.perf_counter()
        info = commit_shard(self.generate(shard, ctx), shard, ctx)
        return {"info": info, "skipped": False, "seconds": time.perf_counter() - t0}

    def digest(self) -> str:
        return "free"


def free_pipeline(spec: JobSpec, pool_path: str, timeline: list | None = None) -> tuple[float, dict]:
    """:func:`pipeline_run` with the free generator: ``sample_shards`` builds its actors from the
    module attribute ``pipeline.sample.fanout.SamplerActor`` when called, so the bench swaps it
    for :class:`FreeSamplerActor` meanwhile (nothing in pipeline/ changes)."""
    import ray

    import pipeline.sample.fanout as fanout

    if __name__ != "__main__":  # imported (not run as a script): ship this module's classes by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    real, real_task = fanout.SamplerActor, fanout._encode_task
    fanout.SamplerActor, fanout._encode_task = FreeSamplerActor, _cpu_timed_encode_task
    try:
        return pipeline_run(spec, pool_path, timeline=timeline)
    finally:
        fanout.SamplerActor, fanout._encode_task = real, real_task


def _cpu_timed_encode_task(images: np.ndarray, shard, ctx) -> dict:
    """The pipeline's own encode task (``fanout._encode_task``, as the worker imports it), plus the
    CPU seconds it took in that worker: what one shard costs inside the pipeline, start-up aside.
    ``cpu`` is the whole worker process's (the task's thread and Ray's own threads beside it),
    ``thread_cpu`` the task's thread alone: the difference is what Ray's worker threads spend
    meanwhile (the encoder and pyarrow's writer run on the calling thread; the ceiling checks it)."""
    from pipeline.sample import fanout

    c, th = time.process_time(), time.thread_time()
    out = fanout._encode_task(images, shard, ctx)
    return dict(out, cpu=time.process_time() - c, thread_cpu=time.thread_time() - th)


class FreePeerGen:
    """The peer's generator stage fed the same free source."""

    def __init__(self, pool_path: str, batch_size: int):
        self.source = FreeSource(pool_path, batch_size)

    def __call__(self, batch: dict) -> dict:
        ids = batch["id"].astype(np.int64)
        u8 = self.source.take(ids)
        return {"id": ids, "img": u8[..., 0], "label": ids % 10}


def free_peer(pool_path: str, n: int, out: Path, batch_size: int) -> float:
    """../shared/bench/raydata_peer.py's pipeline (actor pool -> map_batches PNG with Pillow ->
    write_parquet) with its generator stage replaced by the free source."""
    import ray

    dest = out / "free-peer"
    shutil.rmtree(dest, ignore_errors=True)
    dctx = ray.data.DataContext.get_current()
    dctx.enable_progress_bars = False
    if hasattr(dctx, "enable_operator_progress_bars"):
        dctx.enable_operator_progress_bars = False
    t = time.perf_counter()
    ds = ray.data.range(n).map_batches(FreePeerGen, fn_constructor_args=(pool_path, batch_size), batch_size=batch_size,
                                       compute=ray.data.ActorPoolStrategy(size=1))
    ds.map_batches(peer_encode, batch_size=2048).write_parquet(str(dest))
    rate = n / (time.perf_counter() - t)
    shutil.rmtree(dest, ignore_errors=True)
    return rate


_CEIL: dict = {}


def _ceiling_init(pool_path: str, spec_json: dict, out: str) -> None:
    from pipeline.sample.plan import make_plan

    spec = JobSpec.model_validate(spec_json)
    _CEIL.update(source=FreeSource(pool_path, spec.sample.shard_size), plan=make_plan(spec.sample, 10, spec.name, "2026-01-01"), out=out,
                 job=spec.name)


def _ceiling_shard(i: int) -> tuple[int, float, float, float, float, float]:
    """One shard as the pipeline encodes it (build_table: ids, labels, seeds, PNGs with the pipeline's
    encoder) and writes it (parquet_io.parquet_bytes, the pipeline's writer options), to a local file:
    no object store, no commit protocol, no manifest. Returns (rows, build s, parquet s, write s,
    process CPU s, this thread's CPU s)."""
    from pipeline.publish.parquet_io import parquet_bytes
    from pipeline.publish.schema import build_table
    from pipeline.sample.plan import image_ids

    plan = _CEIL["plan"]
    shard = plan.shard(i)
    c, th = time.process_time(), time.thread_time()
    t0 = time.perf_counter()
    table = build_table(_CEIL["source"].slice(shard.start, shard.count), shard.labels, shard.seeds,
                        image_ids(_CEIL["job"], "2026-01-01", shard), i, class_names=[str(k) for k in range(10)],
                        model="dcgan", checkpoint="bench", job=_CEIL["job"], date="2026-01-01",
                        created_at=datetime(2026, 1, 1, tzinfo=UTC))
    t1 = time.perf_counter()
    data = parquet_bytes(table)
    t2 = time.perf_counter()
    with open(os.path.join(_CEIL["out"], f"part-{i:05d}.parquet"), "wb") as f:
        f.write(data)
    return (shard.count, t1 - t0, t2 - t1, time.perf_counter() - t2, time.process_time() - c,
            time.thread_time() - th)


def free_ceiling(spec: JobSpec, pool_path: str, out: Path, passes: int = 3) -> tuple[float, dict]:
    """The machine's all-core ceiling for encode + Parquet write: a process pool over every core
    (no Ray), each task one shard of the same plan. Best pass (a ceiling, not an average)."""
    import multiprocessing as mp

    from pipeline.sample.plan import make_plan

    cores = os.cpu_count() or 1
    plan = make_plan(spec.sample, 10, spec.name, "2026-01-01")
    out.mkdir(parents=True, exist_ok=True)
    best, parts = 0.0, None
    with mp.get_context("spawn").Pool(cores, _ceiling_init, (pool_path, spec.model_dump(mode="json"), str(out))) as pool:
        pool.map(_ceiling_shard, range(min(cores, plan.num_shards)))  # warm every worker
        cpu_best = float("inf")
        for _ in range(passes):
            t = time.perf_counter()
            with CpuMeter() as cm:
                res = pool.map(_ceiling_shard, range(plan.num_shards), chunksize=1)
            rate = sum(r[0] for r in res) / (time.perf_counter() - t)
            cpu_best = min(cpu_best, cm.total)
            if rate > best:
                best = rate
                tot = np.sum([r[1:] for r in res], axis=0)
                parts = {"build_table_s": round(tot[0], 2), "parquet_bytes_s": round(tot[1], 2),
                         "file_write_s": round(tot[2], 3)}
                task_cpu = {"process": round(1e6 * tot[3] / plan.total, 1),
                            "thread": round(1e6 * tot[4] / plan.total, 1)}
    shutil.rmtree(out, ignore_errors=True)
    return best, {"processes": cores, "shards": plan.num_shards, "task_seconds_summed": parts,
                  "cpu_ms_per_1k_images": round(1e6 * cpu_best / plan.total, 1),
                  # inside the tasks (the fastest pass): the process's CPU and the calling thread's
                  "task_cpu_ms_per_1k_images": task_cpu}


def commit_overhead(spec: JobSpec, pool_path: str, out: Path, reps: int = 3) -> dict:
    """One shard in this process: the ceiling's work (build_table + parquet_bytes + file write)
    against the pipeline's commit_shard (build_table + Partition.write_shard: provenance stamp,
    sha256, create-only put through staging, read-back of size and footer)."""
    from pipeline.publish.partition import Partition
    from pipeline.sample.fanout import ShardContext, commit_shard
    from pipeline.sample.plan import make_plan

    plan = make_plan(spec.sample, 10, spec.name, "2026-01-01")
    shard = plan.shard(0)
    _ceiling_init(pool_path, spec.model_dump(mode="json"), str(out))
    imgs = _CEIL["source"].slice(shard.start, shard.count)  # the source the ceiling's shard reads
    out.mkdir(parents=True, exist_ok=True)
    ceil = commit = float("inf")
    for r in range(reps):
        t = time.perf_counter()
        _ceiling_shard(0)
        ceil = min(ceil, time.perf_counter() - t)
        part = Partition.of(str(out / f"commit{r}"), spec.name, "2026-01-01")
        ctx = ShardContext(partition=part, class_names=[str(i) for i in range(10)], fmt="png", model="dcgan",
                           checkpoint_digest="bench", created_at=datetime(2026, 1, 1, tzinfo=UTC),
                           spec_hash=spec.spec_hash())
        t = time.perf_counter()
        commit_shard(imgs, shard, ctx)
        commit = min(commit, time.perf_counter() - t)
    shutil.rmtree(out, ignore_errors=True)
    return {"shard_rows": shard.count, "ceiling_work_s": round(ceil, 3), "commit_shard_s": round(commit, 3),
            "commit_vs_ceiling_work": round(commit / ceil, 3)}


def _import_cpu(modules: str) -> float | None:
    import subprocess

    code = f"import time; t = time.process_time(); import {modules}; print(time.process_time() - t)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        return round(float(out.stdout.strip().splitlines()[-1]), 2)
    except (ValueError, IndexError, subprocess.SubprocessError):
        return None


def _steady(timeline: list) -> float | None:
    """Rows/s between the first and the last shard committed (start-up and first-shard latency out)."""
    if len(timeline) < 3:
        return None
    tl = sorted(timeline)
    return sum(x[1] for x in tl[1:]) / (tl[-1][0] - tl[0][0])


def _ray_init(num_cpus: int | None, num_gpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s raylet start-up wait
        try:
            # configured as the product's embedded cluster (pipeline.runner.ensure_ray): metrics off
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, dashboard_host="127.0.0.1", logging_level="ERROR",
                     log_to_driver=False, _system_config={"enable_metrics_collection": False})
            return
        except Exception:
            if attempt == 2:
                raise
            ray.shutdown()
            time.sleep(5)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _free_best_of(spec: JobSpec, pool_path: str, reps: int, out: Path, cores: int) -> dict:
    """:func:`free_pipeline` ``reps`` times (a fresh output folder each), the fastest run's record:
    images/s end to end and steady, when the first shard was committed and the first encode task
    began, the encode tasks' seconds and CPU, and CPU per image by kind of process."""
    n = spec.sample.num_images
    best = 0.0
    for r in range(reps):
        s = spec.model_copy(update={"sample": spec.sample.model_copy(update={"output": f"{out}-{r}"})})
        tl: list = []
        with CpuMeter() as cm:
            rate, info = free_pipeline(s, pool_path, tl)
        shutil.rmtree(f"{out}-{r}", ignore_errors=True)
        if rate > best:
            best, tl_best, best_info, cpu_best = rate, tl, info, cm.seconds
    busy = sum(x[2] for x in tl_best)
    task_cpu = sum(x[3] or 0.0 for x in tl_best)
    thread_cpu = sum(x[4] or 0.0 for x in tl_best)
    return {"img_per_s": round(best), "steady_img_per_s": round(_steady(tl_best) or 0),
            "first_shard_s": round(min(x[0] for x in tl_best), 2),
            # when the first encode task began: actor start-up + its first call + transfer
            "startup_s": round(min(x[0] - x[2] for x in tl_best), 2), **best_info,
            "encode_task_s_summed": round(busy, 2),
            "encode_task_cpu_ms_per_1k_images": round(1e6 * task_cpu / n, 1),
            # of which the task's own thread (the rest: Ray's worker threads meanwhile)
            "encode_task_thread_cpu_ms_per_1k_images": round(1e6 * thread_cpu / n, 1),
            "encode_busy": round(busy / (best_info["seconds"] * cores), 3),
            "cpu_ms_per_1k_images": {k: round(1e6 * v / n, 1) for k, v in cpu_best.items()}}


def free_generator_probe(work: Path, n: int, shard: int, reps: int = 2, light: bool = False) -> dict:
    """The free-generator probe (module comment above): pipeline (split layout, one stand-in actor,
    exactly-once commit, manifest), the Ray Data peer and the all-core ceiling, same images and N;
    the pipeline at 10xN (its start-up is fixed); the pipeline's memory at N and 10xN; the pipeline
    again with Ray's CPUs = cores. ``light`` (the quick run): the first three and memory only.
    Leaves Ray shut down."""
    import ray

    from pipeline.plan import sample_actor_bundle

    cores = os.cpu_count() or 1
    spec = bench_spec(work / "free", n, shard, False, mode="split", num_actors=1)
    pool_path, what = free_pool(work / "free-pool", spec, make_checkpoint(spec, work / "free-ckpt"))
    emit(probe="free_setup", images=what, pool=FREE_POOL, n=n, shard_size=shard, cores=cores,
         load_avg=load_avg(), png=_encoder_info())
    if ray.is_initialized():
        ray.shutdown()  # the ceiling runs without Ray, on an idle machine
    ceiling, cinfo = free_ceiling(spec, pool_path, work / "free-ceiling")
    emit(probe="free_ceiling_allcores", img_per_s=round(ceiling), **cinfo,
         what="process pool on every core: build_table (pipeline encoder) + parquet_bytes + file write")
    over = commit_overhead(spec, pool_path, work / "free-commit")
    emit(probe="free_commit_overhead", **over)
    emit(probe="free_import_cpu_s", what="CPU seconds of a fresh interpreter's import (each Ray worker pays "
         "it once: encode tasks deserialize pipeline.sample.fanout; torch only where a generator runs)",
         **{m: _import_cpu(m) for m in ("ray", "torch", "pipeline.sample.fanout",
                                        "pipeline.publish.partition, pipeline.publish.schema")})

    # The stand-in actor needs no core, but with sampling on the CPU sample_shards reserves one
    # (num_cpus=1) for every sampling actor: with Ray's CPUs = cores, that is one core of the
    # encode tasks' (of 2 here). Measured both ways; the ratios use the cluster with one logical
    # CPU per actor on top. Then as on a GPU machine: Ray's CPUs = cores plus one logical GPU and
    # sample.use_gpu, so the split layout's actor reserves a GPU and no CPU (pipeline.plan); the
    # stand-in never touches the GPU it is given.
    gspec = spec.model_copy(update={"sample": spec.sample.model_copy(update={"use_gpu": True})})
    runs = (("cores+1", cores + 1, None, spec),)
    if not light:
        runs += (("cores", cores, None, spec), ("cores, gpu actor", cores, 1, gspec))
    results: dict[str, dict] = {}
    for label, cpus, gpus, spec_l in runs:
        _ray_init(cpus, gpus)
        results[label] = _free_best_of(spec_l, pool_path, reps, work / f"free-out-{cpus}-{gpus}", cores)
        emit(probe="free_pipeline", ray_cpus=cpus, **({"ray_gpus": gpus} if gpus else {}),
             actor_bundle=sample_actor_bundle(spec_l), **results[label])
        if label == "cores+1":
            peer, peer_cpu = 0.0, None
            for _ in range(reps):
                with CpuMeter() as cm:
                    rate = free_peer(pool_path, n, work, spec.sample.batch_size)
                if rate > peer:
                    peer, peer_cpu = rate, {k: round(1e6 * v / n, 1) for k, v in cm.seconds.items()}
            emit(probe="free_raydata_peer", img_per_s=round(peer), ray_cpus=cpus, encoder="Pillow (the peer's)",
                 cpu_ms_per_1k_images=peer_cpu)
            if not light:  # the start-up is fixed: at 10xN (the memory probe's N) it weighs a tenth as much
                big = 10 * n
                s10 = bench_spec(work / "free-10n", big, shard, False, mode="split", num_actors=1)
                results["10n"] = _free_best_of(s10, pool_path, reps, work / "free-out-10n", cores)
                emit(probe="free_pipeline_10n", n=big, ray_cpus=cpus, **results["10n"],
                     vs_ceiling=round(results["10n"]["img_per_s"] / ceiling, 3))
            # memory at N and 10xN, same shard size (so the same in-flight bound)
            mem: dict = {}
            for k in (n, 10 * n):
                s = bench_spec(work / f"free-mem{k}", k, shard, False, mode="split", num_actors=1)
                with PeakMemory(store=True) as m:
                    rate_k, _ = free_pipeline(s, pool_path)
                mem[k] = {"img_per_s": round(rate_k), "uss_sum_mb": round(m.peak / 2**20, 1),
                          "driver_rss_mb": round(m.driver_peak / 2**20, 1),
                          "largest_actor_uss_mb": round(m.actor_peak / 2**20, 1),
                          "object_store_mb": round(m.store_peak / 2**20, 1) if m.store else None}
                shutil.rmtree(work / f"free-mem{k}", ignore_errors=True)
            emit(probe="free_pipeline_memory", **{f"n={k}": v for k, v in mem.items()},
                 uss_ratio_10x=round(mem[10 * n]["uss_sum_mb"] / mem[n]["uss_sum_mb"], 2),
                 driver_rss_ratio_10x=round(mem[10 * n]["driver_rss_mb"] / mem[n]["driver_rss_mb"], 2))
    ray.shutdown()
    ceil_cpu = cinfo["cpu_ms_per_1k_images"]
    if not light:
        # the ceiling again, after: on a shared machine the neighbours' load drifts; the ratios use
        # the better of the two (the harder bar) and the lower CPU cost per image
        ceiling2, cinfo2 = free_ceiling(spec, pool_path, work / "free-ceiling")
        emit(probe="free_ceiling_allcores_after", img_per_s=round(ceiling2), **cinfo2)
        ceiling = max(ceiling, ceiling2)
        ceil_cpu = min(ceil_cpu, cinfo2["cpu_ms_per_1k_images"])
    main_, n10, eq, ga = results["cores+1"], results.get("10n"), results.get("cores"), results.get("cores, gpu actor")

    def cpu_eff(d: dict | None) -> float | None:
        return round(ceil_cpu / sum(d.values()), 3) if d else None

    def vs(r: dict | None, key: str = "img_per_s") -> float | None:
        return round(r[key] / ceiling, 3) if r else None

    summary = emit(probe="free_summary", pipeline_vs_ceiling=vs(main_),
                   pipeline_steady_vs_ceiling=vs(main_, "steady_img_per_s"),
                   pipeline_vs_peer=round(main_["img_per_s"] / peer, 2),
                   pipeline_10n_vs_ceiling=vs(n10),
                   pipeline_10n_steady_vs_ceiling=vs(n10, "steady_img_per_s"),
                   pipeline_ray_cpus_eq_cores_vs_ceiling=vs(eq),
                   pipeline_ray_cpus_eq_cores_steady_vs_ceiling=vs(eq, "steady_img_per_s"),
                   # Ray's CPUs = cores, the actor on a logical GPU reserving no CPU (as on a GPU machine)
                   pipeline_gpu_actor_no_cpu_vs_ceiling=vs(ga),
                   pipeline_gpu_actor_no_cpu_steady_vs_ceiling=vs(ga, "steady_img_per_s"),
                   # CPU seconds per image: the ceiling's over the pipeline's (driver + workers + Ray daemons)
                   pipeline_cpu_efficiency_vs_ceiling=cpu_eff(main_["cpu_ms_per_1k_images"]),
                   # inside the encode tasks only (start-up, imports and Ray's machinery out)
                   encode_task_cpu_efficiency_vs_ceiling=cpu_eff(
                       {"tasks": main_["encode_task_cpu_ms_per_1k_images"]}),
                   # the same, thread for thread (the ceiling's task thread against the encode
                   # task's), and at 10xN: what the encode code itself costs on each side, Ray's
                   # worker threads out
                   encode_task_thread_cpu_vs_ceiling_thread=_ratio(
                       cinfo["task_cpu_ms_per_1k_images"]["thread"], main_["encode_task_thread_cpu_ms_per_1k_images"]),
                   encode_task_10n_thread_cpu_vs_ceiling_thread=_ratio(
                       cinfo["task_cpu_ms_per_1k_images"]["thread"],
                       n10["encode_task_thread_cpu_ms_per_1k_images"] if n10 else None),
                   pipeline_10n_cpu_efficiency_vs_ceiling=cpu_eff(n10["cpu_ms_per_1k_images"] if n10 else None),
                   peer_cpu_efficiency_vs_ceiling=cpu_eff(peer_cpu),
                   ceiling_img_per_s=round(ceiling), ceiling_cpu_ms_per_1k_images=ceil_cpu,
                   targets={"pipeline_vs_ceiling": 0.8, "pipeline_vs_peer": 1.5},
                   load_avg=load_avg())
    return summary


def _encoder_info() -> dict | None:
    try:
        from pipeline.publish.schema import encoder_info

        return encoder_info()
    except ImportError:
        return None


def train_probes(spec: JobSpec, ckpt: str, device: str, work: Path, quick: bool, train_n: int | None = None,
                 jobs: tuple[str, ...] = ("long", "demo")) -> None:
    """The Ray Train overhead probes (``jobs``): a job with long epochs (``train_n`` images of the
    bench model, one worker, large batches) and the shipped digits demo, each as the whole call."""
    cuda = device == "cuda"
    train_n = train_n or (131_072 if cuda else (1_024 if quick else 2_048))
    floor_reps = 1 if quick or cuda else 2  # GPU: sampling.py is one step of gpu.sh's short window
    if "long" in jobs:
        train_overhead(overhead_spec(work, training_set(spec, ckpt, device, train_n, work / "train-data"), cuda,
                                 epochs=2 if quick else (6 if cuda else 4)), "long epochs", floor_reps)
    if "demo" not in jobs:
        return
    # on GPUs one worker per GPU at most: the shipped 2 workers would wait for a second GPU forever
    demo_train = {"use_gpu": cuda, **({"num_workers": min(2, torch.cuda.device_count())} if cuda else {})}
    demo = load_spec(ROOT / "jobs/digits-dcgan.yaml", {"storage": str(work / "demo-runs"),
                                                      "gate": {"measure": False}, "train": demo_train})
    if quick:
        demo = demo.model_copy(update={"train": demo.train.model_copy(update={"epochs": 4, "checkpoint_every": 2})})
    train_overhead(demo, "digits demo (jobs/digits-dcgan.yaml)", floor_reps, pairs=1 if quick or cuda else 3)


def train_main(args: argparse.Namespace) -> None:
    """``--train-overhead``: only the two Ray Train probes, on a Ray of all the machine's CPUs."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    work = Path(tempfile.mkdtemp(prefix="genpipe-bench-train-"))
    emit(probe="setup", device=device_label(cuda),
         cpus=os.cpu_count(), torch=torch.__version__, quick=args.quick, train_n=args.train_n, jobs=args.train_jobs,
         date=datetime.now(UTC).isoformat(timespec="seconds"), load_avg=load_avg())
    try:
        spec = bench_spec(work, 1_000, 500, cuda)
        ckpt = make_checkpoint(spec, work / "ckpt")
        _ray_init(None)
        train_probes(spec, ckpt, device, work, args.quick, args.train_n, tuple(args.train_jobs.split(",")))
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    emit(probe="end", load_avg=load_avg(),
         date=datetime.now(UTC).isoformat(timespec="seconds"))
    if args.quick and not args.out:
        return
    out = Path(args.out or ROOT / "bench" / "results" / f"train-overhead-{'gpu' if cuda else 'cpu'}.json")
    write_records(out)


def free_default_n(cuda: bool) -> int:
    return 1_000_000 if cuda else 100_000


def free_shard_size(n: int) -> int:
    """About four shards per core at N (forty at 10xN), so the last round leaves few cores idle."""
    return max(500, min(50_000, n // (4 * (os.cpu_count() or 1))))


def free_main(args: argparse.Namespace) -> None:
    cuda = torch.cuda.is_available()
    n = args.free_n or (6_000 if args.quick else free_default_n(cuda))
    work = Path(tempfile.mkdtemp(prefix="genpipe-bench-free-"))
    emit(probe="setup", device=device_label(cuda),
         cpus=os.cpu_count(), n=n, torch=torch.__version__, quick=args.quick,
         date=datetime.now(UTC).isoformat(timespec="seconds"), load_avg=load_avg())
    try:
        free_generator_probe(work, n, free_shard_size(n), reps=1 if args.quick else 2, light=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(probe="end", load_avg=load_avg(),
         date=datetime.now(UTC).isoformat(timespec="seconds"))
    if args.quick and not args.out:
        return
    dev = "gpu" if cuda else "cpu"
    out = Path(args.out or ROOT / "bench" / "results" / f"sampling-free-generator-{dev}.json")
    write_records(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N; checks the benchmark still runs")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/sampling-<device>-<date>.json)")
    ap.add_argument("--free-generator", action="store_true",
                    help="only the free-generator probe (pre-made images instead of the model); writes "
                         "bench/results/sampling-free-generator-<device>.json")
    ap.add_argument("--free-n", type=int, default=None, help="N of the free-generator probe (memory: N and 10xN)")
    ap.add_argument("--no-free-generator", action="store_true", help="leave the free-generator probe out")
    ap.add_argument("--train-overhead", action="store_true",
                    help="only Ray Train's overhead, the whole call against a plain loop (long epochs and the "
                         "digits demo); writes bench/results/train-overhead-<device>.json")
    ap.add_argument("--train-jobs", default="long,demo",
                    help="with --train-overhead: which probes, comma-separated (long, demo)")
    ap.add_argument("--train-n", type=int, default=None,
                    help="images of the long-epoch training job (an epoch's length scales with it)")
    args = ap.parse_args()
    if args.free_generator:
        return free_main(args)
    if args.train_overhead:
        return train_main(args)

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    n = args.n or (3_000 if args.quick else (1_000_000 if cuda else 100_000))
    shard = max(500, min(50_000, n // (16 if cuda else 8)))
    work = Path(tempfile.mkdtemp(prefix="genpipe-bench-"))
    emit(probe="setup", device=device_label(cuda),
         cpus=os.cpu_count(), n=n, shard_size=shard, torch=torch.__version__, quick=args.quick,
         date=datetime.now(UTC).isoformat(timespec="seconds"))
    spec = bench_spec(work, n, shard, cuda)
    ckpt = make_checkpoint(spec, work / "ckpt")

    naive_rate = naive(spec, ckpt, n, work, device)
    emit(probe="naive", img_per_s=round(naive_rate), n=n)

    import ray

    t0 = time.perf_counter()
    ray.init(dashboard_host="127.0.0.1", logging_level="ERROR", log_to_driver=False)
    ray_start = time.perf_counter() - t0
    emit(probe="ray_start", seconds=round(ray_start, 2), cpus=ray.cluster_resources().get("CPU"),
         gpus=ray.cluster_resources().get("GPU", 0), ray=ray.__version__)

    rate, info = pipeline_run(spec, ckpt)
    with_start = n / (n / rate + ray_start)
    emit(probe="pipeline_png", img_per_s=round(rate), img_per_s_with_ray_start=round(with_start), **info)
    raw_spec = bench_spec(work / "raw", n, shard, cuda, format="raw")
    raw_rate, raw_info = pipeline_run(raw_spec, ckpt)
    emit(probe="pipeline_raw", img_per_s=round(raw_rate), **raw_info)

    peer_rate = raydata_peer(spec, ckpt, n, work, device)
    emit(probe="raydata_peer", img_per_s=round(peer_rate), n=n)
    # quick: 4,000 images to encode, not 40,000 (made by the model first: minutes on a busy CPU)
    enc_ceiling = encode_ceiling(spec, ckpt, device, **({"n": 4_000} if args.quick else {}))
    emit(probe="encode_ceiling_allcores", img_per_s=round(enc_ceiling), encoder="pipeline (numpy Sub filter + deflate)",
         png=_encoder_info())
    gen_ceiling = generator_ceiling(spec, ckpt, device, min(n, 65_536 if cuda else 8_192))
    emit(probe="generator_ceiling", img_per_s=round(gen_ceiling), device=device)

    # sampling memory at N and 10xN: bounded in-flight shards keep it flat
    mem_n = max(200 if args.quick else 2_000, n // 10)  # quick: it proves the probe runs, on a busy CPU too
    peaks, actors = {}, {}
    for k in (mem_n, 10 * mem_n):
        # same shard size for both, and enough shards at N that every actor is busy (same actor count)
        s = bench_spec(work / f"mem{k}", k, max(250, mem_n // 4), cuda)
        with PeakMemory() as m:
            pipeline_run(s, ckpt)
        peaks[k], actors[k] = m.peak / 2**20, m.actor_peak / 2**20
        shutil.rmtree(work / f"mem{k}", ignore_errors=True)
    emit(probe="sampling_peak_memory_mb", measure="peak sum of USS over the driver and every local Ray process",
         **{f"n={k}": round(v, 1) for k, v in peaks.items()},
         **{f"largest_actor_uss_n={k}": round(v, 1) for k, v in actors.items()},
         ratio_10x=round(peaks[10 * mem_n] / max(peaks[mem_n], 1e-9), 2))

    ddim_rates(device, args.quick)
    train_probes(spec, ckpt, device, work, args.quick, args.train_n)

    emit(probe="summary",
         pipeline_vs_naive=round(rate / naive_rate, 2),
         pipeline_with_ray_start_vs_naive=round(with_start / naive_rate, 2),
         pipeline_vs_peer=round(rate / peer_rate, 2),
         pipeline_vs_encode_ceiling=round(rate / enc_ceiling, 3),
         pipeline_vs_generator_ceiling=round(rate / gen_ceiling, 3),
         peer_vs_encode_ceiling=round(peer_rate / enc_ceiling, 3),
         raw_img_per_s=round(raw_rate))
    ray.shutdown()
    if not args.no_free_generator:
        free_n = args.free_n or (6_000 if args.quick else free_default_n(cuda))
        free_generator_probe(work, free_n, free_shard_size(free_n), reps=1 if args.quick else 2,
                             light=args.quick)
    shutil.rmtree(work, ignore_errors=True)
    if args.quick and not args.out:
        return  # the quick run only proves the benchmark works; results are not recorded
    model = re.search(r"\b[A-Z]\d{2,4}\b", torch.cuda.get_device_name()) if cuda else None  # "NVIDIA H200" -> h200
    dev = (model.group(0).lower() if model else "gpu") if cuda else "cpu"
    out = Path(args.out or ROOT / "bench" / "results" / f"sampling-{dev}-{datetime.now(UTC):%Y-%m-%d}.json")
    write_records(out)


if __name__ == "__main__":
    main()
