"""Bad input costs one clear line, never a traceback, a hung cluster or a half-written dataset.

Every case runs the real command line in a subprocess (``python -m pipeline run|validate``) and
asserts:

* exit code 2 (bad input);
* exactly one error line, and it names the field (``train.lr``) or the file at fault; no
  "Traceback" anywhere in the output. Cases that fail before Ray starts print nothing else on
  stderr at all; cases that must ask a cluster (resources) may show Ray's own connection lines;
* nothing written: every case works in its own directory, which holds its inputs, the spec's
  ``sample.output`` and ``storage`` roots, and is the process's working directory. Its
  contents (names, sizes, modification times) are the same after the command as before. The
  one unavoidable write is outside it: a command that connects to Ray leaves driver logs in
  Ray's session directory (``/tmp/ray``).

Bad input that can be seen without a cluster must be caught without one: those cases run the
CLI with a tripwire in place of ``pipeline.runner.ensure_ray`` (exit 97 if the job gets that
far), so a late check fails in a second instead of training first. Only the resource cases,
which must ask a cluster, connect to the session's local Ray (``RAY_ADDRESS``) rather than
starting one each (5-20 s a start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-04-01"
# `python -c TRIPWIRE args...` runs the real CLI, but a job that gets as far as starting Ray exits 97:
# bad input that needs no cluster must be refused before one is touched.
TRIPWIRE = """
import os, sys
import pipeline.runner as runner

def _tripwire(*args, **kwargs):
    sys.stderr.write("tripwire: the job reached ensure_ray\\n")
    sys.stderr.flush()
    os._exit(97)

