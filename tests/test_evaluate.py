"""Sample-quality metrics and the quality gate, on scikit-learn's real digits (no Ray)."""

from __future__ import annotations

import json
import math
import uuid

import fsspec
import numpy as np
import pytest
import torch

from pipeline.evaluate import (
    FEATURE_RECIPE,
    ProbeRecipe,
    RealSplit,
    Recipe,
    accuracy,
    base_accuracies,
    baseline_key,
    baseline_url,
    cached_baseline,
    cas_report,
    check_gate,
    evaluate_quality,
    extract_features,
    fid,
    frechet_distance,
    frechet_distance_from_stats,
    get_feature_net,
    mean_ci95,
    memorization,
    probe_accuracies,
    stratified_subset,
    synthetic_rows,
    train_classifier,
    uplift,
)
from pipeline.spec import GateSpec

# cheap recipe for the fresh classifiers of the tests (the defaults are measured in the report)
FAST = Recipe(base_width=16, epochs=10, min_steps=150)
TINY = Recipe(base_width=8, feature_dim=32, epochs=1, min_steps=40)
# cheap probes (the default trains >= 1000 steps)
QUICK = ProbeRecipe(epochs=5, min_steps=150)
TINY_PROBE = ProbeRecipe(hidden=32, epochs=1, min_steps=30)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread avoids OpenMP stalls when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    from pipeline.data.base import stratified_split

    d = load_digits()
    # 0..16 ink levels -> [-1, 1] -> uint8 by the sampler's rule
    x = (d.images.astype(np.float64) / 16.0 * 2 - 1 + 1) * 127.5
    x = x.round().clip(0, 255).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, 0.2, 0)
    return {"xtr": x[tr], "ytr": y[tr], "xte": x[te], "yte": y[te]}


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="module")
def feature_net(digits: dict, feature_cache: str):
    """The default feature net (FEATURE_RECIPE), trained once for the module."""
    return get_feature_net(
        feature_cache, "digits-test", digits["xtr"], digits["ytr"], 10, digits["xte"], digits["yte"]
    )


def _real(digits: dict) -> RealSplit:
    return RealSplit.checked(digits["xtr"], digits["ytr"], digits["xte"], digits["yte"], 10)


def _noisy(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (x.astype(np.float64) + rng.normal(0, sigma, x.shape)).round().clip(0, 255).astype(np.uint8)


# -- Fréchet distance -----------------------------------------------------------------------


def test_frechet_closed_form_diagonal() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # commuting covariances: d^2 = |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2
    expected = float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2))
    got = frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb))
    assert got == pytest.approx(expected, rel=1e-12)
    assert frechet_distance_from_stats(mu_a, np.diag(va), mu_a, np.diag(va)) == pytest.approx(0, abs=1e-12)


def test_frechet_matches_scipy_sqrtm_on_general_covariances() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    for d in (2, 7, 32):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        sa, sb = a @ a.T + 0.1 * np.eye(d), b @ b.T  # non-commuting, one of them near-singular
        mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
        covmean = scipy_linalg.sqrtm(sa @ sb).real
        ref = float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))
        assert frechet_distance_from_stats(mu_a, sa, mu_b, sb) == pytest.approx(ref, rel=1e-8)


def test_frechet_from_samples_approaches_closed_form() -> None:
    rng = np.random.default_rng(2)
    n = 40_000
    a = rng.normal(0.0, 1.0, size=(n, 4))
    b = rng.normal(0.5, 2.0, size=(n, 4))
    expected = 4 * 0.5**2 + 4 * (1.0 - 2.0) ** 2  # = 5
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_feature_net_accuracy_and_fid_grows_with_noise(digits: dict, feature_net) -> None:
    model, info = feature_net
    assert info["test_acc"] >= 0.97  # a real classifier, not a random projection
    assert info["test_acc"] == pytest.approx(accuracy(model, digits["xte"], digits["yte"]))
    x = digits["xtr"]
    assert fid(model, x, x) == pytest.approx(0.0, abs=1e-6)
    feats = extract_features(model, x)
    assert feats.shape == (len(x), FEATURE_RECIPE.feature_dim) and feats.dtype == np.float64
    scores = [fid(model, x, _noisy(x, sigma, seed=3)) for sigma in (10.0, 40.0, 90.0)]
    assert 0 < scores[0] < scores[1] < scores[2], scores
    floor = fid(model, x, digits["xte"])  # a held-out real sample: small, but not zero
    assert 0 < floor < scores[2]


