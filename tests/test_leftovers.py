"""Small leftovers of issues 13/14 that belong to no stage's own suite."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.ray


class _Stop(Exception):
    pass


def test_the_spec_recorded_by_ray_train_has_its_description_masked(ray_local, tmp_path, monkeypatch):
    """Ray Train records train_loop_config (the dashboard's run state): the description went in
    unmasked, with whatever credentials a user pasted into it."""
    import pipeline.train.ray_trainer as ray_trainer
    from pipeline.spec import parse_spec
    from pipeline.train import train

    seen: dict = {}

    def fake_trainer(*a, train_loop_config=None, **k):
        seen.update(train_loop_config)
        raise _Stop

    # train() builds genpipe's TorchTrainer subclass (pipeline/train/ray_trainer.py); patching the
    # name train() looks up means the test fails, not passes vacuously, if that seam moves again.
    monkeypatch.setattr(ray_trainer, "GenpipeTorchTrainer", fake_trainer)
    spec = parse_spec({
        "name": "masked", "storage": str(tmp_path / "runs"),
        "storage_options": {"secret": "pasted-storage-secret-1234"},
        "description": "mirror of s3://AKIDUSER:url-secret-5678@bucket/x; key pasted-storage-secret-1234",
    })
    with pytest.raises(_Stop):
        train(spec, "2026-01-01", {"job": spec.name})
    recorded = json.dumps(seen["spec"])
    for secret in ("url-secret-5678", "pasted-storage-secret-1234", "AKIDUSER"):
        assert secret not in recorded
    assert "mirror of s3://***:***@bucket/x" in seen["spec"]["description"]
    rest = {k: v for k, v in seen["spec"].items() if k != "description"}
    assert rest == {k: v for k, v in spec.model_dump(mode="json", exclude={"storage_options": True,
                                                                         "dataset": {"storage_options"}}).items()
                    if k != "description"}  # nothing else changed: the workers rebuild the same spec
