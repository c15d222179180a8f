"""`genpipe plan`: a dry run that writes nothing anywhere, and whose prediction is what `run` then does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app

pytestmark = pytest.mark.ray


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = (Path(dirpath) / n).lstat()
            out[str(Path(dirpath, n).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _plan(spec_file: Path) -> dict:
    res = CliRunner().invoke(app, ["plan", str(spec_file), "--date", "2026-02-03", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_plan_changes_nothing_and_predicts_the_run(ray_local, tiny_spec, tmp_path) -> None:
    from pipeline.publish.commit import partition_url
    from pipeline.runner import run_job
    from tests.conftest import tiny_spec_dict

    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path, "plan-e2e")))
    spec = tiny_spec("plan-e2e")
    before = _snapshot(tmp_path)
    doc = _plan(spec_file)
    assert _snapshot(tmp_path) == before  # a dry run: nothing written, not even a folder
    assert doc["prediction"]["train"]["action"] == "scratch" and doc["prediction"]["partition"] == "unpublished"
    assert doc["shards"]["num_shards"] == 3 and doc["shards"]["rows"] == 300 and doc["cluster"]["feasible"]
    assert doc["spec_hash"] == spec.spec_hash()

    out = run_job(spec, "2026-02-03")
    assert out.status == "published"
    doc = _plan(spec_file)
    assert doc["prediction"]["partition"] == "already-published"
    assert run_job(spec, "2026-02-03").status == "already-published"

    # a published shard damaged: plan checks the files as the run does, and says the run repairs it
    from pipeline.publish.partition import Partition

    part = Partition.of(spec.sample.output, spec.name, "2026-02-03")
    shard = tmp_path / "datasets" / "plan-e2e" / "data" / "logical_date=2026-02-03" / part.shard_names()[1]
    good = shard.read_bytes()
    shard.write_bytes(good[:-100])
    doc = _plan(spec_file)
    assert doc["prediction"]["partition"] == "damaged" and doc["prediction"]["shards_reusable"] == 2
    shard.write_bytes(good)

    # the manifest gone (a crash just before it): plan says reuse the training and skip every shard
    partition = partition_url(spec.sample.output, spec.name, "2026-02-03")
    from pipeline.publish.commit import unpublish

    unpublish(partition, spec.storage_options)
    before = _snapshot(tmp_path)
    doc = _plan(spec_file)
    assert _snapshot(tmp_path) == before
    assert doc["prediction"]["train"]["action"] == "reuse" and doc["prediction"]["shards_reusable"] == 3
    again = run_job(spec, "2026-02-03")
    assert again.status == "published" and again.shards_skipped == 3


def test_plan_refuses_what_the_cluster_can_never_run(tmp_path) -> None:
    from tests.conftest import tiny_spec_dict

    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path, "plan-big", train={"num_workers": 512})))
    res = CliRunner().invoke(app, ["plan", str(spec_file), "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert not doc["cluster"]["feasible"] and "train needs" in doc["cluster"]["problems"][0]
