"""Property-based tests of the spnkit core.

Each property is a hypothesis ``@given`` test over circuits of every region-graph
builder, every leaf family and random (including extreme) parameters. Budgets
are set per property relative to the active hypothesis profile ("ci" by
default, "thorough" with ``SPNKIT_HYPOTHESIS_PROFILE=thorough``; see
docs/testing.md). Statistical properties draw samples from fixed-seed
generators and use tolerances a correct sampler fails with probability below
1e-6 per example.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spnkit
from spnkit.testing import brute_force as bf
from spnkit.testing import strategies as sts
from spnkit.testing.circuits import CircuitSpec, GraphSpec, make_deterministic
from spnkit.testing.validity import circuit_violations, region_graph_violations

ALPHA = 1e-6  # level of every goodness-of-fit test; see docs/testing.md


def examples(n: int):
    """``n`` examples in the "ci" profile, scaled by the active profile (``max_examples`` / 100; "thorough": 10x)."""
    return settings(max_examples=max(1, round(n * settings().max_examples / 100)))


def _reduce_classes(lp: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the uniform mixture of the root sums: ``(B,)``."""
    return lp if lp.dim() == 1 else torch.logsumexp(lp, 1) - math.log(lp.shape[1])


def _max_classes(lp: torch.Tensor) -> torch.Tensor:
    return lp if lp.dim() == 1 else lp.amax(1)


@st.composite
def _circuit_inputs_masks(draw, specs=None, mask_kinds=("observed", "marginalized", "bool", "soft"), max_batch=5, extreme=True):
    spec = draw(specs if specs is not None else sts.circuit_specs(max_vars=6))
    spn = spec.build()
    x = draw(sts.inputs(spn.leaf, spn.num_vars, max_batch=max_batch, extreme=extreme))
    if not spn.leaf.soft_evidence and "soft" in mask_kinds:  # multivariate leaves take hard evidence only
        hard = tuple(k for k in mask_kinds if k != "soft") or ("bool",)
        m = draw(sts.masks(tuple(x.shape), kinds=hard))
        if hard == ("bool",) or draw(st.booleans()):
            m = m.double()  # in place of a soft mask: a float mask of 0s and 1s
        return spec, spn, x, m
    m = draw(sts.masks(tuple(x.shape), kinds=mask_kinds))
    return spec, spn, x, m


# ------------------------------------------------------------------ validity
@examples(100)
@given(sts.circuit_specs(max_vars=8))
def test_compiled_circuits_are_valid(spec: CircuitSpec):
    """Every built graph and compiled circuit is smooth, decomposable, normalized and covering (walked in networkx)."""
    spn = spec.build()
    assert region_graph_violations(spn.region_graph) == []
    assert circuit_violations(spn) == []
    spn.check_valid()


@examples(200)
@given(sts.corrupted_region_graphs())
def test_check_valid_rejects_corrupted_graphs(c: sts.Corruption):
    """check_valid raises InvalidStructureError for every corruption and names an offending region."""
    assert region_graph_violations(c.graph), "the corruption left the graph valid"
    with pytest.raises(spnkit.InvalidStructureError) as err:
        c.graph.check_valid()
    msg = str(err.value)
    if c.kind == "cycle":
        assert "cycle" in msg
    else:
        assert any(f"region {r}" in msg for r in c.regions), f"{msg!r} names none of the regions {sorted(c.regions)}"
    with pytest.raises(ValueError):
        spnkit.SPN(c.graph, spnkit.Bernoulli(), num_sums=1, num_leaves=1)


# ------------------------------------------------------------- normalization
@examples(60)
@given(sts.enumerable_circuit_specs(max_states=1024))
def test_normalization_every_root(spec: CircuitSpec):
    """Summing exp(log_prob) over every joint state gives 1 for every root; marginalizing everything gives log 1."""
    spn = spec.build()
    states = bf.all_states(spn)
    with torch.no_grad():
        total = torch.logsumexp(spn.log_prob(states), dim=0)
        empty = spn.log_prob(states[:3], torch.ones(3, spn.num_vars, dtype=torch.bool))
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-9, rtol=0)
    torch.testing.assert_close(empty, torch.zeros_like(empty), atol=1e-9, rtol=0)


