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


# ------------------------------------------------- hostile YAML and values (issue 13, item 5 and lows)

ALIAS_BOMB = "\n".join(
    ["name: bomb", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{x}: &{x} [{', '.join(['*' + p] * 9)}]" for p, x in zip("abcdefgh", "bcdefghi", strict=True)]
    + ["storage_options: {lol: *i}", ""])  # dict[str, Any]: validates, then expands when dumped


def _problems(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "job.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    return exc.value.problems


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    import resource
    import time

    assert len(ALIAS_BOMB) < 600  # 9^9 = 387 million strings once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    (problem,) = _problems(tmp_path, ALIAS_BOMB)
    assert problem.startswith("malformed YAML: line 2") and "anchors" in problem
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing grew
    (problem,) = _problems(tmp_path, "name: x\ndescription: *a\n")
    assert "aliases" in problem and "line 2" in problem
    (problem,) = _problems(tmp_path, "name: x\n<<: {description: y}\n")
    assert "merge keys" in problem


@pytest.mark.parametrize("text, line", [
    ("name: x\ntrain: {epochs: 2}\nsample: {seed: 1}\ntrain: {epochs: 3}\n", "line 4"),
    ("name: x\ntrain:\n  epochs: 2\n  epochs: 3\n", "line 4"),
    ("name: x\nname: y\n", "line 2"),
])
def test_a_repeated_key_is_refused(tmp_path: Path, text: str, line: str) -> None:
    (problem,) = _problems(tmp_path, text)
    assert "given twice" in problem and line in problem, problem


def test_per_class_labels_that_collapse_into_one_are_refused(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, "name: x\nsample: {per_class: {0: 10, '0': 500}}\n")
    assert problem.startswith("sample.per_class") and "label 0 is given twice" in problem
    (problem,) = _problems(tmp_path, "name: x\nsample: {per_class: {true: 10}}\n")
    assert problem.startswith("sample.per_class") and "boolean" in problem
    # the spec's own JSON round trip (keys become strings) still validates: workers rebuild it so
    spec = parse_spec({"name": "x", "sample": {"per_class": {0: 5, 3: 7}}})
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize("text", [
    "name: x\ndescription: " + "[" * 40 + "]" * 40 + "\n",  # nesting
    "name: x\ndescription: 2026-13-01\n",  # a timestamp that is no date
    "name: x\nsample: {num_images: " + "7" * 5000 + "}\n",  # past Python's int-parsing limit
])
def test_yaml_the_parser_chokes_on_is_one_malformed_line(tmp_path: Path, text: str) -> None:
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith("malformed YAML: line 2"), problem


@pytest.mark.parametrize("data, field", [
    ({"sample": {"num_images": True}}, "sample.num_images"),
    ({"sample": {"num_images": 100.0}}, "sample.num_images"),
    ({"train": {"epochs": "3"}}, "train.epochs"),
    ({"train": {"lr": True}}, "train.lr"),
    ({"gate": {"retry_epochs_factor": float("inf")}}, "gate.retry_epochs_factor"),
    ({"train": {"cpus_per_worker": float("inf")}}, "train.cpus_per_worker"),
    ({"gate": {"fid_max": float("inf")}}, "gate.fid_max"),
    ({"gate": {"uplift_min": float("nan")}}, "gate.uplift_min"),
    ({"train": {"resources_per_worker": {"TPU": float("nan")}}}, "train.resources_per_worker.TPU"),
    ({"gate": {"retries": 10, "retry_epochs_factor": 100}}, "gate.retry_epochs_factor"),
    ({"gate": {"eval_images": 10**9}}, "gate.eval_images"),
    ({"train": {"batch_size": 1}}, "train.batch_size"),
    ({"model": {"kind": "gan"}, "train": {"batch_size": 1}}, "train.batch_size"),
    ({"sample": {"output": ""}}, "sample.output"),
    ({"storage": "  "}, "storage"),
    ({"train": {"init_from": ""}}, "train.init_from"),
])
def test_values_that_would_fail_late_are_refused(data: dict, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "x", **data}, "job.yaml")
    assert any(p.startswith(field + ":") for p in exc.value.problems), exc.value.problems


def test_values_that_are_fine_stay_fine() -> None:
    s = parse_spec({"name": "x", "model": {"kind": "vae"}, "train": {"batch_size": 1, "lr": "1e-3", "epochs": 3},
                    "gate": {"retries": 2, "fid_max": 1e9}})
    assert s.train.lr == 1e-3 and s.train.batch_size == 1  # a VAE has no BatchNorm
    assert parse_overrides(["train.lr=1e-3"]) == {"train": {"lr": "1e-3"}}


def test_the_problem_listing_is_bounded(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, "name: x\n" + "".join(f"k{i}: 1\n" for i in range(5000)))
    assert problem.startswith("top level: 5000 unknown keys (k0, k1, k2, ...)") and len(problem) < 200
    with pytest.raises(SpecError) as exc:  # 30 problems of their own: 20 listed, then a count
        parse_spec({"name": "x", "train": {"resources_per_worker": {f"r{i}": -1 for i in range(30)}}})
    problems = exc.value.problems
    assert len(problems) == 21 and problems[-1] == "... and 10 more problems"
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ndescription: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(SpecError) as exc:
        load_spec(big)
    assert "at most" in exc.value.problems[0]


def test_sampling_only_fields_keep_the_checkpoint_but_change_the_rows() -> None:
    from pipeline.spec import parse_spec

    base = parse_spec({"name": "x", "model": {"kind": "ddpm"}})
    for over in ({"sampler": "ddim"}, {"sample_steps": 25}, {"guidance_scale": 3.0}):
        other = parse_spec({"name": "x", "model": {"kind": "ddpm", **over}})
        assert other.train_hash() == base.train_hash()  # the same trained weights serve both
        assert other.spec_hash() != base.spec_hash()  # but the published rows differ
    assert base.model.sampler == "dpm++2m" and base.model.sample_steps == 10