# -- feature-net cache ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_feature_net_cache_roundtrip(digits: dict, tmp_path, where: str) -> None:
    url = str(tmp_path / "cache") if where == "local" else f"memory://genpipe-test-{uuid.uuid4().hex}/cache"
    args = (url, "digits-tiny", digits["xtr"], digits["ytr"], 10, digits["xte"], digits["yte"])
    m1, info1 = get_feature_net(*args, recipe=TINY)
    assert info1["from_cache"] is False and info1["url"].endswith("/features-digits-tiny.pt")
    m2, info2 = get_feature_net(*args, recipe=TINY)
    assert info2["from_cache"] is True
    assert info2["test_acc"] == info1["test_acc"] and info2["num_train"] == len(digits["xtr"])
    np.testing.assert_array_equal(extract_features(m1, digits["xte"]), extract_features(m2, digits["xte"]))
    if where == "local":
        assert [p.name for p in (tmp_path / "cache").iterdir()] == ["features-digits-tiny.pt"]  # no temp left


def test_feature_net_cache_replaces_unusable_file(digits: dict, tmp_path) -> None:
    (tmp_path / "features-digits-tiny.pt").write_bytes(b"not a checkpoint")
    args = (str(tmp_path), "digits-tiny", digits["xtr"], digits["ytr"], 10, digits["xte"], digits["yte"])
    _, info = get_feature_net(*args, recipe=TINY)
    assert info["from_cache"] is False and "cache unusable" in info["reason"]
    _, info = get_feature_net(*args, recipe=TINY)
    assert info["from_cache"] is True


def test_training_is_deterministic(digits: dict) -> None:
    a = train_classifier(digits["xtr"], digits["ytr"], 10, seed=7, steps=20, recipe=TINY)
    b = train_classifier(digits["xtr"], digits["ytr"], 10, seed=7, steps=20, recipe=TINY)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


# -- CAS and uplift -------------------------------------------------------------------------


def test_cas_of_real_data_matches_real_accuracy(digits: dict) -> None:
    # the real train split, reordered, plays the synthetic set: CAS must land on real_acc
    perm = np.random.default_rng(0).permutation(len(digits["xtr"]))
    rep = cas_report(_real(digits), digits["xtr"][perm], digits["ytr"][perm], seeds=[0, 1, 2], recipe=QUICK)
    assert rep["real_acc"] > 0.93 and len(rep["cas_per_seed"]) == 3 == len(rep["real_acc_per_seed"])
    assert abs(rep["cas"] - rep["real_acc"]) < 0.03
    assert rep["cas_ratio"] == pytest.approx(rep["cas"] / rep["real_acc"])
    lo, hi = rep["cas_ci95"]
    assert lo <= rep["cas"] <= hi


def test_cas_of_wrong_labels_is_low(digits: dict) -> None:
    shuffled = np.random.default_rng(0).permutation(digits["ytr"])
    rep = cas_report(_real(digits), digits["xtr"], shuffled, seeds=[0, 1], recipe=QUICK)
    assert rep["cas"] < 0.3 < rep["real_acc"]


def test_probe_members_are_independent_of_each_other(digits: dict) -> None:
    # a seed's classifier depends on its seed and rows only, not on the other members of the batch
    args = (digits["xtr"], digits["ytr"], digits["xte"], digits["yte"], 10)
    both = probe_accuracies(*args, seeds=[3, 4], recipe=TINY_PROBE)
    alone = probe_accuracies(*args, seeds=[4], recipe=TINY_PROBE)
    assert both[1] == pytest.approx(alone[0], abs=1e-9)
    rows = [np.arange(300), np.arange(300, 600)]
    own = probe_accuracies(*args, seeds=[3, 4], recipe=TINY_PROBE, members=rows)
    assert own[1] == pytest.approx(probe_accuracies(digits["xtr"][300:600], digits["ytr"][300:600],
                                                    *args[2:], seeds=[4], recipe=TINY_PROBE)[0], abs=1e-9)
    with pytest.raises(ValueError, match="same length"):
        probe_accuracies(*args, seeds=[3, 4], recipe=TINY_PROBE, members=[np.arange(3), np.arange(4)])
    assert ProbeRecipe().steps_for(100) == 1000 and ProbeRecipe().steps_for(100_000) > 1000  # scales with n


def test_mean_ci95() -> None:
    ci = mean_ci95([0.9, 0.92, 0.94, 0.96, 0.98])
    assert ci["mean"] == pytest.approx(0.94) and ci["n"] == 5
    half = 2.776 * np.std([0.9, 0.92, 0.94, 0.96, 0.98], ddof=1) / np.sqrt(5)  # Student's t, 4 dof
    assert ci["ci95"] == pytest.approx([0.94 - half, 0.94 + half])
    assert mean_ci95([0.5])["ci95"] == [None, None]


