"""Publishing to S3: a real HTTP S3 endpoint on loopback (moto's server mode, as s3fs's own tests do).

Credentials are fake but are passed the way users pass real ones (``storage_options``), and
every object written and every error raised is checked for them.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from pipeline.publish.commit import MANIFEST_NAME, shard_name
from pipeline.publish.layout import DATA_DIR, DATE_KEY
from pipeline.publish.partition import Expected, Partition
from pipeline.publish.reader import open_dataset
from pipeline.publish.schema import build_table
from pipeline.publish.storage import join, url_to_fs

CLASSES = ["zero", "one", "two"]
DATE = "2026-01-02"
CREATED = datetime(2026, 1, 2, tzinfo=UTC)
ACCESS_KEY = "AKIDFAKEPUBLISHTEST"
SECRET = "fake-secret-9f8e7d6c5b4a"
BUCKET = "genpipe-publish"


def make_table(index: int, n: int = 10, start: int | None = None) -> pa.Table:
    """Shard ``index`` of a toy plan (deterministic from its first global index)."""
    start = index * n if start is None else start
    rng = np.random.default_rng(start)
    return build_table(rng.integers(0, 256, (n, 6, 5, 1), dtype=np.uint8),
                       np.arange(start, start + n) % len(CLASSES), rng.integers(0, 2**62, n, dtype=np.int64),
                       [f"toy/{DATE}/{start + k:09d}" for k in range(n)], index, class_names=CLASSES, fmt="png",
                       model="dcgan", checkpoint="c" * 64, job="toy", date=DATE, created_at=CREATED)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server for the session; yields storage_options with fake credentials and a bucket."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET,
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield {"key": ACCESS_KEY, "secret": SECRET,
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    finally:
        server.stop()


@pytest.fixture()
def out(moto_s3) -> str:
    return f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"


def _publish(out: str, so: dict, sizes: tuple[int, ...] = (10, 10, 5)) -> tuple[Partition, list, Any]:
    part = Partition.of(out, "toy", DATE, so)
    infos, start = [], 0
    for i, n in enumerate(sizes):
        infos.append(part.write_shard(i, len(sizes), make_table(i, n, start=start)))
        start += n
    man = part.publish(infos, spec_hash="h", code_version="0.1.0", num_images=sum(sizes), class_names=CLASSES,
                       metrics={"fid": 1.0}, fmt="png", extra={"storage_options_seen": str(so)})
    return part, infos, man


def test_moto_honours_if_none_match_so_xb_is_create_only(moto_s3, out):
    fs, path = url_to_fs(join(out, "x.bin"), moto_s3)
    with fs.open(path, "xb") as f:
        f.write(b"first")
    with pytest.raises(FileExistsError), fs.open(path, "xb") as f:
        f.write(b"second")
    assert fs.cat_file(path) == b"first"


def test_publish_verify_and_read_back_from_s3(moto_s3, out, caplog):
    caplog.set_level(logging.DEBUG, logger="pipeline")
    so = moto_s3
    part, infos, man = _publish(out, so)
    assert part.read_manifest() == man and man.num_rows == 25
    assert part.shard_names() == [i.path for i in infos]
    assert part.verify_shard(1, 3, 10) == infos[1]
    assert part.write_shard(1, 3, make_table(1, 10, start=10)) == infos[1]  # duplicate: accepted
    assert part.check(Expected(25, 10)).ok
    fs, root = url_to_fs(part.root, so)
    assert sorted(p.removeprefix(root + "/") for p in fs.find(root)) == sorted(
        ["README.md", f"_genpipe/{DATE_KEY}={DATE}/{MANIFEST_NAME}",
         *(f"{DATA_DIR}/{DATE_KEY}={DATE}/{i.path}" for i in infos)])

    ds = open_dataset(join(out, "toy"), so)
    assert len(ds) == 25 and ds.class_names == CLASSES and ds.dates == [DATE]
    assert ds.data_files[0] == f"{part.data_url}/{shard_name(0, 3)}"
    t = ds.arrow.to_table(filter=pads.field("label") == 2)
    assert t.num_rows == 8 and set(t.column("date").to_pylist()) == {DATE}
    x, y = ds.torch()[24]
    assert x.shape == (1, 6, 5) and y == 24 % 3

    # the fake credentials are nowhere: not in any object, not in the manifest, not in logs
    for key in fs.find(f"{BUCKET}/"):
        body = fs.cat_file(key)
        assert SECRET.encode() not in body and ACCESS_KEY.encode() not in body, key
    assert SECRET not in str(man.to_json()) and ACCESS_KEY not in str(man.to_json())
    assert SECRET not in caplog.text and ACCESS_KEY not in caplog.text


def test_corrupt_shard_on_s3_is_detected_and_rewritten(moto_s3, out):
    so = moto_s3
    part = Partition.of(out, "toy", DATE, so)
    table = make_table(0, 10)
    good = part.write_shard(0, 1, table)
    fs = part.fs
    key = part.data_file(good.path)
    body = fs.cat_file(key)
    fs.pipe_file(key, body[:-100])  # truncated object (e.g. written by a non-atomic tool)
    assert part.verify_shard(0, 1, 10) is None
    assert part.write_shard(0, 1, table) == good
    assert fs.cat_file(key) == body


def test_a_published_partition_with_a_truncated_object_fails_its_check_on_s3(moto_s3, out):
    part, infos, _ = _publish(out, moto_s3)
    fs = part.fs
    key = part.data_file(infos[2].path)
    fs.pipe_file(key, fs.cat_file(key)[:-50])
    check = part.check(Expected(25, 10))
    assert check.present and not check.ok and infos[2].path in check.problem


def test_concurrent_writers_on_s3_commit_one_object(moto_s3, out):
    so = moto_s3
    part = Partition.of(out, "toy", DATE, so)
    table = make_table(3, 50)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def writer() -> None:
        barrier.wait()
        try:
            results.append(part.write_shard(3, 4, table))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.sha256 for r in results}) == 1
    assert part.fs.find(part.root_path) == [part.data_file(shard_name(3, 4))]
    assert part.remove_stale({shard_name(3, 4)}) == []


def test_errors_from_s3_never_show_credentials(moto_s3):
    so = moto_s3
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/ds"
    secret_in_url = f"s3://{BUCKET}/{SECRET}/toy"  # a secret can even end up in a path
    fs, _ = url_to_fs(secret_in_url, so)
    fs.pipe_file(f"{BUCKET}/{SECRET}/toy/_genpipe/{DATE_KEY}={DATE}/{MANIFEST_NAME}", b"{not json")
    messages = []
    for call in (
        lambda: open_dataset(missing, so),
        lambda: open_dataset(secret_in_url, so),
        lambda: Partition.of(missing, "toy", DATE, so).write_shard(0, 1, make_table(0, 3)),
        lambda: Partition.at(secret_in_url, DATE, so).read_manifest(),
    ):
        with pytest.raises(Exception) as ei:  # noqa: PT011 - any kind; the message is what matters
            call()
        messages.append(f"{type(ei.value).__name__}: {ei.value}")
    for m in messages:
        assert SECRET not in m and ACCESS_KEY not in m, m
    assert len(messages) == 4 and "no such dataset" in messages[0] and "***" in messages[1]


# ------------------------------------------------------------------------------------ the readers
# The same readers as tests/test_readers.py, pointed at the data folder on the S3 server, each
# the way its documentation passes an endpoint and credentials. Where a reader cannot do S3 with
# what is installed, the test says so and uses the nearest thing that works.


def _reader_dataset(moto_s3, out):
    from test_readers import publish_dates

    root = publish_dates(out, moto_s3)
    return root, f"{root}/{DATA_DIR}"


def test_pandas_and_pyarrow_read_the_data_folder_on_s3(moto_s3, out):
    import pandas as pd
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from test_readers import assert_rows

    _, data = _reader_dataset(moto_s3, out)
    df = pd.read_parquet(data, storage_options=moto_s3)  # fsspec (s3fs) with the same options
    assert_rows(df["date"], hive=df[DATE_KEY])
    endpoint = moto_s3["client_kwargs"]["endpoint_url"]
    s3 = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET, region="us-east-1", scheme="http",
                           endpoint_override=endpoint.removeprefix("http://"))  # pyarrow's own S3 client
    t = pads.dataset(data.removeprefix("s3://"), filesystem=s3, partitioning="hive").to_table()
    assert_rows(t.column("date").to_pylist(), hive=t.column(DATE_KEY).to_pylist())
    t = pq.read_table(data.removeprefix("s3://"), filesystem=s3)
    assert_rows(t.column("date").to_pylist(), hive=t.column(DATE_KEY).to_pylist())


def test_polars_scans_the_data_folder_and_a_glob_on_s3(moto_s3, out):
    import polars as pl
    from test_readers import assert_rows

    _, data = _reader_dataset(moto_s3, out)
    opts = {"aws_endpoint_url": moto_s3["client_kwargs"]["endpoint_url"], "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET, "aws_region": "us-east-1", "aws_allow_http": "true"}
    # polars' object-store reader takes a cloud folder with a trailing slash (without one it asks
    # for an object of that name)
    df = pl.scan_parquet(data + "/", storage_options=opts).collect()
    assert_rows(df["date"].to_list(), hive=df[DATE_KEY].to_list())
    df = pl.scan_parquet(f"{data}/**/*.parquet", storage_options=opts).collect()
    assert_rows(df["date"].to_list())


def test_duckdb_reads_a_glob_with_hive_partitioning_on_s3(moto_s3, out):
    """DuckDB's own S3 support is its httpfs extension, which it downloads on first use: not
    possible offline. The Python client's ``register_filesystem`` reads through fsspec (s3fs, a
    genpipe dependency) instead; with httpfs installed, the same query runs on ``s3://`` directly."""
    import duckdb
    from test_readers import assert_rows

    from pipeline.publish.storage import url_to_fs

    _, data = _reader_dataset(moto_s3, out)
    con = duckdb.connect()
    con.register_filesystem(url_to_fs(data, moto_s3)[0])
    rows = con.sql(f"SELECT date, {DATE_KEY} FROM read_parquet('{data}/**/*.parquet', hive_partitioning=true)"
                   ).fetchall()
    assert_rows([r[0] for r in rows], hive=[r[1] for r in rows])


