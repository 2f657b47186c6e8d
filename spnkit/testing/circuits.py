"""Reproducible test circuits: graph and circuit specifications, random and extreme parameters, deterministic circuits.

A :class:`GraphSpec` / :class:`CircuitSpec` is a small frozen value with a
readable ``repr`` that builds a region graph / a float64 circuit; hypothesis
strategies draw specs, so a failing example prints as code one can paste.

Example:
    >>> import spnkit
    >>> spec = CircuitSpec(GraphSpec.random(num_vars=4, depth=1, repetitions=2, seed=1), spnkit.Bernoulli(),
    ...                    num_sums=2, num_leaves=2, num_classes=1, seed=0, scale=1.0)
    >>> spn = spec.build()
    >>> spn.dtype, spn.num_vars
    (torch.float64, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import networkx as nx
import torch

from ..circuit import SPN
from ..layers import LeafLayer
from ..leaves import Bernoulli, Categorical, Leaf, Normal
from ..region_graph import RegionGraph

__all__ = ["GraphSpec", "CircuitSpec", "randomize_parameters", "make_deterministic"]


@dataclass(frozen=True)
class GraphSpec:
    """How to build one region graph: a builder name and its keyword arguments.

    ``builder`` is "random", "poon_domingos", "quad_tree", "quad_graph" (the
    :class:`~spnkit.RegionGraph` classmethods), "hclt" (the hidden Chow-Liu
    tree structure of given tree edges) or "networkx": an explicit graph
    given as ``regions`` (scopes) and ``partitions`` (``(parent, children)``
    index pairs), assembled as a :class:`networkx.DiGraph` with string node
    names and read by :meth:`RegionGraph.from_networkx`.
    """

    builder: str
    kwargs: tuple[tuple[str, object], ...] = field(default=())

    @classmethod
    def random(cls, **kwargs) -> "GraphSpec":
        return cls("random", tuple(sorted(kwargs.items())))

    @classmethod
    def poon_domingos(cls, **kwargs) -> "GraphSpec":
        return cls("poon_domingos", tuple(sorted(kwargs.items())))

    @classmethod
    def quad_tree(cls, **kwargs) -> "GraphSpec":
        return cls("quad_tree", tuple(sorted(kwargs.items())))

    @classmethod
    def quad_graph(cls, **kwargs) -> "GraphSpec":
        return cls("quad_graph", tuple(sorted(kwargs.items())))

    @classmethod
    def hclt(cls, num_vars: int, tree_edges) -> "GraphSpec":
        """The hidden Chow-Liu tree structure of a given tree (:func:`spnkit.structure.hclt_region_graph`)."""
        edges = tuple((int(a), int(b)) for a, b in tree_edges)
        return cls("hclt", (("num_vars", num_vars), ("tree_edges", edges)))

    @classmethod
    def explicit(cls, num_vars: int, regions, partitions) -> "GraphSpec":
        regions = tuple(tuple(int(v) for v in s) for s in regions)
        partitions = tuple((int(p), tuple(int(c) for c in kids)) for p, kids in partitions)
        return cls("networkx", (("num_vars", num_vars), ("partitions", partitions), ("regions", regions)))

    def to_networkx(self) -> nx.DiGraph:
        """The explicit graph of a "networkx" spec, in the format of :meth:`RegionGraph.to_networkx`."""
        if self.builder != "networkx":
            raise ValueError(f"only 'networkx' specs hold an explicit graph, this one is {self.builder!r}")
        kw: dict[str, Any] = dict(self.kwargs)
        g = nx.DiGraph(num_vars=kw["num_vars"])
        for i, scope in enumerate(kw["regions"]):
            g.add_node(f"region {i}", kind="region", scope=scope)
        for j, (parent, kids) in enumerate(kw["partitions"]):
            g.add_node(f"partition {j}", kind="partition")
            g.add_edge(f"region {parent}", f"partition {j}")
            for c in kids:
                g.add_edge(f"partition {j}", f"region {c}")
        return g

    def build(self) -> RegionGraph:
        kw: dict[str, Any] = dict(self.kwargs)
        if self.builder == "networkx":
            return RegionGraph.from_networkx(self.to_networkx())
        if self.builder == "hclt":
            from ..structure import hclt_region_graph

            return hclt_region_graph(kw["num_vars"], kw["tree_edges"])
        if self.builder not in ("random", "poon_domingos", "quad_tree", "quad_graph"):
            raise ValueError(f"unknown builder {self.builder!r}")
        return getattr(RegionGraph, self.builder)(**kw)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"GraphSpec.{'explicit' if self.builder == 'networkx' else self.builder}({args})"


@dataclass(frozen=True)
class CircuitSpec:
    """A float64 circuit: a graph, a leaf family, sizes and a parameter seed and scale.

    ``scale`` multiplies every random parameter: 0.01 gives near-uniform
    weights, 30 nearly one-hot weights, saturated variances and far-apart means.
    ``layer`` and ``project_leaves`` are the :class:`~spnkit.SPN` arguments.
    """

    graph: GraphSpec
    leaf: Leaf
    num_sums: int
    num_leaves: int
    num_classes: int = 1
    seed: int = 0
    scale: float = 1.0
    layer: str = "tucker"
    project_leaves: bool = True

    def build(self) -> SPN:
        spn = SPN(self.graph.build(), self.leaf, self.num_sums, self.num_leaves, self.num_classes,
                  layer=self.layer, project_leaves=self.project_leaves).double()
        randomize_parameters(spn, self.seed, self.scale)
        return spn


def randomize_parameters(spn: SPN, seed: int, scale: float = 1.0) -> SPN:
    """Overwrite every parameter with seeded random values times ``scale`` (in place; returns ``spn``).

    Sum and leaf logits are standard normal times ``scale``; Normal means are
    uniform in ``[-scale, scale]`` and their unconstrained variances standard
    normal times ``scale``.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in spn.named_parameters():
            if name.endswith("loc"):
                new = (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
            else:
                new = torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale
            p.copy_(new.to(p.dtype))
    return spn


def make_deterministic(spn: SPN, seed: int = 0, big: float = 1e4) -> SPN:
    """Make ``spn`` deterministic: any input reaches at most one child of each sum (in place).

    Construction, bottom-up:

    * leaf ``k`` of a region puts (all but ``exp(-big)`` of) its mass on value
      ``k`` of the region's first variable, so a region's leaves have disjoint
      supports (needs ``num_leaves <= 2`` for Bernoulli leaves, ``<= num_categories``
      for Categorical ones);
    * products of disjoint-support children have disjoint supports; each non-root
      sum ``k`` gets its own share of its inputs (input ``q`` goes to sum
      ``q mod K``), with random weights inside the share; root sums take every input.
      In a Tucker layer the inputs are the ``K^2`` products; in a CP layer each
      projection's inputs are its child's entries, so product ``k`` multiplies
      disjoint shares;
    * a region with several partitions keeps the first one (weight ``1 - exp(-big)``).

    Terms of weight ``exp(-big)`` vanish in float64 (``big = 1e4``), so sums and
    maxima coincide and max-product is the exact MPE.

    Raises:
        ValueError: for Normal leaves, too many leaves per region, or
            ``num_leaves**2 < num_sums`` (not enough products to share out).
    """
    leaf = spn.leaf
    limit = 2 if isinstance(leaf, Bernoulli) else leaf.num_categories if isinstance(leaf, Categorical) else 0
    if isinstance(leaf, Normal) or not limit:
        raise ValueError(f"deterministic circuits need discrete leaves, got {leaf!r}")
    if spn.num_leaves > limit:
        raise ValueError(f"at most {limit} disjoint point masses per region for {leaf!r}, got num_leaves={spn.num_leaves}")
    if spn.layer == "cp":  # a projection's inputs: its child's entries
        inputs = spn.num_leaves if spn.project_leaves else spn.num_sums
    else:  # a Tucker sum's inputs: the products of two leaf vectors
        inputs = spn.num_leaves**2
    if inputs < spn.num_sums:
        raise ValueError(f"{inputs} inputs of the first sums cannot be shared among num_sums={spn.num_sums} sums")
    randomize_parameters(spn, seed)
    with torch.no_grad():
        params = cast(LeafLayer, spn.leaf_layer).params  # discrete leaves: a factorized layer
        K = spn.num_leaves
        if isinstance(leaf, Bernoulli):
            if K == 2:
                params["logits"][:, 0, :] = torch.tensor([-big, big], dtype=params["logits"].dtype)
        else:
            logits = params["logits"]  # (R, n, K, C)
            logits[:, 0] = -big
            logits[:, 0, torch.arange(K), torch.arange(K)] = 0.0
        layers = [lv.product for lv in spn.levels]  # spn.sum_layers
        if spn.root_sum is None:
            layers = layers[:-1]  # Tucker root sums: any weights over disjoint products
        for layer in layers:
            logits = layer.logits  # (A, I, K_out): products (Tucker) or a child's entries (CP)
            valid = torch.ones(logits.shape[:2], dtype=torch.bool) if layer.valid is None else layer.valid[..., 0]
            rank = valid.long().cumsum(1) - 1  # (A, I) position among valid inputs
            owner = rank % layer.k_out
            keep = owner.unsqueeze(-1) == torch.arange(layer.k_out).view(1, 1, -1)  # (A, I, K_out)
            logits.masked_fill_(~keep, -big)
        for mix in (lv.mixing for lv in spn.levels if lv.mixing is not None):  # spn.mixing_layers
            mix.logits.fill_(-big)
            mix.logits[:, 0, :] = 0.0
    return spn
