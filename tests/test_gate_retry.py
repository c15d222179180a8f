"""The gate's retry policy on a real (tiny) training: train longer for what longer training can
mend, stop at once for memorization, which it only makes worse."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipeline import runner
from pipeline.errors import JobFailed
from pipeline.evaluate import check_gate
from pipeline.runner import no_retry_reason, run_job
from pipeline.spec import GateSpec


def _measured(tiny_spec, name: str, **gate):
    return tiny_spec(name, gate={"measure": True, "retries": 1, "retry_epochs_factor": 2.0, **gate},
                     train={"epochs": 1, "checkpoint_every": 1})


def _fake_gate(monkeypatch, memorization: float) -> list[int]:
    """The evaluation replaced by fixed figures (the probes are minutes; the policy is the point),
    recording the epochs each evaluated checkpoint was trained for."""
    seen: list[int] = []

    def evaluate(spec, data, ckpt_url, rep, judge=None, res=None):
        seen.append(spec.train.epochs)
        return {"fid": 1.0, "cas": 0.2, "memorization": memorization, "generator_train_images": 1437}

    monkeypatch.setattr(runner, "evaluate_checkpoint", evaluate)
    return seen


def test_memorization_failure_is_not_retried(ray_local, tiny_spec, monkeypatch) -> None:
    seen = _fake_gate(monkeypatch, memorization=0.5)
    spec = _measured(tiny_spec, "mem", memorization_max=0.05)
    with pytest.raises(JobFailed) as exc:
        run_job(spec, "2026-02-03")
    assert seen == [1]  # one training, one evaluation: no longer retry
    msg = str(exc.value)
    assert "memorization 0.5 > memorization_max 0.05" in msg and "memorization is not retried" in msg
    assert "1437 training images" in msg and "nothing was published" in msg
    runs = list((Path(spec.storage) / "mem" / "train").iterdir())
    assert len(runs) == 1


def test_other_failures_are_retried_with_longer_training(ray_local, tiny_spec, monkeypatch) -> None:
    seen = _fake_gate(monkeypatch, memorization=0.0)
    spec = _measured(tiny_spec, "cas", cas_min=0.9, memorization_max=0.05)
    with pytest.raises(JobFailed) as exc:
        run_job(spec, "2026-02-03")
    assert seen == [1, 2]  # retried once, twice as long, resuming the first run's checkpoint
    assert "after 2 attempt(s)" in str(exc.value) and "not retried" not in str(exc.value)


def test_no_retry_reason() -> None:
    gate = GateSpec(cas_min=0.9, fid_max=1, memorization_max=0.01)
    assert no_retry_reason({}, []) is None
    assert no_retry_reason({}, check_gate(gate, {"cas": 0.2, "fid": 9, "memorization": 0.0})) is None
    failures = check_gate(gate, {"cas": 0.2, "fid": 0.5, "memorization": 0.5})
    assert failures == ["cas 0.2 < cas_min 0.9", "memorization 0.5 > memorization_max 0.01"]
    assert [f.metric for f in failures] == ["cas", "memorization"]  # decided by the metric, not the wording
    why = no_retry_reason({"generator_train_images": 143}, failures)
    assert why is not None and "143 training images" in why
    again = pickle.loads(pickle.dumps(failures))
    assert again == failures and [f.metric for f in again] == ["cas", "memorization"]