def test_stratified_subset() -> None:
    labels = np.repeat(np.arange(5), [50, 30, 10, 3, 1])
    sub = stratified_subset(labels, 0.1, seed=4)
    counts = np.bincount(labels[sub], minlength=5)
    assert counts.tolist() == [5, 3, 1, 1, 1]  # ~10 % of each class, at least one
    np.testing.assert_array_equal(sub, stratified_subset(labels, 0.1, seed=4))
    assert not np.array_equal(sub, stratified_subset(labels, 0.1, seed=5))


def test_synthetic_rows_cap_the_synthetic_share() -> None:
    assert len(synthetic_rows(2000, 144, 1.0, seed=0)) == 144
    assert len(synthetic_rows(2000, 144, None, seed=0)) == 2000
    assert len(synthetic_rows(100, 144, 2.0, seed=0)) == 100  # never more than there are
    assert not np.array_equal(synthetic_rows(2000, 144, 1.0, 0), synthetic_rows(2000, 144, 1.0, 1))


def test_uplift_of_real_data_is_positive(digits: dict) -> None:
    # the real train split as "synthetic": a 10 % real subset must gain from it
    real = _real(digits)
    up = uplift(real.train_x, real.train_y, digits["xtr"], digits["ytr"], real.test_x, real.test_y, 10,
                seeds=[0, 1], fraction=0.1, synthetic_ratio=None, recipe=QUICK)
    assert len(up["per_seed"]) == 2 and up["seeds"] == [0, 1]
    assert up["mean"] == pytest.approx(np.mean(up["per_seed"]))
    assert up["num_synthetic"] == len(digits["xtr"])
    assert 130 <= up["num_real"] <= 150  # 10 % of 1,437, stratified
    assert all(u > 0 for u in up["per_seed"]), up
    assert up["aug_acc"] > 0.94 and up["base_acc"] < up["aug_acc"]
    json.dumps(up)


def test_base_accuracies_equal_the_base_side_of_uplift(digits: dict) -> None:
    # the cached baselines must be the very numbers uplift would measure itself
    real = _real(digits)
    args = (real.train_x, real.train_y, digits["xtr"][:200], digits["ytr"][:200], real.test_x, real.test_y, 10)
    base = base_accuracies(real.train_x, real.train_y, real.test_x, real.test_y, 10, seeds=[3, 4], fraction=0.1,
                           recipe=TINY_PROBE)
    up = uplift(*args, seeds=[3, 4], fraction=0.1, recipe=TINY_PROBE)
    assert base == pytest.approx(up["base_acc_per_seed"], abs=1e-9)
    given = uplift(*args, seeds=[3, 4], fraction=0.1, recipe=TINY_PROBE, base_acc=base)
    assert given["aug_acc_per_seed"] == pytest.approx(up["aug_acc_per_seed"], abs=1e-9)
    with pytest.raises(ValueError, match="base_acc has 1 values for 2 seeds"):
        uplift(*args, seeds=[3, 4], base_acc=[0.5])


@pytest.mark.parametrize("where", ["local", "memory"])
def test_cached_baseline_computes_once_and_distrusts_bad_files(tmp_path, where: str) -> None:
    url = str(tmp_path / "cache") if where == "local" else f"memory://genpipe-test-{uuid.uuid4().hex}/cache"
    calls: list[int] = []

    def compute() -> list[float]:
        calls.append(1)
        return [0.5, 0.25]

    key = baseline_key("probe_subset", "cpu", seeds=[0, 1], fraction=0.1)
    assert cached_baseline(url, "digits-x", key, compute) == ([0.5, 0.25], False)
    assert cached_baseline(url, "digits-x", key, compute) == ([0.5, 0.25], True)
    assert len(calls) == 1
    other = baseline_key("probe_subset", "cpu", seeds=[0, 1], fraction=0.2)  # any dependency changes: a miss
    assert cached_baseline(url, "digits-x", other, compute)[1] is False and len(calls) == 2
    fs, path = fsspec.core.url_to_fs(baseline_url(url, "digits-x", key))
    fs.pipe_file(path, b"{not json")  # unreadable: recomputed and rewritten
    assert cached_baseline(url, "digits-x", key, compute) == ([0.5, 0.25], False)
    fs.pipe_file(path, json.dumps({"key": {"kind": "something else"}, "value": 0.99}).encode())
    assert cached_baseline(url, "digits-x", key, compute) == ([0.5, 0.25], False)  # mismatched key
    assert cached_baseline(url, "digits-x", key, compute) == ([0.5, 0.25], True)
    with pytest.raises(ValueError, match="safe file name"):
        baseline_url(url, "../escape", key)


