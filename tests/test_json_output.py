"""`--json`: every command's result as one JSON document on stdout (logs on stderr), exit codes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import tiny_spec_dict

ROOT = Path(__file__).resolve().parents[1]


def _json(args: list[str], code: int = 0) -> dict:
    res = CliRunner(mix_stderr=False).invoke(app, args) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames \
        else CliRunner().invoke(app, args)
    assert res.exit_code == code, res.output
    return json.loads(res.stdout)


def test_validate_json(tmp_path) -> None:
    doc = _json(["validate", str(ROOT / "jobs/digits-dcgan.yaml"), "--json"])
    assert doc["ok"] and doc["specs"][0]["name"] == "digits-dcgan" and len(doc["specs"][0]["spec_hash"]) == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epochs: -1}\n")
    doc = _json(["validate", str(bad), "--json"], code=2)
    assert not doc["ok"] and any("train.epochs" in p for p in doc["specs"][0]["problems"])


def test_schedule_show_json(tmp_path) -> None:
    spec = tiny_spec_dict(tmp_path, "json-sched", schedule={"cron": "0 2 * * *", "catchup_days": 0})
    f = tmp_path / "job.yaml"
    f.write_text(yaml.safe_dump(spec))
    doc = _json(["schedule", "show", str(f), "--now", "2026-05-01T01:00:00+00:00", "--json"])
    assert doc["cron"] == "0 2 * * *" and len(doc["next_runs"]) == 5
    assert doc["due"] == ["2026-04-30"] and doc["state"] == {}


@pytest.mark.ray
def test_run_and_inspect_json(ray_local, tmp_path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path, "json-run")))
    doc = _json(["run", str(f), "--date", "2026-05-02", "--json"])
    assert doc["status"] == "published" and doc["rows"] == 300 and doc["shards"] == 3
    root = str(tmp_path / "datasets" / "json-run")
    doc = _json(["inspect", root, "--json"])
    assert doc["rows"] == 300 and doc["dates"] == ["2026-05-02"] and sum(doc["per_label"].values()) == 300
    assert not Path("grid.png").exists()  # a grid only when asked
    again = _json(["run", str(f), "--date", "2026-05-02", "--json"])
    assert again["status"] == "already-published"
    # the schedule's due date published already by that run: run-due records it and says so as JSON
    sched = tmp_path / "sched.yaml"
    sched.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path, "json-run", schedule={"cron": "0 2 * * *",
                                                                                   "catchup_days": 0})))
    doc = _json(["schedule", "run-due", str(sched), "--now", "2026-05-03T01:00:00+00:00", "--json"])
    assert doc["ran"] == ["2026-05-02"] and doc["failed"] == {}
    doc = _json(["schedule", "show", str(sched), "--now", "2026-05-03T01:00:00+00:00", "--json"])
    assert "2026-05-02" in doc["state"] and doc["due"] == []
