"""The compiled circuit: :class:`SPN`, its queries and its public face.

A region graph is compiled (:mod:`spnkit.compile`) into a leaf layer and, for
each height of the graph, one product layer (Tucker or CP, see
:mod:`spnkit.layers`) plus, where regions have several partitions, a mixing
layer. Each region of the graph becomes a vector of ``K`` nodes:
``num_leaves`` leaf distributions for leaf regions, ``num_sums`` for inner
regions and ``num_classes`` root sums.

Queries take the mask as an argument (``marginalized``; True or 1.0 =
unobserved, integrated out), never as state. Algorithms built on a circuit
(learning, drawing, summaries) use its public face: :meth:`SPN.prepare` (one
validation), :meth:`SPN.upward` (an upward pass, optionally with given
parameters, returning a :class:`~spnkit.evidence.Trace`), and the read-only
:attr:`SPN.levels`, :attr:`SPN.leaf_layer`, :attr:`SPN.root_sum` and
:attr:`SPN.weighted_layers`.

Example:
    >>> import torch, spnkit
    >>> rg = spnkit.RegionGraph.random(num_vars=6, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, leaf=spnkit.Bernoulli(), num_sums=3, num_leaves=3)
    >>> x = torch.tensor([[0., 1., 1., 0., 1., 0.]])
    >>> spn.log_prob(x).shape
    torch.Size([1])
    >>> spn.log_prob(x, marginalized=torch.ones(1, 6, dtype=torch.bool)).abs().item() < 1e-6
    True
"""

from __future__ import annotations

import os
from typing import Literal, cast, overload

import networkx as nx
import torch
from torch import Tensor, nn

from . import backtrack
from .circuit_graph import check_compiled, node_graph
from .compile import LAYER_KINDS, Level, compile_circuit
from .evidence import CircuitParams, Evidence, Trace, root_choice, validate
from .layers import CPLayer, LeafLayerBase, SumWeights
from .leaves import LeafFamily
from .region_graph import RegionGraph

__all__ = ["SPN"]