def test_hugging_face_datasets_reads_the_card_globs_on_s3(moto_s3, out, monkeypatch, tmp_path):
    """``datasets`` 5 takes a remote dataset only as ``data_files`` URLs with ``storage_options``:
    ``load_dataset(root)`` and ``data_dir=`` accept local folders or Hub repos, not ``s3://``. So
    the card's own globs are passed as data files (offline mode off for this loopback endpoint:
    it refuses every remote URL, not only the Hub)."""
    import datasets
    import datasets.config
    from PIL import Image
    from test_readers import DATES, assert_rows, card_front_matter

    root, _ = _reader_dataset(moto_s3, out)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    fs, path = url_to_fs(root, moto_s3)
    meta = card_front_matter(fs.cat_file(f"{path}/README.md").decode())
    files = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
    default = [f"{root}/{g}" for g in files["default"]]
    ds = datasets.load_dataset("parquet", data_files={"train": default}, split="train", cache_dir=str(tmp_path / "hf"),
                               storage_options=copy.deepcopy(moto_s3))  # it adds an "hf" key to what it is given
    assert isinstance(ds.features["label"], datasets.ClassLabel) and ds.features["label"].names == CLASSES
    assert_rows(ds["date"])
    assert isinstance(ds[0]["image"], Image.Image)
    assert set(files) == {"default", *DATES}


