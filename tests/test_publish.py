"""Publishing: schema, PNG, exactly-once shard commit, manifest, cleanup, redaction, retries, readers.

Everything runs on real files (tmp_path) or fsspec's memory filesystem; the outputs are read
back with the tools users will use: Hugging Face ``datasets``, ``pyarrow.dataset``, torch's
DataLoader and (with the session's Ray) Ray Data. Every reader of the bare dataset folder
(pandas, pyarrow, polars, DuckDB, ``datasets``) is tested in tests/test_readers.py.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.publish.commit import (
    MANIFEST_NAME,
    ManifestError,
    Provenance,
    ShardInfo,
    partition_url,
    read_manifest,
    shard_name,
    verify_shard,
)
from pipeline.publish.layout import STAGING_DIR, LayoutError
from pipeline.publish.manifest import Manifest
from pipeline.publish.parquet_io import parquet_bytes, rows_per_group
from pipeline.publish.partition import Expected, Partition, published
from pipeline.publish.reader import open_dataset
from pipeline.publish.schema import (
    IMAGE_STRUCT,
    build_table,
    class_names_of,
    decode_png,
    encode_png,
    encode_pngs,
    output_schema,
)
from pipeline.publish.storage import (
    MASK,
    StorageError,
    is_local,
    join,
    redact,
    safe_join,
    storage_errors,
    url_to_fs,
    with_retries,
)

CLASSES = ["zero", "one", "two"]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DATE = "2026-01-02"


def make_table(index: int, n: int = 12, *, fmt: str = "png", channels: int = 1, date: str = DATE,
               created_at: datetime = T0, start: int | None = None) -> pa.Table:
    """Shard ``index`` of a toy plan: deterministic pixels, labels and seeds from the index."""
    start = index * n if start is None else start
    rng = np.random.default_rng(start)
    imgs = rng.integers(0, 256, (n, 6, 5, channels), dtype=np.uint8)
    labels = (np.arange(start, start + n) % len(CLASSES)).astype(np.int64)
    seeds = rng.integers(0, 2**62, n, dtype=np.int64)
    ids = [f"toy/{date}/{start + k:09d}" for k in range(n)]
    return build_table(imgs, labels, seeds, ids, index, class_names=CLASSES, fmt=fmt, model="dcgan",
                       checkpoint="c" * 64, job="toy", date=date, created_at=created_at)


def publish(out: str, date: str = DATE, sizes: tuple[int, ...] = (12, 12, 7), fmt: str = "png",
            so: dict | None = None, channels: int = 1) -> tuple[Partition, list[ShardInfo], Manifest]:
    part = Partition.of(out, "toy", date, so)
    prov = Provenance("s" * 64, "c" * 64)
    infos, start = [], 0
    for i, n in enumerate(sizes):
        infos.append(part.write_shard(i, len(sizes), make_table(i, n, fmt=fmt, date=date, start=start,
                                                               channels=channels), provenance=prov))
        start += n
    man = part.publish(infos, provenance=prov, spec_hash=prov.spec_hash, code_version="0.1.0", num_images=sum(sizes),
                       class_names=CLASSES, metrics={"fid": np.float32(2.5)}, fmt=fmt,
                       checkpoint_digest=prov.checkpoint_digest)
    return part, infos, man


def data_dir(part: Partition) -> Path:
    return Path(part.data_path)


def state_dir(part: Partition) -> Path:
    return Path(part.state_path)


# ----------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_schema_has_exact_types_and_hugging_face_features(fmt):
    s = output_schema(CLASSES, fmt)
    types = {f.name: f.type for f in s}
    common = {"label": pa.int64(), "id": pa.string(), "seed": pa.int64(), "shard": pa.int32(),
              "model": pa.string(), "checkpoint": pa.string(), "job": pa.string(), "date": pa.string(),
              "created_at": pa.timestamp("us", tz="UTC")}
    if fmt == "png":
        assert types == {"image": IMAGE_STRUCT, **common}
        assert types["image"].field("bytes").type == pa.binary()  # not large_binary
        assert types["image"].field("path").type == pa.string()
    else:
        assert types == {"image": pa.binary(), "height": pa.int16(), "width": pa.int16(),
                         "channels": pa.int16(), **common}
    feats = json.loads(s.metadata[b"huggingface"])["info"]["features"]
    assert feats["label"] == {"names": CLASSES, "_type": "ClassLabel"}
    assert feats["image"] == ({"_type": "Image"} if fmt == "png" else {"dtype": "binary", "_type": "Value"})
    assert feats["created_at"] == {"dtype": "timestamp[us, tz=UTC]", "_type": "Value"}
    assert list(feats) == s.names
    assert class_names_of(s) == CLASSES
    with pytest.raises(ValueError, match="format"):
        output_schema(CLASSES, "jpeg")


def test_build_table_checks_its_inputs():
    imgs = np.zeros((2, 4, 4, 1), np.uint8)
    kw = dict(class_names=CLASSES, fmt="png", model="m", checkpoint="c", job="j", date=DATE, created_at=T0)
    with pytest.raises(ValueError, match="lengths"):
        build_table(imgs, [0], [1, 2], ["a", "b"], 0, **kw)
    with pytest.raises(ValueError, match="labels"):
        build_table(imgs, [0, 3], [1, 2], ["a", "b"], 0, **kw)
    with pytest.raises(ValueError, match="unique"):
        build_table(imgs, [0, 1], [1, 2], ["a", "a"], 0, **kw)
    with pytest.raises(ValueError, match="uint8"):
        build_table(imgs.astype(np.float32), [0, 1], [1, 2], ["a", "b"], 0, **kw)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        build_table(imgs, [0, 1], [1, 2], ["a", "b"], 0, **{**kw, "date": "2026-1-2"})
    naive = build_table(imgs, [0, 1], [1, 2], ["a", "b"], 0, **{**kw, "created_at": T0.replace(tzinfo=None)})
    assert naive.column("created_at")[0].as_py() == T0  # naive datetimes are taken as UTC


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact_and_deterministic(channels):
    rng = np.random.default_rng(channels)
    batch = rng.integers(0, 256, (4, 7, 9, channels), dtype=np.uint8)
    batch[0] = 0
    batch[1] = 255  # extremes exercise the Sub filter's wrap-around
    for a in batch:
        png = encode_png(a)
        assert png == encode_png(a.copy())  # same pixels, same bytes
        img = Image.open(io.BytesIO(png))
        assert img.mode == ("L" if channels == 1 else "RGB") and img.size == (9, 7)
        assert np.array_equal(decode_png(png), a)
    assert encode_pngs(batch, workers=2) == [encode_png(a) for a in batch]
    assert np.array_equal(decode_png(encode_png(batch[2][:, :, 0] if channels == 1 else batch[2])), batch[2])
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), np.uint8))


# --------------------------------------------------------------------------------------- shard commit


def test_write_shard_commits_one_file_with_rows_and_sha256(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    table = make_table(0)
    info = part.write_shard(0, 3, table)
    f = data_dir(part) / "part-00000-of-00003.parquet"
    data = f.read_bytes()
    assert info == ShardInfo(0, f.name, 12, len(data), hashlib.sha256(data).hexdigest(), {0: 4, 1: 4, 2: 4})
    assert pq.read_table(f).equals(table)
    assert pq.read_schema(f).metadata[b"huggingface"] == table.schema.metadata[b"huggingface"]
    assert not [p for p in Path(part.staging_path).glob("*")]  # no staging leftovers
    assert sorted(p.name for p in data_dir(part).iterdir()) == [f.name]  # the data folder: Parquet only
    assert part.verify_shard(0, 3, 12) == info
    assert part.verify_shard(0, 3, 12, expected_sha256=info.sha256) == info
    assert part.verify_shard(0, 3, 12, expected_sha256="0" * 64) is None
    assert part.verify_shard(0, 3, 11) is None  # wrong row count
    assert part.verify_shard(1, 3, 12) is None  # missing
    # the functional API takes the data folder's URL too
    assert verify_shard(part.data_url, 0, 3, 12) == info and partition_url(str(tmp_path), "toy", DATE) == part.data_url


def test_parquet_layout_row_groups_compression_statistics_page_index(tmp_path):
    table = make_table(0, 40)
    assert rows_per_group(table) == 40  # a small shard is one row group
    md = pq.ParquetFile(io.BytesIO(parquet_bytes(table))).metadata
    assert md.num_row_groups == 1
    per_row = table.nbytes // 40
    md = pq.ParquetFile(io.BytesIO(parquet_bytes(table, target_row_group_bytes=per_row * 10))).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [10, 10, 10, 10]  # sized by bytes
    cols = {md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i) for i in range(md.num_columns)}
    assert cols["image.bytes"].compression == "UNCOMPRESSED" and cols["label"].compression == "ZSTD"
    assert not cols["image.bytes"].is_stats_set and cols["label"].is_stats_set and cols["seed"].is_stats_set
    assert all(c.has_offset_index and c.has_column_index for n, c in cols.items() if not n.startswith("image"))
    raw = pq.ParquetFile(io.BytesIO(parquet_bytes(make_table(0, fmt="raw")))).metadata.row_group(0).column(0)
    assert raw.path_in_schema == "image" and raw.compression == "ZSTD"  # raw pixels do compress


def test_verify_rejects_truncated_and_corrupted_shards_and_write_repairs_them(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    info = part.write_shard(0, 1, make_table(0))
    f = data_dir(part) / info.path
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])  # truncated: footer gone
    assert part.verify_shard(0, 1, 12) is None
    bad = bytearray(good)
    bad[len(good) // 3] ^= 0xFF  # a flipped byte inside a data page: the footer still parses
    f.write_bytes(bytes(bad))
    assert pq.ParquetFile(f).metadata.num_rows == 12
    assert part.verify_shard(0, 1, 12) is None  # page CRC catches it
    f.write_bytes(b"")
    assert part.verify_shard(0, 1, 12) is None
    # a writer that finds a corrupt file in place removes it and commits again
    assert part.write_shard(0, 1, make_table(0)) == info
    assert f.read_bytes() == good


def test_a_second_writer_accepts_the_committed_shard_never_duplicates(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    first = part.write_shard(2, 5, make_table(2))
    mtime = (data_dir(part) / first.path).stat().st_mtime_ns
    assert part.write_shard(2, 5, make_table(2)) == first  # same bytes: accepted
    later = make_table(2, created_at=datetime(2030, 1, 1, tzinfo=UTC))  # different bytes, same shard
    assert part.write_shard(2, 5, later) == first  # the committed file wins, untouched
    assert (data_dir(part) / first.path).stat().st_mtime_ns == mtime
    assert [p.name for p in data_dir(part).iterdir() if p.is_file()] == [first.path]


def test_concurrent_writers_of_one_shard_commit_it_once(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    table = make_table(0, 200)
    results: list[ShardInfo] = []
    barrier = threading.Barrier(6)

    def writer() -> None:
        barrier.wait()
        results.append(part.write_shard(0, 1, table))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len({r.sha256 for r in results}) == 1
    assert part.verify_shard(0, 1, 200) == results[0]
    assert [p.name for p in Path(tmp_path).rglob("*") if p.is_file()] == [results[0].path]


def test_a_write_that_fails_for_a_full_disk_leaves_no_temp_file(tmp_path, monkeypatch):
    """Issue 13 (low): a partial temp file stayed in the staging folder after a disk-full failure."""
    import pipeline.publish.atomic as atomic

    part = Partition.of(str(tmp_path), "toy", DATE)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        part.write_shard(0, 1, make_table(0))
    with pytest.raises(OSError, match="No space left"):
        part.run_state("h" * 64)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert [p for p in Path(tmp_path).rglob("*") if p.is_file()] == []  # no partial file anywhere
    assert part.shard_names() == []


def test_staging_leftovers_are_removed_by_a_publish(tmp_path):
    """A temp file left by a killed writer (no chance to clean up) goes with the next publish."""
    part = Partition.of(str(tmp_path), "toy", DATE)
    Path(part.staging_path).mkdir(parents=True)
    (Path(part.staging_path) / "part-00000-of-00001.parquet.1234abcd").write_bytes(b"partial")
    assert part.has_staging()
    part.publish([part.write_shard(0, 1, make_table(0))], spec_hash="h", code_version="0", num_images=12,
                 class_names=CLASSES)
    assert not part.has_staging() and not Path(part.staging_path).exists()


# ---------------------------------------------------------------------------------------- provenance

OURS = Provenance("a" * 64, "d" * 64)


def test_write_shard_stamps_its_provenance_and_verify_accepts_only_that_run(tmp_path):
    from pipeline.publish.provenance import FOOTER_KEY, footer_provenance

    part = Partition.of(str(tmp_path), "toy", DATE)
    info = part.write_shard(1, 3, make_table(1), provenance=OURS)
    f = data_dir(part) / info.path
    meta = pq.read_metadata(f).metadata
    assert footer_provenance(meta) == {"version": 1, "spec_hash": "a" * 64, "checkpoint_digest": "d" * 64,
                                       "shard": 1, "num_shards": 3}
    assert b"huggingface" in meta and FOOTER_KEY in pq.read_schema(f).metadata  # HF features kept
    assert part.verify_shard(1, 3, 12, provenance=OURS) == info
    assert part.verify_shard(1, 3, 12) == info  # no provenance asked: footer, rows, CRCs only
    for other in (Provenance("b" * 64, "d" * 64), Provenance("a" * 64, "e" * 64)):
        assert part.verify_shard(1, 3, 12, provenance=other) is None  # another spec / checkpoint
    part.write_shard(2, 3, make_table(2))  # no footer provenance (another tool, an older genpipe)
    assert part.verify_shard(2, 3, 12, provenance=OURS) is None


def test_a_foreign_shard_is_removed_and_rewritten_never_accepted(tmp_path):
    """Before provenance, write_shard accepted any complete file of the right name and size: a
    resumed run with a new seed or checkpoint republished the old rows."""
    part = Partition.of(str(tmp_path), "toy", DATE)
    theirs = Provenance("b" * 64, "e" * 64)
    old = part.write_shard(0, 2, make_table(0, start=500), provenance=theirs)  # other seeds and pixels
    mine_table = make_table(0)
    mine = part.write_shard(0, 2, mine_table, provenance=OURS)
    assert mine.sha256 != old.sha256
    got = pq.read_table(data_dir(part) / mine.path)
    assert got.column("seed").to_pylist() == mine_table.column("seed").to_pylist()
    assert part.verify_shard(0, 2, 12, provenance=OURS) == mine
    assert part.verify_shard(0, 2, 12, provenance=theirs) is None
    assert part.write_shard(0, 2, mine_table, provenance=OURS) == mine  # own duplicate: accepted as is


def test_done_shards_keeps_this_runs_complete_shards_and_removes_the_rest(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    good = part.write_shard(0, 3, make_table(0, 5), provenance=OURS)
    part.write_shard(1, 3, make_table(1, 5), provenance=Provenance("b" * 64, "d" * 64))  # foreign
    bad = part.write_shard(2, 3, make_table(2, 5), provenance=OURS)
    (data_dir(part) / bad.path).write_bytes(b"PAR1 truncated")
    part.write_shard(0, 2, make_table(0, 5), provenance=OURS)  # another plan's: left alone
    assert part.done_shards(3, lambda i: 5, OURS) == {0: good}
    assert part.shard_names() == [shard_name(0, 2), good.path]


def test_a_manifest_is_never_committed_over_shards_of_another_run(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    infos = [part.write_shard(0, 2, make_table(0, 5), provenance=OURS),
             part.write_shard(1, 2, make_table(1, 5), provenance=Provenance("a" * 64, "e" * 64))]
    kw = dict(spec_hash=OURS.spec_hash, code_version="0.1.0", class_names=CLASSES, num_images=10, provenance=OURS)
    with pytest.raises(ManifestError, match="not written by this run.*part-00001"):
        part.publish(infos, **kw)
    with pytest.raises(ManifestError, match="another spec hash"):
        part.publish(infos, **{**kw, "spec_hash": "z" * 64})
    assert part.read_manifest() is None
    infos[1] = part.write_shard(1, 2, make_table(1, 5), provenance=OURS)  # replaces the foreign one
    assert part.publish(infos, **kw).num_rows == 10


def test_one_writer_per_partition_lease_refuses_a_second_and_expires(tmp_path):
    from pipeline.publish.writer_lease import LEASE_NAME, PartitionBusy, lease_for

    part = Partition.of(str(tmp_path), "toy", DATE)
    lease_file = state_dir(part) / LEASE_NAME
    part.write_shard(0, 1, make_table(0), provenance=OURS)
    with part.lease(ttl=30, owner="first") as lease:
        assert lease.held and lease_file.exists()
        with pytest.raises(PartitionBusy, match="being written by another run.*first"):
            with part.lease(ttl=30, owner="second"):
                pass
        # the lease and its companions live in the state folder: the data folder holds Parquet only
        assert pads.dataset(part.data_path, format="parquet").count_rows() == 12
        assert [p.name for p in data_dir(part).iterdir()] == [shard_name(0, 1)]
    assert not lease_file.exists()  # released at the end of the block
    with pytest.raises(RuntimeError, match="boom"):  # ... whatever ends it
        with part.lease(ttl=30, owner="third"):
            raise RuntimeError("boom")
    assert not lease_file.exists()
    # a writer that died leaves its lease behind: refused until it expires, then taken over
    dead = lease_for(part, ttl=30, owner="dead")
    assert dead.acquire()
    with pytest.raises(PartitionBusy, match="dead"):
        with part.lease(ttl=30, owner="next"):
            pass
    later = datetime.now(UTC) + timedelta(seconds=31)
    with part.lease(ttl=30, owner="next", clock=lambda: later) as lease:
        assert lease.held and json.loads(lease_file.read_text())["owner"] == "next"


def test_a_lease_left_by_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    """A SIGKILLed run, or one whose release failed (storage outage), must not block the next run
    on the same machine for a whole ttl; a holder that may be alive still does."""
    import subprocess

    from pipeline.publish.writer_lease import (
        PartitionBusy,
        lease_for,
        machine_id,
        owner_name,
        partition_lease,
    )

    if machine_id() is None:
        pytest.skip("no boot id / pid namespace here: only expiry frees a lease")
    part = Partition.of(str(tmp_path), "toy", DATE)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host, _, nonce, machine = owner_name().split(":")
    dead = lease_for(part, ttl=600, owner=f"{host}:{gone.pid}:{nonce}:{machine}")
    assert dead.acquire()
    with partition_lease(part, ttl=600, owner="next") as lease:  # its process exited: taken over
        assert lease.held
        inner = lease_for(part, ttl=600)  # a second block of this very process, while the first is live
        assert not inner.acquire()
    leftover = lease_for(part, ttl=600)  # this process, but no live block holds it (a failed release)
    assert leftover.acquire()
    with partition_lease(part, ttl=600) as lease:
        assert lease.held
    other_machine = lease_for(part, ttl=600, owner=f"{host}:{os.getpid()}:{nonce}:{'0' * 16}")
    assert other_machine.acquire()
    with pytest.raises(PartitionBusy, match=f"host {host}, pid {os.getpid()}"):  # may be alive: wait
        with partition_lease(part, ttl=600):
            pass


def test_emulated_create_only_for_stores_without_it(tmp_path):
    """gs://, az:// ... (no native create-only in fsspec): exists-check, temp key, move, no leftovers."""
    from pipeline.publish.atomic import _emulated_create_only

    fs, root = url_to_fs(f"memory://emulated-{uuid.uuid4().hex}")
    path, staging = join(root, "part-00000-of-00001.parquet"), join(root, ".staging")
    _emulated_create_only(fs, path, b"first", staging)
    with pytest.raises(FileExistsError):
        _emulated_create_only(fs, path, b"second", staging)
    assert fs.cat_file(path) == b"first" and fs.find(staging) == []
    fs.rm(root, recursive=True)


