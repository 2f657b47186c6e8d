"""The leaf layer: ``K`` factorized leaf distributions per leaf region, as one matrix product."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..leaves import Leaf, natural_to_layer
from .kernels import GatherMatmul, blocks_of

__all__ = ["LeafLayer", "GatherLeaf", "GatherSoftmaxLeaf"]


class GatherSoftmaxLeaf(torch.autograd.Function):
    """:class:`GatherLeaf` of the table ``log_softmax(logits)``, normalized on the fly: ``(R, K, B)``.

    ``out[r, k, b] = sum_j w[r, j, b] (logits[r, j, k, idx[r, j, b]] - lse[r, j, k])``
    with ``lse`` the log-normalizer over the last dimension. The backward pass
    writes the gradient ``scatter(g w) - softmax(logits) * sum_b(g w)`` in
    place from the kept ``log_softmax`` table: no zero-filled gradient of the
    table and no ``log_softmax`` backward over its ``C`` times as many entries
    as the gathers touch.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, idx: Tensor, w: Tensor) -> Tensor:
        table = torch.log_softmax(logits, dim=-1)  # (R, n, K, C); its fused kernel beats a logsumexp
        R, n, K, C = logits.shape
        B = idx.shape[2]
        out = logits.new_empty(R, K, B)
        for blk in blocks_of(R, n * K * B * logits.element_size()):
            c = blk.stop - blk.start
            g = torch.gather(table[blk], 3, idx[blk].unsqueeze(2).expand(c, n, K, B))  # (c, n, K, B)
            g.mul_(w[blk].unsqueeze(2))
            torch.sum(g, dim=1, out=out[blk])
        ctx.save_for_backward(table, idx, w)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        table, idx, w = ctx.saved_tensors
        R, n, K, C = table.shape
        B = idx.shape[2]
        total = torch.bmm(w, grad.transpose(1, 2))  # (R, n, K): sum_b w g, each factor's total weight
        g_logits = torch.exp(table).mul_(total.neg_().unsqueeze(-1))  # -softmax * total
        for blk in blocks_of(R, n * K * B * grad.element_size()):
            c = blk.stop - blk.start
            contrib = grad[blk].unsqueeze(1) * w[blk].unsqueeze(2)  # (c, n, K, B)
            g_logits[blk].scatter_add_(3, idx[blk].unsqueeze(2).expand(c, n, K, B), contrib)
        return g_logits, None, None


class GatherLeaf(torch.autograd.Function):
    """``out[r, k, b] = sum_j w[r, j, b] table[r, j, k, idx[r, j, b]] (+ (1 - w[r, j, b]) top[r, j, k])``: ``(R, K, B)``.

    The leaf layer of a family with one-hot statistics (Categorical, Binomial):
    one gather per entry instead of a product with ``C``-fold statistics. Built
    in blocks of regions (each ``(c, n, K, B)`` temporary under
    :data:`~spnkit.layers.kernels.CHUNK_BYTES`); the backward scatter-adds the
    weighted gradient into the table (the expected counts of each value, for EM).
    ``top`` (max-product's unobserved values) takes no gradient.
    """

    @staticmethod
    def forward(ctx: Any, table: Tensor, idx: Tensor, w: Tensor, top: Tensor | None) -> Tensor:
        R, n, K, C = table.shape
        B = idx.shape[2]
        out = table.new_empty(R, K, B)
        for blk in blocks_of(R, n * K * B * table.element_size()):
            c = blk.stop - blk.start
            g = torch.gather(table[blk], 3, idx[blk].unsqueeze(2).expand(c, n, K, B))  # (c, n, K, B)
            g.mul_(w[blk].unsqueeze(2))
            if top is not None:
                g.add_(top[blk].unsqueeze(-1) * (1 - w[blk]).unsqueeze(2))
            torch.sum(g, dim=1, out=out[blk])
        ctx.save_for_backward(idx, w)
        ctx.shape = table.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        idx, w = ctx.saved_tensors
        R, n, K, C = ctx.shape
        B = idx.shape[2]
        g_table = grad.new_zeros(R, n, K, C)
        for blk in blocks_of(R, n * K * B * grad.element_size()):
            c = blk.stop - blk.start
            contrib = grad[blk].unsqueeze(1) * w[blk].unsqueeze(2)  # (c, n, K, B)
            g_table[blk].scatter_add_(3, idx[blk].unsqueeze(2).expand(c, n, K, B), contrib)
        return g_table, None, None, None


