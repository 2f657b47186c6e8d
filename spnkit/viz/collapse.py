"""Drawing large circuits: keep the most used nodes, and collapse the rest into one "more" node per parent.

Nodes are kept best-first by flow from the roots (:mod:`spnkit.viz.learned`):
the kept nodes are the ``budget`` nodes reached first when always expanding
the most used node seen so far, so every kept node hangs from a kept parent
and the drawing shows the paths that carry most of the probability mass. Each
kept node's other children become a single ``("more", node)`` node that says
how many there were and, below a sum, how much weight they carried.

Example:
    >>> import networkx as nx
    >>> g = nx.DiGraph([("s", "a"), ("s", "b"), ("s", "c")])
    >>> for c, w in zip("abc", (0.7, 0.2, 0.1)):
    ...     g.edges["s", c]["weight"] = w
    >>> flow = {"s": 1.0, "a": 0.7, "b": 0.2, "c": 0.1}
    >>> small = collapse(g, flow, budget=2)
    >>> sorted(map(str, small.nodes)), small.nodes[("more", "s")]["count"]
    (["('more', 's')", 'a', 's'], 2)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Mapping

import networkx as nx

__all__ = ["collapse", "top_down_flows"]


def top_down_flows(g: nx.DiGraph, roots: Mapping[Hashable, float] | None = None) -> dict[Hashable, float]:
    """Flows of every node of a circuit graph: roots get ``roots`` (default: equal shares), sum edges pass ``flow * weight``, others the whole flow."""
    if roots is None:
        tops = [n for n in g if g.in_degree(n) == 0]
        roots = {n: 1.0 / len(tops) for n in tops}
    flow = dict.fromkeys(g, 0.0)
    flow.update(roots)
    for n in nx.topological_sort(g):
        f = flow[n]
        for c in g.successors(n):
            w = g.edges[n, c].get("weight")
            flow[c] += f if w is None else f * w
    return flow


def collapse(g: nx.DiGraph, flow: Mapping[Hashable, float], budget: int) -> nx.DiGraph:
    """The subgraph of the ``budget`` most used nodes reached from the roots, with "more" nodes for the rest.

    Args:
        g: a DAG whose edges point from a node to its children (``weight`` on sum edges).
        flow: the flow of every node.
        budget: nodes of ``g`` to keep (at least the roots).

    Returns:
        a new DiGraph: kept nodes and edges with their attributes, plus per kept
        node with dropped children a node ``("more", parent)`` with ``kind="more"``,
        ``count`` (children not drawn), ``weight`` (their total edge weight, or
        None below a product) and ``flow``; ``graph["collapsed"]`` is the number of
        nodes of ``g`` not drawn.

    Raises:
        ValueError: if ``budget < 1``.
    """
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    order = itertools.count()  # ties: first seen first
    heap = [(-flow.get(n, 0.0), next(order), n) for n in g if g.in_degree(n) == 0]
    heapq.heapify(heap)
    kept: set = set()
    while heap and len(kept) < budget:
        _, _, n = heapq.heappop(heap)
        if n in kept:
            continue
        kept.add(n)
        for c in g.successors(n):
            if c not in kept:
                heapq.heappush(heap, (-flow.get(c, 0.0), next(order), c))
    out = nx.DiGraph(**g.graph)
    for n in g:
        if n in kept:
            out.add_node(n, **g.nodes[n])
    for n in kept:
        dropped = [c for c in g.successors(n) if c not in kept]
        for c in g.successors(n):
            if c in kept:
                out.add_edge(n, c, **g.edges[n, c])
        if dropped:
            weights = [g.edges[n, c].get("weight") for c in dropped]
            total = None if any(w is None for w in weights) else float(sum(weights))
            more = ("more", n)
            out.add_node(more, kind="more", count=len(dropped), weight=total,
                         flow=flow.get(n, 0.0) * (1.0 if total is None else total))
            out.add_edge(n, more, weight=total)
    out.graph["collapsed"] = g.number_of_nodes() - len(kept)
    return out