def test_an_old_layout_dataset_on_s3_is_refused_then_migrated(moto_s3, out):
    """genpipe 0.1's date=D/ folder on an object store: refused, then moved by copies (manifest
    last, the old manifest deleted first), every byte and sha256 unchanged."""
    from pipeline.publish.layout import LayoutError
    from pipeline.publish.migrate import migrate

    so = moto_s3
    part, infos, man = _publish(out, so)
    fs, root = url_to_fs(part.root, so)
    old = f"{root}/date={DATE}"
    for i in infos:  # rearranged as genpipe 0.1 had it
        fs.mv(part.data_file(i.path), f"{old}/{i.path}")
    doc = man.to_json()
    doc["format_version"] = 1
    fs.pipe_file(f"{old}/{MANIFEST_NAME}", json.dumps(doc).encode())
    fs.rm(part.manifest_path)
    fs.rm(f"{root}/README.md")
    fs.invalidate_cache()
    with pytest.raises(LayoutError, match="old layout"):
        open_dataset(part.root, so)
    assert migrate(part.root, so) == [DATE]
    fs.invalidate_cache()
    assert not fs.find(old)
    assert part.read_manifest().files == man.files and part.check(Expected(25, 10)).ok
    assert len(open_dataset(part.root, so)) == 25 and fs.exists(f"{root}/README.md")