# ------------------------------------------------------------------------------------------- manifest


def test_manifest_is_written_last_and_describes_the_partition(tmp_path):
    part = Partition.of(str(tmp_path), "toy", DATE)
    assert part.read_manifest() is None and part.shard_names() == []
    infos = [part.write_shard(i, 2, make_table(i, 5)) for i in range(2)]
    assert part.read_manifest() is None  # shards alone are not a published partition
    assert part.shard_names() == [i.path for i in infos]
    kw = dict(spec_hash="h", code_version="0.1.0", class_names=CLASSES, metrics=None,
              checkpoint="s3://alice:hunter2-pass@host/ckpt")
    with pytest.raises(ManifestError, match="rows"):
        part.publish(infos, num_images=11, **kw)
    with pytest.raises(ManifestError, match="exactly 0..1"):
        part.publish(infos[1:], num_images=5, **kw)  # shard 0 missing
    with pytest.raises(ManifestError, match="different plans"):
        part.publish(infos[:1] + [ShardInfo(1, shard_name(1, 3), 5, 1, "x")], num_images=10, **kw)
    with pytest.raises(ValueError, match="shadow"):
        part.publish(infos, num_images=10, extra={"files": []}, **kw)
    assert part.read_manifest() is None
    man = part.publish(infos, num_images=10, **kw)
    on_disk = json.loads((state_dir(part) / MANIFEST_NAME).read_text())
    assert man.to_json() == on_disk and man == part.read_manifest() == read_manifest(part.data_url)
    assert on_disk["format_version"] == 2 and on_disk["job"] == "toy" and on_disk["date"] == DATE
    assert man.num_rows == 10 and man.num_shards == 2 and man.class_names == CLASSES
    assert [f.path for f in man.files] == [i.path for i in infos]
    assert [f.sha256 for f in man.files] == [i.sha256 for i in infos]
    assert man.label_counts == {"zero": 4, "one": 3, "two": 3}
    assert man.checkpoint == f"s3://{MASK}:{MASK}@host/ckpt"  # no credentials in a manifest
    mt = [p.stat().st_mtime_ns for p in data_dir(part).iterdir()]
    assert (state_dir(part) / MANIFEST_NAME).stat().st_mtime_ns >= max(mt)
    assert not Path(part.staging_path).exists()
    assert part.check(Expected(10, 5)).ok
    # a shard that disappeared after it was written blocks publishing
    (data_dir(part) / infos[1].path).unlink()
    with pytest.raises(ManifestError, match="missing"):
        part.publish(infos, num_images=10, **kw)
    (state_dir(part) / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="JSON"):
        part.read_manifest()


