"""Tests of spnkit.learn (EM and fit).

Seed policy: every random draw is seeded (torch generators, hypothesis with
``derandomize=True``); statistical comparisons use tolerances of several
standard errors at the stated sample sizes. Everything runs in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spnkit
from spnkit.learn import evaluate, expected_counts, fit, m_step
from spnkit.testing.brute_force import support
from spnkit.testing.strategies import circuit_specs

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data_for(leaf: spnkit.LeafFamily, n: int, d: int, seed: int) -> torch.Tensor:
    """Samples in the support of ``leaf`` with some structure (two clusters); a mixed family's per column."""
    g = _gen(seed)
    if isinstance(leaf, spnkit.Mixed):
        return torch.cat([_data_for(leaf.family_of(c), n, 1, seed + c) for c in range(d)], dim=1)
    z = torch.rand(n, 1, generator=g) < 0.4
    if isinstance(leaf, (spnkit.Normal, spnkit.MultivariateNormal)):
        return torch.randn(n, d, generator=g, dtype=F64) * 0.7 + 1.5 * z
    if isinstance(leaf, spnkit.Poisson):
        return torch.poisson(torch.where(z, 6.0, 1.0).expand(n, d).to(F64), generator=g)
    if isinstance(leaf, spnkit.Bernoulli):
        p = torch.where(z, 0.8, 0.15).expand(n, d)
        return (torch.rand(n, d, generator=g, dtype=F64) < p).to(F64)
    k = len(support(leaf))
    return torch.where(z, torch.randint(0, k, (n, d), generator=g), torch.zeros(n, d, dtype=torch.long)).to(F64)


def _rat(num_vars=6, depth=2, reps=2, leaf=None, sums=3, leaves=3, classes=1, seed=0) -> spnkit.SPN:
    torch.manual_seed(seed)
    rg = spnkit.RegionGraph.random(num_vars, depth, reps, seed=seed)
    return spnkit.SPN(rg, leaf or spnkit.Normal(0.05, 4.0), sums, leaves, num_classes=classes).double()


# ---------------------------------------------------------------- leaf M-steps
def _weighted_data(leaf: spnkit.Leaf, shape=(2, 3), n=50, seed=0):
    """Responsibilities ``(n, *shape)`` and data ``(n, *shape)``; returns them and the expected statistics ``(*shape, S)``."""
    g = _gen(seed)
    r = torch.rand(n, *shape, generator=g, dtype=F64)
    if isinstance(leaf, spnkit.Normal):
        x = torch.randn(n, *shape, generator=g, dtype=F64) * 0.8 + 0.3
    elif isinstance(leaf, spnkit.Bernoulli):
        x = (torch.rand(n, *shape, generator=g) < 0.3).to(F64)
    else:
        x = torch.randint(0, len(support(leaf)), (n, *shape), generator=g).to(F64)
    stats = (leaf.statistics(x) * r).sum(1).movedim(0, -1)  # (S, n, *shape) -> (*shape, S)
    return r, x, stats


def test_normal_m_step_matches_weighted_mean_and_variance():
    leaf = spnkit.Normal(min_var=0.01, max_var=4.0)
    r, x, stats = _weighted_data(leaf)
    params = leaf.m_step(stats, leaf.init_params((2, 3), F64))
    rn, xn = r.numpy(), x.numpy()
    mean = np.average(xn, axis=0, weights=rn)
    var = np.average((xn - mean) ** 2, axis=0, weights=rn)
    assert np.allclose(params["loc"].numpy(), mean, atol=1e-12)
    assert np.allclose(leaf.variance(params).numpy(), var, rtol=1e-9)


@pytest.mark.parametrize("target", ["below", "above"])
def test_normal_m_step_clamps_variance_to_the_bounds(target):
    leaf = spnkit.Normal(min_var=0.5, max_var=1.0)
    g = _gen(1)
    scale = 0.1 if target == "below" else 5.0
    x = torch.randn(400, 1, generator=g, dtype=F64) * scale
    stats = leaf.statistics(x).sum(1).movedim(0, -1)  # (1, S)
    params = leaf.m_step(stats, leaf.init_params((1,), F64))
    bound = leaf.min_var if target == "below" else leaf.max_var
    assert abs(float(leaf.variance(params)) - bound) < 1e-5
    # clamping is the constrained maximizer: no variance the M-step may write (a hair
    # inside the bounds, so that the sigmoid inverts) scores higher
    def q(var: float) -> float:
        return float(torch.distributions.Normal(params["loc"], math.sqrt(var)).log_prob(x).sum())

    best = q(float(leaf.variance(params)))
    hair = 1e-6 * (leaf.max_var - leaf.min_var)
    for v in np.linspace(leaf.min_var + hair, leaf.max_var - hair, 11):
        assert best >= q(float(v)) - 1e-9