class SPN(nn.Module):
    """A sum-product network compiled from a region graph into batched tensor layers.

    Args:
        region_graph: the structure; it must be valid (smooth, decomposable,
            covering). Partitions may have any number of children with
            ``layer="cp"``; ``layer="tucker"`` needs two per partition.
        leaf: the leaf family, e.g. ``Normal(min_var=0.1, max_var=1.0)``,
            ``Poisson()``, ``MultivariateNormal(...)`` (a full-covariance
            Gaussian over each leaf region's variables) or ``Mixed({...})`` (a
            family per variable); the family builds the leaf layer.
        num_sums: ``K`` sum nodes (CP: product nodes) per inner region.
        num_leaves: leaf distributions per leaf region.
        num_classes: root sums; more than one gives class-conditional densities
            that share every layer below the roots.
        validate_args: check inputs of the public queries (shapes, NaN, support).
            Checks synchronize with the device; turn them off in a tuned CUDA loop.
        layer: ``"tucker"``: each partition's two children are multiplied by
            their outer product (``K^2`` products) and mixed by ``K`` sums, as
            in RAT-SPNs and EinsumNetworks. ``"cp"``: each child is projected
            by its own ``K x K`` sums and the projections multiplied
            elementwise (``K`` products; linear in ``K`` per child; any arity),
            as in cirkit's CP layers and hidden Chow-Liu trees; the root region's
            ``K`` products are mixed by ``num_classes`` root sums.
        project_leaves: with ``layer="cp"``, False lets leaf vectors enter the
            products directly instead of through projections: entry ``k`` of a
            leaf region multiplies product ``k`` (needs ``num_leaves ==
            num_sums``). A hidden Chow-Liu tree's leaves are joined so; for a
            univariate categorical leaf nothing is lost (a mixture of
            categoricals is categorical), and the leaf projections' work is saved.

    Example:
        >>> import torch, spnkit
        >>> rg = spnkit.RegionGraph.poon_domingos(height=4, width=4, delta=2)
        >>> spn = spnkit.SPN(rg, leaf=spnkit.Normal(0.1, 1.0), num_sums=2, num_leaves=2, num_classes=3)
        >>> spn.log_prob(torch.rand(5, 16)).shape
        torch.Size([5, 3])
    """

    leaf_layer: LeafLayerBase
    root_sum: CPLayer | None
    _leaf_groups: Tensor | None

    def __init__(
        self,
        region_graph: RegionGraph,
        leaf: LeafFamily,
        num_sums: int = 10,
        num_leaves: int = 10,
        num_classes: int = 1,
        validate_args: bool = True,
        layer: str = "tucker",
        project_leaves: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("num_sums", num_sums), ("num_leaves", num_leaves), ("num_classes", num_classes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(leaf, LeafFamily):
            raise ValueError(f"leaf must be a spnkit leaf family such as spnkit.Normal(), got {leaf!r}")
        if not isinstance(region_graph, RegionGraph):
            raise ValueError(f"region_graph must be a spnkit.RegionGraph, got {type(region_graph).__name__}")
        if layer not in LAYER_KINDS:
            raise ValueError(f"layer must be one of {LAYER_KINDS}, got {layer!r}")
        if not isinstance(project_leaves, bool):
            raise ValueError(f"project_leaves must be a bool, got {project_leaves!r}")
        if not project_leaves and (layer != "cp" or num_leaves != num_sums):
            raise ValueError("project_leaves=False needs layer='cp' and num_leaves == num_sums "
                             f"(got layer={layer!r}, num_leaves={num_leaves}, num_sums={num_sums})")
        region_graph.check_valid()
        if not region_graph.partitions:
            raise ValueError("the region graph has no partitions; a circuit needs at least one product layer")
        if layer == "tucker":
            wide = next((j for j, p in enumerate(region_graph.partitions) if len(p.children) != 2), None)
            if wide is not None:
                n = len(region_graph.partitions[wide].children)
                raise ValueError(f"layer='tucker' multiplies two children per partition; partition {wide} of region "
                                 f"{region_graph.partitions[wide].parent} has {n}: use layer='cp' (any number of children)")
        self.region_graph = region_graph
        self.leaf = leaf
        self.num_vars = region_graph.num_vars
        self.num_sums, self.num_leaves, self.num_classes = num_sums, num_leaves, num_classes
        self.validate_args = validate_args
        self.layer, self.project_leaves = layer, project_leaves
        compiled = compile_circuit(region_graph, leaf, num_sums, num_leaves, num_classes, layer, project_leaves)
        self.leaf_layer = compiled.leaf_layer
        self.sum_layers = nn.ModuleList([lv.product for lv in compiled.levels])
        self.mixing_layers = nn.ModuleList([lv.mixing for lv in compiled.levels if lv.mixing is not None])
        self.root_sum = compiled.root_sum
        self._levels = tuple(compiled.levels)
        self._leaf_regions = compiled.leaf_regions
        self._chunks = compiled.chunks
        self._row = compiled.row
        self.num_rows = compiled.num_rows
        self.k_max = compiled.k_max
        self.register_buffer("_leaf_groups", self._leaf_product_groups(), persistent=False)

    def _leaf_product_groups(self) -> Tensor | None:
        """The leaf rows of each first-level product, ``(P, a)`` padded with ``R0``, where the two layers can be fused.

        That is when the first product layer is a CP layer whose children are
        all leaf vectors entered unprojected and no other layer reads the leaf
        block: its products are then sums of leaf log-densities, which
        :meth:`LeafLayerBase.grouped <spnkit.layers.LeafLayerBase.grouped>`
        computes without the leaf block. None otherwise.
        """
        if not self._levels or len(self._chunks[0]) != 1:
            return None
        readers = [lv.product for lv in self._levels[1:]] + ([self.root_sum] if self.root_sum is not None else [])
        if any(0 in layer.children_rows.blocks for layer in readers):
            return None
        first = self._levels[0].product
        if not isinstance(first, CPLayer) or first.num_slots or not first.direct_partition.shape[0]:
            return None
        R0 = len(self._leaf_regions)
        if int(first.direct_rows.max()) >= R0:
            return None
        counts = first.direct_ptr.diff()  # (P,) leaf children per product
        a = int(counts.max())
        groups = torch.full((first.num_partitions, a), R0, dtype=torch.long)
        member = torch.arange(first.direct_partition.shape[0]) - first.direct_ptr[:-1].repeat_interleave(counts)
        groups[first.direct_partition[first.direct_order], member] = first.direct_rows[first.direct_order]
        return groups

    # ----------------------------------------------------------- public face
    @property
    def levels(self) -> tuple[Level, ...]:
        """The compiled heights bottom-up: regions, partitions and layers of each (read-only)."""
        return self._levels

    @property
    def leaf_regions(self) -> tuple[int, ...]:
        """The region of each row of the leaf layer (its parameters ``(R0, n, K)`` and ``var_index`` follow this order)."""
        return self._leaf_regions

    def row_of(self, region: int) -> int:
        """The buffer row of a region's vector (see :mod:`spnkit.layers`)."""
        return self._row[region]

    @property
    def layers(self) -> list[nn.Module]:
        """Every layer bottom-up: the leaf layer, per height a product layer and possibly a mixing layer, then the root sums (CP)."""
        out: list[nn.Module] = [self.leaf_layer]
        for lv in self._levels:
            out.append(lv.product)
            if lv.mixing is not None:
                out.append(lv.mixing)
        if self.root_sum is not None:
            out.append(self.root_sum)
        return out

    @property
    def weighted_layers(self) -> list[SumWeights]:
        """The layers holding sum weights, in the order of :attr:`CircuitParams.log_weights <spnkit.evidence.CircuitParams.log_weights>`."""
        return [m for m in self.layers if isinstance(m, SumWeights)]

    @property
    def dtype(self) -> torch.dtype:
        return cast(SumWeights, self.sum_layers[0]).logits.dtype

    @property
    def device(self) -> torch.device:
        return self.leaf_layer.var_index.device

    def params(self) -> CircuitParams:
        """The current parameters in the form :meth:`upward` takes (tensors that share the graph with the module's parameters)."""
        return CircuitParams(self.leaf_layer.natural(), tuple(m.log_weights() for m in self.weighted_layers))

    def prepare(self, x: Tensor, marginalized: Tensor | None = None, name: str = "x") -> Evidence:
        """Validate ``x`` and its mask once: the :class:`~spnkit.evidence.Evidence` that :meth:`upward` takes.

        Args:
            x: ``(B, D)`` values; fully marginalized entries may hold anything, NaN included.
            marginalized: ``(B, D)`` bool (True = unobserved) or float in [0, 1]; None = all observed.
            name: what to call ``x`` in error messages.

        Raises:
            ValueError: one line saying what was expected.
        """
        return validate(x, marginalized, num_vars=self.num_vars, dtype=self.dtype, device=self.device, leaf=self.leaf,
                        check_values=self.validate_args, name=name)

    def upward(self, evidence: Evidence, *, mode: str = "sum", params: CircuitParams | None = None,
               leaf_grad: bool = False, root_only: bool = False) -> Trace:
        """One bottom-up pass over prepared evidence.

        Args:
            evidence: from :meth:`prepare` (or a slice of it).
            mode: "sum" (log-likelihood) or "max" (max-product).
            params: parameters to use instead of the module's own (``"sum"`` mode only).
            leaf_grad: compute the leaf layer without a graph to its parameters
                and make its output ``trace.leaf`` a tensor that requires grad
                (``"sum"`` mode): differentiating the summed root log-likelihood
                by it gives each leaf component's posterior probability of
                lying in a sample's induced tree.
            root_only: only ``trace.root`` is wanted (a log-likelihood, a
                gradient of it): the trace comes back without blocks, parts and
                leaf values, and where the first product layer multiplies
                unprojected leaf vectors, leaf and product layer are computed
                as one (the leaf block is never built).

        Returns:
            the :class:`~spnkit.evidence.Trace`; ``trace.root`` is ``(B, num_classes)``.
        """
        if mode not in ("sum", "max"):
            raise ValueError(f"mode must be 'sum' or 'max', got {mode!r}")
        if (params is not None or leaf_grad) and mode != "sum":
            raise ValueError("params and leaf_grad are taken by the sum pass only")
        if leaf_grad and root_only:
            raise ValueError("leaf_grad returns the leaf values, which root_only leaves out")
        x, w = evidence.leaf_input()
        weights = None
        if params is not None and params.log_weights is not None:
            if len(params.log_weights) != len(self.weighted_layers):
                raise ValueError(f"params.log_weights has {len(params.log_weights)} tensors; this circuit has {len(self.weighted_layers)} sum layers")
            weights = iter(params.log_weights)
        blocks: list[Tensor] = []  # batch-fastest (rows, K_max, B) chunks of the blocks
        groups = self._leaf_groups if root_only and mode == "sum" else None  # leaf and first product layer as one
        fused = groups is not None
        leaf: Tensor | None = None
        leaf_natural = None if params is None else params.leaf_natural
        if fused:
            blocks.append(x.new_empty(0))  # the leaf block, never read
        elif mode == "sum":
            with torch.set_grad_enabled(torch.is_grad_enabled() and not leaf_grad):
                leaf = self.leaf_layer(x, w, leaf_natural, finite=evidence.finite)  # (R0, B, K_leaf)
            if leaf_grad:
                leaf = leaf.detach().requires_grad_()
        else:
            leaf = self.leaf_layer.forward_max(x, w)
        if leaf is not None:
            self._add_block(blocks, self._pad_t(leaf), 0)
        parts: list[Tensor] = []
        keep_top = self.root_sum is not None
        out = x  # replaced by the first level's output
        for i, lv in enumerate(self._levels):
            if groups is not None and i == 0:
                part = self.leaf_layer.grouped(x, w, groups, leaf_natural, finite=evidence.finite)  # (P, B, K_out)
                if weights is not None:
                    next(weights)  # the first layer's (empty) weights
            elif mode == "sum":
                part = lv.product(blocks, None if weights is None else next(weights))  # (P, B, K_out)
            else:
                part = lv.product.forward_max(blocks)
            parts.append(part)
            if lv.mixing is None:
                out = part
            elif mode == "sum":
                out = lv.mixing(part, None if weights is None else next(weights))  # (R_h, B, K_out)
            else:
                out = lv.mixing.forward_max(part)
            if i + 1 < len(self._levels) or keep_top:
                self._add_block(blocks, self._pad_t(out), i + 1)
        if self.root_sum is not None:
            if mode == "sum":
                out = self.root_sum(blocks, None if weights is None else next(weights))  # (1, B, C)
            else:
                out = self.root_sum.forward_max(blocks)
        if root_only:
            return Trace(blocks=(), parts=(), root=out[0])
        return Trace(blocks=tuple(blocks), parts=tuple(parts), root=out[0], leaf=leaf)

    def _add_block(self, blocks: list[Tensor], block: Tensor, index: int) -> None:
        """Append block ``index`` (``(rows, K_max, B)``) to ``blocks`` as its chunks (views; one per reading layer)."""
        sizes = self._chunks[index]
        if len(sizes) == 1:
            blocks.append(block)
        else:
            blocks.extend(torch.split(block, sizes))

    def _pad_t(self, v: Tensor) -> Tensor:
        """Region vectors ``(R, B, K)`` to batch-fastest block rows ``(R, K_max, B)``, padded with ``-inf``."""
        v = v.transpose(1, 2)  # (R, K, B)
        if v.shape[1] >= self.k_max:
            return v
        fill = v.new_full((v.shape[0], self.k_max - v.shape[1], v.shape[2]), -torch.inf)
        return torch.cat([v, fill], dim=1)

    def _out(self, root: Tensor) -> Tensor:
        return root[:, 0] if self.num_classes == 1 else root

    # -------------------------------------------------------------- queries
    def log_prob(self, x: Tensor, marginalized: Tensor | None = None) -> Tensor:
        """Log-density (or log-mass) of each sample, with masked entries integrated out.

        Args:
            x: ``(B, D)`` values. Entries that are fully marginalized may hold
                anything, NaN included.
            marginalized: ``(B, D)`` bool (True = unobserved, integrated out
                exactly) or float in ``[0, 1]`` (soft evidence: each factor's
                log-density is weighted by ``1 - m``); None = all observed.

        Returns:
            ``(B,)``, or ``(B, num_classes)`` when ``num_classes > 1``.
        """
        return self._out(self.upward(self.prepare(x, marginalized), root_only=True).root)

    def forward(self, x: Tensor, marginalized: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, marginalized)

    def conditional_log_prob(self, x: Tensor, query: Tensor, marginalized: Tensor | None = None) -> Tensor:
        """``log p(x_query | x_evidence)``, evidence = entries neither queried nor marginalized.

        Args:
            x: ``(B, D)``.
            query: ``(B, D)`` bool, the entries whose conditional density is wanted.
            marginalized: ``(B, D)`` bool, entries integrated out in both terms.

        Returns:
            ``(B,)`` or ``(B, num_classes)``.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor of shape (batch, {self.num_vars}), got {type(x).__name__}")
        if not isinstance(query, Tensor) or query.dtype != torch.bool or query.shape != x.shape:
            raise ValueError(f"query must be a bool tensor of the shape of x, {tuple(x.shape)}")
        if marginalized is not None and (not isinstance(marginalized, Tensor) or marginalized.dtype != torch.bool or marginalized.shape != x.shape):
            raise ValueError(f"marginalized must be None or a bool tensor of the shape of x, {tuple(x.shape)} (soft masks have no conditional here)")
        hidden = query if marginalized is None else (query | marginalized.bool())
        joint = self.log_prob(x, marginalized)
        return joint - self.log_prob(x, hidden)

    def _root_choice(self, batch: int, which: int | Tensor | None) -> Tensor | None:
        """The given root sum per sample ``(B,)``, validated; None when the posterior is to choose."""
        return root_choice(which, batch, self.num_classes, self.device)

    def sample(
        self,
        num_samples: int | None = None,
        *,
        evidence: Tensor | None = None,
        marginalized: Tensor | None = None,
        root: int | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Ancestral samples, or samples of unobserved entries given the observed ones.

        With ``evidence``, the unobserved entries (``marginalized`` > 0) are drawn
        from their exact conditional given the observed ones; observed entries
        are returned unchanged. Soft masks (0 < m < 1) condition on weighted
        evidence and the entry is redrawn.

        Args:
            num_samples: number of unconditional samples (without ``evidence``).
            evidence: ``(B, D)`` values.
            marginalized: ``(B, D)`` mask of the entries to draw (default: all).
            root: which root sum to sample from when ``num_classes > 1``: an int
                or ``(B,)`` tensor; None draws the class from its posterior
                under a uniform class prior.
            generator: random number generator for reproducible draws.

        Returns:
            ``(num_samples, D)`` or ``(B, D)``.
        """
        if evidence is None:
            if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
                raise ValueError(f"num_samples must be a positive int when no evidence is given, got {num_samples!r}")
            if marginalized is not None:
                raise ValueError("marginalized needs evidence; pass evidence=x as well")
            evidence = torch.zeros(num_samples, self.num_vars, dtype=self.dtype, device=self.device)
            marginalized = torch.ones_like(evidence, dtype=torch.bool)
        elif num_samples is not None:
            raise ValueError("give either num_samples or evidence, not both")
        elif marginalized is None and isinstance(evidence, Tensor):
            marginalized = torch.ones(evidence.shape, dtype=torch.bool, device=evidence.device)
        x, m = self.prepare(evidence, marginalized, "evidence").float_input()
        return backtrack.complete(self, x, m, False, self._root_choice(x.shape[0], root), generator)[0]

    @overload
    def mpe(self, x: Tensor, marginalized: Tensor | None = ..., *, root: int | Tensor | None = ...,
            return_value: Literal[False] = ..., keep_observed: bool = ...) -> Tensor: ...

    @overload
    def mpe(self, x: Tensor, marginalized: Tensor | None = ..., *, root: int | Tensor | None = ...,
            return_value: Literal[True], keep_observed: bool = ...) -> tuple[Tensor, Tensor]: ...

    def mpe(
        self,
        x: Tensor,
        marginalized: Tensor | None = None,
        *,
        root: int | Tensor | None = None,
        return_value: bool = False,
        keep_observed: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Most probable completion of the unobserved entries, by max-product and backtracking.

        This is the exact maximum of the circuit *jointly with its sum nodes'
        latent choices* (Viterbi): the best single induced tree and its best
        completion. Where the circuit is deterministic (at most one child of a
        sum is non-zero for any input) it equals the true MPE; otherwise it is
        the standard approximation. Observed entries are returned unchanged;
        entries with ``m > 0`` are filled.

        Args:
            x: ``(B, D)``; unobserved entries may hold anything.
            marginalized: ``(B, D)`` mask (default: nothing observed).
            root: root sum to maximize when ``num_classes > 1`` (None: the best one).
            return_value: also return the max-product log-value ``(B,)``, which is
                at most ``log_prob`` of the returned completion.
            keep_observed: False returns, for every entry, the mode of the leaf
                that the best induced tree chose for it: a reconstruction of the
                observed entries as well as a completion of the unobserved ones.

        Returns:
            ``(B, D)`` completions; with ``return_value=True`` the pair (completions, values).
        """
        if marginalized is None:
            marginalized = torch.ones(x.shape, dtype=torch.bool, device=x.device) if isinstance(x, Tensor) else None
        xs, m = self.prepare(x, marginalized).float_input()
        out, value = backtrack.complete(self, xs, m, True, self._root_choice(xs.shape[0], root), None, keep_observed)
        return (out, value) if return_value else out

    @overload
    def expectation(self, x: Tensor, marginalized: Tensor | None = ..., *, variance: Literal[False] = ...,
                    root: int | Tensor | None = ...) -> Tensor: ...

    @overload
    def expectation(self, x: Tensor, marginalized: Tensor | None = ..., *, variance: Literal[True],
                    root: int | Tensor | None = ...) -> tuple[Tensor, Tensor]: ...

    def expectation(self, x: Tensor, marginalized: Tensor | None = None, *, variance: bool = False,
                    root: int | Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """``E[x_hidden | x_observed]`` per sample, in closed form (one upward and one backward pass).

        The mean of the conditional distribution, what imputation and
        regression want (sampling gives draws of it, :meth:`mpe` its most
        probable completion). See :func:`spnkit.expectation.expectation`.

        Args:
            x: ``(B, D)``; hidden entries may hold anything, NaN included.
            marginalized: ``(B, D)`` bool, True = hidden (a float mask of 0s and 1s is taken too); None: nothing hidden.
            variance: also return the conditional variance (0 at observed entries).
            root: with ``num_classes > 1``: None mixes the class roots under a
                uniform prior; an int or ``(B,)`` tensor conditions on that class.

        Returns:
            ``(B, D)`` with observed entries unchanged, or ``(mean, variance)``.
        """
        from .expectation import expectation

        return expectation(self, x, marginalized, variance=variance, root=root)

    def save(self, path: str | os.PathLike) -> None:
        """Write the structure and parameters to ``path`` (see :func:`spnkit.io.save`; read back with ``spnkit.load``)."""
        from .io import save

        save(self, path)

    # ------------------------------------------------------------- validity
    def check_valid(self) -> None:
        """Check the compiled circuit, independently of the region graph's own check.

        Scopes are recomputed from the compiled index tensors, bottom-up: every
        product's children must have disjoint scopes (decomposable), every
        partition mixed into a region must have the region's scope (smooth), and
        the root must cover every variable once.

        Raises:
            InvalidStructureError: naming the offending height and row.
        """
        check_compiled(self)

    def to_networkx(self) -> nx.DiGraph:
        """Node-level graph of the circuit.

        Nodes: ``("leaf", region, k)`` and ``("sum", region, k)``; Tucker layers add
        ``("product", partition, i, j)`` (the outer product of the two children's
        entries) and, for regions with several partitions, ``("psum", partition, k)``
        (a sum of one partition's products, mixed by the region's sums); CP layers
        add ``("product", partition, k)`` (entry ``k`` of the partition's vector)
        and ``("proj", partition, slot, k)`` (the projection sums of one child),
        and their root sums are ``("sum", "root", c)``. Attributes: ``kind`` in
        {"sum", "product", "leaf"}, ``scope`` (tuple of variables), ``region`` /
        ``partition`` indices. Sum edges carry ``weight`` (the normalized weight).
        Edges point from a node to its children. Root sums have ``root=True``.
        """
        return node_graph(self)

    def summary(self, batch_size: int = 1):  # -> spnkit.summary.Summary
        """Table of layers and effective parameters; see :func:`spnkit.summary.summary`."""
        from .summary import summary

        return summary(self, batch_size)

    def extra_repr(self) -> str:
        return (
            f"num_vars={self.num_vars}, leaf={self.leaf}, layer={self.layer!r}, num_leaves={self.num_leaves}, "
            f"num_sums={self.num_sums}, num_classes={self.num_classes}, levels={len(self._levels)}"
        )
