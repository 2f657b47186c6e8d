"""Autograd kernels of the factorized leaf layer: gathered log-probability tables and weighted statistics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..leaves import Leaf
from .kernels import blocks_of

__all__ = ["GatherLeaf", "GatherSoftmaxLeaf", "WeightedStatistics"]


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


class WeightedStatistics(torch.autograd.Function):
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
