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

No layer loops over regions, nodes or variables: each is a handful of batched
tensor operations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .leaves import Leaf

__all__ = ["LeafLayer", "ProductSumLayer", "MixingLayer", "log_matmul_exp"]


def _stable_max(x: Tensor, dim: int) -> Tensor:
    """Max over ``dim`` (kept), with non-finite maxima replaced by 0, detached."""
    m = x.detach().amax(dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _safe_log(s: Tensor) -> Tensor:
    """``log(s)`` for ``s >= 0`` with a zero gradient (not NaN) where ``s == 0``."""
    pos = s > 0
    return torch.where(pos, torch.log(torch.where(pos, s, torch.ones_like(s))), torch.full_like(s, -torch.inf))


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
    ma, mb = _stable_max(log_a, -1), _stable_max(log_b, -1)  # (P, B, 1)
    a, b = torch.exp(log_a - ma), torch.exp(log_b - mb)  # (P, B, I), (P, B, J)
    outer = (a.unsqueeze(-1) * b.unsqueeze(-2)).flatten(-2)  # (P, B, I*J)
    return _safe_log(torch.bmm(outer, weights)) + ma + mb  # (P, B, K)


class LeafLayer(nn.Module):
    """``K`` factorized leaf distributions for each leaf region, as one matrix product.

    A leaf region's log-density is linear in the statistics of its variables:
    ``sum_{d in scope} w_d <T(x_d), eta_{d,k}>``. The ``(batch, variables, K)``
    tensor of per-variable log-densities is never built. Two layouts compute
    the same numbers:

    * ``dense``: the natural parameters are scattered into a ``(S, D, R*K)``
      matrix (zero where a variable is outside a region) and the statistics
      ``(S, B, D)`` are multiplied by it: no gather, one large GEMM. Chosen
      when each variable lies in few of the leaf regions (``R*D <= 32 *
      sum|scope|``), where the wasted multiply-adds cost less than a gather.
    * ``gather``: the statistics are gathered per region into ``(R, B, S*n)``
      and multiplied by ``(R, S*n, K)`` in a batched matmul.

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
        if layout == "auto":
            layout = "dense" if len(scopes) * num_vars <= 32 * sum(len(s) for s in scopes) else "gather"
        if layout not in ("dense", "gather"):
            raise ValueError(f"layout must be 'dense', 'gather' or 'auto', got {layout!r}")
        self.layout = layout
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
        """Scatter per-slot coefficients ``(R, n, K, S)`` into ``(S, D, R*K)``, zero outside each scope."""
        R, n, K, S = coef.shape
        dense = coef.new_zeros(S, self.num_vars + 1, R, K)
        rows = torch.arange(R, device=coef.device).view(R, 1)
        dense[:, self.var_index, rows, :] = coef.permute(3, 0, 1, 2)  # padding slots land in row D
        return dense[:, : self.num_vars].reshape(S, self.num_vars, R * K)  # (S, D, R*K)

    def _linear(self, feats: Tensor, coef: Tensor) -> Tensor:
        """``out[r, b, k] = sum_{d, s} feats[s, b, d] * coef[r, slot(d), k, s]`` for feats ``(S, B, D)``: ``(R, B, K)``."""
        R, n, K, S = coef.shape
        B = feats.shape[1]
        if self.layout == "dense":
            out = torch.bmm(feats, self._dense(coef)).sum(0)  # (S, B, R*K) -> (B, R*K)
            return out.view(B, R, K).transpose(0, 1)  # (R, B, K)
        pad = feats.new_zeros(S, B, 1)
        g = torch.cat([feats, pad], 2)[:, :, self.var_index]  # (S, B, R, n)
        g = g.permute(2, 1, 0, 3).reshape(R, B, S * n)  # (R, B, S*n)
        return torch.bmm(g, coef.permute(0, 3, 1, 2).reshape(R, S * n, K))  # (R, B, K)

    def forward(self, x: Tensor, w: Tensor, eta: Tensor | None = None) -> Tensor:
        """Leaf log-densities.

        Args:
            x: values ``(B, D)``; unobserved entries hold 0.
            w: evidence weights ``1 - m``, ``(B, D)``.
            eta: natural parameters ``(R, n, K, S)``; computed from the layer's
                parameters when None (EM passes its own to read their gradient).

        Returns:
            ``(R, B, K)``.
        """
        eta = self.natural() if eta is None else eta  # (R, n, K, S)
        return self._linear(self.leaf.statistics(x) * w, eta)  # (S, B, D) -> (R, B, K)

    def forward_max(self, x: Tensor, w: Tensor) -> Tensor:
        """Max-product leaf values: observed factors give their log-density, unobserved ones their log-maximum.

        Returns:
            ``(R, B, K)``.
        """
        peak = self.leaf.log_max(self.param_dict()).unsqueeze(-1)  # (R, n, K, 1)
        return self.forward(x, w) + self._linear((1 - w).unsqueeze(0), peak)

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
        self.k_in, self.k_out = k_in, k_out
        self.logits = nn.Parameter(torch.randn(len(left), k_in * k_in, k_out))  # (P, I*J, K_out)
        self.register_buffer("valid", None if valid is None else valid.reshape(len(left), k_in * k_in, 1), persistent=False)

    @property
    def num_partitions(self) -> int:
        return self.left.shape[0]

    def log_weights(self) -> Tensor:
        """Normalized log-weights ``(P, I*J, K_out)``; each output's weights sum to 1."""
        logits = self.logits
        if self.valid is not None:
            logits = logits.masked_fill(~self.valid, -torch.inf)
        return torch.log_softmax(logits, dim=1)

    def child_values(self, buf: Tensor) -> tuple[Tensor, Tensor]:  # not `children`: that would shadow nn.Module.children (breaks .to/.double)
        """The children's log-values ``(P, B, k_in)`` each."""
        return buf[self.left, :, : self.k_in], buf[self.right, :, : self.k_in]

    def forward(self, buf: Tensor, log_w: Tensor | None = None) -> Tensor:
        """Sum-product values ``(P, B, K_out)`` from the buffer ``(rows, B, K_max)``."""
        log_w = self.log_weights() if log_w is None else log_w
        a, b = self.child_values(buf)
        return log_matmul_exp(a, b, torch.exp(log_w))

    def forward_max(self, buf: Tensor) -> Tensor:
        """Max-product values ``(P, B, K_out)``: the best product for each sum."""
        return self.product_scores(buf).amax(2)

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
        log_w = self.log_weights() if log_w is None else log_w
        return parts[self.table] + log_w.unsqueeze(2)

    def forward(self, parts: Tensor, log_w: Tensor | None = None) -> Tensor:
        """Region values ``(R, B, K)``."""
        return torch.logsumexp(self.scores(parts, log_w), dim=1)

    def forward_max(self, parts: Tensor) -> Tensor:
        """Max-product region values ``(R, B, K)``."""
        return self.scores(parts).amax(1)
