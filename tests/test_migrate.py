"""genpipe 0.1's layout (``<root>/date=D/`` with the shards beside manifest.json, .genpipe-run.json
and _report/) is never mixed with the dataset layout: every entry point refuses it with one line
(exit 2) naming ``genpipe migrate``, which moves it without changing a byte of data.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.publish import open_dataset
from pipeline.publish.layout import LayoutError
from pipeline.publish.partition import Expected, Partition, check_layout, published

DATE = "2026-01-02"


def make_old_layout(out: Path, dates: tuple[str, ...] = (DATE,), published_too: bool = True) -> Path:
    """Publish ``dates`` of job ``toy`` with this genpipe, then rearrange them as genpipe 0.1 had
    them; returns the dataset root."""
    from test_readers import PROV, make_table

    mans = {}
    for d in dates:
        part = Partition.of(str(out), "toy", d)
        infos = [part.write_shard(i, 2, make_table(d, i, 5, 5 * i), provenance=PROV) for i in range(2)]
        mans[d] = part.publish(infos, provenance=PROV, spec_hash=PROV.spec_hash, code_version="0.1.0",
                               num_images=10, class_names=["zero", "one", "two"],
                               checkpoint_digest=PROV.checkpoint_digest)
        part.run_state(PROV.spec_hash)
        part.write_report({"report.html": b"<html>old</html>"})
    for d, man in mans.items():
        part = Partition.of(str(out), "toy", d)
        old = out / "toy" / f"date={d}"
        old.mkdir()
        for f in Path(part.data_path).iterdir():
            f.rename(old / f.name)
        if published_too:
            doc = man.to_json()
            doc["format_version"] = 1
            (old / "manifest.json").write_text(json.dumps(doc))
        Path(part.run_state_path).rename(old / ".genpipe-run.json")
        Path(part.report_path).rename(old / "_report")
    for name in ("data", "_genpipe", "README.md"):
        p = out / "toy" / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return out / "toy"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_old_layout_is_refused_everywhere_with_one_line(tmp_path):
    root = make_old_layout(tmp_path / "out")
    for call in (lambda: check_layout(str(root)), lambda: open_dataset(str(root)),
                 lambda: open_dataset(str(root / f"date={DATE}")), lambda: published(str(tmp_path / "out"), "toy"),
                 lambda: Partition.of(str(tmp_path / "out"), "toy", "2026-01-03").update_card()):
        with pytest.raises(LayoutError, match=f"old layout.*genpipe migrate {root}"):
            call()
    res = cli("inspect", str(root), "--grid", str(tmp_path / "g.png"))
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "genpipe migrate" in errors[0], res.output


def test_a_run_into_an_old_layout_root_is_refused_before_any_work(tmp_path):
    import yaml
    from conftest import tiny_spec_dict

    root = make_old_layout(tmp_path / "datasets")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    spec = tiny_spec_dict(tmp_path, "toy")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    res = cli("run", str(tmp_path / "job.yaml"), "--date", "2026-01-05")
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("genpipe: error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "old layout" in errors[0], res.output
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before  # nothing written
    assert not (tmp_path / "runs").exists()  # no training started


def test_migrate_moves_published_and_unpublished_partitions_without_changing_a_byte(tmp_path):
    out = tmp_path / "out"
    root = make_old_layout(out, ("2026-01-01", DATE))
    make_old_layout(tmp_path / "other", ("2026-01-03",), published_too=False)
    shutil.move(str(tmp_path / "other" / "toy" / "date=2026-01-03"), root / "date=2026-01-03")
    shards = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.glob("date=*/part-*.parquet")}
    old_man = json.loads((root / f"date={DATE}" / "manifest.json").read_text())
    old_state = json.loads((root / f"date={DATE}" / ".genpipe-run.json").read_text())

    res = cli("migrate", str(root))
    assert res.exit_code == 0, res.output
    assert "migrated 3 partition(s)" in res.stdout
    assert not list(root.glob("date=*"))  # the old folders are gone
    moved = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.glob("data/*/part-*.parquet")}
    assert {k.replace("date=", "data/logical_date="): v for k, v in shards.items()} == moved
    part = Partition.of(str(out), "toy", DATE)
    man = part.read_manifest()
    assert man.format_version == 2 and [f.to_json() for f in man.files] == old_man["files"]
    assert man.spec_hash == old_man["spec_hash"] and man.checkpoint_digest == old_man["checkpoint_digest"]
    assert part.check(Expected(10, 5)).ok  # sizes, footers, provenance and sha256 all still hold
    assert part.run_state(old_man["spec_hash"]) == old_state  # created_at kept: a rerun writes the same bytes
    assert (Path(part.report_path) / "report.html").read_bytes() == b"<html>old</html>"
    unpublished = Partition.of(str(out), "toy", "2026-01-03")
    assert unpublished.read_manifest() is None and len(unpublished.shard_names()) == 2
    ds = open_dataset(str(root))
    assert ds.dates == ["2026-01-01", DATE] and len(ds) == 20
    assert "config_name: '2026-01-02'" in (root / "README.md").read_text()
    import pandas as pd

    assert len(pd.read_parquet(root / "data")) == 30  # the bare folder: every committed shard
    assert cli("migrate", str(root)).stdout.strip().endswith("nothing in the old layout")


def test_migrate_refuses_a_date_in_both_layouts_and_a_live_old_writer(tmp_path):
    out = tmp_path / "out"
    root = make_old_layout(out)
    from test_readers import PROV, make_table

    Partition.of(str(out), "toy", DATE).write_shard(0, 2, make_table(DATE, 0, 5, 0), provenance=PROV)
    res = cli("migrate", str(root))
    assert res.exit_code == 2 and "exists in both layouts" in res.stderr, res.output
    assert (root / f"date={DATE}" / "manifest.json").exists()  # nothing moved
    shutil.rmtree(root / "data")
    expires = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    (root / f"date={DATE}" / ".genpipe-lease.json").write_text(json.dumps({"owner": "x", "expires_at": expires}))
    res = cli("migrate", str(root))
    assert res.exit_code == 2 and "being written" in res.stderr, res.output
