"""One error base class (issue 14, item 5): every error genpipe raises on purpose is a
GenpipeError with its exit code, and the CLI maps that one type to a one-line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pipeline.cli import cli_errors
from pipeline.data.base import DataError
from pipeline.errors import BadInput, GenpipeError, JobFailed
from pipeline.feasibility import FeasibilityError
from pipeline.publish.layout import LayoutError, ManifestError
from pipeline.publish.storage import StorageError, storage_errors
from pipeline.publish.writer_lease import PartitionBusy
from pipeline.spec import SpecError
from pipeline.submit.client import SubmitError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.trainer import TrainingError

ROOT = Path(__file__).resolve().parents[1]

# (instance, exit code, the builtin it also is so that older ``except`` clauses still catch it)
CASES = [
    (BadInput("m"), 2, ValueError),
    (JobFailed("m"), 1, RuntimeError),
    (SpecError("job.yaml", ["train.lr: bad"]), 2, ValueError),
    (FeasibilityError(["needs a GPU"]), 2, ValueError),
    (DataError("m"), 2, ValueError),
    (CheckpointError("m"), 2, ValueError),
    (TrainingError("m"), 1, RuntimeError),
    (StorageError("m"), 1, OSError),
    (ManifestError("m"), 1, ValueError),
    (LayoutError("m"), 2, ValueError),
    (PartitionBusy("m"), 2, RuntimeError),
    (SubmitError(3, "m"), 3, Exception),
]


@pytest.mark.parametrize(("exc", "code", "builtin"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_error_is_a_genpipe_error_with_its_exit_code(exc, code, builtin) -> None:
    assert isinstance(exc, GenpipeError) and isinstance(exc, builtin)
    assert exc.exit_code == code


def test_submit_error_exit_code_is_per_instance() -> None:
    assert [SubmitError(c, "m").exit_code for c in (1, 2, 3)] == [1, 2, 3]
    assert SubmitError(2, "m").code == 2 and str(SubmitError(2, "m")) == "m"


def test_safe_messages_still_pass_storage_errors_unchanged() -> None:
    """Our own errors keep their class (and so their exit code) through ``storage_errors``."""
    with pytest.raises(PartitionBusy, match="^busy$"), storage_errors("writing"):
        raise PartitionBusy("busy")


def _run(exc: BaseException, capsys) -> tuple[int, list[str]]:
    @cli_errors
    def command() -> None:
        raise exc

    with pytest.raises(typer.Exit) as ei:
        command()
    return ei.value.exit_code, capsys.readouterr().err.splitlines()


class _Custom(GenpipeError):
    exit_code = 7


class _Named(GenpipeError, OSError):
    exit_code = 5
    name_in_message = True


def test_cli_maps_any_genpipe_error_to_its_exit_code_and_one_line(capsys) -> None:
    code, lines = _run(_Custom("first line\nsecond line"), capsys)
    assert code == 7 and lines == ["genpipe: error: first line second line"]
    code, lines = _run(_Named("what failed"), capsys)
    assert code == 5 and lines == ["genpipe: error: _Named: what failed"]


@pytest.mark.parametrize(("exc", "line", "code"), [
    (BadInput("train.num_workers: too many"), "genpipe: error: train.num_workers: too many", 2),
    (JobFailed("quality gate failed"), "genpipe: error: quality gate failed", 1),
    (LayoutError("x is a symbolic link"), "genpipe: error: x is a symbolic link", 2),
    (StorageError("writing s3://b/k: Boom"), "genpipe: error: StorageError: writing s3://b/k: Boom", 1),
    (ManifestError("no shards to publish"), "genpipe: error: ManifestError: no shards to publish", 1),
    (TrainingError("training failed: x"), "genpipe: error: TrainingError: training failed: x", 1),
    (SubmitError(3, "nothing answers at http://h:8265"), "genpipe: error: nothing answers at http://h:8265", 3),
])
def test_cli_lines_of_the_projects_errors_are_unchanged(exc, line, code, capsys) -> None:
    assert _run(exc, capsys) == (code, [line])


def test_cli_prints_a_spec_error_per_problem(capsys) -> None:
    code, lines = _run(SpecError("job.yaml", ["train.lr: bad", "train.epochz: unknown"]), capsys)
    assert code == 2 and lines == ["job.yaml: train.lr: bad", "job.yaml: train.epochz: unknown"]


def test_cli_keeps_its_other_mappings(capsys) -> None:
    assert _run(ConnectionError("refused"), capsys) == (3, ["genpipe: error: cluster unreachable: refused"])
    code, lines = _run(FileNotFoundError(2, "No such file or directory", "/x/y"), capsys)
    assert code == 2 and len(lines) == 1 and "/x/y" in lines[0]
    assert _run(KeyError("k"), capsys) == (1, ["genpipe: error: KeyError: 'k'"])


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bad_spec_imports_no_torch(tmp_path, command) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {lr: -1}\n")
    code = ("import sys\nfrom pipeline.cli import app\n"
            "try:\n    app([sys.argv[1], sys.argv[2]])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, 'ray' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, command, str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.split() == ["exit", "2", "False", "False"], r.stdout + r.stderr
    assert "train.lr" in r.stderr
