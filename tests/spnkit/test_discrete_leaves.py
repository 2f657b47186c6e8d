"""Discrete leaves at scale: the gathered Categorical path, Binomial leaves, and EM's priors (float64)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import spnkit
from spnkit.learn import expected_counts, m_step
from spnkit.testing import brute_force as bf


@dataclass(frozen=True)
class OneHotCategorical(spnkit.Categorical):
    """The same family evaluated through its one-hot statistics in a matrix product (the generic leaf path)."""

    indexed = False


def _pair(layer: str, seed: int = 0) -> tuple[spnkit.SPN, spnkit.SPN]:
    rg = spnkit.RegionGraph.random(12, depth=2, repetitions=2, seed=seed)
    torch.manual_seed(seed)
    a = spnkit.SPN(rg, spnkit.Categorical(5), 3, 3, layer=layer).double()
    b = spnkit.SPN(rg, OneHotCategorical(5), 3, 3, layer=layer).double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("mask", ["none", "bool", "soft"])
@pytest.mark.parametrize("layer", ["tucker", "cp"])
def test_gathered_categorical_equals_the_one_hot_path(layer: str, mask: str) -> None:
    gathered, onehot = _pair(layer)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (9, 12), generator=g).double()
    m = {"none": None, "bool": torch.rand(9, 12, generator=g) < 0.4,
         "soft": torch.rand(9, 12, generator=g, dtype=torch.float64)}[mask]
    la, lb = gathered.log_prob(x, m), onehot.log_prob(x, m)
    torch.testing.assert_close(la, lb, atol=1e-12, rtol=1e-12)
    la.sum().backward()
    lb.sum().backward()
    for (name, pa), pb in zip(gathered.named_parameters(), onehot.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-12, rtol=1e-10, msg=name)
    ca, cb = expected_counts(gathered, x, m), expected_counts(onehot, x, m)
    torch.testing.assert_close(ca.leaves, cb.leaves, atol=1e-10, rtol=1e-10)
    for wa, wb in zip(ca.weights, cb.weights):
        torch.testing.assert_close(wa, wb, atol=1e-10, rtol=1e-10)
    hidden = torch.rand(9, 12, generator=g) < 0.5
    torch.testing.assert_close(gathered.mpe(x, hidden), onehot.mpe(x, hidden))


def test_categorical_in_half_precision_is_refused_above_its_exact_integers() -> None:
    rg = spnkit.RegionGraph.random(4, 1, 1)
    spn = spnkit.SPN(rg, spnkit.Categorical(300), 2, 2).to(torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 holds them only up to 256"):
        spn.log_prob(torch.full((1, 4), 299.0))
    small = spnkit.SPN(rg, spnkit.Categorical(200), 2, 2).to(torch.bfloat16)
    assert torch.isfinite(small.log_prob(torch.full((1, 4), 199.0))).all()


@pytest.mark.parametrize("n", [1, 4, 255])
def test_binomial_factor_equals_torch_distributions(n: int) -> None:
    leaf = spnkit.Binomial(total_count=n)
    params = leaf.init_params((3, 1, 2), torch.float64)
    x = torch.randint(0, n + 1, (3, 1, 2)).double()
    stats = leaf.statistics(x).movedim(0, -1)
    lp = (stats * leaf.natural(params)).sum(-1) + leaf.log_base_measure(x)
    want = torch.distributions.Binomial(n, logits=params["logits"]).log_prob(x)
    torch.testing.assert_close(lp, want)
    values = torch.arange(n + 1, dtype=torch.float64).view(-1, 1, 1, 1)
    pmf = torch.distributions.Binomial(n, logits=params["logits"]).log_prob(values)
    torch.testing.assert_close(leaf.log_max(params), pmf.amax(0))


@pytest.mark.parametrize("layer", ["tucker", "cp"])
def test_binomial_circuit_normalizes_and_matches_brute_force(layer: str) -> None:
    rg = spnkit.RegionGraph.random(3, depth=1, repetitions=2, seed=0)
    spn = spnkit.SPN(rg, spnkit.Binomial(total_count=3), 2, 2, layer=layer).double()
    states = bf.all_states(spn)  # 4^3
    with torch.no_grad():
        lp = spn.log_prob(states)
        assert abs(float(torch.logsumexp(lp, 0))) < 1e-10
        torch.testing.assert_close(lp, bf.log_prob(spn, states))
        m = torch.zeros_like(states, dtype=torch.bool)
        m[:, 0] = True
        torch.testing.assert_close(spn.log_prob(states, m), bf.log_prob(spn, states, m))
    draws = spn.sample(3000, generator=torch.Generator().manual_seed(0))
    fit = bf.goodness_of_fit(draws, states, lp)
    assert fit.passed(1e-3), fit


def test_binomial_rejects_values_outside_its_support() -> None:
    spn = spnkit.SPN(spnkit.RegionGraph.random(4, 1, 1), spnkit.Binomial(total_count=5), 2, 2)
    with pytest.raises(ValueError, match="0..5"):
        spn.log_prob(torch.tensor([[0.0, 6.0, 1.0, 2.0]]))


# ---------------------------------------------------------------- EM's priors
def test_categorical_m_step_with_pseudocounts_is_laplace_smoothing() -> None:
    leaf = spnkit.Categorical(4)
    stats = torch.tensor([[[[3.0, 0.0, 1.0, 0.0]]]], dtype=torch.float64)
    params = leaf.init_params((1, 1, 1), torch.float64)
    probs = torch.softmax(leaf.m_step(stats, params, pseudocount=2.0)["logits"], -1)
    torch.testing.assert_close(probs, torch.tensor([[[[3.5, 0.5, 1.5, 0.5]]]], dtype=torch.float64) / 6)


@pytest.mark.parametrize("leaf", [spnkit.Bernoulli(), spnkit.Binomial(total_count=4)])
def test_beta_prior_m_steps(leaf: spnkit.Leaf) -> None:
    n = getattr(leaf, "total_count", 1)
    stats = torch.tensor([[[[2.0, 3.0]]]], dtype=torch.float64)  # sum of x, count
    params = leaf.init_params((1, 1, 1), torch.float64)
    p = torch.sigmoid(leaf.m_step(stats, params, pseudocount=1.0)["logits"])
    torch.testing.assert_close(p, torch.tensor([[[(2.0 + 0.5) / (n * 3.0 + 1.0)]]], dtype=torch.float64))


def test_normal_m_step_shrinks_the_variance_toward_the_prior() -> None:
    leaf = spnkit.Normal(min_var=0.01, max_var=4.0)
    x = torch.tensor([1.0, 1.2, 0.8], dtype=torch.float64)
    stats = torch.stack([(x * x).sum(), x.sum(), torch.tensor(3.0, dtype=torch.float64)]).view(1, 1, 1, 3)
    params = leaf.init_params((1, 1, 1), torch.float64)
    new = leaf.m_step(stats, params, pseudocount=2.0)
    want = (3 * x.var(unbiased=False) + 2 * math.sqrt(0.01 * 4.0)) / 5
    torch.testing.assert_close(leaf.variance(new), want.view(1, 1, 1), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(new["loc"], x.mean().view(1, 1, 1))


def test_weight_pseudocounts_smooth_every_sum() -> None:
    rg = spnkit.RegionGraph.random(4, depth=1, repetitions=1, seed=0)
    spn = spnkit.SPN(rg, spnkit.Bernoulli(), 2, 2).double()
    x = torch.randint(0, 2, (20, 4)).double()
    c = expected_counts(spn, x)
    m_step(spn, c, weight_pseudocount=3.0)
    for layer, n in zip(spn.weighted_layers, c.weights):
        valid = torch.isfinite(layer.log_weights())
        smoothed = n + 3.0 * valid / valid.sum(1, keepdim=True)
        torch.testing.assert_close(layer.weights(), smoothed / smoothed.sum(1, keepdim=True), atol=1e-10, rtol=1e-8)


def test_em_with_priors_keeps_rare_values_off_the_floor() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (40, 6), generator=g).double()  # values 3..9 never seen
    rg = spnkit.RegionGraph.random(6, depth=1, repetitions=2, seed=0)
    plain = spnkit.SPN(rg, spnkit.Categorical(10), 2, 2).double()
    smooth = spnkit.SPN(rg, spnkit.Categorical(10), 2, 2).double()
    smooth.load_state_dict(plain.state_dict())
    kw = dict(method="em-batch", epochs=5, progress=False, valid_fraction=0.0)
    spnkit.fit(plain, x, weight_pseudocount=0.0, leaf_pseudocount=0.0, **kw)
    spnkit.fit(smooth, x, **kw)
    unseen = torch.full((1, 6), 7.0, dtype=torch.float64)
    assert smooth.log_prob(unseen) > plain.log_prob(unseen) + 10


def test_a_step_size_schedule_decays_linearly() -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 6, generator=g) < 0.3).double()
    rg = spnkit.RegionGraph.random(6, depth=1, repetitions=2, seed=0)
    a = spnkit.SPN(rg, spnkit.Bernoulli(), 2, 2).double()
    b = spnkit.SPN(rg, spnkit.Bernoulli(), 2, 2).double()
    b.load_state_dict(a.state_dict())
    kw = dict(method="em", epochs=3, batch_size=50, progress=False, valid_fraction=0.0)
    spnkit.fit(a, x, step_size=(0.5, 0.5), **kw)
    spnkit.fit(b, x, step_size=0.5, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # a constant schedule is the constant
    spnkit.fit(b, x, step_size=(0.9, 0.01), **kw)
    with pytest.raises(ValueError, match="step_size"):
        spnkit.fit(b, x, step_size=(0.5, 0.0), **kw)