@examples(80)
@given(st.data())
def test_marginal_consistency(data):
    """Summing the joint over one variable's values equals log_prob with that variable masked (random per-sample masks)."""
    spec = data.draw(sts.enumerable_circuit_specs(max_states=256), label="spec")
    spn = spec.build()
    x = data.draw(sts.inputs(spn.leaf, spn.num_vars, max_batch=4), label="x")
    m = data.draw(sts.masks(tuple(x.shape), kinds=("bool", "observed")), label="mask")
    v = data.draw(st.integers(0, spn.num_vars - 1), label="variable")
    m[:, v] = False
    values = bf.supports(spn.leaf, spn.num_vars)[v]
    xs = x.repeat(len(values), 1)  # (V*B, D)
    xs[:, v] = torch.tensor(values).repeat_interleave(x.shape[0])
    with torch.no_grad():
        joint = spn.log_prob(xs, m.repeat(len(values), 1)).reshape(len(values), *spn.log_prob(x, m).shape)
        hidden = m.clone()
        hidden[:, v] = True
        marginal = spn.log_prob(x, hidden)
    torch.testing.assert_close(torch.logsumexp(joint, 0), marginal, atol=1e-9, rtol=1e-9)


@examples(80)
@given(_circuit_inputs_masks(mask_kinds=("soft",)))
def test_soft_masks_interpolate(case):
    """m = 0 equals observed and m = 1 marginalized, per entry; in between, each factor is weighted by 1 - m."""
    spec, spn, x, m = case
    with torch.no_grad():
        hard = m.round().bool()
        torch.testing.assert_close(spn.log_prob(x, hard.double()), spn.log_prob(x, hard))
        torch.testing.assert_close(spn.log_prob(x, m), bf.log_prob(spn, x, m), atol=1e-8, rtol=1e-9)
        if spn.leaf.discrete:  # masses <= 1: more marginalization never lowers the value
            assert (spn.log_prob(x, m) <= spn.log_prob(x, hard | (m > 0)) + 1e-9).all()
            assert (spn.log_prob(x, m) >= spn.log_prob(x, hard & (m >= 1)) - 1e-9).all()


@examples(120)
@given(_circuit_inputs_masks())
def test_log_prob_matches_brute_force(case):
    """log_prob equals the node-by-node reference evaluator, for every builder, leaf family and mask kind."""
    spec, spn, x, m = case
    with torch.no_grad():
        got = spn.log_prob(x, m)
    torch.testing.assert_close(got, bf.log_prob(spn, x, m), atol=1e-8, rtol=1e-9)


@examples(60)
@given(_circuit_inputs_masks(mask_kinds=("bool", "soft")), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -7.0]), st.booleans())
def test_values_at_marginalized_entries_never_matter(case, junk, validate):
    """NaN, infinities or any finite value at fully marginalized entries give the log_prob of zeros there, validated or not."""
    spec, spn, x, m = case
    hidden = m.bool() if m.dtype == torch.bool else m >= 1
    spn.validate_args = validate
    with torch.no_grad():
        torch.testing.assert_close(spn.log_prob(x.masked_fill(hidden, junk), m), spn.log_prob(x.masked_fill(hidden, 0.0), m), atol=1e-10, rtol=1e-12)


@examples(60)
@given(_circuit_inputs_masks(max_batch=6), st.randoms(use_true_random=False))
def test_batch_invariance(case, rnd):
    """Per-sample results do not depend on the other samples of the batch or on their order."""
    spec, spn, x, m = case
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    with torch.no_grad():
        full = spn.log_prob(x, m)
        torch.testing.assert_close(spn.log_prob(x[perm], m[perm]), full[perm], atol=1e-10, rtol=1e-12)
        for i in range(x.shape[0]):
            torch.testing.assert_close(spn.log_prob(x[i : i + 1], m[i : i + 1]), full[i : i + 1], atol=1e-10, rtol=1e-12)
        _, value = spn.mpe(x, m, return_value=True)
        _, value_perm = spn.mpe(x[perm], m[perm], return_value=True)
        torch.testing.assert_close(value_perm, value[perm], atol=1e-10, rtol=1e-12)


# ----------------------------------------------------------------- sampling
@pytest.mark.statistical
@examples(40)
@given(sts.enumerable_circuit_specs(max_states=64), st.data())
def test_sampling_goodness_of_fit(spec: CircuitSpec, data):
    """Unconditional samples (of one root, or of the uniform mixture of roots) match exp(log_prob)."""
    spn = spec.build()
    root = data.draw(st.one_of(st.none(), st.integers(0, spn.num_classes - 1)), label="root")
    states = bf.all_states(spn)
    with torch.no_grad():
        lp = spn.log_prob(states)
        target = _reduce_classes(lp) if root is None else lp.reshape(len(states), -1)[:, root]
        draws = spn.sample(4000, root=root, generator=torch.Generator().manual_seed(spec.seed))
    fit = bf.goodness_of_fit(draws, states, target)
    assert fit.passed(ALPHA), fit


