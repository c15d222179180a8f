"""Where the digits demo's DDP step time goes on this machine: the GAN step of
``jobs/digits-dcgan.yaml`` (its model, per-worker batch, workers and threads per worker) on
``num_workers`` gloo ranks outside Ray, against the plain loop's step (one process, all the workers'
threads, the global batch), in the same run.

    python bench/ddp_step.py            # writes bench/results/ddp-step-cpu.json
    python bench/ddp_step.py --quick    # 60 steps, one round; records nothing unless --out

The ranks run the same steps four ways, so the step's cost splits into its parts:

- ``none``: no communication at all (each rank trains its own copy): the compute of the split batch;
- ``barrier``: a ``dist.barrier()`` before each optimizer step (two per GAN step), so the ranks
  wait for each other where DDP's all-reduces make them wait, but move no bytes;
- ``allreduce``: one flat gloo ``all_reduce`` of the gradients before each optimizer step (the
  textbook data-parallel step, no DDP);
- ``ddp``: the nets wrapped in DDP exactly as ``pipeline/train/loop.py`` wraps them (``DDP_KWARGS``;
  the generator step's ``no_sync`` on the discriminator comes from the family's own step).

Beside them, on an idle pair of ranks, one gloo ``all_reduce`` of one float (the latency alone) and
of each net's gradient size (the transport alone). Every mode runs ``--rounds`` times, interleaved;
the figure is the median ms per step of rank 0 (the ranks leave the timed loop together: a barrier
closes it). Ray Train's own
costs (start-up, reports, checkpoints) are ``sampling.py --train-overhead``'s; this is the floor
under its ``epochs_ratio``. Nothing in pipeline/ changes here.
"""

from __future__ import annotations

import argparse
import json
import queue as queue_module
import socket
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.records import load_avg, machine, write_json  # noqa: E402
from pipeline.spec import JobSpec, load_spec  # noqa: E402

MODES = ("none", "barrier", "allreduce", "ddp")
WARMUP = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _family(spec: JobSpec):
    """The demo's model on its own data's shape, with the same initial weights on every rank."""
    from pipeline.data import load_dataset
    from pipeline.models import build_model

    data = load_dataset(spec.dataset)
    torch.manual_seed(0)
    fam = build_model(spec.model, data.image_shape, data.num_classes)
    return fam, data


def _batches(data, batch: int, rank: int, world: int, count: int):
    """``count`` batches of ``batch`` real training images, rank ``rank``'s slice of each global batch
    (cycled: the step's cost does not depend on which images)."""
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train_x), generator=g)
    per_global = batch * world
    out = []
    for i in range(count):
        idx = order[torch.arange(i * per_global + rank * batch, i * per_global + (rank + 1) * batch) % len(order)]
        out.append((data.train_x[idx], data.train_y[idx]))
    return out


def _timed_steps(fam, nets, opts, batches, sync=lambda: None) -> float:
    """ms per training step (with its EMA update) over ``batches`` after the first ``WARMUP``;
    ``sync`` (a barrier across ranks) brackets the timed steps."""
    for x, y in batches[:WARMUP]:
        fam.train_step(nets, opts, x, y)
    sync()
    t = time.perf_counter()
    for x, y in batches[WARMUP:]:
        fam.train_step(nets, opts, x, y)
        fam.update_ema()
    sync()
    return (time.perf_counter() - t) / (len(batches) - WARMUP) * 1e3


def _grad_sync_hook(params: list[torch.nn.Parameter], mode: str, world: int):
    """An optimizer step pre-hook: a barrier, or one flat all-reduce of the gradients (mean)."""
    def hook(_opt, _args, _kwargs):
        if mode == "barrier":
            dist.barrier()
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    return hook


