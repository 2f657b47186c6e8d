"""Validity checks written independently of :meth:`RegionGraph.check_valid` and :meth:`SPN.check_valid`.

They walk the networkx exports (:meth:`RegionGraph.to_networkx`,
:meth:`SPN.to_networkx`), recompute every scope bottom-up from the leaves and
list *all* violations instead of raising at the first, so tests can compare
them with what the library's own checks report.

Example:
    >>> import spnkit
    >>> rg = spnkit.RegionGraph.quad_tree(height=2, width=2)
    >>> region_graph_violations(rg)
    []
    >>> bad = spnkit.RegionGraph(rg.num_vars + 1, rg.regions, rg.partitions)   # variable 4 in no region
    >>> [(v.kind, v.region) for v in region_graph_violations(bad)]
    [('cover', 0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN
    from ..region_graph import RegionGraph

__all__ = ["Violation", "region_graph_violations", "circuit_violations"]


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    Attributes:
        kind: "cycle", "cover", "smooth", "decomposable", "arity", "scope" or "weights".
        region: the offending region (the partition's parent for partition
            rules), or None where no region applies.
        message: a description.
    """

    kind: str
    region: int | None
    message: str


def region_graph_violations(rg: "RegionGraph") -> list[Violation]:
    """Every violation of acyclicity, coverage, smoothness and decomposability in a region graph."""
    g = rg.to_networkx()
    if not nx.is_directed_acyclic_graph(g):
        return [Violation("cycle", None, f"cycle through {nx.find_cycle(g)[:4]}")]
    out: list[Violation] = []
    roots = [n for n in g.nodes if n[0] == "r" and g.in_degree(n) == 0]
    for r in roots:
        missing = set(range(g.graph["num_vars"])) - set(g.nodes[r]["scope"])
        if missing:
            out.append(Violation("cover", r[1], f"root region {r[1]} misses variables {sorted(missing)[:10]}"))
    if len(roots) != 1:
        out.append(Violation("cover", None, f"{len(roots)} root regions"))
    for node in g.nodes:
        if node[0] != "p":
            continue
        (parent,) = list(g.predecessors(node))
        kids = list(g.successors(node))
        if len(kids) < 2:
            out.append(Violation("arity", parent[1], f"partition {node[1]} has {len(kids)} children"))
        seen: set[int] = set()
        for c in kids:
            scope = set(g.nodes[c]["scope"])
            if seen & scope:
                out.append(Violation("decomposable", parent[1], f"partition {node[1]}: children share {sorted(seen & scope)[:10]}"))
            seen |= scope
        if seen != set(g.nodes[parent]["scope"]):
            out.append(Violation("smooth", parent[1], f"partition {node[1]}: children cover {sorted(seen)[:10]}, region has {g.nodes[parent]['scope'][:10]}"))
    return out


def circuit_violations(spn: "SPN", atol: float = 1e-9) -> list[Violation]:
    """Every violation of validity in the node-level graph of ``spn``.

    Scopes are recomputed bottom-up from the leaves (and each leaf's scope from
    the leaf layer's variable index); products must have at least two children
    with pairwise disjoint scopes (decomposable); the children of a sum must all
    have the sum's scope (smooth), its weights must be non-negative and sum to 1;
    the recomputed scopes must equal the ``scope`` attributes; the roots (nodes
    without parents) must be ``num_classes`` sums covering every variable.
    """
    g = spn.to_networkx()
    out: list[Violation] = []
    if not nx.is_directed_acyclic_graph(g):
        return [Violation("cycle", None, "the circuit graph has a cycle")]
    index = spn.leaf_layer.var_index.tolist()
    row_of = {r: i for i, r in enumerate(spn.leaf_regions)}
    scope: dict = {}
    for node in reversed(list(nx.topological_sort(g))):
        data = g.nodes[node]
        kids = list(g.successors(node))
        region = data.get("region")
        if data["kind"] == "leaf":
            if kids:
                out.append(Violation("arity", region, f"leaf {node} has children"))
            compiled = frozenset(v for v in index[row_of[region]] if v < spn.num_vars)
            scope[node] = compiled
        elif data["kind"] == "product":
            if len(kids) < 2:
                out.append(Violation("arity", region, f"product {node} has {len(kids)} children"))
            acc: set[int] = set()
            for c in kids:
                if acc & scope[c]:
                    out.append(Violation("decomposable", region, f"product {node}: children share {sorted(acc & scope[c])[:10]}"))
                acc |= scope[c]
            scope[node] = frozenset(acc)
        elif data["kind"] == "sum":
            kid_scopes = {scope[c] for c in kids}
            if len(kid_scopes) != 1:
                out.append(Violation("smooth", region, f"sum {node}: children have {len(kid_scopes)} different scopes"))
            scope[node] = frozenset().union(*kid_scopes)
            weights = [g.edges[node, c].get("weight", math.nan) for c in kids]
            if any(not (w >= 0) for w in weights) or abs(math.fsum(weights) - 1) > atol:
                out.append(Violation("weights", region, f"sum {node}: weights {weights[:6]} are not a distribution"))
        else:
            out.append(Violation("arity", region, f"node {node} has kind {data['kind']!r}"))
            scope[node] = frozenset()
        if scope[node] != frozenset(data["scope"]):
            out.append(Violation("scope", region, f"{node}: recomputed scope {sorted(scope[node])[:10]} != attribute {tuple(data['scope'])[:10]}"))
    roots = [n for n in g.nodes if g.in_degree(n) == 0]
    if len(roots) != spn.num_classes:
        out.append(Violation("cover", None, f"{len(roots)} roots, expected num_classes={spn.num_classes}"))
    for r in roots:
        if g.nodes[r]["kind"] != "sum" or scope[r] != frozenset(range(spn.num_vars)):
            out.append(Violation("cover", g.nodes[r].get("region"), f"root {r} is not a sum over every variable"))
    return out
