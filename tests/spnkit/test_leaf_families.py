"""Poisson, multivariate Normal and mixed leaves: densities against torch.distributions, masks, EM, sampling, saving."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
import torch

import spnkit
from spnkit.learn import expected_counts, m_step
from spnkit.testing import brute_force as bf
from spnkit.testing.circuits import randomize_parameters

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mixed() -> spnkit.Mixed:
    return spnkit.Mixed({spnkit.Normal(0.05, 2.0, loc_range=(-1.0, 1.0)): [0], spnkit.Poisson(max_rate=20.0): [1],
                         spnkit.Categorical(3): [2], spnkit.MultivariateNormal(0.05, 2.0): [3, 4]})


def _mixed_data(n: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    z = (torch.rand(n, generator=g) < 0.5).to(F64)
    x = torch.empty(n, 5, dtype=F64)
    x[:, 0] = torch.randn(n, generator=g, dtype=F64) * 0.5 + z
    x[:, 1] = torch.poisson(1.0 + 4.0 * z, generator=g)
    x[:, 2] = torch.where(z > 0, torch.randint(0, 2, (n,), generator=g), 2).to(F64)
    shared = torch.randn(n, generator=g, dtype=F64)
    x[:, 3] = shared + 0.3 * torch.randn(n, generator=g, dtype=F64) - z
    x[:, 4] = 0.8 * shared + 0.3 * torch.randn(n, generator=g, dtype=F64)
    return x


def _mixed_spn(layer: str = "cp", seed: int = 0) -> spnkit.SPN:
    rg = spnkit.RegionGraph(5, ((0, 1, 2, 3, 4), (0, 1, 2), (3, 4), (0,), (1, 2), (0, 3, 4), (1,), (2,)),
                            (spnkit.Partition(0, (1, 2)), spnkit.Partition(1, (3, 4)), spnkit.Partition(0, (5, 6, 7))))
    torch.manual_seed(seed)
    return spnkit.SPN(rg, _mixed(), num_sums=2, num_leaves=3, layer=layer).double()


# ------------------------------------------------------------------ Poisson
def test_poisson_factors_match_torch_distributions():
    leaf = spnkit.Poisson(min_rate=1e-2, max_rate=100.0)
    params = {"rate": torch.randn(4, 3, dtype=F64) * 2}
    rate = leaf.rate(params)
    assert bool(((rate >= 1e-2) & (rate <= 100.0)).all())
    x = torch.tensor([0.0, 1.0, 5.0, 40.0], dtype=F64).view(4, 1, 1).expand(4, 4, 3)
    ours = (leaf.statistics(x).movedim(0, -1) * leaf.natural(params)).sum(-1) + leaf.log_base_measure(x)
    torch.testing.assert_close(ours, torch.distributions.Poisson(rate).log_prob(x))
    torch.testing.assert_close(leaf.log_max(params), torch.distributions.Poisson(rate).log_prob(leaf.mode(params)))
    assert bool((leaf.log_max(params) >= torch.distributions.Poisson(rate).log_prob(leaf.mode(params) + 1) - 1e-12).all())
    mean, var = leaf.mean_variance(params)
    torch.testing.assert_close(mean, rate) and torch.testing.assert_close(var, rate)
    draws = leaf.sample({"rate": params["rate"][:1, :1].expand(20000, 1)}, _gen(0))
    assert abs(float(draws.mean()) - float(rate[0, 0])) < 5 * math.sqrt(float(rate[0, 0]) / 20000)
    assert leaf.support_error(torch.tensor([1.0, 2.5]), None) is not None
    assert leaf.support_error(torch.tensor([1.0, -1.0]), None) is not None
    assert leaf.support_error(torch.tensor([0.0, 7.0]), None) is None
    with pytest.raises(ValueError, match="min_rate"):
        spnkit.Poisson(min_rate=2.0, max_rate=1.0)


def test_poisson_circuit_log_prob_matches_torch_and_m_step_is_the_clamped_weighted_mean():
    rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=1, seed=0)
    spn = spnkit.SPN(rg, spnkit.Poisson(max_rate=30.0), num_sums=1, num_leaves=1).double()
    x = torch.poisson(torch.full((6, 4), 3.0), generator=_gen(1))
    rate = spn.leaf.rate(spn.leaf_layer.param_dict()).detach()[..., 0]  # (R, n); one component per region
    per_var = torch.zeros(4, dtype=F64)
    per_var[spn.leaf_layer.var_index.reshape(-1)] = rate.reshape(-1)
    expected = torch.distributions.Poisson(per_var).log_prob(x).sum(1)
    torch.testing.assert_close(spn.log_prob(x), expected)
    leaf = spn.leaf
    stats = torch.tensor([[[[12.0, 4.0]]], [[[0.0, 5.0]]], [[[1e5, 2.0]]]], dtype=F64)  # mean 3, 0, 5e4
    new = leaf.m_step(stats, {"rate": torch.zeros(3, 1, 1, dtype=F64)})
    torch.testing.assert_close(leaf.rate(new).flatten(), torch.tensor([3.0, leaf.min_rate, leaf.max_rate], dtype=F64), rtol=1e-4, atol=0)
    smoothed = leaf.m_step(stats, {"rate": torch.zeros(3, 1, 1, dtype=F64)}, pseudocount=1.0)
    torch.testing.assert_close(leaf.rate(smoothed)[0].flatten(), torch.tensor([13.0 / 5.0], dtype=F64), rtol=1e-5, atol=0)


# --------------------------------------------------------- multivariate Normal
def _mvn_layer(seed: int = 0) -> spnkit.layers.MVNLeafLayer:
    torch.manual_seed(seed)
    layer = spnkit.MultivariateNormal(0.05, 3.0).make_layer([(0, 2, 4), (1, 3), (5,), (1, 4, 2)], 6, 2).double()
    with torch.no_grad():
        for name, p in layer.params.items():
            p.copy_(torch.randn(p.shape, generator=_gen(seed + len(name)), dtype=F64) * (1.5 if name.endswith("loc") else 0.8))
    return layer


def _torch_mvns(layer):
    """Per leaf-layer row: (variables, torch MultivariateNormal of batch (K,))."""
    out = {}
    for d in layer.sizes:
        rows, index = layer.group_index(d)
        params = layer.group_params(d)
        cov = layer.leaf.covariance(params).detach()
        for i, r in enumerate(rows.tolist()):
            out[r] = (index[i].tolist(), params["loc"][i].detach(), cov[i])
    return out


def test_mvn_layer_matches_torch_distributions_with_and_without_masks():
    layer = _mvn_layer()
    x = torch.randn(7, 6, generator=_gen(1), dtype=F64)
    hidden = torch.rand(7, 6, generator=_gen(2)) < 0.4
    hidden[0] = False
    hidden[1] = True
    full = layer(x, None)  # (R, B, K)
    masked = layer(x.masked_fill(hidden, math.nan), ~hidden)
    peak = layer.forward_max(x.masked_fill(hidden, math.nan), ~hidden)
    for r, (variables, loc, cov) in _torch_mvns(layer).items():
        torch.testing.assert_close(full[r], torch.distributions.MultivariateNormal(loc, cov).log_prob(x[:, None, variables]))
        for b in range(7):
            o = [i for i, v in enumerate(variables) if not hidden[b, v]]
            h = [i for i, v in enumerate(variables) if hidden[b, v]]
            ref = torch.zeros(2, dtype=F64)
            if o:  # the Gaussian marginal of the observed sub-vector
                ref = torch.distributions.MultivariateNormal(loc[:, o], cov[:, o][:, :, o]).log_prob(x[b, [variables[i] for i in o]])
            torch.testing.assert_close(masked[r, b], ref)
            if h:  # max-product: times the peak of the conditional of the hidden entries
                cond = cov[:, h][:, :, h]
                if o:
                    cond = cond - cov[:, h][:, :, o] @ torch.linalg.solve(cov[:, o][:, :, o], cov[:, o][:, :, h])
                ref = ref - 0.5 * (len(h) * math.log(2 * math.pi) + torch.logdet(cond))
            torch.testing.assert_close(peak[r, b], ref)


def test_mvn_covariances_keep_their_eigenvalues_inside_the_bounds():
    leaf = spnkit.MultivariateNormal(min_var=0.1, max_var=2.0)
    for scale in (1e-3, 1.0, 30.0):
        factor = torch.randn(50, 4, 4, generator=_gen(int(scale * 10)), dtype=F64) * scale
        vals = torch.linalg.eigvalsh(leaf.covariance({"loc": torch.zeros(50, 4, dtype=F64), "factor": factor}))
        assert bool((vals >= 0.1 - 1e-9).all()) and bool((vals <= 2.0 + 1e-9).all())
    a = torch.randn(30, 3, 3, generator=_gen(5), dtype=F64)
    cov = 0.2 * torch.eye(3, dtype=F64) + 0.5 * a @ a.transpose(1, 2) / 3  # eigenvalues well inside
    cov = cov[torch.linalg.eigvalsh(cov).max(-1).values < 1.9]
    torch.testing.assert_close(leaf.covariance({"factor": leaf.factor_of(cov)}), cov)  # factor_of inverts covariance
    clamped = torch.linalg.eigvalsh(leaf.covariance({"factor": leaf.factor_of(torch.diag(torch.tensor([1e-4, 1.0, 50.0], dtype=F64)))}))
    torch.testing.assert_close(clamped, torch.tensor([0.1, 1.0, 2.0], dtype=F64), atol=1e-5, rtol=0)


def test_mvn_m_step_is_the_weighted_mean_and_covariance():
    leaf = spnkit.MultivariateNormal(min_var=1e-3, max_var=10.0)
    x = torch.randn(40, 3, generator=_gen(3), dtype=F64) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.7]], dtype=F64)
    r = torch.rand(40, generator=_gen(4), dtype=F64)
    stats = (-0.5 * torch.einsum("n,ni,nj->ij", r, x, x), r @ x, r.sum())
    new = leaf.m_step(tuple(s.unsqueeze(0) for s in stats), leaf.init_params((1,), 3, F64))
    mean = np.average(x.numpy(), axis=0, weights=r.numpy())
    cov = np.cov(x.numpy().T, aweights=r.numpy(), bias=True)
    torch.testing.assert_close(new["loc"][0], torch.as_tensor(mean))
    torch.testing.assert_close(leaf.covariance(new)[0], torch.as_tensor(cov))
    prior = leaf.m_step(tuple(s.unsqueeze(0) for s in stats), leaf.init_params((1,), 3, F64), pseudocount=2.0)
    n = float(r.sum())
    shrunk = (n * cov + 2.0 * leaf.prior_var * np.eye(3)) / (n + 2.0)
    torch.testing.assert_close(leaf.covariance(prior)[0], torch.as_tensor(shrunk))


@pytest.mark.parametrize("family", ["mvn", "mixed"])
def test_em_with_missing_values_never_decreases_the_marginal_likelihood(family):
    """The E-step's statistics include the hidden entries' conditional moments: exact EM for missing data."""
    if family == "mvn":
        rg = spnkit.RegionGraph.random(num_vars=6, depth=1, repetitions=2, seed=3)
        torch.manual_seed(0)
        spn = spnkit.SPN(rg, spnkit.MultivariateNormal(0.05, 4.0), num_sums=2, num_leaves=3).double()
        x = torch.randn(80, 6, generator=_gen(0), dtype=F64)
        x[:, 1::2] += 0.8 * x[:, ::2]
    else:
        spn, x = _mixed_spn(), _mixed_data(80, 0)
    m = torch.rand(x.shape, generator=_gen(1)) < 0.3
    m_step(spn, expected_counts(spn, x, m))
    lls = []
    for _ in range(4):
        c = expected_counts(spn, x, m)
        lls.append(float(c.log_likelihood))
        torch.testing.assert_close(c.log_likelihood, spn.log_prob(x, m).sum())
        m_step(spn, c, leaf_pseudocount=0.0)
    assert all(b >= a - 1e-7 * (1 + abs(a)) for a, b in zip(lls, lls[1:])), lls


def test_mvn_conditional_samples_follow_the_conditional_gaussian():
    rg = spnkit.RegionGraph(4, ((0, 1, 2, 3), (0, 1, 2), (3,)), (spnkit.Partition(0, (1, 2)),))
    spn = spnkit.SPN(rg, spnkit.MultivariateNormal(0.1, 3.0), num_sums=1, num_leaves=2).double()
    randomize_parameters(spn, seed=2, scale=1.0)
    x = torch.tensor([[0.5, 0.0, 0.0, -0.3]], dtype=F64)
    m = torch.tensor([[False, True, False, True]])
    grid = torch.linspace(-12, 12, 4001, dtype=F64)
    cand = x.repeat(len(grid), 1)
    cand[:, 1] = grid
    density = spn.log_prob(cand, m.logical_and(torch.tensor([[False, False, False, True]])).expand(len(grid), 4))
    draws = spn.sample(evidence=x.repeat(4000, 1), marginalized=m.repeat(4000, 1), generator=_gen(3))
    assert torch.equal(draws[:, [0, 2]], x[:, [0, 2]].expand(4000, 2))
    dist, p = bf.ks_distance(draws[:, 1], grid, density)
    assert p >= 1e-6, (dist, p)


def test_soft_masks_are_refused_by_multivariate_leaves():
    spn = _mixed_spn()
    x = _mixed_data(3, 0)
    with pytest.raises(ValueError, match="hard evidence"):
        spn.log_prob(x, torch.full((3, 5), 0.5))
    m = torch.rand(3, 5, generator=_gen(0)) < 0.5
    torch.testing.assert_close(spn.log_prob(x, m.double()), spn.log_prob(x, m))  # a float mask of 0s and 1s is hard evidence


# -------------------------------------------------------------------- mixed
def test_mixed_family_validation_and_value_semantics():
    a = spnkit.Mixed({spnkit.Normal(): [0, 2], spnkit.Poisson(): [1]})
    b = spnkit.Mixed({0: spnkit.Normal(), 1: spnkit.Poisson(), 2: spnkit.Normal()})
    assert a == b and hash(a) == hash(b) and a.num_vars == 3 and a.family_of(1) == spnkit.Poisson()
    assert eval(repr(a), {"Mixed": spnkit.Mixed, "Normal": spnkit.Normal, "Poisson": spnkit.Poisson}) == a
    assert a.discrete is False and a.soft_evidence is True and a.restricted_support is True
    assert spnkit.Mixed({spnkit.MultivariateNormal(): [0], spnkit.Bernoulli(): [1]}).soft_evidence is False
    for bad, match in [({spnkit.Normal(): [0, 1], spnkit.Poisson(): [1]}, "two families"),
                       ({spnkit.Normal(): [0, 2]}, "missing"), ({}, "non-empty"), ({a: [0]}, "not Mixed"),
                       ({"normal": [0]}, "leaf families"), ({spnkit.Normal(): [-1]}, ">= 0")]:
        with pytest.raises(ValueError, match=match):
            spnkit.Mixed(bad)
    with pytest.raises(ValueError, match="3 columns"):
        spnkit.SPN(spnkit.RegionGraph.random(4, 1, 1), a, 2, 2)
    with pytest.raises(AttributeError):
        a._parts = ()
    msg = a.support_error(torch.tensor([[0.5, 1.5, 0.0]]), None)
    assert msg is not None and "columns [1]" in msg and "Poisson" in msg


def test_mixed_circuit_equals_brute_force_and_normalizes():
    spn = _mixed_spn(layer="cp")
    randomize_parameters(spn, seed=1, scale=1.0)
    x = _mixed_data(5, 2)
    m = torch.rand(5, 5, generator=_gen(3)) < 0.4
    torch.testing.assert_close(spn.log_prob(x, m), bf.log_prob(spn, x, m))
    # integrate x0 (trapezoid), sum x1 (0..69; rates are at most 20) and x2, with x3, x4 marginalized: total mass 1
    grid = torch.linspace(-12, 12, 801, dtype=F64)
    counts, cats = torch.arange(70, dtype=F64), torch.arange(3, dtype=F64)
    cand = torch.cartesian_prod(grid, counts, cats)
    full = torch.cat([cand, torch.zeros(len(cand), 2, dtype=F64)], 1)
    hidden = torch.zeros(len(full), 5, dtype=torch.bool)
    hidden[:, 3:] = True
    lp = spn.log_prob(full, hidden).view(len(grid), -1)
    per_point = torch.logsumexp(lp, 1).exp()
    mass = torch.trapezoid(per_point.detach(), grid)
    assert abs(float(mass) - 1) < 1e-6, float(mass)


def test_every_query_runs_on_a_mixed_circuit():
    spn = _mixed_spn()
    x = _mixed_data(300, 4)
    spnkit.fit(spn, x, method="em", epochs=3, batch_size=100, init="data", progress=False, valid_fraction=0.0)
    m = torch.rand(20, 5, generator=_gen(5)) < 0.4
    xs = x[:20].masked_fill(m, math.nan)
    assert bool(torch.isfinite(spn.log_prob(xs, m)).all())
    for out in (spn.sample(evidence=xs, marginalized=m, generator=_gen(6)), spn.mpe(xs, m), spn.sample(10)):
        assert spn.leaf.support_error(out, None) is None and bool(torch.isfinite(out).all())
    mean, var = spn.expectation(xs, m, variance=True)
    assert torch.equal(mean[~m], x[:20][~m]) and bool((var[m] >= 0).all())
    assert bool((mean[:, 1] >= 0).all()) and bool(((mean[:, 2] >= 0) & (mean[:, 2] <= 2)).all())
    cond = spn.conditional_log_prob(x[:20], m)
    torch.testing.assert_close(cond, spn.log_prob(x[:20]) - spn.log_prob(x[:20], m))
    before = spn.log_prob(x).mean().detach()
    spnkit.fit(spn, x, method="adam", epochs=2, batch_size=100, lr=0.01, progress=False, valid_fraction=0.0)
    after = spn.log_prob(x).mean().detach()
    assert torch.isfinite(after) and float(after) > float(before) - 1.0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mixed.spn")
        spn.save(path)
        back = spnkit.load(path)
    assert back.leaf == spn.leaf
    assert torch.equal(back.log_prob(xs, m), spn.log_prob(xs, m)) and torch.equal(back.mpe(xs, m), spn.mpe(xs, m))
    assert "MixedLeafLayer[Mixed]" in str(spn.summary())


def test_leaves_initialised_from_data_fit_every_family_better_than_a_random_start():
    x = _mixed_data(400, 7)
    m = torch.rand(x.shape, generator=_gen(8)) < 0.2
    random, spn = _mixed_spn(seed=1), _mixed_spn(seed=1)
    spnkit.learn.init_leaves(spn, x, m, seed=0)
    for family, cols in spn.leaf.parts:  # each family's marginal: the other columns hidden
        only = torch.ones_like(m)
        only[:, list(cols)] = False
        before, after = float(random.log_prob(x, only).mean().detach()), float(spn.log_prob(x, only).mean().detach())
        assert after > before + 0.1, (family, before, after)


# ---------------------------------------------------------------- from_data
def test_normal_from_data_takes_the_datas_scale():
    g = _gen(8)
    x = torch.randn(2000, 3, generator=g, dtype=F64) * torch.tensor([1.0, 10.0, 100.0], dtype=F64) + 50
    x[::7, 1] = math.nan
    leaf = spnkit.Normal.from_data(x)
    assert leaf.min_var == pytest.approx(1e-3, rel=0.1) and leaf.max_var == pytest.approx(2e4, rel=0.1)
    assert leaf.loc_range[0] == pytest.approx(-50, abs=5) and leaf.loc_range[1] == pytest.approx(150, abs=5)  # mean -+ sd
    corr = torch.randn(2000, 1, generator=g, dtype=F64).expand(2000, 4) + 0.01 * torch.randn(2000, 4, generator=g, dtype=F64)
    mvn = spnkit.MultivariateNormal.from_data(corr)
    assert mvn.max_var == pytest.approx(2 * 4, rel=0.1)  # the largest eigenvalue of four copies of one column
    for bad in (torch.ones(10, 2), torch.zeros(1, 3), "data"):
        with pytest.raises(ValueError):
            spnkit.Normal.from_data(bad)
    with pytest.raises(ValueError, match="marginalized"):
        spnkit.Normal.from_data(x, torch.zeros(3, 3, dtype=torch.bool))


def test_the_new_families_save_and_load():
    rg = spnkit.RegionGraph.random(num_vars=5, depth=1, repetitions=2, seed=0)
    x = torch.poisson(torch.full((4, 5), 2.0), generator=_gen(9))
    for leaf in (spnkit.Poisson(min_rate=0.1, max_rate=50.0), spnkit.MultivariateNormal(0.1, 2.0, loc_range=(-1.0, 1.0))):
        spn = spnkit.SPN(rg, leaf, 2, 3).double()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.spn")
            spn.save(path)
            back = spnkit.load(path)
        assert back.leaf == leaf and torch.equal(back.log_prob(x), spn.log_prob(x))


def test_learn_spn_fits_mixed_leaves():
    x = _mixed_data(600, 1)
    family = spnkit.Mixed({spnkit.Normal.from_data(x[:, [0]]): [0], spnkit.Poisson(): [1], spnkit.Categorical(3): [2],
                           spnkit.MultivariateNormal.from_data(x[:, 3:]): [3, 4]})
    spn = spnkit.learn_spn(x, family, min_rows=150)
    random = spnkit.SPN(spn.region_graph, family, 1, 1, layer="cp").double()
    assert float(spn.log_prob(x).mean().detach()) > float(random.log_prob(x).mean().detach()) + 1.0
    assert spn.leaf == family


@pytest.mark.parametrize("family", ["mvn", "poisson"])
def test_gradients_of_the_new_families_match_finite_differences(family):
    rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=1, seed=1)
    leaf = spnkit.MultivariateNormal(0.1, 2.0) if family == "mvn" else spnkit.Poisson(max_rate=20.0)
    spn = spnkit.SPN(rg, leaf, 2, 2).double()
    randomize_parameters(spn, seed=2, scale=0.5)
    x = torch.randn(3, 4, generator=_gen(3), dtype=F64) if family == "mvn" else torch.poisson(torch.full((3, 4), 3.0), generator=_gen(3))
    m = torch.tensor([[False, True, False, False], [True, True, False, True], [False] * 4])
    names = [n for n, _ in spn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in spn.named_parameters()]

    def f(x_, *values):
        return torch.func.functional_call(spn, dict(zip(names, values)), (x_, m))

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(family == "mvn"), *params))


def test_all_reduce_counts_keeps_tuple_counts(tmp_path):
    """EM counts of multivariate and mixed leaves (tuples) survive the data-parallel reduction (one process)."""
    import torch.distributed as dist

    from spnkit.distributed import all_reduce_counts

    spn, x = _mixed_spn(), _mixed_data(20, 3)
    counts = expected_counts(spn, x)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reduced = all_reduce_counts(counts)
    finally:
        dist.destroy_process_group()
    assert isinstance(reduced.leaves, tuple) and len(reduced.leaves) == len(counts.leaves)
    for a, b in zip(reduced.leaves, counts.leaves):
        torch.testing.assert_close(a, b)
    assert reduced.num_samples == 20
    m_step(spn, reduced + counts)


def test_mvn_expected_statistics_with_missing_entries_are_the_conditional_moments():
    """One Gaussian: EM's statistics of a half-observed sample are E[x] and E[x x'] under the conditional of its hidden entries."""
    rg = spnkit.RegionGraph(4, ((0, 1, 2, 3), (0, 1, 2), (3,)), (spnkit.Partition(0, (1, 2)),))
    spn = spnkit.SPN(rg, spnkit.MultivariateNormal(0.1, 3.0), num_sums=1, num_leaves=1).double()
    randomize_parameters(spn, seed=4, scale=1.0)
    x = torch.tensor([[0.3, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.5, 0.0]], dtype=F64)
    m = torch.tensor([[False, True, False, False], [True, True, True, True], [False, False, False, False]])
    counts = expected_counts(spn, x, m)
    layer = spn.leaf_layer
    g = layer.sizes.index(3)
    big, lin, count = counts.leaves[3 * g : 3 * g + 3]
    params = layer.group_params(3)
    mu, cov = params["loc"][0, 0].detach(), spn.leaf.covariance(params)[0, 0].detach()
    first, second = torch.zeros(3, dtype=F64), torch.zeros(3, 3, dtype=F64)
    for b in range(3):
        h = [i for i in range(3) if m[b, i]]
        o = [i for i in range(3) if not m[b, i]]
        mean, c = x[b, :3].clone(), torch.zeros(3, 3, dtype=F64)
        if h:
            gain = cov[h][:, o] @ torch.linalg.inv(cov[o][:, o]) if o else torch.zeros(len(h), 0, dtype=F64)
            mean[h] = mu[h] + gain @ (x[b, o] - mu[o])
            c[torch.tensor(h).unsqueeze(1), torch.tensor(h)] = cov[h][:, h] - gain @ cov[o][:, h]
        first += mean
        second += torch.outer(mean, mean) + c
    torch.testing.assert_close(count[0, 0], torch.tensor(3.0, dtype=F64))
    torch.testing.assert_close(lin[0, 0], first)
    torch.testing.assert_close(-2 * big[0, 0], second)
