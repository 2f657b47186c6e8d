"""The compiled circuit: :class:`SPN`, its queries and its validity check.

A region graph is compiled into a leaf layer and, for each height of the graph,
one :class:`~spnkit.layers.ProductSumLayer` (the partitions of the regions at
that height) plus, where regions have several partitions, one
:class:`~spnkit.layers.MixingLayer`. Each region of the graph becomes a vector
of ``K`` nodes: ``num_leaves`` leaf distributions for leaf regions,
``num_sums`` sums for inner regions and ``num_classes`` sums for the root.

Queries take the mask as an argument (``marginalized``; True or 1.0 =
unobserved, integrated out), never as state.

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

from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor, nn

from .layers import LeafLayer, MixingLayer, ProductSumLayer
from .leaves import Leaf
from .region_graph import InvalidStructureError, RegionGraph

__all__ = ["SPN"]


@dataclass
class _Level:
    """Compiled bookkeeping of one height of the region graph."""

    regions: list[int]  # region indices at this height, in buffer-row order
    start: int  # buffer row of the first region
    partitions: list[int]  # partition indices, in layer order
    sums: ProductSumLayer
    mixing: MixingLayer | None
    source: int | None = None  # block of the upward pass holding every child row (0: leaves, j: height level j-1), None if several
    source_start: int = 0  # buffer row where that block starts


@dataclass
class _Trace:
    """Values of an upward pass kept for the downward pass."""

    blocks: list[Tensor]  # batch-fastest (rows, K_max, B) blocks of the buffer: leaf rows, then each level's regions below the root
    parts: list[Tensor]  # per level, partition outputs (P, B, K_out)
    root: Tensor  # (B, C)

    @property
    def buf(self) -> Tensor:
        """``(rows, B, K_max)``, every region vector below the root."""
        return torch.cat(self.blocks).transpose(1, 2)


class SPN(nn.Module):
    """A sum-product network compiled from a region graph into batched tensor layers.

    Args:
        region_graph: the structure; it must be valid and have binary partitions.
        leaf: the leaf family, e.g. ``Normal(min_var=0.1, max_var=1.0)``.
        num_sums: ``K`` sum nodes per inner region.
        num_leaves: leaf distributions per leaf region.
        num_classes: root sums; more than one gives class-conditional densities.
        validate_args: check inputs of the public queries (shapes, NaN, support).
            Checks synchronize with the device; turn them off in a tuned CUDA loop.

    Example:
        >>> import torch, spnkit
        >>> rg = spnkit.RegionGraph.poon_domingos(height=4, width=4, delta=2)
        >>> spn = spnkit.SPN(rg, leaf=spnkit.Normal(0.1, 1.0), num_sums=2, num_leaves=2, num_classes=3)
        >>> spn.log_prob(torch.rand(5, 16)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        region_graph: RegionGraph,
        leaf: Leaf,
        num_sums: int = 10,
        num_leaves: int = 10,
        num_classes: int = 1,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("num_sums", num_sums), ("num_leaves", num_leaves), ("num_classes", num_classes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(leaf, Leaf):
            raise ValueError(f"leaf must be a spnkit leaf family such as spnkit.Normal(), got {leaf!r}")
        if not isinstance(region_graph, RegionGraph):
            raise ValueError(f"region_graph must be a spnkit.RegionGraph, got {type(region_graph).__name__}")
        region_graph.check_valid()
        if not region_graph.partitions:
            raise ValueError("the region graph has no partitions; a circuit needs at least one product layer")
        arity = {len(p.children) for p in region_graph.partitions}
        if arity != {2}:
            raise ValueError(f"spnkit compiles binary partitions only; this graph has partitions with {sorted(arity)} children")
        self.region_graph = region_graph
        self.leaf = leaf
        self.num_vars = region_graph.num_vars
        self.num_sums, self.num_leaves, self.num_classes = num_sums, num_leaves, num_classes
        self.validate_args = validate_args
        self._compile()

    # ----------------------------------------------------------- compilation
    def _compile(self) -> None:
        rg = self.region_graph
        heights = rg.heights
        top = heights[rg.root]
        leaves = list(rg.leaf_regions)
        self.leaf_layer = LeafLayer(self.leaf, [rg.regions[i] for i in leaves], self.num_vars, self.num_leaves)
        row = {r: i for i, r in enumerate(leaves)}
        row_k = [self.num_leaves] * len(leaves)  # entries of each buffer row
        self.k_max = max(self.num_leaves, self.num_sums)
        by_height: list[list[int]] = [[] for _ in range(top + 1)]
        for r, h in enumerate(heights):
            by_height[h].append(r)
        levels: list[_Level] = []
        sums, mixes = nn.ModuleList(), nn.ModuleList()
        spans = [(0, len(leaves))]  # buffer rows of each block of the upward pass
        for h in range(1, top + 1):
            regions = by_height[h]
            if not regions:
                continue
            parts_per_region = [list(rg.partitions_of[r]) for r in regions]
            partitions = [p for ps in parts_per_region for p in ps]
            kids = torch.tensor([[row[c] for c in rg.partitions[p].children] for p in partitions], dtype=torch.long)
            child_k = torch.tensor(row_k)[kids]  # (P, 2)
            k_in = int(child_k.max())
            valid = None
            if int(child_k.min()) < k_in:
                ar = torch.arange(k_in)
                valid = (ar.view(1, -1, 1) < child_k[:, 0].view(-1, 1, 1)) & (ar.view(1, 1, -1) < child_k[:, 1].view(-1, 1, 1))
            k_out = self.num_classes if h == top else self.num_sums
            layer = ProductSumLayer(kids[:, 0].contiguous(), kids[:, 1].contiguous(), k_in, k_out, valid)
            mixing = None
            if any(len(ps) > 1 for ps in parts_per_region):
                p_max = max(len(ps) for ps in parts_per_region)
                table = torch.full((len(regions), p_max), -1, dtype=torch.long)
                pos = 0
                for i, ps in enumerate(parts_per_region):
                    table[i, : len(ps)] = torch.arange(pos, pos + len(ps))
                    pos += len(ps)
                mixing = MixingLayer(table, k_out)
                mixes.append(mixing)
            lo, hi = int(kids.min()), int(kids.max())
            source = next((j for j, (a, b) in enumerate(spans) if a <= lo and hi < b), None)
            start = len(row_k)
            for i, r in enumerate(regions):
                row[r] = start + i
                row_k.append(k_out)
            spans.append((start, len(row_k)))
            sums.append(layer)
            levels.append(_Level(regions, start, partitions, layer, mixing, source, 0 if source is None else spans[source][0]))
        self.sum_layers, self.mixing_layers = sums, mixes
        self._levels = levels
        self._row = row
        self.num_rows = len(row_k)

    @property
    def layers(self) -> list[nn.Module]:
        """The layers bottom-up: the leaf layer, then per height a sum layer and possibly a mixing layer."""
        out: list[nn.Module] = [self.leaf_layer]
        for lv in self._levels:
            out.append(lv.sums)
            if lv.mixing is not None:
                out.append(lv.mixing)
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self.sum_layers[0].logits.dtype

    @property
    def device(self) -> torch.device:
        return self.sum_layers[0].logits.device

    # ------------------------------------------------------------ validation
    def _check(self, x: Tensor, marginalized: Tensor | None, name: str = "x") -> tuple[Tensor, Tensor | None, bool]:
        """Validate ``x`` and the mask.

        Returns ``x`` in the module's dtype, the mask (None; bool as given; a
        float mask in the module's dtype) and whether validation found every
        entry of ``x`` finite (False when not validated: the check synchronizes
        with the device). Under a float mask ``x`` is zeroed where the mask is
        1; under a bool mask it is not zeroed (the caller's layout does it).
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (batch, {self.num_vars}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.num_vars or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape (batch, {self.num_vars}), got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"{name} is on {x.device} but the SPN is on {self.device}; move one of them")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must be a real float or integer tensor, got {x.dtype}")
        m = None
        if marginalized is not None:
            if not isinstance(marginalized, Tensor):
                raise ValueError(f"marginalized must be a torch.Tensor (bool, or float in [0, 1]), got {type(marginalized).__name__}")
            if marginalized.shape != x.shape:
                raise ValueError(f"marginalized must have the shape of {name}, {tuple(x.shape)}; got {tuple(marginalized.shape)} (no broadcasting)")
            if marginalized.device != x.device:
                raise ValueError(f"marginalized is on {marginalized.device} but {name} is on {x.device}")
            if marginalized.dtype == torch.bool:
                m = marginalized
            elif marginalized.is_floating_point():
                if self.validate_args and bool(((marginalized < 0) | (marginalized > 1) | torch.isnan(marginalized)).any()):
                    raise ValueError("a float mask must lie in [0, 1] (1 = unobserved); got values outside or NaN")
                m = marginalized.to(self.dtype)
            else:
                raise ValueError(f"marginalized must be bool or float in [0, 1], got dtype {marginalized.dtype}")
        x = x.to(self.dtype)
        all_finite = self.validate_args and self._validate_values(x, m, name)
        if m is not None and m.dtype != torch.bool:  # unobserved values never enter the arithmetic
            x = x.masked_fill(m >= 1, 0.0)
        return x, m, all_finite

    def _validate_values(self, x: Tensor, m: Tensor | None, name: str) -> bool:
        """Raise on NaN/inf or out-of-support values at observed entries; return whether every entry is finite."""
        # one reduction in the common case: a sum is finite only if every entry is (NaN and inf
        # propagate; a finite sum that overflows takes the exact check)
        all_finite = bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
        observed = None if m is None else m < 1  # bool m: True (unobserved) < 1 is False
        if not all_finite:
            bad = ~torch.isfinite(x) if observed is None else observed & ~torch.isfinite(x)
            if bool(bad.any()):
                raise ValueError(f"{name} has NaN or inf at {int(bad.sum())} observed entries; mark missing entries in `marginalized` instead")
        if self.leaf.restricted_support:
            msg = self.leaf.support_error(x, observed)
            if msg is not None:
                raise ValueError(msg)
        return all_finite

    def _prepare(self, x: Tensor, marginalized: Tensor | None, name: str = "x") -> tuple[Tensor, Tensor]:
        """:meth:`_check`, then ``x`` zeroed where fully unobserved and the mask as float ``(B, D)`` (zeros when None).

        For the queries that work on a float mask (sampling, MPE, learning);
        :meth:`log_prob` passes a bool mask on to the leaf layer instead.
        """
        x, m, finite = self._check(x, marginalized, name)
        if m is None:
            return x, torch.zeros(x.shape, dtype=self.dtype, device=x.device)
        if m.dtype != torch.bool:
            return x, m
        mf = m.to(self.dtype)
        # x - x m: the same zeros in one arithmetic pass where every value is finite (a bool masked_fill took 3x as long)
        return (torch.addcmul(x, x, mf, value=-1.0) if finite else x.masked_fill(m, 0.0)), mf

    def _to_leaf_input(self, x: Tensor, m: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(B, D)`` values and mask to the leaf layer's values and evidence weights ``1 - m``, both ``(B, D)`` (None: all observed).

        A bool mask (as :meth:`_check` returns it) becomes the bool observed
        entries, ``~m``: the leaf layer's hard-evidence input.
        """
        if m is None:
            return x, None
        return x, (~m if m.dtype == torch.bool else 1 - m)

    # --------------------------------------------------------------- upward
    def _upward(
        self, x: Tensor, w: Tensor, mode: str = "sum", params: dict[str, Tensor] | None = None, finite: bool = False
    ) -> _Trace:
        """One bottom-up pass. ``mode`` is "sum" (log-likelihood) or "max" (max-product).

        ``params`` may supply ``"eta"`` and ``"sums.i"`` / ``"mix.i"`` log-weights
        (EM passes tensors that require grad to read expected counts).
        ``finite``: every entry of ``x`` is known finite (see :meth:`LeafLayer.forward`).
        """
        params = params or {}
        if mode == "sum":
            leaf = self.leaf_layer(x, w, params.get("eta"), finite=finite)  # (R0, B, K_leaf)
        else:
            leaf = self.leaf_layer.forward_max(x, w)  # (R0, B, K_leaf)
        # the buffer, batch-fastest (see spnkit.layers), as blocks: a level whose children lie in one
        # block (every level of a RAT-SPN) reads only that block, so the buffer is never concatenated
        blocks = [self._pad_t(leaf)]  # (rows, K_max, B) each
        parts: list[Tensor] = []
        out = leaf
        for i, lv in enumerate(self._levels):
            if lv.source is None:
                src, start = torch.cat(blocks), 0
            else:
                src, start = blocks[lv.source], lv.source_start
            buf = src.transpose(1, 2)  # (rows, B, K_max)
            if mode == "sum":
                part = lv.sums(buf, params.get(f"sums.{i}"), start)  # (P, B, K_out)
            else:
                part = lv.sums.forward_max(buf, start)
            parts.append(part)
            if lv.mixing is None:
                out = part
            elif mode == "sum":
                out = lv.mixing(part, params.get(f"mix.{i}"))  # (R_h, B, K_out)
            else:
                out = lv.mixing.forward_max(part)
            if i + 1 < len(self._levels):
                blocks.append(self._pad_t(out))
        return _Trace(blocks=blocks, parts=parts, root=out[0])

    def _pad_t(self, v: Tensor) -> Tensor:
        """Region vectors ``(R, B, K)`` to batch-fastest buffer rows ``(R, K_max, B)``, padded with ``-inf``."""
        v = v.transpose(1, 2)  # (R, K, B)
        if v.shape[1] == self.k_max:
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
        x, m, finite = self._check(x, marginalized)
        return self._out(self._upward(*self._to_leaf_input(x, m), finite=finite).root)

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

    def _root_choice(self, root: Tensor, batch: int, which: int | Tensor | None, generator, greedy: bool) -> Tensor:
        """Index of the root sum per sample ``(B,)``: given, or drawn from the posterior over classes."""
        if which is None:
            if self.num_classes == 1:
                return torch.zeros(batch, dtype=torch.long, device=root.device)
            return self._choose(root, -1, generator, greedy)  # uniform class prior
        ok = hasattr(type(which), "__index__") and not isinstance(which, (bool, Tensor))  # int, numpy int
        if isinstance(which, Tensor):
            ok = not (which.is_floating_point() or which.is_complex() or which.dtype == torch.bool) and which.shape in ((), (batch,))
        if not ok:
            raise ValueError(f"root must be None, an int or an integer tensor of shape () or ({batch},), got {which!r}")
        which = torch.as_tensor(which, device=root.device, dtype=torch.long).expand(batch)
        if bool(((which < 0) | (which >= self.num_classes)).any()):
            raise ValueError(f"root must index one of the {self.num_classes} root sums")
        return which

    @staticmethod
    def _choose(logits: Tensor, dim: int, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Argmax (greedy) or a draw (Gumbel-max) along ``dim``."""
        if not greedy:
            u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
            logits = logits - torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return logits.argmax(dim)

    @torch.no_grad()
    def _downward(self, trace: _Trace | None, choice_root: Tensor, greedy: bool, generator) -> Tensor:
        """Backtrack from the root: the chosen node per buffer row and sample, ``(rows, B)``, -1 if unused.

        Only the (region, sample) pairs on a chosen path are scored: per level,
        the ``A`` active pairs gather their children's values and the chosen
        sum's weights (``(A, I*J)`` scores), choose, and scatter the choices to
        the children rows. ``trace=None`` backtracks through the prior (every
        value 0: nothing observed).
        """
        B = choice_root.shape[0]
        chosen = torch.full((self.num_rows, B), -1, dtype=torch.long, device=choice_root.device)
        chosen[self.num_rows - 1] = choice_root
        buf = None if trace is None else trace.buf
        for i in reversed(range(len(self._levels))):
            lv = self._levels[i]
            c = chosen[lv.start : lv.start + len(lv.regions)]  # (R_h, B)
            reg, smp = torch.nonzero(c >= 0, as_tuple=True)  # (A,) active pairs
            k = c[reg, smp]  # (A,) chosen sums
            if lv.mixing is None:
                part = reg  # partition p belongs to region p
            else:
                scores = lv.mixing.pair_scores(None if trace is None else trace.parts[i], reg, smp, k)  # (A, P_max)
                part = lv.mixing.table[reg, self._choose(scores, 1, generator, greedy)]  # (A,)
            ij = self._choose(lv.sums.pair_scores(buf, part, smp, k), 1, generator, greedy)  # (A,)
            chosen[lv.sums.left[part], smp] = ij // lv.sums.k_in
            chosen[lv.sums.right[part], smp] = ij % lv.sums.k_in
        return chosen[: self.leaf_layer.num_regions]  # (R0, B)

    @torch.no_grad()
    def _fill_leaves(self, leaf_choice: Tensor, greedy: bool, generator) -> Tensor:
        """Values of every variable from the chosen leaf components: ``(B, D)``; only the chosen leaves are drawn."""
        reg, smp = torch.nonzero(leaf_choice >= 0, as_tuple=True)  # (A,) leaf regions on the chosen trees
        params = self.leaf_layer.pair_params(reg, leaf_choice[reg, smp])  # each (A, n, ...)
        vals = self.leaf.mode(params) if greedy else self.leaf.sample(params, generator)  # (A, n)
        var = self.leaf_layer.var_index[reg]  # (A, n); padding slots point at column D
        out = vals.new_zeros(leaf_choice.shape[1], self.num_vars + 1)
        out[smp.unsqueeze(1).expand_as(var), var] = vals
        return out[:, : self.num_vars]  # (B, D)

    @torch.no_grad()
    def _complete(self, x: Tensor, m: Tensor, greedy: bool, root, generator, keep_observed: bool = True) -> tuple[Tensor, Tensor]:
        if not greedy and bool((m >= 1).all()):  # nothing observed: the posterior is the prior, no upward pass
            trace, root_values = None, x.new_zeros(x.shape[0], self.num_classes)  # every value log 1 = 0
        else:
            trace = self._upward(*self._to_leaf_input(x, m), mode="max" if greedy else "sum")
            root_values = trace.root
        choice = self._root_choice(root_values, x.shape[0], root, generator, greedy)
        filled = self._fill_leaves(self._downward(trace, choice, greedy, generator), greedy, generator)
        value = torch.gather(root_values, 1, choice.view(-1, 1)).squeeze(1)
        return (torch.where(m > 0, filled, x) if keep_observed else filled), value

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
        x, m = self._prepare(evidence, marginalized, "evidence")
        return self._complete(x, m, False, root, generator)[0]

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
            ``(B, D)`` completions, and the values when ``return_value``.
        """
        if marginalized is None:
            marginalized = torch.ones(x.shape, dtype=torch.bool, device=x.device) if isinstance(x, Tensor) else None
        x, m = self._prepare(x, marginalized)
        out, value = self._complete(x, m, True, root, None, keep_observed)
        return (out, value) if return_value else out

    def save(self, path) -> None:
        """Write the structure and parameters to ``path`` (see :func:`spnkit.io.save`; read back with ``spnkit.load``)."""
        from .io import save  # noqa: PLC0415 (io imports this module)

        save(self, path)

    # ------------------------------------------------------------- validity
    def check_valid(self) -> None:
        """Check the compiled circuit, independently of the region graph's own check.

        Scopes are recomputed from the compiled index tensors, bottom-up: every
        product's two children must have disjoint scopes (decomposable), every
        partition mixed into a region must have the region's scope (smooth), and
        the root must cover every variable once.

        Raises:
            InvalidStructureError: naming the offending level and row.
        """
        self.region_graph.check_valid()
        D = self.num_vars
        idx = self.leaf_layer.var_index
        scopes: list[frozenset[int]] = []
        for r in range(idx.shape[0]):
            s = [int(v) for v in idx[r] if int(v) < D]
            if len(set(s)) != len(s):
                raise InvalidStructureError(f"leaf region row {r} lists a variable twice")
            scopes.append(frozenset(s))
        for h, lv in enumerate(self._levels):
            part_scopes = []
            for p, (a, b) in enumerate(zip(lv.sums.left.tolist(), lv.sums.right.tolist())):
                if scopes[a] & scopes[b]:
                    raise InvalidStructureError(f"level {h + 1}, product {p}: children rows {a}, {b} share variables")
                part_scopes.append(scopes[a] | scopes[b])
            if lv.mixing is None:
                region_scopes = part_scopes
            else:
                region_scopes = []
                for r, (row, ok) in enumerate(zip(lv.mixing.table.tolist(), lv.mixing.valid[..., 0].tolist())):
                    used = {part_scopes[p] for p, v in zip(row, ok) if v}
                    if len(used) != 1:
                        raise InvalidStructureError(f"level {h + 1}, region {lv.regions[r]}: its partitions have different scopes")
                    region_scopes.append(used.pop())
            for r, s in zip(lv.regions, region_scopes):
                if s != frozenset(self.region_graph.regions[r]):
                    raise InvalidStructureError(f"level {h + 1}: compiled scope of region {r} differs from the region graph")
            scopes.extend(region_scopes)
        if scopes[-1] != frozenset(range(D)):
            raise InvalidStructureError("the root does not cover every variable")

    # ------------------------------------------------------------- networkx
    def to_networkx(self) -> nx.DiGraph:
        """Node-level graph of the circuit.

        Nodes: ``("leaf", region, k)``, ``("sum", region, k)``, ``("product",
        partition, i, j)`` and, for regions with several partitions,
        ``("psum", partition, k)`` (a sum of one partition's products, mixed by
        the region's sums). Attributes: ``kind`` in {"sum", "product", "leaf"},
        ``scope`` (tuple of variables), ``region`` / ``partition`` indices. Sum
        edges carry ``weight`` (the normalized weight). Edges point from a node
        to its children. Root sums have ``root=True``.
        """
        rg = self.region_graph
        g = nx.DiGraph()
        g.graph["num_vars"] = self.num_vars
        for r in rg.leaf_regions:
            for k in range(self.num_leaves):
                g.add_node(("leaf", r, k), kind="leaf", scope=rg.regions[r], region=r)
        for lv in self._levels:
            w = lv.sums.weights().detach()  # (P, I*J, K_out)
            k_out, k_in = lv.sums.k_out, lv.sums.k_in
            mix_w = lv.mixing.log_weights().detach().exp() if lv.mixing is not None else None
            region_of = {p: r for r, pos in self._positions(lv).items() for p in pos}
            for pos, pj in enumerate(lv.partitions):
                part = rg.partitions[pj]
                a, b = part.children
                scope = rg.regions[part.parent]
                ka, kb = self._k_of(a), self._k_of(b)
                for i in range(ka):
                    for j in range(kb):
                        node = ("product", pj, i, j)
                        g.add_node(node, kind="product", scope=scope, partition=pj)
                        g.add_edge(node, self._node_of(a, i))
                        g.add_edge(node, self._node_of(b, j))
                r = region_of[pos]
                for k in range(k_out):
                    head = ("sum", r, k) if mix_w is None else ("psum", pj, k)
                    g.add_node(head, kind="sum", scope=scope, region=r, root=(r == rg.root and mix_w is None))
                    for i in range(ka):
                        for j in range(kb):
                            g.add_edge(head, ("product", pj, i, j), weight=float(w[pos, i * k_in + j, k]))
            if mix_w is not None:
                for ri, (r, pos) in enumerate(self._positions(lv).items()):
                    for k in range(k_out):
                        g.add_node(("sum", r, k), kind="sum", scope=rg.regions[r], region=r, root=(r == rg.root))
                        for slot, p in enumerate(pos):
                            g.add_edge(("sum", r, k), ("psum", lv.partitions[p], k), weight=float(mix_w[ri, slot, k]))
        return g

    def _positions(self, lv: _Level) -> dict[int, list[int]]:
        """Region -> positions of its partitions in the level's layer."""
        out: dict[int, list[int]] = {r: [] for r in lv.regions}
        parent = {pj: self.region_graph.partitions[pj].parent for pj in lv.partitions}
        for pos, pj in enumerate(lv.partitions):
            out[parent[pj]].append(pos)
        return out

    def _k_of(self, region: int) -> int:
        return self.num_leaves if region in self.region_graph.leaf_regions else self.num_sums

    def _node_of(self, region: int, k: int) -> tuple:
        return ("leaf", region, k) if region in self.region_graph.leaf_regions else ("sum", region, k)

    def summary(self, batch_size: int = 1):
        """Table of layers and effective parameters; see :func:`spnkit.summary.summary`."""
        from .summary import summary  # lazy: spnkit.summary imports the layers

        return summary(self, batch_size)

    def extra_repr(self) -> str:
        return (
            f"num_vars={self.num_vars}, leaf={self.leaf}, num_leaves={self.num_leaves}, "
            f"num_sums={self.num_sums}, num_classes={self.num_classes}, levels={len(self._levels)}"
        )