def test_an_inconsistent_manifest_is_refused_naming_the_file(tmp_path):
    """Issue 13 (low / item 4): an edited row count, an entry without a path: refused, with the file named."""
    part, _, man = publish(str(tmp_path))
    path = state_dir(part) / MANIFEST_NAME
    for edit, match in [(lambda m: m.update(num_rows=999), "num_rows is 999"),
                        (lambda m: m["files"][1].update(rows=99), "rows"),
                        (lambda m: m["files"][0].pop("path"), r"files\[0\] has no 'path'"),
                        (lambda m: m["files"].pop(), "exactly 0..2|rows"),
                        (lambda m: m.pop("spec_hash"), "spec_hash")]:
        doc = man.to_json()
        edit(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(ManifestError, match=match) as ei:
            part.read_manifest()
        assert str(path) in str(ei.value)


def test_manifest_paths_cannot_escape_the_partition(tmp_path):
    part, _, man = publish(str(tmp_path))
    doc = man.to_json()
    doc["files"][0]["path"] = "../../elsewhere.parquet"
    (state_dir(part) / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="escape"):
        part.read_manifest()


def test_remove_stale_keeps_the_manifest_files_and_removal_takes_the_manifest_first(tmp_path, monkeypatch):
    part, infos, man = publish(str(tmp_path))
    old = data_dir(part) / shard_name(4, 5)
    old.write_bytes(b"old plan")
    Path(part.staging_path).mkdir()
    (Path(part.staging_path) / "part-x.parquet.123").write_bytes(b"partial")
    part.write_report({"grid.png": b"png"})
    keep = {i.path for i in infos}
    with pytest.raises(ValueError, match="empty"):
        part.remove_stale(set())
    with pytest.raises(ValueError, match="manifest lists"):
        part.remove_stale({infos[0].path})
    assert sorted(part.remove_stale(keep)) == sorted([old.name, STAGING_DIR])
    assert sorted(x.name for x in data_dir(part).iterdir()) == sorted(keep)
    assert sorted(x.name for x in state_dir(part).iterdir()) == sorted([MANIFEST_NAME, "report"])
    assert part.remove_stale(keep) == []
    # removal: the manifest goes before any file it lists
    order: list[str] = []
    fs = part.fs
    real_rm_file, real_rm = fs.rm_file, fs.rm
    monkeypatch.setattr(fs, "rm_file", lambda p, *a, **k: (order.append(Path(p).name), real_rm_file(p, *a, **k)))
    monkeypatch.setattr(fs, "rm", lambda p, *a, **k: (order.append(Path(p).name), real_rm(p, *a, **k)))
    part.remove()
    monkeypatch.undo()
    assert order[0] == MANIFEST_NAME, order
    assert part.read_manifest() is None and not data_dir(part).exists() and not state_dir(part).exists()
    assert not (Path(part.root_path) / "README.md").exists()  # nothing published: no card


# ------------------------------------------------------------------------------ storage helpers


def test_urls_join_and_safe_join():
    assert join("s3://b/", "x", "/y/") == "s3://b/x/y" and join("/data", "a") == "/data/a"
    assert is_local("outputs/x") and is_local("file:///x") and not is_local("s3://b/x")
    assert not is_local("simplecache::s3://b/x")
    assert safe_join("s3://b/root", "a/./b.parquet") == "s3://b/root/a/b.parquet"
    for bad in ["../x", "a/../../x", "/etc/passwd", "s3://other/x", "C:/x", "a\\..\\x", "", ".", "~/x"]:
        with pytest.raises(ValueError, match="unsafe path"):
            safe_join("/data/root", bad)
    assert partition_url("memory://out", "job-1", DATE) == f"memory://out/job-1/data/logical_date={DATE}"
    for job, date in [("../x", DATE), ("a/b", DATE), ("job", "2026-13-01"), ("job", "yesterday")]:
        with pytest.raises(ValueError):
            partition_url("/out", job, date)
    assert shard_name(3, 42) == "part-00003-of-00042.parquet"
    with pytest.raises(ValueError):
        shard_name(42, 42)


def test_redact_removes_every_kind_of_credential(monkeypatch):
    so = {"key": "AKIDEXAMPLEKEY", "secret": "s3cr3t-value", "anon": False,
          "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "aws_session_token": "tok-123456"},
          "credentials": {"private_key": "-----BEGIN KEY-----abc"}}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-0123456789")
    text = ("failed key=AKIDEXAMPLEKEY secret=s3cr3t-value token=tok-123456 pk=-----BEGIN KEY-----abc "
            "env=env-secret-0123456789 url=https://bob:pa55word@host/p presigned=https://h/o?X-Amz-Signature=abcd&x=1 "
            "id=AKIAIOSFODNN7EXAMPLE endpoint=http://127.0.0.1:9000")
    out = redact(text, so)
    for s in ["AKIDEXAMPLEKEY", "s3cr3t-value", "tok-123456", "BEGIN KEY", "env-secret-0123456789", "pa55word",
              "abcd", "AKIAIOSFODNN7EXAMPLE"]:
        assert s not in out
    assert "https://***:***@host/p" in out and "bob" not in out and "endpoint=http://127.0.0.1:9000" in out  # the rest survives
    assert redact("nothing secret here") == "nothing secret here"
    url_to_fs("memory://x", {"token": "remembered-secret"})  # seen once by url_to_fs ...
    assert "remembered-secret" not in redact("oops remembered-secret")  # ... redacted everywhere after


def test_storage_errors_are_redacted_and_keep_their_kind():
    so = {"secret": "very-secret-value"}
    with pytest.raises(FileNotFoundError) as ei, storage_errors("reading s3://u:pw@b/x", so):
        raise FileNotFoundError("no such key; sent very-secret-value")
    assert "very-secret-value" not in str(ei.value) and "pw@" not in str(ei.value)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    with pytest.raises(StorageError) as ei, storage_errors("writing", so):
        raise RuntimeError("boom very-secret-value")
    assert "very-secret-value" not in str(ei.value) and "RuntimeError" in str(ei.value)


def test_with_retries_backs_off_then_succeeds_or_gives_up():
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky(k: int):
        def fn() -> str:
            calls["n"] += 1
            if calls["n"] <= k:
                raise ConnectionError(f"transient {calls['n']}")
            return "ok"
        return fn

    assert with_retries(flaky(3), attempts=5, base_delay=0.1, max_delay=0.3, sleep=sleeps.append) == "ok"
    assert calls["n"] == 4 and len(sleeps) == 3
    caps = [0.1, 0.2, 0.3]
    assert all(c / 2 <= s <= c for s, c in zip(sleeps, caps, strict=True))  # exponential, capped, jittered
    calls["n"], sleeps[:] = 0, []
    with pytest.raises(ConnectionError, match="transient 4"):
        with_retries(flaky(10), attempts=4, base_delay=0.01, sleep=sleeps.append)
    assert calls["n"] == 4 and len(sleeps) == 3  # bounded
    for permanent in (FileNotFoundError("x"), PermissionError("x"), FileExistsError("x"), ValueError("x"),
                      OSError(errno.EINVAL, "precondition failed")):
        n = {"c": 0}

        def fail(e: BaseException = permanent, n: dict = n) -> None:
            n["c"] += 1
            raise e

        with pytest.raises(type(permanent)):
            with_retries(fail, sleep=sleeps.append)
        assert n["c"] == 1  # never retried


# ------------------------------------------------------------------------------------------- readers


def test_hugging_face_datasets_decodes_images_and_class_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    part, infos, man = publish(str(tmp_path / "out"), channels=3)
    files = open_dataset(part.data_url).data_files
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 31
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel) and ds.features["label"].names == CLASSES
    row = ds[4]
    assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB" and row["image"].size == (5, 6)
    assert ds.features["label"].int2str(row["label"]) == CLASSES[4 % 3]
    assert row["id"] == f"toy/{DATE}/000000004" and row["date"] == DATE and row["shard"] == 0
    expected = pq.read_table(files[0]).column("image")[4].as_py()["bytes"]
    assert np.array_equal(np.asarray(row["image"]), decode_png(expected))


