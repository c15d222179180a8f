"""A whole job on the session's real local Ray: train -> sample (actors) -> Parquet -> manifest."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.runner import BadInput, run_job

pytestmark = pytest.mark.ray


def _read_partition(partition: str):
    """(manifest as JSON, table) of a published partition, from its data folder's URL."""
    from pipeline.publish.partition import Partition

    part = Partition.from_url(partition)
    man = part.read_manifest()
    return man.to_json(), pq.ParquetDataset([part.data_file(f.path) for f in man.files]).read()


def test_job_end_to_end_and_rerun_is_a_no_op(ray_local, tiny_spec, tmp_path):
    spec = tiny_spec("e2e", sample={"num_images": 250, "per_class": None})
    out = run_job(spec, "2026-02-03")
    assert out.status == "published" and out.rows == 250 and out.shards == 3

    man, table = _read_partition(out.partition)
    assert man["num_rows"] == 250 and man["spec_hash"] == spec.spec_hash()
    assert man["encoder"]["png_deflate"] == "libdeflate" and man["encoder"]["version"]  # what made the bytes
    assert "filter" not in man  # off unless the spec asks
    assert table.num_rows == 250 and len(set(table.column("id").to_pylist())) == 250
    labels = np.asarray(table.column("label").to_pylist())
    assert np.bincount(labels, minlength=10).tolist() == [25] * 10
    for cell in table.column("image").to_pylist():  # every PNG decodes to an 8x8 grayscale image
        img = Image.open(io.BytesIO(cell["bytes"]))
        assert img.size == (8, 8) and img.mode == "L"
    assert set(table.column("date").to_pylist()) == {"2026-02-03"}
    assert set(table.column("model").to_pylist()) == {"dcgan"}
    root = tmp_path / "datasets" / "e2e"
    for name in ("report.html", "grid.png", "metrics.json"):
        assert (root / "_genpipe" / "logical_date=2026-02-03" / "report" / name).stat().st_size > 0
    assert out.partition == str(root / "data" / "logical_date=2026-02-03")
    assert sorted(p.name for p in (root / "data" / "logical_date=2026-02-03").iterdir()) == \
        [f"part-{i:05d}-of-00003.parquet" for i in range(3)]  # the data folder: Parquet only
    assert sorted(p.name for p in (root / "_genpipe" / "logical_date=2026-02-03").iterdir()) == \
        ["manifest.json", "report", "run.json"]  # no staging left, lease released
    assert "config_name: '2026-02-03'" in (root / "README.md").read_text()

    again = run_job(spec, "2026-02-03")
    assert again.status == "already-published" and again.rows == 250

    changed = tiny_spec("e2e", sample={"num_images": 250, "seed": 5})
    with pytest.raises(BadInput, match="--overwrite"):
        run_job(changed, "2026-02-03")


def test_same_seed_same_bytes_whatever_the_actor_count_batch_or_layout(ray_local, tiny_spec, tmp_path):
    a = run_job(tiny_spec("det", sample={"num_actors": 2, "batch_size": 256, "mode": "fused",
                                         "output": str(tmp_path / "a")}), "2026-03-01")
    # one actor, tiny batches, and the split layout (actor generates, CPU tasks encode and commit)
    b = run_job(tiny_spec("det", sample={"num_actors": 1, "batch_size": 32, "mode": "split",
                                         "output": str(tmp_path / "b")}), "2026-03-01")
    _, ta = _read_partition(a.partition)
    _, tb = _read_partition(b.partition)
    assert ta.column("image").to_pylist() == tb.column("image").to_pylist()
    assert ta.column("seed").to_pylist() == tb.column("seed").to_pylist()
    other_day = run_job(tiny_spec("det", sample={"output": str(tmp_path / "c")}), "2026-03-02")
    _, tc = _read_partition(other_day.partition)
    assert ta.column("image").to_pylist() != tc.column("image").to_pylist()
