"""The leaf layer of a mixed circuit: one leaf layer per family, over each leaf region's variables of that family.

Family ``f`` with columns ``C_f`` gets the layer it builds in a circuit of its
own (:meth:`~spnkit.leaves.LeafFamily.make_layer`), over the leaf regions'
variables in ``C_f`` (renumbered ``0 .. |C_f| - 1``; a region with none of them
contributes log 1). The layer's log-densities are the sum of the families':
component ``k`` of a leaf region is the product of component ``k`` of each
family's leaves over the region. The only loop runs over the (few) families.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from ..leaves.mixed import Mixed
from .leaf_base import LeafLayerBase, Natural, flat, unflat

__all__ = ["MixedLeafLayer"]


class MixedLeafLayer(LeafLayerBase):
    """One leaf layer per family of a :class:`~spnkit.Mixed` family; outputs added.

    Natural parameters (and EM's counts) are the families' tensors in one flat tuple, family by family.

    Attributes:
        layers: the families' layers, in the order of ``leaf.parts``.
    """

    def __init__(self, leaf: Mixed, scopes: list[tuple[int, ...]], num_vars: int, num_leaves: int) -> None:
        super().__init__()
        self.leaf = leaf
        self.num_vars, self.num_leaves = num_vars, num_leaves
        n_max = max(len(s) for s in scopes)
        index = torch.full((len(scopes), n_max), num_vars, dtype=torch.long)
        for r, scope in enumerate(scopes):  # structure compilation, not the forward pass
            index[r, : len(scope)] = torch.as_tensor(scope, dtype=torch.long)
        self.register_buffer("var_index", index, persistent=False)
        layers = []
        for i, (family, cols) in enumerate(leaf.parts):
            local = {c: j for j, c in enumerate(cols)}
            layers.append(family.make_layer([tuple(local[v] for v in s if v in local) for s in scopes], len(cols), num_leaves))
            self.register_buffer(f"cols_{i}", torch.tensor(cols, dtype=torch.long), persistent=False)
        self.layers = nn.ModuleList(layers)
        with torch.no_grad():
            naturals = [layer.natural() for layer in layers]
        self._tupled = [isinstance(n, tuple) for n in naturals]  # each family's structure: a tuple or one tensor
        self._sizes = [len(flat(n)) for n in naturals]

    def _cols(self, i: int) -> Tensor:
        return getattr(self, f"cols_{i}")

    def family_layers(self) -> list[LeafLayerBase]:
        """The families' layers: :attr:`layers` as a typed list."""
        return cast("list[LeafLayerBase]", list(self.layers))

    def _split(self, eta: Natural) -> list[Natural]:
        """The families' natural parameters (or counts) from the flat tuple."""
        tensors = flat(eta)
        if len(tensors) != sum(self._sizes):
            raise ValueError(f"natural parameters of this mixed layer are {sum(self._sizes)} tensors, got {len(tensors)}")
        out: list[Natural] = []
        start = 0
        for tupled, n in zip(self._tupled, self._sizes):
            out.append(unflat((), tensors[start : start + n]) if tupled else tensors[start])
            start += n
        return out

    def counts_match(self, counts: object) -> bool:
        if not isinstance(counts, tuple) or len(counts) != sum(self._sizes):
            return False
        return all(layer.counts_match(c) for layer, c in zip(self.family_layers(), self._split(counts)))

    def natural(self) -> tuple[Tensor, ...]:
        return tuple(t for layer in self.family_layers() for t in flat(layer.natural()))

    def effective_parameter_counts(self) -> Tensor:
        return sum(layer.effective_parameter_counts() for layer in self.family_layers())  # type: ignore[return-value]

    def forward(self, x: Tensor, w: Tensor | None, eta: Natural | None = None, finite: bool = False) -> Tensor:
        parts: list[Natural | None] = [None] * len(self.layers) if eta is None else list(self._split(eta))
        out: Tensor | None = None
        for i, (layer, e) in enumerate(zip(self.family_layers(), parts)):
            cols = self._cols(i)
            lp = layer(x.index_select(1, cols), None if w is None else w.index_select(1, cols), e, finite)
            out = lp if out is None else out + lp
        assert out is not None  # a mixed family has at least one part
        return out

    def forward_max(self, x: Tensor, w: Tensor | None) -> Tensor:
        out: Tensor | None = None
        for i, layer in enumerate(self.family_layers()):
            cols = self._cols(i)
            lp = layer.forward_max(x.index_select(1, cols), None if w is None else w.index_select(1, cols))
            out = lp if out is None else out + lp
        assert out is not None  # a mixed family has at least one part
        return out

    def fill(self, region: Tensor, choice: Tensor, sample: Tensor, x: Tensor, m: Tensor, greedy: bool,
             generator: torch.Generator | None, out: Tensor) -> None:
        # every variable lies in exactly one chosen region per sample: each family's columns are written whole
        for i, layer in enumerate(self.family_layers()):
            cols = self._cols(i)
            part = out.new_zeros(out.shape[0], cols.numel() + 1)
            layer.fill(region, choice, sample, x.index_select(1, cols), m.index_select(1, cols), greedy, generator, part)
            out[:, cols] = part[:, :-1]

    def moments(self, x: Tensor, hidden: Tensor, posterior: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x.new_zeros(x.shape), x.new_zeros(x.shape)
        for i, layer in enumerate(self.family_layers()):
            cols = self._cols(i)
            a, b = layer.moments(x.index_select(1, cols), hidden.index_select(1, cols), posterior)
            first[:, cols], second[:, cols] = a, b
        return first, second

    def init_from_data(self, x: Tensor, observed: Tensor, weights: Tensor, pseudocount: float) -> None:
        for i, layer in enumerate(self.family_layers()):
            cols = self._cols(i)
            layer.init_from_data(x.index_select(1, cols), observed.index_select(1, cols), weights, pseudocount)

    def m_step(self, counts: Natural, step_size: float, pseudocount: float) -> None:
        for layer, c in zip(self.family_layers(), self._split(counts)):
            layer.m_step(c, step_size, pseudocount)
