"""What the sum layers share: normalized weights stored as logits, and the gather of children rows."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .kernels import GatherPart, GatherRows

__all__ = ["SumWeights", "ChildRows", "RowSource"]


class SumWeights(nn.Module):
    """Sum-node weights as logits ``(A, I, K)``: ``K`` sums per row ``a``, each over ``I`` inputs, normalized over dim 1.

    Entries where ``valid`` ``(A, I, 1)`` is False (inputs that read padding)
    have weight zero. Every sum layer of a circuit stores its weights this way,
    so EM's M-step (normalized expected counts over dim 1) is the same for all.
    """

    valid: Tensor | None

    def __init__(self, shape: tuple[int, int, int], valid: Tensor | None) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(shape))  # (A, I, K)
        self.register_buffer("valid", valid, persistent=False)

    def masked_logits(self) -> Tensor:
        """The logits with invalid inputs at ``-inf``."""
        return self.logits if self.valid is None else self.logits.masked_fill(~self.valid, -torch.inf)

    def log_weights(self) -> Tensor:
        """Normalized log-weights ``(A, I, K)``; each sum's weights add up to 1."""
        return torch.log_softmax(self.masked_logits(), dim=1)

    def weights(self) -> Tensor:
        """Normalized weights ``(A, I, K)`` (one softmax: fewer passes than ``exp`` of :meth:`log_weights`)."""
        return torch.softmax(self.masked_logits(), dim=1)

    def effective_counts(self) -> Tensor:
        """Weights per row ``a`` that are not fixed to zero by padding: ``(A,)`` int64."""
        A, I, K = self.logits.shape
        if self.valid is None:
            return torch.full((A,), I * K, dtype=torch.long)
        return self.valid.reshape(A, I).sum(1).long() * K


class RowSource(NamedTuple):
    """Rows of one block of the upward pass that a layer reads, and where they go in its input (see :class:`ChildRows`)."""

    block: int
    rows: Tensor  # (m,) rows of the block
    dest: slice | Tensor  # positions in the gathered tensor


class ChildRows(nn.Module):
    """Gathers a layer's input rows from the blocks of the upward pass: ``(n, k, B)``, batch-fastest and contiguous.

    A layer that reads one whole block in order gets the block itself (no copy).

    The upward pass keeps one block per height (the leaf layer's rows, then each
    level's regions), each ``(rows, K_max, B)``; a layer whose children lie in
    several blocks reads each with one ``index_select`` and never concatenates
    the blocks.

    Args:
        sources: per source block, its rows and their positions in the output.
        n: rows of the output.
        k: entries read from each row.
        block_sizes: number of rows of every block (to tell whether a source covers its block).
    """

    def __init__(self, sources: list[RowSource], n: int, k: int, block_sizes: list[int]) -> None:
        super().__init__()
        self.n, self.k = n, k
        self.blocks = [s.block for s in sources]
        self._dest_slices: list[slice | None] = []
        self._meta: list[tuple[bool, bool]] = []
        for i, s in enumerate(sources):
            self.register_buffer(f"rows_{i}", s.rows.long(), persistent=False)
            if isinstance(s.dest, slice):
                self._dest_slices.append(s.dest)
            else:
                self._dest_slices.append(None)
                self.register_buffer(f"dest_{i}", s.dest.long(), persistent=False)
            distinct = bool(s.rows.unique().numel() == s.rows.numel())
            sole = self.blocks.count(s.block) == 1
            covers = sole and distinct and s.rows.numel() == block_sizes[s.block]
            self._meta.append((distinct, covers))
        # one source read whole, in order: the output is the block itself (when it has k entries per row)
        only = sources[0] if len(sources) == 1 else None
        self.whole = (only is not None and isinstance(only.dest, slice) and only.dest == slice(0, n)
                      and only.rows.numel() == n == block_sizes[only.block]
                      and bool(torch.equal(only.rows.long(), torch.arange(n))))

    def parts(self) -> tuple[GatherPart, ...]:
        """The gather parts, with this module's (device-resident) index tensors."""
        out = []
        for i, (dest, (distinct, covers)) in enumerate(zip(self._dest_slices, self._meta)):
            d: slice | Tensor = dest if dest is not None else getattr(self, f"dest_{i}")
            out.append(GatherPart(i, getattr(self, f"rows_{i}"), d, distinct, covers))
        return tuple(out)

    def forward(self, blocks: list[Tensor]) -> Tensor:
        """``(n, k, B)`` from the upward pass's blocks ``(rows, K_max, B)`` each."""
        first = blocks[self.blocks[0]]
        if self.whole and first.shape[1] == self.k and first.is_contiguous():
            return first  # no copy: the gradient flows into the block directly
        return GatherRows.apply(self.parts(), self.n, self.k, *(blocks[b] for b in self.blocks))
