"""Quality of each shipped digits job, end to end, and the uplift experiments behind the defaults.

    python bench/quality.py [--families dcgan,vae,ddpm,gan] [--fractions 0.1,0.25] [--merge] [--table]

For each family it runs the shipped spec (``jobs/digits-<family>.yaml``) as a user would
(``run_job`` on an embedded local Ray, outputs in a temporary folder) and records, from the
job's own evaluation on held-out real data the generator never saw:

* CAS (mean over the probe seeds, 95 % interval) beside the real-trained accuracy, and their ratio;
* an independent check: an RBF SVM trained only on the synthetic evaluation images and tested
  on the held-out split, against the same SVM trained on the generator's real training images;
* FID with its real floor; memorization; the three uplifts (distill, same_data, full);
* train and sample seconds, and the whole run's wall time.

Then, per family and per ``--fractions`` value, a run whose generator is trained on that
stratified fraction of the train split (``dataset.train_fraction``): ``uplift_same_data`` there is
the low-data user's question, with memorization measured against the subset.
``--fraction-set FAMILY:KEY=VALUE`` adds, per fraction, a run of that family with the field changed
(as ``genpipe run --set`` does): a recipe for little data measured beside the shipped one, its row
named ``FAMILY KEY=VALUE``. Last, for the best family, the synthetic share sweep
(``gate.synthetic_ratio``) behind the default mix.

With ``--filter`` every run above is repeated with ``sample.filter`` on (the same checkpoint: the
filter is a sampling setting), and ``filter`` records CAS, uplifts and memorization with the filter
and without it side by side, with the per-class acceptance rates from the manifest.
Everything lands in bench/results/quality-digits.json (and is printed as it comes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.runner import JobFailed, run_job  # noqa: E402
from pipeline.spec import load_spec  # noqa: E402

OUT = ROOT / "bench" / "results" / "quality-digits.json"
KEYS = ["fid", "fid_real_floor", "cas", "cas_ci95", "cas_per_seed", "real_acc", "real_acc_ci95", "cas_ratio",
        "cas_ratio_ci95", "memorization", "generator_train_images", "num_synthetic", "synthetic_ratio",
        "feature_net_test_acc", "probe", "probe_seeds", "eval_seconds"]
UPLIFT_KEYS = ["", "_ci95", "_per_seed", "_base_acc", "_aug_acc", "_num_real", "_num_synthetic"]
RATIOS = [0.25, 0.5, 1.0, 2.0, None]  # synthetic images per real image in the uplift mix (None: all)


def svm_check(spec: Any, ckpt_url: str) -> dict[str, Any]:
    """RBF SVM on pixels (scikit-learn, an implementation independent of ours): trained on the
    job's evaluation samples vs on the generator's real training images, both tested on the
    held-out split."""
    import numpy as np
    from sklearn.svm import SVC

    from pipeline.data import load_dataset
    from pipeline.runner import eval_samples

    data = load_dataset(spec.dataset)
    synth, labels, _ = eval_samples(spec, ckpt_url, data.num_classes, "cpu")
    flat = lambda a: a.reshape(len(a), -1).astype("float64") / 255.0  # noqa: E731
    test_x, test_y = flat(data.test_u8()), data.test_y.numpy()
    train_x, train_y = flat(data.train_u8()), data.train_y.numpy()
    real = SVC(gamma="scale").fit(train_x, train_y).score(test_x, test_y)
    syn = SVC(gamma="scale").fit(flat(synth), labels).score(test_x, test_y)
    # the generator's own real training images with all the samples vs without them: uplift_same_data
    # (uplift_full when the generator saw the whole split) as an SVM, deterministic, sees it
    both = SVC(gamma="scale").fit(np.concatenate([train_x, flat(synth)]), np.concatenate([train_y, labels]))
    aug = both.score(test_x, test_y)
    return {"svm_synthetic_acc": float(syn), "svm_real_acc": float(real), "svm_ratio": float(syn / real),
            "svm_aug_acc": float(aug), "svm_uplift_same_data": float(aug - real)}


def mix_sweep(spec: Any, ckpt_url: str, seeds: int,
              protocols: tuple[str, ...] = ("uplift_distill", "uplift_full")) -> list[dict[str, Any]]:
    """The ``protocols`` uplifts for each synthetic share in RATIOS (same samples, same probes).

    On a ``train_fraction`` run the generator's training images are the subset, so
    ``uplift_same_data`` there is the share sweep a user with little data needs."""
    import numpy as np

    from pipeline.data import load_dataset
    from pipeline.evaluate import PROBE, uplift
    from pipeline.runner import eval_samples

    data = load_dataset(spec.dataset)
    synth, labels, _ = eval_samples(spec, ckpt_url, data.num_classes, "cpu")
    tx, ty, ex, ey = data.train_u8(), data.train_y.numpy(), data.test_u8(), data.test_y.numpy()
    seed_list = [spec.train.seed + i for i in range(seeds)]
    rows = []
    for r in RATIOS:
        row: dict[str, Any] = {"synthetic_ratio": r}
        for name in protocols:
            frac = spec.gate.distill_fraction if name == "uplift_distill" else None
            up = uplift(tx, ty, synth, labels, ex, ey, data.num_classes, seeds=seed_list, fraction=frac,
                        synthetic_ratio=r, recipe=PROBE)
            row.update({name: up["mean"], f"{name}_ci95": up["ci95"], f"{name}_num_synthetic": up["num_synthetic"]})
        rows.append(row)
        print(json.dumps({"mix": row}), flush=True)
    _ = np  # numpy is imported for the samples' arrays
    return rows


FILTER = {"min_confidence": 0.9, "max_attempts": 4}
FILTER_KEYS = ["cas", "cas_ci95", "cas_ratio", "cas_ratio_ci95", "fid", "memorization", "uplift_distill",
               "uplift_distill_ci95", "uplift_same_data", "uplift_same_data_ci95", "uplift_full",
               "uplift_full_ci95", "sample_seconds", "wall_seconds"]


def filtered_pair(path: Path, work: Path, over: dict[str, Any], tag: str, plain: dict[str, Any]) -> dict[str, Any]:
    """The run ``plain`` again with ``sample.filter`` on (training reused): both sides' figures."""
    from pipeline.publish.partition import Partition
    from pipeline.spec import deep_merge

    row, spec, _, _ = run_one(path, work, deep_merge(over, {"sample": {"filter": FILTER, "output": str(work / "data-filter")}}),
                           tag + "+filter")
    man = Partition.of(spec.sample.output, spec.name, "2026-01-01").read_manifest()
    f = (man.get("filter") if man is not None else None) or {}
    return {"filter": FILTER, "off": {k: plain.get(k) for k in FILTER_KEYS},
            "on": {k: row.get(k) for k in FILTER_KEYS}, "status": row["status"],
            "acceptance_rate": f.get("acceptance_rate"), "acceptance_rate_overall": f.get("acceptance_rate_overall"),
            "forced": f.get("forced"), "judge_test_acc": (f.get("judge") or {}).get("test_acc")}


