"""Writing drawings to files: Graphviz when its ``dot`` program is installed, matplotlib otherwise."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from .._files import atomic_write
from ..region_graph import RegionGraph
from .circuits import circuit_drawing
from .dot import graphviz_module, region_graph_dot

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["draw", "DrawResult", "FORMATS"]

#: output formats, by file suffix
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}


@dataclass(frozen=True)
class DrawResult:
    """What :func:`draw` wrote.

    Attributes:
        files: the files written, the requested one first.
        level: "region graph", or the circuit level drawn ("node" or "region").
        fallback: True if Graphviz's ``dot`` was missing and matplotlib drew instead.
        message: one line for the user when ``fallback`` (else None).
        collapsed: nodes of the circuit not drawn individually (a drawing larger
            than ``max_nodes`` keeps its most used nodes); 0 when all are drawn.
    """

    files: tuple[Path, ...]
    level: str
    fallback: bool = False
    message: str | None = None
    collapsed: int = 0


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}; use one of the suffixes {', '.join(sorted(FORMATS))}")
    return fmt


def draw(
    obj: "RegionGraph | SPN",
    path: str | os.PathLike,
    *,
    level: str = "auto",
    thumbnails: bool | None = None,
    node_limit: int = 300,
    max_nodes: int | None = 2000,
    root: int | None = None,
) -> DrawResult:
    """Draw a region graph or a circuit to an SVG, PNG, PDF or DOT file (format from the suffix).

    Without Graphviz's ``dot`` program on PATH, writes the DOT source next to
    ``path`` (suffix ``.dot``) and a matplotlib drawing of the networkx graph
    (layered, without thumbnails or labels on large graphs) to ``path``, and
    says so in :attr:`DrawResult.message`.

    Args:
        obj: a :class:`~spnkit.RegionGraph` or a :class:`~spnkit.SPN`.
        path: the output file; ``.svg``, ``.png``, ``.pdf``, ``.dot`` (or ``.gv``).
        level: for circuits, "node", "region" or "auto" (see :func:`spnkit.viz.circuit_dot`).
        thumbnails: for image-shaped structures, draw in each region the pixels
            it covers (region graphs) or its mean (circuits at region level);
            None: automatic.
        node_limit: "auto" draws circuits of at most this many nodes at node
            level; a collapsed circuit keeps this many nodes.
        max_nodes: region graphs with more nodes are refused; circuits with more
            nodes at the chosen level are drawn collapsed to their ``node_limit``
            most used nodes (None: no limit).
        root: with several root sums, the class whose use and means to show.

    Returns:
        a :class:`DrawResult`.

    Raises:
        ValueError: on an unknown suffix, a missing folder, a bad level or root,
            or a region graph larger than ``max_nodes``.
    """
    from ..circuit import (
        SPN,  # spnkit.circuit does not import viz; the lazy import keeps it that way
    )

    path = Path(path)
    fmt = _format_of(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of {str(path)!r} does not exist")
    collapsed = 0
    if isinstance(obj, RegionGraph):
        source, what = region_graph_dot(obj, thumbnails=thumbnails, max_nodes=max_nodes), "region graph"
        graph = obj.to_networkx()
    elif isinstance(obj, SPN):
        source, graph, what = circuit_drawing(obj, level=level, node_limit=node_limit, max_nodes=max_nodes,
                                              thumbnails=thumbnails, root=root)
        collapsed = int(graph.graph.get("collapsed", 0))
    else:
        raise ValueError(f"expected a spnkit.RegionGraph or spnkit.SPN, got {type(obj).__name__}")
    if fmt == "dot":
        atomic_write(path, source.encode())
        return DrawResult((path,), what, collapsed=collapsed)
    graphviz = graphviz_module()
    try:
        data = graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        dot_path = path.with_suffix(".dot")
        atomic_write(dot_path, source.encode())
        atomic_write(path, _matplotlib_drawing(graph.copy(), fmt))
        message = (
            f"Graphviz's `dot` program was not found on PATH: wrote the DOT source to {dot_path} and a simpler "
            f"matplotlib drawing to {path}; install Graphviz (e.g. `apt-get install graphviz`) for the full drawing"
        )
        return DrawResult((path, dot_path), what, fallback=True, message=message, collapsed=collapsed)
    except graphviz.CalledProcessError as err:
        stderr = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"Graphviz's dot failed: {stderr[-1] if stderr else err}") from None
    atomic_write(path, data)
    return DrawResult((path,), what, collapsed=collapsed)


_KIND_COLOUR = {"region": "#9fc5e8", "partition": "#ffd966", "sum": "#6fa8dc", "product": "#ffd966", "leaf": "#93c47d",
                "more": "#eeeeee"}


def _matplotlib_drawing(g: nx.DiGraph, fmt: str) -> bytes:
    """A layered drawing of ``g`` (root on top) as ``fmt`` bytes, drawn by matplotlib."""
    from matplotlib.figure import (
        Figure,  # imported only here: matplotlib is slow to import
    )

    layers = {n: depth for depth, gen in enumerate(nx.topological_generations(g)) for n in gen}
    nx.set_node_attributes(g, layers, "_layer")
    pos = nx.multipartite_layout(g, subset_key="_layer", align="horizontal", scale=1.0)
    pos = {n: (x, -y) for n, (x, y) in pos.items()}  # root (first generation) on top
    widest = max(sum(1 for d in layers.values() if d == k) for k in set(layers.values()))
    fig = Figure(figsize=(min(40.0, 2 + 0.35 * widest), min(40.0, 2 + 0.9 * (max(layers.values()) + 1))))
    ax = fig.add_subplot()
    ax.set_axis_off()
    colours = [_KIND_COLOUR.get(a.get("kind"), "#cccccc") for _, a in g.nodes(data=True)]
    size = 300 if g.number_of_nodes() <= 60 else 60
    widths = [0.5 + 2.5 * w if w is not None else 0.6 for *_, w in g.edges(data="weight")]
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, edge_color="#777777", arrowsize=6, node_size=size)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=size, edgecolors="#333333", linewidths=0.5)
    if g.number_of_nodes() <= 60:
        nx.draw_networkx_labels(g, pos, ax=ax, labels={n: _short(n, a) for n, a in g.nodes(data=True)}, font_size=6)
    ax.set_title("drawn by matplotlib (Graphviz's dot was not found)", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight")
    return buf.getvalue()


def _short(node: tuple, attrs: dict) -> str:
    kind = attrs.get("kind")
    if kind == "region":
        return f"R{node[1]}\n{len(attrs['scope'])}"
    if kind == "partition" or kind == "product":
        return "×"
    if kind == "sum":
        return "+"
    if kind == "more":
        return f"+{attrs['count']}"
    return f"L{node[-1]}"
