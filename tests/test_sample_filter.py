"""Sampling-time filtering: deterministic per row, never fewer rows than asked for."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sample.filter import candidate_seeds, filtered_generate


def _generate(seeds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # a per-image function of (seed, label), like the real sampler: one grey level per image
    return ((seeds % 251).astype(np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8))


def _judge(images: np.ndarray) -> np.ndarray:
    # "confident" about label (value % 3) when value % 5 != 0
    v = images[:, 0, 0, 0].astype(np.int64)
    prob = np.full((len(v), 3), 0.1)
    prob[np.arange(len(v)), v % 3] = np.where(v % 5 == 0, 0.4, 0.8)
    return prob / prob.sum(1, keepdims=True)


def test_filter_is_deterministic_per_row_and_keeps_every_row() -> None:
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 2**62, 400, dtype=np.int64)
    labels = np.arange(400) % 3
    a_img, a_seed, stats = filtered_generate(_generate, _judge, seeds, labels, min_confidence=0.5, max_attempts=16)
    assert len(a_img) == 400 == len(a_seed)  # never fewer rows than asked for
    # the same rows, whatever the batching: rows filtered in two halves give the same bytes
    b1 = filtered_generate(_generate, _judge, seeds[:150], labels[:150], min_confidence=0.5, max_attempts=16)
    b2 = filtered_generate(_generate, _judge, seeds[150:], labels[150:], min_confidence=0.5, max_attempts=16)
    assert np.array_equal(a_img, np.concatenate([b1[0], b2[0]])) and np.array_equal(a_seed, np.concatenate([b1[1], b2[1]]))
    # every kept image is what its recorded seed generates alone (regenerable), and accepted rows are judged right
    assert np.array_equal(a_img, _generate(a_seed, labels))
    ok = _judge(a_img).argmax(1) == labels
    assert ok.mean() > 0.95 and sum(stats.forced.values()) == int((~ok).sum())
    assert sum(stats.accepted.values()) + sum(stats.forced.values()) == 400
    assert set(stats.acceptance()) == {0, 1, 2} and all(0 < r < 1 for r in stats.acceptance().values())
    # attempt 0 is the plan's own seed: accepted rows keep it
    first = (_judge(_generate(seeds, labels)).argmax(1) == labels) & (_judge(_generate(seeds, labels)).max(1) >= 0.5)
    assert np.array_equal(a_seed[first], seeds[first])


def test_candidate_seeds_are_63_bit_and_distinct_per_attempt() -> None:
    s = np.arange(1000, dtype=np.int64)
    c = [candidate_seeds(s, k) for k in range(4)]
    assert np.array_equal(c[0], s) and all((x >= 0).all() for x in c)
    assert len({int(v) for x in c for v in x}) == 4000


def test_filter_spec_changes_the_rows_hash_not_the_weights_hash(tiny_spec) -> None:
    plain = tiny_spec("f")
    filtered = tiny_spec("f", sample={"filter": {"min_confidence": 0.5}})
    assert filtered.spec_hash() != plain.spec_hash()
    assert filtered.train_hash() == plain.train_hash()  # the same checkpoint serves both
    assert "filter" not in plain.model_dump(mode="json", exclude_none=True)["sample"]


def test_judge_key_is_the_feature_nets_unless_the_generator_saw_a_subset() -> None:
    from pipeline.sample.filter import judge_key

    assert judge_key("digits-abc", 1.0, 0) == "digits-abc"
    assert judge_key("digits-abc", 0.1, 3) == "digits-abc-f0.1-s3"


def _quick_judge(spec) -> None:
    """Put a judge trained with a small budget where the job looks for it (a real classifier of the
    digits, trained in seconds instead of the full recipe's ~40 s): the job loads it."""
    from pipeline.data import load_dataset
    from pipeline.evaluate.classifier import Recipe
    from pipeline.evaluate.features import get_feature_net
    from pipeline.publish.storage import join
    from pipeline.sample.filter import judge_key

    data = load_dataset(spec.dataset)
    _, info = get_feature_net(join(spec.storage, "_cache", "features"), judge_key(data.key, 1.0, 0),
                              data.train_u8(), data.train_y.numpy(), 10, data.test_u8(), data.test_y.numpy(),
                              recipe=Recipe(base_width=8, feature_dim=32, epochs=1, min_steps=200))
    assert info["from_cache"] is False and info["test_acc"] > 0.5


@pytest.mark.ray
def test_filtered_job_same_rows_whatever_the_layout_and_counts_survive_a_resume(ray_local, tiny_spec, tmp_path):
    """End to end on real parts: the judge is trained on the digits, the tiny DCGAN's images go
    through it, and the published rows are the same with 2 fused actors or 1 split actor with
    small batches; every row is published, the manifest adds up the per-class counts, and a
    shard regenerated on resume brings its counts back."""
    import pyarrow.parquet as pq

    from pipeline.publish.partition import Partition
    from pipeline.runner import run_job
    from pipeline.sample.plan import make_plan

    filt = {"min_confidence": 0.6, "max_attempts": 3}
    _quick_judge(tiny_spec("flt"))
    a = run_job(tiny_spec("flt", sample={"filter": filt, "num_actors": 2, "mode": "fused",
                                         "output": str(tmp_path / "a")}), "2026-04-01")
    b_spec = tiny_spec("flt", sample={"filter": filt, "num_actors": 1, "batch_size": 32, "mode": "split",
                                      "output": str(tmp_path / "b")})
    b = run_job(b_spec, "2026-04-01")
    assert a.rows == b.rows == 300

    def read(partition: str):
        part = Partition.from_url(partition)
        man = part.read_manifest()
        return man, pq.ParquetDataset([part.data_file(f.path) for f in man.files]).read()

    ma, ta = read(a.partition)
    mb, tb = read(b.partition)
    assert ta.column("image").to_pylist() == tb.column("image").to_pylist()
    assert ta.column("seed").to_pylist() == tb.column("seed").to_pylist()
    f = ma.get("filter")
    assert f == mb.get("filter")
    assert f["min_confidence"] == 0.6 and f["max_attempts"] == 3 and len(f["judge"]["digest"]) == 64
    counts = np.bincount(np.asarray(ta.column("label").to_pylist()), minlength=10)
    for k in range(10):  # every row is filled: by an accepted image, or the best of 3 after 3 rejections
        assert f["accepted"].get(str(k), 0) + f["forced"].get(str(k), 0) == counts[k]
        assert counts[k] <= f["tried"][str(k)] <= 3 * counts[k]
        assert 0.0 <= f["acceptance_rate"][str(k)] <= 1.0
    # a row whose first candidate was refused holds another seed than the plan's own
    plan = make_plan(b_spec.sample, 10, "flt", "2026-04-01")
    planned = np.concatenate([plan.shard(i).seeds for i in range(plan.num_shards)])
    replaced = int((np.asarray(ta.column("seed").to_pylist()) != planned).sum())
    tried = sum(f["tried"].values())
    assert replaced <= tried - 300  # each replaced row cost its row at least one more candidate
    assert (tried > 300) == (sum(f["accepted"].values()) < 300 or replaced > 0)

    # resume: shard 1 lost with the manifest; the rerun regenerates it, the counts come back whole
    part = Partition.from_url(b.partition)
    part.unpublish()
    part.remove_shard(1, 3)
    again = run_job(b_spec, "2026-04-01")
    assert again.status == "published" and again.shards_skipped == 2
    mc, tc = read(again.partition)
    assert mc.get("filter") == f
    assert tc.column("image").to_pylist() == tb.column("image").to_pylist()