class _WeightedStatistics(torch.autograd.Function):
    """The leaf layer's input ``T(x) * w``: ``(S, V, B)`` from columns ``x, w (V, B)``.

    Autograd through an in-place product would keep a copy of the ``S`` times
    larger statistics for ``w``'s gradient; this keeps only ``x`` and ``w`` and
    contracts the incoming gradient with the statistics in the backward pass
    (:meth:`Leaf.statistics_grads`, closed forms for the built-in families).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, leaf: Leaf) -> Tensor:
        feats = leaf.weighted_statistics(x.detach(), w)  # a fresh tensor
        ctx.save_for_backward(x, w)
        ctx.leaf = leaf
        return feats

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        dot, d_x = ctx.leaf.statistics_grads(x, grad, ctx.needs_input_grad[0])
        return None if d_x is None else d_x * w, dot if ctx.needs_input_grad[1] else None, None  # d_x may be a view of grad


class LeafLayer(nn.Module):
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

    def _linear(self, feats: Tensor, coef: Tensor, bias: Tensor | None = None) -> Tensor:
        """``out[r, b, k] = sum_{d, s} feats[s, d, b] * coef[r, s * n + slot(d), k] (+ bias[r, k])``: ``(R, B, K)``, batch-fastest.

        ``feats`` ``(S, D + 1, B)`` are the weighted statistics, variable-major
        (built so from the transposed input: no copy of the ``S`` times larger
        statistics), with row ``D`` zero; ``coef (R, S * n, K)`` has the same
        ``S`` (the layout of :meth:`Leaf.layer_coefficients`).
        """
        R, K = coef.shape[0], coef.shape[2]
        S, D1, B = feats.shape
        n = coef.shape[1] // S
        if self.layout == "dense":
            dense = self._dense(coef.reshape(R, S, n, K).permute(0, 2, 3, 1))  # (S, D + 1, R*K)
            out = torch.bmm(dense.transpose(1, 2), feats).sum(0)  # (S, R*K, B) -> (R*K, B)
            if bias is not None:
                out = out + bias.reshape(R * K, 1)
            return out.view(R, K, B).transpose(1, 2)  # (R, B, K)
        index = getattr(self, f"stat_rows_{S}")  # (R, S*n): the first S statistics, statistic-major
        return GatherMatmul.apply(feats.reshape(-1, B)[: S * D1], coef, index, bias).transpose(1, 2)  # (R, K, B) -> (R, B, K)

    def forward(self, x: Tensor, w: Tensor | None, eta: Tensor | None = None, finite: bool = False) -> Tensor:
        """Leaf log-densities ``(R, B, K)``; see :meth:`_forward` (the family's base measure added, where it has one)."""
        out = self._forward(x, w, eta, finite)
        return out if not self.leaf.has_base_measure else out + self._base_measure(x, w).unsqueeze(-1)

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

    def _forward(self, x: Tensor, w: Tensor | None, eta: Tensor | None = None, finite: bool = False) -> Tensor:
        """Leaf log-densities.

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
            ``(R, B, K)``.
        """
        if self.leaf.indexed:  # one-hot statistics: gather the log-probabilities instead
            return self._indexed(x, w, eta, False)
        hard = w is not None and w.dtype == torch.bool
        if hard and x.requires_grad and torch.is_grad_enabled():  # differentiable in x: the weighted path
            x, w, hard = torch.where(w, x, 0.0), w.to(x.dtype), False
        # every weight 1 and a constant last statistic: its share is one bias per (region, component)
        split = w is None and self.leaf.constant_last
        if eta is None:
            coef, const = self.leaf.layer_coefficients(self.param_dict(), split)  # (R, S'*n, K), (R, n, K)
        else:
            coef, const = natural_to_layer(eta, split)
        if hard:
            return self._linear(self._observed_statistics(x, w, finite), coef)
        cols = self._columns(x)
        if w is None:
            feats = self.leaf.varying_statistics(cols) if split else self.leaf.statistics(cols)  # (S or S - 1, D + 1, B), a fresh tensor
            feats[:, self.num_vars] = 0.0  # the padding row (a constant statistic would be 1 there)
            if split:
                bias = torch.bmm(self.slot_valid.transpose(1, 2), const).squeeze(1)  # (R, K): padding slots excluded
                return self._linear(feats, coef, bias)
            return self._linear(feats, coef)
        return self._linear(_WeightedStatistics.apply(cols, self._columns(w), self.leaf), coef)  # row D of the weights is 0

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
