"""Mixing layers: sums over the partitions of regions that have several."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SumWeights

__all__ = ["MixingLayer"]


class MixingLayer(SumWeights):
    """Mixes the partition outputs of regions that have several partitions.

    Output ``k`` of region ``r`` is ``sum_p v[r, p, k] * partition_p[k]``; with
    per-output mixing weights this equals one sum node over all of the region's
    products.

    Args:
        table: ``(R, P_max)`` partition positions per region, -1 for padding.
        k: entries per vector.
    """

    table: Tensor
    valid: Tensor

    def __init__(self, table: Tensor, k: int) -> None:
        super().__init__((table.shape[0], table.shape[1], k), (table >= 0).unsqueeze(-1))
        self.register_buffer("table", table.clamp_min(0), persistent=False)

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
