"""Graphviz (DOT) source for circuits: node level (every sum, product, leaf) and region level (one box per region vector).

Both show what the parameters say, not only the structure (see
:mod:`spnkit.viz.learned`):

* node level: sum edges shaded, thickened and (up to 60) labelled by their
  weight; univariate leaves labelled with their mean;
* region level: each box has a strip of its ``K`` entries shaded by how much
  the circuit uses each, and its mean: a thumbnail on the image grid for
  image-shaped circuits (ink = high), the values for scopes of up to 4
  variables otherwise; region -> partition edges are thickened and labelled by
  the partition's share of the region's use (the mixing weights as used).

Circuits larger than ``max_nodes`` at the chosen level are drawn collapsed to
their ``node_limit`` most used nodes (:mod:`spnkit.viz.collapse`) instead of
being refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from .collapse import collapse, top_down_flows
from .dot import (
    _FILL,
    coverage_colours,
    new_digraph,
    scope_text,
    thumbnail_cell,
    tooltip,
)
from .graphs import circuit_node_counts, mean_image, region_coverage, region_level_graph
from .html import OUTSIDE, box_html, colour, grey, grid_html, strip_html
from .learned import leaf_means

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["circuit_dot", "circuit_drawing", "choose_level", "NODE_GRAPH_CAP"]

#: node-level graphs are built (to be collapsed) up to this many nodes; larger circuits are drawn at region level
NODE_GRAPH_CAP = 200_000


def choose_level(spn: "SPN", level: str = "auto", node_limit: int = 300) -> str:
    """The drawing level: "node" if asked, or if "auto" and the node-level graph has at most ``node_limit`` nodes; else "region".

    Raises:
        ValueError: for a level other than "auto", "node", "region".
    """
    if level not in ("auto", "node", "region"):
        raise ValueError(f"level must be 'auto', 'node' or 'region', got {level!r}")
    if level != "auto":
        return level
    return "node" if sum(circuit_node_counts(spn).values()) <= node_limit else "region"


def circuit_dot(spn: "SPN", *, level: str = "auto", node_limit: int = 300, max_nodes: int | None = 2000,
                thumbnails: bool | None = None, root: int | None = None) -> str:
    """DOT source of a circuit, at node level or region level, showing its weights, use and means.

    Args:
        spn: the circuit.
        level: "node", "region", or "auto" (node level up to ``node_limit`` nodes).
        node_limit: the largest node count drawn at node level by "auto", and
            the number of nodes kept when a drawing is collapsed.
        max_nodes: drawings with more nodes are collapsed to their ``node_limit``
            most used nodes (None: never collapse).
        thumbnails: region level: draw each region's mean on the image grid
            (needs ``image_shape``; None: on for image-shaped circuits of at most
            400 regions).
        root: with several root sums, the class whose use and means to show (None: all, uniformly).

    Returns:
        the DOT source.

    Raises:
        ValueError: on a bad level, root, or thumbnails without ``image_shape``.
    """
    return circuit_drawing(spn, level=level, node_limit=node_limit, max_nodes=max_nodes, thumbnails=thumbnails, root=root)[0]


def circuit_drawing(spn: "SPN", *, level: str = "auto", node_limit: int = 300, max_nodes: int | None = 2000,
                    thumbnails: bool | None = None, root: int | None = None) -> tuple[str, nx.DiGraph, str]:
    """:func:`circuit_dot`, also returning the networkx graph drawn (collapsed or not) and the level."""
    level = choose_level(spn, level, node_limit)
    if not isinstance(node_limit, int) or node_limit < 1:
        raise ValueError(f"node_limit must be a positive int, got {node_limit!r}")
    if root is not None and not (isinstance(root, int) and 0 <= root < spn.num_classes):
        raise ValueError(f"root must be None or an int in [0, {spn.num_classes}), got {root!r}")
    if level == "node" and sum(circuit_node_counts(spn).values()) > NODE_GRAPH_CAP:
        level = "region"  # too large to build node by node: its regions are drawn instead
    if level == "region":
        source, g = _region_level(spn, max_nodes, node_limit, thumbnails, root)
    else:
        if thumbnails:
            raise ValueError("thumbnails are drawn at region level; use level='region'")
        source, g = _node_level(spn, max_nodes, node_limit, root)
    return source, g, level


# ------------------------------------------------------------- region level
def _region_level(spn: "SPN", max_nodes: int | None, node_limit: int, thumbnails: bool | None,
                  root: int | None) -> tuple[str, nx.DiGraph]:
    rg = spn.region_graph
    if thumbnails and rg.image_shape is None:
        raise ValueError("thumbnails need a region graph with image_shape (height, width, channels)")
    if thumbnails is None:
        thumbnails = rg.image_shape is not None and len(rg.regions) <= 400
    small_scopes = rg.image_shape is None and len(rg.regions) <= 400
    g = region_level_graph(spn, learned=True, means=thumbnails or small_scopes, root=root)
    if max_nodes is not None and g.number_of_nodes() > max_nodes:
        g = collapse(g, dict(g.nodes(data="flow")), node_limit)
    leaf_name = type(spn.leaf).__name__
    means = [m for _, m in g.nodes(data="mean") if m]
    lo, hi = (float(np.percentile(np.concatenate(means), 1)), float(np.percentile(np.concatenate(means), 99))) if means else (0.0, 1.0)
    cover = region_coverage(rg) if thumbnails else None
    d = new_digraph("circuit_regions")
    for node, a in g.nodes(data=True):
        if a["kind"] == "region":
            i = node[1]
            what = leaf_name if a["role"] == "leaf" else a["role"]
            lines = [f"R{i} {what}", f"{scope_text(a['scope'])}, K={a['K']}", f"{a['params']:,} params"]
            parts = [strip_html(np.asarray(a["usage"]))] if a["K"] > 1 else []
            mean = a.get("mean")
            if thumbnails and mean:
                vals = mean_image(rg, a["scope"], np.asarray(mean))
                norm = (vals - lo) / (hi - lo) if hi > lo else np.zeros_like(vals)
                cols = np.where(np.isnan(vals), OUTSIDE, np.vectorize(grey)(np.nan_to_num(norm)))
                parts.append(grid_html(cols, thumbnail_cell(vals)))
            elif thumbnails and cover is not None:
                parts.append(grid_html(coverage_colours(cover[i]), thumbnail_cell(cover)))
            elif mean and len(mean) <= 4:
                lines.append("mean " + ", ".join(f"{v:.3g}" for v in mean))
            d.node(f"r{i}", label=box_html(lines, _FILL[a["role"]], a["role"] == "root", parts), shape="plain",
                   tooltip=f"{tooltip(a['scope'])}; reached with probability {a['flow']:.3g}")
        elif a["kind"] == "partition":
            d.node(f"p{node[1]}", label=f"×\\n{a['products']}", shape="circle", style="filled",
                   fillcolor=_FILL["partition"], fontsize="8", width="0.4", fixedsize="true",
                   tooltip=f"partition {node[1]}: {a['products']} products, {a['weights']:,} sum weights, "
                           f"reached with probability {a['flow']:.3g}")
        else:
            _more_node(d, node, a, "regions")
    shares = [(u, v, w) for u, v, w in g.edges(data="weight") if u[0] == "r" and len(spn.region_graph.partitions_of[u[1]]) > 1]
    labelled = len(shares) <= 60
    for u, v, w in g.edges(data="weight"):
        many = u[0] == "r" and v[0] == "p" and len(rg.partitions_of[u[1]]) > 1
        if many and w is not None:
            extra = {"label": f"{w:.2f}", "fontsize": "7", "fontcolor": "#444444"} if labelled else {}
            d.edge(_id(u), _id(v), color=colour(w), penwidth=f"{0.4 + 2.6 * w:.2f}", tooltip=f"share {w:.4f}", **extra)
        else:
            d.edge(_id(u), _id(v))
    return d.source, g


# --------------------------------------------------------------- node level
def _node_level(spn: "SPN", max_nodes: int | None, node_limit: int, root: int | None) -> tuple[str, nx.DiGraph]:
    g = spn.to_networkx()
    if max_nodes is not None and g.number_of_nodes() > max_nodes:
        tops = [n for n in g if g.in_degree(n) == 0]
        prior = {n: 1.0 / len(tops) for n in tops} if root is None else {n: float(n[-1] == root) for n in tops}
        g = collapse(g, top_down_flows(g, prior), node_limit)
    leaf_name = type(spn.leaf).__name__
    means = leaf_means(spn)
    row_of = {r: i for i, r in enumerate(spn.leaf_regions)}
    weighted = [w for *_, w in g.edges(data="weight") if w is not None]
    label_edges = len(weighted) <= 60
    d = new_digraph("circuit_nodes")
    by_region: dict[int, list[tuple]] = {}
    for node, a in g.nodes(data=True):
        if a["kind"] in ("leaf", "sum"):
            by_region.setdefault(a["region"], []).append(node)
    for r, nodes in sorted(by_region.items(), key=lambda item: str(item[0])):
        with d.subgraph(name=f"cluster_r{r}") as c:  # one box per region vector
            c.attr(label=f"R{r}", style="rounded", color="#aaaaaa", fontsize="9", fontcolor="#666666")
            for node in nodes:
                a = g.nodes[node]
                if a["kind"] == "leaf":
                    label = f"{leaf_name[0]}{node[2]}"
                    if means is not None and len(a["scope"]) == 1:
                        label += f"\\n{means[row_of[node[1]], 0, node[2]]:.2g}"
                    c.node(_id(node), label=label, shape="box", style="rounded,filled", fillcolor=_FILL["leaf"],
                           width="0.3", height="0.25", fontsize="8", tooltip=tooltip(a["scope"]))
                else:
                    is_root = a.get("root", False)
                    c.node(_id(node), label="+", shape="doublecircle" if is_root else "circle", style="filled",
                           fillcolor=_FILL["root" if is_root else "sum"], width="0.25", fixedsize="true",
                           tooltip=f"sum {node[-1]} of {'partition' if node[0] in ('psum', 'proj') else 'region'} {node[1]}")
    by_partition: dict[int, list[tuple]] = {}
    for node, a in g.nodes(data=True):
        if a["kind"] == "product":
            by_partition.setdefault(a["partition"], []).append(node)
    for j, nodes in sorted(by_partition.items()):
        with d.subgraph(name=f"cluster_p{j}") as c:  # the products of one partition
            c.attr(label="", style="dashed", color="#e0c060")
            for node in nodes:
                c.node(_id(node), label="×", shape="circle", style="filled", fillcolor=_FILL["partition"], width="0.2",
                       fixedsize="true", fontsize="8", tooltip=f"product {node[2:]} of partition {node[1]}")
    for node, a in g.nodes(data=True):
        if a["kind"] == "more":
            _more_node(d, node, a, "nodes")
    for u, v, w in g.edges(data="weight"):
        if w is None:
            d.edge(_id(u), _id(v), color="#999999", penwidth="0.6")
            continue
        shade = colour(w) if w > 0 else "#dddddd"
        extra = {"label": f"{w:.2f}", "fontsize": "7", "fontcolor": "#444444"} if label_edges else {}
        d.edge(_id(u), _id(v), color=shade, penwidth=f"{0.4 + 2.6 * w:.2f}", tooltip=f"weight {w:.4f}", **extra)
    return d.source, g


def _more_node(d: object, node: tuple, a: dict, what: str) -> None:
    """A dashed grey box standing for the children of a node that are not drawn."""
    label = f"+{a['count']} {what}" + ("" if a["weight"] is None else f"\\nweight {a['weight']:.2f}")
    d.node(_id(node), label=label, shape="box", style="rounded,dashed,filled", fillcolor=_FILL["more"], fontsize="8",  # type: ignore[attr-defined]
           color="#888888", tooltip=f"{a['count']} {what} not drawn (collapsed: the drawing keeps the most used ones)")


def _id(node: tuple) -> str:
    """A DOT node id: region-level ``("r", 3)`` -> ``r3``; anything else joined by underscores."""
    if len(node) == 2 and node[0] in ("r", "p") and isinstance(node[1], int):
        return f"{node[0]}{node[1]}"
    return "_".join(_id(p) if isinstance(p, tuple) else str(p) for p in node)
