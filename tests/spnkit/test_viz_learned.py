"""Drawings of what a circuit learned: flows, means, partition shares, collapsed large circuits (spnkit.viz)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import networkx as nx
import numpy as np
import pytest
import torch

import spnkit
from spnkit.cli import main
from spnkit.viz import (
    circuit_dot,
    circuit_flows,
    collapse,
    draw,
    leaf_means,
    region_level_graph,
    region_means,
)
from spnkit.viz.collapse import top_down_flows

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"

CIRCUITS = [
    ("tucker", lambda: spnkit.RegionGraph.random(8, 2, 2, seed=1), 1),
    ("tucker", lambda: spnkit.RegionGraph.poon_domingos(4, 4, delta=2), 2),
    ("cp", lambda: spnkit.RegionGraph.quad_tree(4, 4, arity=4), 3),
    ("cp", lambda: spnkit.RegionGraph.random(8, 2, 3, seed=2), 1),
]


def _spn(layer, make_rg, classes, k=3, seed=0):
    torch.manual_seed(seed)
    return spnkit.SPN(make_rg(), spnkit.Normal(), num_sums=k, num_leaves=k, num_classes=classes, layer=layer).double()


def _node_means(g: nx.DiGraph, spn: spnkit.SPN) -> dict:
    """Reference: every node's mean over its scope, bottom-up over the node-level graph ({var: mean})."""
    means = leaf_means(spn)
    row = {r: i for i, r in enumerate(spn.leaf_regions)}
    var_index = spn.leaf_layer.var_index.numpy()
    out: dict = {}
    for n in reversed(list(nx.topological_sort(g))):
        a = g.nodes[n]
        if a["kind"] == "leaf":
            r, k = n[1], n[2]
            out[n] = {int(v): means[row[r], s, k] for s, v in enumerate(var_index[row[r]]) if v < spn.num_vars}
        elif a["kind"] == "product":
            out[n] = {v: m for c in g.successors(n) for v, m in out[c].items()}
        else:
            acc: dict = {}
            for c in g.successors(n):
                w = g.edges[n, c]["weight"]
                for v, m in out[c].items():
                    acc[v] = acc.get(v, 0.0) + w * m
            out[n] = acc
    return out


@pytest.mark.parametrize("layer, make_rg, classes", CIRCUITS)
def test_flows_match_the_node_graph(layer, make_rg, classes):
    spn = _spn(layer, make_rg, classes)
    g = spn.to_networkx()
    for root in [None] + list(range(classes)):
        tops = [n for n in g if g.in_degree(n) == 0]
        prior = {n: (1.0 / len(tops) if root is None else float(n[-1] == root)) for n in tops}
        ref = top_down_flows(g, prior)
        flows = circuit_flows(spn, root)
        for r in spn.leaf_regions:
            assert np.allclose(flows.entries[r], [ref[("leaf", r, k)] for k in range(3)])
        rg = spn.region_graph
        assert flows.region(rg.root) == pytest.approx(1.0)
        for r, parts in enumerate(rg.partitions_of):  # a region's flow is split among its partitions
            if parts:
                assert flows.partitions[list(parts)].sum() == pytest.approx(flows.region(r))


@pytest.mark.parametrize("layer, make_rg, classes", CIRCUITS)
def test_region_means_match_the_node_graph(layer, make_rg, classes):
    spn = _spn(layer, make_rg, classes)
    g = spn.to_networkx()
    node_means = _node_means(g, spn)
    flows = top_down_flows(g)
    means = region_means(spn)
    rg = spn.region_graph
    tops = [n for n in g if g.in_degree(n) == 0]
    want_root = {v: sum(flows[t] * node_means[t][v] for t in tops) for v in range(spn.num_vars)}
    assert np.allclose(means[rg.root], [want_root[v] for v in rg.regions[rg.root]])
    for r in rg.leaf_regions:  # a leaf region: its components weighted by their use
        use = np.array([flows[("leaf", r, k)] for k in range(3)])
        use = use / use.sum()
        want = [sum(u * node_means[("leaf", r, k)][v] for k, u in enumerate(use)) for v in rg.regions[r]]
        assert np.allclose(means[r], want)


@pytest.mark.parametrize("leaf", [spnkit.MultivariateNormal(), spnkit.Mixed({spnkit.Normal(): [0, 1, 2], spnkit.Bernoulli(): [3, 4, 5]})],
                         ids=["mvn", "mixed"])
def test_means_of_leaf_layers_without_factors_are_unknown(leaf):
    spn = spnkit.SPN(spnkit.RegionGraph.random(6, 1, 2, seed=0), leaf, num_sums=2, num_leaves=3).double()
    assert leaf_means(spn) is None
    assert region_means(spn) == {}


def test_region_level_graph_carries_what_was_learned():
    spn = _spn("tucker", CIRCUITS[0][1], 1)
    g = region_level_graph(spn, means=True)
    rg = spn.region_graph
    assert g.nodes[("r", rg.root)]["flow"] == pytest.approx(1.0)
    for r, parts in enumerate(rg.partitions_of):
        a = g.nodes[("r", r)]
        assert sum(a["usage"]) == pytest.approx(1.0) and len(a["usage"]) == a["K"]
        assert len(a["mean"]) == len(a["scope"])
        if parts:
            assert sum(g.edges[("r", r), ("p", j)]["weight"] for j in parts) == pytest.approx(1.0)
    plain = region_level_graph(spn, learned=False)
    assert "flow" not in plain.nodes[("r", rg.root)]


