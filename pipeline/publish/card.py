"""The dataset card: ``<output>/<job>/README.md``, in the Hugging Face Hub's format.

YAML front matter (see huggingface/hub-docs ``datasetcard.md`` and the Hub's "manual
configuration" guide):

* ``dataset_info`` -- ``features`` from the Parquet schema (:func:`pipeline.publish.schema.output_schema`):
  ``image`` (``image``, or ``binary`` for the raw format), ``label`` as ``class_label`` with its
  names, and every metadata column;
* ``configs`` -- ``default`` over every published date, plus one config per logical date, each
  a ``train`` split of ``data/logical_date=D/*.parquet``.

Then prose: what generated the rows (model, checkpoint digest, spec hash, code version), their
quality against the real baselines (from each manifest's metrics), and how to load them.

Rewritten from every published manifest whenever what is published changes (publish,
unpublish, removal), with one atomic put; removed when nothing is published. No split sizes
are recorded (``datasets`` would refuse the whole dataset while a run rewrites one date).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipeline.publish.atomic import put_replace, remove_empty_dir
from pipeline.publish.layout import (
    CARD_NAME,
    DATA_DIR,
    DATE_KEY,
    STAGING_DIR,
    STATE_DIR,
    PartitionLocation,
    dataset_root,
    date_dir,
    refuse_links,
)
from pipeline.publish.manifest import Manifest, published_in
from pipeline.publish.schema import output_schema
from pipeline.publish.storage import join, redact, storage_errors, url_to_fs, with_retries

log = logging.getLogger(__name__)

#: (metric, its real-data baseline, meaning): the quality table of the card and of the run report
QUALITY_ROWS = [
    ("fid", "fid_real_floor", "FID on the feature net (lower is better); baseline: real train vs real test"),
    ("cas", "real_acc", "classifiers trained on synthetic only, accuracy on real test (mean of the probe seeds); "
     "baseline: trained on the real images the generator saw"),
    ("cas_ratio", None, "CAS / real-trained accuracy"),
    ("uplift_distill", "uplift_distill_base_acc", "accuracy gain from adding synthetic images to a subset of the "
     "generator's training images (the generator saw more real data than the classifier); baseline: the subset "
     "alone"),
    ("uplift_same_data", "uplift_same_data_base_acc", "accuracy gain from adding synthetic images to exactly the "
     "real images the generator was trained on; baseline: those images alone"),
    ("uplift_full", "uplift_full_base_acc", "accuracy gain from adding synthetic images to the whole real train "
     "split"),
    ("memorization", None, "fraction of samples nearer one of the generator's training images than 1/3 of the "
     "second nearest"),
    ("feature_net_test_acc", None, "feature network's accuracy on the real test split"),
]
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


def hf_features(class_names: Sequence[str], fmt: str = "png") -> list[dict[str, Any]]:
    """``dataset_info.features`` (the card's YAML list form) of the published schema."""
    feats = json.loads(output_schema(class_names, fmt).metadata[b"huggingface"])["info"]["features"]
    out: list[dict[str, Any]] = []
    for name, f in feats.items():
        if f["_type"] == "Image":
            out.append({"name": name, "dtype": "image"})
        elif f["_type"] == "ClassLabel":
            out.append({"name": name, "dtype": {"class_label": {"names": {str(i): n for i, n in
                                                                          enumerate(f["names"])}}}})
        else:
            out.append({"name": name, "dtype": f["dtype"]})
    return out


def data_glob(date: str) -> str:
    """The card's (and every reader's) glob for one date's files, relative to the dataset root."""
    return f"{DATA_DIR}/{date_dir(date)}/*.parquet"


def front_matter(job: str, manifests: Sequence[Manifest]) -> dict[str, Any]:
    mans = sorted(manifests, key=lambda m: m.date)
    latest = mans[-1]
    rows = sum(m.num_rows for m in mans)
    meta: dict[str, Any] = {
        "pretty_name": f"{job} (synthetic)",
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "genpipe", *sorted({m.model for m in mans if m.model})],
        "size_categories": [next((s for n, s in _SIZES if rows < n), "n>1B")],
    }
    fmts = {m.format or "png" for m in mans}
    names = {tuple(m.class_names) for m in mans}
    if len(fmts) == 1 and len(names) == 1:
        meta["dataset_info"] = {"config_name": "default",
                                "features": hf_features(latest.class_names, fmts.pop())}
    meta["configs"] = [{"config_name": "default", "default": True,
                        "data_files": [{"split": "train", "path": [data_glob(m.date) for m in mans]}]}]
    meta["configs"] += [{"config_name": m.date, "data_files": [{"split": "train", "path": data_glob(m.date)}]}
                        for m in mans]
    return meta


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def _ci(v: Any) -> str:
    return f" [{v[0]:.4g}, {v[1]:.4g}]" if isinstance(v, list) and len(v) == 2 and None not in v else ""


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def quality_section(m: Manifest) -> list[str]:
    met = m.metrics or {}
    if not any(k in met for k, _, _ in QUALITY_ROWS):
        return [f"The quality gate did not measure the generator of {m.date} (`gate.measure: false`)."]
    lines = ["| metric | generated (95% CI over probe seeds) | real baseline | meaning |", "| --- | --- | --- | --- |"]
    for k, base, meaning in QUALITY_ROWS:
        if k in met:
            b = (f"{_num(met.get(base))}{_ci(met.get(f'{base}_ci95'))} (`{base}`)"
                 if base and met.get(base) is not None else "")
            lines.append(f"| `{k}` | {_num(met[k])}{_ci(met.get(f'{k}_ci95'))} | {b} | {_cell(meaning)} |")
    protocols = met.get("uplift_protocols")
    if isinstance(protocols, Mapping) and protocols:
        lines += ["", "What each uplift measured:", ""]
        lines += [f"- `{k}`: {_cell(v)}" for k, v in protocols.items()]
    if met.get("gate_failures"):
        lines += ["", f"Quality gate failures: {_cell('; '.join(map(str, met['gate_failures'])))}"]
    return lines


