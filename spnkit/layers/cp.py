"""CP layers: each child vector projected by its own sums, the projections multiplied elementwise.

``out[p, k] = prod_j (sum_i W[p, j, i, k] c_{p,j}[i])`` for the children
``c_{p,1..n}`` of partition ``p``: a CP (canonical polyadic) factorization of
the Tucker layer's ``I^n x K`` weight tensor, linear in ``K`` per child and for
any number of children. In log space the product is a sum over the children,
and each projection a log-sum-exp (shifted by its max: stable).

A *slot* is one (partition, child) pair. All slots of a layer, whatever the
partitions' arities, are projected in one batched product and summed into their
partitions by one ``index_add``. *Direct* slots enter the product unprojected
(the child's ``K`` entries align with the ``K`` outputs): a hidden Chow-Liu
tree's variable leaves, whose latent state is the parent's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import ChildRows, SumWeights
from .kernels import LogMatmul, log_max_matmul, log_project_product

__all__ = ["CPLayer"]

Chooser = Callable[[Tensor, int], Tensor]


def _by_partition(partition: Tensor, num_partitions: int) -> tuple[Tensor, Tensor]:
    """CSR of slots per partition: ``order`` (slots sorted by partition) and ``ptr`` ``(P + 1,)``."""
    order = torch.argsort(partition, stable=True)
    counts = torch.bincount(partition, minlength=num_partitions)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return order, ptr


def _expand(order: Tensor, ptr: Tensor, part: Tensor) -> tuple[Tensor, Tensor]:
    """For active partitions ``part (A,)``: the index into ``part`` and the slot of each of their slots, ``(A',)`` each."""
    counts = ptr[part + 1] - ptr[part]  # (A,)
    active = torch.repeat_interleave(torch.arange(part.shape[0], device=part.device), counts)  # (A',)
    first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    offset = torch.arange(active.shape[0], device=part.device) - first
    return active, order[ptr[part][active] + offset]


class CPLayer(SumWeights):
    """Per-child projections multiplied elementwise, for partitions of any arity.

    Args:
        children: gathers the projected slots' children, then the direct slots'
            children: ``(S + S_direct, k_in, B)``.
        num_partitions: ``P``.
        slot_partition: ``(S,)`` the partition of each projected slot.
        slot_rows: ``(S,)`` the child's row in the buffer of the whole circuit (for backtracking).
        direct_partition, direct_rows: the same for direct slots ``(S_direct,)``.
        k_in: entries read from each child.
        k_out: outputs per partition (for direct slots ``k_in == k_out``).
        valid: ``(S, k_in)`` bool, False where a child has fewer than ``k_in``
            entries (those weights are fixed to zero); None if all valid.
    """

    slot_partition: Tensor
    slot_rows: Tensor
    direct_partition: Tensor
    direct_rows: Tensor
    slot_order: Tensor
    slot_ptr: Tensor
    direct_order: Tensor
    direct_ptr: Tensor

    def __init__(self, children: ChildRows, num_partitions: int, slot_partition: Tensor, slot_rows: Tensor,
                 direct_partition: Tensor, direct_rows: Tensor, k_in: int, k_out: int, valid: Tensor | None = None) -> None:
        S = len(slot_partition)
        if len(direct_partition) and k_in != k_out:
            raise ValueError(f"direct (unprojected) children need k_in == k_out, got {k_in} and {k_out}")
        super().__init__((S, k_in, k_out), None if valid is None else valid.reshape(S, k_in, 1))
        self.children_rows = children
        self.P, self.k_in, self.k_out = num_partitions, k_in, k_out
        self.register_buffer("slot_partition", slot_partition.long(), persistent=False)
        self.register_buffer("slot_rows", slot_rows.long(), persistent=False)
        self.register_buffer("direct_partition", direct_partition.long(), persistent=False)
        self.register_buffer("direct_rows", direct_rows.long(), persistent=False)
        # a hidden Chow-Liu tree: each product has its variable's leaves as its one unprojected child
        self.one_direct_each = bool(torch.equal(self.direct_partition, torch.arange(num_partitions)))
        # every partition has `arity` projected slots, consecutive, and no direct one: one fused kernel
        a = S // num_partitions if num_partitions else 0
        regular = a > 0 and not len(direct_partition) and torch.equal(self.slot_partition, torch.arange(num_partitions).repeat_interleave(a))
        self.arity = a if regular else 0
        for name, part in (("slot", self.slot_partition), ("direct", self.direct_partition)):
            order, ptr = _by_partition(part, num_partitions)
            self.register_buffer(f"{name}_order", order, persistent=False)
            self.register_buffer(f"{name}_ptr", ptr, persistent=False)

    @property
    def num_partitions(self) -> int:
        return self.P

    @property
    def num_slots(self) -> int:
        return self.slot_partition.shape[0]

    def partition_weight_counts(self) -> Tensor:
        """Effective weights of each partition's projections, ``(P,)`` int64 (padding excluded)."""
        counts = torch.zeros(self.P, dtype=torch.long)
        return counts.index_add_(0, self.slot_partition.cpu(), self.effective_counts())

    def _combine(self, proj: Tensor, direct: Tensor) -> Tensor:
        """Sum the slots' log-values ``(S, K, B)`` and ``(S_direct, K, B)`` into their partitions: ``(P, B, K)``."""
        if self.one_direct_each:  # every partition has one unprojected child, in partition order: start from those
            out = direct
            if proj.shape[0]:
                out = out.index_add(0, self.slot_partition, proj)
            return out.transpose(1, 2)
        out = proj.new_zeros(self.P, self.k_out, proj.shape[2])  # (P, K, B): log 1 for the empty product
        if proj.shape[0]:
            out = out.index_add(0, self.slot_partition, proj)
        if direct.shape[0]:
            out = out.index_add(0, self.direct_partition, direct)
        return out.transpose(1, 2)  # (P, B, K), batch-fastest

    def forward(self, blocks: list[Tensor], log_w: Tensor | None = None) -> Tensor:
        """Values ``(P, B, K_out)`` (batch-fastest) from the upward pass's blocks."""
        c = self.children_rows(blocks)  # (S + S_direct, k_in, B)
        S = self.num_slots
        w = self.weights() if log_w is None else torch.exp(log_w)  # (S, k_in, K)
        if self.arity:
            return log_project_product(c, w, self.arity).transpose(1, 2)  # (P, K, B) -> (P, B, K)
        proj = LogMatmul.apply(c[:S], w) if S else c[:0, :0]  # (S, K, B)
        return self._combine(proj, c[S:])

    def forward_max(self, blocks: list[Tensor]) -> Tensor:
        """Max-product values ``(P, B, K_out)``: each projection's best child entry."""
        c = self.children_rows(blocks)
        S = self.num_slots
        proj = log_max_matmul(c[:S], self.log_weights()) if S else c[:0, :0]
        return self._combine(proj, c[S:])

    def backtrack(self, buf: Tensor | None, part: Tensor, sample: Tensor, choice: Tensor, choose: Chooser) -> tuple[Tensor, Tensor, Tensor]:
        """The child entries chosen under selected outputs: ``(rows, samples, entries)``.

        For each active (partition, sample, output ``k``) and each projected slot
        of the partition, the entry ``i`` of the child is chosen from
        ``log W[slot, i, k] + child[i]`` (``buf`` None: the prior, every child
        value 0); a direct child takes entry ``k`` itself.

        Args:
            buf: the circuit's buffer ``(rows, B, K_max)`` or None.
            part, sample, choice: ``(A,)`` partition positions, samples and chosen outputs.
            choose: picks an index along a dimension (argmax or a draw).
        """
        rows, samples, entries = [], [], []
        if self.num_slots:
            a, slot = _expand(self.slot_order, self.slot_ptr, part)  # (A',)
            smp, k = sample[a], choice[a]
            scores = self.log_weights()[slot, :, k]  # (A', k_in)
            if buf is not None:
                scores = scores + buf[self.slot_rows[slot], smp, : self.k_in]
            rows.append(self.slot_rows[slot])
            samples.append(smp)
            entries.append(choose(scores, 1))
        if self.direct_partition.shape[0]:
            a, slot = _expand(self.direct_order, self.direct_ptr, part)
            rows.append(self.direct_rows[slot])
            samples.append(sample[a])
            entries.append(choice[a])
        return torch.cat(rows), torch.cat(samples), torch.cat(entries)