def test_trained_and_untrained_drawings_differ():
    x = (torch.rand(200, 16, dtype=torch.float64) < torch.linspace(0.05, 0.95, 16)).double()
    make = lambda: _spn("tucker", lambda: spnkit.RegionGraph.poon_domingos(4, 4, delta=2), 1, k=2)
    before, after = make(), make()
    spnkit.fit(after, x, method="em", epochs=3, progress=False)
    for level in ("region", "node"):
        a, b = circuit_dot(before, level=level), circuit_dot(after, level=level)
        assert a != b
    src = circuit_dot(after, level="region")
    assert "#f6e7c8" in src  # mean thumbnails: pixels outside a region drawn in their own colour
    assert circuit_dot(_spn("tucker", CIRCUITS[0][1], 1), level="region").count("mean ") > 0  # small scopes: values


def test_collapse_keeps_the_most_used_nodes():
    spn = _spn("tucker", lambda: spnkit.RegionGraph.random(16, 3, 3, seed=0), 1, k=4)
    g = spn.to_networkx()
    flow = top_down_flows(g)
    small = collapse(g, flow, 40)
    kept = [n for n, k in small.nodes(data="kind") if k != "more"]
    assert len(kept) == 40 and small.graph["collapsed"] == g.number_of_nodes() - 40
    for n in kept:
        if g.in_degree(n):
            assert any(p in small for p in g.predecessors(n))  # hangs from a kept parent
        dropped = [c for c in g.successors(n) if c not in small]
        if dropped:
            assert small.nodes[("more", n)]["count"] == len(dropped)
    # the kept leaves are among the most used
    leaf_flows = sorted((flow[n] for n in g if g.nodes[n]["kind"] == "leaf"), reverse=True)
    kept_leaves = [flow[n] for n in kept if g.nodes[n]["kind"] == "leaf"]
    assert all(f >= leaf_flows[len(leaf_flows) // 2] for f in kept_leaves)
    with pytest.raises(ValueError, match="budget"):
        collapse(g, flow, 0)


@needs_dot
def test_large_circuit_is_drawn_collapsed_not_refused(tmp_path):
    spn = _spn("tucker", lambda: spnkit.RegionGraph.random(64, 3, 4, seed=0), 1, k=6)
    res = draw(spn, tmp_path / "big.svg", level="node", node_limit=60, max_nodes=500)
    assert res.level == "node" and res.collapsed > 1000
    nodes = sum(1 for e in ET.parse(tmp_path / "big.svg").getroot().iter(f"{SVG}g") if e.get("class") == "node")
    assert 60 < nodes <= 120  # 60 kept nodes and at most one "more" node for each
    res = draw(spn, tmp_path / "regions.dot", level="region", node_limit=20, max_nodes=30)
    assert res.collapsed > 0 and "regions" in (tmp_path / "regions.dot").read_text()


def test_collapsed_fallback_without_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    spn = _spn("tucker", lambda: spnkit.RegionGraph.random(32, 3, 2, seed=0), 1, k=5)
    res = draw(spn, tmp_path / "big.png", level="node", node_limit=30, max_nodes=100)
    assert res.fallback and res.collapsed > 0
    assert (tmp_path / "big.png").read_bytes()[:4] == b"\x89PNG"


def test_draw_root_and_thumbnail_errors(tmp_path):
    spn = _spn("tucker", CIRCUITS[1][1], 2)
    assert circuit_dot(spn, level="region", root=1) != circuit_dot(spn, level="region", root=0)
    with pytest.raises(ValueError, match="root"):
        draw(spn, tmp_path / "x.dot", root=2)
    with pytest.raises(ValueError, match="image_shape"):
        draw(_spn("tucker", CIRCUITS[0][1], 1), tmp_path / "x.dot", level="region", thumbnails=True)
    with pytest.raises(ValueError, match="region level"):
        draw(spn, tmp_path / "x.dot", level="node", thumbnails=True)


def test_cli_draws_a_trained_model(tmp_path, capsys):
    spn = _spn("tucker", lambda: spnkit.RegionGraph.random(32, 3, 2, seed=0), 2, k=5)
    spnkit.save(spn, tmp_path / "m.spn")
    out = tmp_path / "m.dot"
    assert main(["draw", "model", str(tmp_path / "m.spn"), "--level", "node", "--node-limit", "40", "--max-nodes", "100",
                 "--root", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "collapsed" in printed and out.read_text().startswith("digraph circuit_nodes")
    assert main(["draw", "model", str(tmp_path / "m.spn"), "--root", "5", "-o", str(out)]) == 2
    assert "root" in capsys.readouterr().err
    assert main(["draw", "random", "--num-vars", "8", "--depth", "1", "--root", "0", "-o", str(out)]) == 2