def test_open_dataset_reads_exactly_what_the_manifests_list(tmp_path):
    out = str(tmp_path / "out")
    publish(out, "2026-01-01", (5, 5))
    part2, _, man2 = publish(out, "2026-01-02", (4,))
    unpublished = Partition.of(out, "toy", "2026-01-03")
    unpublished.write_shard(0, 1, make_table(0, 3, date="2026-01-03"))  # no manifest: not seen

    root = open_dataset(join(out, "toy"))
    assert root.dates == ["2026-01-01", "2026-01-02"] and len(root) == 14 and root.class_names == CLASSES
    assert set(root.manifests) == {"2026-01-01", "2026-01-02"} and root.manifest is None
    t = root.arrow.to_table(filter=pads.field("date") == "2026-01-01")
    assert t.num_rows == 10 and set(t.column("date").to_pylist()) == {"2026-01-01"}
    assert "logical_date" not in root.arrow.schema.names  # the files' own columns, nothing added
    assert root.to_table(columns=["label"], filter=pads.field("label") == 1).num_rows == 3 + 1
    assert len(open_dataset(join(out, "toy", "data"))) == 14  # the data folder names the dataset too
    one = open_dataset(part2.data_url)
    assert one.dates == ["2026-01-02"] and one.manifest == man2 and len(one) == 4
    assert open_dataset(part2.state_url).manifest == man2
    assert one.data_files == [str(data_dir(part2) / f.path) for f in man2.files]
    (data_dir(part2) / "part-00000-of-00002.parquet").write_bytes(b"stale shard of an older plan")
    assert len(open_dataset(part2.data_url).arrow.to_table()) == 4  # only the manifest's files are read
    with pytest.raises(FileNotFoundError, match="no published partition"):
        open_dataset(unpublished.data_url)
    assert [p.date for p, _ in published(out, "toy")] == ["2026-01-01", "2026-01-02"]


