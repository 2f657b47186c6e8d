"""Region graphs: the structure from which spnkit compiles circuits.

A *region* is a non-empty set of variable indices (its scope). A *partition*
splits one region (its parent) into child regions whose scopes are disjoint and
whose union is the parent's scope. A region graph is a rooted DAG of regions and
partitions; the root region covers every variable exactly once. A partition
with a single child (of the parent's whole scope) makes that child one mixture
component of the parent: LearnSPN's clusters that end in a joint leaf (e.g. a
multivariate Normal over the cluster's variables) are such partitions.

Regions are identified by their position in :attr:`RegionGraph.regions`, not by
their scope: RAT-SPN repetitions hold distinct regions that may share a scope.

A :class:`RegionGraph` is immutable. Builders are seeded and reproducible, and
compiling a graph into a circuit never changes it.

Example:
    >>> rg = RegionGraph.random(num_vars=8, depth=2, repetitions=3, seed=0)
    >>> rg.num_vars, len(rg.leaf_regions), len(rg.partitions)
    (8, 12, 9)
    >>> rg.check_valid()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np

__all__ = ["RegionGraph", "Partition", "InvalidStructureError"]


class InvalidStructureError(ValueError):
    """Raised when a region graph or circuit breaks smoothness, decomposability or coverage."""


@dataclass(frozen=True)
class Partition:
    """A split of region ``parent`` into the regions ``children`` (indices into ``regions``)."""

    parent: int
    children: tuple[int, ...]


@dataclass(frozen=True)
class RegionGraph:
    """An immutable region graph.

    Args:
        num_vars: number of variables ``D``; variables are ``0 .. D-1``.
        regions: the scope of each region, a sorted tuple of variable indices.
        partitions: the partitions, each naming its parent and child regions.
        image_shape: ``(height, width, channels)`` when variables are pixels laid
            out as ``(row * width + col) * channels + channel``; used for drawing.
        tree_edges: for a graph built from a tree over the variables (a
            Chow-Liu tree), its directed edges as ``(parent, child)`` variable
            pairs; None otherwise.
    """

    num_vars: int
    regions: tuple[tuple[int, ...], ...]
    partitions: tuple[Partition, ...]
    image_shape: tuple[int, int, int] | None = field(default=None)
    tree_edges: tuple[tuple[int, int], ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.num_vars, (int, np.integer)) or self.num_vars < 1:
            raise ValueError(f"num_vars must be a positive int, got {self.num_vars!r}")
        if len(self.regions) == 0:
            raise ValueError("a region graph needs at least one region")
        for i, scope in enumerate(self.regions):
            if len(scope) == 0:
                raise ValueError(f"region {i} has an empty scope")
            if not all(isinstance(v, (int, np.integer)) for v in scope):
                raise ValueError(f"region {i} must be a collection of variable indices (ints), got {scope!r}")
            if any(not 0 <= v < self.num_vars for v in scope):
                raise ValueError(f"region {i} has variables outside 0..{self.num_vars - 1}: {scope}")
        for j, p in enumerate(self.partitions):
            if not all(isinstance(r, (int, np.integer)) for r in (p.parent, *p.children)):
                raise ValueError(f"partition {j} must name regions by their index in regions (ints), got parent {p.parent!r} and "
                                 f"children {p.children!r}")
            if not 0 <= p.parent < len(self.regions):
                raise ValueError(f"partition {j} names parent region {p.parent}, which does not exist")
            if len(p.children) < 1:
                raise ValueError(f"partition {j} has no children; a partition needs at least 1")
            for c in p.children:
                if not 0 <= c < len(self.regions):
                    raise ValueError(f"partition {j} names child region {c}, which does not exist")
        roots = self._roots()
        if len(roots) != 1:
            raise ValueError(f"a region graph needs exactly one root region (one without a parent), found {len(roots)}: {roots[:10]}")
        if self.image_shape is not None:
            h, w, c = self.image_shape
            if h * w * c != self.num_vars:
                raise ValueError(f"image_shape {self.image_shape} does not match num_vars={self.num_vars}")

    # ------------------------------------------------------------------ queries
    def _roots(self) -> list[int]:
        has_parent = np.zeros(len(self.regions), dtype=bool)
        for p in self.partitions:
            has_parent[list(p.children)] = True
        return [int(i) for i in np.flatnonzero(~has_parent)]

    @cached_property
    def root(self) -> int:
        """Index of the root region."""
        return self._roots()[0]

    @cached_property
    def partitions_of(self) -> tuple[tuple[int, ...], ...]:
        """For each region, the indices of its partitions (empty for leaf regions)."""
        out: list[list[int]] = [[] for _ in self.regions]
        for j, p in enumerate(self.partitions):
            out[p.parent].append(j)
        return tuple(tuple(x) for x in out)

    @cached_property
    def leaf_regions(self) -> tuple[int, ...]:
        """Indices of regions without partitions."""
        return tuple(i for i, ps in enumerate(self.partitions_of) if not ps)

    @cached_property
    def heights(self) -> tuple[int, ...]:
        """Height of each region: 0 for leaves, else 1 + the largest height of any child.

        Raises:
            InvalidStructureError: if the graph has a cycle.
        """
        g = self.to_networkx()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise InvalidStructureError(f"the region graph has a cycle through {cycle[:4]}")
        height = [0] * len(self.regions)
        for node in reversed(list(nx.topological_sort(g))):
            if node[0] == "r":
                idx = node[1]
                ps = self.partitions_of[idx]
                if ps:
                    height[idx] = 1 + max(height[c] for j in ps for c in self.partitions[j].children)
        return tuple(height)

    @property
    def depth(self) -> int:
        """Height of the root region."""
        return self.heights[self.root]

    def check_valid(self) -> None:
        """Check smoothness, decomposability and coverage.

        Smooth: every partition of a region covers exactly the region's scope.
        Decomposable: the children of a partition have pairwise disjoint scopes.
        Coverage: the root's scope is every variable ``0 .. num_vars-1``, and the
        graph is acyclic.

        Raises:
            InvalidStructureError: naming the first offending region or partition.
        """
        _ = self.heights  # acyclicity
        root_scope = set(self.regions[self.root])
        if root_scope != set(range(self.num_vars)):
            missing = sorted(set(range(self.num_vars)) - root_scope)[:10]
            raise InvalidStructureError(f"root region {self.root} does not cover every variable; missing e.g. {missing}")
        for j, p in enumerate(self.partitions):
            parent = set(self.regions[p.parent])
            seen: set[int] = set()
            for c in p.children:
                scope = set(self.regions[c])
                overlap = seen & scope
                if overlap:
                    raise InvalidStructureError(
                        f"not decomposable: partition {j} of region {p.parent} has children sharing variables {sorted(overlap)[:10]}"
                    )
                seen |= scope
            if seen != parent:
                raise InvalidStructureError(
                    f"not smooth: partition {j} of region {p.parent} covers {len(seen)} variables "
                    f"but its region has scope of {len(parent)} (difference e.g. {sorted(seen ^ parent)[:10]})"
                )

    # --------------------------------------------------------------- networkx
    def to_networkx(self) -> nx.DiGraph:
        """Export as a networkx DiGraph.

        Nodes are ``("r", i)`` for region ``i`` (attributes ``kind="region"``,
        ``scope`` a tuple, ``leaf`` a bool) and ``("p", j)`` for partition ``j``
        (``kind="partition"``, ``scope`` the parent's scope). Edges run from a
        region to its partitions and from a partition to its children.
        """
        g = nx.DiGraph()
        for i, scope in enumerate(self.regions):
            g.add_node(("r", i), kind="region", scope=scope, leaf=not self.partitions_of[i])
        for j, p in enumerate(self.partitions):
            g.add_node(("p", j), kind="partition", scope=self.regions[p.parent])
            g.add_edge(("r", p.parent), ("p", j))
            for c in p.children:
                g.add_edge(("p", j), ("r", c))
        g.graph["num_vars"] = self.num_vars
        if self.image_shape is not None:
            g.graph["image_shape"] = self.image_shape
        return g

    @classmethod
    def from_networkx(cls, g: nx.DiGraph, num_vars: int | None = None) -> "RegionGraph":
        """Build from a DiGraph in the format of :meth:`to_networkx`.

        Region nodes carry ``kind="region"`` and ``scope`` (an iterable of ints);
        partition nodes carry ``kind="partition"``; edges run region -> partition
        -> child region. Node names may be anything hashable.

        Raises:
            ValueError: on missing attributes or edges that break the format.
        """
        if not isinstance(g, nx.DiGraph):
            raise ValueError(f"expected a networkx.DiGraph, got {type(g).__name__}")
        region_ids: dict = {}
        scopes: list[tuple[int, ...]] = []
        for node, data in g.nodes(data=True):
            kind = data.get("kind")
            if kind == "region":
                if "scope" not in data:
                    raise ValueError(f"region node {node!r} has no 'scope' attribute")
                region_ids[node] = len(scopes)
                scopes.append(tuple(sorted(int(v) for v in data["scope"])))
            elif kind != "partition":
                raise ValueError(f"node {node!r} has kind={kind!r}; expected 'region' or 'partition'")
        partitions = []
        for node, data in g.nodes(data=True):
            if data.get("kind") != "partition":
                continue
            parents = list(g.predecessors(node))
            if len(parents) != 1 or parents[0] not in region_ids:
                raise ValueError(f"partition node {node!r} must have exactly one parent region, has {parents}")
            children = list(g.successors(node))
            if any(c not in region_ids for c in children):
                raise ValueError(f"partition node {node!r} has a child that is not a region")
            partitions.append(Partition(region_ids[parents[0]], tuple(region_ids[c] for c in children)))
        for u, v in g.edges:
            if g.nodes[u].get("kind") == g.nodes[v].get("kind"):
                raise ValueError(f"edge {u!r} -> {v!r} joins two nodes of kind {g.nodes[u].get('kind')!r}")
        if num_vars is None:
            num_vars = int(g.graph.get("num_vars", 1 + max(max(s) for s in scopes)))
        shape = g.graph.get("image_shape")
        rg = cls(num_vars, tuple(scopes), tuple(partitions), tuple(shape) if shape is not None else None)
        rg.check_valid()
        return rg

    # ------------------------------------------------------------- builders
    @classmethod
    def random(cls, num_vars: int, depth: int, repetitions: int = 1, seed: int = 0) -> "RegionGraph":
        """RAT-SPN random binary trees (Peharz et al., UAI 2019).

        ``repetitions`` times, the full scope is shuffled and split into two
        balanced halves, recursively down to ``depth`` levels. The root region is
        shared: it has one partition per repetition.

        Args:
            num_vars: number of variables.
            depth: number of split levels (>= 1); leaf regions hold about
                ``num_vars / 2**depth`` variables.
            repetitions: number of independent random trees.
            seed: seed of the random splits.
        """
        _check_int("num_vars", num_vars, 2)
        _check_int("depth", depth, 1)
        _check_int("repetitions", repetitions, 1)
        if 2**depth > num_vars:
            raise ValueError(f"depth={depth} needs at least 2**depth={2**depth} variables, got num_vars={num_vars}")
        rng = np.random.default_rng(seed)
        regions: list[tuple[int, ...]] = [tuple(range(num_vars))]
        partitions: list[Partition] = []
        for _ in range(repetitions):
            perm = rng.permutation(num_vars)
            frontier = [(0, perm)]
            for _level in range(depth):
                nxt = []
                for parent, vars_ in frontier:
                    halves = np.array_split(rng.permutation(vars_), 2)
                    kids = []
                    for h in halves:
                        regions.append(tuple(sorted(int(v) for v in h)))
                        kids.append(len(regions) - 1)
                        nxt.append((len(regions) - 1, h))
                    partitions.append(Partition(parent, tuple(kids)))
                frontier = nxt
        return cls(num_vars, tuple(regions), tuple(partitions))

    @classmethod
    def poon_domingos(
        cls,
        height: int,
        width: int,
        delta: int | Sequence[int] = 4,
        channels: int = 1,
        max_depth: int | None = None,
    ) -> "RegionGraph":
        """Poon-Domingos structure over an image (Poon & Domingos, UAI 2011).

        Regions are axis-aligned rectangles (all channels of a pixel together).
        Each rectangle is split in two at every multiple of ``delta`` inside it,
        horizontally and vertically; rectangles no larger than ``delta`` in both
        directions are leaves. Equal rectangles are shared, so the graph is a DAG.

        Args:
            height, width: image size.
            delta: cut spacing, an int or ``(delta_rows, delta_cols)``.
            channels: channels per pixel.
            max_depth: regions at this depth from the root are not split further.
        """
        _check_int("height", height, 1)
        _check_int("width", width, 1)
        _check_int("channels", channels, 1)
        dh, dw = (delta, delta) if isinstance(delta, (int, np.integer)) else tuple(delta)
        _check_int("delta", dh, 1)
        _check_int("delta", dw, 1)
        if max_depth is not None:
            _check_int("max_depth", max_depth, 1)
        builder = _RectBuilder(height, width, channels)

        def cuts(lo: int, hi: int, d: int) -> list[int]:
            return [c for c in range((lo // d + 1) * d, hi, d)]

        root = builder.region(0, height, 0, width)
        depth_of = {root: 0}
        queue = deque([(0, height, 0, width)])  # breadth first, so depth_of is the shortest depth
        expanded: set[int] = set()
        while queue:
            r0, r1, c0, c1 = queue.popleft()
            idx = builder.region(r0, r1, c0, c1)
            if idx in expanded or (max_depth is not None and depth_of[idx] >= max_depth):
                continue
            expanded.add(idx)
            halves = [[(r0, cut, c0, c1), (cut, r1, c0, c1)] for cut in cuts(r0, r1, dh)]
            halves += [[(r0, r1, c0, cut), (r0, r1, cut, c1)] for cut in cuts(c0, c1, dw)]
            for pair in halves:
                for kid in builder.split(idx, pair):
                    depth_of.setdefault(kid, depth_of[idx] + 1)
                queue.extend(pair)
        if not builder.partitions:
            raise ValueError(f"delta={delta} leaves a {height}x{width} image unsplit; choose a smaller delta")
        return builder.build()

    @classmethod
    def quad_tree(cls, height: int, width: int, channels: int = 1, depth: int | None = None, arity: int = 2) -> "RegionGraph":
        """Quad-tree structure over an image.

        Each rectangle is cut into four quadrants (two halves where one side is
        a single pixel), recursively, down to single pixels or for ``depth``
        quad levels. ``arity=4``: one partition into the (up to) four
        quadrants, for layers with n-ary products (``layer="cp"``).
        ``arity=2``: the quad split is expressed as two binary partitions (top
        and bottom halves, then left and right of each half), so every product
        has two children (any layer kind).
        """
        _check_int("height", height, 1)
        _check_int("width", width, 1)
        _check_int("channels", channels, 1)
        if depth is not None:
            _check_int("depth", depth, 1)
        if arity not in (2, 4):
            raise ValueError(f"arity must be 2 or 4, got {arity!r}")
        if height * width < 2:
            raise ValueError("a quad tree needs an image of at least 2 pixels")
        builder = _RectBuilder(height, width, channels)
        _quad_split(builder, (0, height, 0, width), 0, depth, "binary" if arity == 2 else "quad")
        return builder.build()

    @classmethod
    def quad_graph(cls, height: int, width: int, channels: int = 1, depth: int | None = None) -> "RegionGraph":
        """Quad-graph structure over an image (as cirkit's QuadGraph): a DAG of rectangles.

        Each rectangle has two partitions: into its top and bottom halves, and
        into its left and right halves; each half is a region with one
        partition into its two quadrants, which are shared by both splits and
        recurse. Rectangles one pixel high or wide are halved once. Splitting
        stops at single pixels or after ``depth`` quad levels.
        """
        _check_int("height", height, 1)
        _check_int("width", width, 1)
        _check_int("channels", channels, 1)
        if depth is not None:
            _check_int("depth", depth, 1)
        if height * width < 2:
            raise ValueError("a quad graph needs an image of at least 2 pixels")
        builder = _RectBuilder(height, width, channels)
        _quad_split(builder, (0, height, 0, width), 0, depth, "graph")
        return builder.build()

    @classmethod
    def chow_liu(cls, data: object, marginalized: object = None, **kwargs: object) -> "RegionGraph":
        """The hidden Chow-Liu tree structure of ``data``: see :func:`spnkit.structure.chow_liu_region_graph`.

        One leaf region per variable and, for each variable with children in the
        Chow-Liu tree (the maximum spanning tree of the pairwise mutual
        information), a region over its subtree partitioned into the variable's
        leaf region and its children's subtrees. ``tree_edges`` holds the tree.
        Compile it with ``layer="cp"`` (partitions of any arity); with
        ``project_leaves=False`` it is an HCLT (:func:`spnkit.hclt`).
        """
        from .structure import chow_liu_region_graph

        return chow_liu_region_graph(data, marginalized, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"RegionGraph(num_vars={self.num_vars}, regions={len(self.regions)}, "
            f"partitions={len(self.partitions)}, leaf_regions={len(self.leaf_regions)})"
        )


class _RectBuilder:
    """Collects rectangle regions (deduplicated) and partitions for image builders."""

    def __init__(self, height: int, width: int, channels: int) -> None:
        self.shape = (height, width, channels)
        self.rects: list[tuple[int, int, int, int]] = []
        self.index: dict[tuple[int, int, int, int], int] = {}
        self.partitions: list[Partition] = []
        self._seen: set = set()

    def region(self, r0: int, r1: int, c0: int, c1: int) -> int:
        key = (r0, r1, c0, c1)
        if key not in self.index:
            self.index[key] = len(self.rects)
            self.rects.append(key)
        return self.index[key]

    def split(self, parent: int, rects: Iterable[tuple[int, int, int, int]]) -> tuple[int, ...]:
        kids = tuple(self.region(*r) for r in rects)
        if (parent, kids) not in self._seen:
            self._seen.add((parent, kids))
            self.partitions.append(Partition(parent, kids))
        return kids

    def build(self) -> RegionGraph:
        h, w, c = self.shape
        pix = np.arange(h * w * c).reshape(h, w, c)
        scopes = tuple(tuple(int(v) for v in np.sort(pix[r0:r1, c0:c1].ravel())) for r0, r1, c0, c1 in self.rects)
        return RegionGraph(h * w * c, scopes, tuple(self.partitions), (h, w, c))


Rect = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open


def _quad_split(builder: "_RectBuilder", rect: Rect, level: int, depth: int | None, mode: str) -> None:
    """Split ``rect`` into quadrants, recursively, depth first (modes "binary", "quad", "graph"; see the builders)."""
    r0, r1, c0, c1 = rect
    if (depth is not None and level >= depth) or (r1 - r0 < 2 and c1 - c0 < 2):
        return
    idx = builder.region(r0, r1, c0, c1)
    rows = [(r0, (r0 + r1) // 2), ((r0 + r1) // 2, r1)] if r1 - r0 >= 2 else [(r0, r1)]
    cols = [(c0, (c0 + c1) // 2), ((c0 + c1) // 2, c1)] if c1 - c0 >= 2 else [(c0, c1)]
    quads = [(a, b, c, d) for a, b in rows for c, d in cols]  # row-major: top-left, top-right, bottom-left, bottom-right
    if mode == "binary" and len(rows) == 2:  # top and bottom halves, then left and right of each, each half in turn
        halves = [(a, b, c0, c1) for a, b in rows]
        builder.split(idx, halves)
        for i, half in enumerate(halves):
            pair = quads[len(cols) * i : len(cols) * (i + 1)]
            if len(pair) == 2:
                builder.split(builder.region(*half), pair)
            for q in pair:
                _quad_split(builder, q, level + 1, depth, mode)
        return
    if len(quads) == 2 or mode != "graph":
        builder.split(idx, quads)
    else:  # graph: both halvings, each half split into its two quadrants
        top, bottom = (r0, rows[0][1], c0, c1), (rows[1][0], r1, c0, c1)
        left, right = (r0, r1, c0, cols[0][1]), (r0, r1, cols[1][0], c1)
        builder.split(idx, [top, bottom])
        builder.split(idx, [left, right])
        for half, pair in ((top, quads[0:2]), (bottom, quads[2:4]), (left, quads[0::2]), (right, quads[1::2])):
            builder.split(builder.region(*half), pair)
    for q in quads:
        _quad_split(builder, q, level + 1, depth, mode)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
