"""Layers of a compiled circuit.

The layout contract, for every layer, written once here:

* A layer reads and writes **log-space, region-major** tensors of shape
  ``(regions, batch, K)``: entry ``[r, b, k]`` is the log-value of the ``k``-th
  node of region vector ``r`` for sample ``b``. Region-major makes each layer a
  batched matrix product with the regions as the batch dimension.
* All region vectors computed so far are kept in one buffer ``(rows, batch,
  K_max)``; product layers gather their children's rows from it. Vectors with
  fewer than ``K_max`` entries are padded with ``-inf`` (probability zero), and
  the weights that would read the padding are fixed to zero.
* Inputs to the leaf layer are sample-major: values ``x`` and evidence weights
  ``w`` of shape ``(batch, num_vars)``. Leaf regions are padded to equal size
  with slots pointing at variable ``num_vars``, which contributes nothing.
* Mask polarity, for the whole library: ``m = 1`` (or True) means unobserved,
  integrated out; the leaf layer weights each factor's log-density by
  ``w = 1 - m``.
* Memory format: the ``(regions, batch, K)`` tensors that layers return, and
  the buffer, are stored **batch-fastest**: each is the ``.transpose(1, 2)``
  view of a contiguous ``(regions, K, batch)`` tensor, as torch's
  ``channels_last`` keeps NCHW shapes over NHWC memory. Internally every layer
  works on ``(regions, K, batch)``, so each matrix product has the batch as its
  long, contiguous dimension (3-4x faster than ``(batch, K)`` rows for small
  ``K``). Layers accept inputs of any strides; use ``reshape``, not ``view``.

No layer loops over regions, nodes or variables: each is a handful of batched
tensor operations. The only loops run over *blocks* of regions sized so that
no temporary exceeds :data:`CHUNK_BYTES`; a model whose temporaries fit runs
in one block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .leaves import Leaf, natural_to_layer

__all__ = ["LeafLayer", "ProductSumLayer", "MixingLayer", "log_matmul_exp"]


#: Largest temporary (bytes) a layer builds at once: the gathered leaf statistics,
#: the outer products and the max-product scores are built in blocks of regions
#: below this size, written into one workspace reused by every block, and rebuilt
#: in the backward pass rather than kept. A fresh multi-megabyte allocation per
#: block costs page faults that can exceed the arithmetic (5x on the benchmark
#: machine); a reused workspace stays mapped and in cache.
CHUNK_BYTES = 4 * 2**20


def _blocks(n: int, item_bytes: int) -> list[slice]:
    """Slices of a leading dimension of length ``n`` whose temporaries (``item_bytes`` per entry) stay under :data:`CHUNK_BYTES`."""
    step = max(1, CHUNK_BYTES // max(1, item_bytes))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class _GatherMatmul(torch.autograd.Function):
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
        blocks = _blocks(R, m * B * feats.element_size())
        ws = feats.new_empty((blocks[0].stop - blocks[0].start) * m, B)
        for blk in blocks:
            rows = index[blk].reshape(-1)
            g = torch.index_select(feats, 0, rows, out=ws[: rows.numel()]).view(-1, m, B)  # (c, m, B): whole rows, 4x faster than feats[index]
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
        blocks = _blocks(R, m * B * feats.element_size())
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


class _GatherChildren(torch.autograd.Function):
    """The children's rows of a product layer from a batch-fastest buffer block, stacked: ``(2P, k, B)``, contiguous.

    ``src (rows, K_max, B)``; ``rows (2P,)`` the left then the right child of
    each partition; ``k <= K_max`` entries read. The backward copies the
    gradient into the rows (``index_copy_`` when no row is read twice, as in
    every RAT-SPN level) and fills no zeros where the children cover every row
    and entry of the block.
    """

    @staticmethod
    def forward(ctx, src: Tensor, rows: Tensor, k: int, distinct: bool) -> Tensor:
        ab = torch.index_select(src, 0, rows)  # (2P, K_max, B)
        if k != src.shape[1]:
            ab = ab[:, :k].contiguous()
        ctx.save_for_backward(rows)
        ctx.shape, ctx.k, ctx.distinct = src.shape, k, distinct
        return ab

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (rows,) = ctx.saved_tensors
        n, k_max, _ = ctx.shape
        if ctx.distinct and ctx.k == k_max:
            g = grad.new_empty(ctx.shape) if rows.numel() == n else grad.new_zeros(ctx.shape)
            g.index_copy_(0, rows, grad)
        else:
            g = grad.new_zeros(ctx.shape)
            g[:, : ctx.k].index_add_(0, rows, grad)
        return g, None, None, None


def _outer_matmul(ea: Tensor, eb: Tensor, w: Tensor) -> Tensor:
    """``s[p, k, b] = sum_{i, j} w[p, i*J + j, k] * ea[p, i, b] * eb[p, j, b]``: ``(P, I, B), (P, J, B), (P, I*J, K) -> (P, K, B)``.

    The outer products ``(P, I*J, B)`` are built block by block in one
    workspace and not kept (:func:`_outer_matmul_backward` needs other products).
    """
    P, I, B = ea.shape
    J = eb.shape[1]
    out = ea.new_empty(P, w.shape[2], B)
    blocks = _blocks(P, I * J * B * ea.element_size())
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
    blocks = _blocks(P, size * ea.element_size())
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
        if g_b is not None:
            z = torch.mul(a.unsqueeze(2), gr.unsqueeze(1), out=ws[: c * I * K * B].view(c, I, K, B))  # (c, I, K, B)
            torch.bmm(w_b[blk], z.view(c, I * K, B), out=g_b[blk])  # (c, J, B)


def _shifted_exp(log_x: Tensor) -> tuple[Tensor, Tensor]:
    """``exp(log_x - m)`` and the shift ``m``: the max over dim 1, 0 where it is not finite (detached)."""
    m = torch.nan_to_num(log_x.detach().amax(1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)  # (P, 1, B)
    return torch.sub(log_x, m).exp_(), m


class _LogOuterMatmul(torch.autograd.Function):
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
            e, m = _shifted_exp(log_a)  # (2P, I, B), (2P, 1, B)
            P = e.shape[0] // 2
            ea, eb, ma, mb = e[:P], e[P:], m[:P], m[P:]
            saved: tuple[Tensor, ...] = (e,)
        else:
            (ea, ma), (eb, mb) = _shifted_exp(log_a), _shifted_exp(log_b)
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
        g_s = torch.div(grad, s).masked_fill_(s == 0, 0.0)  # (P, K, B): zero where the sum is zero
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
    return _LogOuterMatmul.apply(a_t, b_t, weights).transpose(1, 2)  # (P, B, K), batch-fastest


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
        return _GatherMatmul.apply(feats.reshape(-1, B)[: S * D1], coef, index, bias).transpose(1, 2)  # (R, K, B) -> (R, B, K)

    def forward(self, x: Tensor, w: Tensor | None, eta: Tensor | None = None, finite: bool = False) -> Tensor:
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
        if w is not None and w.dtype == torch.bool:  # hard evidence: the weighted form
            x, w = torch.where(w, x, 0.0), w.to(x.dtype)
        peak = self.leaf.log_max(self.param_dict()).unsqueeze(-1)  # (R, n, K, 1)
        # one pass: the peak is one more statistic, (1 - w), with coefficient log max
        wt = self._columns(torch.ones_like(x) if w is None else w)  # (D + 1, B)
        unobserved = 1 - wt
        unobserved[self.num_vars] = 0  # the padding row stays 0
        feats = torch.cat([self.leaf.statistics(self._columns(x)) * wt, unobserved.unsqueeze(0)])  # (S + 1, D + 1, B)
        return self._linear(feats, natural_to_layer(torch.cat([self.natural(), peak], dim=-1), False)[0])  # (R, B, K)

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


class ProductSumLayer(nn.Module):
    """Products of two child region vectors (their outer product) mixed by ``K_out`` sums per partition.

    Args:
        left, right: buffer rows of each partition's two children, ``(P,)``.
        k_in: entries read from each child vector.
        k_out: sums per partition.
        valid: ``(P, k_in, k_in)`` bool, False where a child has fewer than
            ``k_in`` entries (those weights are fixed to zero); None if all valid.
    """

    def __init__(self, left: Tensor, right: Tensor, k_in: int, k_out: int, valid: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        self.register_buffer("pair_rows", torch.cat([left, right]), persistent=False)  # both children, one gather
        self.distinct = bool(self.pair_rows.unique().numel() == 2 * len(left))  # no row read twice (every RAT-SPN level)
        self.k_in, self.k_out = k_in, k_out
        self.logits = nn.Parameter(torch.randn(len(left), k_in * k_in, k_out))  # (P, I*J, K_out)
        self.register_buffer("valid", None if valid is None else valid.reshape(len(left), k_in * k_in, 1), persistent=False)

    @property
    def num_partitions(self) -> int:
        return self.left.shape[0]

    def _logits(self) -> Tensor:
        """The logits with invalid products at ``-inf`` (weight zero)."""
        return self.logits if self.valid is None else self.logits.masked_fill(~self.valid, -torch.inf)

    def log_weights(self) -> Tensor:
        """Normalized log-weights ``(P, I*J, K_out)``; each output's weights sum to 1."""
        return torch.log_softmax(self._logits(), dim=1)

    def weights(self) -> Tensor:
        """Normalized weights ``(P, I*J, K_out)``: ``exp`` of :meth:`log_weights` in one softmax (fewer passes, forward and backward)."""
        return torch.softmax(self._logits(), dim=1)

    def child_values(self, buf: Tensor) -> tuple[Tensor, Tensor]:  # not `children`: that would shadow nn.Module.children (breaks .to/.double)
        """The children's log-values ``(P, B, k_in)`` each."""
        a, b = self._child_values_t(buf)
        return a.transpose(1, 2), b.transpose(1, 2)

    def _stacked_children_t(self, buf: Tensor, start: int = 0) -> Tensor:
        """Both children's log-values, batch-fastest and stacked: ``(2P, k_in, B)``, left children first.

        ``buf`` holds the buffer rows from ``start`` on (the circuit passes only
        the block of rows the children lie in, when they lie in one).
        """
        bt = buf.transpose(1, 2)  # (rows, K_max, B): contiguous for a batch-fastest buffer
        rows = self.pair_rows if start == 0 else self.pair_rows - start
        return _GatherChildren.apply(bt, rows, self.k_in, self.distinct)

    def _child_values_t(self, buf: Tensor, start: int = 0) -> tuple[Tensor, Tensor]:
        """The children's log-values, batch-fastest: ``(P, k_in, B)`` each, contiguous."""
        ab = self._stacked_children_t(buf, start)
        P = self.left.shape[0]
        return ab[:P], ab[P:]

    def forward(self, buf: Tensor, log_w: Tensor | None = None, start: int = 0) -> Tensor:
        """Sum-product values ``(P, B, K_out)`` (batch-fastest) from the buffer ``(rows, B, K_max)`` (its rows from ``start`` on)."""
        w = self.weights() if log_w is None else torch.exp(log_w)
        ab = self._stacked_children_t(buf, start)  # (2P, I, B)
        return _LogOuterMatmul.apply(ab, None, w).transpose(1, 2)  # (P, K_out, B) -> (P, B, K_out)

    def forward_max(self, buf: Tensor, start: int = 0) -> Tensor:
        """Max-product values ``(P, B, K_out)``: the best product for each sum.

        ``max_{i,j} (log w_ijk + a_i + b_j)`` has no matrix-product form; the
        ``(P, I*J, K_out, B)`` scores are reduced in blocks of partitions.
        """
        a, b = self._child_values_t(buf, start)  # (P, I, B), (P, J, B)
        P, I, B = a.shape
        J, K = b.shape[1], self.k_out
        lw = self.log_weights().unsqueeze(-1)  # (P, I*J, K_out, 1)
        blocks = _blocks(P, I * J * (K + 1) * B * a.element_size())
        if torch.is_grad_enabled():  # differentiable: fresh tensors per block
            outs = [((a[blk].unsqueeze(2) + b[blk].unsqueeze(1)).view(-1, I * J, 1, B) + lw[blk]).amax(1) for blk in blocks]
            return torch.cat(outs).transpose(1, 2)  # (P, B, K_out)
        out = a.new_empty(P, K, B)
        c0 = blocks[0].stop - blocks[0].start
        ws_prod, ws = a.new_empty(c0, I, J, B), a.new_empty(c0, I * J, K, B)
        for blk in blocks:
            c = blk.stop - blk.start
            prod = torch.add(a[blk].unsqueeze(2), b[blk].unsqueeze(1), out=ws_prod[:c]).view(c, I * J, 1, B)
            torch.amax(torch.add(prod, lw[blk], out=ws[:c]), dim=1, out=out[blk])  # (c, I*J, K_out, B) -> (c, K_out, B)
        return out.transpose(1, 2)  # (P, B, K_out)

    def pair_scores(self, buf: Tensor | None, part: Tensor, sample: Tensor, choice: Tensor) -> Tensor:
        """``log w + log product`` of every product under one chosen sum, for selected (partition, sample) pairs.

        The backtracking of sampling and MPE scores only the pairs on a chosen
        path, without building :meth:`product_scores` for every partition and sample.

        Args:
            buf: the buffer ``(rows, B, K_max)``; None scores the prior (every
                child value 0, as when no variable is observed).
            part: ``(A,)`` partition positions in this layer.
            sample: ``(A,)`` sample indices.
            choice: ``(A,)`` index of the chosen sum in ``[0, K_out)``.

        Returns:
            ``(A, I*J)``.
        """
        lw = self.log_weights()[part, :, choice]  # (A, I*J)
        if buf is None:
            return lw
        a = buf[self.left[part], sample, : self.k_in]  # (A, I)
        b = buf[self.right[part], sample, : self.k_in]  # (A, J)
        return lw + (a.unsqueeze(2) + b.unsqueeze(1)).flatten(1)

    def product_scores(self, buf: Tensor) -> Tensor:
        """``log w + log product`` for every sum and product: ``(P, B, I*J, K_out)``."""
        a, b = self.child_values(buf)
        prod = (a.unsqueeze(-1) + b.unsqueeze(-2)).flatten(-2)  # (P, B, I*J)
        return prod.unsqueeze(-1) + self.log_weights().unsqueeze(1)  # (P, B, I*J, K_out)