def test_torch_dataloader_over_the_published_dataset(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    part, _, _ = publish(str(tmp_path), channels=3)
    ds = open_dataset(part.data_url)
    tds = ds.torch()
    assert len(tds) == 31
    x, y = tds[13]  # second shard
    assert x.shape == (3, 6, 5) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y == 13 % 3
    ref = pq.read_table(data_dir(part) / "part-00001-of-00003.parquet")
    assert torch.equal((x * 255).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(decode_png(ref.column("image")[1].as_py()["bytes"]).copy()))
    batches = list(DataLoader(tds, batch_size=8, shuffle=False))
    assert sum(len(b[1]) for b in batches) == 31 and batches[0][0].shape == (8, 3, 6, 5)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(31) % 3)
    copy = pickle.loads(pickle.dumps(tds))  # what DataLoader workers receive
    assert torch.equal(copy[30][0], tds[30][0])
    flipped = ds.torch(transform=lambda im: torch.tensor(np.asarray(im.transpose(Image.FLIP_LEFT_RIGHT))))
    assert flipped[0][0].shape == (6, 5, 3)


def test_memory_filesystem_and_raw_format(tmp_path):
    out = f"memory://publish-{uuid.uuid4().hex}"
    part, infos, man = publish(out, fmt="raw", channels=3)
    assert part.verify_shard(1, 3, 12) == infos[1]
    assert part.write_shard(1, 3, make_table(1, fmt="raw", channels=3, start=12),
                            provenance=Provenance("s" * 64, "c" * 64)) == infos[1]
    ds = open_dataset(join(out, "toy"))
    assert len(ds) == 31 and ds.manifests[DATE].format == "raw"
    x, y = ds.torch()[12]
    expected = make_table(1, fmt="raw", channels=3, start=12).column("image")[0].as_py()
    assert np.array_equal((x.numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0),
                          np.frombuffer(expected, np.uint8).reshape(6, 5, 3))
    assert ds.to_table().num_rows == 31
    assert part.shard_names() == [i.path for i in infos]
    assert part.check(Expected(31, 12)).ok
    fs, _ = url_to_fs(out)
    fs.rm(url_to_fs(out)[1], recursive=True)