def run_one(path: Path, work: Path, over: dict[str, Any], tag: str) -> tuple[dict[str, Any], Any, Any, bool]:
    """(row, spec, checkpoint URL or None, whether the run was found already published in ``work``)."""
    base = {"storage": str(work / "runs"), "sample": {"output": str(work / "data")}}
    from pipeline.spec import deep_merge

    spec = load_spec(path, deep_merge(base, over))
    t = time.perf_counter()
    ckpt = None
    try:
        out = run_job(spec, "2026-01-01")
        metrics, status, ckpt = out.metrics or {}, "published", out.checkpoint
        reused = out.status == "already-published"
        extra = {"train_seconds": round(out.train_seconds, 1), "sample_seconds": round(out.sample_seconds, 1),
                 "sample_img_per_s": round(out.images_per_s), "rows": out.rows}
    except JobFailed as exc:
        metrics, status, extra, reused = exc.metrics or {}, f"gate failed: {exc}", {}, False
    row = {"run": tag, "spec": str(path.relative_to(ROOT)), "status": status, "epochs": spec.train.epochs,
           "workers": spec.train.num_workers, "train_fraction": spec.dataset.train_fraction,
           "spec_hash": spec.spec_hash(),
           "wall_seconds": round(time.perf_counter() - t, 1), **extra, **{k: metrics.get(k) for k in KEYS}}
    for name in ("uplift_distill", "uplift_same_data", "uplift_full"):
        row.update({name + s: metrics.get(name + s) for s in UPLIFT_KEYS})
    return row, spec, ckpt, reused


