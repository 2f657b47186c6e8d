"""Learned circuits (HCLT, LearnSPN), the image structures with n-ary products, and the compiled circuit's public face."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import spnkit
from spnkit.layers import LeafLayer, LeafLayerBase
from spnkit.layers.kernels import LogProjectProduct, log_project_product
from spnkit.testing import brute_force as bf
from spnkit.testing.circuits import CircuitSpec, GraphSpec

ROOT = Path(__file__).resolve().parents[2]


def _tree_data(n: int, seed: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Binary samples of a chain-and-branch tree Bayesian network over 6 variables, and its edges."""
    g = torch.Generator().manual_seed(seed)
    edges = [(0, 1), (1, 2), (1, 3), (3, 4), (0, 5)]
    x = torch.zeros(n, 6, dtype=torch.long)
    x[:, 0] = (torch.rand(n, generator=g) < 0.5).long()
    for p, c in edges:
        flip = torch.rand(n, generator=g) < 0.1
        x[:, c] = torch.where(flip, 1 - x[:, p], x[:, p])
    return x, edges


def test_chow_liu_region_graph_holds_the_generating_tree() -> None:
    x, edges = _tree_data(4000, 0)
    rg = spnkit.RegionGraph.chow_liu(x)
    assert rg.tree_edges is not None
    assert {frozenset(e) for e in rg.tree_edges} == {frozenset(e) for e in edges}
    rg.check_valid()


def test_hclt_is_a_normalized_cp_circuit_that_fits_its_data() -> None:
    x, _ = _tree_data(2000, 1)
    spn = spnkit.hclt(x, num_latents=3, leaf=spnkit.Categorical(num_categories=2), seed=0).double()
    assert (spn.layer, spn.project_leaves, spn.num_sums, spn.num_leaves) == ("cp", False, 3, 3)
    states = bf.all_states(spn)
    with torch.no_grad():
        assert abs(float(torch.logsumexp(spn.log_prob(states), 0))) < 1e-9
        torch.testing.assert_close(spn.log_prob(states), bf.log_prob(spn, states))
    before = spn.log_prob(x.double()).mean()
    spnkit.fit(spn, x.double(), method="em-batch", epochs=10, progress=False, valid_fraction=0.0)
    after = spn.log_prob(x.double()).mean()
    assert after > before
    # the generating network's entropy bound: H(x0) + 5 H(flip 0.1) nats per sample
    h = 0.6931 + 5 * -(0.1 * torch.log(torch.tensor(0.1)) + 0.9 * torch.log(torch.tensor(0.9)))
    assert -after < h + 0.05