def test_bernoulli_m_step_matches_weighted_frequency():
    leaf = spnkit.Bernoulli()
    r, x, stats = _weighted_data(leaf)
    params = leaf.m_step(stats, leaf.init_params((2, 3), F64))
    freq = np.average(x.numpy(), axis=0, weights=r.numpy())
    assert np.allclose(torch.sigmoid(params["logits"]).numpy(), freq, atol=1e-9)


def test_categorical_m_step_matches_weighted_frequencies():
    leaf = spnkit.Categorical(4)
    r, x, stats = _weighted_data(leaf)
    params = leaf.m_step(stats, leaf.init_params((2, 3), F64))
    onehot = np.eye(4)[x.numpy().astype(int)]  # (n, 2, 3, 4)
    freq = (onehot * r.numpy()[..., None]).sum(0) / r.numpy().sum(0)[..., None]
    assert np.allclose(torch.softmax(params["logits"], -1).numpy(), freq, atol=1e-7)


@pytest.mark.parametrize("leaf", [spnkit.Normal(0.01, 4.0), spnkit.Bernoulli(), spnkit.Categorical(3)], ids=repr)
def test_m_step_keeps_factors_without_data(leaf):
    _, _, stats = _weighted_data(leaf)
    stats[0, 1] = 0
    old = leaf.init_params((2, 3), F64)
    new = leaf.m_step(stats, old)
    for name in old:
        assert torch.equal(new[name][0, 1], old[name][0, 1])
        assert not torch.equal(new[name][1, 2], old[name][1, 2])


@pytest.mark.parametrize("leaf", [spnkit.Normal(0.01, 4.0), spnkit.Bernoulli(), spnkit.Categorical(3)], ids=repr)
def test_mean_statistics_match_monte_carlo_and_invert_m_step(leaf):
    torch.manual_seed(0)
    params = leaf.init_params((3,), F64)
    n = 20000
    draws = leaf.sample({k: v.expand(n, *v.shape) for k, v in params.items()}, _gen(1))  # (n, 3)
    stats = leaf.statistics(draws)  # (S, n, 3)
    mc, se = stats.mean(1).movedim(0, -1), stats.std(1).movedim(0, -1) / math.sqrt(n)
    exact = leaf.mean_statistics(params)
    assert torch.all((mc - exact).abs() <= 5 * se + 1e-12)
    again = leaf.m_step(exact, params)
    assert torch.allclose(leaf.mean_statistics(again), exact, atol=1e-6)


# ------------------------------------------------------------ expected counts
def test_expected_counts_of_a_tree_sum_to_the_batch():
    """With one repetition every region is in every induced tree: each level's
    counts sum to B per partition, and the leaf counts of each variable to the
    number of samples observing it (missing entries contribute nothing)."""
    spn = _rat(num_vars=8, depth=2, reps=1)
    x = _data_for(spn.leaf, 40, 8, seed=3)
    mask = torch.rand(40, 8, generator=_gen(4)) < 0.3
    c = expected_counts(spn, x, mask)
    for n in c.weights:  # one repetition: no mixing layers, every sum layer's counts are per partition
        assert torch.allclose(n.sum((1, 2)), torch.full((n.shape[0],), 40.0, dtype=F64))
    var = spn.leaf_layer.var_index  # (R, n)
    observed = torch.cat([(~mask).sum(0).to(F64), torch.zeros(1, dtype=F64)])[var]  # padding slots see nothing
    assert torch.allclose(c.leaves[..., 2].sum(-1), observed)
    assert torch.allclose(c.log_likelihood, spn.log_prob(x, mask).sum())


