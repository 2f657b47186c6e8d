"""The leaf layer: ``K`` factorized leaf distributions per leaf region, as one matrix product."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..leaves import Leaf, natural_to_layer
from .kernels import GatherMatmul
from .leaf_base import LeafLayerBase, Natural, sum_groups
from .leaf_kernels import GatherLeaf, GatherSoftmaxLeaf
from .leaf_kernels import WeightedStatistics as _WeightedStatistics

__all__ = ["LeafLayer", "GatherLeaf", "GatherSoftmaxLeaf"]


def _one_tensor(value: Natural) -> Tensor:
    """A factorized leaf layer's natural parameters (or counts): one tensor, never a tuple."""
    if isinstance(value, tuple):
        raise TypeError(f"a LeafLayer's natural parameters are one tensor, got a tuple of {len(value)}")
    return value


class LeafLayer(LeafLayerBase):
    """``K`` factorized leaf distributions for each leaf region, as one matrix product.

    A leaf region's log-density is linear in the statistics of its variables:
    ``sum_{d in scope} w_d <T(x_d), eta_{d,k}>``. The ``(batch, variables, K)``
    tensor of per-variable log-densities is never built. Two layouts compute
    the same numbers:

    * ``dense``: the natural parameters are scattered into a ``(S, D + 1, R*K)``
      matrix (zero where a variable is outside a region and in the padding
      row ``D``) and the statistics ``(S, D + 1, B)`` are multiplied by it:
      no gather, one batched GEMM over the statistics, but
      ``R*D / sum|scope|`` times the minimal work. Chosen when that factor is
      at most 2 (each variable lies in at least half the leaf regions, e.g.
      RAT-SPNs of depth 1), where the wasted multiply-adds cost about as much
      as a gather; at 4 (depth 2) the gather was 1.4-2.2x faster in fwd+bwd
      with a soft mask in five of six measured cases (D = 784 and 2500, K = 10
      and 20, 1 and 2 threads; 0.9x at D = 784, K = 10, 2 threads).
    * ``gather``: the statistics ``(D + 1, S, B)`` are gathered per region into
      ``(R, S*n, B)`` (in blocks, see :data:`CHUNK_BYTES`) and multiplied by
      ``(R, S*n, K)`` (transposed) in a batched matmul: the minimal work.

    Args:
        leaf: the leaf family.
        scopes: the variables of each leaf region.
        num_vars: number of variables ``D``.
        num_leaves: ``K``, distributions per leaf region.
        layout: "dense", "gather" or "auto".
    """

    slot_valid: Tensor

    def __init__(self, leaf: Leaf, scopes: list[tuple[int, ...]], num_vars: int, num_leaves: int, layout: str = "auto") -> None:
        super().__init__()
        self.leaf = leaf
        self.num_vars = num_vars
        self.num_leaves = num_leaves
        n_max = max(len(s) for s in scopes)
        index = torch.full((len(scopes), n_max), num_vars, dtype=torch.long)
        for r, scope in enumerate(scopes):  # structure compilation, not the forward pass
            index[r, : len(scope)] = torch.as_tensor(scope, dtype=torch.long)
        self.register_buffer("var_index", index, persistent=False)  # (R, n), padding = num_vars
        self.register_buffer("slot_valid", (index < num_vars).unsqueeze(-1).to(torch.get_default_dtype()), persistent=False)  # (R, n, 1)
        if layout == "auto":
            layout = "dense" if len(scopes) * num_vars <= 2 * sum(len(s) for s in scopes) else "gather"
        if layout not in ("dense", "gather"):
            raise ValueError(f"layout must be 'dense', 'gather' or 'auto', got {layout!r}")
        self.layout = layout
        # gather rows of the flat statistics (S * (D + 1), B): row s * (D + 1) + d holds statistic s of
        # variable d; slots statistic-major
        stat = torch.arange(leaf.num_stats + 1).view(1, -1, 1) * (num_vars + 1)
        rows = (stat + index.unsqueeze(1)).flatten(1)  # (R, (S + 1) * n); the first s * n columns address the first s statistics
        # tables for S - 1 (constant statistic as a bias), S (forward) and S + 1 (forward_max: the peak as one more statistic)
        for s in range(max(1, leaf.num_stats - 1), leaf.num_stats + 2):
            self.register_buffer(f"stat_rows_{s}", rows[:, : s * n_max].contiguous(), persistent=False)
        init = leaf.init_params((len(scopes), n_max, num_leaves), torch.get_default_dtype())
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})

    @property
    def num_regions(self) -> int:
        return self.var_index.shape[0]

    def param_dict(self) -> dict[str, Tensor]:
        return dict(self.params.items())

    def natural(self) -> Tensor:
        """Natural parameters ``(R, n, K, S)``."""
        return self.leaf.natural(self.param_dict())

    def _dense(self, coef: Tensor) -> Tensor:
        """Scatter per-slot coefficients ``(R, n, K, S)`` into ``(S, D + 1, R*K)``, zero outside each scope and in row ``D``.

        Row ``D`` meets the statistics' padding row: keeping both (rather than
        slicing the statistics) spares the backward pass a zero-filled copy of
        the ``(S, D + 1, B)`` gradient.
        """
        R, n, K, S = coef.shape
        D = self.num_vars
        vals = coef.permute(3, 0, 1, 2) * self.slot_valid  # (S, R, n, K); padding slots write 0 into row D
        dense = coef.new_zeros(S, D + 1, R, K)  # contiguous: a sliced view made the backward product 1.8x slower
        rows = torch.arange(R, device=coef.device).view(R, 1)
        dense[:, self.var_index, rows, :] = vals
        return dense.view(S, D + 1, R * K)

    def _observed_statistics(self, x: Tensor, observed: Tensor, finite: bool = False) -> Tensor:
        """Hard-evidence statistics ``(S, D + 1, B)`` from ``(B, D)`` values and bool observed entries, row ``D`` zero.

        The family writes from the transposed inputs: zeroing, weighting and the
        change to variable-major layout in one pass per statistic.
        """
        D, B = self.num_vars, x.shape[0]
        feats = x.new_empty(self.leaf.num_stats, D + 1, B)
        self.leaf.observed_statistics(x.t(), observed.t(), feats[:, :D], finite)
        feats[:, D] = 0.0
        return feats

    def _columns(self, v: Tensor) -> Tensor:
        """``(B, D)`` to variable-major ``(D + 1, B)`` with a zero row ``D``, the target of padding slots."""
        # cat, not slice assignment into an empty tensor: its backward is a view of the gradient, where
        # the assignment's made a zero-filled copy of it
        return torch.cat([v.t(), v.new_zeros(1, v.shape[0])])

    def _linear(self, feats: Tensor, coef: Tensor, bias: Tensor | None = None, groups: Tensor | None = None) -> Tensor:
        """``out[r, b, k] = sum_{d, s} feats[s, d, b] * coef[r, s * n + slot(d), k] (+ bias[r, k])``: ``(R, B, K)``, batch-fastest.

        ``feats`` ``(S, D + 1, B)`` are the weighted statistics, variable-major
        (built so from the transposed input: no copy of the ``S`` times larger
        statistics), with row ``D`` zero; ``coef (R, S * n, K)`` has the same
        ``S`` (the layout of :meth:`Leaf.layer_coefficients`). With ``groups``
        (see :meth:`grouped`) the sums of the groups' rows, ``(G, B, K)``: in
        the gather layout one product over each group's statistics and
        concatenated coefficients (:meth:`_merge`), without the rows.
        """
        R, K = coef.shape[0], coef.shape[2]
        S, D1, B = feats.shape
        n = coef.shape[1] // S
        if self.layout == "dense":
            dense = self._dense(coef.reshape(R, S, n, K).permute(0, 2, 3, 1))  # (S, D + 1, R*K)
            out = torch.bmm(dense.transpose(1, 2), feats).sum(0)  # (S, R*K, B) -> (R*K, B)
            if bias is not None:
                out = out + bias.reshape(R * K, 1)
            if groups is not None:
                return sum_groups(out.view(R, K, B), groups).transpose(1, 2)
            return out.view(R, K, B).transpose(1, 2)  # (R, B, K)
        index = getattr(self, f"stat_rows_{S}")  # (R, S*n): the first S statistics, statistic-major
        if groups is not None:
            coef, index, bias = self._merge(coef, index, bias, groups, S)
        return GatherMatmul.apply(feats.reshape(-1, B)[: S * D1], coef, index, bias).transpose(1, 2)  # (R, K, B) -> (R, B, K)

    def _merge(self, coef: Tensor, index: Tensor, bias: Tensor | None, groups: Tensor, S: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Coefficients, statistic rows and biases of groups of regions, each group as one region over all their slots.

        ``coef (R, S * n, K)`` and ``index (R, S * n)`` become ``(G, S * a * n,
        K)`` and ``(G, S * a * n)`` (statistic-major, each statistic's slots
        group member by member), ``bias (R, K)`` the groups' sums ``(G, K)``.
        Padding members (row ``R``) read the zero statistic row ``D`` with
        coefficient and bias zero.
        """
        R, Sn, K = coef.shape
        G, a = groups.shape
        n = Sn // S
        coef = torch.cat([coef, coef.new_zeros(1, Sn, K)])[groups]  # (G, a, S*n, K)
        coef = coef.view(G, a, S, n, K).transpose(1, 2).reshape(G, S * a * n, K)
        index = torch.cat([index, index.new_full((1, Sn), self.num_vars)])[groups]  # (G, a, S*n)
        index = index.view(G, a, S, n).transpose(1, 2).reshape(G, S * a * n)
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros(1, K)])[groups].sum(1)  # (G, K)
        return coef, index, bias

    def forward(self, x: Tensor, w: Tensor | None, eta: Natural | None = None, finite: bool = False) -> Tensor:
        """Leaf log-densities ``(R, B, K)``; see :meth:`_forward` (the family's base measure added, where it has one)."""
        out = self._forward(x, w, None if eta is None else _one_tensor(eta), finite)
        return out if not self.leaf.has_base_measure else out + self._base_measure(x, w).unsqueeze(-1)

    def grouped(self, x: Tensor, w: Tensor | None, groups: Tensor, eta: Natural | None = None, finite: bool = False) -> Tensor:
        """Summed log-densities of groups of leaf regions ``(G, B, K)`` (see :meth:`LeafLayerBase.grouped`).

        In the gather layout each group is computed as one region over its
        members' slots: one matrix product over their statistics, and no
        ``(R, B, K)`` log-densities of the members.
        """
        out = self._forward(x, w, None if eta is None else _one_tensor(eta), finite, groups)
        return out if not self.leaf.has_base_measure else out + sum_groups(self._base_measure(x, w), groups).unsqueeze(-1)

    def _base_measure(self, x: Tensor, w: Tensor | None) -> Tensor:
        """Each leaf region's summed, evidence-weighted ``log h(x)``: ``(R, B)``."""
        leaf = self.leaf
        if w is None:
            h = leaf.log_base_measure(x)
        elif w.dtype == torch.bool:
            h = torch.where(w, leaf.log_base_measure(torch.where(w, x, 0.0)), 0.0)
        else:
            h = leaf.log_base_measure(x) * w
        return self._columns(h)[self.var_index].sum(1)  # (R, n, B) -> (R, B); padding slots read the zero row

    def _forward(self, x: Tensor, w: Tensor | None, eta: Tensor | None = None, finite: bool = False,
                 groups: Tensor | None = None) -> Tensor:
        """Leaf log-densities, or with ``groups`` their sums over groups of regions (see :meth:`grouped`).

        Args:
            x: values ``(B, D)``; unobserved entries hold 0 (with a float ``w``)
                or anything, NaN included (with a bool ``w``).
            w: evidence weights ``1 - m``, ``(B, D)``: float in ``[0, 1]``, or
                bool (True = observed: hard evidence, laid out in fewer passes);
                None: every entry observed.
            eta: natural parameters ``(R, n, K, S)``; computed from the layer's
                parameters when None (EM passes its own to read their gradient).
            finite: with a bool ``w``, every entry of ``x`` is known finite
                (validated), unobserved ones too: they may be zeroed by a
                multiplication, several times faster than a select.

        Returns:
            ``(R, B, K)``, or ``(G, B, K)`` with ``groups``.
        """
        if self.leaf.indexed:  # one-hot statistics: gather the log-probabilities instead
            out = self._indexed(x, w, eta, False)
            return out if groups is None else sum_groups(out.transpose(1, 2), groups).transpose(1, 2)
        hard = w is not None and w.dtype == torch.bool
        if w is not None and hard and x.requires_grad and torch.is_grad_enabled():  # differentiable in x: the weighted path
            x, w, hard = torch.where(w, x, 0.0), w.to(x.dtype), False
        # every weight 1 and a constant last statistic: its share is one bias per (region, component)
        split = w is None and self.leaf.constant_last
        if eta is None:
            coef, const = self.leaf.layer_coefficients(self.param_dict(), split)  # (R, S'*n, K), (R, n, K)
        else:
            coef, const = natural_to_layer(eta, split)
        if w is not None and hard:
            return self._linear(self._observed_statistics(x, w, finite), coef, None, groups)
        cols = self._columns(x)
        if w is None:
            feats = self.leaf.varying_statistics(cols) if split else self.leaf.statistics(cols)  # (S or S - 1, D + 1, B), a fresh tensor
            feats[:, self.num_vars] = 0.0  # the padding row (a constant statistic would be 1 there)
            if split:
                assert const is not None  # split: the constant statistic's coefficients come apart
                bias = torch.bmm(self.slot_valid.transpose(1, 2), const).squeeze(1)  # (R, K): padding slots excluded
                return self._linear(feats, coef, bias, groups)
            return self._linear(feats, coef, None, groups)
        return self._linear(_WeightedStatistics.apply(cols, self._columns(w), self.leaf), coef, None, groups)  # row D of the weights is 0

    def forward_max(self, x: Tensor, w: Tensor | None) -> Tensor:
        """Max-product leaf values: observed factors give their log-density, unobserved ones their log-maximum.

        Returns:
            ``(R, B, K)``.
        """
        out = self._forward_max(x, w)
        return out if not self.leaf.has_base_measure else out + self._base_measure(x, w).unsqueeze(-1)

    def _forward_max(self, x: Tensor, w: Tensor | None) -> Tensor:
        if self.leaf.indexed:
            return self._indexed(x, w, None, True)
        if w is not None and w.dtype == torch.bool:  # hard evidence: the weighted form
            x, w = torch.where(w, x, 0.0), w.to(x.dtype)
        peak = self.leaf.log_max(self.param_dict()).unsqueeze(-1)  # (R, n, K, 1)
        # one pass: the peak is one more statistic, (1 - w), with coefficient log max
        wt = self._columns(torch.ones_like(x) if w is None else w)  # (D + 1, B)
        unobserved = 1 - wt
        unobserved[self.num_vars] = 0  # the padding row stays 0
        feats = torch.cat([self.leaf.statistics(self._columns(x)) * wt, unobserved.unsqueeze(0)])  # (S + 1, D + 1, B)
        return self._linear(feats, natural_to_layer(torch.cat([self.natural(), peak], dim=-1), False)[0])  # (R, B, K)

    def _indexed(self, x: Tensor, w: Tensor | None, table: Tensor | None, peak: bool) -> Tensor:
        """Leaf log-densities of a family with one-hot statistics, by gathering: ``(R, B, K)``, batch-fastest.

        ``table`` ``(R, n, K, C)`` holds each factor's log-probability of every
        value (its natural parameters; None: the layer's own, normalized on the
        fly where the family gives softmax logits); the value of each entry
        selects a column (:meth:`Leaf.index`), weighted by the evidence ``w``.
        With ``peak``, unobserved weight goes to each factor's largest log-probability.
        """
        dtype = self.slot_valid.dtype
        if w is not None and w.dtype == torch.bool:
            x, w = torch.where(w, x, 0.0), w.to(dtype)  # unobserved entries index value 0, weighted 0
        ones = torch.ones_like(x, dtype=dtype) if w is None else w.to(dtype)
        idx = self._columns(self.leaf.index(x))[self.var_index]  # (R, n, B); padding slots read row D (value 0)
        wv = self._columns(ones)[self.var_index]  # (R, n, B); 0 on padding slots
        logits = self.leaf.softmax_logits(self.param_dict()) if table is None and not peak else None
        if logits is not None:
            return GatherSoftmaxLeaf.apply(logits, idx, wv).transpose(1, 2)  # (R, K, B) -> (R, B, K)
        table = self.natural() if table is None else table
        top = table.detach().amax(-1) * self.slot_valid if peak else None  # (R, n, K); padding slots have no peak
        return GatherLeaf.apply(table, idx, wv, top).transpose(1, 2)  # (R, K, B) -> (R, B, K)

    def pair_params(self, region: Tensor, choice: Tensor) -> dict[str, Tensor]:
        """Parameters of one chosen component per selected region: each ``(A, n, *extra)`` for ``region, choice (A,)``."""
        return {name: p[region, :, choice] for name, p in self.params.items()}

    def gather_params(self, choice: Tensor) -> dict[str, Tensor]:
        """Parameters of the chosen component per region and sample.

        Args:
            choice: ``(R, B)`` component indices in ``[0, K)``.

        Returns:
            each parameter as ``(R, n, B, *extra)``.
        """
        R, B = choice.shape
        n = self.var_index.shape[1]
        out = {}
        for name, p in self.params.items():  # one gather per parameter tensor of the family
            extra = p.shape[3:]
            idx = choice.view(R, 1, B, *([1] * len(extra))).expand(R, n, B, *extra)
            out[name] = torch.gather(p, 2, idx)
        return out

    # ------------------------------------------------ the leaf-layer contract
    def effective_parameter_counts(self) -> Tensor:
        slots = (self.var_index < self.num_vars).sum(1)  # (R,) real variables per leaf region
        per_slot = sum(math.prod(p.shape[2:]) for p in self.params.values())  # K * extra dims, all tensors
        return slots.long().cpu() * per_slot

    def counts_match(self, counts: object) -> bool:
        return isinstance(counts, Tensor) and counts.shape[:3] == self.var_index.shape + (self.num_leaves,)

    def fill(self, region: Tensor, choice: Tensor, sample: Tensor, x: Tensor, m: Tensor, greedy: bool,
             generator: torch.Generator | None, out: Tensor) -> None:
        """Draws (or modes) of the chosen components, written at their samples' variables (factors ignore the evidence)."""
        params = self.pair_params(region, choice)  # each (A, n, ...)
        vals = self.leaf.mode(params) if greedy else self.leaf.sample(params, generator)  # (A, n)
        var = self.var_index[region]  # (A, n); padding slots point at column D
        out[sample.unsqueeze(1).expand_as(var), var] = vals.to(out.dtype)

    def moments(self, x: Tensor, hidden: Tensor, posterior: Tensor) -> tuple[Tensor, Tensor]:
        dt = posterior.dtype
        try:
            mean, var = self.leaf.mean_variance({k: v.detach().to(dt) for k, v in self.params.items()})  # (R, n, K) each
        except NotImplementedError as err:
            raise ValueError(str(err)) from None
        R, n = self.var_index.shape
        B, D = posterior.shape[1], self.num_vars
        idx = self.var_index.reshape(-1)
        # the centre of each variable: its components' mean mean (the padding row D collects padding slots)
        slots = torch.zeros(D + 1, dtype=dt, device=mean.device).index_add_(0, idx, torch.ones(R * n, dtype=dt, device=mean.device))
        centre = torch.zeros(D + 1, dtype=dt, device=mean.device).index_add_(0, idx, mean.mean(-1).reshape(-1)) / slots.clamp_min(1)
        dev = mean - centre[self.var_index].unsqueeze(-1)  # (R, n, K)

        def mixed(per_component: Tensor) -> Tensor:  # sum_{r, k} posterior * value over the slots of each variable: (B, D)
            per_slot = torch.bmm(posterior, per_component.transpose(1, 2))  # (R, B, n)
            total = posterior.new_zeros(B, D + 1).index_add_(1, idx, per_slot.permute(1, 0, 2).reshape(B, R * n))
            return total[:, :D]

        first = mixed(dev)
        return centre[:D] + first, (mixed(var + dev * dev) - first * first).clamp_min(0)

    def init_from_data(self, x: Tensor, observed: Tensor, weights: Tensor, pseudocount: float) -> None:
        leaf, K, D = self.leaf, self.num_leaves, self.num_vars
        if leaf.indexed:  # counts of each value: scatter instead of one-hot statistics
            C = leaf.num_stats
            idx = leaf.index(x) + C * torch.arange(D, device=x.device)  # (N, D) into D * C
            stats = x.new_zeros(K, D * C)
            stats.index_add_(1, idx.reshape(-1), (weights.unsqueeze(2) * observed.unsqueeze(0)).reshape(K, -1))
            stats = stats.view(K, D, C).transpose(0, 1)  # (D, K, C)
        else:
            t = leaf.statistics(x) * observed  # (S, N, D)
            stats = torch.einsum("snd,kn->dks", t, weights)  # (D, K, S)
        padded = torch.cat([stats, stats.new_zeros(1, *stats.shape[1:])])  # row D: the padding slots' (no data)
        new = leaf.m_step(padded[self.var_index], self.param_dict(), pseudocount)  # per slot (R, n, K, S)
        for name, value in new.items():
            self.params[name].copy_(value)

    @torch.no_grad()
    def m_step(self, counts: Natural, step_size: float, pseudocount: float) -> None:
        counts = _one_tensor(counts)
        leaf = self.leaf
        old = self.param_dict()
        new = leaf.m_step(counts, old, pseudocount) if pseudocount else leaf.m_step(counts, old)
        if step_size < 1:
            # EinsumNetworks' online EM: mix E[T] of the old and the new parameters
            # (the new ones match the batch's normalized statistics, projected into
            # the family's bounds), then map the mixture back to parameters.
            try:
                mixed = (1 - step_size) * leaf.mean_statistics(old) + step_size * leaf.mean_statistics(new)
            except NotImplementedError as err:
                raise ValueError(f"stochastic EM needs {type(leaf).__name__}.mean_statistics: {err}") from None
            mixed_params = leaf.m_step(mixed, old)
            # factors without data come back from the first m_step unchanged: keep them exactly
            same = torch.ones(self.var_index.shape + (self.num_leaves,), dtype=torch.bool, device=counts.device)  # (R, n, K)
            for name, value in new.items():
                eq = value == old[name]
                same &= eq.flatten(3).all(-1) if eq.dim() > 3 else eq
            new = {name: torch.where(same.view(same.shape + (1,) * (v.dim() - 3)), old[name], v) for name, v in mixed_params.items()}
        for name, value in new.items():
            self.params[name].copy_(value)
