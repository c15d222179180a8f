"""The run report: per-class sample grids, loss curves, the metrics beside the real
baselines and the spec, in one self-contained ``report.html`` (images embedded).

Artifacts go to the partition's ``_genpipe/logical_date=D/report/`` (outside every reader's data
glob), written through :meth:`pipeline.publish.partition.Partition.write_report` (atomic, never
through a symbolic link).
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from pipeline.publish.card import QUALITY_ROWS
from pipeline.redaction import public_spec
from pipeline.spec import JobSpec

if TYPE_CHECKING:
    from pipeline.publish.manifest import Manifest
    from pipeline.publish.partition import Partition



def grid_png(images: np.ndarray, labels: np.ndarray, class_names: list[str], per_class: int = 10,
             scale: int | None = None) -> bytes:
    """One row per class (first ``per_class`` images of each), upscaled for viewing."""
    from PIL import Image

    h, w, c = images.shape[1:]
    scale = scale or max(1, 48 // max(h, w))
    gap = 2  # grey gutters between cells, so small images read as separate samples
    cell_h, cell_w = h * scale + gap, w * scale + gap
    grid = np.full((len(class_names) * cell_h + gap, per_class * cell_w + gap, c), 96, np.uint8)
    for k in range(len(class_names)):
        for j, img in enumerate(images[labels == k][:per_class]):
            y0, x0 = gap + k * cell_h, gap + j * cell_w
            grid[y0:y0 + h * scale, x0:x0 + w * scale] = img.repeat(scale, 0).repeat(scale, 1)
    im = Image.fromarray(grid[..., 0] if c == 1 else grid)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode_images(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, labels) from a published table (PNG or raw format)."""
    from PIL import Image

    col = table.column("image").to_pylist()
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    if col and isinstance(col[0], dict):
        imgs = [np.asarray(Image.open(io.BytesIO(v["bytes"]))) for v in col]
    else:
        hs, ws, cs = (table.column(k).to_pylist() for k in ("height", "width", "channels"))
        imgs = [np.frombuffer(b, np.uint8).reshape(h, w, c) for b, h, w, c in zip(col, hs, ws, cs, strict=True)]
    arr = np.stack([i if i.ndim == 3 else i[..., None] for i in imgs]) if imgs else np.zeros((0, 1, 1, 1), np.uint8)
    return arr, labels


def read_some(part: Partition, files: list[str], per_class: int, num_classes: int):
    """Enough rows of a published partition to fill a grid (reads shards until every class has enough)."""
    import pyarrow.parquet as pq

    imgs, labs = [], []
    fs = part.fs
    for name in files:
        with fs.open(part.data_file(name), "rb") as f:
            t = pq.read_table(f, columns=[c for c in ("image", "label", "height", "width", "channels")
                                          if c in pq.read_schema(f).names])
        a, b = decode_images(t)
        imgs.append(a)
        labs.append(b)
        counts = np.bincount(np.concatenate(labs), minlength=num_classes)
        if counts.min() >= per_class or len(imgs) >= 8:
            break
    return np.concatenate(imgs), np.concatenate(labs)


def _svg_curves(history: list[dict[str, Any]], width: int = 520, height: int = 220) -> str:
    keys = sorted({k for h in history for k in h if k.startswith("loss")})
    if not history or not keys:
        return "<p>no loss history</p>"
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    vals = np.array([[h.get(k, np.nan) for k in keys] for h in history], dtype=float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    span = (hi - lo) or 1.0
    n = len(history)
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
           f'style="border:1px solid #ccc;background:#fff">']
    for j, k in enumerate(keys):
        pts = " ".join(
            f"{30 + (width - 40) * (i / max(n - 1, 1)):.1f},{height - 20 - (height - 40) * (v - lo) / span:.1f}"
            for i, v in enumerate(vals[:, j]) if np.isfinite(v))
        out.append(f'<polyline fill="none" stroke="{colors[j % 4]}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{40 + 110 * j}" y="14" fill="{colors[j % 4]}" font-size="12">{html.escape(k)}</text>')
    out.append(f'<text x="2" y="{height - 4}" font-size="10">min {lo:.3g}</text>')
    out.append(f'<text x="2" y="28" font-size="10">max {hi:.3g}</text>')
    out.append(f'<text x="{width - 90}" y="{height - 4}" font-size="10">epoch 1..{n}</text></svg>')
    return "".join(out)


#: (metric, its real-data baseline, meaning): one table for the report and the dataset card
ROWS = QUALITY_ROWS


def render_html(spec: JobSpec, manifest: Manifest, history: list[dict[str, Any]],
                metrics: dict[str, Any] | None, grid: bytes) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    def ci(v: Any) -> str:  # " [lo, hi]": the 95 % interval over probe seeds
        return f" [{v[0]:.4g}, {v[1]:.4g}]" if isinstance(v, list) and len(v) == 2 and None not in v else ""

    m = metrics or {}
    rows = "".join(
        f"<tr><td>{k}</td><td>{fmt(m[k])}{ci(m.get(k + '_ci95'))}</td><td>{fmt(m.get(b, '')) if b else ''}</td>"
        f"<td>{html.escape(d)}</td></tr>"
        for k, b, d in ROWS if k in m)
    gate = m.get("gate_failures")
    verdict = "not measured" if not m else ("passed" if not gate else "FAILED: " + "; ".join(gate))
    counts = manifest.label_counts or {}
    spec_yaml = yaml.safe_dump(public_spec(spec), sort_keys=False)  # no credential, wherever it sat
    b64 = base64.b64encode(grid).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>genpipe report: {html.escape(spec.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>{html.escape(spec.name)} &mdash; {html.escape(manifest.date)}</h1>
<p>{manifest.num_rows} images in {manifest.num_shards} shards, model {html.escape(spec.model.kind)},
checkpoint <code>{html.escape(str(manifest.checkpoint_digest or ''))[:16]}</code>, spec hash
<code>{html.escape(manifest.spec_hash[:16])}</code>. Quality gate: <b>{html.escape(verdict)}</b></p>
<h2>Samples (one row per class)</h2><img alt="sample grid" src="data:image/png;base64,{b64}" style="image-rendering:pixelated">
<h2>Quality</h2><table><tr><th>metric</th><th>generated</th><th>real baseline</th><th>meaning</th></tr>{rows}</table>
<h2>Training losses</h2>{_svg_curves(history)}
<h2>Rows per label</h2><p>{html.escape(json.dumps(counts))}</p>
<h2>Spec</h2><pre>{html.escape(spec_yaml)}</pre></body></html>"""


def write_run_artifacts(spec: JobSpec, part: Partition, manifest: Manifest, history: list[dict[str, Any]],
                        metrics: dict[str, Any] | None, data: Any) -> list[str]:
    """grid.png, report.html and metrics.json in the partition's ``report/``; returns their URLs."""
    per = spec.sample.grid_per_class
    imgs, labs = read_some(part, [f.path for f in manifest.files], per, data.num_classes)
    grid = grid_png(imgs, labs, data.class_names, per)
    return part.write_report({
        "grid.png": grid,
        "report.html": render_html(spec, manifest, history, metrics, grid).encode(),
        "metrics.json": json.dumps({"metrics": metrics, "history": history}, indent=1, default=str).encode(),
    })