def table(res: dict[str, Any]) -> str:
    """The README's quality table, made from the results file (``--table``)."""
    def pct(v: Any) -> str:
        return "-" if v is None else f"{v * 100:+.1f}"

    def ci(v: Any) -> str:
        return "" if not v or None in v else f" [{v[0] * 100:+.1f}, {v[1] * 100:+.1f}]"

    def share(r: dict[str, Any]) -> str:  # gate.synthetic_ratio of that run: rows of one table may differ
        return "all" if r.get("synthetic_ratio") is None else f"{r['synthetic_ratio']:g}:1"

    lines = ["| family | CAS / real (95% CI) | SVM synth / real | FID (floor) | uplift_distill, points | "
             "uplift_same_data = full, points | synthetic per real | memorization | train s | run s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for fam, r in res["models"].items():
        if r.get("cas_ratio") is None:
            lines.append(f"| {fam} | {r['status']} ||||||||")
            continue
        rc = r.get("cas_ratio_ci95") or [None, None]
        cas = f"{r['cas']:.3f} / {r['real_acc']:.3f} = **{r['cas_ratio']:.3f}**" + (
            f" [{rc[0]:.3f}, {rc[1]:.3f}]" if None not in rc else "")
        svm = f"{r['svm_synthetic_acc']:.3f} / {r['svm_real_acc']:.3f} = {r['svm_ratio']:.3f}" \
            if r.get("svm_ratio") else "-"
        lines.append(f"| {fam} | {cas} | {svm} | {r['fid']:.3f} ({r['fid_real_floor']:.3f}) | "
                     f"{pct(r['uplift_distill'])}{ci(r['uplift_distill_ci95'])} | "
                     f"{pct(r['uplift_full'])}{ci(r['uplift_full_ci95'])} | {share(r)} | {r['memorization']:.3f} | "
                     f"{r.get('train_seconds', '-')} | {r['wall_seconds']} |")
    if res.get("train_fraction"):
        lines += ["", "| generator and classifier both on | family | real only | + synthetic | "
                  "uplift_same_data, points (95% CI) | synthetic per real | SVM real only -> + synthetic | "
                  "memorization vs the subset |",
                  "|---|---|---|---|---|---|---|---|"]
        for frac, rows in res["train_fraction"].items():
            for fam, r in rows.items():
                if r.get("uplift_same_data") is None:
                    lines.append(f"| {float(frac):.0%} | {fam} | {r['status']} ||||||")
                    continue
                svm = f"{r['svm_real_acc']:.3f} -> {r['svm_aug_acc']:.3f}" if r.get("svm_aug_acc") is not None else "-"
                lines.append(f"| {float(frac):.0%} ({r['generator_train_images']} images) | {fam} | "
                             f"{r['uplift_same_data_base_acc']:.3f} | {r['uplift_same_data_aug_acc']:.3f} | "
                             f"{pct(r['uplift_same_data'])}{ci(r['uplift_same_data_ci95'])} | {share(r)} | {svm} | "
                             f"{r['memorization']:.3f} |")
    swept = [(frac, name, r["mix"]) for frac, rows in (res.get("train_fraction") or {}).items()
             for name, r in rows.items() if r.get("mix")]
    if swept:
        lines += ["", "uplift_same_data by synthetic share (synthetic images per real image; generator and "
                  "classifier both on the subset)", "",
                  "| subset | family | " + " | ".join("all" if x is None else f"{x:g}:1" for x in RATIOS) + " |",
                  "|---|---|" + "---|" * len(RATIOS)]
        for frac, name, rows in swept:
            by = {r["synthetic_ratio"]: r for r in rows}
            lines.append(f"| {float(frac):.0%} | {name} | " + " | ".join(
                f"{pct(by[x]['uplift_same_data'])}{ci(by[x]['uplift_same_data_ci95'])}" if x in by else "-"
                for x in RATIOS) + " |")
    if res.get("mix"):
        lines += ["", f"Synthetic share sweep ({res['mix']['family']}): synthetic images per real image in "
                  "the classifier's training set", "", "| synthetic_ratio | uplift_distill | uplift_full |",
                  "|---|---|---|"]
        for r in res["mix"]["rows"]:
            lines.append(f"| {r['synthetic_ratio'] if r['synthetic_ratio'] is not None else 'all'} | "
                         f"{pct(r['uplift_distill'])}{ci(r['uplift_distill_ci95'])} | "
                         f"{pct(r['uplift_full'])}{ci(r['uplift_full_ci95'])} |")
    if res.get("filter"):
        lines += ["", "sample.filter (min_confidence {min_confidence}, max_attempts {max_attempts}): the same checkpoint "
                  "sampled without and with it".format(**next(iter(res["filter"].values()))["filter"]), "",
                  "| run | accepted | CAS / real off -> on | FID off -> on | uplift_distill off -> on | "
                  "uplift_same_data off -> on | memorization off -> on |", "|---|---|---|---|---|---|---|"]
        for run, f in res["filter"].items():
            off, on = f["off"], f["on"]
            if on.get("cas_ratio") is None:
                lines.append(f"| {run} | {f['status']} ||||||")
                continue
            acc = f.get("acceptance_rate_overall")
            lines.append(
                f"| {run} | {'-' if acc is None else f'{acc:.0%}'} | {off['cas_ratio']:.3f} -> {on['cas_ratio']:.3f} | "
                f"{off['fid']:.3f} -> {on['fid']:.3f} | {pct(off['uplift_distill'])} -> {pct(on['uplift_distill'])}"
                f"{ci(on['uplift_distill_ci95'])} | {pct(off['uplift_same_data'])}{ci(off['uplift_same_data_ci95'])} -> "
                f"{pct(on['uplift_same_data'])}{ci(on['uplift_same_data_ci95'])} | "
                f"{off['memorization']:.3f} -> {on['memorization']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="dcgan,vae,ddpm,gan")
    ap.add_argument("--fractions", default="0.1,0.25", help="train_fraction runs ('' for none)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="probe seeds behind every CAS and uplift figure (default: the spec's gate.seeds)")
    ap.add_argument("--synthetic-ratio", type=float, default=None,
                    help="gate.synthetic_ratio for every run (default: the spec's, all eval images)")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="train.seed of every run (another generator from the same data; use a fresh --work)")
    ap.add_argument("--fraction-steps", type=int, default=1000,
                    help="optimizer steps of a train_fraction run (few images: stop early, before copying them)")
    ap.add_argument("--fraction-set", action="append", default=[], metavar="FAMILY:KEY=VALUE",
                    help="also run FAMILY's train_fraction runs with KEY=VALUE set (repeat: several keys of one "
                         "variant), e.g. ddpm:model.base_channels=32")
    ap.add_argument("--mix-fractions", action="store_true",
                    help="also sweep the synthetic share of uplift_same_data on every train_fraction run "
                         "(with --merge and the --work of the runs: a row whose spec is found finished there keeps its "
                         "figures and seconds, and gains the sweep)")
    ap.add_argument("--no-mix", action="store_true", help="skip the synthetic-share sweep")
    ap.add_argument("--filter", action="store_true", help="repeat each run with sample.filter on")
    ap.add_argument("--fractions-only", action="store_true",
                    help="only the train_fraction runs (with --merge: add them to an existing --out file)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--work", default=None, help="working folder (a rerun with the same one reuses finished runs)")
    ap.add_argument("--merge", action="store_true", help="update the families run in an existing --out file")
    ap.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="genpipe-quality-"))
    out_path = Path(args.out)
    res: dict[str, Any] = {
        "machine": f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, no GPU",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": __doc__.strip().splitlines()[0], "models": {}, "train_fraction": {}, "mix": None,
        "filter": {}}
    if args.merge and out_path.exists():
        old = json.loads(out_path.read_text())
        res.update({k: old.get(k, res[k]) for k in ("models", "train_fraction", "mix", "filter")})
        res["runs"] = old.get("runs", [old.get("date")]) + [res["date"]]

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1) + "\n")

    families = [f for f in args.families.split(",") if f and (ROOT / f"jobs/digits-{f}.yaml").exists()]
    from pipeline.spec import deep_merge, parse_overrides

    common = {"gate": {**({"seeds": args.seeds} if args.seeds else {}),
                       **({"synthetic_ratio": args.synthetic_ratio} if args.synthetic_ratio else {})},
              **({"train": {"seed": args.train_seed}} if args.train_seed is not None else {})}
    for fam in [] if args.fractions_only else families:
        path = ROOT / f"jobs/digits-{fam}.yaml"
        row, spec, ckpt, _ = run_one(path, work, common, fam)
        if ckpt:
            row.update(svm_check(spec, ckpt))
        res["models"][fam] = row
        print(json.dumps(row), flush=True)
        save()
        if args.filter:
            res["filter"][fam] = filtered_pair(path, work, common, fam, row)
            print(json.dumps({"filter": fam, **res["filter"][fam]}), flush=True)
            save()
    if not (args.no_mix or args.fractions_only) and res["models"]:
        best = max(res["models"].values(), key=lambda r: r.get("cas_ratio") or 0)
        fam = best["run"]
        _, spec, ckpt, _ = run_one(ROOT / f"jobs/digits-{fam}.yaml", work, common, fam)  # finished: reused, not retrained
        if ckpt:
            res["mix"] = {"family": fam, "rows": mix_sweep(spec, ckpt, spec.gate.seeds)}
            save()
    variants: dict[str, list[str]] = {}  # family -> KEY=VALUE items of its little-data variant
    for item in args.fraction_set:
        fam, sep, kv = item.partition(":")
        if not sep or fam not in families:
            ap.error(f"--fraction-set {item!r}: expected FAMILY:KEY=VALUE with FAMILY one of {families}")
        variants.setdefault(fam, []).append(kv)
    variant_over: dict[str, dict[str, Any]] = {}
    for fam, sets in variants.items():  # refused now, not hours into the runs
        try:
            variant_over[fam] = parse_overrides(sets)
            load_spec(ROOT / f"jobs/digits-{fam}.yaml", variant_over[fam])
        except Exception as exc:  # SpecError / BadInput: say which item
            ap.error(f"--fraction-set {fam}: {exc}")
    runs = [(fam, []) for fam in families] + list(variants.items())
    for frac in [float(f) for f in args.fractions.split(",") if f]:
        for fam, sets in runs:
            path = ROOT / f"jobs/digits-{fam}.yaml"
            name = " ".join([fam, *sets])
            probe = load_spec(path, variant_over[fam] if sets else None)  # the variant's own batch and workers
            # keep the optimizer-step budget, not the epoch count: an epoch of a 10 % subset is 1-2 steps
            per_epoch = max(1, round(len(__import__("pipeline.data", fromlist=["x"]).load_dataset(
                probe.dataset.model_copy(update={"train_fraction": frac})).train_x)
                / (probe.train.num_workers * probe.train.batch_size)))
            epochs = max(1, args.fraction_steps // per_epoch)
            job = f"{probe.name}-f{int(frac * 100)}"
            if sets:  # a valid, distinct job name (NAME_RE: [a-z0-9_-], at most 63 characters)
                slug = re.sub(r"[^a-z0-9]+", "-", " ".join(sets).lower()).strip("-")
                digest = hashlib.sha256("\0".join(sets).encode()).hexdigest()[:8]
                job = f"{job}-{slug[:63 - len(job) - 10]}-{digest}".replace("--", "-")
            over = deep_merge(common, {"name": job, "dataset": {"train_fraction": frac},
                                       "train": {"epochs": epochs, "checkpoint_every": max(1, epochs // 4)},
                                       "sample": {"num_images": 2000, "shard_size": 1000}})
            if sets:
                over = deep_merge(over, variant_over[fam])
            tag = f"{name}@{frac:g}"
            row, spec, ckpt, reused = run_one(path, work, over, tag)
            old = res["train_fraction"].get(f"{frac:g}", {}).get(name)
            if old and (reused or row["status"] != "published") and old.get("spec_hash") == row["spec_hash"] \
                    and old.get("status") == row["status"]:
                # the merged file's own run (same spec), found finished in --work (a gate failure is
                # evaluated again, the same figures): keep its figures and seconds
                row = old
            row["overrides"] = sets
            if ckpt:
                row.update(svm_check(spec, ckpt))
                if args.mix_fractions:
                    row["mix"] = mix_sweep(spec, ckpt, spec.gate.seeds, ("uplift_same_data",))
            res["train_fraction"].setdefault(f"{frac:g}", {})[name] = row
            print(json.dumps(row), flush=True)
            save()
            if args.filter:
                res["filter"][tag] = filtered_pair(path, work, over, tag, row)
                print(json.dumps({"filter": tag, **res["filter"][tag]}), flush=True)
                save()
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
