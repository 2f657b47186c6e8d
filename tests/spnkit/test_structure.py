"""Structure learning: mutual information, Chow-Liu trees, HCLT region graphs and LearnSPN."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import spnkit.structure._pairwise as pairwise
from spnkit import RegionGraph
from spnkit.structure import (
    chow_liu_region_graph,
    chow_liu_tree,
    hclt_region_graph,
    independence,
    learn_spn_structure,
    maximum_spanning_tree,
    mutual_information,
    tree_center,
)
from spnkit.structure._data import as_data
from spnkit.structure.clustering import kmeans
from spnkit.structure.independence import connected_components, g_test_pvalues, rdc


# ---------------------------------------------------------------- helpers
def brute_mi(x: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """Plug-in MI of every pair from the empirical joint on the rows where both are observed."""
    n, d = x.shape
    out = np.zeros((d, d))
    for i, j in itertools.permutations(range(d), 2):
        rows = np.ones(n, bool) if missing is None else ~(missing[:, i] | missing[:, j])
        a, b = x[rows, i], x[rows, j]
        for va, vb in itertools.product(np.unique(a), np.unique(b)):
            pab = np.mean((a == va) & (b == vb))
            if pab > 0:
                out[i, j] += pab * np.log(pab / (np.mean(a == va) * np.mean(b == vb)))
    return out


def random_tree(d: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A random tree over 0..d-1 on shuffled labels: (parent, child) with parents sampled before children."""
    perm = rng.permutation(d)
    return [(int(perm[rng.integers(i)]), int(perm[i])) for i in range(1, d)]


def sample_tree_bn(edges, d, n, levels, rng) -> np.ndarray:
    """Sample a discrete tree Bayesian network: a child copies its parent w.p. 0.75, else is uniform."""
    x = np.zeros((n, d), dtype=np.int64)
    root = ({u for u, _ in edges} - {v for _, v in edges}).pop() if edges else 0
    x[:, root] = rng.integers(levels, size=n)
    for u, v in edges:  # parents come first
        copy = rng.random(n) < 0.75
        x[:, v] = np.where(copy, x[:, u], rng.integers(levels, size=n))
    return x


def undirected(edges) -> set[frozenset]:
    return {frozenset(e) for e in edges}


