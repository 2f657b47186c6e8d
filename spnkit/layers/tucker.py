"""Tucker layers: the outer product of two child vectors, mixed by ``K_out`` sums per partition."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import ChildRows, SumWeights
from .kernels import LogOuterMatmul, blocks_of

__all__ = ["TuckerLayer"]

#: ``choose(scores, dim)``: the index chosen along ``dim`` (argmax for MPE, a draw for sampling)
Chooser = Callable[[Tensor, int], Tensor]


class TuckerLayer(SumWeights):
    """Products of two child region vectors (their outer product) mixed by ``K_out`` sums per partition.

    ``out[p, k] = log sum_{i, j} w[p, i*J + j, k] a_p[i] b_p[j]`` in log space,
    for the left and right children ``a_p``, ``b_p`` of each partition ``p``:
    ``I * J * K_out`` weights per partition.

    Args:
        children: gathers the left children of all partitions, then the right ones: ``(2P, k_in, B)``.
        left, right: the children's rows in the buffer of the whole circuit, ``(P,)`` each (for backtracking).
        k_in: entries read from each child.
        k_out: sums per partition.
        valid: ``(P, k_in, k_in)`` bool, False where a child has fewer than
            ``k_in`` entries (those weights are fixed to zero); None if all valid.
    """

    left: Tensor
    right: Tensor

    def __init__(self, children: ChildRows, left: Tensor, right: Tensor, k_in: int, k_out: int, valid: Tensor | None = None) -> None:
        P = len(left)
        super().__init__((P, k_in * k_in, k_out), None if valid is None else valid.reshape(P, k_in * k_in, 1))
        self.children_rows = children
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        self.k_in, self.k_out = k_in, k_out

    @property
    def num_partitions(self) -> int:
        return self.left.shape[0]

    def partition_weight_counts(self) -> Tensor:
        """Effective weights of each partition's sums, ``(P,)`` int64 (padding excluded)."""
        return self.effective_counts()

    def _children_t(self, blocks: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The children's log-values, batch-fastest: ``(P, k_in, B)`` each."""
        ab = self.children_rows(blocks)  # (2P, k_in, B)
        P = self.num_partitions
        return ab[:P], ab[P:]

    def forward(self, blocks: list[Tensor], log_w: Tensor | None = None) -> Tensor:
        """Sum-product values ``(P, B, K_out)`` (batch-fastest) from the upward pass's blocks."""
        w = self.weights() if log_w is None else torch.exp(log_w)
        ab = self.children_rows(blocks)  # (2P, I, B)
        return LogOuterMatmul.apply(ab, None, w).transpose(1, 2)  # (P, K_out, B) -> (P, B, K_out)

    def forward_max(self, blocks: list[Tensor]) -> Tensor:
        """Max-product values ``(P, B, K_out)``: the best product for each sum.

        ``max_{i,j} (log w_ijk + a_i + b_j)`` has no matrix-product form; the
        ``(P, I*J, K_out, B)`` scores are reduced in blocks of partitions.
        """
        a, b = self._children_t(blocks)  # (P, I, B), (P, J, B)
        P, I, B = a.shape
        J, K = b.shape[1], self.k_out
        lw = self.log_weights().unsqueeze(-1)  # (P, I*J, K_out, 1)
        blocks_p = blocks_of(P, I * J * (K + 1) * B * a.element_size())
        if torch.is_grad_enabled():  # differentiable: fresh tensors per block
            outs = [((a[blk].unsqueeze(2) + b[blk].unsqueeze(1)).view(-1, I * J, 1, B) + lw[blk]).amax(1) for blk in blocks_p]
            return torch.cat(outs).transpose(1, 2)  # (P, B, K_out)
        out = a.new_empty(P, K, B)
        c0 = blocks_p[0].stop - blocks_p[0].start
        ws_prod, ws = a.new_empty(c0, I, J, B), a.new_empty(c0, I * J, K, B)
        for blk in blocks_p:
            c = blk.stop - blk.start
            prod = torch.add(a[blk].unsqueeze(2), b[blk].unsqueeze(1), out=ws_prod[:c]).view(c, I * J, 1, B)
            torch.amax(torch.add(prod, lw[blk], out=ws[:c]), dim=1, out=out[blk])  # (c, I*J, K_out, B) -> (c, K_out, B)
        return out.transpose(1, 2)  # (P, B, K_out)

    def pair_scores(self, buf: Tensor | None, part: Tensor, sample: Tensor, choice: Tensor) -> Tensor:
        """``log w + log product`` of every product under one chosen sum, for selected (partition, sample) pairs.

        Args:
            buf: the circuit's buffer ``(rows, B, K_max)``; None scores the prior
                (every child value 0, as when no variable is observed).
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

    def backtrack(self, buf: Tensor | None, part: Tensor, sample: Tensor, choice: Tensor, choose: Chooser) -> tuple[Tensor, Tensor, Tensor]:
        """The children chosen under selected sums: ``(rows, samples, entries)``, each ``(2A,)``, for ``(A,)`` pairs (see :meth:`pair_scores`)."""
        ij = choose(self.pair_scores(buf, part, sample, choice), 1)  # (A,)
        rows = torch.cat([self.left[part], self.right[part]])
        return rows, torch.cat([sample, sample]), torch.cat([ij // self.k_in, ij % self.k_in])