def test_memorization_copy_versus_fresh(digits: dict) -> None:
    train = digits["xtr"]
    rng = np.random.default_rng(0)
    blend = ((train[10].astype(np.float64) + train[11]) / 2).round().astype(np.uint8)
    generated = np.stack(
        [
            train[5],  # exact copy
            _noisy(train[100:101], 2.0, seed=1)[0],  # copy with faint noise
            rng.integers(0, 256, train.shape[1:], dtype=np.uint8),  # fresh noise
            blend,  # between two training images: novel
        ]
    )
    res = memorization(generated, train, return_ratios=True)
    assert res.ratios[0] == 0.0 and res.ratios[1] < 1 / 3
    assert res.ratios[2] > 1 / 3 and res.ratios[3] > 1 / 3
    assert res.fraction == pytest.approx(0.5)
    assert res.nearest[0] == 5 or np.array_equal(train[res.nearest[0]], train[5])
    # chunking does not change anything; a duplicated training image is still one image
    res2 = memorization(generated, np.concatenate([train, train[5:6]]), return_ratios=True, chunk=1)
    np.testing.assert_allclose(res2.ratios, res.ratios)
    assert res2.num_train_unique == res.num_train_unique


def test_memorization_of_held_out_real_data_is_low(digits: dict) -> None:
    res = memorization(digits["xte"], digits["xtr"])
    assert res.fraction < 0.05


# -- the gate -------------------------------------------------------------------------------


def test_check_gate_pass_fail_and_skip() -> None:
    metrics = {"fid": 41.2, "cas": 0.95, "memorization": 0.001, "uplift_same_data": 0.02}
    assert check_gate(GateSpec(), metrics) == []  # every threshold None: nothing checked
    ok = GateSpec(fid_max=50, cas_min=0.9, memorization_max=0.01, uplift_min=0.0)
    assert check_gate(ok, metrics) == []
    bad = GateSpec(fid_max=30, cas_min=0.97, memorization_max=0.0001, uplift_min=0.05)
    assert check_gate(bad, metrics) == [
        "fid 41.2 > fid_max 30",
        "cas 0.95 < cas_min 0.97",
        "memorization 0.001 > memorization_max 0.0001",
        "uplift_same_data 0.02 < uplift_min 0.05",
    ]
    assert check_gate(GateSpec(fid_max=30), {"cas": 1.0}) == ["fid missing (fid_max 30)"]
    assert check_gate(GateSpec(fid_max=30), {"fid": math.nan}) == ["fid is nan (fid_max 30)"]


def test_evaluate_quality_end_to_end(digits: dict, feature_net, feature_cache: str) -> None:
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(digits["xtr"]), 400)
    synth, synth_y = _noisy(digits["xtr"][pick], 12.0, seed=5), digits["ytr"][pick]
    messages: list[str] = []
    m = evaluate_quality(_real(digits), synth, synth_y, feature_cache, "digits-test", progress=messages.append,
                         recipe=TINY_PROBE, seeds=2)
    for key in ("feature_net_test_acc", "fid", "fid_real_floor", "cas", "cas_ci95", "real_acc", "cas_ratio",
                "uplift_distill", "uplift_distill_ci95", "uplift_same_data", "uplift_full", "uplift_protocols",
                "memorization", "generator_train_images", "num_synthetic", "eval_seconds"):
        assert key in m, key
    assert m["feature_net_from_cache"] is True  # the module's feature net, not a new one
    assert m["feature_net_test_acc"] == feature_net[1]["test_acc"]
    assert m["num_synthetic"] == 400 and len(m["uplift_distill_per_seed"]) == 2 == len(m["cas_per_seed"])
    assert m["uplift_full"] == m["uplift_same_data"]  # the generator saw the whole split: one experiment
    assert "more real data than the classifier" in m["uplift_protocols"]["uplift_distill"]
    assert m["fid"] > 0 and m["fid_real_floor"] > 0 and 0 <= m["memorization"] <= 1
    assert json.loads(json.dumps(m)) == m  # flat and JSON-able
    assert messages and any("fid" in s for s in messages)
    assert check_gate(GateSpec(fid_max=m["fid"] * 2), m) == []
    assert check_gate(GateSpec(fid_max=m["fid"] / 2), m)[0].startswith("fid ")
    # a second evaluation of the same dataset (a gate retry, the next night) reuses the real-only
    # baselines: same numbers, fewer classifiers trained
    m2 = evaluate_quality(_real(digits), synth, synth_y, feature_cache, "digits-test", recipe=TINY_PROBE, seeds=2)
    assert m["baselines_from_cache"] is False and m2["baselines_from_cache"] is True
    assert m2["real_acc"] == m["real_acc"] and m2["uplift_distill_base_acc"] == m["uplift_distill_base_acc"]
    assert m2["cas"] == m["cas"] and m2["uplift_distill_per_seed"] == m["uplift_distill_per_seed"]


