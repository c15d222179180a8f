"""CPU generator speed: ``torch.inference_mode`` against ``no_grad``, channels_last weights and
inputs, and ``torch.compile``, for the CPU sampler (``pipeline.sample.generate.generate_u8``) on
freshly built (untrained) models of the shipped specs' sizes, one thread as a sampling actor runs.

    python bench/cpu_generator.py            # writes bench/results/cpu-generator.json
    python bench/cpu_generator.py --quick    # fewer reps, no compile; records nothing unless --out

Per model and variant: images/s (best of ``--reps``, this thread's CPU time and wall time), the
ratio to the shipped ``generate_u8`` measured in the same interleaved passes, and whether the
uint8 output is byte-identical to it (else how many pixels differ and by how much). The variants
run a copy of generate_u8's loop (same fixed blocks, seeded noise and uint8 conversion) with one
thing changed; the copy with nothing changed must equal generate_u8 byte for byte, which checks
the copy. Nothing in pipeline/ changes here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.records import load_avg, machine, write_json  # noqa: E402
from pipeline.models import build_model, to_uint8  # noqa: E402
from pipeline.rng import seeded_normal  # noqa: E402
from pipeline.sample.generate import BLOCK, generate_u8  # noqa: E402
from pipeline.spec import load_spec, parse_spec  # noqa: E402


def models(quick: bool) -> dict[str, dict]:
    """name -> {spec, image_shape, n (images per pass), direct (fam.generate on one small batch)}."""
    dcgan = load_spec(ROOT / "jobs/digits-dcgan.yaml")
    ddpm = load_spec(ROOT / "jobs/digits-ddpm.yaml")
    bench32 = parse_spec({"name": "b", "model": {"kind": "dcgan", "latent_dim": 100, "base_channels": 64}})
    ddpm32 = parse_spec({"name": "b", "model": ddpm.model.model_dump(mode="json")})
    return {
        "dcgan_digits (jobs/digits-dcgan.yaml, 8x8)": {"spec": dcgan, "shape": (1, 8, 8), "n": 2048},
        "dcgan_32 (bench/sampling.py's generator, 32x32)": {"spec": bench32, "shape": (1, 32, 32), "n": 1024},
        "ddpm_digits (jobs/digits-ddpm.yaml, 8x8)": {"spec": ddpm, "shape": (1, 8, 8), "n": 256},
        # a 32x32 UNet runs a few images/s: one small batch through fam.generate, not a 256-row block
        "ddpm_32 (digits-ddpm's model at 32x32, direct)": {"spec": ddpm32, "shape": (1, 32, 32),
                                                           "n": 4 if quick else 8, "direct": True},
    }


def generate_variant(fam, seeds: np.ndarray, labels: np.ndarray, net, *, grad: str = "inference_mode",
                     channels_last: bool = False, direct: bool = False) -> np.ndarray:
    """generate_u8's CPU loop (fixed ``BLOCK['cpu']`` rows, padded tail, seeded noise, to_uint8) with
    ``net`` in place of fam.ema and the autograd mode / memory format chosen here."""
    ctx = torch.inference_mode() if grad == "inference_mode" else torch.no_grad()
    with ctx:
        n = len(seeds)
        s = torch.from_numpy(np.asarray(seeds, dtype=np.int64))
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        block = n if direct else BLOCK["cpu"]
        pad = -n % block
        if pad:
            s = torch.cat([s, s[:1].expand(pad)])
            y = torch.cat([y, y[:1].expand(pad)])
        z = seeded_normal(s, fam.noise_shape())
        if channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        chunks = [to_uint8(fam.generate(net, z[b:b + block], y[b:b + block], s[b:b + block]))
                  for b in range(0, len(s), block)]
        return np.ascontiguousarray(torch.cat(chunks)[:n].cpu().numpy())  # (N, H, W, C) as generate_u8's


def timed(f: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    t, c = time.perf_counter(), time.thread_time()
    out = f()
    return time.thread_time() - c, time.perf_counter() - t, out


def bench_model(name: str, m: dict, reps: int, compile_: bool) -> dict:
    torch.manual_seed(0)
    spec = m["spec"]
    fam = build_model(spec.model, m["shape"], 10)
    net = fam.ema.eval()
    n = m["n"]
    direct = bool(m.get("direct"))
    seeds = np.arange(10_000, 10_000 + n, dtype=np.int64)
    labels = seeds % 10
    import copy

    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    variants: dict[str, Callable[[], np.ndarray]] = {
        "shipped generate_u8 (inference_mode)": (
            (lambda: generate_variant(fam, seeds, labels, net, direct=True)) if direct else
            (lambda: generate_u8(fam, seeds, labels, batch_size=1024, bf16=False))),
        "copy, inference_mode (checks the copy)": lambda: generate_variant(fam, seeds, labels, net, direct=direct),
        "no_grad": lambda: generate_variant(fam, seeds, labels, net, grad="no_grad", direct=direct),
        "channels_last": lambda: generate_variant(fam, seeds, labels, net_cl, channels_last=True, direct=direct),
    }
    compile_s: dict[str, float] = {}
    if compile_:
        for label, base, cl in (("torch.compile", net, False), ("torch.compile + channels_last", net_cl, True)):
            t = time.perf_counter()
            try:
                cnet = torch.compile(base)
                generate_variant(fam, seeds[:1] if direct else seeds[:BLOCK["cpu"]], labels[:1] if direct else
                                 labels[:BLOCK["cpu"]], cnet, channels_last=cl, direct=direct)  # compile + warm
                if direct:  # the direct batch has its own shape: compile for it too
                    generate_variant(fam, seeds, labels, cnet, channels_last=cl, direct=True)
            except Exception as e:  # no compiler, unsupported op: say so, keep the other figures
                compile_s[label] = float("nan")
                variants[label] = None  # type: ignore[assignment]
                print(f"{name}: {label} failed: {type(e).__name__}: {e}"[:400], flush=True)
                continue
            compile_s[label] = time.perf_counter() - t
            variants[label] = (lambda cnet=cnet, cl=cl: generate_variant(fam, seeds, labels, cnet, channels_last=cl,
                                                                         direct=direct))
    for f in variants.values():  # warm-up (allocator, first-call paths)
        if f is not None:
            f()
    best_cpu = {k: float("inf") for k in variants}
    best_wall = {k: float("inf") for k in variants}
    outs: dict[str, np.ndarray] = {}
    for _ in range(reps):
        for k, f in variants.items():
            if f is None:
                continue
            c, w, out = timed(f)
            best_cpu[k], best_wall[k] = min(best_cpu[k], c), min(best_wall[k], w)
            outs[k] = out
    base_k = "shipped generate_u8 (inference_mode)"
    ref = outs[base_k]
    res = {}
    for k in variants:
        if variants[k] is None:
            res[k] = {"failed": True}
            continue
        o = outs[k]
        diff = o.astype(np.int16) - ref.astype(np.int16)
        res[k] = {"img_per_s_cpu": round(n / best_cpu[k], 2), "img_per_s_wall": round(n / best_wall[k], 2),
                  "speed_vs_shipped_cpu": round(best_cpu[base_k] / best_cpu[k], 3),
                  "speed_vs_shipped_wall": round(best_wall[base_k] / best_wall[k], 3),
                  "bytes_identical": bool(o.shape == ref.shape and np.array_equal(o, ref)),
                  "pixels_differing": int(np.count_nonzero(diff)), "max_abs_diff": int(np.abs(diff).max())}
        if k in compile_s:
            res[k]["compile_and_warmup_s"] = round(compile_s[k], 1)
    return {"images_per_pass": n, "through": "fam.generate on one batch" if direct else "generate_u8 blocks",
            "params": sum(p.numel() for p in net.parameters()), "model": spec.model.model_dump(mode="json"),
            "image_shape": list(m["shape"]), "variants": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only", default=None, help="run only the models whose name contains this")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a CPU sampling actor (pipeline.sample.fanout.SamplerActor)
    reps = 2 if args.quick else args.reps
    rec: dict = {"bench": "cpu_generator", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "machine": machine(),
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "reps": reps,
                 "timing": "best of reps, interleaved; cpu = this thread's CPU time, wall = wall clock",
                 "weights": "freshly built, untrained (torch.manual_seed(0)): speed, not quality", "models": {}}
    for name, m in models(args.quick).items():
        if args.only and args.only not in name:
            continue
        r = bench_model(name, m, reps, compile_=not (args.quick or args.no_compile))
        rec["models"][name] = r
        print(name, json.dumps({k: (v.get("speed_vs_shipped_cpu"), v.get("bytes_identical"))
                                for k, v in r["variants"].items()}), flush=True)
    rec["machine"]["load_avg_after"] = load_avg()
    if args.quick and not args.out:
        return
    write_json(Path(args.out or ROOT / "bench" / "results" / "cpu-generator.json"), rec)


if __name__ == "__main__":
    main()
