"""Chow-Liu trees and the hidden Chow-Liu tree (HCLT) region graph.

A Chow-Liu tree (Chow & Liu, 1968) is the maximum spanning tree of the
complete graph over the variables weighted by pairwise mutual information: the
tree-shaped Bayesian network of maximum likelihood. The HCLT region graph
(Liu & Van den Broeck, NeurIPS 2021) puts a latent variable on every tree
node: region ``T(v)`` covers ``v`` and its descendants and has one partition
into the leaf region ``{v}`` and the regions of ``v``'s children.

Example:
    >>> import torch
    >>> x = torch.randint(0, 2, (500, 6))
    >>> x[:, 1] = x[:, 0]; x[:, 2] = x[:, 1] ^ (torch.rand(500) < 0.1)
    >>> rg = chow_liu_region_graph(x)
    >>> rg.check_valid(); rg.num_vars
    6
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..region_graph import Partition, RegionGraph
from ._data import DEFAULT_BINS, ArrayLike, as_data, check_int, subsample
from ._pairwise import discrete_pairwise, gaussian_correlation

__all__ = [
    "chow_liu_region_graph",
    "chow_liu_tree",
    "hclt_region_graph",
    "maximum_spanning_tree",
    "mutual_information",
    "tree_center",
]


def mutual_information(
    data: ArrayLike,
    marginalized: ArrayLike | None = None,
    *,
    discrete: bool | None = None,
    num_bins: int = DEFAULT_BINS,
    max_rows: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Mutual information of every pair of variables, in nats.

    Discrete data: the plug-in estimate from the empirical joint distribution
    of each pair. A variable whose observed range ``max - min + 1`` exceeds
    ``num_bins`` is quantized into ``num_bins`` equal-width bins over that range
    (256-level pixels and 8 bins: 0-31, 32-63, ...); narrower variables keep
    their values. All contingency tables come from one product of one-hot
    indicator matrices, in which each variable's most frequent level is left
    out (recovered from the marginal counts), which makes the indicators
    sparse and narrow for data such as MNIST; indicators with under 4% ones
    are multiplied as sparse matrices, others as dense float32 chunks of rows.
    Counts are exact (accumulated in float64).

    Continuous data: the Gaussian mutual information ``-0.5 log(1 - rho^2)``
    from the Pearson correlation ``rho`` (``rho^2`` is capped at
    ``1 - 1e-12``, so identical variables get about 13.8 nats).

    Missing entries: every pair uses the rows where both of its variables are
    observed (pairwise-complete counts or correlations); a pair without such
    rows has mutual information 0.

    Args:
        data: ``(N, D)`` values (tensor or array).
        marginalized: optional ``(N, D)`` bool mask, True = missing.
        discrete: force discrete (True) or continuous (False); None infers:
            integer or bool dtypes and whole-number floats are discrete.
        num_bins: the most levels per discrete variable (>= 2).
        max_rows: use a random subset of this many rows (seeded); all if None.
        seed: seed of that subset.

    Returns:
        ``(D, D)`` float64, symmetric, zero diagonal, non-negative.

    Raises:
        ValueError: on bad data, mask or arguments (one line).
    """
    check_int("num_bins", num_bins, 2)
    d = subsample(as_data(data, marginalized, discrete), max_rows, seed)
    if d.discrete:
        return discrete_pairwise(d, num_bins).mi
    rho2 = gaussian_correlation(d).square().clamp(max=1.0 - 1e-12)
    mi = -0.5 * torch.log1p(-rho2)
    return mi.fill_diagonal_(0.0)