class MixingLayer(nn.Module):
    """Mixes the partition outputs of regions that have several partitions.

    Output ``k`` of region ``r`` is ``sum_p v[r, p, k] * partition_p[k]``; with
    per-output mixing weights this equals one sum node over all of the region's
    products.

    Args:
        table: ``(R, P_max)`` partition positions per region, -1 for padding.
        k: entries per vector.
    """

    def __init__(self, table: Tensor, k: int) -> None:
        super().__init__()
        self.register_buffer("table", table.clamp_min(0), persistent=False)
        self.register_buffer("valid", (table >= 0).unsqueeze(-1), persistent=False)  # (R, P_max, 1)
        self.logits = nn.Parameter(torch.randn(table.shape[0], table.shape[1], k))  # (R, P_max, K)

    def log_weights(self) -> Tensor:
        """Normalized log-weights ``(R, P_max, K)``, zero probability on padding."""
        return torch.log_softmax(self.logits.masked_fill(~self.valid, -torch.inf), dim=1)

    def scores(self, parts: Tensor, log_w: Tensor | None = None) -> Tensor:
        """``log v + partition value``: ``(R, P_max, B, K)`` from partition values ``(P, B, K)``."""
        return self._scores_t(parts, log_w).transpose(2, 3)

    def _scores_t(self, parts: Tensor, log_w: Tensor | None = None) -> Tensor:
        """:meth:`scores`, batch-fastest: ``(R, P_max, K, B)``."""
        log_w = self.log_weights() if log_w is None else log_w
        return parts.transpose(1, 2)[self.table] + log_w.unsqueeze(-1)  # (R, P_max, K, B)

    def forward(self, parts: Tensor, log_w: Tensor | None = None) -> Tensor:
        """Region values ``(R, B, K)``, batch-fastest."""
        return torch.logsumexp(self._scores_t(parts, log_w), dim=1).transpose(1, 2)

    def forward_max(self, parts: Tensor) -> Tensor:
        """Max-product region values ``(R, B, K)``, batch-fastest."""
        return self._scores_t(parts).amax(1).transpose(1, 2)

    def pair_scores(self, parts: Tensor | None, region: Tensor, sample: Tensor, choice: Tensor) -> Tensor:
        """:meth:`scores` of selected (region, sample, chosen sum) triples: ``(A, P_max)``.

        Args:
            parts: partition values ``(P, B, K)``; None scores the prior (all 0).
            region, sample, choice: ``(A,)`` each.
        """
        log_v = self.log_weights()[region, :, choice]  # (A, P_max)
        if parts is None:
            return log_v
        return log_v + parts[self.table[region], sample.unsqueeze(1), choice.unsqueeze(1)]  # (A, P_max)
