"""Drawing region graphs and circuits.

* :func:`draw` writes a :class:`~spnkit.RegionGraph` or :class:`~spnkit.SPN` to
  an SVG, PNG, PDF or DOT file (Graphviz; matplotlib when ``dot`` is missing).
* :func:`region_graph_dot` and :func:`circuit_dot` return the DOT source.
  Circuits are drawn with what their parameters say: sum weights, how much each
  node is used (its flow), leaf and region means (thumbnails on image grids);
  large ones are collapsed to their most used nodes.
* :func:`region_level_graph` exports a circuit with one node per region vector
  (``K``, parameter counts, flows, use and means as attributes);
  :meth:`RegionGraph.to_networkx` and :meth:`SPN.to_networkx` give the
  structure and the node-level circuit.
* :mod:`spnkit.viz.learned`: :func:`circuit_flows`, :func:`leaf_means`,
  :func:`region_means`; :func:`collapse` keeps the most used nodes of a graph.

docs/visualization.md shows pictures and lists every networkx attribute.

Example:
    >>> import spnkit
    >>> rg = spnkit.RegionGraph.poon_domingos(height=4, width=4, delta=2)
    >>> src = region_graph_dot(rg)          # thumbnails on: rg is image-shaped
    >>> src.startswith("digraph region_graph")
    True
    >>> spn = spnkit.SPN(rg, leaf=spnkit.Bernoulli(), num_sums=2, num_leaves=2)
    >>> choose_level(spn), circuit_node_counts(spn)
    ('node', {'leaf': 8, 'sum': 11, 'product': 24})
"""

from .circuits import choose_level, circuit_dot
from .collapse import collapse
from .dot import region_graph_dot
from .graphs import (
    LEVELS,
    circuit_node_counts,
    mean_image,
    region_coverage,
    region_level_graph,
)
from .learned import Flows, circuit_flows, leaf_means, region_means
from .render import FORMATS, DrawResult, draw

__all__ = [
    "draw",
    "DrawResult",
    "FORMATS",
    "LEVELS",
    "region_graph_dot",
    "circuit_dot",
    "choose_level",
    "region_level_graph",
    "circuit_node_counts",
    "region_coverage",
    "mean_image",
    "circuit_flows",
    "leaf_means",
    "region_means",
    "Flows",
    "collapse",
]
