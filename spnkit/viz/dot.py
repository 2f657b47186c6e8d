"""Graphviz (DOT) source for region graphs and circuits.

Conventions of every drawing: edges point from a node to its children, the root
is at the top; regions are rounded boxes (green: leaf regions, blue: inner,
red: the root), partitions and products are small yellow circles marked
``×``, sums are blue circles marked ``+`` (double circles at the root). Circuits
are drawn by :mod:`spnkit.viz.circuits`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..region_graph import RegionGraph
from .graphs import region_coverage
from .html import box_html, colour, grid_html

__all__ = ["region_graph_dot", "check_size", "new_digraph", "scope_text", "tooltip", "graphviz_module"]

_FILL = {"leaf": "#d9ead3", "sum": "#cfe2f3", "root": "#f4cccc", "partition": "#fff2cc", "more": "#eeeeee"}
_GRAPH = {"rankdir": "TB", "nodesep": "0.15", "ranksep": "0.35", "fontname": "Helvetica"}
_NODE = {"fontname": "Helvetica", "fontsize": "10"}
_EDGE = {"arrowsize": "0.5", "color": "#555555"}


def graphviz_module() -> Any:
    """The optional ``graphviz`` package (``pip install 'spnkit[draw]'``), imported on first use."""
    try:
        import graphviz
    except ImportError:
        raise ImportError("drawing needs the graphviz Python package: pip install 'spnkit[draw]'") from None
    return graphviz


def new_digraph(name: str) -> Any:
    """An empty Graphviz digraph with the drawings' common style."""
    return graphviz_module().Digraph(name, graph_attr=dict(_GRAPH), node_attr=dict(_NODE), edge_attr=dict(_EDGE))


def scope_text(scope: tuple[int, ...], limit: int = 4) -> str:
    return "{" + ", ".join(map(str, scope)) + "}" if len(scope) <= limit else f"{len(scope)} vars"


def tooltip(scope: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, scope[:40]))
    return f"scope ({len(scope)} vars): {shown}{', ...' if len(scope) > 40 else ''}"


def coverage_colours(cover: np.ndarray) -> np.ndarray:
    """Thumbnail cell colours of a coverage grid (9 shades, so runs merge)."""
    return np.vectorize(colour)(np.rint(cover * 8) / 8)


def thumbnail_cell(cover: np.ndarray) -> int:
    """Points per thumbnail cell: about 48 points across."""
    return max(2, 48 // cover.shape[-1])


def check_size(nodes: int, max_nodes: int | None, what: str) -> None:
    if max_nodes is not None and nodes > max_nodes:
        raise ValueError(
            f"{what} has {nodes:,} nodes, more than max_nodes={max_nodes:,}; Graphviz would take long. "
            "Draw a smaller structure, or raise the limit (max_nodes=None, or --max-nodes 0, removes it)"
        )


def region_graph_dot(rg: RegionGraph, *, thumbnails: bool | None = None, max_nodes: int | None = 2000) -> str:
    """DOT source of a region graph: regions as boxes labelled with their scope size, partitions as circles.

    Args:
        rg: the region graph.
        thumbnails: draw in each region a grid of the pixels it covers (dark =
            covered); needs ``rg.image_shape``. None: on for image-shaped
            graphs of at most 400 regions.
        max_nodes: refuse graphs with more regions + partitions (None: no limit).

    Returns:
        the DOT source.

    Raises:
        ValueError: if thumbnails are asked for without ``image_shape``, or the
            graph is larger than ``max_nodes``.
    """
    if not isinstance(rg, RegionGraph):
        raise ValueError(f"expected a spnkit.RegionGraph, got {type(rg).__name__}")
    check_size(len(rg.regions) + len(rg.partitions), max_nodes, "the region graph")
    if thumbnails and rg.image_shape is None:
        raise ValueError("thumbnails need a region graph with image_shape (height, width, channels)")
    if thumbnails is None:
        thumbnails = rg.image_shape is not None and len(rg.regions) <= 400
    cover = region_coverage(rg) if thumbnails else None
    d = new_digraph("region_graph")
    for i, scope in enumerate(rg.regions):
        role = "root" if i == rg.root else ("sum" if rg.partitions_of[i] else "leaf")
        if cover is not None:
            grid = grid_html(coverage_colours(cover[i]), thumbnail_cell(cover))
            d.node(f"r{i}", label=box_html([f"R{i}  {scope_text(scope)}"], _FILL[role], role == "root", [grid]),
                   shape="plain", tooltip=tooltip(scope))
        else:
            d.node(f"r{i}", label=f"R{i}\\n{scope_text(scope)}", shape="box", style="rounded,filled", fillcolor=_FILL[role],
                   penwidth="2" if role == "root" else "1", tooltip=tooltip(scope))
    for j, p in enumerate(rg.partitions):
        d.node(f"p{j}", label="×", shape="circle", style="filled", fillcolor=_FILL["partition"],
               width="0.25", fixedsize="true", tooltip=f"partition {j} of region {p.parent}")
        d.edge(f"r{p.parent}", f"p{j}")
        for c in p.children:
            d.edge(f"p{j}", f"r{c}")
    return d.source
