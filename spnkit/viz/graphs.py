"""What is drawn: the region-level graph of a circuit, node counts, and pixel thumbnails of regions.

These are plain data (networkx graphs and numpy arrays); :mod:`spnkit.viz.dot`
turns them into Graphviz source and :mod:`spnkit.viz.render` into files.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from ..region_graph import RegionGraph
from ..summary import effective_parameter_counts

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["region_level_graph", "circuit_node_counts", "region_coverage", "mean_image", "LEVELS"]

#: drawing levels of a circuit
LEVELS = ("auto", "node", "region")


def _vector_size(spn: "SPN", region: int) -> int:
    """Entries ``K`` of a region's vector: leaves, sums (CP: products), or root sums (Tucker's root)."""
    rg = spn.region_graph
    if not rg.partitions_of[region]:
        return spn.num_leaves
    return spn.num_classes if region == rg.root and spn.root_sum is None else spn.num_sums


def region_level_graph(spn: "SPN", *, learned: bool = True, means: bool = False, root: int | None = None) -> nx.DiGraph:
    """The circuit with one node per region vector and one per partition.

    Nodes ``("r", i)`` (region ``i`` of the region graph) have ``kind="region"``,
    ``role`` in {"leaf", "sum", "root"}, ``scope`` (tuple), ``height``, ``K``
    (entries of the vector) and ``params`` (effective parameters that compute
    the vector: the leaf parameters of a leaf region; the sum weights of all
    its partitions plus its mixing weights for an inner region). Nodes
    ``("p", j)`` have ``kind="partition"``, ``scope`` (the parent's),
    ``height`` (the parent's), ``products`` (``K_a * K_b``) and ``weights``
    (effective weights of the ``K`` sums over these products, already counted
    in the parent's ``params``). Edges run region -> partition -> child region,
    as in :meth:`RegionGraph.to_networkx`. Summing ``params`` over the region
    nodes gives ``spn.summary().total_params``.

    With ``learned``, what the parameters say (:mod:`spnkit.viz.learned`):
    region and partition nodes get ``flow`` (the probability that a sample's
    induced tree reaches them), region nodes ``usage`` (the share of the
    region's flow on each of its ``K`` entries), and region -> partition edges
    ``weight`` (the partition's share of the region's flow: its mixing weight
    as the circuit uses it). With ``means``, region nodes get ``mean``:
    ``E[x_scope | region reached]`` aligned with ``scope`` (empty for leaf
    families whose mean is not known).

    Args:
        spn: the circuit.
        learned: add flows, usage and partition shares.
        means: add region means (one batched upward and backward pass).
        root: with several root sums, the class whose circuit to follow (None: all, uniformly).

    Returns:
        a ``networkx.DiGraph``; ``graph`` holds ``num_vars``, ``num_leaves``,
        ``num_sums``, ``num_classes`` and ``leaf`` (the family's name).
    """
    rg = spn.region_graph
    heights = rg.heights
    g = nx.DiGraph()
    g.graph.update(
        num_vars=spn.num_vars, num_leaves=spn.num_leaves, num_sums=spn.num_sums,
        num_classes=spn.num_classes, leaf=type(spn.leaf).__name__,
    )
    if rg.image_shape is not None:
        g.graph["image_shape"] = rg.image_shape
    params = np.zeros(len(rg.regions), dtype=np.int64)
    leaf_counts = effective_parameter_counts(spn.leaf_layer).numpy()
    params[list(spn.leaf_regions)] = leaf_counts  # leaf layer rows follow spn.leaf_regions
    weights: dict[int, int] = {}
    for lv in spn.levels:
        part_counts = lv.product.partition_weight_counts().tolist()
        for pj, n in zip(lv.partitions, part_counts):
            weights[pj] = int(n)
            params[rg.partitions[pj].parent] += n
        if lv.mixing is not None:
            params[lv.regions] += effective_parameter_counts(lv.mixing).numpy()
    if spn.root_sum is not None:
        params[rg.root] += int(effective_parameter_counts(spn.root_sum).sum())
    for i, scope in enumerate(rg.regions):
        role = "root" if i == rg.root else ("sum" if rg.partitions_of[i] else "leaf")
        g.add_node(("r", i), kind="region", role=role, scope=scope, height=heights[i],
                   K=_vector_size(spn, i), params=int(params[i]))
    for j, p in enumerate(rg.partitions):
        products = spn.num_sums if spn.layer == "cp" else math.prod(_vector_size(spn, c) for c in p.children)
        g.add_node(("p", j), kind="partition", scope=rg.regions[p.parent], height=heights[p.parent],
                   products=products, weights=weights[j])
        g.add_edge(("r", p.parent), ("p", j))
        for c in p.children:
            g.add_edge(("p", j), ("r", c))
    if learned or means:
        _add_learned(spn, g, means, root)
    return g


def _add_learned(spn: "SPN", g: nx.DiGraph, means: bool, root: int | None) -> None:
    """Flows, entry use, partition shares and (with ``means``) region means as attributes of ``g``."""
    from .learned import circuit_flows, region_means

    rg = spn.region_graph
    flows = circuit_flows(spn, root)
    for i in range(len(rg.regions)):
        e = flows.entries[i]
        total = float(e.sum())
        g.nodes[("r", i)].update(flow=total, usage=tuple((e / total if total > 0 else np.full(len(e), 1.0 / len(e))).tolist()))
    for j, p in enumerate(rg.partitions):
        f, parent = float(flows.partitions[j]), g.nodes[("r", p.parent)]["flow"]
        g.nodes[("p", j)]["flow"] = f
        g.edges[("r", p.parent), ("p", j)]["weight"] = f / parent if parent > 0 else 1.0 / len(rg.partitions_of[p.parent])
    if means:
        for i, m in region_means(spn, flows=flows).items():
            g.nodes[("r", i)]["mean"] = tuple(m.tolist())


def mean_image(rg: RegionGraph, scope: tuple[int, ...], values: np.ndarray, max_cells: int = 16) -> np.ndarray:
    """A region's values on the image grid: ``(rows, cols)``, NaN outside its scope.

    Channels are averaged; images with more than ``max_cells`` pixels per side
    are shown in blocks (the mean over each block's pixels in the scope), as in
    :func:`region_coverage`.

    Raises:
        ValueError: if ``rg`` has no ``image_shape``.
    """
    if rg.image_shape is None:
        raise ValueError("thumbnails need a region graph with image_shape (height, width, channels)")
    H, W, C = rg.image_shape
    total = np.zeros(rg.num_vars)
    count = np.zeros(rg.num_vars)
    idx = np.asarray(scope, dtype=np.int64)
    total[idx], count[idx] = values, 1.0
    total, count = total.reshape(H, W, C).sum(-1), count.reshape(H, W, C).sum(-1)
    f = max(math.ceil(H / max_cells), math.ceil(W / max_cells))
    rows, cols = np.arange(0, H, f), np.arange(0, W, f)
    total = np.add.reduceat(np.add.reduceat(total, rows, axis=0), cols, axis=1)
    count = np.add.reduceat(np.add.reduceat(count, rows, axis=0), cols, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def circuit_node_counts(spn: "SPN") -> dict[str, int]:
    """Nodes of the node-level graph (:meth:`SPN.to_networkx`) by kind, without building it.

    Returns:
        ``{"leaf": ..., "sum": ..., "product": ...}``; "sum" includes the
        per-partition sums of regions with several partitions.
    """
    rg = spn.region_graph
    leaf = len(rg.leaf_regions) * spn.num_leaves
    leaf_set = set(rg.leaf_regions)
    sums = product = 0
    for i, parts in enumerate(rg.partitions_of):
        if not parts:
            continue
        k = _vector_size(spn, i)
        if spn.layer == "cp":  # K products per partition, K projection sums per projected child, K region sums if mixed
            product += k * len(parts)
            sums += k if len(parts) > 1 else 0
            for j in parts:
                sums += k * sum(1 for c in rg.partitions[j].children if spn.project_leaves or c not in leaf_set)
        else:
            sums += k + (k * len(parts) if len(parts) > 1 else 0)
            for j in parts:
                product += math.prod(_vector_size(spn, c) for c in rg.partitions[j].children)
    if spn.root_sum is not None:
        sums += spn.num_classes
    return {"leaf": leaf, "sum": sums, "product": product}


def region_coverage(rg: RegionGraph, max_cells: int = 16) -> np.ndarray:
    """Fraction of each thumbnail cell that each region covers.

    The image is cut into blocks of ``f x f`` pixels, ``f`` the smallest factor
    that leaves at most ``max_cells`` blocks per side; a block's value is the
    fraction of its pixels (and channels) in the region's scope.

    Args:
        rg: a region graph with ``image_shape``.
        max_cells: most cells per side.

    Returns:
        ``(regions, rows, cols)`` float array in ``[0, 1]``.

    Raises:
        ValueError: if ``rg`` has no ``image_shape`` or ``max_cells < 1``.
    """
    if rg.image_shape is None:
        raise ValueError("thumbnails need a region graph with image_shape (height, width, channels)")
    if not isinstance(max_cells, int) or max_cells < 1:
        raise ValueError(f"max_cells must be a positive int, got {max_cells!r}")
    H, W, C = rg.image_shape
    lens = np.fromiter((len(s) for s in rg.regions), dtype=np.int64, count=len(rg.regions))
    member = np.zeros((len(rg.regions), rg.num_vars), dtype=np.float64)
    member[np.repeat(np.arange(len(rg.regions)), lens), np.concatenate([np.asarray(s) for s in rg.regions])] = 1.0
    pix = member.reshape(-1, H, W, C).mean(-1)  # (R, H, W)
    f = max(math.ceil(H / max_cells), math.ceil(W / max_cells))
    rows, cols = np.arange(0, H, f), np.arange(0, W, f)
    sums = np.add.reduceat(np.add.reduceat(pix, rows, axis=1), cols, axis=2)  # (R, rows, cols)
    counts = np.outer(np.diff(np.append(rows, H)), np.diff(np.append(cols, W)))  # pixels per block
    return sums / counts