def test_evaluate_quality_on_a_train_fraction_measures_against_the_generators_subset(
        digits: dict, feature_net, feature_cache: str) -> None:
    # the generator saw a 25 % subset: memorization and uplift_same_data refer to it, uplift_full to the split
    sub = stratified_subset(digits["ytr"], 0.25, seed=0)
    real = RealSplit.checked(digits["xtr"][sub], digits["ytr"][sub], digits["xte"], digits["yte"], 10,
                             digits["xtr"], digits["ytr"])
    copies = digits["xtr"][sub][:100]  # exact copies of the generator's own training images
    m = evaluate_quality(real, copies, digits["ytr"][sub][:100], feature_cache, "digits-test", recipe=TINY_PROBE,
                         seeds=2)
    assert m["generator_train_images"] == len(sub) and m["num_real_train"] == len(digits["xtr"])
    assert m["memorization"] == 1.0
    assert m["uplift_same_data_num_real"] == len(sub) and m["uplift_full_num_real"] == len(digits["xtr"])
    assert m["uplift_full"] != m["uplift_same_data"]


def test_evaluate_quality_side_by_side_in_ray_tasks_gives_the_same_figures(
        digits: dict, feature_net, tmp_path, ray_local) -> None:
    # the evaluation's classifiers as one-CPU Ray tasks (what a CPU job does) or one after the other
    # in this process: each is a function of its arguments only, so every figure is identical
    from pipeline.evaluate.executor import RayTasks

    sub = stratified_subset(digits["ytr"], 0.5, seed=1)  # the generator saw a subset: all 4 ensembles + full base
    real = RealSplit.checked(digits["xtr"][sub], digits["ytr"][sub], digits["xte"], digits["yte"], 10,
                             digits["xtr"], digits["ytr"])
    synth, synth_y = _noisy(digits["xtr"][:300], 12.0, seed=2), digits["ytr"][:300]
    kw = {"recipe": TINY_PROBE, "feature_recipe": TINY, "seeds": 2, "synthetic_ratio": 1.0}
    serial = evaluate_quality(real, synth, synth_y, str(tmp_path / "serial"), "digits-x", **kw)
    tasks = RayTasks(num_cpus=1)
    tasks.PUT_BYTES = 1024  # the arrays go through the object store, as a real dataset's would
    side = evaluate_quality(real, synth, synth_y, str(tmp_path / "tasks"), "digits-x", executor=tasks, **kw)
    assert serial["feature_net_from_cache"] is False and side["feature_net_from_cache"] is False
    assert serial["baselines_from_cache"] is False and side["baselines_from_cache"] is False
    drop = ("stage_seconds", "probes_wall_seconds", "eval_seconds")
    assert {k: v for k, v in side.items() if k not in drop} == {k: v for k, v in serial.items() if k not in drop}
    assert side["uplift_full"] != side["uplift_same_data"]
    # what the tasks wrote to the cache is what the next evaluation reads
    again = evaluate_quality(real, synth, synth_y, str(tmp_path / "tasks"), "digits-x", executor=tasks, **kw)
    assert again["baselines_from_cache"] is True and again["feature_net_from_cache"] is True
    assert again["real_acc_per_seed"] == serial["real_acc_per_seed"] and again["cas"] == serial["cas"]


def test_evaluate_quality_rejects_mismatched_shapes(digits: dict, feature_cache: str) -> None:
    with pytest.raises(ValueError, match="image shapes differ"):
        evaluate_quality(
            _real(digits), np.zeros((10, 16, 16, 1), np.uint8), np.zeros(10, np.int64), feature_cache, "digits-test"
        )
    with pytest.raises(ValueError, match="image shapes differ"):
        RealSplit.checked(digits["xtr"], digits["ytr"], digits["xte"][:, :4], digits["yte"], 10)
    with pytest.raises(ValueError, match="real_test_labels: 3 labels for"):
        RealSplit.checked(digits["xtr"], digits["ytr"], digits["xte"], digits["yte"][:3], 10)