def maximum_spanning_tree(weights: ArrayLike) -> list[tuple[int, int]]:
    """Maximum spanning tree of a complete graph, by Prim's algorithm in ``O(D^2)``.

    The tree grows from vertex 0; each step adds the outside vertex with the
    heaviest edge into the tree (ties: lowest vertex index, then the vertex
    that entered the tree first), and updates every outside vertex's best edge
    with one vectorized comparison.

    Args:
        weights: ``(D, D)`` finite symmetric edge weights (the diagonal is ignored).

    Returns:
        ``D - 1`` edges ``(u, v)``: ``u`` was in the tree when ``v`` was added.

    Raises:
        ValueError: if ``weights`` is not square, not finite or not symmetric.
    """
    w = weights.detach().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError(f"weights must be a square (D, D) matrix with D >= 1, got shape {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    if not np.allclose(w, w.T, rtol=1e-9, atol=1e-12):
        raise ValueError("weights must be symmetric")
    D = w.shape[0]
    in_tree = np.zeros(D, dtype=bool)
    in_tree[0] = True
    best = w[0].copy()
    link = np.zeros(D, dtype=np.int64)
    edges: list[tuple[int, int]] = []
    for _ in range(D - 1):
        v = int(np.argmax(np.where(in_tree, -np.inf, best)))
        edges.append((int(link[v]), v))
        in_tree[v] = True
        better = w[v] > best
        best = np.where(better, w[v], best)
        link = np.where(better, v, link)
    return edges


def _adjacency(num_vars: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(num_vars)]
    for u, v in edges:
        adj[u].append(v)
        adj[v].append(u)
    for a in adj:
        a.sort()
    return adj


def _bfs(adj: list[list[int]], start: int) -> tuple[list[int], list[int], list[int]]:
    """Breadth-first order, distances and parents (-1 at ``start``) from ``start``."""
    dist = [-1] * len(adj)
    parent = [-1] * len(adj)
    dist[start] = 0
    order = [start]
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] < 0:
                dist[v], parent[v] = dist[u] + 1, u
                order.append(v)
                queue.append(v)
    return order, dist, parent


def _check_tree(num_vars: int, edges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    check_int("num_vars", num_vars, 1)
    out = []
    for e in edges:
        if len(e) != 2 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in e):
            raise ValueError(f"tree edges must be pairs of ints, got {e!r}")
        u, v = int(e[0]), int(e[1])
        if not (0 <= u < num_vars and 0 <= v < num_vars) or u == v:
            raise ValueError(f"tree edge {e!r} is not a pair of distinct variables in 0..{num_vars - 1}")
        out.append((u, v))
    if len(out) != num_vars - 1:
        raise ValueError(f"a tree over {num_vars} variables has {num_vars - 1} edges, got {len(out)}")
    _, dist, _ = _bfs(_adjacency(num_vars, out), 0)
    if min(dist) < 0:
        raise ValueError("tree edges do not connect every variable (they contain a cycle)")
    return out