def test_expected_counts_with_labels_count_each_class_root_once_per_sample():
    spn = _rat(num_vars=6, depth=1, reps=3, classes=3)
    x = _data_for(spn.leaf, 30, 6, seed=5)
    y = torch.arange(30) % 3
    c = expected_counts(spn, x, labels=y)
    top = c.weights[-1]  # the root's layer
    assert torch.allclose(top.sum(1).squeeze(0), torch.full((3,), 10.0, dtype=F64))
    assert torch.allclose(c.log_likelihood, spn.log_prob(x).gather(1, y.view(-1, 1)).sum())


def test_stochastic_m_step_mixes_old_and_new_estimates():
    spn = _rat(num_vars=6, depth=1, reps=2)
    x = _data_for(spn.leaf, 60, 6, seed=6)
    c = expected_counts(spn, x)
    old_w = [m.log_weights().exp() for m in spn.weighted_layers]
    old_stats = spn.leaf.mean_statistics(spn.leaf_layer.param_dict()).detach()
    full = _rat(num_vars=6, depth=1, reps=2)
    m_step(full, c, 1.0)
    s = 0.3
    m_step(spn, c, s)
    for m, mf, w0 in zip(spn.weighted_layers, full.weighted_layers, old_w):
        expect = (1 - s) * w0 + s * mf.log_weights().exp()
        assert torch.allclose(m.log_weights().exp(), expect, atol=1e-10)
    new_stats = full.leaf.mean_statistics(full.leaf_layer.param_dict())
    mixed = spn.leaf.mean_statistics(spn.leaf_layer.param_dict())
    assert torch.allclose(mixed[..., 1], (1 - s) * old_stats[..., 1] + s * new_stats[..., 1], atol=1e-10)  # means


@given(spec=circuit_specs(max_vars=6, max_sums=3, max_leaves=3), n=st.integers(1, 30), seed=st.integers(0, 1000), use_labels=st.booleans())
def test_full_batch_em_never_decreases_the_log_likelihood(spec, n, seed, use_labels):
    """Full-batch EM is monotone, Normal variance bounds included.

    With the mean fixed at its optimum, the expected log-likelihood of a Normal
    factor as a function of the variance, ``-c/2 log v - S/(2v)``, increases up
    to ``S/c`` and decreases after it, so clamping ``S/c`` into
    ``[min_var, max_var]`` is the exact constrained maximizer and EM's bound
    argument holds. The M-steps keep parameters inside slightly shrunk sets
    (probabilities in ``[1e-6, 1 - 1e-6]``, variances a hair inside the bounds,
    weights above 1e-12); a random (possibly extreme) start may lie outside
    them, so the first step may lose up to ~1e-6 per factor moving in. The
    property is checked from the second step on.
    """
    spn = spec.build()
    x = _data_for(spn.leaf, n, spn.num_vars, seed)
    labels = torch.randint(0, spn.num_classes, (n,), generator=_gen(seed)) if use_labels and spn.num_classes > 1 else None
    m_step(spn, expected_counts(spn, x, labels=labels))
    lls = []
    for _ in range(4):
        c = expected_counts(spn, x, labels=labels)
        lls.append(float(c.log_likelihood))
        m_step(spn, c)
    for before, after in zip(lls, lls[1:]):
        assert after >= before - 1e-7 * (1 + abs(before)), lls


def test_em_rejects_counts_of_another_circuit():
    a, b = _rat(num_vars=6, depth=1), _rat(num_vars=8, depth=2)
    c = expected_counts(a, _data_for(a.leaf, 5, 6, 0))
    with pytest.raises(ValueError, match="another structure"):
        m_step(b, c)
    with pytest.raises(ValueError, match="step_size"):
        m_step(a, c, 0.0)


# ----------------------------------------------------------------------- fit
@pytest.mark.parametrize("method", ["adam", "em", "em-batch"])
def test_fit_improves_validation_log_likelihood(method):
    spn = _rat(num_vars=8, depth=2, reps=2, sums=4, leaves=4)
    x = _data_for(spn.leaf, 600, 8, seed=7)
    valid = _data_for(spn.leaf, 200, 8, seed=8)
    before, _ = evaluate(spn, valid)
    history = fit(spn, x, valid, method=method, epochs=6, batch_size=64, lr=0.05, step_size=0.2, progress=False)
    assert len(history) == 6
    after, _ = evaluate(spn, valid)
    assert after > before + 0.5, (before, after, history)
    assert after == pytest.approx(max(h["valid_ll"] for h in history))
    for h in history:
        assert {"epoch", "train_ll", "valid_ll", "seconds", "samples_per_second", "steps"} <= set(h)


