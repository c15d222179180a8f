"""DDPM sampling steps: CAS and images/s for DDIM and DPM-Solver++(2M) at 10, 15, 25 and 50 steps,
and what batching classifier-free guidance's two passes into one forward pass gains.

    python bench/ddpm_steps.py RUN_DIR [--spec jobs/digits-ddpm.yaml] [--out bench/results/ddpm-steps-cpu.json]
                               [--device auto|cpu|cuda] [--seeds N] [--steps 10,15,25,50] [--images 2000]

RUN_DIR is a finished training run of the spec (the folder holding ``done.json``, e.g. from
``bench/quality.py`` or ``genpipe run``). The same checkpoint, the same held-out evaluation seeds
and the same probes for every setting: only the sampler and its step count change. DDIM at 50
steps is the reference; the default is the fewest steps whose CAS is within noise of it
(inside its 95 % interval). Sampling runs on the GPU when one is visible (``--device auto``), the
probes beside it; the real-trained accuracies are measured once and shared by every setting. The
results file is rewritten after every setting (the shipped sampler at its fewest steps and the
reference first, then the CFG speed probe, then the rest), so a run stopped part-way keeps what
matters most.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from pipeline.data import load_dataset
    from pipeline.evaluate import PROBE, RealSplit, cas_report, real_accuracies
    from pipeline.runner import eval_samples
    from pipeline.spec import load_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--spec", default=str(ROOT / "jobs/digits-ddpm.yaml"))
    ap.add_argument("--steps", default="10,15,25,50")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "bench/results/ddpm-steps-cpu.json"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--seeds", type=int, default=None, help="probe seeds per CAS figure (default: the spec's gate.seeds)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    done = json.loads((Path(args.run_dir) / "done.json").read_text())
    base = load_spec(args.spec)
    data = load_dataset(base.dataset)
    real = RealSplit.checked(data.train_u8(), data.train_y.numpy(), data.test_u8(), data.test_y.numpy(),
                             data.num_classes)
    seeds = list(range(args.seeds or base.gate.seeds))
    threads = torch.get_num_threads()

    def one_thread(fn, *a, **kw):  # type: ignore[no-untyped-def]
        """The probes are tiny MLPs: on a CPU one thread each (two threads on a busy 2-core machine
        ran them 8x slower, 200 s against 25 s); sampling keeps every core."""
        torch.set_num_threads(1)
        try:
            return fn(*a, **kw)
        finally:
            torch.set_num_threads(threads)

    real_acc = one_thread(real_accuracies, real, seeds, PROBE, device)  # the same for every setting
    rows: list[dict] = []
    out = {"machine": f"{platform.node()}: {os.cpu_count()} CPUs, "
                      + (torch.cuda.get_device_name() if device == "cuda" else "no GPU"),
           "device": device, "date": datetime.now(UTC).isoformat(timespec="seconds"), "spec": args.spec,
           "checkpoint_digest": done.get("digest"), "images": args.images, "seeds": len(seeds), "rows": rows,
           "complete": False}

    def save() -> None:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    def measure(sampler: str, steps: int, tag: str = "", guidance: float | None = None, score: bool = True) -> dict:
        over = {"sampler": sampler, "sample_steps": steps}
        if guidance is not None:
            over["guidance_scale"] = guidance
        spec = base.model_copy(update={
            "model": base.model.model_copy(update=over),
            "gate": base.gate.model_copy(update={"eval_images": args.images})})
        t = time.perf_counter()
        synth, labels, _ = eval_samples(spec, done["checkpoint"], data.num_classes, device)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t  # load + generate, as the gate's draw does it
        row = {"sampler": sampler + tag, "steps": steps, "img_per_s": round(len(synth) / secs, 1)}
        if score:
            cas = one_thread(cas_report, real, synth, labels, seeds=seeds, recipe=PROBE, device=device,
                             real_acc=real_acc)
            row.update(cas=cas["cas"], cas_ci95=cas["cas_ci95"], cas_ratio=cas["cas_ratio"])
        print(json.dumps(row), flush=True)
        return row

    # a warm-up draw first (CUDA context, kernels, allocator): the first setting is not billed for it
    measure("ddim", 2, " (warm-up)", score=False)
    steps_list = [int(s) for s in args.steps.split(",")]
    settings = [(sampler, k) for sampler in ("ddim", "dpm++2m") for k in steps_list]
    # the shipped sampler (dpm++2m at its fewest steps) and the reference (ddim at the most) first,
    # then the CFG speed probe (no CAS: cheap), then the rest: a run stopped part-way (gpu.sh's time
    # limit) keeps the figures that matter most
    first = [("dpm++2m", min(steps_list)), ("ddim", max(steps_list))]
    for setting in first:
        rows.append(measure(*setting))
        save()
    # CFG as two forward passes (cond, then uncond) instead of one batched pass: the speed it costs
    from pipeline.models.ddpm import DDPM

    batched = DDPM.guided_eps

    def two_passes(self, net, x, t, y, w):  # type: ignore[no-untyped-def]
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if w in (0.0, 1.0):
            return batched(self, net, x, t, y, w)
        eps_c, eps_u = net(x, tt, y).float(), net(x, tt, torch.full_like(y, self.null_label)).float()
        return eps_u + w * (eps_c - eps_u)

    # speed only (quality is not the question here): guidance 2.0, so every step needs both passes
    one = measure("dpm++2m", 10, " (CFG w=2, one batched pass)", guidance=2.0, score=False)
    DDPM.guided_eps = two_passes
    try:
        two = measure("dpm++2m", 10, " (CFG w=2, two passes)", guidance=2.0, score=False)
    finally:
        DDPM.guided_eps = batched
    cfg = {"two_passes_img_per_s": two["img_per_s"], "batched_img_per_s": one["img_per_s"],
           "speedup": round(one["img_per_s"] / two["img_per_s"], 2)}
    out["cfg_batching"] = cfg
    save()
    for setting in settings:
        if setting not in first:
            rows.append(measure(*setting))
            save()
    rows.sort(key=lambda r: (r["sampler"] != "ddim", r["steps"]))  # the file's usual order
    ref_steps = max(r["steps"] for r in rows if r["sampler"] == "ddim")
    ref = next(r for r in rows if r["sampler"] == "ddim" and r["steps"] == ref_steps)
    within = [r for r in rows if ref["cas_ci95"][0] is not None and r["cas"] >= ref["cas_ci95"][0]]
    best = min(within, key=lambda r: (r["steps"], -r["cas"])) if within else None
    out.update({"reference": f"ddim@{ref_steps}", "fewest_steps_within_noise": best, "complete": True})
    save()
    print(f"wrote {args.out}; fewest steps within noise of DDIM {ref_steps}: {best}")


if __name__ == "__main__":
    main()
