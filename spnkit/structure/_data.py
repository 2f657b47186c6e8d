"""Input checks and discrete codes shared by the structure-learning algorithms.

Data are ``(N, D)`` tensors or arrays; the optional mask ``marginalized`` has the
same shape, True = missing (spnkit's polarity everywhere). Values at missing
entries are never read: they may be NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_BINS", "ArrayLike", "Data", "as_data", "check_float", "check_int", "discrete_codes", "subsample"]

ArrayLike = Tensor | np.ndarray

#: Default number of equal-width bins for discrete variables with a wider range.
DEFAULT_BINS = 8


@dataclass(frozen=True)
class Data:
    """Checked data.

    Attributes:
        values: ``(N, D)`` float64 values; missing entries hold 0.
        observed: ``(N, D)`` bool, True where a value is observed; None when
            every entry is observed.
        discrete: whether the data are treated as discrete (integer values).
    """

    values: Tensor
    observed: Tensor | None
    discrete: bool

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])

    def rows(self, idx: Tensor) -> Data:
        """The data restricted to the rows ``idx`` (a 1-D long tensor)."""
        obs = None if self.observed is None else self.observed[idx]
        return Data(self.values[idx], obs, self.discrete)


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an int (not bool) of at least ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_float(name: str, value: object, low: float, high: float) -> None:
    """Raise ValueError unless ``value`` is a real number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _as_tensor(name: str, x: object) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got a numpy array of dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real, got dtype {x.dtype}")
        return x.detach().cpu()
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def as_data(data: object, marginalized: object = None, discrete: bool | None = None) -> Data:
    """Check data and mask and decide whether the data are discrete.

    Args:
        data: ``(N, D)`` numbers, ``N >= 1``, ``D >= 1``.
        marginalized: None, or ``(N, D)`` bool (or 0/1 numbers), True = missing.
        discrete: True/False to force; None infers it: integer or bool dtypes, or
            floats whose observed values are all whole numbers, are discrete.

    Returns:
        The checked :class:`Data`.

    Raises:
        ValueError: non-2-D or empty data, a mask of another shape or with values
            other than 0/1, NaN or infinite values at observed entries, or
            ``discrete=True`` with non-integer values.
    """
    x = _as_tensor("data", data)
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"data must be 2-D (N, D) with N, D >= 1, got shape {tuple(x.shape)}")
    if discrete is not None and not isinstance(discrete, bool):
        raise ValueError(f"discrete must be True, False or None, got {discrete!r}")
    observed = None
    if marginalized is not None:
        m = _as_tensor("marginalized", marginalized)
        if tuple(m.shape) != tuple(x.shape):
            raise ValueError(f"marginalized must have the shape of data, {tuple(x.shape)}; got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError("marginalized must be bool or hold only 0 and 1 (1 = missing)")
            m = m != 0
        if bool(m.any()):
            observed = ~m
    values = x.to(torch.float64)
    if observed is not None:
        values = values.masked_fill(~observed, 0.0)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("data hold NaN or infinite values at observed entries; mark them missing in marginalized")
    integral = not x.is_floating_point() or bool((values == values.round()).all())
    if discrete is None:
        discrete = integral
    elif discrete and not integral:
        raise ValueError("discrete data must hold integer values; pass discrete=False for continuous data")
    return Data(values, observed, discrete)


def subsample(d: Data, max_rows: int | None, seed: int) -> Data:
    """At most ``max_rows`` rows of ``d``, drawn without replacement with ``seed`` (all rows if None)."""
    if max_rows is None:
        return d
    check_int("max_rows", max_rows, 1)
    n = d.shape[0]
    if n <= max_rows:
        return d
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:max_rows].sort().values
    return d.rows(idx)


def discrete_codes(d: Data, num_bins: int) -> tuple[Tensor, Tensor]:
    """Integer codes ``0 .. L_i - 1`` per variable.

    A variable whose observed range ``max - min + 1`` is at most ``num_bins``
    keeps its values (code = value - min). A wider variable is quantized into
    ``num_bins`` equal-width bins over its observed range:
    ``code = (value - min) * num_bins // (max - min + 1)``; for 256-level pixels
    and 8 bins these are 0-31, 32-63, ... 224-255.

    Args:
        d: discrete data.
        num_bins: the most levels a variable keeps.

    Returns:
        codes ``(N, D)`` int64 (0 at missing entries) and the number of levels
        ``L`` ``(D,)`` int64 (1 for a variable never observed).
    """
    v = d.values.to(torch.int64)
    if d.observed is None:
        lo, hi = v.min(0).values, v.max(0).values
    else:
        big = torch.iinfo(torch.int64).max
        lo = v.masked_fill(~d.observed, big).min(0).values
        hi = v.masked_fill(~d.observed, -big).max(0).values
        never = lo > hi
        lo, hi = torch.where(never, 0, lo), torch.where(never, 0, hi)
    width = hi - lo + 1
    shifted = v - lo
    codes = torch.where(width <= num_bins, shifted, shifted * num_bins // width)
    if d.observed is not None:
        codes = codes.masked_fill(~d.observed, 0)
    return codes, width.clamp(max=num_bins)