@pytest.mark.ray
def test_ray_data_reads_the_published_files(tmp_path, ray_local):
    """Ray Data over the manifest's files (uses the session's shared local Ray)."""
    import ray

    part, _, man = publish(str(tmp_path))
    files = [str(data_dir(part) / f.path) for f in man.files]
    ds = ray.data.read_parquet(files, columns=["label", "id", "date"])
    assert ds.count() == 31
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == [f"toy/{DATE}/{i:09d}" for i in range(31)]
    assert {r["date"] for r in rows} == {DATE}
    assert os.path.exists(files[0])


# ----------------------------------------------------------------------------------- symlinks
# Issue 13, item 3: a symlinked _report/ received the report outside the partition, and a
# symlinked .genpipe-run.json had its outside target overwritten. genpipe now refuses to write,
# read its state or remove through a link inside the dataset folder (LayoutError, exit 2).


def _links(tmp_path: Path) -> tuple[Partition, Path]:
    part = Partition.of(str(tmp_path / "out"), "toy", DATE)
    outside = tmp_path / "outside"
    outside.mkdir()
    state_dir(part).mkdir(parents=True)
    return part, outside


def test_a_symlinked_report_folder_is_refused_and_nothing_is_written_outside(tmp_path):
    part, outside = _links(tmp_path)
    (state_dir(part) / "report").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LayoutError, match="symbolic link"):
        part.write_report({"report.html": b"<html>"})
    with pytest.raises(LayoutError, match="symbolic link"):
        part.check_links()
    assert list(outside.iterdir()) == []


