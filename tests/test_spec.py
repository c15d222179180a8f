"""Job spec validation: good files load, bad ones report every problem with its field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.spec import JobSpec, SpecError, load_spec, parse_overrides, parse_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_validate(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, JobSpec)
    assert spec.name


def test_defaults_are_the_demo_shape() -> None:
    spec = parse_spec({"name": "x"})
    assert spec.model.kind == "dcgan" and spec.dataset.source == "digits"
    assert spec.train.num_workers == 2 and spec.sample.num_images == 10_000


@pytest.mark.parametrize(
    "data, field",
    [
        ({"name": "x", "bogus": 1}, "bogus"),
        ({"name": "x", "train": {"epoch": 3}}, "train.epoch"),
        ({"name": "x", "train": {"lr": -0.1}}, "train.lr"),
        ({"name": "x", "train": {"epochs": "many"}}, "train.epochs"),
        ({"name": "x", "sample": {"num_images": 0}}, "sample.num_images"),
        ({"name": "x", "sample": {"shard_size": 0}}, "sample.shard_size"),
        ({"name": "x", "sample": {"per_class": {1: -3}}}, "sample.per_class"),
        ({"name": "x", "model": {"kind": "gpt"}}, "model"),
        ({"name": "x", "model": {"kind": "vae", "beta": 0}}, "model.beta"),
        ({"name": "x", "model": {"kind": "ddpm", "timesteps": 20, "sample_steps": 50}}, "model"),
        ({"name": "x", "dataset": {"source": "imagenet"}}, "dataset.source"),
        ({"name": "x", "dataset": {"source": "image_folder"}}, "dataset"),
        ({"name": "Bad Name!"}, "name"),
        ({}, "name"),
    ],
)
def test_bad_specs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(data, "job.yaml")
    assert any(p.startswith(field) for p in exc.value.problems), exc.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "x", "train": {"lr": -1, "epochs": 0}, "sample": {"shard_size": 0}})
    assert len(exc.value.problems) == 3


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain:\n  epochs: [1, 2\n")
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    assert "malformed YAML" in exc.value.problems[0] and "line" in exc.value.problems[0]


def test_overrides_parse_as_yaml_scalars() -> None:
    assert parse_overrides(["train.epochs=3", "sample.format=raw"]) == {
        "train": {"epochs": 3}, "sample": {"format": "raw"}}
    with pytest.raises(SpecError):
        parse_overrides(["train.epochs"])


def test_spec_hash_ignores_where_and_how_fast() -> None:
    a = parse_spec({"name": "x"})
    b = parse_spec({"name": "x", "sample": {"output": "s3://b/x", "num_actors": 7, "batch_size": 64},
                    "storage_options": {"key": "k"}})
    c = parse_spec({"name": "x", "sample": {"seed": 1}})
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()
    assert a.train_hash() == c.train_hash()


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {lr: -1, epochz: 2}\n")
    good = ROOT / "jobs" / "digits-dcgan.yaml"
    r = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "train.epochz" in r.stderr and "Traceback" not in r.stderr