def tree_center(num_vars: int, edges: Sequence[tuple[int, int]]) -> int:
    """A center of a tree: a vertex of minimum eccentricity (the lower index of the two centers if there are two).

    Found as the middle of a longest path (two breadth-first searches).

    Args:
        num_vars: number of vertices ``D``.
        edges: ``D - 1`` undirected edges forming a tree.

    Returns:
        the center vertex; rooted there, the tree's height is ``ceil(diameter / 2)``.
    """
    adj = _adjacency(num_vars, _check_tree(num_vars, edges))
    _, dist, _ = _bfs(adj, 0)
    a = int(np.argmax(dist))
    _, dist, parent = _bfs(adj, a)
    b = int(np.argmax(dist))
    path = [b]
    while path[-1] != a:
        path.append(parent[path[-1]])
    length = len(path) - 1
    middle = {path[length // 2], path[(length + 1) // 2]}
    return min(middle)


def _orient(num_vars: int, edges: Sequence[tuple[int, int]], root: int) -> tuple[tuple[int, int], ...]:
    order, _, parent = _bfs(_adjacency(num_vars, edges), root)
    return tuple((parent[v], v) for v in order[1:])


def chow_liu_tree(
    data: ArrayLike,
    marginalized: ArrayLike | None = None,
    *,
    root: str | int = "center",
    discrete: bool | None = None,
    num_bins: int = DEFAULT_BINS,
    max_rows: int | None = None,
    seed: int = 0,
) -> tuple[tuple[int, int], ...]:
    """The Chow-Liu tree of the data, directed away from a root.

    Args:
        data: ``(N, D)`` values; ``marginalized``, ``discrete``, ``num_bins``,
            ``max_rows``, ``seed``: as in :func:`mutual_information`.
        marginalized: optional ``(N, D)`` bool mask, True = missing.
        root: ``"center"`` (a tree center, see :func:`tree_center`: the root of
            minimum height, hence the shallowest circuit) or a variable index.

    Returns:
        ``D - 1`` edges ``(parent, child)`` in breadth-first order from the root
        (children of a vertex in increasing index order); empty when ``D == 1``.

    Raises:
        ValueError: on bad data or arguments (one line).
    """
    mi = mutual_information(data, marginalized, discrete=discrete, num_bins=num_bins, max_rows=max_rows, seed=seed)
    D = mi.shape[0]
    if isinstance(root, str):
        if root != "center":
            raise ValueError(f"root must be 'center' or a variable index, got {root!r}")
    else:
        check_int("root", root, 0)
        if root >= D:
            raise ValueError(f"root must be a variable index in 0..{D - 1}, got {root}")
    edges = maximum_spanning_tree(mi)
    r = tree_center(D, edges) if root == "center" else int(root)
    return _orient(D, edges, r)


def hclt_region_graph(
    num_vars: int,
    tree_edges: Sequence[tuple[int, int]],
    image_shape: tuple[int, int, int] | None = None,
) -> RegionGraph:
    """The hidden Chow-Liu tree region graph of a directed tree over the variables.

    Regions, in this order:

    * ``0 .. D-1``: the leaf region ``{v}`` of variable ``v``;
    * then, for every tree vertex ``v`` with children ``c1 < ... < cm``, the
      region ``T(v)`` (scope: ``v`` and its descendants), ordered by the height
      of ``v``'s subtree and then by ``v`` (children before parents; the root's
      region is last). Its one partition has the children ``{v}, T(c1), ...,
      T(cm)``, where ``T(c)`` is the leaf region ``{c}`` for a leaf ``c`` of the
      tree.

    The graph's height equals the tree's height from its root.

    Args:
        num_vars: number of variables ``D``.
        tree_edges: ``D - 1`` edges ``(parent, child)`` forming a tree with one
            root (no vertex has two parents).
        image_shape: optional ``(height, width, channels)`` for drawing.

    Returns:
        the valid :class:`RegionGraph`; its ``tree_edges`` are the edges in
        breadth-first order from the root (children in increasing index order).

    Raises:
        ValueError: if the edges do not form a directed tree over ``0 .. D-1``.
    """
    edges = _check_tree(num_vars, tree_edges)
    parent = [-1] * num_vars
    children: list[list[int]] = [[] for _ in range(num_vars)]
    for u, v in edges:
        if parent[v] >= 0:
            raise ValueError(f"variable {v} has two parents in tree_edges ({parent[v]} and {u})")
        parent[v] = u
        children[u].append(v)
    root = parent.index(-1)
    order, _, _ = _bfs([sorted(c) for c in children], root)
    height = [0] * num_vars
    for v in reversed(order):
        if children[v]:
            height[v] = 1 + max(height[c] for c in children[v])
    inner = sorted((v for v in range(num_vars) if children[v]), key=lambda v: (height[v], v))
    regions: list[tuple[int, ...]] = [(v,) for v in range(num_vars)]
    region_of = list(range(num_vars))  # T(v): the leaf region until v's inner region exists
    scope: list[list[int]] = [[v] for v in range(num_vars)]
    partitions: list[Partition] = []
    for v in inner:
        kids = sorted(children[v])
        scope[v] = [v] + [x for c in kids for x in scope[c]]
        regions.append(tuple(sorted(scope[v])))
        partitions.append(Partition(len(regions) - 1, (v, *(region_of[c] for c in kids))))
        region_of[v] = len(regions) - 1
    directed = tuple((parent[v], v) for v in order[1:])
    return RegionGraph(num_vars, tuple(regions), tuple(partitions), image_shape=image_shape, tree_edges=directed)


def chow_liu_region_graph(
    data: ArrayLike,
    marginalized: ArrayLike | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    root: str | int = "center",
    discrete: bool | None = None,
    num_bins: int = DEFAULT_BINS,
    max_rows: int | None = None,
    seed: int = 0,
) -> RegionGraph:
    """The HCLT region graph of the data's Chow-Liu tree.

    :func:`chow_liu_tree` followed by :func:`hclt_region_graph`; the arguments
    are theirs.

    Returns:
        the valid :class:`RegionGraph`, ``tree_edges`` set to the directed tree.
    """
    edges = chow_liu_tree(
        data, marginalized, root=root, discrete=discrete, num_bins=num_bins, max_rows=max_rows, seed=seed
    )
    num_vars = len(edges) + 1
    return hclt_region_graph(num_vars, edges, image_shape=image_shape)