def test_a_symlinked_run_state_is_refused_and_its_target_is_untouched(tmp_path):
    part, outside = _links(tmp_path)
    target = outside / "precious.json"
    target.write_text("keep me")
    (state_dir(part) / "run.json").symlink_to(target)
    with pytest.raises(LayoutError, match="symbolic link"):
        part.run_state("h" * 64)
    with pytest.raises(LayoutError, match="symbolic link"):
        part.check_links()
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("where", ["data", "state", "shard", "manifest", "card", "staging"])
def test_links_anywhere_below_the_dataset_root_are_refused(tmp_path, where):
    part, outside = _links(tmp_path)
    (outside / "f").write_bytes(b"outside")
    root = Path(part.root_path)
    if where == "data":
        (root / "data").mkdir()
        (root / "data" / f"logical_date={DATE}").symlink_to(outside, target_is_directory=True)
    elif where == "state":
        state_dir(part).rmdir()
        state_dir(part).symlink_to(outside, target_is_directory=True)
    elif where == "shard":
        data_dir(part).mkdir(parents=True)
        (data_dir(part) / shard_name(0, 1)).symlink_to(outside / "f")
    elif where == "manifest":
        (state_dir(part) / MANIFEST_NAME).symlink_to(outside / "f")
    elif where == "card":
        (root / "README.md").symlink_to(outside / "f")
    else:
        Path(part.staging_path).symlink_to(outside, target_is_directory=True)
    with pytest.raises(LayoutError, match="symbolic link"):
        part.check_links()
    with pytest.raises(LayoutError, match="symbolic link"):  # and the write itself refuses too
        info = part.write_shard(0, 1, make_table(0))
        part.publish([info], spec_hash="h", code_version="0", num_images=12, class_names=CLASSES)
    assert sorted(p.name for p in outside.iterdir()) == ["f"] and (outside / "f").read_bytes() == b"outside"


def test_the_dataset_root_itself_may_be_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "toy").symlink_to(real, target_is_directory=True)
    part, _, _ = publish(str(tmp_path / "out"))
    part.check_links()
    assert (real / "README.md").exists() and len(open_dataset(part.data_url)) == 31
