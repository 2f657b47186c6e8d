"""Hypothesis strategies for spnkit: region graphs of every builder, circuits, inputs, masks, corrupted graphs.

Graphs and circuits are drawn as :class:`~spnkit.testing.circuits.GraphSpec` /
:class:`~spnkit.testing.circuits.CircuitSpec` values (call ``.build()``), so a
failing example prints as a line of code. Everything is float64.

Example:
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=5, derandomize=True, database=None)
    ... @given(circuit_specs(max_vars=5))
    ... def test_finite(spec):
    ...     spn = spec.build()
    ...     x = torch.zeros(1, spn.num_vars, dtype=torch.float64)
    ...     assert torch.isfinite(spn.log_prob(x)).all()
    >>> test_finite()
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from ..leaves import Bernoulli, Binomial, Categorical, Leaf, LeafFamily, Mixed, MultivariateNormal, Normal, Poisson
from ..region_graph import Partition, RegionGraph
from .circuits import CircuitSpec, GraphSpec
from .validity import region_graph_violations

__all__ = [
    "random_graph_specs",
    "poon_domingos_specs",
    "quad_tree_specs",
    "quad_graph_specs",
    "tree_graph_specs",
    "networkx_graph_specs",
    "graph_specs",
    "leaves",
    "discrete_leaves",
    "finite_leaves",
    "normal_leaves",
    "poisson_leaves",
    "mvn_leaves",
    "mixed_leaves",
    "MixedTemplate",
    "circuit_specs",
    "circuits",
    "enumerable_circuit_specs",
    "leaf_values",
    "inputs",
    "masks",
    "Corruption",
    "corrupted_region_graphs",
    "PARAMETER_SCALES",
]

#: parameter scales drawn for circuits: near-uniform, typical, peaked, extreme
PARAMETER_SCALES = (0.01, 1.0, 3.0, 30.0)


# ------------------------------------------------------------ region graphs
@st.composite
def random_graph_specs(draw, min_vars: int = 2, max_vars: int = 10, max_repetitions: int = 3) -> GraphSpec:
    """RAT-SPN random graphs: num_vars, depth (up to ``log2 num_vars``), repetitions, seed."""
    d = draw(st.integers(max(2, min_vars), max(2, max_vars)))
    depth = draw(st.integers(1, int(math.log2(d))))
    reps = draw(st.integers(1, max_repetitions))
    seed = draw(st.integers(0, 2**16))
    return GraphSpec.random(num_vars=d, depth=depth, repetitions=reps, seed=seed)


def _image_size(draw, max_vars: int) -> tuple[int, int, int]:
    """Height, width, channels with ``h * w >= 2`` and ``h * w * c <= max_vars``."""
    if max_vars < 2:
        raise ValueError(f"image graphs need max_vars >= 2, got {max_vars}")
    channels = draw(st.integers(1, 2 if max_vars >= 4 else 1))
    pixels = max_vars // channels
    h = draw(st.integers(1, min(4, pixels)))
    lo = 2 if h == 1 else 1
    w = draw(st.integers(lo, max(lo, min(4, pixels // h))))
    return h, w, channels


@st.composite
def poon_domingos_specs(draw, max_vars: int = 8) -> GraphSpec:
    """Poon-Domingos graphs over small images (channels 1-2), cut spacings that split, optional max_depth."""
    h, w, c = _image_size(draw, max_vars)
    dh = draw(st.integers(1, max(1, h - 1)))
    dw = draw(st.integers(1, max(1, w - 1)))
    delta = dh if dh == dw else (dh, dw)
    max_depth = draw(st.one_of(st.none(), st.integers(1, 3)))
    return GraphSpec.poon_domingos(height=h, width=w, delta=delta, channels=c, max_depth=max_depth)


@st.composite
def quad_tree_specs(draw, max_vars: int = 8, binary: bool = True) -> GraphSpec:
    """Quad trees over small images (channels 1-2), full or limited depth; 4-ary products too unless ``binary``."""
    h, w, c = _image_size(draw, max_vars)
    depth = draw(st.one_of(st.none(), st.integers(1, 2)))
    arity = 2 if binary else draw(st.sampled_from([2, 4]))
    if arity == 4:
        return GraphSpec.quad_tree(height=h, width=w, channels=c, depth=depth, arity=4)
    return GraphSpec.quad_tree(height=h, width=w, channels=c, depth=depth)


@st.composite
def quad_graph_specs(draw, max_vars: int = 8) -> GraphSpec:
    """Quad graphs (DAGs of rectangles with two halvings each) over small images, full or limited depth."""
    h, w, c = _image_size(draw, max_vars)
    depth = draw(st.one_of(st.none(), st.integers(1, 2)))
    return GraphSpec.quad_graph(height=h, width=w, channels=c, depth=depth)


@st.composite
def tree_graph_specs(draw, min_vars: int = 2, max_vars: int = 8) -> GraphSpec:
    """Hidden Chow-Liu tree structures of random trees (Pruefer-like: each variable attaches to an earlier one)."""
    d = draw(st.integers(max(2, min_vars), max(2, max_vars)))
    order = draw(st.permutations(range(d)))
    edges = [(order[draw(st.integers(0, i - 1))], order[i]) for i in range(1, d)]  # directed away from order[0]
    return GraphSpec.hclt(num_vars=d, tree_edges=edges)


@st.composite
def networkx_graph_specs(
    draw, min_vars: int = 2, max_vars: int = 8, max_partitions: int = 2, max_children: int = 2, max_regions: int = 24
) -> GraphSpec:
    """Explicit region graphs (read through :meth:`RegionGraph.from_networkx`).

    Regions are split recursively into ``2 .. max_children`` random parts, with
    up to ``max_partitions`` partitions per region; child regions of equal scope
    are sometimes shared, giving DAGs; non-root regions stop splitting at random.
    """
    d = draw(st.integers(max(2, min_vars), max(2, max_vars)))
    regions: list[tuple[int, ...]] = [tuple(range(d))]
    partitions: list[tuple[int, tuple[int, ...]]] = []
    by_scope: dict[tuple[int, ...], int] = {regions[0]: 0}
    todo = [0]
    while todo:
        r = todo.pop(0)
        scope = regions[r]
        if len(scope) < 2 or (r != 0 and (len(regions) >= max_regions or draw(st.booleans()))):
            continue
        for _ in range(draw(st.integers(1, max_partitions))):
            perm = draw(st.permutations(scope))
            arity = draw(st.integers(2, min(max_children, len(scope))))
            cuts = sorted(draw(st.lists(st.integers(1, len(scope) - 1), min_size=arity - 1, max_size=arity - 1, unique=True)))
            parts = [tuple(sorted(perm[a:b])) for a, b in zip([0, *cuts], [*cuts, len(scope)])]
            kids = []
            for part in parts:
                if part in by_scope and draw(st.booleans()):
                    kids.append(by_scope[part])  # shared region: a DAG
                else:
                    regions.append(part)
                    by_scope.setdefault(part, len(regions) - 1)
                    kids.append(len(regions) - 1)
                    todo.append(len(regions) - 1)
            partitions.append((r, tuple(kids)))
    return GraphSpec.explicit(d, regions, partitions)


def graph_specs(max_vars: int = 8, binary: bool = True) -> st.SearchStrategy[GraphSpec]:
    """A graph of any builder with at most ``max_vars`` variables (binary partitions by default; up to 3 children otherwise)."""
    options = [random_graph_specs(max_vars=max_vars), networkx_graph_specs(max_vars=max_vars, max_children=2 if binary else 3)]
    if max_vars >= 2:
        options += [poon_domingos_specs(max_vars=max_vars), quad_tree_specs(max_vars=max_vars, binary=binary), quad_graph_specs(max_vars=max_vars)]
    if not binary:
        options.append(tree_graph_specs(max_vars=max_vars))
    return st.one_of(options)


# ------------------------------------------------------------------ leaves
@dataclass(frozen=True)
class MixedTemplate:
    """A :class:`~spnkit.Mixed` family yet to be laid out: :func:`circuit_specs` assigns each variable one of ``families``.

    A mixed family names its columns, so it is drawn after the region graph
    (:meth:`realize`); leaf strategies yield this template in its place.
    """

    families: tuple[LeafFamily, ...]

    def realize(self, num_vars: int) -> st.SearchStrategy[Mixed]:
        """A Mixed family over ``num_vars`` columns, each with a drawn family of the template."""
        picks = st.lists(st.integers(0, len(self.families) - 1), min_size=num_vars, max_size=num_vars)
        return picks.map(lambda p: Mixed({c: self.families[i] for c, i in enumerate(p)}))


def normal_leaves() -> st.SearchStrategy[Leaf]:
    """Normal families with narrow and wide variance bounds."""
    return st.builds(Normal, min_var=st.sampled_from([1e-2, 0.1]), max_var=st.sampled_from([1.0, 4.0]))


def poisson_leaves() -> st.SearchStrategy[Leaf]:
    """Poisson families with tight and wide rate bounds."""
    return st.builds(Poisson, min_rate=st.sampled_from([1e-3, 0.1]), max_rate=st.sampled_from([20.0, 1e4]))


def mvn_leaves() -> st.SearchStrategy[LeafFamily]:
    """Multivariate Normal families with narrow and wide eigenvalue bounds."""
    return st.builds(MultivariateNormal, min_var=st.sampled_from([1e-2, 0.1]), max_var=st.sampled_from([1.0, 4.0]))


def finite_leaves(max_categories: int = 4) -> st.SearchStrategy[Leaf]:
    """Bernoulli, Categorical and Binomial families (2 .. max_categories values)."""
    return st.one_of(st.just(Bernoulli()), st.builds(Categorical, st.integers(2, max_categories)),
                     st.builds(Binomial, st.integers(1, max_categories - 1)))


def mixed_leaves(families: st.SearchStrategy[LeafFamily] | None = None, max_families: int = 3) -> st.SearchStrategy[MixedTemplate]:
    """Templates of mixed families: 2 .. ``max_families`` distinct families drawn from ``families`` (default: any built-in one)."""
    pool = families if families is not None else st.one_of(normal_leaves(), finite_leaves(), poisson_leaves(), mvn_leaves())
    return st.lists(pool, min_size=2, max_size=max_families, unique=True).map(lambda fs: MixedTemplate(tuple(fs)))


def discrete_leaves(max_categories: int = 4, mixed: bool = True) -> st.SearchStrategy[LeafFamily | MixedTemplate]:
    """Families of finite support: Bernoulli, Categorical, Binomial (2 .. max_categories values) and, with ``mixed``, mixtures of them per variable."""
    if not mixed:
        return finite_leaves(max_categories)
    return st.one_of(finite_leaves(max_categories), mixed_leaves(finite_leaves(max_categories)))


def leaves() -> st.SearchStrategy[LeafFamily | MixedTemplate]:
    """Any built-in leaf family, mixed families included."""
    return st.one_of(normal_leaves(), discrete_leaves(mixed=False), poisson_leaves(), mvn_leaves(), mixed_leaves())


def _cardinality(leaf: LeafFamily | MixedTemplate) -> int:
    if isinstance(leaf, MixedTemplate):
        return max(_cardinality(f) for f in leaf.families)
    if isinstance(leaf, Categorical):
        return leaf.num_categories
    return leaf.total_count + 1 if isinstance(leaf, Binomial) else 2


# ---------------------------------------------------------------- circuits
@st.composite
def circuit_specs(
    draw,
    graphs: st.SearchStrategy[GraphSpec] | None = None,
    leaf_families: st.SearchStrategy[Leaf] | None = None,
    max_vars: int = 8,
    max_sums: int = 3,
    max_leaves: int = 3,
    max_classes: int = 3,
    scales: tuple[float, ...] = PARAMETER_SCALES,
    layers: tuple[str, ...] = ("tucker", "cp"),
) -> CircuitSpec:
    """Float64 circuits: any graph, leaf family, layer kind, sizes, parameter seed and scale (extreme ones included).

    ``leaf_families`` may yield :class:`MixedTemplate` values, laid out over the drawn graph's variables.

    CP circuits are drawn over graphs with partitions of up to 3 children, and
    half of them join leaves unprojected when ``num_leaves == num_sums``; a
    given graph with wider partitions makes a CP circuit.
    """
    layer = draw(st.sampled_from(layers))
    graph = draw(graphs if graphs is not None else graph_specs(max_vars, binary=layer == "tucker"))
    if layer == "tucker" and any(len(p.children) != 2 for p in graph.build().partitions):
        layer = "cp"
    leaf = draw(leaf_families if leaf_families is not None else leaves())
    if isinstance(leaf, MixedTemplate):
        leaf = draw(leaf.realize(graph.build().num_vars))
    num_sums = draw(st.integers(1, max_sums))
    num_leaves = draw(st.integers(1, max_leaves))
    project = not (layer == "cp" and num_leaves == num_sums and draw(st.booleans()))
    return CircuitSpec(
        graph,
        leaf,
        num_sums=num_sums,
        num_leaves=num_leaves,
        num_classes=draw(st.integers(1, max_classes)),
        seed=draw(st.integers(0, 2**16)),
        scale=draw(st.sampled_from(scales)),
        layer=layer,
        project_leaves=project,
    )


def circuits(**kwargs) -> st.SearchStrategy:
    """Built float64 :class:`~spnkit.SPN` modules; takes the arguments of :func:`circuit_specs`.

    Prefer :func:`circuit_specs` in tests: a failing spec prints as code, a module does not.
    """
    return circuit_specs(**kwargs).map(CircuitSpec.build)


@st.composite
def enumerable_circuit_specs(draw, max_states: int = 1024, **kwargs) -> CircuitSpec:
    """Discrete circuits with at most ``max_states`` joint states (``2**10`` by default)."""
    leaf = draw(discrete_leaves())
    max_vars = int(math.log(max_states) / math.log(_cardinality(leaf)) + 1e-9)
    return draw(circuit_specs(graphs=graph_specs(max_vars), leaf_families=st.just(leaf), **kwargs))


# ------------------------------------------------------------------ inputs
def leaf_values(leaf: LeafFamily, extreme: bool = True) -> st.SearchStrategy[float]:
    """Values in the support of ``leaf``, its edges included (0 and the last category; counts up to 200;
    for Normal and multivariate Normal leaves ``+-1e4``, 0 and tiny numbers when ``extreme``)."""
    if isinstance(leaf, Poisson):
        return st.one_of(st.integers(0, 12), st.sampled_from([0, 200] if extreme else [0])).map(float)
    if isinstance(leaf, Bernoulli):
        return st.sampled_from([0.0, 1.0])
    if isinstance(leaf, Categorical):
        return st.integers(0, leaf.num_categories - 1).map(float)
    if isinstance(leaf, Binomial):
        return st.integers(0, leaf.total_count).map(float)
    core = st.floats(-3.0, 3.0, allow_nan=False)
    if not extreme:
        return core
    return st.one_of(core, st.sampled_from([0.0, -1e4, 1e4, 1e-300, -5.0, 50.0]), st.floats(-1e4, 1e4, allow_nan=False))


@st.composite
def inputs(draw, leaf: LeafFamily, num_vars: int, max_batch: int = 6, min_batch: int = 1, extreme: bool = True) -> torch.Tensor:
    """A ``(B, num_vars)`` float64 batch of values in (and at the edge of) the support (a mixed family: per column)."""
    b = draw(st.integers(min_batch, max_batch))
    if isinstance(leaf, Mixed):
        columns = [draw(st.lists(leaf_values(leaf.family_of(c), extreme), min_size=b, max_size=b)) for c in range(num_vars)]
        return torch.tensor(columns, dtype=torch.float64).t().contiguous()
    vals = draw(st.lists(leaf_values(leaf, extreme), min_size=b * num_vars, max_size=b * num_vars))
    return torch.tensor(vals, dtype=torch.float64).reshape(b, num_vars)


@st.composite
def masks(draw, shape: tuple[int, int], kinds: tuple[str, ...] = ("observed", "marginalized", "bool", "soft")) -> torch.Tensor:
    """Masks of ``shape`` (True / 1.0 = unobserved).

    Kinds: "observed" (all False), "marginalized" (all True), "bool" (random,
    different per sample), "soft" (float64 in ``[0, 1]``, 0 and 1 included).
    """
    kind = draw(st.sampled_from(kinds))
    n = shape[0] * shape[1]
    if kind == "observed":
        return torch.zeros(shape, dtype=torch.bool)
    if kind == "marginalized":
        return torch.ones(shape, dtype=torch.bool)
    if kind == "bool":
        return torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n))).reshape(shape)
    entry = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0, allow_nan=False))
    return torch.tensor(draw(st.lists(entry, min_size=n, max_size=n)), dtype=torch.float64).reshape(shape)


# ------------------------------------------------------------- corruptions
@dataclass(frozen=True)
class Corruption:
    """A deliberately invalid region graph.

    Attributes:
        graph: the corrupted graph (it passes the constructor's structural checks).
        kind: "overlap" (two children of a partition share a variable),
            "missing" (a variable removed from a child region), "non_covering_root"
            (a variable that no region holds) or "cycle".
        regions: the regions whose rules are broken, as found by
            :func:`~spnkit.testing.validity.region_graph_violations`; a good error
            message names one of them (empty for cycles).
        base: the valid graph it came from.
    """

    graph: RegionGraph
    kind: str
    regions: frozenset[int]
    base: GraphSpec

    def __repr__(self) -> str:
        return f"Corruption(kind={self.kind!r}, regions={sorted(self.regions)}, base={self.base!r})"


@st.composite
def corrupted_region_graphs(draw, max_vars: int = 8) -> Corruption:
    """Valid graphs of any builder, broken in one way (see :class:`Corruption`)."""
    base = draw(graph_specs(max_vars))
    rg = base.build()
    regions = list(rg.regions)
    parts = list(rg.partitions)
    kind = draw(st.sampled_from(["overlap", "missing", "non_covering_root", "cycle"]))
    num_vars = rg.num_vars
    if kind == "missing":
        cands = [(j, c) for j, p in enumerate(parts) for c in p.children if len(regions[c]) >= 2]
        if not cands:
            kind = "non_covering_root"
        else:
            j, c = draw(st.sampled_from(cands))
            v = draw(st.sampled_from(regions[c]))
            regions[c] = tuple(u for u in regions[c] if u != v)
    if kind == "cycle":
        inner = [j for j, p in enumerate(parts) if p.parent != rg.root]
        if not inner:
            kind = "non_covering_root"
        else:
            j = draw(st.sampled_from(inner))
            p = parts[j]
            child = draw(st.sampled_from(p.children))
            parts.append(Partition(child, (p.parent, draw(st.sampled_from([c for c in p.children if c != child])))))
    if kind == "overlap":
        j = draw(st.integers(0, len(parts) - 1))
        a, b = draw(st.permutations(parts[j].children))[:2]
        v = draw(st.sampled_from(regions[a]))
        regions[b] = tuple(sorted({*regions[b], v}))
    if kind == "non_covering_root":
        num_vars += 1
    bad = RegionGraph(num_vars, tuple(regions), tuple(parts), None)
    found = {v.region for v in region_graph_violations(bad) if v.region is not None}
    return Corruption(bad, kind, frozenset(found), base)