def test_fit_splits_off_a_seeded_validation_set_and_calls_hooks():
    x = _data_for(spnkit.Normal(0.05, 4.0), 300, 6, seed=9)
    steps, epochs = [], []
    runs = []
    for _ in range(2):
        spn = _rat(num_vars=6, depth=1)
        runs.append(fit(spn, x, valid_fraction=0.2, epochs=2, batch_size=50, progress=False, seed=3,
                        callbacks=[epochs.append], step_callbacks=[steps.append]))
    assert [h["valid_ll"] for h in runs[0]] == [h["valid_ll"] for h in runs[1]]  # same split, same shuffles
    assert len(epochs) == 4 and len(steps) == 2 * 2 * math.ceil(240 / 50)
    assert steps[0]["samples"] == 50 and steps[0]["epoch"] == 1


def test_fit_stops_when_a_callback_returns_true_and_on_the_time_budget():
    x = _data_for(spnkit.Normal(0.05, 4.0), 200, 6, seed=10)
    h = fit(_rat(num_vars=6, depth=1), x, epochs=10, progress=False, callbacks=[lambda r: r["epoch"] == 2])
    assert len(h) == 2
    h = fit(_rat(num_vars=6, depth=1), x, epochs=10, batch_size=10, progress=False, max_seconds=1e-9)
    assert len(h) == 1 and h[0]["steps"] == 1


def test_full_batch_em_skips_the_m_step_of_an_epoch_cut_short():
    spn = _rat(num_vars=6, depth=1)
    before = {k: v.clone() for k, v in spn.state_dict().items()}
    x = _data_for(spn.leaf, 200, 6, seed=10)
    h = fit(spn, x, method="em-batch", epochs=3, batch_size=10, progress=False, max_seconds=1e-9)
    assert len(h) == 1 and h[0]["steps"] == 1
    assert all(torch.equal(v, before[k]) for k, v in spn.state_dict().items())


def test_mini_batch_em_ends_with_an_exact_full_batch_m_step():
    spn = _rat(num_vars=6, depth=2, leaf=spnkit.Categorical(4))
    x = _data_for(spn.leaf, 300, 6, seed=21)
    prior = dict(weight_pseudocount=0.3, leaf_pseudocount=2.0)
    states = []
    history = fit(spn, x, method="em", epochs=4, full_batch_epochs=1, batch_size=32, step_size=(0.5, 0.1), valid_fraction=0.0,
                  progress=False, callbacks=[lambda r: states.append({k: v.clone() for k, v in spn.state_dict().items()})], **prior)
    assert [h["method"] for h in history] == ["em", "em", "em", "em-batch"]
    assert history[-1]["steps"] - history[-2]["steps"] == math.ceil(300 / 32)  # a whole pass
    reference = _rat(num_vars=6, depth=2, leaf=spnkit.Categorical(4))
    reference.load_state_dict(states[2])  # after the mini-batch epochs
    m_step(reference, expected_counts(reference, x), 1.0, **prior)
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(states[3][k], v)


def test_full_batch_epochs_run_whole_within_a_time_budget():
    spn = _rat(num_vars=6, depth=1)
    x = _data_for(spn.leaf, 400, 6, seed=22)
    history = fit(spn, x, method="em", epochs=10_000, full_batch_epochs=2, batch_size=20, valid_fraction=0.0, progress=False,
                  max_seconds=0.5)
    methods = [h["method"] for h in history]
    assert methods[-2:] == ["em-batch", "em-batch"] and methods.count("em-batch") == 2 and len(methods) < 10_000
    assert all(b["steps"] - a["steps"] == 20 for a, b in zip(history[-3:], history[-2:]))  # neither cut short