def _rank(rank: int, world: int, port: int, mode: str, steps: int, spec_json: dict, queue) -> None:
    torch.set_num_threads(max(1, int(spec_json["train"]["cpus_per_worker"])))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from pipeline.train.loop import DDP_KWARGS

        spec = JobSpec.model_validate(spec_json)
        fam, data = _family(spec)
        nets = dict(fam.nets)
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            nets = {k: DistributedDataParallel(v, **DDP_KWARGS) for k, v in nets.items()}
        opts = fam.make_optimizers(fam.nets, spec.train)
        if mode in ("barrier", "allreduce"):
            for name, opt in opts.items():
                opt.register_step_pre_hook(_grad_sync_hook(list(fam.nets[name].parameters()), mode, world))
        ms = _timed_steps(fam, nets, opts, _batches(data, spec.train.batch_size, rank, world, WARMUP + steps),
                          sync=dist.barrier)
        transport = {}
        if mode == "none":  # the transport alone: each net's gradient size, on the idle pair
            sizes = {name: sum(p.numel() for p in net.parameters()) for name, net in fam.nets.items()}
            for name, floats in {"one_float": 1, **sizes}.items():  # latency alone, then each net's bytes
                flat = torch.zeros(floats)
                for _ in range(10):
                    dist.all_reduce(flat)
                dist.barrier()
                t = time.perf_counter()
                for _ in range(100):
                    dist.all_reduce(flat)
                transport[name] = {"floats": flat.numel(), "ms": round((time.perf_counter() - t) / 100 * 1e3, 3)}
        dist.barrier()  # no rank tears its connections down while a peer still reads from them
        if rank == 0:
            queue.put({"ms_per_step": ms, "transport": transport})
    finally:
        dist.destroy_process_group()


def ranks_step(spec: JobSpec, mode: str, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    world, port = spec.train.num_workers, _free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, mode, steps, spec.model_dump(mode="json"), queue))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 600
        while True:  # a rank that dies before answering ends the wait at once, not at the deadline
            try:
                out = queue.get(timeout=2)
                break
            except queue_module.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"mode {mode}: no answer; ranks' exit codes {[p.exitcode for p in procs]}") \
                        from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"mode {mode}: a rank exited with {[p.exitcode for p in procs]}")
    return out


def plain_step(spec: JobSpec, steps: int) -> float:
    """The plain loop's step: one process, all the workers' threads, the global batch (as
    ``sampling.py``'s ``train_overhead`` baseline)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.train.num_workers * spec.train.cpus_per_worker)))
    try:
        fam, data = _family(spec)
        opts = fam.make_optimizers(fam.nets, spec.train)
        return _timed_steps(fam, fam.nets, opts,
                            _batches(data, spec.train.batch_size * spec.train.num_workers, 0, 1, WARMUP + steps))
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", default=str(ROOT / "jobs/digits-dcgan.yaml"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    steps, rounds = (60, 1) if args.quick else (args.steps, args.rounds)
    spec = load_spec(args.job)
    if spec.train.use_gpu:
        raise SystemExit("ddp_step.py measures gloo ranks on CPU: give it a CPU job")
    rec: dict = {"bench": "ddp_step", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "machine": machine(),
                 "torch": torch.__version__, "job": Path(args.job).name, "workers": spec.train.num_workers,
                 "threads_per_worker": spec.train.cpus_per_worker, "batch_per_worker": spec.train.batch_size,
                 "steps": steps, "rounds": rounds, "timing": "median over rounds of rank 0's ms per step",
                 "runs": {m: [] for m in (*MODES, "plain")}}
    transport = {}
    for _ in range(rounds):
        for mode in MODES:
            r = ranks_step(spec, mode, steps)
            rec["runs"][mode].append(round(r["ms_per_step"], 2))
            transport = r["transport"] or transport
        rec["runs"]["plain"].append(round(plain_step(spec, steps), 2))
        print(json.dumps(rec["runs"]), flush=True)
    med = {m: statistics.median(v) for m, v in rec["runs"].items()}
    rec["ms_per_step"] = {m: round(v, 2) for m, v in med.items()}
    rec["vs_plain"] = {m: round(v / med["plain"], 2) for m, v in med.items() if m != "plain"}
    rec["parts_ms"] = {"compute_split_batch": round(med["none"], 2),
                       "waiting_at_the_sync_points": round(med["barrier"] - med["none"], 2),
                       "moving_the_gradients": round(med["allreduce"] - med["barrier"], 2),
                       "ddp_over_a_flat_all_reduce": round(med["ddp"] - med["allreduce"], 2)}
    rec["all_reduce_idle_pair"] = transport
    rec["machine"]["load_avg_after"] = load_avg()
    print("ddp_step: ms/step " + " ".join(f"{m}={v:.1f}" for m, v in med.items())
          + " | vs plain " + " ".join(f"{m}={v:.2f}x" for m, v in rec["vs_plain"].items()), flush=True)
    if args.quick and not args.out:
        return
    write_json(Path(args.out or ROOT / "bench" / "results" / "ddp-step-cpu.json"), rec)


if __name__ == "__main__":
    main()
