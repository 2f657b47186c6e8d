"""Tests of the spnkit core: exactness of every query, input validation, builders, the layer contract.

Float64 throughout; every random number comes from a seeded generator. The
reference values come from :mod:`spnkit.testing.brute_force` (a node-by-node
evaluator of ``SPN.to_networkx()``) and from exhaustive enumeration.
"""

from __future__ import annotations

import doctest
import importlib
import itertools
import math
import pkgutil

import networkx as nx
import numpy as np
import pytest
import spnkit_mutants  # tests/spnkit/spnkit_mutants.py, the mutation harness
import torch

import spnkit
from spnkit import SPN, Bernoulli, Categorical, InvalidStructureError, Normal, Partition, RegionGraph
from spnkit.layers import CPLayer, LeafLayer, MixingLayer, TuckerLayer
from spnkit.leaves import Leaf
from spnkit.testing import brute_force as bf
from spnkit.testing.brute_force import support
from spnkit.testing.circuits import CircuitSpec, GraphSpec, make_deterministic
from spnkit.testing.validity import circuit_violations

ALPHA = 1e-6  # goodness-of-fit level; see docs/testing.md

EXPLICIT = GraphSpec.explicit(
    6,
    regions=[(0, 1, 2, 3, 4, 5), (0, 1, 2), (3, 4, 5), (0,), (1, 2), (1,), (2,), (0, 2, 4), (1, 3, 5), (3, 4), (5,), (3,), (4,)],
    partitions=[(0, (1, 2)), (1, (3, 4)), (4, (5, 6)), (0, (7, 8)), (2, (9, 10)), (9, (11, 12))],
)

GRAPHS = {
    "random": GraphSpec.random(num_vars=6, depth=2, repetitions=3, seed=1),
    "poon_domingos": GraphSpec.poon_domingos(height=2, width=3, delta=1),
    "poon_domingos_rgb": GraphSpec.poon_domingos(height=2, width=2, delta=1, channels=2),
    "quad_tree": GraphSpec.quad_tree(height=3, width=2),
    "quad_tree_channels": GraphSpec.quad_tree(height=2, width=2, channels=2),
    "networkx": EXPLICIT,
}

LEAVES = {"normal": Normal(0.05, 2.0), "bernoulli": Bernoulli(), "categorical": Categorical(3)}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _values(leaf, shape, gen) -> torch.Tensor:
    """Random values in the support of ``leaf``."""
    if isinstance(leaf, Normal):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    card = len(support(leaf))
    return torch.randint(0, card, shape, generator=gen).double()


def _circuit(graph="random", leaf="bernoulli", num_sums=2, num_leaves=2, num_classes=1, seed=0, scale=1.0) -> SPN:
    g = GRAPHS[graph] if isinstance(graph, str) else graph
    lf = LEAVES[leaf] if isinstance(leaf, str) else leaf
    return CircuitSpec(g, lf, num_sums, num_leaves, num_classes, seed, scale).build()


# ============================================================ normalization
NORMALIZATION = {
    "bernoulli-random-10vars": (GraphSpec.random(num_vars=10, depth=2, repetitions=3, seed=0), Bernoulli(), 3, 3, 3, 1.0),
    "bernoulli-random-10vars-extreme": (GraphSpec.random(num_vars=10, depth=3, repetitions=2, seed=5), Bernoulli(), 2, 2, 2, 30.0),
    "bernoulli-pd-2x5": (GraphSpec.poon_domingos(height=2, width=5, delta=2), Bernoulli(), 2, 3, 2, 1.0),
    "bernoulli-quad-2x2x2": (GraphSpec.quad_tree(height=2, width=2, channels=2), Bernoulli(), 3, 2, 3, 3.0),
    "categorical3-networkx-6vars": (EXPLICIT, Categorical(3), 2, 3, 2, 1.0),
    "categorical4-random-5vars": (GraphSpec.random(num_vars=5, depth=1, repetitions=4, seed=2), Categorical(4), 3, 2, 1, 3.0),
    "categorical3-pd-2x3": (GraphSpec.poon_domingos(height=2, width=3, delta=1), Categorical(3), 2, 2, 2, 0.01),
}


@pytest.mark.parametrize("case", NORMALIZATION.values(), ids=NORMALIZATION.keys())
def test_normalized_over_all_states(case):
    graph, leaf, s, k, c, scale = case
    spn = CircuitSpec(graph, leaf, s, k, c, seed=1, scale=scale).build()
    states = bf.all_states(spn)
    with torch.no_grad():
        total = spn.log_prob(states).exp().sum(0)  # () or (C,): one total per root
    assert total.numel() == c
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", NORMALIZATION.values(), ids=NORMALIZATION.keys())
def test_marginalizing_every_variable_gives_log_one(case):
    graph, leaf, s, k, c, scale = case
    spn = CircuitSpec(graph, leaf, s, k, c, seed=1, scale=scale).build()
    x = _values(leaf, (4, spn.num_vars), _gen())
    x[1] = torch.nan  # anything may stand at fully marginalized entries
    with torch.no_grad():
        lp = spn.log_prob(x, torch.ones_like(x, dtype=torch.bool))
    torch.testing.assert_close(lp, torch.zeros_like(lp), atol=1e-12, rtol=0)


# ====================================================== marginal consistency
@pytest.mark.parametrize("graph", ["random", "poon_domingos", "quad_tree_channels", "networkx"])
@pytest.mark.parametrize("leaf", ["bernoulli", "categorical"])
@pytest.mark.parametrize("var", [0, 3])
def test_summing_out_a_variable_equals_masking_it(graph, leaf, var):
    spn = _circuit(graph, leaf, num_classes=2)
    gen = _gen(var)
    x = _values(spn.leaf, (8, spn.num_vars), gen)
    m = torch.rand(x.shape, generator=gen) < 0.4  # per-sample masks
    m[:, var] = False
    values = bf.support(spn.leaf)
    with torch.no_grad():
        joint = torch.stack([spn.log_prob(x.index_fill(1, torch.tensor([var]), v), m) for v in values])
        masked = spn.log_prob(x, m.index_fill(1, torch.tensor([var]), True))
    torch.testing.assert_close(torch.logsumexp(joint, 0), masked, atol=1e-10, rtol=1e-10)


# ============================================================ Normal leaves
def _grid(spn: SPN, points: int) -> tuple[torch.Tensor, float]:
    """A uniform grid covering every leaf mean +- 12 standard deviations, and its spacing."""
    loc = spn.leaf_layer.params["loc"].detach()
    sd = spn.leaf.variance(spn.leaf_layer.param_dict()).detach().sqrt()
    lo, hi = float((loc - 12 * sd).min()), float((loc + 12 * sd).max())
    grid = torch.linspace(lo, hi, points, dtype=torch.float64)
    return grid, (hi - lo) / (points - 1)


NORMAL_2D = {
    "random-one-tree": (GraphSpec.random(num_vars=2, depth=1, repetitions=1, seed=0), 2, 3, 1),
    "random-3-repetitions-2-classes": (GraphSpec.random(num_vars=2, depth=1, repetitions=3, seed=0), 3, 2, 2),
    "quad-1x2": (GraphSpec.quad_tree(height=1, width=2), 2, 2, 3),
}