def test_early_stopping_restores_the_best_parameters():
    spn = _rat(num_vars=8, depth=2, reps=3, sums=6, leaves=6, leaf=spnkit.Normal(1e-3, 4.0))
    x = _data_for(spn.leaf, 12, 8, seed=11)  # a dozen samples: it overfits
    valid = _data_for(spn.leaf, 300, 8, seed=12)
    snapshots = []
    history = fit(spn, x, valid, method="em-batch", epochs=30, patience=3, progress=False,
                  callbacks=[lambda r: snapshots.append({k: v.clone() for k, v in spn.state_dict().items()})])
    best = int(np.argmax([h["valid_ll"] for h in history]))
    assert best < len(history) - 1, "precondition: validation got worse at the end"
    assert len(history) == best + 1 + 3  # stopped after `patience` epochs without improvement
    for k, v in spn.state_dict().items():
        assert torch.equal(v, snapshots[best][k])
    assert [h["best"] for h in history].count(True) >= 1 and history[best]["best"]


def test_fit_with_missing_values():
    spn = _rat(num_vars=8, depth=2)
    x = _data_for(spn.leaf, 400, 8, seed=13)
    mask = torch.rand(400, 8, generator=_gen(14)) < 0.3
    x_nan = x.masked_fill(mask, float("nan"))  # missing entries may hold anything
    valid = _data_for(spn.leaf, 200, 8, seed=15)
    before, _ = evaluate(spn, valid)
    fit(spn, x_nan, valid, marginalized=mask, method="em", epochs=4, step_size=0.3, progress=False)
    assert evaluate(spn, valid)[0] > before + 0.5


def _blobs(n: int, seed: int, classes: int = 3, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=_gen(99), dtype=F64) * 1.5
    return centers[y] + torch.randn(n, d, generator=g, dtype=F64), y


def test_discriminative_training_improves_accuracy():
    spn = _rat(num_vars=8, depth=2, reps=2, classes=3, sums=3, leaves=3)
    x, y = _blobs(600, 16)
    vx, vy = _blobs(300, 17)
    _, acc0 = evaluate(spn, vx, labels=vy)
    history = fit(spn, x, vx, labels=y, valid_labels=vy, objective="discriminative", epochs=8, batch_size=64, lr=0.05, progress=False)
    _, acc = evaluate(spn, vx, labels=vy)
    assert acc0 < 0.6 and acc > 0.9, (acc0, acc)
    assert history[-1]["valid_ll"] <= 0  # log p(y | x)
    assert {"train_acc", "valid_acc"} <= set(history[-1])


@pytest.mark.parametrize("method", ["adam", "em-batch"])
def test_generative_training_with_labels_improves_class_conditional_likelihood(method):
    spn = _rat(num_vars=8, depth=2, reps=2, classes=3)
    x, y = _blobs(600, 18)
    vx, vy = _blobs(300, 19)
    before, _ = evaluate(spn, vx, labels=vy)
    fit(spn, x, vx, labels=y, valid_labels=vy, method=method, epochs=5, lr=0.05, progress=False)
    after, acc = evaluate(spn, vx, labels=vy)
    assert after > before + 1.0 and acc > 0.85


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "sgd"}, "method"),
        ({"objective": "contrastive"}, "objective"),
        ({"objective": "discriminative"}, "num_classes > 1 and labels"),
        ({"epochs": 0}, "epochs"),
        ({"step_size": 1.5}, "step_size"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"labels": torch.zeros(50, dtype=torch.long)}, "num_classes > 1"),
        ({"callbacks": [3]}, "callables"),
        ({"marginalized": torch.zeros(50, 5, dtype=torch.bool)}, "shape"),
        ({"full_batch_epochs": 1}, "needs method='em'"),
        ({"method": "em", "full_batch_epochs": -1}, "full_batch_epochs"),
        ({"method": "em", "epochs": 2, "full_batch_epochs": 3}, r"more than epochs \(2\)"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    x = _data_for(spnkit.Normal(0.05, 4.0), 50, 6, seed=20)
    with pytest.raises(ValueError, match=match):
        fit(_rat(num_vars=6, depth=1), x, progress=False, **kwargs)


def test_discriminative_needs_adam_and_labels_must_be_valid():
    spn = _rat(num_vars=8, depth=2, classes=3)
    x, y = _blobs(60, 21)
    with pytest.raises(ValueError, match="method='adam'"):
        fit(spn, x, labels=y, objective="discriminative", method="em", progress=False)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        fit(spn, x, labels=y + 3, progress=False)