def test_hclt_is_reproducible_under_a_seed() -> None:
    x, _ = _tree_data(500, 2)
    a = spnkit.hclt(x, num_latents=2, leaf=spnkit.Categorical(num_categories=2), seed=3)
    b = spnkit.hclt(x, num_latents=2, leaf=spnkit.Categorical(num_categories=2), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _blocks(n: int, seed: int) -> torch.Tensor:
    """Two clusters, each with two independent blocks of three strongly correlated standardized variables."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    shift = torch.where(torch.rand(n, 1, generator=g) < 0.3, 3.0, -1.0)
    x = torch.cat([z[:, :1] + 0.2 * torch.randn(n, 3, generator=g), z[:, 1:] + 0.2 * torch.randn(n, 3, generator=g)], 1) + shift
    return (x - x.mean(0)) / x.std(0)


def test_learn_spn_finds_the_blocks_and_beats_a_random_structure() -> None:
    x = _blocks(3000, 0)
    leaf = spnkit.Normal(min_var=1e-3, max_var=4.0, loc_range=(-3.0, 3.0))
    spn = spnkit.learn_spn(x, leaf=leaf, min_rows=50, seed=0)
    spn.check_valid()
    rg = spn.region_graph
    scopes = {frozenset(rg.regions[c]) for p in rg.partitions for c in p.children}
    assert {frozenset({0, 1, 2}), frozenset({3, 4, 5})} <= scopes
    rat = spnkit.SPN(spnkit.RegionGraph.random(6, depth=1, repetitions=2, seed=0), leaf, 4, 4).double()
    spnkit.fit(rat, x.double(), epochs=30, progress=False, valid_fraction=0.0, lr=0.05)
    assert spn.log_prob(x.double()).mean() > rat.log_prob(x.double()).mean() + 0.5


def test_a_one_child_partition_makes_its_child_a_mixture_component() -> None:
    rg = spnkit.RegionGraph(3, ((0, 1, 2), (0, 1, 2), (0, 1, 2)), (spnkit.Partition(0, (1,)), spnkit.Partition(0, (2,))))
    rg.check_valid()
    torch.manual_seed(0)
    spn = spnkit.SPN(rg, spnkit.MultivariateNormal(min_var=0.05, max_var=3.0), num_sums=1, num_leaves=1, layer="cp").double()
    leaf = spn.leaf_layer
    params = leaf.group_params(3)
    cov = spn.leaf.covariance(params)[:, 0]
    mean = params["loc"][:, 0]
    w = spn.levels[-1].mixing.weights()[0, :, 0]
    comps = torch.distributions.MultivariateNormal(mean.detach(), covariance_matrix=cov.detach())
    x = torch.randn(7, 3, dtype=torch.float64)
    order = [spn.row_of(r) for r in (1, 2)]  # leaf-layer rows of the two components, in partition order
    ref = torch.logsumexp(torch.log(w.detach()) + comps.log_prob(x.unsqueeze(1))[:, order], 1)
    torch.testing.assert_close(spn.log_prob(x).detach(), ref)
    m = torch.zeros(7, 3, dtype=torch.bool)
    m[:, 1] = True
    sub = torch.distributions.MultivariateNormal(mean.detach()[:, [0, 2]], covariance_matrix=cov.detach()[:, [0, 2]][:, :, [0, 2]])
    ref_m = torch.logsumexp(torch.log(w.detach()) + sub.log_prob(x[:, [0, 2]].unsqueeze(1))[:, order], 1)
    torch.testing.assert_close(spn.log_prob(x, marginalized=m).detach(), ref_m)


def test_learn_spn_with_multivariate_normal_leaves_keeps_each_block_joint() -> None:
    x = _blocks(3000, 0)
    joint = spnkit.learn_spn(x, leaf=spnkit.MultivariateNormal.from_data(x), min_rows=500, seed=0)
    joint.check_valid()
    rg = joint.region_graph
    leaf_scopes = {frozenset(rg.regions[r]) for r in rg.leaf_regions}
    assert leaf_scopes == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}  # one Gaussian per block and cluster, no univariate leaf
    univariate = spnkit.learn_spn(x, leaf=spnkit.Normal(min_var=1e-3, max_var=4.0, loc_range=(-3.0, 3.0)), min_rows=500, seed=0)
    assert joint.log_prob(x.double()).mean() > univariate.log_prob(x.double()).mean() + 0.5
    g = torch.Generator().manual_seed(1)
    m = torch.rand(x.shape, generator=g) < 0.3
    filled = spnkit.impute(joint, x.double(), m)
    err_joint = float(((filled - x.double())[m] ** 2).mean())
    err_uni = float(((spnkit.impute(univariate, x.double(), m) - x.double())[m] ** 2).mean())
    assert err_joint < 0.8 * err_uni  # the correlations within a block fill its hidden entries


def test_learn_spn_structure_multivariate_fits_joint_leaves_on_fully_observed_rows() -> None:
    x = _blocks(1000, 2)
    m = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.1
    ls = spnkit.structure.learn_spn_structure(x, m, min_rows=300, multivariate=True, seed=0)
    ls.region_graph.check_valid()
    for r, rows in ls.leaf_rows.items():
        scope = list(ls.region_graph.regions[r])
        assert not bool(m[torch.as_tensor(rows)][:, scope].any())


def test_learn_spn_on_discrete_data_normalizes_and_uses_cluster_proportions() -> None:
    x, _ = _tree_data(1500, 3)
    spn = spnkit.learn_spn(x, leaf=spnkit.Categorical(num_categories=2), min_rows=100, seed=0)
    states = bf.all_states(spn)
    assert abs(float(torch.logsumexp(spn.log_prob(states), 0))) < 1e-9
    for lv in spn.levels:
        if lv.mixing is not None:
            w = lv.mixing.weights()[:, :, 0]
            assert torch.allclose(w.sum(1), torch.ones(len(lv.regions), dtype=w.dtype))
    emp = torch.zeros(len(states), dtype=torch.float64)  # the learned model is close to the data's distribution
    codes = (x * (2 ** torch.arange(5, -1, -1))).sum(1)
    emp.index_add_(0, codes, torch.ones(len(x), dtype=torch.float64))
    state_codes = (states.long() * (2 ** torch.arange(5, -1, -1))).sum(1)
    p = spn.log_prob(states).exp()
    q = emp[state_codes] / len(x)
    assert 0.5 * float((p - q).abs().sum()) < 0.1  # total variation


def test_learn_spn_with_missing_values_is_seeded() -> None:
    x = _blocks(1000, 1)
    m = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    leaf = spnkit.Normal(min_var=1e-3, max_var=4.0)
    a = spnkit.learn_spn(x.masked_fill(m, float("nan")), leaf=leaf, marginalized=m, min_rows=50, seed=1)
    b = spnkit.learn_spn(x, leaf=leaf, marginalized=m, min_rows=50, seed=1)
    assert a.region_graph == b.region_graph
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.isfinite(a.log_prob(x.double(), m)).all()


@pytest.mark.parametrize("make, arities", [
    (lambda: spnkit.RegionGraph.quad_tree(6, 5, arity=4), {2, 4}),
    (lambda: spnkit.RegionGraph.quad_tree(6, 5), {2}),
    (lambda: spnkit.RegionGraph.quad_graph(6, 5), {2}),
])
def test_image_structures_are_valid(make, arities) -> None:
    rg = make()
    rg.check_valid()
    assert {len(p.children) for p in rg.partitions} == arities
    spn = spnkit.SPN(rg, spnkit.Normal(), 2, 2, layer="cp")
    spn.check_valid()


def test_quad_graph_regions_have_both_halvings() -> None:
    rg = spnkit.RegionGraph.quad_graph(4, 4)
    root_parts = [rg.partitions[j] for j in rg.partitions_of[rg.root]]
    halves = [{rg.regions[c] for c in p.children} for p in root_parts]
    top = tuple(range(8))
    left = tuple(sorted(r * 4 + c for r in range(4) for c in range(2)))
    assert len(root_parts) == 2 and any(top in h for h in halves) and any(left in h for h in halves)


def test_tucker_refuses_n_ary_partitions_and_names_one() -> None:
    with pytest.raises(ValueError, match=r"partition \d+ of region \d+ has 4.*layer='cp'"):
        spnkit.SPN(spnkit.RegionGraph.quad_tree(4, 4, arity=4), spnkit.Normal(), 2, 2)


def test_project_leaves_needs_cp_and_equal_sizes() -> None:
    rg = spnkit.RegionGraph.random(8, 2, 1)
    with pytest.raises(ValueError, match="num_leaves == num_sums"):
        spnkit.SPN(rg, spnkit.Normal(), num_sums=3, num_leaves=2, layer="cp", project_leaves=False)
    with pytest.raises(ValueError, match="layer='cp'"):
        spnkit.SPN(rg, spnkit.Normal(), num_sums=2, num_leaves=2, project_leaves=False)


# ------------------------------------------------------------------ the public face
def _private_spn_names() -> set[str]:
    spn = spnkit.SPN(spnkit.RegionGraph.random(4, 1, 1), spnkit.Normal(), 2, 2)
    module_names = set(dir(torch.nn.Module())) | set(vars(torch.nn.Module()))
    names = {n for n in set(vars(spnkit.SPN)) | set(vars(spn)) if n.startswith("_") and not n.startswith("__")}
    return names - module_names


@pytest.mark.parametrize("folder", ["spnkit", "apps", "benchmarks"])
def test_only_the_circuit_module_reads_private_names_of_the_spn(folder: str) -> None:
    private = _private_spn_names()
    assert {"_levels", "_row"} <= private
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path == ROOT / "spnkit" / "circuit.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []


def test_upward_with_given_parameters_equals_the_modules_own() -> None:
    spn = spnkit.SPN(spnkit.RegionGraph.poon_domingos(3, 3, delta=1), spnkit.Normal(), 2, 3, layer="cp").double()
    ev = spn.prepare(torch.rand(4, 9, dtype=torch.float64), torch.rand(4, 9) < 0.3)
    own = spn.upward(ev).root
    given = spn.upward(ev, params=spn.params()).root
    torch.testing.assert_close(own, given)
    with pytest.raises(ValueError, match="sum layers"):
        spn.upward(ev, params=spnkit.evidence.CircuitParams(None, spn.params().log_weights[:1]))


@pytest.mark.parametrize("leaf", ["normal", "normal-dense", "categorical"])
@pytest.mark.parametrize("mask", ["none", "bool", "soft"])
def test_root_only_upward_equals_the_full_pass(leaf: str, mask: str) -> None:
    """A CP circuit whose first products multiply unprojected leaves: the fused root-only pass gives the same values and gradients."""
    family = spnkit.Categorical(3) if leaf == "categorical" else spnkit.Normal(0.1, 2.0)
    # first-level products of 3 and of 2 leaves (some of two variables), one region with two partitions
    graph = GraphSpec.explicit(7, regions=[tuple(range(7)), (0, 1, 2), (3, 4, 5, 6), (0,), (1,), (2,), (3, 4), (5, 6), (3, 5), (4, 6)],
                               partitions=[(0, (1, 2)), (1, (3, 4, 5)), (2, (6, 7)), (2, (8, 9))])
    spn = CircuitSpec(graph, family, num_sums=3, num_leaves=3, seed=2, layer="cp", project_leaves=False).build()
    if leaf == "normal-dense":
        spn.leaf_layer.layout = "dense"
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (5, 7), generator=gen).double() if leaf == "categorical" else torch.randn(5, 7, generator=gen, dtype=torch.float64)
    m = {"none": None, "bool": torch.rand(5, 7, generator=gen) < 0.3,
         "soft": torch.rand(5, 7, generator=gen, dtype=torch.float64)}[mask]
    if leaf != "categorical":  # values are differentiable too
        x.requires_grad_()
    ev = spn.prepare(x, m)
    full = spn.upward(ev)
    torch.testing.assert_close(full.root, bf.log_prob(spn, x, m).unsqueeze(-1), rtol=1e-9, atol=1e-9)
    fused = spn.upward(spn.prepare(x, m), root_only=True)  # its own evidence: a graph of its own from x
    assert fused.blocks == () and fused.parts == () and fused.leaf is None
    torch.testing.assert_close(fused.root, full.root, rtol=1e-12, atol=1e-12)
    names = [n for n, _ in spn.named_parameters()] + ["x"] * x.requires_grad
    inputs = list(spn.parameters()) + [x] * x.requires_grad
    grads = [torch.autograd.grad(t.root.sum(), inputs, allow_unused=True) for t in (full, fused)]
    for name, a, b in zip(names, *grads):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)
    params = spn.params()  # EM's way: given parameters, gradients w.r.t. them
    eta = params.leaf_natural.detach().requires_grad_()
    given = spnkit.evidence.CircuitParams(eta, params.log_weights)
    counts = [torch.autograd.grad(spn.upward(ev, params=given, root_only=r).root.sum(), eta)[0] for r in (False, True)]
    torch.testing.assert_close(counts[1], counts[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="root_only"):
        spn.upward(ev, leaf_grad=True, root_only=True)


def test_leaf_layer_grouped_sums_the_rows_of_each_group() -> None:
    """``grouped`` in both layouts, with padded groups and regions of several variables, equals summing the rows."""
    scopes = [(0, 1), (2,), (3, 4), (5,), (6, 7)]
    layer = LeafLayer(spnkit.Normal(0.1, 2.0), scopes, 8, 3).double()
    groups = torch.tensor([[0, 1, 3], [2, 4, 5], [4, 5, 5]])  # row 5 = padding
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    for w in (None, torch.rand(4, 8, generator=gen) < 0.5, torch.rand(4, 8, generator=gen, dtype=torch.float64)):
        for layout in ("gather", "dense"):
            layer.layout = layout
            rows = layer(x, w)  # (R, B, K)
            expected = torch.stack([rows[[r for r in g if r < 5]].sum(0) for g in groups.tolist()])
            torch.testing.assert_close(layer.grouped(x, w, groups), expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(LeafLayerBase.grouped(layer, x, w, groups), expected, rtol=1e-12, atol=1e-12)


def test_log_project_product_equals_the_per_slot_projections() -> None:
    """The fused CP kernel: values with and without a graph, gradcheck, and zero gradients (not NaN) where a sum is zero."""
    gen = torch.Generator().manual_seed(5)
    P, a, I, K, B = 3, 2, 4, 3, 5
    c = torch.randn(P * a, I, B, generator=gen, dtype=torch.float64) * 3
    w = torch.softmax(torch.randn(P * a, I, K, generator=gen, dtype=torch.float64), 1)
    reference = torch.log(torch.einsum("sik,sib->skb", w, c.exp())).view(P, a, K, B).sum(1)
    torch.testing.assert_close(log_project_product(c, w, a), reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(LogProjectProduct.apply(c, w, a), reference, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda c_, w_: LogProjectProduct.apply(c_, w_, a), (c.clone().requires_grad_(), w.clone().requires_grad_()))
    c[0, :, 1] = -torch.inf  # a child of probability zero: its projections are zero
    c[3, 1:, :] = -1e4  # far below the others: exact only with the max-shift
    cg, wg = c.clone().requires_grad_(), w.clone().requires_grad_()
    out = LogProjectProduct.apply(cg, wg, a)
    assert torch.isneginf(out[0, :, 1]).all() and torch.isfinite(out[1:]).all()
    out.sum().backward()  # a gradient into the zero sums too
    assert torch.isfinite(cg.grad).all() and torch.isfinite(wg.grad).all()
    assert (cg.grad[0, :, 1] == 0).all()


def test_evidence_slices_are_evidence_of_the_rows() -> None:
    spn = spnkit.SPN(spnkit.RegionGraph.random(6, 1, 2), spnkit.Bernoulli(), 2, 2).double()
    x = torch.randint(0, 2, (5, 6)).double()
    m = torch.rand(5, 6) < 0.4
    ev = spn.prepare(x, m)
    for rows in (slice(1, 4), torch.tensor([4, 0, 2])):
        torch.testing.assert_close(spn.upward(ev[rows]).root, spn.upward(spn.prepare(x[rows], m[rows])).root)
    assert ev.num_samples == 5
