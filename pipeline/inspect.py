"""``genpipe inspect``: a readable summary of any published dataset, plus a grid PNG."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from pipeline.report import decode_images, grid_png


def summarize(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    from pipeline.publish.reader import open_dataset

    ds = open_dataset(url, storage_options)
    table = ds.arrow.to_table(columns=["label", "shard"] + (["date"] if "date" in ds.arrow.schema.names else []))
    counts = pc.value_counts(table.column("label")).to_pylist()
    names = ds.class_names
    per_label = {names[c["values"]] if c["values"] < len(names) else str(c["values"]): c["counts"]
                 for c in sorted(counts, key=lambda c: c["values"])}
    man = ds.manifest  # one partition's; None for several
    return {
        "url": url,
        "rows": table.num_rows,
        "files": len(ds.arrow.files),
        "dates": sorted(set(table.column("date").to_pylist())) if "date" in table.column_names else [],
        "per_label": per_label,
        "metrics": man.metrics if man else None,
        "model": man.model if man else ", ".join(sorted({m.model or "?" for m in ds.manifests.values()})),
        "spec_hash": man.spec_hash if man else None,
        "checkpoint_digest": man.checkpoint_digest if man else None,
    }


def inspect_dataset(url: str, grid_path: str | None = "grid.png", storage_options: dict[str, Any] | None = None,
                    per_class: int = 10) -> str:
    from pipeline.publish.reader import open_dataset

    s = summarize(url, storage_options)
    lines = [f"{s['url']}", f"  rows: {s['rows']}  files: {s['files']}  model: {s['model']}  "
             f"dates: {', '.join(s['dates']) or '-'}"]
    lines.append("  per label: " + ", ".join(f"{k}={v}" for k, v in s["per_label"].items()))
    if s["metrics"]:
        keys = ("fid", "fid_real_floor", "cas", "real_acc", "cas_ratio", "uplift_distill", "uplift_same_data",
                "uplift_full", "memorization")
        lines.append("  metrics: " + ", ".join(f"{k}={s['metrics'][k]:.4g}" for k in keys
                                                if isinstance(s["metrics"].get(k), int | float)))
    if grid_path:
        ds = open_dataset(url, storage_options)
        cols = [c for c in ("image", "label", "height", "width", "channels") if c in ds.arrow.schema.names]
        head = ds.arrow.head(max(per_class * len(ds.class_names) * 3, 200), columns=cols)
        imgs, labs = decode_images(head)
        with open(grid_path, "wb") as f:
            f.write(grid_png(imgs, labs, ds.class_names, per_class))
        lines.append(f"  grid: {grid_path} ({len(np.unique(labs))} classes shown)")
    return "\n".join(lines)