@pytest.mark.statistical
@examples(25)
@given(sts.circuit_specs(max_vars=6, leaf_families=sts.normal_leaves(), scales=(0.3, 1.0, 3.0)), st.data())
def test_normal_sampling_marginals(spec: CircuitSpec, data):
    """Samples of Normal circuits have the marginal CDF of log_prob, per variable (Kolmogorov-Smirnov, DKW bound)."""
    spn = spec.build()
    var = data.draw(st.integers(0, spn.num_vars - 1), label="variable")
    loc = spn.leaf_layer.params["loc"].detach()
    sd = spn.leaf.variance(spn.leaf_layer.param_dict()).detach().sqrt()
    grid = torch.linspace(float((loc - 12 * sd).min()), float((loc + 12 * sd).max()), 4001)
    x = torch.zeros(len(grid), spn.num_vars)
    x[:, var] = grid
    m = torch.ones_like(x, dtype=torch.bool)
    m[:, var] = False
    with torch.no_grad():
        density = _reduce_classes(spn.log_prob(x, m))
        draws = spn.sample(5000, generator=torch.Generator().manual_seed(spec.seed))
    dist, p = bf.ks_distance(draws[:, var], grid, density)
    assert p >= ALPHA, (dist, p)


@pytest.mark.statistical
@examples(40)
@given(sts.enumerable_circuit_specs(max_states=64), st.data())
def test_conditional_sampling_follows_exact_conditional(spec: CircuitSpec, data):
    """Samples given evidence keep it and follow p(unobserved | observed), computed by enumeration."""
    spn = spec.build()
    e = data.draw(sts.inputs(spn.leaf, spn.num_vars, min_batch=1, max_batch=1), label="evidence")
    hidden = torch.tensor(data.draw(st.lists(st.booleans(), min_size=spn.num_vars, max_size=spn.num_vars), label="mask"))
    hidden[data.draw(st.integers(0, spn.num_vars - 1), label="one hidden variable")] = True
    free = torch.nonzero(hidden).flatten()
    values = bf.supports(spn.leaf, spn.num_vars)
    combos = torch.tensor(list(itertools.product(*[values[v] for v in free.tolist()])))
    completions = e.repeat(len(combos), 1)
    completions[:, free] = combos
    with torch.no_grad():
        joint = _reduce_classes(spn.log_prob(completions))
        target = joint - torch.logsumexp(joint, 0)  # uniform class prior: the mixture's conditional
        n = 3000
        draws = spn.sample(evidence=e.repeat(n, 1), marginalized=hidden.repeat(n, 1), generator=torch.Generator().manual_seed(spec.seed))
    assert torch.equal(draws[:, ~hidden], e[:, ~hidden].expand(n, -1))
    fit = bf.goodness_of_fit(draws[:, free], combos, target)
    assert fit.passed(ALPHA), fit


def _swap_leaf_branches(monkeypatch):
    """A broken sampler: the downward pass hands each leaf region the other component (k -> K-1-k)."""
    from spnkit import backtrack

    original = backtrack.downward

    def broken(spn, trace, root_choice, choose):
        chosen = original(spn, trace, root_choice, choose)
        return torch.where(chosen >= 0, spn.num_leaves - 1 - chosen, chosen)

    monkeypatch.setattr(backtrack, "downward", broken)


@pytest.mark.statistical
@pytest.mark.parametrize("broken", [False, True], ids=["correct", "swapped_branch"])
def test_goodness_of_fit_catches_a_broken_sampler(broken, monkeypatch):
    """The check used above passes the real sampler and rejects one that takes the other branch."""
    spn = CircuitSpec(GraphSpec.random(num_vars=4, depth=1, repetitions=2, seed=0), spnkit.Bernoulli(), 2, 2, seed=3, scale=2.0).build()
    states = bf.all_states(spn)
    with torch.no_grad():
        target = spn.log_prob(states)
    if broken:
        _swap_leaf_branches(monkeypatch)
    draws = spn.sample(4000, generator=torch.Generator().manual_seed(0))
    fit = bf.goodness_of_fit(draws, states, target)
    assert fit.passed(ALPHA) is (not broken), fit


