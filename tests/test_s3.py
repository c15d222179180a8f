"""Publishing to S3: a real HTTP S3 endpoint on loopback (moto's server mode, as s3fs's own tests do).

Credentials are fake but are passed the way users pass real ones (``storage_options``), and
every object written and every error raised is checked for them.
"""

from __future__ import annotations

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

from pipeline.publish.commit import (
    MANIFEST_NAME,
    existing_state,
    partition_url,
    read_manifest,
    remove_stale,
    shard_name,
    verify_shard,
    write_manifest,
    write_shard,
)
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


def _publish(out: str, so: dict, sizes: tuple[int, ...] = (10, 10, 5)) -> tuple[str, list, dict]:
    part = partition_url(out, "toy", DATE)
    infos, start = [], 0
    for i, n in enumerate(sizes):
        infos.append(write_shard(part, i, len(sizes), make_table(i, n, start=start), so))
        start += n
    man = write_manifest(part, infos, spec_hash="h", code_version="0.1.0", job="toy", date=DATE,
                         num_images=sum(sizes), class_names=CLASSES, metrics={"fid": 1.0},
                         extra={"format": "png", "storage_options_seen": str(so)}, storage_options=so)
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
    assert read_manifest(part, so) == man and man["num_rows"] == 25
    assert existing_state(part, so) == (man, [i.path for i in infos])
    assert verify_shard(part, 1, 3, 10, so) == infos[1]
    assert write_shard(part, 1, 3, make_table(1, 10, start=10), so) == infos[1]  # duplicate: accepted
    fs, ppath = url_to_fs(part, so)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(ppath)) == sorted([MANIFEST_NAME, *(i.path for i in infos)])

    ds = open_dataset(join(out, "toy"), so)
    assert len(ds) == 25 and ds.class_names == CLASSES and ds.dates == [DATE]
    assert ds.data_files[0] == f"{part}/{shard_name(0, 3)}"
    t = ds.arrow.to_table(filter=pads.field("label") == 2)
    assert t.num_rows == 8 and set(t.column("date").to_pylist()) == {DATE}
    x, y = ds.torch()[24]
    assert x.shape == (1, 6, 5) and y == 24 % 3

    # the fake credentials are nowhere: not in any object, not in the manifest, not in logs
    for key in fs.find(f"{BUCKET}/"):
        body = fs.cat_file(key)
        assert SECRET.encode() not in body and ACCESS_KEY.encode() not in body, key
    assert SECRET not in str(man) and ACCESS_KEY not in str(man)
    assert SECRET not in caplog.text and ACCESS_KEY not in caplog.text


def test_corrupt_shard_on_s3_is_detected_and_rewritten(moto_s3, out):
    so = moto_s3
    part = partition_url(out, "toy", DATE)
    table = make_table(0, 10)
    good = write_shard(part, 0, 1, table, so)
    fs, ppath = url_to_fs(part, so)
    key = join(ppath, good.path)
    body = fs.cat_file(key)
    fs.pipe_file(key, body[:-100])  # truncated object (e.g. written by a non-atomic tool)
    assert verify_shard(part, 0, 1, 10, so) is None
    assert write_shard(part, 0, 1, table, so) == good
    assert fs.cat_file(key) == body


def test_concurrent_writers_on_s3_commit_one_object(moto_s3, out):
    so = moto_s3
    part = partition_url(out, "toy", DATE)
    table = make_table(3, 50)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def writer() -> None:
        barrier.wait()
        try:
            results.append(write_shard(part, 3, 4, table, so))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.sha256 for r in results}) == 1
    fs, ppath = url_to_fs(part, so)
    assert [p.rsplit("/", 1)[1] for p in fs.find(ppath)] == [shard_name(3, 4)]
    assert remove_stale(part, {shard_name(3, 4)}, so) == []


def test_errors_from_s3_never_show_credentials(moto_s3):
    so = moto_s3
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/ds"
    secret_in_url = f"s3://{BUCKET}/{SECRET}/toy"  # a secret can even end up in a path
    fs, _ = url_to_fs(secret_in_url, so)
    fs.pipe_file(f"{BUCKET}/{SECRET}/toy/bad/{MANIFEST_NAME}", b"{not json")
    messages = []
    for call in (
        lambda: open_dataset(missing, so),
        lambda: open_dataset(secret_in_url, so),
        lambda: write_shard(partition_url(missing, "toy", DATE), 0, 1, make_table(0, 3), so),
        lambda: read_manifest(join(secret_in_url, "bad"), so),
    ):
        with pytest.raises(Exception) as ei:  # noqa: PT011 - any kind; the message is what matters
            call()
        messages.append(f"{type(ei.value).__name__}: {ei.value}")
    for m in messages:
        assert SECRET not in m and ACCESS_KEY not in m, m
    assert len(messages) == 4 and "no such dataset" in messages[0] and "***" in messages[1]
