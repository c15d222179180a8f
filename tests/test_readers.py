"""Every common reader opens the published dataset folder bare, and returns every published row
with the right ``date`` (issue 14, item 6). Local disk here; the same checks against the S3
server are in tests/test_s3.py (:func:`check_s3_readers`).

The layout (pipeline/publish/layout.py): ``<root>/README.md`` (the dataset card),
``<root>/data/logical_date=D/part-*.parquet`` (Parquet only), ``<root>/_genpipe/...`` (state).
Before it, 3 of these 8 readers worked: the others tripped on manifest.json, .genpipe-run.json,
_report/grid.png, or on ``date`` being both a hive key and a string column.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.publish.layout import DATA_DIR, DATE_KEY
from pipeline.publish.partition import Partition
from pipeline.publish.provenance import Provenance
from pipeline.publish.schema import build_table, output_schema

CLASSES = ["zero", "one", "two"]
#: two published dates (rows per shard), and what every reader must return per date
DATES = {"2026-01-01": (5, 5), "2026-01-02": (5, 2)}
EXPECTED = {d: sum(s) for d, s in DATES.items()}
PROV = Provenance("a" * 64, "d" * 64)


def make_table(date: str, index: int, n: int, start: int):
    from datetime import UTC, datetime

    rng = np.random.default_rng(start + hash(date) % 1000)
    return build_table(rng.integers(0, 256, (n, 6, 5, 1), dtype=np.uint8), np.arange(start, start + n) % 3,
                       rng.integers(0, 2**62, n, dtype=np.int64), [f"toy/{date}/{start + k:09d}" for k in range(n)],
                       index, class_names=CLASSES, fmt="png", model="dcgan", checkpoint=PROV.checkpoint_digest,
                       job="toy", date=date, created_at=datetime(2026, 1, 1, tzinfo=UTC))


def publish_dates(out: str, so: dict | None = None) -> str:
    """Publish :data:`DATES` of job ``toy`` under ``out``; returns the dataset root URL."""
    for d, sizes in DATES.items():
        part = Partition.of(out, "toy", d, so)
        infos, start = [], 0
        for i, n in enumerate(sizes):
            infos.append(part.write_shard(i, len(sizes), make_table(d, i, n, start), provenance=PROV))
            start += n
        part.publish(infos, provenance=PROV, spec_hash=PROV.spec_hash, code_version="0.1.0", num_images=start,
                     class_names=CLASSES, checkpoint_digest=PROV.checkpoint_digest, model="dcgan", fmt="png",
                     metrics={"cas": 0.91, "cas_ci95": [0.9, 0.92], "real_acc": 0.97, "cas_ratio": 0.94,
                              "fid": 3.2, "fid_real_floor": 0.8, "uplift_same_data": 0.01,
                              "uplift_same_data_ci95": [-0.01, 0.03], "memorization": 0.0,
                              "uplift_protocols": {"uplift_same_data": "the classifier gets the same images"}})
    return Partition.of(out, "toy", "2026-01-01", so).root


def assert_rows(dates: Any, n: int | None = None, hive: Any = None) -> None:
    """Every published row, with its date; a hive ``logical_date`` (when the reader adds one) agrees."""
    got = Counter(str(d) for d in dates)
    assert got == EXPECTED, got
    if hive is not None:
        assert [str(h)[:10] for h in hive] == [str(d) for d in dates]


# -------------------------------------------------------------------------------------- the card


def card_front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_dataset_card_follows_the_hub_format(tmp_path):
    """dataset_info.features as ``datasets`` writes them (ClassLabel names included); configs: a
    default over every date and one per date; prose with generator, checkpoint, quality, loading."""
    import datasets

    root = Path(publish_dates(str(tmp_path)))
    text = (root / "README.md").read_text()
    meta = card_front_matter(text)
    want = datasets.Features.from_arrow_schema(output_schema(CLASSES, "png"))
    assert datasets.Features._from_yaml_list(meta["dataset_info"]["features"]) == want
    assert meta["dataset_info"]["features"] == want._to_yaml_list()
    label = next(f for f in meta["dataset_info"]["features"] if f["name"] == "label")
    assert label["dtype"] == {"class_label": {"names": {"0": "zero", "1": "one", "2": "two"}}}
    assert meta["configs"][0] == {"config_name": "default", "default": True, "data_files": [
        {"split": "train", "path": [f"{DATA_DIR}/{DATE_KEY}={d}/*.parquet" for d in DATES]}]}
    assert [c["config_name"] for c in meta["configs"][1:]] == list(DATES)  # strings, not YAML dates
    assert meta["configs"][2]["data_files"] == [{"split": "train", "path": f"{DATA_DIR}/{DATE_KEY}=2026-01-02/*.parquet"}]
    body = text.split("---\n", 2)[2]
    for needle in ("dcgan", PROV.checkpoint_digest[:16], "`cas` | 0.91 [0.9, 0.92] | 0.97 (`real_acc`)", "fid_real_floor",
                   "0.01 [-0.01, 0.03]", "the classifier gets the same images", "load_dataset", "memorization"):
        assert needle in body, needle
    from huggingface_hub import DatasetCard

    assert DatasetCard.load(root / "README.md").data.configs == meta["configs"]  # the Hub's own parser


def test_the_card_follows_what_is_published(tmp_path):
    out = str(tmp_path)
    root = Path(publish_dates(out))
    Partition.of(out, "toy", "2026-01-01").unpublish()
    assert [c["config_name"] for c in card_front_matter((root / "README.md").read_text())["configs"]] == \
        ["default", "2026-01-02"]
    Partition.of(out, "toy", "2026-01-02").remove()
    assert not (root / "README.md").exists()  # nothing published: no card


# ------------------------------------------------------------------------------------ the readers


def test_pandas_reads_the_data_folder(tmp_path):
    import pandas as pd

    data = Path(publish_dates(str(tmp_path))) / DATA_DIR
    df = pd.read_parquet(data)
    assert_rows(df["date"], hive=df[DATE_KEY])
    assert df["label"].dtype == np.int64 and len(df) == sum(EXPECTED.values())


def test_pyarrow_dataset_and_read_table_read_the_data_folder(tmp_path):
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    data = str(Path(publish_dates(str(tmp_path))) / DATA_DIR)
    t = pads.dataset(data, partitioning="hive").to_table()
    assert_rows(t.column("date").to_pylist(), hive=t.column(DATE_KEY).to_pylist())
    one = pads.dataset(data, partitioning="hive").to_table(filter=pads.field(DATE_KEY) == "2026-01-02")
    assert set(one.column("date").to_pylist()) == {"2026-01-02"} and one.num_rows == 7  # pruned by folder
    t = pq.read_table(data)
    assert_rows(t.column("date").to_pylist(), hive=t.column(DATE_KEY).to_pylist())


def test_polars_scans_the_data_folder_and_a_glob(tmp_path):
    import polars as pl

    data = str(Path(publish_dates(str(tmp_path))) / DATA_DIR)
    df = pl.scan_parquet(data).collect()
    assert_rows(df["date"].to_list(), hive=df[DATE_KEY].to_list())
    df = pl.scan_parquet(f"{data}/**/*.parquet").collect()
    assert_rows(df["date"].to_list())


def test_duckdb_reads_a_glob_with_hive_partitioning(tmp_path):
    import duckdb

    data = str(Path(publish_dates(str(tmp_path))) / DATA_DIR)
    rows = duckdb.sql(f"SELECT date, {DATE_KEY} FROM read_parquet('{data}/**/*.parquet', hive_partitioning=true)"
                      ).fetchall()
    assert_rows([r[0] for r in rows], hive=[r[1] for r in rows])


def test_hugging_face_datasets_loads_the_root_and_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    from PIL import Image

    root = publish_dates(str(tmp_path / "out"))
    cache = str(tmp_path / "hf")
    ds = datasets.load_dataset(root, split="train", cache_dir=cache)  # reads the card's configs
    assert isinstance(ds.features["label"], datasets.ClassLabel) and ds.features["label"].names == CLASSES
    assert isinstance(ds.features["image"], datasets.Image)
    assert_rows(ds["date"])
    img = ds[0]["image"]
    assert isinstance(img, Image.Image) and img.size == (5, 6)
    one = datasets.load_dataset(root, "2026-01-02", split="train", cache_dir=cache)
    assert set(one["date"]) == {"2026-01-02"} and len(one) == EXPECTED["2026-01-02"]
    bare = datasets.load_dataset("parquet", data_dir=str(Path(root) / DATA_DIR), split="train", cache_dir=cache)
    assert_rows(bare["date"])
    assert isinstance(bare.features["label"], datasets.ClassLabel)  # from the files' own schema metadata
    assert isinstance(bare[0]["image"], Image.Image)


def test_open_dataset_is_the_consistent_view_the_bare_folder_is_not(tmp_path):
    """A run writing a new date shows in data/ before its manifest; open_dataset and the card don't."""
    import pyarrow.dataset as pads

    from pipeline.publish import open_dataset

    out = str(tmp_path)
    root = publish_dates(out)
    writing = Partition.of(out, "toy", "2026-01-03")
    writing.write_shard(0, 1, make_table("2026-01-03", 0, 4, 0), provenance=PROV)  # no manifest yet
    assert pads.dataset(str(Path(root) / DATA_DIR), partitioning="hive").count_rows() == sum(EXPECTED.values()) + 4
    ds = open_dataset(root)
    assert ds.dates == list(DATES) and len(ds) == sum(EXPECTED.values())
    meta = card_front_matter((Path(root) / "README.md").read_text())
    assert "2026-01-03" not in json.dumps(meta["configs"])