@examples(60)
@given(_circuit_inputs_masks(), st.integers(0, 2**16))
def test_completions_never_change_observed_entries(case, seed):
    """sample(evidence=...) and mpe() return observed entries unchanged and fill the others inside the support."""
    spec, spn, x, m = case
    observed = m == 0 if m.dtype != torch.bool else ~m
    s = spn.sample(evidence=x, marginalized=m, generator=torch.Generator().manual_seed(seed))
    c = spn.mpe(x, m)
    for out in (s, c):
        assert out.shape == x.shape
        assert torch.equal(out[observed], x[observed])
        assert torch.isfinite(out).all()
        assert spn.leaf.support_error(out, torch.ones_like(observed)) is None


# --------------------------------------------------------------------- MPE
@st.composite
def _deterministic_specs(draw):
    leaf = draw(sts.finite_leaves(max_categories=3).filter(lambda f: not isinstance(f, spnkit.Binomial)))  # point masses need Bernoulli or Categorical
    card = 2 if isinstance(leaf, spnkit.Bernoulli) else leaf.num_categories
    k = draw(st.integers(1, card))
    max_vars = int(math.log(256) / math.log(card) + 1e-9)
    layer = draw(st.sampled_from(["tucker", "cp"]))
    sums = draw(st.integers(1, k * k if layer == "tucker" else k))  # enough inputs to share out (see make_deterministic)
    project = layer == "tucker" or sums != k or draw(st.booleans())
    return CircuitSpec(
        draw(sts.graph_specs(max_vars, binary=layer == "tucker")), leaf, num_sums=sums, num_leaves=k,
        num_classes=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)), layer=layer, project_leaves=project,
    )


@examples(60)
@given(_deterministic_specs(), st.data())
def test_mpe_equals_brute_force_on_deterministic_circuits(spec: CircuitSpec, data):
    """On deterministic circuits, max-product equals the circuit and mpe() finds the exact most probable completion."""
    spn = make_deterministic(spec.build(), seed=spec.seed)
    x = data.draw(sts.inputs(spn.leaf, spn.num_vars, max_batch=3), label="x")
    firsts = spn.leaf_layer.var_index[:, 0]  # leaf k is a point mass on value k of its region's first variable
    x[:, firsts] = x[:, firsts] % spn.num_leaves  # inputs inside the support (outside, every term is ~exp(-1e4))
    m = data.draw(sts.masks(tuple(x.shape), kinds=("bool", "marginalized")), label="mask")
    with torch.no_grad():
        lp = spn.log_prob(x)
        # a CP circuit has mass only on the value combinations its products share (e.g. diagonals); outside
        # its support every term is ~exp(-1e4), where sums and maxima differ: compare inside
        inside = lp > -1e3
        torch.testing.assert_close(lp[inside], bf.max_product(spn, x)[inside], atol=1e-8, rtol=1e-9)  # sum == max
        completion, value = spn.mpe(x, m, return_value=True)
        _, best = bf.mpe(spn, x, m)
        ok = best > -1e3
        torch.testing.assert_close(value[ok], best[ok], atol=1e-8, rtol=1e-9)
        torch.testing.assert_close(_max_classes(spn.log_prob(completion))[ok], best[ok], atol=1e-8, rtol=1e-9)


@examples(80)
@given(_circuit_inputs_masks(), st.booleans())
def test_mpe_value_bounded_by_log_prob(case, keep_observed):
    """The max-product value equals the reference max-product and never exceeds log_prob at the returned completion."""
    spec, spn, x, m = case
    with torch.no_grad():
        completion, value = spn.mpe(x, m, return_value=True, keep_observed=keep_observed)
        at_completion = _max_classes(spn.log_prob(completion))
        torch.testing.assert_close(value, _max_classes(bf.max_product(spn, x, m)), atol=1e-8, rtol=1e-9)
    assert (value <= at_completion + 1e-9 * (1 + at_completion.abs())).all(), (value, at_completion)