runner.ensure_ray = _tripwire
sys.argv = ["genpipe", *sys.argv[1:]]
from pipeline.cli import app
app(prog_name="genpipe")
"""


def base_spec(d: Path, **over: Any) -> dict[str, Any]:
    """The smallest job that would really run (so only the injected mistake can stop it)."""
    from pipeline.spec import deep_merge

    spec = {
        "name": "bad-input",
        "dataset": {"source": "digits"},
        "model": {"kind": "dcgan", "latent_dim": 8, "base_channels": 8},
        "train": {"epochs": 1, "batch_size": 256, "num_workers": 1, "lr": 0.001},
        "sample": {"num_images": 100, "shard_size": 100, "num_actors": 1, "output": str(d / "out")},
        "gate": {"measure": False},
        "storage": str(d / "runs"),
    }
    return deep_merge(spec, over)


def write_yaml(d: Path, data: Any, name: str = "job.yaml") -> Path:
    p = d / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def write_text(d: Path, text: str | bytes, name: str = "job.yaml") -> Path:
    p = d / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def run_args(spec: Path, *extra: str) -> list[str]:
    return ["run", str(spec), "--date", DATE, *extra]


def spec_with(**over: Any) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        return run_args(write_yaml(d, base_spec(d, **over)))

    return build


def other_model_checkpoint(d: Path) -> str:
    """A real genpipe checkpoint of a VAE (the spec asks for a DCGAN)."""
    from pipeline.models import build_model
    from pipeline.spec import VAESpec
    from pipeline.train.checkpoint import save_checkpoint_dir

    fam = build_model(VAESpec(kind="vae", latent_dim=8, base_channels=8), (1, 8, 8), 10)
    ckpt = d / "in" / "vae-ckpt"
    ckpt.mkdir(parents=True)
    state = {"format": 1, "model": fam.state_dict(), "opts": {}, "epoch": 1, "step": 1, "history": [],
             "train_hash": "x", "meta": {}}
    save_checkpoint_dir(str(ckpt), state, {"kind": "vae"})
    return str(ckpt)


def corrupted_checkpoint(d: Path) -> str:
    ckpt = d / "in" / "broken-ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"PK\x03\x04 this is not a torch archive" * 10)
    (ckpt / "meta.json").write_text("{}")
    return str(ckpt)


def unwritable_dir(d: Path) -> str:
    """A directory nobody (root included) can create entries in."""
    if os.geteuid() == 0:
        return "/sys/fs/genpipe-unwritable/out"  # sysfs: EPERM even for root (never created)
    ro = d / "in" / "readonly"
    ro.mkdir(parents=True)
    ro.chmod(0o555)
    return str(ro / "out")


def a_file(d: Path, name: str) -> Path:
    p = d / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("a file where a directory should be\n")
    return p


def image_folder(d: Path, per_class: int, classes: int) -> str:
    """A folder dataset of ``classes`` class folders with ``per_class`` 8x8 PNGs each."""
    from PIL import Image

    root = d / "in" / "images"
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=(c * 25 + i) % 256).save(root / f"class{c}" / f"{i}.png")
    return str(root)


#: folders made immutable by a case (root ignores mode bits): made mutable again after the test
IMMUTABLE: list[Path] = []


def read_only_partition(d: Path) -> list[str]:
    """The partition folder of this job and date exists, and nothing can be created in it
    (the output root above it is writable: a preflight that probed only the root missed it)."""
    from pipeline.publish.layout import partition_url

    spec = base_spec(d)
    part = Path(partition_url(spec["sample"]["output"], spec["name"], DATE))
    part.mkdir(parents=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(part)], check=True)
        IMMUTABLE.append(part)
    else:
        part.chmod(0o555)
    return run_args(write_yaml(d, spec))


@pytest.fixture(autouse=True)
def _mutable_again():
    yield
    while IMMUTABLE:
        subprocess.run(["chattr", "-i", str(IMMUTABLE.pop())], check=False)


def alias_bomb(d: Path) -> list[str]:
    """525 bytes that expand to 9^9 strings; storage_options takes any mapping, so the bomb validated."""
    lines = ["name: bomb", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{x}: &{x} [{', '.join(['*' + p] * 9)}]" for p, x in zip("abcdefgh", "bcdefghi", strict=True)]
    return run_args(write_text(d, "\n".join(lines + ["storage_options: {lol: *i}", ""])))


def text_case(text: str) -> Callable[[Path], list[str]]:
    """A spec file that is the base spec's YAML followed by ``text`` (its lines come after the base's)."""
    def build(d: Path) -> list[str]:
        return run_args(write_text(d, yaml.safe_dump(base_spec(d), sort_keys=False) + text))

    return build


def set_case(*sets: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        return run_args(write_yaml(d, base_spec(d)), *[a for s in sets for a in ("--set", s)])

    return build


def date_case(value: str) -> Callable[[Path], list[str]]:
    return lambda d: ["run", str(write_yaml(d, base_spec(d))), "--date", value]


@dataclass
class Case:
    build: Callable[[Path], list[str]]
    names: str | tuple[str, ...]  # the error line must contain this (or one of these): field path or file
    ray: bool = False  # must ask a cluster: connects to the session's Ray
    marks: list[Any] = field(default_factory=list)


CASES: dict[str, Case] = {
    # --- the file itself
    "yaml-malformed": Case(lambda d: run_args(write_text(d, "name: x\ntrain: {epochs: 3\n")), "malformed YAML"),
    "yaml-tab-indent": Case(lambda d: run_args(write_text(d, "name: x\ntrain:\n\tepochs: 3\n")), "malformed YAML"),
    "yaml-not-a-mapping": Case(lambda d: run_args(write_text(d, "- name: x\n- train: 1\n")), "top level"),
    "yaml-empty": Case(lambda d: run_args(write_text(d, "")), "top level"),
    "yaml-python-tag": Case(lambda d: run_args(write_text(
        d, "name: !!python/object/apply:os.system ['touch pwned']\n")), "malformed YAML"),
    "spec-missing": Case(lambda d: run_args(d / "in" / "nope.yaml"), "nope.yaml: file not found"),
    "spec-binary": Case(lambda d: run_args(write_text(d, b"\xff\xfe\x00\x81binary")), "not a text file"),
    "spec-is-a-dir": Case(lambda d: run_args((d / "in").resolve()), "file not found"),
    # --- keys and types
    "unknown-top-key": Case(spec_with(bogus=1), "bogus"),
    "train-fraction-zero": Case(spec_with(dataset={"train_fraction": 0}), "dataset.train_fraction"),
    "train-fraction-above-one": Case(spec_with(dataset={"train_fraction": 1.5}), "dataset.train_fraction"),
    "augment-a-vae": Case(spec_with(model={"kind": "vae"}, dataset={"augment": {"enabled": True}}),
                          "dataset.augment"),
    "unknown-nested-key": Case(spec_with(train={"epoch": 3}), "train.epoch"),
    "wrong-type-int": Case(spec_with(train={"epochs": "three"}), "train.epochs"),
    "wrong-type-bool": Case(spec_with(train={"use_gpu": "maybe"}), "train.use_gpu"),
    "wrong-type-section": Case(lambda d: run_args(write_yaml(d, dict(base_spec(d), sample=5))), "sample"),
    "wrong-type-storage-options": Case(spec_with(storage_options="key=abc"), "storage_options"),
    "bad-job-name": Case(spec_with(name="../escape"), "name"),
    # --- out-of-range values
    "num-images-zero": Case(spec_with(sample={"num_images": 0}), "sample.num_images"),
    "num-images-negative": Case(spec_with(sample={"num_images": -5}), "sample.num_images"),
    "shard-size-zero": Case(spec_with(sample={"shard_size": 0}), "sample.shard_size"),
    "lr-negative": Case(spec_with(train={"lr": -0.001}), "train.lr"),
    "betas-out-of-range": Case(spec_with(train={"betas": [0.5, 1.5]}), "train.betas"),
    "labels-outside-classes": Case(spec_with(sample={"labels": [3, 12]}), "sample.labels"),
    "per-class-outside-classes": Case(spec_with(sample={"per_class": {2: 10, 11: 5}}), "sample.per_class"),
    "ddpm-steps-over-timesteps": Case(
        spec_with(model={"kind": "ddpm", "timesteps": 20, "sample_steps": 50}), "model"),
    "cron-invalid": Case(spec_with(schedule={"cron": "61 * * * *"}), "schedule.cron"),
    # --- names from registries
    "unknown-model-kind": Case(spec_with(model={"kind": "gpt"}), "model"),
    "unknown-dataset-source": Case(spec_with(dataset={"source": "imagenet"}), "dataset.source"),
    "parquet-without-path": Case(spec_with(dataset={"source": "parquet"}), "dataset"),
    # --- files and paths
    "image-folder-missing": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, dataset={"source": "image_folder",
                                                               "path": str(d / "in" / "no-such-folder")}))),
        "no-such-folder"),
    "output-is-a-file": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, sample={"output": str(a_file(d, "out-file"))}))), "out-file"),
    "output-under-a-file": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, sample={"output": str(a_file(d, "f") / "sub")}))), "in/f"),
    "output-unwritable": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, sample={"output": unwritable_dir(d)}))),
        ("sample.output", "genpipe-unwritable", "readonly")),
    "storage-is-a-file": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, storage=str(a_file(d, "runs-file"))))),
        ("storage", "runs-file")),
    # --- checkpoints given as train.init_from
    "init-from-other-model": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, train={"init_from": other_model_checkpoint(d)}))),
        "train.init_from"),
    "init-from-corrupted": Case(
        lambda d: run_args(write_yaml(d, base_spec(d, train={"init_from": corrupted_checkpoint(d)}))),
        ("train.init_from", "broken-ckpt")),
    # --- command-line arguments
    "date-not-a-date": Case(lambda d: ["run", str(write_yaml(d, base_spec(d))), "--date", "2026-13-45"], "--date"),
    "date-a-word": Case(lambda d: ["run", str(write_yaml(d, base_spec(d))), "--date", "yesterday"], "--date"),
    "set-bad-path": Case(lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "train..epochs=3"), "--set"),
    "set-no-equals": Case(lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "train.epochs"), "--set"),
    "set-unknown-field": Case(lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "train.epoch=3"),
                              "train.epoch"),
    "set-wrong-type": Case(lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "sample.num_images=lots"),
                           "sample.num_images"),
    "set-malformed-value": Case(lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "sample.labels=[1, 2"),
                                "--set"),
    "set-conflicting-paths": Case(
        lambda d: run_args(write_yaml(d, base_spec(d)), "--set", "train=1", "--set", "train.epochs=3"), "--set"),
    "yaml-list-with-set": Case(lambda d: run_args(write_text(d, "- name: x\n"), "--set", "name=y"), "top level"),
    "output-unknown-protocol": Case(spec_with(sample={"output": "nosuchproto://bucket/ds"}), "nosuchproto"),
    "validate-one-bad-of-two": Case(
        lambda d: ["validate", str(write_yaml(d, base_spec(d), "good.yaml")),
                   str(write_yaml(d, base_spec(d, train={"lr": 0}), "bad.yaml"))], "bad.yaml: train.lr"),
    # --- hostile YAML (issue 13, item 5): refused while parsing, before anything expands
    "yaml-alias-bomb": Case(alias_bomb, "anchors"),
    "yaml-alias": Case(text_case("description: *x\n"), "aliases"),
    "yaml-merge-key": Case(text_case("<<: {description: merged}\n"), "merge keys"),
    "yaml-repeated-section": Case(text_case("train: {epochs: 500}\n"), "'train' is given twice"),
    "yaml-repeated-nested-key": Case(lambda d: run_args(write_text(d, "name: x\ntrain:\n  epochs: 1\n  epochs: 9\n")),
                                     "'epochs' is given twice"),
    "yaml-too-deep": Case(text_case("description: " + "[" * 200 + "]" * 200 + "\n"), "nested deeper"),
    "yaml-bad-timestamp": Case(text_case("description: 2026-13-01\n"), "malformed YAML"),
    "yaml-5000-digit-int": Case(lambda d: run_args(write_text(d, "name: x\nsample: {num_images: " + "9" * 5000 + "}\n")),
                                "malformed YAML"),
    "yaml-two-documents": Case(lambda d: run_args(write_text(d, "name: x\n---\nname: y\n")), "malformed YAML"),
    "yaml-utf16": Case(lambda d: run_args(write_text(d, "name: x\n".encode("utf-16"))), "not a text file"),
    "spec-too-large": Case(text_case("description: '" + "x" * (1 << 20) + "'\n"), "at most"),
    "unknown-keys-flood": Case(text_case("".join(f"k{i}: 1\n" for i in range(5000))), "5000 unknown keys"),
    "per-class-label-twice": Case(lambda d: run_args(write_text(
        d, yaml.safe_dump(base_spec(d), sort_keys=False).replace("sample:\n", "sample:\n  per_class: {0: 10, '0': 500}\n"))),
        "sample.per_class"),
    "per-class-bool-label": Case(spec_with(sample={"per_class": {True: 10}}), "sample.per_class"),
    # --- values that validated and failed only after training (issue 13, lows)
    "num-images-true": Case(spec_with(sample={"num_images": True}), "sample.num_images"),
    "num-images-float": Case(spec_with(sample={"num_images": 100.5}), "sample.num_images"),
    "epochs-a-string": Case(spec_with(train={"epochs": "3"}), "train.epochs"),
    "lr-true": Case(spec_with(train={"lr": True}), "train.lr"),
    "retry-epochs-factor-inf": Case(spec_with(gate={"retry_epochs_factor": float("inf")}), "gate.retry_epochs_factor"),
    "retry-epochs-explode": Case(spec_with(gate={"retries": 10, "retry_epochs_factor": 100}),
                                 "gate.retry_epochs_factor"),
    "cpus-per-worker-inf": Case(spec_with(train={"cpus_per_worker": float("inf")}), "train.cpus_per_worker"),
    "fid-max-inf": Case(spec_with(gate={"fid_max": float("inf")}), "gate.fid_max"),
    "uplift-min-nan": Case(spec_with(gate={"uplift_min": float("nan")}), "gate.uplift_min"),
    "resource-nan": Case(spec_with(train={"resources_per_worker": {"TPU": float("nan")}}), "train.resources_per_worker"),
    "resource-negative": Case(spec_with(train={"resources_per_worker": {"CPU": -1}}), "train.resources_per_worker"),
    "batch-size-one-dcgan": Case(spec_with(train={"batch_size": 1}), "train.batch_size"),
    "batch-size-one-gan": Case(spec_with(model={"kind": "gan", "latent_dim": 8}, train={"batch_size": 1}),
                               "train.batch_size"),
    "eval-images-huge": Case(spec_with(gate={"eval_images": 10**12}), "gate.eval_images"),
    "output-empty": Case(spec_with(sample={"output": ""}), "sample.output"),
    "storage-empty": Case(spec_with(storage=""), "storage"),
    "init-from-empty": Case(spec_with(train={"init_from": " "}), "train.init_from"),
    "output-memory": Case(spec_with(sample={"output": "memory://ds"}), "sample.output"),
    "storage-memory": Case(spec_with(storage="memory://runs"), "storage"),
    "one-image-per-class": Case(lambda d: run_args(write_yaml(d, base_spec(
        d, dataset={"source": "image_folder", "path": image_folder(d, 1, 10)}, gate={"measure": True}))),
        "dataset.test_fraction"),
    "fewer-images-than-a-batch-per-worker": Case(lambda d: run_args(write_yaml(d, base_spec(
        d, dataset={"source": "image_folder", "path": image_folder(d, 2, 2)}, train={"num_workers": 2}))),
        "train.num_workers"),
    "partition-read-only": Case(read_only_partition, "sample.output"),
    # --- plans that cannot be planned (issue 13, item 6)
    "shards-too-many": Case(spec_with(sample={"num_images": 10_000_000_000, "shard_size": 1}), "sample.shard_size"),
    "num-images-above-max": Case(spec_with(sample={"num_images": 10**11, "shard_size": 10**7}), "sample.num_images"),
    "per-class-sum-above-max": Case(spec_with(sample={"per_class": {0: 10**10, 1: 10**10}, "shard_size": 10**7}),
                                    "sample.per_class"),
    # --- more a hostile or careless user tries
    "name-too-long": Case(spec_with(name="a" * 64), "name"),
    "name-empty": Case(spec_with(name=""), "name"),
    "name-with-slash": Case(spec_with(name="a/b"), "name"),
    "description-a-list": Case(spec_with(description=["a", "b"]), "description"),
    "section-null": Case(spec_with(train=None), "train"),
    "labels-repeated": Case(spec_with(sample={"labels": [1, 1]}), "sample.labels"),
    "labels-empty": Case(spec_with(sample={"labels": []}), "sample.labels"),
    "per-class-empty": Case(spec_with(sample={"per_class": {}}), "sample.per_class"),
    "per-class-negative": Case(spec_with(sample={"per_class": {1: -3}}), "sample.per_class"),
    "per-class-all-zero": Case(spec_with(sample={"per_class": {1: 0, 2: 0}}), "sample.per_class"),
    "format-unknown": Case(spec_with(sample={"format": "jpeg"}), "sample.format"),
    "channels-two": Case(spec_with(dataset={"channels": 2}), "dataset.channels"),
    "test-fraction-one": Case(spec_with(dataset={"test_fraction": 1.0}), "dataset.test_fraction"),
    "betas-one-value": Case(spec_with(train={"betas": [0.5]}), "train.betas"),
    "max-failures-below-minus-one": Case(spec_with(train={"max_failures": -2}), "train.max_failures"),
    "num-actors-zero": Case(spec_with(sample={"num_actors": 0}), "sample.num_actors"),
    "epochs-above-max": Case(spec_with(train={"epochs": 10**9}), "train.epochs"),
    "timezone-unknown": Case(spec_with(schedule={"cron": "0 2 * * *", "timezone": "Mars/Olympus"}),
                             "schedule.timezone"),
    "streaming-digits": Case(spec_with(dataset={"streaming": True}), "dataset"),
    "dataset-path-unknown-protocol": Case(spec_with(dataset={"source": "image_folder", "path": "nope://x"}), "nope"),
    "init-from-missing": Case(lambda d: run_args(write_yaml(d, base_spec(
        d, train={"init_from": str(d / "in" / "no-such-ckpt")}))), ("train.init_from", "no-such-ckpt")),
    "set-alias": Case(set_case("description=*a"), "--set"),
    "set-true-for-an-int": Case(set_case("sample.num_images=true"), "sample.num_images"),
    "set-inf": Case(set_case("gate.fid_max=.inf"), "gate.fid_max"),
    "date-iso-week": Case(date_case("2026-W01-1"), "--date"),
    "date-without-dashes": Case(date_case("20260101"), "--date"),
    "date-empty": Case(date_case(""), "--date"),
    # --- resources the cluster can never provide (asked of the session's 2-CPU, GPU-less Ray)
    "gpu-on-a-gpu-less-cluster": Case(spec_with(train={"use_gpu": True}), "train", ray=True),
    "more-workers-than-cpus": Case(spec_with(train={"num_workers": 64, "cpus_per_worker": 1}), "train", ray=True),
    "unknown-custom-resource": Case(spec_with(train={"resources_per_worker": {"TPU": 1}}), "TPU", ray=True),
    "sampling-on-gpu": Case(spec_with(sample={"use_gpu": True}), "sample", ray=True),
}


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.is_dir(), st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


def error_lines(stderr: str) -> list[str]:
    """The error lines of our CLI: ``genpipe: error: ...`` or ``<source>: <problem>``."""
    return [ln for ln in stderr.splitlines() if ln.startswith("genpipe: error:")
            or (": " in ln and not ln.startswith(("(", "[", " ")) and not ln[:4].isdigit()
                and "WARNING" not in ln and "INFO" not in ln)]


def _env(ray_address: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GENPIPE_DEBUG", "GENPIPE_FAULTS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=k, marks=c.marks) for k, c in CASES.items()]
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case: Case, tmp_path: Path, request) -> None:
    d = tmp_path / "case"
    (d / "in").mkdir(parents=True)
    argv = case.build(d)
    address = None
    if case.ray:
        ray = request.getfixturevalue("ray_local")
        address = ray.get_runtime_context().gcs_address
    before = snapshot(d)
    cmd = ["-m", "pipeline"] if case.ray else ["-c", TRIPWIRE]
    proc = subprocess.run([sys.executable, *cmd, *argv], cwd=d, env=_env(address),
                          capture_output=True, text=True, timeout=180 if case.ray else 60)
    after = snapshot(d)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == 2, out
    errs = error_lines(proc.stderr)
    if not case.ray:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # nothing but the one line
    assert len(errs) == 1, proc.stderr
    names = (case.names,) if isinstance(case.names, str) else case.names
    assert any(n in errs[0] for n in names), errs[0]
    assert before == after, f"written: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not (d / "pwned").exists() and not (ROOT / "pwned").exists()


def test_there_are_at_least_80_cases() -> None:
    assert len(CASES) >= 80
