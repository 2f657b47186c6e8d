"""Batched tensor kernels of the layers: gathers, log-space matrix products, and their hand-written gradients.

Every kernel works on batch-fastest tensors ``(rows, K, B)`` (see :mod:`spnkit.layers`).
The only loops run over *blocks* of rows sized so that no temporary exceeds
:data:`CHUNK_BYTES`; a model whose temporaries fit runs in one block.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "CHUNK_BYTES", "blocks_of", "GatherMatmul", "GatherPart", "GatherRows", "LogMatmul", "LogOuterMatmul", "LogProjectProduct",
    "grad_over_sums", "log_matmul_exp", "log_max_matmul", "log_project_product", "shifted_exp",
]


#: below this size, written into one workspace reused by every block, and rebuilt
#: in the backward pass rather than kept. A fresh multi-megabyte allocation per
#: block costs page faults that can exceed the arithmetic (5x on the benchmark
#: machine); a reused workspace stays mapped and in cache.
CHUNK_BYTES = 4 * 2**20


def blocks_of(n: int, item_bytes: int) -> list[slice]:
    """Slices of a leading dimension of length ``n`` whose temporaries (``item_bytes`` per entry) stay under :data:`CHUNK_BYTES`."""
    step = max(1, CHUNK_BYTES // max(1, item_bytes))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class GatherMatmul(torch.autograd.Function):
    """``out[r] = coef[r]^T @ feats[index[r]] (+ bias[r])``: per-region statistics times coefficients, batch-fastest.

    Shapes: ``feats (V, B)`` contiguous rows, ``coef (R, m, K)``, ``index (R, m)``
    into ``V``, optional ``bias (R, K)`` added to every sample; output
    ``(R, K, B)``. The gathered ``(R, m, B)`` statistics (the largest tensor of
    the leaf layer) are built block by block in one workspace and gathered
    again in the backward pass instead of being kept.
    """

    @staticmethod
    def forward(ctx, feats: Tensor, coef: Tensor, index: Tensor, bias: Tensor | None = None) -> Tensor:
        R, m = index.shape
        B = feats.shape[1]
        out = feats.new_empty(R, coef.shape[2], B)
        blocks = blocks_of(R, m * B * feats.element_size())
        ws = feats.new_empty((blocks[0].stop - blocks[0].start) * m, B)
        for blk in blocks:
            rows = index[blk].reshape(-1)
            g = torch.index_select(feats, 0, rows, out=ws[: rows.numel()]).view(-1, m, B)  # (c, m, B): whole rows, 4x faster than feats[index]
            if m == 1:  # an outer product: a broadcast multiply (a bmm with inner size 1 is several times slower)
                torch.mul(coef[blk].transpose(1, 2), g, out=out[blk])
            else:
                torch.bmm(coef[blk].transpose(1, 2), g, out=out[blk])  # (c, K, B); the transpose is BLAS's, not a copy
        if bias is not None:
            out.add_(bias.unsqueeze(-1))  # one pass (baddbmm per block copies the bias into each block first)
        ctx.save_for_backward(feats, coef, index)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, Tensor | None]:
        feats, coef, index = ctx.saved_tensors
        R, m = index.shape
        B = feats.shape[1]
        grad = grad.contiguous()  # (R, K, B)
        g_feats = torch.zeros_like(feats) if ctx.needs_input_grad[0] else None
        # (R, K, m): the (K, B) x (B, m) products are faster on this side than (m, B) x (B, K); one transposing copy at the end
        g_coef_t = coef.new_empty(R, coef.shape[2], m) if ctx.needs_input_grad[1] else None
        g_bias = grad.sum(-1) if ctx.has_bias and ctx.needs_input_grad[3] else None  # (R, K)
        blocks = blocks_of(R, m * B * feats.element_size())
        ws = feats.new_empty((blocks[0].stop - blocks[0].start) * m, B)
        for blk in blocks:
            rows = index[blk].reshape(-1)
            c = blk.stop - blk.start
            if g_coef_t is not None:
                g = torch.index_select(feats, 0, rows, out=ws[: rows.numel()]).view(c, m, B)  # (c, m, B)
                torch.bmm(grad[blk], g.transpose(1, 2), out=g_coef_t[blk])  # (c, K, m)
            if g_feats is not None:
                back = torch.bmm(coef[blk], grad[blk], out=ws[: rows.numel()].view(c, m, B))  # (c, m, B)
                g_feats.index_add_(0, rows, back.view(-1, B))
        g_coef = None if g_coef_t is None else g_coef_t.transpose(1, 2).contiguous()  # (R, m, K)
        return g_feats, g_coef, None, g_bias



def _outer_matmul(ea: Tensor, eb: Tensor, w: Tensor) -> Tensor:
    """``s[p, k, b] = sum_{i, j} w[p, i*J + j, k] * ea[p, i, b] * eb[p, j, b]``: ``(P, I, B), (P, J, B), (P, I*J, K) -> (P, K, B)``.

    The outer products ``(P, I*J, B)`` are built block by block in one
    workspace and not kept (:func:`_outer_matmul_backward` needs other products).
    """
    P, I, B = ea.shape
    J = eb.shape[1]
    out = ea.new_empty(P, w.shape[2], B)
    blocks = blocks_of(P, I * J * B * ea.element_size())
    ws = ea.new_empty(blocks[0].stop - blocks[0].start, I, J, B)
    for blk in blocks:
        c = blk.stop - blk.start
        outer = torch.mul(ea[blk].unsqueeze(2), eb[blk].unsqueeze(1), out=ws[:c])  # (c, I, J, B)
        torch.bmm(w[blk].transpose(1, 2), outer.view(c, I * J, B), out=out[blk])  # (c, K, B)
    return out


def _outer_matmul_backward(ea: Tensor, eb: Tensor, w: Tensor, grad: Tensor, g_a: Tensor | None, g_b: Tensor | None, g_w: Tensor | None) -> None:
    """Gradients of :func:`_outer_matmul` for ``grad (P, K, B)``, written into ``g_a, g_b, g_w`` (None: not needed).

    Two outer products per sample, ``z_a = eb x grad`` ``(J*K)`` and ``z_b = ea x
    grad`` ``(I*K)`` (built per block in one workspace), and three batched
    matmuls: ``g_a = w z_a`` (``w`` as ``(I, J*K)``), ``g_w = ea z_a^T`` (as
    ``(I, J*K)``, summed over samples) and ``g_b = w' z_b`` (``w`` as ``(J,
    I*K)``). No ``(I*J, B)`` gradient of the forward's outer products is formed
    and reduced, which would take more passes over memory.
    """
    P, I, B = ea.shape
    J, K = eb.shape[1], w.shape[2]
    w4 = w.view(P, I, J, K)
    w_b = None if g_b is None else w4.transpose(1, 2).reshape(P, J, I * K)  # (P, J, I*K), one small copy
    size = max(J * K, I * K) * B
    blocks = blocks_of(P, size * ea.element_size())
    ws = ea.new_empty((blocks[0].stop - blocks[0].start) * size)
    for blk in blocks:
        c = blk.stop - blk.start
        a, b, gr = ea[blk], eb[blk], grad[blk]  # (c, I, B), (c, J, B), (c, K, B)
        if g_a is not None or g_w is not None:
            z = torch.mul(b.unsqueeze(2), gr.unsqueeze(1), out=ws[: c * J * K * B].view(c, J, K, B)).view(c, J * K, B)
            if g_a is not None:
                torch.bmm(w4[blk].reshape(c, I, J * K), z, out=g_a[blk])  # (c, I, B)
            if g_w is not None:
                torch.bmm(a, z.transpose(1, 2), out=g_w[blk].view(c, I, J * K))  # (c, I, J*K) = (c, I*J, K)
        if g_b is not None and w_b is not None:
            z = torch.mul(a.unsqueeze(2), gr.unsqueeze(1), out=ws[: c * I * K * B].view(c, I, K, B))  # (c, I, K, B)
            torch.bmm(w_b[blk], z.view(c, I * K, B), out=g_b[blk])  # (c, J, B)


def grad_over_sums(grad: Tensor, s: Tensor) -> Tensor:
    """``grad / s`` (broadcast), zero where ``s`` is zero: a sum of probability zero passes a zero gradient, not NaN or inf.

    On the CPU one sum of the quotient tells whether any entry is not finite
    (every zero ``s`` makes one); only then are the zero sums masked, which
    costs several times the division. On other devices they are always
    masked (no synchronization).
    """
    q = torch.div(grad, s)
    if q.device.type == "cpu" and bool(torch.isfinite(q.sum())):
        return q
    return q.masked_fill_(s == 0, 0.0)


def shifted_exp(log_x: Tensor) -> tuple[Tensor, Tensor]:
    """``exp(log_x - m)`` and the shift ``m``: the max over dim 1, 0 where it is not finite (detached)."""
    m = torch.nan_to_num(log_x.detach().amax(1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)  # (P, 1, B)
    return torch.sub(log_x, m).exp_(), m


class LogOuterMatmul(torch.autograd.Function):
    """``out[p, k, b] = log sum_{i, j} w[p, i*J + j, k] exp(log_a[p, i, b] + log_b[p, j, b])``, batch-fastest, one Function.

    The log-einsum-exp trick (each factor shifted by its max over ``i`` or
    ``j`` before ``exp``) with a hand-written backward: ``d out / d log_a =
    ea * d s / d ea / s``, where ``s`` is the shifted sum; a zero ``s``
    (probability zero) passes a zero gradient, not NaN.

    ``log_b`` None: ``log_a`` holds both factors stacked, ``(2P, I, B)`` with
    ``I = J`` (a product layer's gathered children): one max and one ``exp``
    over both, and one gradient tensor.
    """

    @staticmethod
    def forward(ctx, log_a: Tensor, log_b: Tensor | None, w: Tensor) -> Tensor:
        if log_b is None:
            e, m = shifted_exp(log_a)  # (2P, I, B), (2P, 1, B)
            P = e.shape[0] // 2
            ea, eb, ma, mb = e[:P], e[P:], m[:P], m[P:]
            saved: tuple[Tensor, ...] = (e,)
        else:
            (ea, ma), (eb, mb) = shifted_exp(log_a), shifted_exp(log_b)
            saved = (ea, eb)
        ctx.stacked = log_b is None
        s = _outer_matmul(ea, eb, w)  # (P, K, B), the shifted sums (their log is returned)
        ctx.save_for_backward(*saved, w, s)
        return torch.log(s).add_(ma + mb)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        need_a, need_b, need_w = ctx.needs_input_grad
        *inputs, w, s = ctx.saved_tensors
        g_s = grad_over_sums(grad, s)  # (P, K, B): zero where the sum is zero
        if ctx.stacked:
            (e,) = inputs
            P = e.shape[0] // 2
            ea, eb = e[:P], e[P:]
            g_e = torch.empty_like(e) if need_a else None
            g_w = torch.empty_like(w) if need_w else None
            _outer_matmul_backward(ea, eb, w, g_s, None if g_e is None else g_e[:P], None if g_e is None else g_e[P:], g_w)
            return (None if g_e is None else g_e.mul_(e)), None, g_w
        ea, eb = inputs
        g_a = torch.empty_like(ea) if need_a else None
        g_b = torch.empty_like(eb) if need_b else None
        g_w = torch.empty_like(w) if need_w else None
        _outer_matmul_backward(ea, eb, w, g_s, g_a, g_b, g_w)
        return (None if g_a is None else g_a.mul_(ea)), (None if g_b is None else g_b.mul_(eb)), g_w


def log_matmul_exp(log_a: Tensor, log_b: Tensor, weights: Tensor) -> Tensor:
    """Products of two log-vectors followed by weighted sums, in log space.

    Computes ``out[p, b, k] = log sum_{i, j} exp(log_a[p, b, i] + log_b[p, b, j]) * weights[p, i*J + j, k]``
    with the log-einsum-exp trick: each factor is shifted by its own maximum
    before ``exp``, so log-values down to ``-1e4`` (and ``-inf``) stay exact.

    Args:
        log_a: ``(P, B, I)``.
        log_b: ``(P, B, J)``.
        weights: ``(P, I*J, K)``, non-negative.

    Returns:
        ``(P, B, K)``.
    """
    a_t, b_t = log_a.transpose(1, 2).contiguous(), log_b.transpose(1, 2).contiguous()  # (P, I, B), (P, J, B)
    return LogOuterMatmul.apply(a_t, b_t, weights).transpose(1, 2)  # (P, B, K), batch-fastest



class GatherPart(NamedTuple):
    """One source of a :class:`GatherRows`: rows of one block and where they go in the output.

    Attributes:
        source: position of the block among the gathered inputs.
        rows: ``(m,)`` rows of the block, in output order.
        dest: a ``slice`` of the output (contiguous: written in place by one
            ``index_select``) or an index tensor ``(m,)``.
        distinct: no row is listed twice (the backward copies instead of adding).
        covers: the part is its block's only reader here and lists every row of
            it (the backward writes the block's gradient without zero-filling).
    """

    source: int
    rows: Tensor
    dest: slice | Tensor
    distinct: bool
    covers: bool


class GatherRows(torch.autograd.Function):
    """Rows of several batch-fastest blocks stacked into one contiguous tensor ``(n, k, B)``.

    Each block is ``(rows, K_max, B)``; only the first ``k`` entries of a row
    are read. The backward adds each part's gradient rows back into its block
    (``index_copy_`` for distinct rows; no zero fill where a part covers its block).
    """

    @staticmethod
    def forward(ctx: Any, parts: tuple[GatherPart, ...], n: int, k: int, *sources: Tensor) -> Tensor:
        out = sources[0].new_empty(n, k, sources[0].shape[2])  # (n, k, B)
        for p in parts:
            src = sources[p.source]
            if src.shape[1] != k:
                src = src[:, :k]
            if isinstance(p.dest, slice):
                torch.index_select(src, 0, p.rows, out=out[p.dest])  # whole rows, in place
            else:
                out.index_copy_(0, p.dest, torch.index_select(src, 0, p.rows))
        ctx.parts, ctx.k = parts, k
        ctx.shapes = [s.shape for s in sources]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        k = ctx.k
        grads: list[Tensor | None] = [None] * len(ctx.shapes)
        for p in ctx.parts:
            g = grad[p.dest] if isinstance(p.dest, slice) else grad.index_select(0, p.dest)  # (m, k, B)
            shape = ctx.shapes[p.source]
            target = grads[p.source]
            if target is None:
                full = p.covers and k == shape[1]
                target = grad.new_empty(shape) if full else grad.new_zeros(shape)
                grads[p.source] = target
            view = target if k == shape[1] else target[:, :k]
            if p.distinct and p.covers:
                view.index_copy_(0, p.rows, g)
            else:
                view.index_add_(0, p.rows, g)
        return (None, None, None, *grads)


class LogMatmul(torch.autograd.Function):
    """``out[s, k, b] = log sum_i w[s, i, k] exp(log_a[s, i, b])``: ``(S, I, B), (S, I, K) -> (S, K, B)``, batch-fastest.

    Each column is shifted by its max over ``i`` before ``exp`` (exact down to
    ``-inf``); the backward is written by hand: ``d/d log_a = e * (w @ (g / s))``
    and ``d/dw = e @ (g / s)^T``, with ``s`` the shifted sums (a zero ``s``, i.e.
    probability zero, passes a zero gradient, not NaN).
    """

    @staticmethod
    def forward(ctx: Any, log_a: Tensor, w: Tensor) -> Tensor:
        e, m = shifted_exp(log_a)  # (S, I, B), (S, 1, B)
        s = torch.bmm(w.transpose(1, 2), e)  # (S, K, B); the transpose is BLAS's
        ctx.save_for_backward(e, w, s)
        return torch.log(s).add_(m)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        e, w, s = ctx.saved_tensors
        g_s = grad_over_sums(grad, s)  # (S, K, B)
        g_a = torch.bmm(w, g_s).mul_(e) if ctx.needs_input_grad[0] else None  # (S, I, B)
        g_w = torch.bmm(e, g_s.transpose(1, 2)) if ctx.needs_input_grad[1] else None  # (S, I, K)
        return g_a, g_w


def _shifted_projections(log_c: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``e = exp(log_c - m)`` ``(S, I, B)``, its shift ``m`` ``(S, 1, B)`` and the shifted sums ``s = w^T e`` ``(S, K, B)``."""
    e, m = shifted_exp(log_c)
    return e, m, torch.bmm(w.transpose(1, 2), e)  # the transpose is BLAS's, not a copy


class LogProjectProduct(torch.autograd.Function):
    """Log-space projections of ``a`` consecutive slots multiplied per partition: a CP layer of uniform arity, one Function.

    ``out[p, k, b] = sum_{j < a} log sum_i w[s, i, k] exp(log_c[s, i, b])`` with
    ``s = a p + j``: ``(P a, I, B), (P a, I, K) -> (P, K, B)``, batch-fastest.
    Each column is shifted by its max over ``i`` before ``exp`` (exact down to
    ``-inf``), as in :class:`LogMatmul`; the slots' shifts are summed per
    partition and added once to the ``a`` times smaller output. The product
    over a partition's slots is a sum over a reshape, and the backward pass
    broadcasts each partition's gradient over its slots (``d/d log_c = e * (w
    @ (g / s))``, ``d/dw = e @ (g / s)^T``, ``s`` the shifted sums; a zero
    ``s`` passes a zero gradient): no gather or scatter of slot rows.
    """

    @staticmethod
    def forward(ctx: Any, log_c: Tensor, w: Tensor, arity: int) -> Tensor:
        S, _, B = log_c.shape
        P, K = S // arity, w.shape[2]
        e, m, s = _shifted_projections(log_c, w)
        ctx.save_for_backward(e, w, s)
        ctx.arity = arity
        out = torch.log(s).view(P, arity, K, B).sum(1)
        return out.add_(m.view(P, arity, 1, B).sum(1))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        e, w, s = ctx.saved_tensors
        S, K, B = s.shape
        a = ctx.arity
        s4 = s.view(S // a, a, K, B)
        g_s = grad_over_sums(grad.unsqueeze(1), s4).view(S, K, B)  # each partition's gradient, per slot
        g_c = torch.bmm(w, g_s).mul_(e) if ctx.needs_input_grad[0] else None  # (S, I, B)
        g_w = torch.bmm(e, g_s.transpose(1, 2)) if ctx.needs_input_grad[1] else None  # (S, I, K)
        return g_c, g_w, None


def log_project_product(log_c: Tensor, w: Tensor, arity: int) -> Tensor:
    """:class:`LogProjectProduct`; without a graph to build, computed in place in fewer passes: ``(P, K, B)``."""
    if torch.is_grad_enabled() and (log_c.requires_grad or w.requires_grad):
        return LogProjectProduct.apply(log_c, w, arity)
    S, _, B = log_c.shape
    P, K = S // arity, w.shape[2]
    _, m, s = _shifted_projections(log_c, w)
    return s.log_().view(P, arity, K, B).sum(1).add_(m.view(P, arity, 1, B).sum(1))


def log_max_matmul(log_a: Tensor, log_w: Tensor) -> Tensor:
    """``out[s, k, b] = max_i (log_w[s, i, k] + log_a[s, i, b])``: ``(S, I, B), (S, I, K) -> (S, K, B)``.

    The max-product counterpart of :class:`LogMatmul`; the ``(S, I, K, B)``
    scores are reduced in blocks of rows (differentiable when grad is enabled).
    """
    S, I, B = log_a.shape
    K = log_w.shape[2]
    blocks = blocks_of(S, I * K * B * log_a.element_size())
    if torch.is_grad_enabled():
        outs = [(log_a[blk].unsqueeze(2) + log_w[blk].unsqueeze(-1)).amax(1) for blk in blocks]
        return torch.cat(outs)
    out = log_a.new_empty(S, K, B)
    c0 = blocks[0].stop - blocks[0].start
    ws = log_a.new_empty(c0, I, K, B)
    for blk in blocks:
        c = blk.stop - blk.start
        scores = torch.add(log_a[blk].unsqueeze(2), log_w[blk].unsqueeze(-1), out=ws[:c])  # (c, I, K, B)
        torch.amax(scores, dim=1, out=out[blk])
    return out
