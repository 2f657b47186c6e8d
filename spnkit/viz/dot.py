"""Graphviz (DOT) source for region graphs and circuits.

Conventions of every drawing: edges point from a node to its children, the root
is at the top; regions are rounded boxes (green: leaf regions, blue: inner,
red: the root), partitions and products are small yellow circles marked
``×``, sums are blue circles marked ``+`` (double circles at the root). Sum
edges of node-level drawings are shaded and thickened by their weight.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from ..region_graph import RegionGraph
from .graphs import circuit_node_counts, region_coverage, region_level_graph

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["region_graph_dot", "circuit_dot", "choose_level"]

_FILL = {"leaf": "#d9ead3", "sum": "#cfe2f3", "root": "#f4cccc", "partition": "#fff2cc"}
_EMPTY, _FULL = np.array([0xF3, 0xF3, 0xF3]), np.array([0x1F, 0x4E, 0x99])  # thumbnail colours
_GRAPH = {"rankdir": "TB", "nodesep": "0.15", "ranksep": "0.35", "fontname": "Helvetica"}
_NODE = {"fontname": "Helvetica", "fontsize": "10"}
_EDGE = {"arrowsize": "0.5", "color": "#555555"}


def graphviz_module() -> Any:
    """The optional ``graphviz`` package (``pip install 'spnkit[draw]'``), imported on first use."""
    try:
        import graphviz  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ImportError("drawing needs the graphviz Python package: pip install 'spnkit[draw]'") from None
    return graphviz


def _new(name: str) -> Any:
    return graphviz_module().Digraph(name, graph_attr=dict(_GRAPH), node_attr=dict(_NODE), edge_attr=dict(_EDGE))


def _scope_text(scope: tuple[int, ...], limit: int = 4) -> str:
    return "{" + ", ".join(map(str, scope)) + "}" if len(scope) <= limit else f"{len(scope)} vars"


def _tooltip(scope: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, scope[:40]))
    return f"scope ({len(scope)} vars): {shown}{', ...' if len(scope) > 40 else ''}"


def _colour(frac: float) -> str:
    rgb = np.rint(_EMPTY + (_FULL - _EMPTY) * frac).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _thumbnail_html(cover: np.ndarray, cell: int, title: str, fill: str, bold: bool) -> str:
    """An HTML-like label: a title over a grid of coloured cells.

    Runs of equal colour within a row, and runs of equal rows, are merged into
    one cell each, so a rectangle costs a handful of cells however large it is.
    """
    levels = np.rint(cover * 8) / 8  # 9 shades, so runs merge
    width = levels.shape[1] * cell
    rows, top = [], 0
    for bottom in range(1, len(levels) + 1):  # drawing-time loops over thumbnail rows, not a forward pass
        if bottom < len(levels) and np.array_equal(levels[bottom], levels[top]):
            continue
        line, height = levels[top], (bottom - top) * cell
        cells, start = [], 0
        for stop in range(1, len(line) + 1):
            if stop == len(line) or line[stop] != line[start]:
                n = stop - start
                cells.append(
                    f'<TD BGCOLOR="{_colour(float(line[start]))}" WIDTH="{n * cell}" HEIGHT="{height}" FIXEDSIZE="TRUE"></TD>'
                )
                start = stop
        # each block of rows is its own one-row table, so cell widths never depend on other rows
        # (fixed sizes everywhere: Graphviz stretches a nested table to fill a wider cell)
        rows.append(
            f'<TR><TD><TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0" FIXEDSIZE="TRUE" WIDTH="{width}" '
            f'HEIGHT="{height}"><TR>' + "".join(cells) + "</TR></TABLE></TD></TR>"
        )
        top = bottom
    grid = (
        f'<TABLE BORDER="1" COLOR="#888888" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" FIXEDSIZE="TRUE" '
        f'WIDTH="{width + 2}" HEIGHT="{len(levels) * cell + 2}">' + "".join(rows) + "</TABLE>"
    )
    text = f"<B>{html.escape(title)}</B>" if bold else html.escape(title)
    return (
        f'<<TABLE BORDER="{2 if bold else 1}" STYLE="ROUNDED" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1" BGCOLOR="{fill}">'
        f"<TR><TD>{text}</TD></TR><TR><TD>{grid}</TD></TR></TABLE>>"
    )


def _check_size(nodes: int, max_nodes: int | None, what: str) -> None:
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
    _check_size(len(rg.regions) + len(rg.partitions), max_nodes, "the region graph")
    if thumbnails and rg.image_shape is None:
        raise ValueError("thumbnails need a region graph with image_shape (height, width, channels)")
    if thumbnails is None:
        thumbnails = rg.image_shape is not None and len(rg.regions) <= 400
    cover = region_coverage(rg) if thumbnails else None
    cell = max(2, 48 // cover.shape[-1]) if cover is not None else 0
    d = _new("region_graph")
    for i, scope in enumerate(rg.regions):
        role = "root" if i == rg.root else ("sum" if rg.partitions_of[i] else "leaf")
        title = f"R{i}  {_scope_text(scope)}" if cover is not None else f"R{i}\\n{_scope_text(scope)}"
        if cover is not None:
            d.node(f"r{i}", label=_thumbnail_html(cover[i], cell, title, _FILL[role], role == "root"),
                   shape="plain", tooltip=_tooltip(scope))
        else:
            d.node(f"r{i}", label=title, shape="box", style="rounded,filled", fillcolor=_FILL[role],
                   penwidth="2" if role == "root" else "1", tooltip=_tooltip(scope))
    for j, p in enumerate(rg.partitions):
        d.node(f"p{j}", label="×", shape="circle", style="filled", fillcolor=_FILL["partition"],
               width="0.25", fixedsize="true", tooltip=f"partition {j} of region {p.parent}")
        d.edge(f"r{p.parent}", f"p{j}")
        for c in p.children:
            d.edge(f"p{j}", f"r{c}")
    return d.source


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


def circuit_dot(spn: "SPN", *, level: str = "auto", node_limit: int = 300, max_nodes: int | None = 2000) -> str:
    """DOT source of a circuit, at node level (every sum, product, leaf) or region level (one box per region vector).

    Args:
        spn: the circuit.
        level: "node", "region", or "auto" (node level up to ``node_limit`` nodes).
        node_limit: the largest node count drawn at node level by "auto".
        max_nodes: refuse drawings with more nodes (None: no limit).

    Returns:
        the DOT source.

    Raises:
        ValueError: on a bad level or a drawing larger than ``max_nodes``.
    """
    level = choose_level(spn, level, node_limit)
    if level == "region":
        return _region_level_dot(spn, max_nodes)
    return _node_level_dot(spn, max_nodes)


def _region_level_dot(spn: "SPN", max_nodes: int | None) -> str:
    g = region_level_graph(spn)
    _check_size(g.number_of_nodes(), max_nodes, "the region-level circuit")
    leaf_name = type(spn.leaf).__name__
    d = _new("circuit_regions")
    for node, a in g.nodes(data=True):
        if a["kind"] == "region":
            what = leaf_name if a["role"] == "leaf" else a["role"]
            label = f"R{node[1]} {what}\\n{_scope_text(a['scope'])}, K={a['K']}\\n{a['params']:,} params"
            d.node(f"r{node[1]}", label=label, shape="box", style="rounded,filled", fillcolor=_FILL[a["role"]],
                   penwidth="2" if a["role"] == "root" else "1", tooltip=_tooltip(a["scope"]))
        else:
            d.node(f"p{node[1]}", label=f"×\\n{a['products']}", shape="circle", style="filled",
                   fillcolor=_FILL["partition"], fontsize="8", width="0.4", fixedsize="true",
                   tooltip=f"partition {node[1]}: {a['products']} products, {a['weights']:,} sum weights")
    for u, v in g.edges:
        d.edge(f"{u[0]}{u[1]}", f"{v[0]}{v[1]}")
    return d.source


def _node_id(node: tuple) -> str:
    return "_".join(map(str, node))


def _node_level_dot(spn: "SPN", max_nodes: int | None) -> str:
    _check_size(sum(circuit_node_counts(spn).values()), max_nodes, "the node-level circuit")
    g = spn.to_networkx()
    leaf_name = type(spn.leaf).__name__
    weighted = [(u, v, w) for u, v, w in g.edges(data="weight") if w is not None]
    label_edges = len(weighted) <= 60
    d = _new("circuit_nodes")
    by_region: dict[int, list[tuple]] = {}
    for node, a in g.nodes(data=True):
        if a["kind"] != "product":
            by_region.setdefault(a["region"], []).append(node)
    for r, nodes in sorted(by_region.items()):
        with d.subgraph(name=f"cluster_r{r}") as c:  # one box per region vector
            c.attr(label=f"R{r}", style="rounded", color="#aaaaaa", fontsize="9", fontcolor="#666666")
            for node in nodes:
                a = g.nodes[node]
                if a["kind"] == "leaf":
                    c.node(_node_id(node), label=f"{leaf_name[0]}{node[2]}", shape="box", style="rounded,filled",
                           fillcolor=_FILL["leaf"], width="0.3", height="0.25", tooltip=_tooltip(a["scope"]))
                else:
                    root = a.get("root", False)
                    c.node(_node_id(node), label="+", shape="doublecircle" if root else "circle", style="filled",
                           fillcolor=_FILL["root" if root else "sum"], width="0.25", fixedsize="true",
                           tooltip=f"sum {node[2]} of {'partition' if node[0] == 'psum' else 'region'} {node[1]}")
    by_partition: dict[int, list[tuple]] = {}
    for node, a in g.nodes(data=True):
        if a["kind"] == "product":
            by_partition.setdefault(a["partition"], []).append(node)
    for j, nodes in sorted(by_partition.items()):
        with d.subgraph(name=f"cluster_p{j}") as c:  # the products of one partition
            c.attr(label="", style="dashed", color="#e0c060")
            for node in nodes:
                c.node(_node_id(node), label="×", shape="circle", style="filled", fillcolor=_FILL["partition"], width="0.2",
                       fixedsize="true", fontsize="8", tooltip=f"product ({node[2]}, {node[3]}) of partition {node[1]}")
    for u, v, w in g.edges(data="weight"):
        if w is None:
            d.edge(_node_id(u), _node_id(v), color="#999999", penwidth="0.6")
            continue
        shade = _colour(w) if w > 0 else "#dddddd"
        extra = {"label": f"{w:.2f}", "fontsize": "7", "fontcolor": "#444444"} if label_edges else {}
        d.edge(_node_id(u), _node_id(v), color=shade, penwidth=f"{0.4 + 2.6 * w:.2f}", tooltip=f"weight {w:.4f}", **extra)
    return d.source
