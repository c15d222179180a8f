"""Sampling-time filtering: deterministic per row, never fewer rows than asked for."""

from __future__ import annotations

import numpy as np

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
