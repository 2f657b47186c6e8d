"""Mixed leaves: a leaf family per variable, for tables of continuous, count and categorical columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import LeafFamily

if TYPE_CHECKING:  # pragma: no cover
    from ..layers.mixed import MixedLeafLayer

__all__ = ["Mixed"]


def _columns(value: object, family: object) -> tuple[int, ...]:
    if isinstance(value, (int,)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, Tensor):
        value = value.tolist()
    try:
        cols = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"the columns of {family!r} must be a list of ints, got {value!r}") from None
    if not cols or not all(hasattr(type(c), "__index__") and not isinstance(c, bool) and int(c) >= 0 for c in cols):
        raise ValueError(f"the columns of {family!r} must be a non-empty list of ints >= 0, got {value!r}")
    return tuple(int(c) for c in cols)


class Mixed(LeafFamily):
    """One leaf family per variable: each leaf region holds a product of one leaf per family, over its variables of that family.

    Give either a mapping from family to columns or from column to family::

        spnkit.Mixed({spnkit.Normal.from_data(x[:, :3]): [0, 1, 2], spnkit.Poisson(): [3], spnkit.Categorical(5): [4, 5]})
        spnkit.Mixed({0: spnkit.Normal(), 1: spnkit.Poisson()})

    The columns must be ``0 .. D - 1``, each named once, ``D`` the circuit's
    number of variables. Families may be any :class:`~spnkit.Leaf` or
    :class:`~spnkit.MultivariateNormal` (a full-covariance Gaussian over a
    leaf region's variables of that family); equal families are merged.
    A leaf component ``k`` of a region is the product of component ``k`` of
    each family's layer over the region's variables of that family; each
    family's layer is built as in a circuit of that family alone
    (:meth:`LeafFamily.make_layer` over the families' columns), and their
    log-densities are added. Masks, sampling, MPE, EM, conditional
    expectations and saving work per family. Soft evidence is taken when every
    family takes it.

    Attributes:
        parts: ``((family, columns), ...)`` ordered by first column.
    """

    def __init__(self, families: Mapping) -> None:
        if not isinstance(families, Mapping) or not families:
            raise ValueError("Mixed takes a non-empty dict {family: [columns]} or {column: family}")
        keys = list(families)
        by_family: dict[LeafFamily, list[int]] = {}
        if all(hasattr(type(k), "__index__") and not isinstance(k, bool) for k in keys):  # {column: family}
            for col, fam in families.items():
                by_family.setdefault(self._family(fam), []).append(int(col))
        else:
            for fam, cols in families.items():
                by_family.setdefault(self._family(fam), []).extend(_columns(cols, fam))
        seen: dict[int, LeafFamily] = {}
        for fam, cols in by_family.items():
            for c in cols:
                if c < 0:
                    raise ValueError(f"column indices must be >= 0, got {c}")
                if c in seen:
                    raise ValueError(f"column {c} is given two families: {seen[c]!r} and {fam!r}")
                seen[c] = fam
        missing = sorted(set(range(len(seen))) - set(seen))
        if missing:
            raise ValueError(f"Mixed must name every column 0 .. {max(seen)}; missing {missing[:10]}")
        parts = sorted(((fam, tuple(sorted(cols))) for fam, cols in by_family.items()), key=lambda p: p[1][0])
        self._parts = tuple(parts)

    @staticmethod
    def _family(fam: object) -> LeafFamily:
        if isinstance(fam, Mixed) or not isinstance(fam, LeafFamily):
            raise ValueError(f"Mixed takes leaf families such as spnkit.Normal() (not Mixed), got {fam!r}")
        return fam

    @property
    def parts(self) -> tuple[tuple[LeafFamily, tuple[int, ...]], ...]:
        return self._parts

    @property
    def num_vars(self) -> int:
        """The number of columns ``D``."""
        return sum(len(cols) for _, cols in self._parts)

    def family_of(self, column: int) -> LeafFamily:
        """The family of one column."""
        for fam, cols in self._parts:
            if column in cols:
                return fam
        raise ValueError(f"column {column} is not in this Mixed family (columns 0 .. {self.num_vars - 1})")

    # ------------------------------------------------------- value semantics
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mixed) and self._parts == other._parts

    def __hash__(self) -> int:
        return hash(("Mixed", self._parts))

    def __repr__(self) -> str:
        inner = ", ".join(f"{fam!r}: {list(cols)}" for fam, cols in self._parts)
        return f"Mixed({{{inner}}})"

    def __setattr__(self, name: str, value: object) -> None:
        if name != "_parts" or hasattr(self, "_parts"):
            raise AttributeError("Mixed families are immutable")
        object.__setattr__(self, name, value)

    # -------------------------------------------------------------- family
    @property
    def restricted_support(self) -> bool:  # type: ignore[override]
        return any(fam.restricted_support for fam, _ in self._parts)

    @property
    def soft_evidence(self) -> bool:  # type: ignore[override]
        return all(fam.soft_evidence for fam, _ in self._parts)

    @property
    def discrete(self) -> bool:  # type: ignore[override]
        return all(fam.discrete for fam, _ in self._parts)

    def support_error(self, x: Tensor, observed: Tensor | None) -> str | None:
        for fam, cols in self._parts:
            if not fam.restricted_support:
                continue
            idx = torch.tensor(cols, device=x.device)
            msg = fam.support_error(x.index_select(-1, idx), None if observed is None else observed.index_select(-1, idx))
            if msg is not None:
                return f"columns {list(cols)[:8]}{'...' if len(cols) > 8 else ''}: {msg}"
        return None

    def dtype_error(self, dtype: torch.dtype) -> str | None:
        for fam, _ in self._parts:
            msg = fam.dtype_error(dtype)
            if msg is not None:
                return msg
        return None

    def make_layer(self, scopes, num_vars, num_leaves) -> "MixedLeafLayer":
        if num_vars != self.num_vars:
            raise ValueError(f"this Mixed family names {self.num_vars} columns but the region graph has {num_vars} variables")
        from ..layers.mixed import MixedLeafLayer

        return MixedLeafLayer(self, scopes, num_vars, num_leaves)
