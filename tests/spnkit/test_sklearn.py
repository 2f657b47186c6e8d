"""The scikit-learn estimators (spnkit.sklearn): scikit-learn's own checks, Bayes' rule, structures, leaves, missing values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import spnkit
from spnkit.sklearn import SPNClassifier, SPNDensity

TINY = {"num_sums": 2, "num_leaves": 2, "depth": 1, "repetitions": 2, "epochs": 2, "random_state": 0}

#: scikit-learn checks that cannot apply, with the reason (none at present: every yielded check runs)
SKIPPED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([
    SPNDensity(**TINY),
    SPNClassifier(**{**TINY, "num_sums": 3, "num_leaves": 3, "epochs": 5}),
    SPNClassifier(**{**TINY, "repetitions": 1, "shared": False}),
])
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name in SKIPPED_CHECKS:
        pytest.skip(SKIPPED_CHECKS[name])
    check(estimator)


def _blobs(n=120, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-2, 1, (n // 2, d)), rng.normal(2, 1, (n - n // 2, d))])
    return x, np.repeat([0, 1], [n // 2, n - n // 2])


# ----------------------------------------------------------------- density
def test_density_scores_are_the_circuits_marginals():
    x, _ = _blobs()
    est = SPNDensity(**TINY).fit(x)
    xm = x[:6].copy()
    xm[:3, 1] = np.nan
    mask = torch.as_tensor(np.isnan(xm))
    want = est.spn_.log_prob(torch.as_tensor(np.nan_to_num(xm)), mask).detach().numpy()
    assert np.allclose(est.score_samples(xm), want)
    assert est.score(x) == pytest.approx(est.score_samples(x).mean())
    assert len(est.history_) == 2 and est.n_features_in_ == 4


def test_density_fits_with_missing_values_and_imputes():
    x, _ = _blobs()
    holes = x.copy()
    holes[np.random.default_rng(1).random(x.shape) < 0.2] = np.nan
    est = SPNDensity(**TINY).fit(holes)
    for method in ("mpe", "sample"):
        filled = est.impute(holes, method=method, random_state=0)
        observed = ~np.isnan(holes)
        assert np.isfinite(filled).all() and np.array_equal(filled[observed], holes[observed])
    assert np.array_equal(est.impute(x), x)  # nothing missing: unchanged
    with pytest.raises(ValueError, match="method"):
        est.impute(holes, method="mean")


@pytest.mark.skipif(not hasattr(spnkit, "impute"), reason="spnkit.impute (the conditional expectation) is not in this version")
def test_density_impute_expectation_is_the_conditional_mean():
    x, _ = _blobs(200)
    est = SPNDensity(**{**TINY, "epochs": 10}).fit(x)
    holes = x[:4].copy()
    holes[:, 0] = np.nan
    filled = est.impute(holes)
    grid = torch.linspace(-20, 20, 8001, dtype=torch.float64)
    for i in range(4):  # E[x0 | rest] by quadrature of the circuit's density
        rows = torch.as_tensor(x[i]).repeat(len(grid), 1)
        rows[:, 0] = grid
        w = torch.softmax(est.spn_.log_prob(rows).detach(), 0)
        assert filled[i, 0] == pytest.approx(float((w * grid).sum()), abs=1e-6)
    assert np.array_equal(filled[:, 1:], x[:4, 1:])
    assert np.all(filled[:, 0] < 0)  # the first blob's rows: the other columns say x0 is negative


def test_density_sample_is_seeded():
    x, _ = _blobs()
    est = SPNDensity(**TINY).fit(x)
    a, b = est.sample(7, random_state=3), est.sample(7, random_state=3)
    assert a.shape == (7, 4) and np.array_equal(a, b)
    with pytest.raises(ValueError, match="n_samples"):
        est.sample(0)


@pytest.mark.parametrize("structure, extra", [
    ("random", {}),
    ("poon-domingos", {"image_shape": (4, 4), "structure_params": {"delta": 2}}),
    ("quad-tree", {"image_shape": (4, 4)}),
    ("quad-graph", {"image_shape": (4, 4, 1)}),
    ("hclt", {}),
    ("chow-liu", {"image_shape": (4, 4)}),
    ("learnspn", {"structure_params": {"min_rows": 20}}),
])
def test_every_named_structure(structure, extra):
    x = np.random.default_rng(0).normal(size=(80, 16))
    x[:, 1] += x[:, 0]  # something for the learned structures to find
    est = SPNDensity(structure, **{**TINY, **extra}).fit(x)
    assert np.isfinite(est.score_samples(x)).all()
    if structure in ("hclt", "chow-liu", "learnspn"):
        assert est.spn_.layer == "cp"
    if structure == "learnspn":
        assert est.spn_.num_sums == 1


def test_given_region_graph_and_callable():
    x, _ = _blobs(d=8)
    rg = spnkit.RegionGraph.random(8, 2, 2, seed=1)
    assert SPNDensity(rg, **TINY).fit(x).spn_.region_graph is rg
    est = SPNDensity(lambda data: spnkit.RegionGraph.random(data.shape[1], 1, 1), **TINY).fit(x)
    assert len(est.spn_.region_graph.partitions) == 1


@pytest.mark.parametrize("leaf", [spnkit.MultivariateNormal(min_var=1e-3, max_var=4.0), spnkit.Poisson(),
                                  spnkit.Normal(min_var=0.01, max_var=4.0)])
def test_leaf_family_instances(leaf):
    x, _ = _blobs(d=8)
    x = np.abs(np.round(x)) if isinstance(leaf, spnkit.Poisson) else x
    est = SPNDensity(leaf=leaf, **TINY).fit(x)
    assert est.spn_.leaf is leaf
    assert np.isfinite(est.score_samples(x)).all()


@pytest.mark.parametrize("leaf, family, data", [
    ("categorical", spnkit.Categorical, lambda rng: rng.integers(0, 5, (60, 6))),
    ("bernoulli", spnkit.Bernoulli, lambda rng: rng.integers(0, 2, (60, 6))),
    ("binomial", spnkit.Binomial, lambda rng: rng.integers(0, 9, (60, 6))),
])
def test_discrete_leaves_from_names(leaf, family, data):
    x = data(np.random.default_rng(0)).astype(float)
    est = SPNDensity(leaf=leaf, **TINY).fit(x)
    assert isinstance(est.spn_.leaf, family)
    if leaf == "categorical":
        assert est.spn_.leaf.num_categories == int(x.max()) + 1
    if leaf == "binomial":
        assert est.spn_.leaf.total_count == int(x.max())
    assert np.isfinite(est.score_samples(x)).all()
    with pytest.raises(ValueError, match="non-negative integer"):
        SPNDensity(leaf=leaf, **TINY).fit(x + 0.5)


def test_normal_leaves_take_the_datas_scale():
    x = np.random.default_rng(0).normal(50.0, 10.0, size=(100, 4))
    leaf = SPNDensity(**TINY).fit(x).spn_.leaf
    lo, hi = leaf.loc_range
    assert lo < x.mean(0).min() and hi > x.mean(0).max() and leaf.max_var >= 50 and leaf.min_var < 1


@pytest.mark.parametrize("params, message", [
    ({"structure": "hexagons"}, "structure"),
    ({"leaf": "gamma"}, "leaf"),
    ({"num_sums": 0}, "num_sums"),
    ({"epochs": -1}, "epochs"),
    ({"dtype": "float16"}, "dtype"),
    ({"structure": "poon-domingos"}, "image_shape"),
    ({"structure": "quad-tree", "image_shape": (3, 3)}, "image_shape"),
    ({"depth": 3}, "depth"),
])
def test_density_rejects_bad_parameters(params, message):
    x, _ = _blobs()
    with pytest.raises(ValueError, match=message):
        SPNDensity(**{**TINY, **params}).fit(x)


def test_density_refuses_one_feature_and_empty_columns():
    with pytest.raises(ValueError, match="1 feature"):
        SPNDensity(**TINY).fit(np.zeros((10, 1)))
    x, _ = _blobs()
    x[:, 2] = np.nan
    with pytest.raises(ValueError, match="column 2"):
        SPNDensity(**TINY).fit(x)


def test_epochs_zero_keeps_learnspn_parameters():
    x, _ = _blobs(200)
    est = SPNDensity("learnspn", epochs=0, structure_params={"min_rows": 50}, random_state=0).fit(x)
    ref = spnkit.learn_spn(torch.as_tensor(x), est.spn_.leaf, min_rows=50, seed=est._seed())
    assert est.history_ == []
    assert np.allclose(est.score_samples(x), ref.log_prob(torch.as_tensor(x)).detach().numpy())


# -------------------------------------------------------------- classifier
@pytest.mark.parametrize("shared", [True, False])
def test_classifier_is_bayes_rule(shared):
    x, y = _blobs()
    labels = np.where(y == 0, "no", "yes")
    clf = SPNClassifier(**{**TINY, "epochs": 10}, shared=shared).fit(x[:100], labels[:100])
    assert list(clf.classes_) == ["no", "yes"]
    assert np.allclose(clf.class_prior_, np.bincount(y[:100]) / 100)
    xt = torch.as_tensor(x[100:])
    cond = clf.spn_.log_prob(xt).detach().numpy() if shared else np.stack([s.log_prob(xt).detach().numpy() for s in clf.spns_], 1)
    joint = cond + np.log(clf.class_prior_)
    post = np.exp(joint - np.logaddexp(joint[:, :1], joint[:, 1:]))
    assert np.allclose(clf.predict_proba(x[100:]), post)
    assert np.array_equal(clf.predict(x[100:]), clf.classes_[joint.argmax(1)])
    assert np.allclose(clf.score_samples(x[100:]), np.logaddexp(joint[:, 0], joint[:, 1]))
    assert len(clf.spns_) == (1 if shared else 2) and (clf.spn_ is None) == (not shared)
    assert clf.score(x, labels) > 0.9


def test_classifier_priors_given_uniform_and_discriminative():
    x, y = _blobs()
    y[:20] = 1  # unbalanced: 40 / 80
    est = SPNClassifier(**TINY, class_prior=[0.9, 0.1]).fit(x, y)
    assert np.allclose(est.class_prior_, [0.9, 0.1])
    uniform = SPNClassifier(**TINY, class_prior="uniform").fit(x, y)
    assert np.allclose(uniform.class_prior_, 0.5)
    shift = np.log(est.predict_proba(x)[:, 0] / est.predict_proba(x)[:, 1]) - np.log(uniform.predict_proba(x)[:, 0] / uniform.predict_proba(x)[:, 1])
    assert np.allclose(shift, np.log(9.0))  # the same circuit; the prior moves the log-odds by log(0.9 / 0.1)
    disc = SPNClassifier(**TINY, objective="discriminative", method="adam").fit(x, y)
    assert np.allclose(disc.class_prior_, 0.5) and disc.score(x, y) > 0.8
    for params, message in [({"objective": "discriminative"}, "method='adam'"),
                            ({"objective": "discriminative", "method": "adam", "shared": False}, "shared=True"),
                            ({"class_prior": [1.0, 0.0]}, "class_prior"), ({"class_prior": "flat"}, "class_prior"),
                            ({"objective": "joint"}, "objective"), ({"structure": "learnspn"}, "shared=False")]:
        with pytest.raises(ValueError, match=message):
            SPNClassifier(**{**TINY, **params}).fit(x, y)


def test_classifier_with_missing_features():
    x, y = _blobs()
    clf = SPNClassifier(**TINY).fit(x, y)
    holes = x.copy()
    holes[:, :2] = np.nan
    full = clf.predict_proba(x)
    part = clf.predict_proba(holes)
    assert np.allclose(part.sum(1), 1) and not np.allclose(part, full)
    assert clf.score(holes, y) > 0.8  # two features still separate the blobs


def test_clone_and_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs()
    pipe = make_pipeline(StandardScaler(), SPNClassifier(**TINY)).fit(x, y)
    assert pipe.score(x, y) > 0.9
    est = clone(SPNDensity(**TINY))
    assert not hasattr(est, "spn_") and est.get_params()["num_sums"] == 2
