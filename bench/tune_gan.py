"""Recipe search for the vanilla conditional GAN (``gan``) on the bundled digits, one process.

    python bench/tune_gan.py [--steps 4400] [--seeds 0 1 2] [--eval-every 500] [--cas 3] \
        [--set lr=5e-4 hidden=128 ...] [--cond full|concat|concat_proj|concat_ac] [--out FILE]

Trains with the family's own ``train_step`` + ``update_ema`` (batch 64, reshuffled epochs, no
augmentation, one CPU thread) and, every ``--eval-every`` steps, samples 2,000 images from the
EMA generator (200 per class, per-image seeded noise, as the sampler draws it) and scores them
with the quick check of issue 12: an RBF SVM (``SVC(gamma='scale')`` on pixels/16) trained only
on the synthetic images and tested on the real test split, divided by the same SVM trained on
the real train split. ``--cas N`` adds the project's CAS (``cas_report``, its default probe,
N probe seeds) at the last step. Training seconds (wall, and this process's CPU time:
the machine may be shared) exclude evaluation. The defaults are the recipe jobs/digits-gan.yaml
ships; the measured results are in bench/results/tune-gan.json.

``--cond`` ablates the discriminator's label paths (the module docstring's claim): ``full`` is
the shipped family (concat + projection + auxiliary classifier); the others zero and freeze the
projection embedding and/or drop the classifier terms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.data import load_dataset  # noqa: E402
from pipeline.models import build_model, to_uint8  # noqa: E402
from pipeline.models.gan import GAN  # noqa: E402
from pipeline.rng import seeded_normal  # noqa: E402
from pipeline.spec import DatasetSpec, GANSpec, TrainSpec  # noqa: E402

DEFAULTS = {"latent_dim": 32, "hidden": 128, "ema_decay": 0.995, "batch_norm": True, "dropout": 0.3,
            "label_smoothing": 0.1, "lr": 1e-3, "beta1": 0.5, "beta2": 0.999}
MODEL_KEYS = {"latent_dim", "hidden", "ema_decay", "batch_norm", "dropout", "label_smoothing"}


def parse_set(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        k, v = item.split("=", 1)
        if k not in DEFAULTS:
            raise SystemExit(f"--set: unknown key {k!r}; known: {sorted(DEFAULTS)}")
        d = DEFAULTS[k]
        out[k] = v.lower() in ("1", "true", "yes") if isinstance(d, bool) else type(d)(v)
    return out


def ablate(fam: GAN, cond: str) -> float:
    """Apply a ``--cond`` ablation; returns the weight of the classifier terms."""
    if cond in ("concat", "concat_ac"):  # no projection term
        emb = fam.nets["discriminator"].embed
        nn.init.zeros_(emb.weight)
        emb.weight.requires_grad_(False)
    return 0.0 if cond in ("concat", "concat_proj") else 1.0


def ablated_step(fam: GAN, opts: dict, x: torch.Tensor, y: torch.Tensor, cls_w: float) -> None:
    """The family's train_step with the classifier terms weighted by ``cls_w`` (ablations only)."""
    g, d = fam.nets["generator"], fam.nets["discriminator"]
    bce, ce = nn.functional.binary_cross_entropy_with_logits, nn.functional.cross_entropy
    b = x.shape[0]
    z = torch.randn(b, fam.spec.latent_dim)
    fake = g(z, y)
    adv_real, cls_real = d(x, y)
    adv_fake, _ = d(fake.detach(), y)
    loss_d = (bce(adv_real, torch.full((b,), 1.0 - fam.spec.label_smoothing)) + bce(adv_fake, torch.zeros(b))
              + cls_w * ce(cls_real, y))
    opts["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    opts["discriminator"].step()
    adv, cls = d(fake, y)
    loss_g = bce(adv, torch.ones(b)) + cls_w * ce(cls, y)
    opts["generator"].zero_grad(set_to_none=True)
    loss_g.backward()
    opts["generator"].step()


def sample_u8(fam: GAN, n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = torch.arange(n) % num_classes
    seeds = torch.arange(n, dtype=torch.int64) + 1_000_003 * (seed + 1)
    with torch.inference_mode():
        x = fam.generate(fam.ema, seeded_normal(seeds, fam.noise_shape()), labels, seeds)
    return to_uint8(x).numpy(), labels.numpy()


def svm_acc(train_u8: np.ndarray, train_y: np.ndarray, test_u8: np.ndarray, test_y: np.ndarray) -> float:
    from sklearn.svm import SVC

    flat = lambda a: a.reshape(len(a), -1).astype(np.float64) / 16.0  # noqa: E731
    return float(SVC(gamma="scale").fit(flat(train_u8), train_y).score(flat(test_u8), test_y))


def cas_probe(syn: np.ndarray, syn_y: np.ndarray, real: dict, n_seeds: int) -> dict:
    """The project's CAS (``cas_report``: its default probe, trained to convergence) over probe
    seeds 0..n_seeds-1, with the 95 % interval of the per-seed ratios; the real side is cached."""
    from pipeline.evaluate.cas import cas_report
    from pipeline.evaluate.classifier import RealSplit

    split = RealSplit.checked(real["train_u8"], real["train_y"], real["test_u8"], real["test_y"],
                              real["data"].num_classes)
    rep = cas_report(split, syn, syn_y, seeds=range(n_seeds), real_acc=real.get("cnn_real"))
    real["cnn_real"] = rep["real_acc_per_seed"]
    return {"cas": round(rep["cas"], 4), "cas_real": round(rep["real_acc"], 4),
            "cas_ratio": round(rep["cas_ratio"], 4),
            "cas_ratio_ci95": [round(v, 4) if v is not None else None for v in rep["cas_ratio_ci95"]]}


def run(seed: int, steps: int, eval_every: int, params: dict, cond: str, real: dict, cas: int,
        batch: int = 64) -> dict:
    data = real["data"]
    torch.manual_seed(seed)
    spec = GANSpec(kind="gan", **{k: v for k, v in params.items() if k in MODEL_KEYS})
    fam = build_model(spec, data.image_shape, data.num_classes)
    cls_w = ablate(fam, cond)
    opts = fam.make_optimizers(fam.nets, TrainSpec(lr=params["lr"], betas=(params["beta1"], params["beta2"])))
    gen = torch.Generator().manual_seed(seed + 1)
    x_all, y_all, n, bs = data.train_x, data.train_y, len(data.train_y), batch
    perm, pos, train_s, cpu_s, rows = torch.randperm(n, generator=gen), 0, 0.0, 0.0, []
    for step in range(1, steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        if pos + bs > n:  # drop the ragged tail, reshuffle (as DistributedSampler with drop_last)
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        for net in fam.nets.values():
            net.train()
        if cond == "full":
            fam.train_step(fam.nets, opts, x_all[idx], y_all[idx], contextlib.nullcontext())
        else:
            ablated_step(fam, opts, x_all[idx], y_all[idx], cls_w)
        fam.update_ema()
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        if step % eval_every == 0 or step == steps:
            syn, syn_y = sample_u8(fam, 2000, data.num_classes, seed)
            acc = svm_acc(syn, syn_y, real["test_u8"], real["test_y"])
            row = {"step": step, "train_s": round(train_s, 1), "cpu_s": round(cpu_s, 1), "svm": round(acc, 4),
                   "svm_ratio": round(acc / real["svm_real"], 4)}
            if cas and step == steps:
                row.update(cas_probe(syn, syn_y, real, cas))
            rows.append(row)
            print(json.dumps({"seed": seed, **row}), flush=True)
    return {"seed": seed, "curve": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64,
                    help="64 = one worker's batch; 128 = the gradient of the 2-worker DDP job (same lr)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cond", choices=["full", "concat", "concat_proj", "concat_ac"], default="full")
    ap.add_argument("--cas", type=int, default=0, metavar="N",
                    help="also the project's CAS at the last step, mean over N probe seeds")
    ap.add_argument("--out", type=Path, help="write the results here as JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    params = {**DEFAULTS, **parse_set(a.set)}
    data = load_dataset(DatasetSpec())
    real = {"data": data, "train_u8": data.train_u8(), "train_y": data.train_y.numpy(),
            "test_u8": data.test_u8(), "test_y": data.test_y.numpy()}
    real["svm_real"] = svm_acc(real["train_u8"], real["train_y"], real["test_u8"], real["test_y"])
    print(json.dumps({"params": params, "cond": a.cond, "steps": a.steps, "svm_real": round(real["svm_real"], 4)}),
          flush=True)
    runs = [run(s, a.steps, a.eval_every, params, a.cond, real, a.cas, a.batch) for s in a.seeds]
    final = [r["curve"][-1] for r in runs]
    summary = {"params": params, "cond": a.cond, "steps": a.steps, "batch": a.batch, "svm_real": round(real["svm_real"], 4),
               "svm_ratio_mean": round(float(np.mean([f["svm_ratio"] for f in final])), 4),
               "train_s_mean": round(float(np.mean([f["train_s"] for f in final])), 1),
               "cpu_s_mean": round(float(np.mean([f["cpu_s"] for f in final])), 1), "runs": runs}
    if a.cas:
        summary["cas_ratio_mean"] = round(float(np.mean([f["cas_ratio"] for f in final])), 4)
        summary["cas_real"] = round(float(np.mean(real["cnn_real"])), 4)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