# --------------------------------------------------------------- gradients
@examples(25)
@given(
    sts.circuit_specs(graphs=sts.graph_specs(max_vars=4), leaf_families=sts.normal_leaves(), max_sums=2, max_leaves=2, max_classes=2, scales=(0.3, 1.0)),
    st.data(),
)
def test_gradcheck(spec: CircuitSpec, data):
    """Analytic gradients w.r.t. inputs, means, variances, sum and mixing weights (and soft masks) match finite differences."""
    spn = spec.build()
    x = data.draw(sts.inputs(spn.leaf, spn.num_vars, max_batch=2, extreme=False), label="x")
    m = data.draw(sts.masks(tuple(x.shape)), label="mask")
    names = [n for n, _ in spn.named_parameters()]
    params = {n: p.detach().clone() for n, p in spn.named_parameters()}

    def f(x_, *values):
        return torch.func.functional_call(spn, dict(zip(names, values)), (x_, m))

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), *[p.requires_grad_() for p in params.values()]))
    if m.dtype == torch.float64:  # gradient w.r.t. the soft mask itself, away from the clamps at 0 and 1
        soft = (m * 0.8 + 0.1).clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda m_: spn.log_prob(x, m_), (soft,))


@examples(60)
@given(
    sts.circuit_specs(max_vars=6, leaf_families=sts.normal_leaves()),
    st.data(),
)
def test_stability_far_inputs_and_full_marginalization(spec: CircuitSpec, data):
    """No NaN or inf in values or gradients for |x| up to 1e4, extreme parameters, or all-marginalized samples."""
    spn = spec.build()
    n = data.draw(st.integers(1, 4), label="batch")
    vals = data.draw(st.lists(st.sampled_from([-1e4, 1e4, -3e3, 0.5]) | st.floats(-1e4, 1e4), min_size=n * spn.num_vars, max_size=n * spn.num_vars))
    x = torch.tensor(vals).reshape(n, spn.num_vars).requires_grad_()
    m = torch.zeros(n, spn.num_vars, dtype=torch.bool)
    m[0] = data.draw(st.booleans(), label="first sample all marginalized")
    lp = spn.log_prob(x, m)
    assert torch.isfinite(lp).all(), lp
    lp.sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in spn.named_parameters():
        if p.numel():  # a CP layer whose children all enter unprojected holds no weights
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if m[0].all():
        torch.testing.assert_close(lp[0], torch.zeros_like(lp[0]), atol=1e-9, rtol=0)


@examples(50)
@given(sts.enumerable_circuit_specs(max_states=256), st.data())
def test_conditional_log_prob_is_normalized(spec: CircuitSpec, data):
    """exp(conditional_log_prob) sums to 1 over the query's values, and equals joint minus marginal."""
    spn = spec.build()
    x = data.draw(sts.inputs(spn.leaf, spn.num_vars, min_batch=1, max_batch=1), label="x")
    query = torch.tensor(data.draw(st.lists(st.booleans(), min_size=spn.num_vars, max_size=spn.num_vars), label="query"))
    query[data.draw(st.integers(0, spn.num_vars - 1), label="one queried variable")] = True
    free = torch.nonzero(query).flatten()
    values = bf.supports(spn.leaf, spn.num_vars)
    combos = torch.tensor(list(itertools.product(*[values[v] for v in free.tolist()])))
    xs = x.repeat(len(combos), 1)
    xs[:, free] = combos
    with torch.no_grad():
        cond = spn.conditional_log_prob(xs, query.expand_as(xs))
        torch.testing.assert_close(torch.logsumexp(cond, 0), torch.zeros_like(cond[0]), atol=1e-9, rtol=0)
        torch.testing.assert_close(cond, spn.log_prob(xs) - spn.log_prob(xs, query.expand_as(xs)))


# ----------------------------------------------------------- serialization
def _save_load():
    load = getattr(spnkit, "load", None)
    save = getattr(spnkit, "save", None)
    if load is None or (save is None and not hasattr(spnkit.SPN, "save")):
        pytest.skip("spnkit.save / spnkit.load are not available yet (being written); this property runs once they are")
    return (save if save is not None else spnkit.SPN.save), load


@pytest.mark.serialization
@examples(30)
@given(_circuit_inputs_masks(specs=sts.circuit_specs(max_vars=6)))
def test_serialization_round_trip(case):
    """save then load gives a circuit with the same structure, parameters and answers."""
    save, load = _save_load()
    spec, spn, x, m = case
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.spn")
        save(spn, path)
        back = load(path)
    assert back.region_graph == spn.region_graph
    assert back.leaf == spn.leaf and back.dtype == spn.dtype
    assert (back.num_sums, back.num_leaves, back.num_classes) == (spn.num_sums, spn.num_leaves, spn.num_classes)
    ours, theirs = dict(spn.named_parameters()), dict(back.named_parameters())
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    with torch.no_grad():
        assert torch.equal(back.log_prob(x, m), spn.log_prob(x, m))
        assert torch.equal(back.mpe(x, m), spn.mpe(x, m))