def render_card(job: str, manifests: Sequence[Manifest]) -> str:
    """The whole ``README.md`` for the published ``manifests`` of ``job``."""
    mans = sorted(manifests, key=lambda m: m.date)
    if not mans:
        raise ValueError("a dataset card needs at least one published partition")
    latest = mans[-1]
    rows = sum(m.num_rows for m in mans)
    head = yaml.safe_dump(front_matter(job, mans), sort_keys=False, allow_unicode=True)
    names = ", ".join(f"`{n}`" for n in latest.class_names)
    out = ["---", head.rstrip("\n"), "---", "",
           f"# {job}: synthetic images",
           "",
           f"{rows} class-conditional images generated by genpipe"
           + (f" (a `{latest.model}` generator)" if latest.model else "") + " "
           f"over {len(mans)} logical date(s), {mans[0].date} to {latest.date}. Labels are a `ClassLabel` "
           f"with {len(latest.class_names)} classes: {names}. Every row records the seed that regenerates "
           "its image alone.",
           "",
           "## Partitions",
           "",
           "| logical date | rows | shards | generator | checkpoint (sha256) | spec hash | genpipe | published |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in mans:
        out.append(f"| {m.date} | {m.num_rows} | {m.num_shards} | {_cell(m.model or '')} "
                   f"| `{(m.checkpoint_digest or '')[:16]}` | `{m.spec_hash[:16]}` | {_cell(m.code_version)} "
                   f"| {m.published_at} |")
    out += ["", f"## Quality against real baselines ({latest.date})", "", *quality_section(latest)]
    if len(mans) > 1:
        out += ["", "Per date:", "", "| logical date | cas | cas_ratio | fid (real floor) | uplift_same_data | memorization |",
                "| --- | --- | --- | --- | --- | --- |"]
        for m in mans:
            met = m.metrics or {}
            floor = f" ({_num(met['fid_real_floor'])})" if met.get("fid_real_floor") is not None else ""
            out.append(f"| {m.date} | {_num(met.get('cas'))} | {_num(met.get('cas_ratio'))} "
                       f"| {_num(met.get('fid'))}{floor} | {_num(met.get('uplift_same_data'))} "
                       f"| {_num(met.get('memorization'))} |")
    d = latest.date
    out += ["", "## How to load it", "",
            f"Point readers at the `{DATA_DIR}/` folder (Parquet only; hive folders `{DATE_KEY}=YYYY-MM-DD`, so "
            f"hive-aware readers add a `{DATE_KEY}` column beside the files' own `date` column), or load this "
            "folder with Hugging Face `datasets` (it reads this card's configs):",
            "",
            "```python",
            "import datasets",
            'ds = datasets.load_dataset("path/to/this/folder", split="train")             # every date',
            f'one = datasets.load_dataset("path/to/this/folder", "{d}", split="train")  # one date',
            f'ds = datasets.load_dataset("parquet", data_dir="path/to/this/folder/{DATA_DIR}", split="train")',
            "",
            "import pandas, pyarrow.dataset, polars, duckdb",
            f'pandas.read_parquet("path/to/this/folder/{DATA_DIR}")',
            f'pyarrow.dataset.dataset("path/to/this/folder/{DATA_DIR}", partitioning="hive").to_table()',
            f'polars.scan_parquet("path/to/this/folder/{DATA_DIR}/**/*.parquet").collect()',
            f"duckdb.sql(\"SELECT * FROM read_parquet('path/to/this/folder/{DATA_DIR}/**/*.parquet', "
            "hive_partitioning=true)\")",
            "",
            "from pipeline.publish import open_dataset   # genpipe: only what the manifests list",
            'ds = open_dataset("path/to/this/folder")',
            "```",
            "",
            f"The `{DATA_DIR}/` folder shows every committed shard, including those of a run still writing a date; "
            "the configs above list published dates only, and `open_dataset` reads exactly the files each "
            f"date's manifest lists (`{STATE_DIR}/{DATE_KEY}=D/manifest.json`, with sha256 per file). "
            f"`{STATE_DIR}/` holds genpipe's own state (manifests, run state, the run report), outside every "
            "data glob.", ""]
    return "\n".join(out)


def update_card(output: str, job: str, storage_options: Mapping[str, Any] | None = None, attempts: int = 3) -> bool:
    """Rewrite ``<output>/<job>/README.md`` from every published manifest (atomic put); remove it
    when nothing is published. Re-lists afterwards and writes again if another run published or
    removed a date meanwhile. Returns whether a card is in place."""
    so = dict(storage_options or {})
    root = dataset_root(output, job)
    url = join(root, CARD_NAME)
    seen: list[tuple[str, str]] | None = None
    for _ in range(max(1, attempts)):
        pubs = published_in(PartitionLocation.every(output, job, so), strict=False)
        now = [(p.date, m.published_at) for p, m in pubs]
        if now == seen:
            break
        seen = now
        with storage_errors(f"writing {url}", so):
            _write_card(root, so, render_card(job, [m for _, m in pubs]).encode() if pubs else None)
        if not pubs:
            return False
    log.debug("dataset card of %s: %d date(s)", redact(root, so), len(seen or []))
    return True


def _write_card(root: str, so: Mapping[str, Any], text: bytes | None) -> None:
    fs, root_path = url_to_fs(root, so)
    root_path = root_path.rstrip("/")
    path, staging = join(root_path, CARD_NAME), join(root_path, STATE_DIR, STAGING_DIR)
    refuse_links(fs, root_path, path)
    if text is None:
        fs.invalidate_cache(path)
        if fs.exists(path):
            fs.rm_file(path)
        return
    refuse_links(fs, root_path, staging)
    with_retries(lambda: put_replace(fs, path, text, staging), what="writing the dataset card")
    remove_empty_dir(fs, staging)