@pytest.mark.parametrize("case", NORMAL_2D.values(), ids=NORMAL_2D.keys())
def test_normal_circuit_over_two_variables_integrates_to_one(case):
    graph, k, s, c = case
    spn = CircuitSpec(graph, Normal(0.05, 1.0), s, k, c, seed=3, scale=1.5).build()
    grid, h = _grid(spn, 700)
    xx = torch.cartesian_prod(grid, grid)  # (700**2, 2)
    with torch.no_grad():
        dens = spn.log_prob(xx).exp().reshape(700, 700, -1)
    total = torch.trapezoid(torch.trapezoid(dens, dx=h, dim=0), dx=h, dim=0)  # (C,)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", NORMAL_2D.values(), ids=NORMAL_2D.keys())
@pytest.mark.parametrize("var", [0, 1])
def test_normal_marginal_over_one_variable_integrates_to_one(case, var):
    graph, k, s, c = case
    spn = CircuitSpec(graph, Normal(0.05, 1.0), s, k, c, seed=4, scale=1.5).build()
    grid, h = _grid(spn, 3000)
    x = torch.zeros(len(grid), 2, dtype=torch.float64)
    x[:, var] = grid
    m = torch.zeros_like(x, dtype=torch.bool)
    m[:, 1 - var] = True
    with torch.no_grad():
        dens = spn.log_prob(x, m).exp().reshape(len(grid), -1)
    total = torch.trapezoid(dens, dx=h, dim=0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


# ============================================================== brute force
@pytest.mark.parametrize("mask", ["bool", "soft"])
@pytest.mark.parametrize("leaf", list(LEAVES))
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_log_prob_equals_brute_force(graph, leaf, mask):
    spn = _circuit(graph, leaf, num_sums=3, num_leaves=2, num_classes=2, seed=2, scale=2.0)
    gen = _gen(1)
    x = _values(spn.leaf, (6, spn.num_vars), gen)
    if mask == "bool":
        m = torch.rand(x.shape, generator=gen) < 0.5
        m[0], m[1] = False, True  # all observed, all marginalized
    else:
        m = torch.rand(x.shape, generator=gen, dtype=torch.float64)
        m[0, 0], m[0, 1] = 0.0, 1.0
    with torch.no_grad():
        got = spn.log_prob(x, m)
    torch.testing.assert_close(got, bf.log_prob(spn, x, m), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_compiled_circuit_is_valid_when_walked(graph):
    spn = _circuit(graph, "bernoulli", num_sums=3, num_leaves=2, num_classes=2)
    assert circuit_violations(spn) == []
    spn.check_valid()


# ================================================================= sampling
SAMPLING = {
    "bernoulli-random-one-class": (GraphSpec.random(num_vars=5, depth=2, repetitions=2, seed=0), Bernoulli(), 1, None),
    "bernoulli-pd-mixture-of-classes": (GraphSpec.poon_domingos(height=2, width=3, delta=1), Bernoulli(), 3, None),
    "bernoulli-pd-class-1": (GraphSpec.poon_domingos(height=2, width=3, delta=1), Bernoulli(), 3, 1),
    "categorical-quad-class-0": (GraphSpec.quad_tree(height=2, width=2), Categorical(3), 2, 0),
    "categorical-networkx": (GraphSpec.explicit(4, [(0, 1, 2, 3), (0, 1), (2, 3), (0,), (1,), (2,), (3,), (0, 2), (1, 3)],
                                                [(0, (1, 2)), (1, (3, 4)), (2, (5, 6)), (0, (7, 8)), (7, (3, 5)), (8, (4, 6))]),
                             Categorical(3), 1, None),
}


@pytest.mark.statistical
@pytest.mark.parametrize("case", SAMPLING.values(), ids=SAMPLING.keys())
def test_sample_frequencies_match_probabilities(case):
    graph, leaf, c, root = case
    spn = CircuitSpec(graph, leaf, 3, 2, c, seed=7, scale=1.5).build()
    states = bf.all_states(spn)
    with torch.no_grad():
        lp = spn.log_prob(states).reshape(len(states), c)
        target = torch.logsumexp(lp, 1) - math.log(c) if root is None else lp[:, root]
    draws = spn.sample(20000, root=root, generator=_gen(0))
    fit = bf.goodness_of_fit(draws, states, target)
    assert fit.passed(ALPHA), fit


@pytest.mark.statistical
@pytest.mark.parametrize("var", [0, 1, 2, 3])
def test_normal_samples_match_the_marginal_cdf(var):
    spn = _circuit("poon_domingos_rgb", Normal(0.05, 1.0), num_sums=2, num_leaves=3, num_classes=2, seed=6, scale=1.5)
    grid, _ = _grid(spn, 4001)
    x = torch.zeros(len(grid), spn.num_vars)
    x[:, var] = grid
    m = torch.ones_like(x, dtype=torch.bool)
    m[:, var] = False
    with torch.no_grad():
        lp = spn.log_prob(x, m)
        density = torch.logsumexp(lp, 1) - math.log(2)  # uniform mixture of the two roots
    draws = spn.sample(20000, generator=_gen(var))
    dist, p = bf.ks_distance(draws[:, var], grid, density)
    assert p >= ALPHA, (dist, p)


def test_sampling_is_reproducible_with_a_generator():
    spn = _circuit("poon_domingos", "normal", num_classes=2)
    a = spn.sample(50, generator=_gen(3))
    b = spn.sample(50, generator=_gen(3))
    c = spn.sample(50, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.statistical
@pytest.mark.parametrize("c", [1, 2])
def test_conditional_samples_follow_the_exact_conditional(c):
    spn = _circuit(GraphSpec.random(num_vars=5, depth=2, repetitions=2, seed=3), Categorical(3), num_classes=c, seed=5, scale=1.5)
    evidence = torch.tensor([[2.0, 0.0, 0.0, 1.0, 0.0]])
    hidden = torch.tensor([True, False, True, False, True])
    free = torch.nonzero(hidden).flatten()
    combos = torch.tensor(list(itertools.product(range(3), repeat=3)), dtype=torch.float64)
    completions = evidence.repeat(len(combos), 1)
    completions[:, free] = combos
    with torch.no_grad():
        joint = spn.log_prob(completions).reshape(len(combos), c)
        joint = torch.logsumexp(joint, 1)  # uniform class prior
        target = joint - torch.logsumexp(joint, 0)
    n = 20000
    draws = spn.sample(evidence=evidence.repeat(n, 1), marginalized=hidden.repeat(n, 1), generator=_gen(1))
    assert torch.equal(draws[:, ~hidden], evidence[:, ~hidden].expand(n, -1))
    fit = bf.goodness_of_fit(draws[:, free], combos, target)
    assert fit.passed(ALPHA), fit


@pytest.mark.parametrize("leaf", list(LEAVES))
@pytest.mark.parametrize("mask", ["bool", "soft"])
def test_conditional_samples_never_change_observed_entries(leaf, mask):
    spn = _circuit("poon_domingos_rgb", leaf, num_classes=2)
    gen = _gen(2)
    x = _values(spn.leaf, (20, spn.num_vars), gen)
    m = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    m = (m < 0.5) if mask == "bool" else torch.where(m < 0.3, torch.zeros_like(m), m)
    observed = ~m if mask == "bool" else m == 0
    x_nan = torch.where(observed, x, torch.full_like(x, torch.nan)) if mask == "bool" else x
    out = spn.sample(evidence=x_nan, marginalized=m, generator=gen)
    assert torch.equal(out[observed], x[observed])
    assert torch.isfinite(out).all()
    assert spn.leaf.support_error(out, torch.ones_like(observed)) is None


# ====================================================================== MPE
DETERMINISTIC = {
    "bernoulli-K1-one-tree": (GraphSpec.random(num_vars=6, depth=2, repetitions=1, seed=0), Bernoulli(), 1, 1, 1),
    "bernoulli-K2-S3-2classes": (GraphSpec.random(num_vars=8, depth=2, repetitions=2, seed=1), Bernoulli(), 3, 2, 2),
    "bernoulli-K2-pd": (GraphSpec.poon_domingos(height=2, width=3, delta=1), Bernoulli(), 4, 2, 1),
    "categorical-K3-S5-quad": (GraphSpec.quad_tree(height=2, width=3), Categorical(3), 5, 3, 2),
    "categorical-K2-networkx": (EXPLICIT, Categorical(4), 2, 2, 1),
}


@pytest.mark.parametrize("case", DETERMINISTIC.values(), ids=DETERMINISTIC.keys())
def test_deterministic_construction_is_deterministic(case):
    graph, leaf, s, k, c = case
    spn = make_deterministic(CircuitSpec(graph, leaf, s, k, c).build(), seed=3)
    g = spn.to_networkx()
    x = bf.all_states(spn, max_states=4096)[:: max(1, len(bf.all_states(spn, 4096)) // 300)]
    values = bf.node_values(spn, x, graph=g)
    for node, data in g.nodes(data=True):
        if data["kind"] == "sum":
            kids = [c_ for c_ in g.successors(node) if g.edges[node, c_]["weight"] > 1e-300]
            positive = np.stack([values[c_] > -1000 for c_ in kids])  # (children, B): reachable for this input
            assert (positive.sum(0) <= 1).all(), f"sum {node} has several non-zero children for one input"
    assert circuit_violations(spn) == []


@pytest.mark.parametrize("case", DETERMINISTIC.values(), ids=DETERMINISTIC.keys())
def test_mpe_equals_brute_force_on_deterministic_circuits(case):
    graph, leaf, s, k, c = case
    spn = make_deterministic(CircuitSpec(graph, leaf, s, k, c).build(), seed=3)
    gen = _gen(5)
    x = _values(leaf, (6, spn.num_vars), gen)
    x[:, spn.leaf_layer.var_index[:, 0]] %= k  # evidence inside the support
    m = torch.rand(x.shape, generator=gen) < 0.6
    m[0] = True
    with torch.no_grad():
        completion, value = spn.mpe(x, m, return_value=True)
        best_x, best = bf.mpe(spn, x, m)
        at = spn.log_prob(completion)
        at = at.amax(1) if at.dim() == 2 else at
    torch.testing.assert_close(value, best, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(at, best, atol=1e-9, rtol=1e-9)
    assert torch.equal(completion[~m], x[~m])


@pytest.mark.parametrize("leaf", list(LEAVES))
@pytest.mark.parametrize("graph", ["random", "poon_domingos_rgb", "networkx"])
def test_mpe_keeps_evidence_and_its_value_bounds_log_prob(graph, leaf):
    spn = _circuit(graph, leaf, num_sums=3, num_leaves=3, num_classes=2, seed=1, scale=2.0)
    gen = _gen(0)
    x = _values(spn.leaf, (10, spn.num_vars), gen)
    m = torch.rand(x.shape, generator=gen) < 0.5
    with torch.no_grad():
        completion, value = spn.mpe(x, m, return_value=True)
        at = spn.log_prob(completion).amax(1)
        torch.testing.assert_close(value, bf.max_product(spn, x, m).amax(1), atol=1e-9, rtol=1e-9)
    assert torch.equal(completion[~m], x[~m])
    assert (value <= at + 1e-9).all()


@pytest.mark.parametrize("root", [0, 1])
def test_mpe_of_a_chosen_root(root):
    spn = make_deterministic(_circuit("quad_tree", "bernoulli", num_sums=2, num_leaves=2, num_classes=2), seed=1)
    x = torch.zeros(4, spn.num_vars)
    m = torch.ones_like(x, dtype=torch.bool)
    completion, value = spn.mpe(x, m, root=root, return_value=True)
    _, best = bf.mpe(spn, x, m, root=root)
    torch.testing.assert_close(value, best, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(spn.log_prob(completion)[:, root], best, atol=1e-9, rtol=1e-9)


# ================================================================ gradients
@pytest.mark.parametrize("graph", ["random", "poon_domingos", "quad_tree_channels"])
@pytest.mark.parametrize("where", ["far_inputs", "all_marginalized", "mixed"])
def test_gradients_finite_far_from_the_data(graph, where):
    spn = _circuit(graph, Normal(0.01, 1.0), num_classes=2, scale=3.0)
    x = torch.full((3, spn.num_vars), 1e4)
    x[1] = -1e4
    m = torch.zeros_like(x, dtype=torch.bool)
    if where == "all_marginalized":
        m[:] = True
    elif where == "mixed":
        m[0] = True
        m[2, ::2] = True
    x.requires_grad_()
    lp = spn.log_prob(x, m)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in spn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if where == "all_marginalized":
        torch.testing.assert_close(lp, torch.zeros_like(lp), atol=1e-12, rtol=0)


@pytest.mark.parametrize("graph", ["random", "poon_domingos", "networkx"])
@pytest.mark.parametrize("mask", ["none", "bool", "soft"])
def test_gradcheck_inputs_and_parameters(graph, mask):
    spn = _circuit(graph, Normal(0.1, 2.0), num_sums=2, num_leaves=2, num_classes=2, seed=4)
    gen = _gen(2)
    x = torch.randn(2, spn.num_vars, generator=gen)
    m = {"none": None, "bool": torch.rand(x.shape, generator=gen) < 0.4,
         "soft": torch.rand(x.shape, generator=gen, dtype=torch.float64) * 0.9 + 0.05}[mask]
    names = [n for n, _ in spn.named_parameters()]
    assert {"leaf_layer.params.loc", "leaf_layer.params.var"} <= set(names) and any("sum_layers" in n for n in names)

    def f(x_, *values):
        return torch.func.functional_call(spn, dict(zip(names, values)), (x_, m))

    params = [p.detach().clone().requires_grad_() for _, p in spn.named_parameters()]
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), *params))


def test_gradcheck_soft_mask():
    spn = _circuit("random", Normal(0.1, 2.0), num_classes=2, seed=4)
    x = torch.randn(2, spn.num_vars, generator=_gen(0))
    m = (torch.rand(x.shape, generator=_gen(1), dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda m_: spn.log_prob(x, m_), (m,))


# =============================================================== bad inputs
def _bern() -> SPN:
    return _circuit(GraphSpec.random(num_vars=4, depth=1, repetitions=2, seed=0), "bernoulli")


def _cat() -> SPN:
    return _circuit(GraphSpec.random(num_vars=4, depth=1, repetitions=2, seed=0), "categorical")


def _normal() -> SPN:
    return _circuit(GraphSpec.random(num_vars=4, depth=1, repetitions=2, seed=0), "normal")


def _x(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


_OK = _x([0, 1, 1, 0], [1, 0, 0, 1])
_TERNARY = RegionGraph(3, ((0, 1, 2), (0,), (1,), (2,)), (Partition(0, (1, 2, 3)),))
_OVERLAP = RegionGraph(3, ((0, 1, 2), (0, 1), (1, 2)), (Partition(0, (1, 2)),))


def _nx_graph(**node_attrs) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("a", kind="region", scope=(0, 1))
    g.add_node("p", kind="partition")
    g.add_node("b", kind="region", scope=(0,))
    g.add_node("c", kind="region", scope=(1,))
    g.add_edges_from([("a", "p"), ("p", "b"), ("p", "c")])
    for node, attrs in node_attrs.items():
        g.nodes[node].clear()
        g.nodes[node].update(attrs)
    return g


BAD = {
    # inputs of the queries
    "x-not-a-tensor": (lambda: _bern().log_prob([[0, 1, 1, 0]]), r"must be a torch.Tensor of shape \(batch, 4\)"),
    "x-wrong-ndim": (lambda: _bern().log_prob(torch.zeros(4)), r"shape \(batch, 4\), got \(4,\)"),
    "x-wrong-width": (lambda: _bern().log_prob(torch.zeros(2, 5)), r"shape \(batch, 4\), got \(2, 5\)"),
    "x-3d": (lambda: _bern().log_prob(torch.zeros(2, 4, 1)), r"shape \(batch, 4\)"),
    "x-empty-batch": (lambda: _bern().log_prob(torch.zeros(0, 4)), r"no samples \(shape \(0, 4\)\)"),
    "x-bool": (lambda: _bern().log_prob(torch.zeros(2, 4, dtype=torch.bool)), r"real float or integer tensor, got torch.bool"),
    "x-complex": (lambda: _normal().log_prob(torch.zeros(2, 4, dtype=torch.complex128)), r"real float or integer tensor"),
    "x-nan-observed": (lambda: _normal().log_prob(_x([0, float("nan"), 0, 0])), r"NaN or inf at 1 observed entries"),
    "x-inf-observed": (lambda: _normal().log_prob(_x([0, float("inf"), 0, 0])), r"NaN or inf at 1 observed entries"),
    "x-nan-soft-masked": (lambda: _normal().log_prob(_x([0, float("nan"), 0, 0]), _x([0, 0.5, 0, 0])), r"NaN or inf"),
    "mask-wrong-shape": (lambda: _bern().log_prob(_OK, torch.zeros(2, 3, dtype=torch.bool)), r"shape of x, \(2, 4\); got \(2, 3\)"),
    "mask-broadcast": (lambda: _bern().log_prob(_OK, torch.zeros(1, 4, dtype=torch.bool)), r"no broadcasting"),
    "mask-above-one": (lambda: _bern().log_prob(_OK, torch.full((2, 4), 1.5)), r"must lie in \[0, 1\]"),
    "mask-negative": (lambda: _bern().log_prob(_OK, torch.full((2, 4), -0.1)), r"must lie in \[0, 1\]"),
    "mask-nan": (lambda: _bern().log_prob(_OK, torch.full((2, 4), float("nan"))), r"must lie in \[0, 1\]"),
    "mask-int": (lambda: _bern().log_prob(_OK, torch.zeros(2, 4, dtype=torch.long)), r"bool or float in \[0, 1\], got dtype torch.int64"),
    "mask-list": (lambda: _bern().log_prob(_OK, [[0, 0, 0, 0]] * 2), r"marginalized must be a torch.Tensor"),
    "bernoulli-2": (lambda: _bern().log_prob(_x([0, 2, 1, 0])), r"Bernoulli leaves take values in \{0, 1\}; got e.g. \[2.0\]"),
    "bernoulli-half": (lambda: _bern().log_prob(_x([0, 0.5, 1, 0])), r"values in \{0, 1\}"),
    "bernoulli-2-soft": (lambda: _bern().log_prob(_x([0, 2, 1, 0]), _x([0, 0.9, 0, 0])), r"values in \{0, 1\}"),
    "categorical-too-big": (lambda: _cat().log_prob(_x([0, 3, 1, 0])), r"integers in 0..2; got e.g. \[3.0\]"),
    "categorical-negative": (lambda: _cat().log_prob(_x([0, -1, 1, 0])), r"integers in 0..2"),
    "categorical-non-integer": (lambda: _cat().log_prob(_x([0, 1.5, 1, 0])), r"integers in 0..2; got e.g. \[1.5\]"),
    "sample-evidence-outside-support": (lambda: _bern().sample(evidence=_x([0, 2, 1, 0]), marginalized=torch.tensor([[1, 0, 0, 0]]).bool()), r"\{0, 1\}"),
    "mpe-wrong-shape": (lambda: _bern().mpe(torch.zeros(2, 3)), r"shape \(batch, 4\)"),
    "mpe-nan-observed": (lambda: _normal().mpe(_x([0, float("nan"), 0, 0]), torch.zeros(1, 4, dtype=torch.bool)), r"NaN or inf"),
    "sample-zero": (lambda: _bern().sample(0), r"num_samples must be a positive int"),
    "sample-bool": (lambda: _bern().sample(True), r"num_samples must be a positive int"),
    "sample-both": (lambda: _bern().sample(3, evidence=_OK), r"either num_samples or evidence"),
    "sample-mask-without-evidence": (lambda: _bern().sample(3, marginalized=torch.ones(3, 4, dtype=torch.bool)), r"marginalized needs evidence"),
    "sample-root-out-of-range": (lambda: _bern().sample(3, root=1), r"root must index one of the 1 root sums"),
    "mpe-root-negative": (lambda: _bern().mpe(_OK, root=-1), r"root must index"),
    "conditional-query-float": (lambda: _bern().conditional_log_prob(_OK, torch.ones(2, 4)), r"query must be a bool tensor"),
    "conditional-query-shape": (lambda: _bern().conditional_log_prob(_OK, torch.ones(2, 3, dtype=torch.bool)),
                                r"query must be a bool tensor of the shape of x"),
    "conditional-x-list": (lambda: _bern().conditional_log_prob([[0, 1, 1, 0]], torch.ones(1, 4, dtype=torch.bool)), r"x must be a torch.Tensor"),
    "conditional-mask-list": (lambda: _bern().conditional_log_prob(_OK, torch.ones(2, 4, dtype=torch.bool), [[0] * 4] * 2),
                              r"marginalized must be None or a bool tensor"),
    "conditional-mask-soft": (lambda: _bern().conditional_log_prob(_OK, torch.ones(2, 4, dtype=torch.bool), torch.full((2, 4), 0.5)),
                              r"marginalized must be None or a bool tensor"),
    "sample-evidence-list": (lambda: _bern().sample(evidence=[[0, 1, 1, 0]]), r"evidence must be a torch.Tensor"),
    "sample-root-float": (lambda: _circuit(GRAPHS["random"], "bernoulli", num_classes=2).sample(3, root=0.5),
                          r"root must be None, an int or an integer tensor"),
    "sample-root-wrong-length": (lambda: _circuit(GRAPHS["random"], "bernoulli", num_classes=2).sample(3, root=torch.tensor([0, 1])),
                                 r"integer tensor of shape \(\) or \(3,\)"),
    "mpe-root-bool": (lambda: _circuit(GRAPHS["random"], "bernoulli", num_classes=2).mpe(_x([0] * 6), root=True), r"root must be None, an int"),
    # constructors
    "num_sums-zero": (lambda: SPN(GRAPHS["random"].build(), Bernoulli(), num_sums=0), r"num_sums must be a positive int, got 0"),
    "num_leaves-negative": (lambda: SPN(GRAPHS["random"].build(), Bernoulli(), num_leaves=-1), r"num_leaves must be a positive int"),
    "num_classes-float": (lambda: SPN(GRAPHS["random"].build(), Bernoulli(), num_classes=1.5), r"num_classes must be a positive int"),
    "num_sums-bool": (lambda: SPN(GRAPHS["random"].build(), Bernoulli(), num_sums=True), r"num_sums must be a positive int"),
    "leaf-not-a-leaf": (lambda: SPN(GRAPHS["random"].build(), "normal"), r"leaf must be a spnkit leaf family"),
    "leaf-class-not-instance": (lambda: SPN(GRAPHS["random"].build(), Normal), r"leaf must be a spnkit leaf family"),
    "graph-not-a-graph": (lambda: SPN(nx.DiGraph(), Bernoulli()), r"region_graph must be a spnkit.RegionGraph"),
    "graph-non-binary": (lambda: SPN(_TERNARY, Bernoulli()), r"layer=.tucker. multiplies two children.*partition 0 of region 0 has 3: use layer=.cp."),
    "graph-invalid": (lambda: SPN(_OVERLAP, Bernoulli()), r"not decomposable: partition 0 of region 0"),
    "normal-min-var-zero": (lambda: Normal(min_var=0.0), r"0 < min_var < max_var"),
    "normal-bounds-swapped": (lambda: Normal(min_var=2.0, max_var=1.0), r"0 < min_var < max_var"),
    "normal-loc-range": (lambda: Normal(loc_range=(1.0, 0.0)), r"loc_range"),
    "categorical-one": (lambda: Categorical(1), r"num_categories must be an int >= 2"),
    "categorical-float": (lambda: Categorical(2.5), r"num_categories must be an int >= 2"),
    # region graph builders and constructor
    "random-one-var": (lambda: RegionGraph.random(num_vars=1, depth=1), r"num_vars must be an int >= 2"),
    "random-depth-zero": (lambda: RegionGraph.random(num_vars=4, depth=0), r"depth must be an int >= 1"),
    "random-too-deep": (lambda: RegionGraph.random(num_vars=4, depth=3), r"2\*\*depth=8 variables"),
    "random-repetitions-zero": (lambda: RegionGraph.random(num_vars=4, depth=1, repetitions=0), r"repetitions must be an int >= 1"),
    "random-float-vars": (lambda: RegionGraph.random(num_vars=4.0, depth=1), r"num_vars must be an int"),
    "pd-delta-too-big": (lambda: RegionGraph.poon_domingos(2, 2, delta=2), r"delta=2 leaves a 2x2 image unsplit"),
    "pd-zero-height": (lambda: RegionGraph.poon_domingos(0, 2), r"height must be an int >= 1"),
    "pd-zero-channels": (lambda: RegionGraph.poon_domingos(2, 2, delta=1, channels=0), r"channels must be an int >= 1"),
    "pd-max-depth-zero": (lambda: RegionGraph.poon_domingos(2, 2, delta=1, max_depth=0), r"max_depth must be an int >= 1"),
    "quad-one-pixel": (lambda: RegionGraph.quad_tree(1, 1), r"at least 2 pixels"),
    "quad-depth-zero": (lambda: RegionGraph.quad_tree(2, 2, depth=0), r"depth must be an int >= 1"),
    "rg-empty-scope": (lambda: RegionGraph(2, ((0, 1), ()), ()), r"region 1 has an empty scope"),
    "rg-var-out-of-range": (lambda: RegionGraph(2, ((0, 1), (2,)), ()), r"region 1 has variables outside 0..1"),
    "rg-no-child": (lambda: RegionGraph(2, ((0, 1), (0, 1)), (Partition(0, ()),)), r"partition 0 has no children"),
    "rg-missing-child": (lambda: RegionGraph(2, ((0, 1), (0,)), (Partition(0, (1, 5)),)), r"child region 5, which does not exist"),
    "rg-two-roots": (lambda: RegionGraph(2, ((0, 1), (0,), (1,)), ()), r"exactly one root region.*found 3"),
    "rg-partition-by-scope": (lambda: RegionGraph(2, ((0, 1), (0,), (1,)), (Partition((0, 1), ((0,), (1,))),)),
                              r"partition 0 must name regions by their index"),
    "rg-scope-not-ints": (lambda: RegionGraph(2, ((0, 1), (0.5,)), ()), r"region 1 must be a collection of variable indices"),
    "rg-image-shape": (lambda: RegionGraph(2, ((0, 1),), (), (2, 2, 1)), r"image_shape \(2, 2, 1\) does not match num_vars=2"),
    "rg-no-vars": (lambda: RegionGraph(0, ((0,),), ()), r"num_vars must be a positive int"),
    "nx-not-a-digraph": (lambda: RegionGraph.from_networkx(nx.Graph()), r"expected a networkx.DiGraph"),
    "nx-region-without-scope": (lambda: RegionGraph.from_networkx(_nx_graph(b={"kind": "region"})), r"region node 'b' has no 'scope'"),
    "nx-bad-kind": (lambda: RegionGraph.from_networkx(_nx_graph(b={"kind": "leaf", "scope": (0,)})), r"kind='leaf'; expected 'region' or 'partition'"),
    "nx-non-smooth": (lambda: RegionGraph.from_networkx(_nx_graph(c={"kind": "region", "scope": (0,)})), r"region 0"),
}


@pytest.mark.parametrize("call, message", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("mask", ["bool", "float"])
def test_nan_is_allowed_at_fully_marginalized_entries(mask):
    spn = _normal()
    x = _x([0.1, float("nan"), float("inf"), 0.3])
    m = torch.tensor([[False, True, True, False]])
    m = m if mask == "bool" else m.double()
    lp = spn.log_prob(x, m)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, spn.log_prob(x.nan_to_num(0.0, 0.0), m))
    out = spn.mpe(x, m)
    assert torch.isfinite(out).all() and torch.equal(out[~m.bool()], x[~m.bool()])


@pytest.mark.parametrize("validate", [True, False], ids=["validated", "unvalidated"])
@pytest.mark.parametrize("mask", ["bool", "float"])
def test_huge_values_at_marginalized_entries_never_enter_the_arithmetic(mask, validate):
    """Unobserved entries are zeroed before the statistics (x^2 of 1e30 overflows float32): by a select
    in the leaf layer's input for a bool mask, by masked_fill for a float one; values and gradients as with
    zeros there."""
    spn = _normal().float()
    spn.validate_args = validate
    m = torch.tensor([[False, True, True, False], [True, False, False, False]])
    m = m if mask == "bool" else m.float()
    huge = torch.tensor([[0.1, 1e30, -1e30, 0.3], [2e30, -0.4, 0.2, 0.0]], requires_grad=True)
    zeroed = huge.detach().masked_fill(m.bool(), 0.0).requires_grad_()
    lp, ref = spn.log_prob(huge, m), spn.log_prob(zeroed, m)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, ref)
    (g,), (g_ref,) = torch.autograd.grad(lp.sum(), huge), torch.autograd.grad(ref.sum(), zeroed)
    torch.testing.assert_close(g, g_ref)
    assert (g[m.bool()] == 0).all()


def test_finite_values_whose_sum_overflows_are_accepted():
    """The finiteness check's fast path (a sum) overflows for huge finite values; those must still pass."""
    spn = _normal().float()
    x = torch.tensor([[3e38, 3e38, 0.0, 0.0]], dtype=torch.float32)
    assert not torch.isfinite(x.sum())
    assert spn.log_prob(x).shape == (1,)  # no ValueError (the density itself overflows: x^2 is beyond float32)
    with pytest.raises(ValueError, match="NaN or inf at 1 observed"):
        spn.log_prob(torch.tensor([[3e38, 3e38, float("inf"), 0.0]], dtype=torch.float32))


# ======================================================= region graph builders
@pytest.mark.parametrize(
    "builder",
    [lambda s: RegionGraph.random(num_vars=13, depth=2, repetitions=3, seed=s)],
    ids=["random"],
)
def test_random_graphs_are_reproducible_by_seed(builder):
    assert builder(3) == builder(3)
    assert builder(3) != builder(4)


@pytest.mark.parametrize("num_vars, depth", [(2, 1), (7, 1), (13, 2), (16, 3), (33, 5)])
def test_random_leaf_regions_hold_about_num_vars_over_two_to_the_depth(num_vars, depth):
    rg = RegionGraph.random(num_vars=num_vars, depth=depth, repetitions=2, seed=0)
    sizes = {len(rg.regions[r]) for r in rg.leaf_regions}
    target = num_vars / 2**depth
    assert sizes <= {math.floor(target), math.ceil(target)}
    assert len(rg.leaf_regions) == 2 * 2**depth
    assert rg.depth == depth
    rg.check_valid()


def _rectangles(rg: RegionGraph) -> None:
    h, w, c = rg.image_shape
    for i, scope in enumerate(rg.regions):
        pixels = {v // c for v in scope}
        assert {p * c + ch for p in pixels for ch in range(c)} == set(scope), f"region {i} splits a pixel's channels"
        rows, cols = {p // w for p in pixels}, {p % w for p in pixels}
        assert len(pixels) == (max(rows) - min(rows) + 1) * (max(cols) - min(cols) + 1), f"region {i} is not a rectangle"
        assert rows == set(range(min(rows), max(rows) + 1)) and cols == set(range(min(cols), max(cols) + 1))


@pytest.mark.parametrize(
    "rg",
    [
        RegionGraph.poon_domingos(4, 4, delta=2),
        RegionGraph.poon_domingos(3, 5, delta=(1, 2), channels=3),
        RegionGraph.poon_domingos(4, 3, delta=1, channels=2, max_depth=2),
        RegionGraph.quad_tree(4, 4),
        RegionGraph.quad_tree(3, 5, channels=3),
        RegionGraph.quad_tree(8, 8, channels=2, depth=2),
    ],
    ids=["pd-4x4", "pd-3x5x3", "pd-4x3x2-depth2", "quad-4x4", "quad-3x5x3", "quad-8x8x2-depth2"],
)
def test_image_graph_regions_are_rectangles_with_channels_together(rg):
    _rectangles(rg)
    rg.check_valid()
    assert {len(p.children) for p in rg.partitions} == {2}


@pytest.mark.parametrize("spec", list(GRAPHS.values()), ids=list(GRAPHS))
def test_networkx_round_trip(spec):
    rg = spec.build()
    g = rg.to_networkx()
    back = RegionGraph.from_networkx(g)
    assert back == rg
    relabeled = nx.relabel_nodes(g, {n: f"node-{n[0]}-{n[1]}" for n in g.nodes})  # any hashable node names
    assert RegionGraph.from_networkx(relabeled) == rg


def test_compiling_never_changes_the_graph():
    rg = GRAPHS["poon_domingos"].build()
    before = rg.to_networkx()
    SPN(rg, Bernoulli(), 2, 2)
    assert rg == GRAPHS["poon_domingos"].build()
    assert nx.utils.graphs_equal(before, rg.to_networkx())


CHECK_VALID = {
    "overlap": (RegionGraph(3, ((0, 1, 2), (0, 1), (1, 2)), (Partition(0, (1, 2)),)), r"not decomposable: partition 0 of region 0 .*\[1\]"),
    "not-smooth": (RegionGraph(4, ((0, 1, 2, 3), (0, 1), (2,), (0,), (1,)), (Partition(0, (1, 2)), Partition(1, (3, 4)))),
                   r"not smooth: partition 0 of region 0"),
    "inner-not-smooth": (RegionGraph(3, ((0, 1, 2), (0, 1), (2,), (0,), (2,)), (Partition(0, (1, 2)), Partition(1, (3, 4)))), r"region 1"),
    "root-misses-variable": (RegionGraph(4, ((0, 1, 2), (0,), (1, 2)), (Partition(0, (1, 2)),)),
                             r"root region 0 does not cover every variable; missing e.g. \[3\]"),
    "cycle": (RegionGraph(3, ((0, 1, 2), (0, 1), (2,), (0,), (1,)), (Partition(0, (1, 2)), Partition(1, (3, 4)), Partition(3, (1, 4)))),
              r"cycle"),
}


@pytest.mark.parametrize("rg, message", CHECK_VALID.values(), ids=CHECK_VALID.keys())
def test_check_valid_names_the_offending_region(rg, message):
    with pytest.raises(InvalidStructureError, match=message):
        rg.check_valid()


# =========================================================== layer contract
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("sizes", [(2, 2, 1), (3, 2, 3), (1, 4, 2)], ids=["K2-S2-C1", "K2-S3-C3", "K4-S1-C2"])
def test_every_layer_output_is_regions_batch_k(graph, sizes):
    num_sums, num_leaves, num_classes = sizes
    spn = _circuit(graph, "normal", num_sums=num_sums, num_leaves=num_leaves, num_classes=num_classes)
    B = 5
    seen: list[tuple[torch.nn.Module, tuple[int, ...]]] = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen.append((mod, tuple(out.shape)))) for layer in spn.layers]
    x = torch.randn(B, spn.num_vars, generator=_gen(0))
    try:
        spn.log_prob(x)
    finally:
        for h in hooks:
            h.remove()
    assert [mod for mod, _ in seen] == spn.layers  # every layer ran, bottom-up
    leaf_regions = len(spn.region_graph.leaf_regions)
    for mod, shape in seen:
        if isinstance(mod, LeafLayer):
            assert shape == (leaf_regions, B, num_leaves)
        elif isinstance(mod, (TuckerLayer, CPLayer)):
            assert shape == (mod.num_partitions, B, mod.k_out)
        else:
            assert isinstance(mod, MixingLayer)
            assert shape == (mod.table.shape[0], B, mod.logits.shape[-1])
    # per height: the sum layer has one output per partition, the mixing layer one per region
    tops = {lv.product.k_out for lv in spn.levels[-1:]}
    assert tops == {num_classes}
    for lv in spn.levels:
        assert lv.product.num_partitions == len(lv.partitions)
        if lv.mixing is not None:
            assert lv.mixing.table.shape[0] == len(lv.regions)
    # the upward trace: one buffer row per region below the root, root vector (B, C)
    for mode in ("sum", "max"):
        trace = spn.upward(spn.prepare(x), mode=mode)
        assert trace.buf.shape == (len(spn.region_graph.regions) - 1, B, spn.k_max)
        assert trace.root.shape == (B, num_classes)
        assert [p.shape for p in trace.parts] == [(lv.product.num_partitions, B, lv.product.k_out) for lv in spn.levels]


# ================================================================= doctests
_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(spnkit.__path__, prefix="spnkit.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", _MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_normal_init_var_sets_the_starting_variances() -> None:
    leaf = spnkit.Normal(min_var=0.002, max_var=0.12, init_var=(0.002, 0.01))
    var = leaf.variance(leaf.init_params((1000,), torch.float64))
    assert var.min() >= 0.002 and var.max() <= 0.01 + 1e-9 and var.max() - var.min() > 0.005
    default = spnkit.Normal(min_var=0.002, max_var=0.12)
    v = default.variance(default.init_params((1000,), torch.float64))
    assert v.min() > 0.002 + 0.26 * 0.118 and v.max() < 0.002 + 0.74 * 0.118  # sigmoid(+-1) of the span
    with pytest.raises(ValueError, match="init_var"):
        spnkit.Normal(min_var=0.01, max_var=0.1, init_var=(0.001, 0.05))


def test_normal_natural_parameters_and_their_hand_written_gradient() -> None:
    """The fused natural-parameter map equals the closed form, and its backward passes gradcheck."""
    from spnkit.leaves.normal import _NormalNatural

    leaf = spnkit.Normal(min_var=0.05, max_var=0.7)
    torch.manual_seed(0)
    loc = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(4, 5, dtype=torch.float64, requires_grad=True) * 3
    var = 0.05 + 0.65 * torch.sigmoid(raw)
    want = torch.stack([-0.5 / var, loc / var, -0.5 * loc * loc / var - 0.5 * torch.log(2 * math.pi * var)], -1)
    torch.testing.assert_close(leaf.natural({"loc": loc, "var": raw}), want)
    assert torch.autograd.gradcheck(lambda a, b: _NormalNatural.apply(a, b, 0.05, 0.7), (loc, raw.detach().requires_grad_()))
    # the natural parameters give the Normal log-density on the statistics (x^2, x, 1)
    x = torch.randn(4, 5, dtype=torch.float64)
    dens = (leaf.statistics(x).movedim(0, -1) * leaf.natural({"loc": loc, "var": raw})).sum(-1)
    torch.testing.assert_close(dens, torch.distributions.Normal(loc, var.sqrt()).log_prob(x))


@pytest.mark.parametrize("layer", ["tucker", "cp"])
@pytest.mark.parametrize("graph", ["random", "poon_domingos"])
def test_layers_gather_their_children_from_the_blocks_they_lie_in(graph, layer):
    """Each product layer's input equals its children's rows read from the concatenated buffer, values and gradients."""
    torch.manual_seed(0)
    if graph == "random":
        rg = RegionGraph.random(24, depth=3, repetitions=3, seed=1)
    else:
        rg = RegionGraph.poon_domingos(6, 6, delta=2)
    spn = SPN(rg, Normal(), num_sums=3, num_leaves=2, layer=layer).double()
    x, m = torch.rand(5, rg.num_vars, dtype=torch.float64), torch.rand(5, rg.num_vars) < 0.3
    blocks = [b.detach().clone().requires_grad_() for b in spn.upward(spn.prepare(x, m)).blocks]
    several = False
    for lv in spn.levels:
        prod = lv.product
        if isinstance(prod, TuckerLayer):
            rows = torch.cat([prod.left, prod.right])
        else:
            rows = torch.cat([prod.slot_rows, prod.direct_rows])
        several |= len(set(prod.children_rows.blocks)) > 1
        got = prod.children_rows(blocks)  # (n, k, B)
        full = torch.cat(blocks)  # (rows, K_max, B)
        want = full[rows, : prod.k_in]
        assert torch.equal(got, want)
        g = torch.randn(got.shape, dtype=torch.float64)
        grads = torch.autograd.grad((got * g).sum(), blocks, allow_unused=True)
        want_grads = torch.autograd.grad((want * g).sum(), blocks, allow_unused=True)
        for a, b in zip(grads, want_grads):
            assert (a is None and b is None) or torch.equal(a if a is not None else torch.zeros_like(b), b if b is not None else torch.zeros_like(a))
    if graph == "poon_domingos":
        assert several  # Poon-Domingos levels read several heights


@pytest.mark.parametrize("layout", ["gather", "dense"])
@pytest.mark.parametrize("leaf", list(LEAVES))
def test_unmasked_input_matches_an_all_observed_mask_with_gradients(leaf, layout):
    """Without a mask, a constant statistic enters as a bias (no row of ones is gathered); values and
    gradients equal those of the masked path with every entry observed, padding slots included."""
    torch.manual_seed(0)
    rg = RegionGraph.random(11, depth=2, repetitions=3, seed=3)  # 11 variables: leaf regions of unequal size, so padding slots
    spn = SPN(rg, LEAVES[leaf], num_sums=3, num_leaves=4).double()
    spn.leaf_layer.layout = layout
    assert bool((spn.leaf_layer.var_index == spn.num_vars).any())
    x = _values(spn.leaf, (7, spn.num_vars), _gen(2))
    results = []
    for mask in (None, torch.zeros(x.shape, dtype=torch.bool), torch.zeros(x.shape, dtype=torch.float64)):
        spn.zero_grad(set_to_none=True)
        lp = spn.log_prob(x, mask)
        (lp * torch.arange(1.0, 8.0, dtype=torch.float64)).sum().backward()
        results.append((lp.detach(), {k: p.grad.clone() for k, p in spn.named_parameters()}))
    for lp, grads in results[1:]:
        torch.testing.assert_close(lp, results[0][0], atol=1e-12, rtol=1e-12)
        for k, g in grads.items():
            torch.testing.assert_close(g, results[0][1][k], atol=1e-12, rtol=1e-12, msg=k)
    torch.testing.assert_close(results[0][0], bf.log_prob(spn, x, torch.zeros(x.shape, dtype=torch.bool)), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", ["gather", "dense"])
@pytest.mark.parametrize("leaf", list(LEAVES))
def test_hard_evidence_input_matches_the_weighted_one(leaf, layout, dtype):
    """A bool mask takes the leaf layer's hard-evidence input (zeroing, weighting and layout in one pass per
    statistic); it equals the float mask's weighted input in values, parameter gradients, with NaN and inf
    at unobserved entries, padding slots included, validated or not."""
    torch.manual_seed(0)
    spn = SPN(RegionGraph.random(11, depth=2, repetitions=3, seed=3), LEAVES[leaf], num_sums=3, num_leaves=4).to(dtype)
    spn.leaf_layer.layout = layout
    assert bool((spn.leaf_layer.var_index == spn.num_vars).any())
    x = _values(spn.leaf, (7, spn.num_vars), _gen(2)).to(dtype)
    m = torch.rand(x.shape, generator=_gen(3)) < 0.4
    m[0] = True  # a sample with nothing observed
    m[1] = False
    nonfinite = x.masked_fill(m, float("nan"))
    nonfinite[m & (torch.rand(x.shape, generator=_gen(4)) < 0.5)] = float("inf")
    huge = x.masked_fill(m, 1e30)  # finite: validation lets the leaf zero by multiplying (x^2 would overflow float32)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-5)
    for validate, junk in ((True, nonfinite), (False, nonfinite), (True, huge), (False, huge)):
        spn.validate_args = validate
        with torch.no_grad():
            torch.testing.assert_close(spn.log_prob(junk, m), spn.log_prob(x, m.to(dtype)), **tol)
        results = []
        for xx, mm in ((junk, m), (x, m.to(dtype))):
            spn.zero_grad(set_to_none=True)
            lp = spn.log_prob(xx, mm)
            (lp * torch.arange(1.0, 8.0, dtype=dtype)).sum().backward()
            results.append((lp.detach(), {k: p.grad.clone() for k, p in spn.named_parameters()}))
        torch.testing.assert_close(results[0][0], results[1][0], **tol)
        for k, g in results[0][1].items():
            torch.testing.assert_close(g, results[1][1][k], **tol, msg=k)
    torch.testing.assert_close(results[0][0][0], torch.zeros((), dtype=dtype), atol=1e-5, rtol=0)  # nothing observed: log 1


@pytest.mark.parametrize("leaf", list(LEAVES))
def test_observed_statistics_are_the_weighted_statistics(leaf):
    """Each family's hard-evidence statistics, written through transposed views, equal T(x) * w with x zeroed, and Leaf's default."""
    fam = LEAVES[leaf]
    x = _values(fam, (6, 5), _gen(5))
    obs = torch.rand(6, 5, generator=_gen(6)) < 0.6
    want = fam.statistics(x.masked_fill(~obs, 0.0)) * obs
    for method in (fam.observed_statistics, lambda *a: Leaf.observed_statistics(fam, *a)):
        for junk, finite in ((float("nan"), False), (1e30, True), (-3.0, True)):
            out = torch.full((fam.num_stats, 5, 6), 7.0, dtype=torch.float64)
            method(x.masked_fill(~obs, junk).t(), obs.t(), out, finite)
            torch.testing.assert_close(out, want.transpose(1, 2), atol=0, rtol=0)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_weighted_statistics_are_the_statistics_times_the_weights(leaf):
    """Each family's soft-evidence statistics equal T(x) * w bit for bit (Leaf's default), and are a fresh tensor."""
    fam = LEAVES[leaf]
    x = _values(fam, (6, 5), _gen(7))
    w = torch.rand(6, 5, generator=_gen(8), dtype=torch.float64)
    w[0] = 0.0
    w[1] = 1.0
    want = fam.statistics(x) * w
    x0, w0 = x.clone(), w.clone()
    for method in (fam.weighted_statistics, lambda *a: Leaf.weighted_statistics(fam, *a)):
        got = method(x, w)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        got.fill_(5.0)  # the layer may write into it: no view of x or w
        assert torch.equal(x, x0) and torch.equal(w, w0)


@pytest.mark.parametrize("name", sorted(spnkit_mutants.MUTANTS))
def test_mutant_matches_the_core(name):
    """Each broken variant of the mutation harness still finds its snippet in the core (an edit of the core updates it)."""
    module, owner, attr, src = spnkit_mutants._matching(name)
    compile(src, f"<mutant {name}>", "exec")  # the mutated source is valid Python


@pytest.mark.parametrize("leaf", [Normal(), Bernoulli()], ids=["normal", "bernoulli"])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_varying_statistics_are_the_statistics_without_the_constant(leaf, grad):
    x = torch.randint(0, 2, (3, 5)).double()
    x[0, 0] = 1.0
    x.requires_grad_(grad)
    got = leaf.varying_statistics(x)
    torch.testing.assert_close(got, leaf.statistics(x)[:-1])
    assert leaf.statistics(x)[-1].eq(1).all()
    with torch.no_grad():
        got.zero_()  # a fresh tensor: the layer zeroes its padding row in place
    assert x.abs().sum() > 0


@pytest.mark.parametrize("leaf", list(LEAVES))
def test_statistics_grads_closed_forms_match_the_default(leaf):
    """The families' closed-form contractions of a gradient with T(x) and T'(x) equal Leaf's autograd default."""
    fam = LEAVES[leaf]
    x = _values(fam, (4, 6), _gen(5))
    grad = torch.randn(fam.num_stats, 4, 6, generator=_gen(6), dtype=torch.float64)
    for wrt_x in (False, True):
        dot, d_x = fam.statistics_grads(x, grad, wrt_x)
        ref_dot, ref_x = Leaf.statistics_grads(fam, x, grad, wrt_x)
        torch.testing.assert_close(dot, ref_dot, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(dot, (grad * fam.statistics(x)).sum(0), atol=1e-12, rtol=1e-12)
        if not wrt_x or leaf == "categorical":  # one-hot statistics have no derivative
            assert d_x is None and ref_x is None
        else:
            torch.testing.assert_close(d_x, ref_x, atol=1e-12, rtol=1e-12)


class _NormalWithDefaultGrads(Normal):
    """A Normal whose statistics' gradient contractions come from Leaf's autograd default, as a user-defined family's would."""

    statistics_grads = Leaf.statistics_grads


@pytest.mark.parametrize("layout", ["gather", "dense"])
@pytest.mark.parametrize("leaf", ["normal", "normal-default", "bernoulli"])
def test_gradcheck_values_and_soft_mask_together(leaf, layout):
    """Gradients w.r.t. the values and the soft mask at once, padding slots included, in both leaf layouts."""
    family = _NormalWithDefaultGrads(0.05, 2.0) if leaf == "normal-default" else LEAVES[leaf]
    spn = SPN(RegionGraph.random(7, depth=2, repetitions=2, seed=3), family, num_sums=2, num_leaves=2).double()
    spn.leaf_layer.layout = layout
    assert bool((spn.leaf_layer.var_index == spn.num_vars).any())
    gen = _gen(7)
    m = (torch.rand(3, 7, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    if leaf != "bernoulli":
        x = torch.randn(3, 7, generator=gen, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(spn.log_prob, (x, m))
    else:  # Bernoulli values are not differentiable: the mask only
        x = _values(spn.leaf, (3, 7), gen)
        assert torch.autograd.gradcheck(lambda m_: spn.log_prob(x, m_), (m,))