def block_mixture(n: int, blocks, props, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clusters with distinct means; within a cluster, blocks independent, variables in a block correlated."""
    rng = np.random.default_rng(seed)
    d = sum(len(b) for b in blocks)
    z = rng.choice(len(props), size=n, p=props)
    x = np.zeros((n, d))
    for c in range(len(props)):
        rows = z == c
        for b in blocks:
            shared = rng.normal(size=(rows.sum(), 1))
            x[np.ix_(rows, b)] = rng.normal(scale=3.0, size=len(b)) + shared + 0.5 * rng.normal(size=(rows.sum(), len(b)))
    return x, z


# ------------------------------------------------------ mutual information
def test_discrete_mi_matches_brute_force_with_and_without_missing_entries():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(400, 7))
    x[:, 1] = (x[:, 0] + (rng.random(400) < 0.3)) % 4
    x[:, 5] = 2  # constant
    x[:, 6] = (rng.random(400) < 0.05) * 3  # rare level
    np.testing.assert_allclose(mutual_information(x).numpy(), brute_mi(x), atol=1e-12)
    missing = rng.random(x.shape) < 0.25
    np.testing.assert_allclose(mutual_information(torch.from_numpy(x), torch.from_numpy(missing)).numpy(), brute_mi(x, missing), atol=1e-12)


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_sparse_and_dense_count_products_agree(monkeypatch, density):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=(300, 9))
    x[:, 2] = x[:, 3] // 2
    missing = rng.random(x.shape) < 0.2
    monkeypatch.setattr(pairwise, "_SPARSE_DENSITY", density)
    monkeypatch.setattr(pairwise, "_CHUNK_ENTRIES", 500)  # several chunks of rows
    np.testing.assert_allclose(mutual_information(x, missing).numpy(), brute_mi(x, missing), atol=1e-12)
    np.testing.assert_allclose(mutual_information(x).numpy(), brute_mi(x), atol=1e-12)


def test_many_levels_are_binned_equal_width():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(500, 5))
    x[:, 1] = np.clip(x[:, 0] + rng.integers(-40, 40, size=500), 0, 255)
    x[:, 4] = rng.integers(10, 13, size=500)  # 3 levels: kept as they are
    lo, hi = x.min(0), x.max(0)
    binned = (x - lo) * 4 // (hi - lo + 1)  # equal-width bins over each variable's observed range
    binned[:, 4] = x[:, 4]
    np.testing.assert_allclose(mutual_information(x, num_bins=4).numpy(), brute_mi(binned), atol=1e-12)


def test_gaussian_mi_from_correlations_and_masked_mi_uses_complete_rows():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 6))
    x[:, 1] += 2 * x[:, 0]
    x[:, 3] -= x[:, 2]
    r = np.corrcoef(x.T)
    expected = -0.5 * np.log(1 - r**2 + np.eye(6))
    np.testing.assert_allclose(mutual_information(x).numpy(), expected, atol=1e-10)
    missing = rng.random(x.shape) < 0.3
    got = mutual_information(np.where(missing, np.nan, x), missing).numpy()
    for i, j in itertools.combinations(range(6), 2):
        rows = ~(missing[:, i] | missing[:, j])
        rij = np.corrcoef(x[rows][:, [i, j]].T)[0, 1]
        assert got[i, j] == pytest.approx(-0.5 * np.log(1 - rij**2), abs=1e-10)
        assert got[j, i] == got[i, j]
    xd = rng.integers(0, 3, size=(300, 4))
    missing = rng.random(xd.shape) < 0.3
    got = mutual_information(xd, missing).numpy()
    for i, j in itertools.combinations(range(4), 2):
        rows = ~(missing[:, i] | missing[:, j])
        assert got[i, j] == pytest.approx(mutual_information(xd[rows][:, [i, j]])[0, 1].item(), abs=1e-12)


def test_mi_properties_and_subsampling():
    x = torch.randint(0, 3, (2000, 5))
    mi = mutual_information(x)
    assert mi.shape == (5, 5) and mi.dtype == torch.float64
    assert torch.equal(mi, mi.T) and torch.all(mi.diagonal() == 0) and torch.all(mi >= 0)
    a = mutual_information(x, max_rows=500, seed=3)
    assert torch.equal(a, mutual_information(x, max_rows=500, seed=3))
    assert not torch.equal(a, mutual_information(x, max_rows=500, seed=4))


# ------------------------------------------------------- trees
def test_maximum_spanning_tree_matches_networkx():
    rng = np.random.default_rng(4)
    for d in (1, 2, 7, 40):
        w = rng.random((d, d))
        w = w + w.T
        edges = maximum_spanning_tree(torch.from_numpy(w))
        g = nx.Graph()
        g.add_weighted_edges_from((i, j, w[i, j]) for i in range(d) for j in range(i + 1, d))
        assert len(edges) == d - 1
        if d > 1:
            assert undirected(edges) == undirected(nx.maximum_spanning_tree(g).edges)


def test_chow_liu_recovers_a_discrete_tree():
    rng = np.random.default_rng(5)
    for levels in (2, 4):
        edges = random_tree(20, rng)
        x = sample_tree_bn(edges, 20, 3000, levels, rng)
        found = chow_liu_tree(x)
        assert undirected(found) == undirected(edges)


def test_chow_liu_recovers_a_gaussian_tree():
    rng = np.random.default_rng(6)
    edges = random_tree(15, rng)
    x = np.zeros((4000, 15))
    root = ({u for u, _ in edges} - {v for _, v in edges}).pop()
    x[:, root] = rng.normal(size=4000)
    for u, v in edges:
        x[:, v] = rng.choice([-1.0, 1.0]) * x[:, u] + 0.7 * rng.normal(size=4000)
    assert undirected(chow_liu_tree(x)) == undirected(edges)
    missing = rng.random(x.shape) < 0.1
    assert undirected(chow_liu_tree(np.where(missing, np.nan, x), missing)) == undirected(edges)


def tree_height(edges, root: int) -> int:
    g = nx.Graph(list(edges))
    return max(nx.single_source_shortest_path_length(g, root).values())


def test_center_root_and_orientation():
    rng = np.random.default_rng(7)
    for d in (1, 2, 3, 10, 31):
        edges = random_tree(d, rng)
        c = tree_center(d, edges)
        if d > 1:
            g = nx.Graph(edges)
            ecc = nx.eccentricity(g)
            assert ecc[c] == min(ecc.values())
    x = sample_tree_bn(random_tree(12, rng), 12, 800, 2, rng)
    e = chow_liu_tree(x, root=5)
    children = [v for _, v in e]
    assert len(e) == 11 and sorted(children + [5]) == list(range(12))
    assert e[0][0] == 5
    seen = {5}
    for u, v in e:  # breadth-first: a parent appears before its children
        assert u in seen
        seen.add(v)
    ec = chow_liu_tree(x)
    assert tree_height(ec, ec[0][0]) == min(tree_height(ec, v) for v in range(12))


def test_hclt_region_graph_structure():
    rng = np.random.default_rng(8)
    d = 25
    edges = random_tree(d, rng)
    g = nx.Graph(edges)
    root = tree_center(d, edges)
    directed = list(nx.bfs_edges(g, root))
    rg = hclt_region_graph(d, directed)
    rg.check_valid()
    assert rg.regions[:d] == tuple((v,) for v in range(d))
    assert set(rg.tree_edges) == set(directed)
    children = {u: sorted(v for a, v in directed if a == u) for u in range(d)}
    inner = [u for u in range(d) if children[u]]
    assert len(rg.regions) == d + len(inner) and len(rg.partitions) == len(inner)
    desc = {u: {u} | nx.descendants(nx.DiGraph(directed), u) for u in range(d)}
    region_of = {v: v for v in range(d) if not children[v]}
    for p in rg.partitions:  # children before parents: regions of children are already known
        scope = rg.regions[p.parent]
        v = p.children[0]
        assert p.children[0] < d and rg.regions[v] == (v,)
        assert set(scope) == desc[v]
        assert [rg.regions[c] for c in p.children[1:]] == [tuple(sorted(desc[c])) for c in children[v]]
        assert all(region_of[c] == k for c, k in zip(children[v], p.children[1:]))
        region_of[v] = p.parent
    assert rg.root == len(rg.regions) - 1 and rg.regions[rg.root] == tuple(range(d))
    assert rg.depth == tree_height(directed, root)
    assert rg.depth == min(hclt_region_graph(d, list(nx.bfs_edges(g, r))).depth for r in range(d))
    single = hclt_region_graph(1, [])
    single.check_valid()
    assert single.regions == ((0,),) and single.partitions == ()


def test_chow_liu_region_graph_on_images():
    rng = np.random.default_rng(9)
    x = sample_tree_bn(random_tree(12, rng), 12, 500, 3, rng)
    rg = chow_liu_region_graph(torch.from_numpy(x), image_shape=(3, 4, 1))
    assert isinstance(rg, RegionGraph) and rg.image_shape == (3, 4, 1) and rg.num_vars == 12
    rg.check_valid()
    assert rg.tree_edges == chow_liu_tree(x)


@pytest.mark.parametrize(
    "edges, match",
    [
        ([(0, 1), (1, 2), (2, 0)], "edges"),
        ([(0, 1), (0, 1), (2, 3)], "connect"),
        ([(0, 1), (2, 1), (2, 3)], "two parents"),
        ([(0, 4), (1, 2), (2, 3)], "distinct variables"),
        ([(0, 1)], "has 3 edges"),
    ],
)
def test_hclt_rejects_non_trees(edges, match):
    with pytest.raises(ValueError, match=match):
        hclt_region_graph(4, edges)


# ------------------------------------------------------------- LearnSPN
def region_rows(ls, r: int) -> np.ndarray:
    """The rows of a region's slice (complete data): its leaf's rows, or the union over its partitions."""
    rg = ls.region_graph
    if not rg.partitions_of[r]:
        return ls.leaf_rows[r]
    return np.concatenate([region_rows(ls, rg.partitions[j].children[0]) for j in rg.partitions_of[r]])


BLOCKS = ((0, 3, 5, 8), (1, 2, 6), (4, 7, 9, 10, 11))


def test_learnspn_finds_blocks_and_cluster_proportions():
    x, z = block_mixture(3000, BLOCKS, (0.3, 0.7), seed=0)
    ls = learn_spn_structure(x, seed=0)
    rg = ls.region_graph
    rg.check_valid()
    assert rg.root == 0 and len(rg.partitions_of[0]) == 2
    for j in rg.partitions_of[0]:
        assert sorted(rg.regions[c] for c in rg.partitions[j].children) == sorted(BLOCKS)
    w = ls.partition_weights[0]
    assert sorted(w) == pytest.approx(sorted([np.mean(z == 0), np.mean(z == 1)]), abs=0.01)
    for r, weights in ls.partition_weights.items():
        assert len(rg.partitions_of[r]) >= 2 and weights.shape == (len(rg.partitions_of[r]),)
        assert weights.sum() == pytest.approx(1.0) and np.all(weights > 0)
        # a partition's weight is the fraction of the region's rows its slice holds (sums of sums flattened)
        sizes = [len(region_rows(ls, rg.partitions[j].children[0])) for j in rg.partitions_of[r]]
        np.testing.assert_allclose(weights, np.array(sizes) / len(region_rows(ls, r)), rtol=1e-12)
    assert any(len(ps) > 2 for ps in rg.partitions_of)  # some sums were flattened
    assert set(ls.leaf_rows) == set(rg.leaf_regions)
    assert all(len(rg.regions[r]) == 1 for r in rg.leaf_regions)
    # every variable's leaves cover all rows exactly once (the rows of a product's children are the product's)
    for v in range(12):
        rows = np.concatenate([ls.leaf_rows[r] for r in rg.leaf_regions if rg.regions[r] == (v,)])
        assert np.array_equal(np.sort(rows), np.arange(3000))


def test_learnspn_is_deterministic_under_a_seed():
    x, _ = block_mixture(1500, BLOCKS, (0.5, 0.5), seed=1)
    a = learn_spn_structure(x, seed=3, min_rows=50)
    b = learn_spn_structure(torch.from_numpy(x), seed=3, min_rows=50)
    assert a.region_graph == b.region_graph
    assert a.partition_weights.keys() == b.partition_weights.keys()
    assert all(np.array_equal(a.partition_weights[k], b.partition_weights[k]) for k in a.partition_weights)
    assert all(np.array_equal(a.leaf_rows[k], b.leaf_rows[k]) for k in a.leaf_rows)
    c = learn_spn_structure(x, seed=3, min_rows=50, clustering="em")
    c.region_graph.check_valid()


def test_learnspn_discrete_independent_blocks_and_missing_rows():
    rng = np.random.default_rng(2)
    n = 2000
    x = np.zeros((n, 7), dtype=np.int64)
    for b in ((0, 4), (1, 2, 5), (3, 6)):
        h = rng.integers(0, 3, size=n)
        for v in b:
            x[:, v] = np.where(rng.random(n) < 0.8, h, rng.integers(0, 3, size=n))
    ls = learn_spn_structure(x, seed=0)
    rg = ls.region_graph
    (j,) = rg.partitions_of[0]
    assert sorted(rg.regions[c] for c in rg.partitions[j].children) == [(0, 4), (1, 2, 5), (3, 6)]
    # missing together on a third of the rows: a test that read the (zero-filled) missing entries would couple all variables
    missing = (rng.random((n, 1)) < 0.3) & (rng.random(x.shape) < 0.9)
    garbage = np.where(missing, -1, x + 1)
    ls = learn_spn_structure(garbage, missing, seed=0)
    ls.region_graph.check_valid()
    (j,) = ls.region_graph.partitions_of[0]
    assert sorted(ls.region_graph.regions[c] for c in ls.region_graph.partitions[j].children) == [(0, 4), (1, 2, 5), (3, 6)]
    for r, rows in ls.leaf_rows.items():
        (v,) = ls.region_graph.regions[r]
        assert not missing[rows, v].any()
        assert np.all(np.diff(rows) > 0)


def test_learnspn_guards():
    x, _ = block_mixture(300, BLOCKS, (0.5, 0.5), seed=2)
    naive = learn_spn_structure(x, min_rows=1000).region_graph
    assert len(naive.partitions) == 1 and len(naive.partitions[0].children) == 12
    assert learn_spn_structure(x, max_depth=0).region_graph == naive
    assert learn_spn_structure(x, max_depth=2, min_rows=1).region_graph.depth <= 3
    constant = np.ones((200, 4))  # no dependence and nothing to cluster: one leaf per variable
    rg = learn_spn_structure(constant).region_graph
    assert len(rg.partitions) == 1 and len(rg.regions) == 5
    one = learn_spn_structure(x[:, :1])
    assert one.region_graph.regions == ((0,),) and np.array_equal(one.leaf_rows[0], np.arange(300))
    tiny = learn_spn_structure(x[:20], min_rows=1, seed=0)  # recursion down to single rows stays valid
    tiny.region_graph.check_valid()


def test_g_test_pvalues():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 3, size=(500, 4))
    x[:, 1] = np.where(rng.random(500) < 0.4, x[:, 0], x[:, 1])
    x[:, 3] = 1
    p = g_test_pvalues(as_data(x), 8)
    g = 2 * 500 * brute_mi(x)
    # chi-square survival function with 4 degrees of freedom: exp(-g/2) (1 + g/2)
    expected = np.exp(-g / 2) * (1 + g / 2)
    np.testing.assert_allclose(p[:3, :3].numpy()[~np.eye(3, dtype=bool)], expected[:3, :3][~np.eye(3, dtype=bool)], rtol=1e-9)
    assert p[0, 1] < 1e-6 and p[0, 2] > 1e-3 and torch.all(p[3] == 1.0)


def test_rdc_and_components(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 5, dtype=torch.float64, generator=g)
    x[:, 1] = x[:, 0] ** 2 + 0.3 * torch.randn(2000, dtype=torch.float64, generator=g)  # nonlinear
    r = rdc(x, generator=torch.Generator().manual_seed(1))
    assert r[0, 1] > 0.6 and r[2:, 2:].max() < 0.2
    full = rdc(x, torch.ones(2000, 5, dtype=torch.bool), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(full, r, atol=1e-6, rtol=0)
    obs = torch.rand(2000, 5, generator=g) > 0.2
    masked = rdc(x, obs, generator=torch.Generator().manual_seed(1))
    assert masked[0, 1] > 0.6 and masked[2:, 2:].max() < 0.2
    monkeypatch.setattr(independence, "_PAIRWISE_ENTRIES", 0)  # each variable whitened over its own observed rows
    monkeypatch.setattr(independence, "_BLOCK_ENTRIES", 1)  # one variable per block
    approx = rdc(x, obs, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(approx, masked, atol=0.05, rtol=0)
    torch.testing.assert_close(rdc(x, torch.ones_like(obs), generator=torch.Generator().manual_seed(1)), r, atol=1e-6, rtol=0)
    adj = torch.zeros(6, 6, dtype=torch.bool)
    adj[0, 4] = adj[4, 2] = adj[3, 5] = True
    assert connected_components(adj) == [[0, 2, 4], [1], [3, 5]]
    labels = kmeans(torch.cat([torch.zeros(50, 2), torch.ones(30, 2) * 10]).double(), 2, torch.Generator().manual_seed(0))
    assert len(set(labels[:50].tolist())) == 1 and len(set(labels[50:].tolist())) == 1 and labels[0] != labels[-1]


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mutual_information(np.zeros(5)), "2-D"),
        (lambda: mutual_information(np.array([[0.5, np.nan], [1.0, 2.0]])), "NaN"),
        (lambda: mutual_information(np.zeros((4, 3)), np.zeros((4, 2), dtype=bool)), "shape"),
        (lambda: mutual_information(np.array([[0.5, 1.0], [1.0, 2.0]]), discrete=True), "integer"),
        (lambda: mutual_information(np.zeros((4, 3)), num_bins=1), "num_bins"),
        (lambda: mutual_information("data"), "Tensor or numpy"),
        (lambda: chow_liu_tree(np.zeros((4, 3)), root=3), "root"),
        (lambda: chow_liu_tree(np.zeros((4, 3)), root="top"), "root"),
        (lambda: maximum_spanning_tree(np.zeros((2, 3))), "square"),
        (lambda: maximum_spanning_tree(np.array([[0.0, 1.0], [2.0, 0.0]])), "symmetric"),
        (lambda: learn_spn_structure(np.zeros((4, 3)), min_rows=0), "min_rows"),
        (lambda: learn_spn_structure(np.zeros((2, 3, 4))), "2-D"),
        (lambda: learn_spn_structure(np.zeros((4, 3)), np.zeros((3, 4), dtype=bool)), "shape"),
        (lambda: learn_spn_structure(np.full((4, 3), np.nan)), "NaN"),
        (lambda: learn_spn_structure(np.random.rand(4, 3), discrete=True), "integer"),
        (lambda: learn_spn_structure(np.zeros((4, 3)), clustering="dbscan"), "clustering"),
        (lambda: learn_spn_structure(np.random.rand(4, 3), threshold=1.5), "threshold"),
        (lambda: learn_spn_structure(np.zeros((4, 3)), num_clusters=1), "num_clusters"),
    ],
)
def test_bad_input_raises_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_nan_at_missing_entries_is_allowed():
    x = np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0], [1.0, 0.0]])
    m = np.isnan(x)
    assert mutual_information(x, m).shape == (2, 2)
    learn_spn_structure(x, m, min_rows=1).region_graph.check_valid()


def test_benchmark_script_smoke(capsys, tmp_path):
    from benchmark_scripts import load_benchmark

    out = tmp_path / "structure_learning"
    results = load_benchmark("structure_learning").main(["--no-mnist", "--rows", "400", "--cols", "10", "--repeats", "1", "--out", str(out)])
    assert len(results["learn_spn_tabular"]) == 1
    assert "learn_spn tabular (400, 10)" in capsys.readouterr().out
    table = out.with_suffix(".md").read_text()
    assert "| learn_spn | tabular (400, 10) float64 |" in table and "- threads: 2" in table
    text = out.with_suffix(".csv").read_text()
    assert 'learn_spn,"tabular (400, 10) float64"' in text and "# command: python benchmarks/structure_learning.py --no-mnist" in text
