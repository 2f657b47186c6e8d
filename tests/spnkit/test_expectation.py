"""Conditional expectations and variances (SPN.expectation, spnkit.impute) against enumeration and quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spnkit
from spnkit.testing import brute_force as bf
from spnkit.testing import strategies as sts
from spnkit.testing.circuits import CircuitSpec, GraphSpec, randomize_parameters

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(shape: tuple[int, int], seed: int, p: float = 0.5) -> torch.Tensor:
    m = torch.rand(shape, generator=_gen(seed)) < p
    m[:, 0] = True  # at least one hidden entry per sample
    return m


# ------------------------------------------------------------ enumeration
@settings(max_examples=max(1, round(30 * settings().max_examples / 100)))
@given(sts.enumerable_circuit_specs(max_states=256), st.data())
def test_expectation_equals_enumeration_on_discrete_circuits(spec: CircuitSpec, data):
    """Mean and variance of the hidden entries equal those of the enumerated conditional (every root choice)."""
    spn = spec.build()
    x = data.draw(sts.inputs(spn.leaf, spn.num_vars, max_batch=3), label="x")
    m = data.draw(sts.masks(tuple(x.shape), kinds=("bool", "marginalized")), label="mask")
    root = data.draw(st.one_of(st.none(), st.integers(0, spn.num_classes - 1)), label="root")
    mean, var = spn.expectation(x.masked_fill(m, math.nan), m, variance=True, root=root)
    ref_mean, ref_var = bf.expectation(spn, x, m, root=root)
    torch.testing.assert_close(mean, ref_mean, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(var, ref_var, atol=1e-9, rtol=1e-9)


def test_poisson_expectation_equals_truncated_enumeration():
    spn = CircuitSpec(GraphSpec.random(num_vars=3, depth=1, repetitions=2, seed=2), spnkit.Poisson(max_rate=20.0),
                      num_sums=2, num_leaves=3, seed=4, scale=1.0).build()
    x = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 7.0]], dtype=F64)
    m = torch.tensor([[True, False, False], [True, True, False]])
    mean, var = spn.expectation(x, m, variance=True)
    values = torch.arange(0, 120, dtype=F64)
    for b in range(2):
        free = torch.nonzero(m[b]).flatten().tolist()
        grid = torch.cartesian_prod(*[values] * len(free)).reshape(-1, len(free))
        cand = x[b].repeat(len(grid), 1)
        cand[:, free] = grid
        p = torch.softmax(spn.log_prob(cand), 0).unsqueeze(1)
        m1 = (p * grid).sum(0)
        torch.testing.assert_close(mean[b, free], m1, atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(var[b, free], (p * (grid - m1) ** 2).sum(0), atol=1e-7, rtol=1e-7)


# -------------------------------------------------------------- quadrature
def _quadrature(spn: spnkit.SPN, x: torch.Tensor, var: int, lo: float, hi: float, root=None, points: int = 20001):
    """``E[x_var | other entries]`` and the variance, by the trapezoid rule over ``[lo, hi]``."""
    grid = torch.linspace(lo, hi, points, dtype=F64)
    cand = x.repeat(points, 1)
    cand[:, var] = grid
    lp = spn.log_prob(cand)
    if lp.dim() == 2:
        lp = torch.logsumexp(lp, 1) if root is None else lp[:, root]
    dens = torch.exp(lp - lp.max())
    w = torch.full_like(grid, (hi - lo) / (points - 1))
    w[0] = w[-1] = w[0] / 2
    z = (w * dens).sum()
    mean = (w * dens * grid).sum() / z
    return mean, (w * dens * (grid - mean) ** 2).sum() / z


@pytest.mark.parametrize("root", [None, 1])
@pytest.mark.parametrize("layer", ["tucker", "cp"])
def test_normal_expectation_equals_quadrature(layer, root):
    spn = CircuitSpec(GraphSpec.random(num_vars=2, depth=1, repetitions=3, seed=0), spnkit.Normal(0.05, 1.0),
                      num_sums=3, num_leaves=3, num_classes=2, seed=5, scale=1.5, layer=layer).build()
    x = torch.tensor([[0.3, 0.0], [-1.2, 0.0]], dtype=F64)
    m = torch.tensor([[False, True], [False, True]])
    mean, var = spn.expectation(x, m, variance=True, root=root)
    for b in range(2):
        ref_mean, ref_var = _quadrature(spn, x[b : b + 1], 1, -12.0, 12.0, root)
        torch.testing.assert_close(mean[b, 1], ref_mean, atol=1e-7, rtol=1e-7)
        torch.testing.assert_close(var[b, 1], ref_var, atol=1e-7, rtol=1e-7)
    assert torch.equal(mean[:, 0], x[:, 0]) and bool((var[:, 0] == 0).all())


def test_multivariate_normal_expectation_equals_quadrature():
    """A hidden entry of a Gaussian leaf region conditions on its observed neighbour (and the rest of the circuit)."""
    rg = spnkit.RegionGraph(3, ((0, 1, 2), (0, 1), (2,), (0,), (1, 2)), (spnkit.Partition(0, (1, 2)), spnkit.Partition(0, (3, 4))))
    spn = spnkit.SPN(rg, spnkit.MultivariateNormal(0.05, 2.0), num_sums=2, num_leaves=3).double()
    randomize_parameters(spn, seed=3, scale=1.0)
    x = torch.tensor([[0.4, 0.0, -0.5], [1.5, 0.0, 0.2]], dtype=F64)
    m = torch.tensor([[False, True, False], [False, True, False]])
    mean, var = spn.expectation(x, m, variance=True)
    for b in range(2):
        ref_mean, ref_var = _quadrature(spn, x[b : b + 1], 1, -15.0, 15.0)
        torch.testing.assert_close(mean[b, 1], ref_mean, atol=1e-7, rtol=1e-7)
        torch.testing.assert_close(var[b, 1], ref_var, atol=1e-7, rtol=1e-7)


def test_expectation_of_a_single_gaussian_is_the_conditional_gaussian():
    """One component over all variables: the closed-form conditional mean and covariance diagonal."""
    rg = spnkit.RegionGraph(4, ((0, 1, 2, 3), (0, 1, 2), (3,)), (spnkit.Partition(0, (1, 2)),))
    spn = spnkit.SPN(rg, spnkit.MultivariateNormal(0.1, 3.0), num_sums=1, num_leaves=1).double()
    randomize_parameters(spn, seed=1, scale=1.0)
    layer = spn.leaf_layer
    row = spn.leaf_regions.index(1)
    params = layer.group_params(3)
    pos = int(layer.local[row])
    mu, cov = params["loc"][pos, 0].detach(), spn.leaf.covariance(params)[pos, 0].detach()
    x = torch.tensor([[0.7, 0.0, 0.0, 2.0]], dtype=F64)
    m = torch.tensor([[False, True, True, False]])
    mean, var = spn.expectation(x, m, variance=True)
    o, h = [0], [1, 2]
    gain = cov[h][:, o] @ torch.linalg.inv(cov[o][:, o])
    torch.testing.assert_close(mean[0, h], mu[h] + gain @ (x[0, o] - mu[o]))
    torch.testing.assert_close(var[0, h], torch.diagonal(cov[h][:, h] - gain @ cov[o][:, h]))
    best = spn.mpe(x, m)  # one component: the MPE completion is the conditional mean
    torch.testing.assert_close(best, mean)


# ---------------------------------------------------------------- behaviour
def test_expectation_keeps_observed_entries_and_takes_nan_at_hidden_ones():
    spn = CircuitSpec(GraphSpec.random(num_vars=5, depth=2, repetitions=2, seed=1), spnkit.Normal(0.05, 1.0), 2, 3, seed=0).build()
    x = torch.rand(4, 5, generator=_gen(0), dtype=F64)
    m = _mask(x.shape, 1)
    mean, var = spn.expectation(x.masked_fill(m, math.nan), m, variance=True)
    assert torch.equal(mean[~m], x[~m]) and bool((var[~m] == 0).all()) and bool((var[m] > 0).all())
    torch.testing.assert_close(spnkit.impute(spn, x.masked_fill(m, math.nan)), mean)  # NaN entries are the hidden ones
    torch.testing.assert_close(spnkit.impute(spn, x, m), mean)
    torch.testing.assert_close(spn.expectation(x, m.double()), mean)  # a float mask of 0s and 1s
    assert torch.equal(spn.expectation(x), x)  # nothing hidden
    everything = torch.ones_like(m)
    prior = spn.expectation(x, everything)  # nothing observed: the prior mean, equal for every sample
    torch.testing.assert_close(prior, prior[:1].expand_as(prior))
    draws = spn.sample(20000, generator=_gen(2))
    assert bool(((draws.mean(0) - prior[0]).abs() < 5 * draws.std(0) / math.sqrt(20000)).all())


@pytest.mark.parametrize("leaf", [spnkit.Normal(0.5, 2.0), spnkit.MultivariateNormal(0.5, 2.0)], ids=["normal", "mvn"])
def test_leaf_moments_do_not_cancel_far_from_zero(leaf):
    """The layers combine moments about a centre: shifting every mean by 1e8 shifts the mean and keeps the variance."""
    spn = CircuitSpec(GraphSpec.random(num_vars=6, depth=1, repetitions=2, seed=0), leaf, 2, 3, seed=1).build()
    layer = spn.leaf_layer
    x = torch.rand(4, 6, generator=_gen(0), dtype=F64)
    hidden = _mask(x.shape, 3)
    post = torch.softmax(torch.randn(layer.num_regions, 4, 3, generator=_gen(1), dtype=F64), -1) / 2  # two regions per variable
    mean, var = layer.moments(x.masked_fill(hidden, 0.0), hidden, post)
    with torch.no_grad():
        for name, p in layer.params.items():
            if name.endswith("loc"):
                p.add_(1e8)
    far_mean, far_var = layer.moments((x + 1e8).masked_fill(hidden, 0.0), hidden, post)
    torch.testing.assert_close(far_mean[hidden] - 1e8, mean[hidden], atol=1e-6, rtol=0)
    torch.testing.assert_close(far_var[hidden], var[hidden], atol=1e-6, rtol=1e-6)
    assert bool((var[hidden] > 0.1).all())


@pytest.mark.parametrize("bad, match", [
    (dict(marginalized=torch.full((2, 3), 0.5)), "hard evidence"),
    (dict(variance=1), "variance"),
    (dict(root=5), "root"),
])
def test_expectation_refuses_bad_arguments(bad, match):
    spn = spnkit.SPN(spnkit.RegionGraph.random(3, 1, 1), spnkit.Normal(), 2, 2, num_classes=2).double()
    kwargs = {"marginalized": torch.tensor([[True, False, False]] * 2), **bad}
    with pytest.raises(ValueError, match=match):
        spn.expectation(torch.zeros(2, 3, dtype=F64), **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        spnkit.impute(spn, torch.full((1, 3), math.nan), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="spnkit.SPN"):
        spnkit.impute("model", torch.zeros(1, 3))


def test_expectation_refuses_impossible_evidence():
    spn = spnkit.SPN(spnkit.RegionGraph.random(2, 1, 1), spnkit.Normal(), 1, 1).double()
    with pytest.raises(ValueError, match="probability zero"):  # x^2 overflows: density exactly 0
        spn.expectation(torch.tensor([[1e200, 0.0]], dtype=F64), torch.tensor([[False, True]]))
