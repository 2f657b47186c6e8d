"""Normal leaves with bounded variance, and the hand-written gradients of their natural parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import Leaf, has_data, zero_unobserved

__all__ = ["Normal", "data_bounds"]


def data_bounds(x: Tensor, marginalized: Tensor | None, min_ratio: float, max_ratio: float, joint: bool = False
                ) -> tuple[float, float, tuple[float, float]]:
    """Variance bounds and a range of means from data (see :meth:`Normal.from_data`).

    Args:
        x: ``(N, D)`` data; NaN entries count as missing.
        marginalized: optional ``(N, D)`` bool, True = missing.
        min_ratio, max_ratio: the bounds as multiples of the smallest and largest column variance.
        joint: scale ``max_var`` by the largest eigenvalue of the (pairwise-complete) covariance instead.

    Returns:
        ``(min_var, max_var, (low, high))``.

    Raises:
        ValueError: for malformed input or data without two distinct observed values in any column.
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 2 or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x must be a real (N, D) tensor with N >= 2, got {getattr(x, 'shape', type(x).__name__)}")
    for name, value in (("min_ratio", min_ratio), ("max_ratio", max_ratio)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    x = x.detach().to(torch.float64)
    observed = torch.isfinite(x)
    if marginalized is not None:
        if not isinstance(marginalized, Tensor) or marginalized.dtype != torch.bool or marginalized.shape != x.shape:
            raise ValueError(f"marginalized must be None or a bool tensor of shape {tuple(x.shape)}")
        observed &= ~marginalized.to(x.device)
    w = observed.to(x.dtype)
    n = w.sum(0)  # (D,)
    mean = torch.where(observed, x, 0.0).sum(0) / n.clamp_min(1)
    z = torch.where(observed, x - mean, 0.0)  # centred, zero where missing
    var = (z * z).sum(0) / n.clamp_min(1)
    usable = (n >= 2) & (var > 0)
    if not bool(usable.any()):
        raise ValueError("from_data needs a column with at least two distinct observed values")
    v = var[usable]
    high = float(v.max())
    if joint:
        cov = (z.t() @ z) / (w.t() @ w).clamp_min(1)  # (D, D) pairwise-complete
        high = max(high, float(torch.linalg.eigvalsh(cov[usable][:, usable]).max()))
    sd = var.sqrt()
    low_loc, high_loc = float((mean - sd)[usable].min()), float((mean + sd)[usable].max())
    return min_ratio * float(v.min()), max_ratio * high, (low_loc, high_loc)


def _uniform(shape: tuple[int, ...], low: float, high: float, dtype: torch.dtype) -> Tensor:
    return torch.empty(shape, dtype=dtype).uniform_(low, high)


def _normal_natural(loc: Tensor, raw: Tensor, lo: float, hi: float, out: tuple[Tensor, Tensor, Tensor] | None = None
                    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """The three natural parameters of bounded-variance Normals (for ``x^2, x, 1``) and what their backward needs: ``(loc, v, prec)``.

    ``out``: three tensors of ``loc``'s shape the parameters are written into
    (e.g. slices of a leaf layer's coefficients); None: new tensors.
    """
    o0, o1, o2 = (None, None, None) if out is None else out
    v = torch.sigmoid(raw)
    var = v.mul(hi - lo).add_(lo)
    prec = var.reciprocal()
    e1 = torch.mul(loc, prec, out=o1)
    e0 = torch.mul(prec, -0.5, out=o0)
    e2 = torch.mul(var.log_().addcmul_(loc, e1).add_(math.log(2 * math.pi)), -0.5, out=o2)  # -(log(2 pi var) + loc^2 prec) / 2
    return (e0, e1, e2), (loc, v, prec)


def _normal_natural_grads(saved: tuple[Tensor, Tensor, Tensor], g0: Tensor, g1: Tensor, g2: Tensor | None, span: float,
                          needs: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``loc`` and ``raw`` from those of the three natural parameters (``g2`` None: zero)."""
    loc, v, prec = saved
    if g2 is None:
        g2 = torch.zeros_like(loc)
    g_loc = torch.addcmul(g1, loc, g2, value=-1.0).mul_(prec) if needs[0] else None  # prec (g1 - loc g2)
    g_raw = None
    if needs[1]:
        # d/dvar = prec^2 (g0 / 2 - loc g1 + loc^2 g2 / 2) - prec g2 / 2 = prec (prec t - g2) / 2 with
        # t = g0 - 2 loc (g1 - loc g2 / 2); dvar/draw = (hi - lo) v (1 - v)
        t = torch.addcmul(g0, loc, torch.addcmul(g1, loc, g2, value=-0.5), value=-2.0)
        g_raw = t.mul_(prec).sub_(g2).mul_(prec).mul_(torch.sub(1.0, v).mul_(v)).mul_(0.5 * span)
    return g_loc, g_raw


class _NormalNatural(torch.autograd.Function):
    """Natural parameters of bounded-variance Normals, ``(*P) x 2 -> (*P, 3)``, with a hand-written backward.

    ``var = lo + (hi - lo) sigmoid(raw)``, ``prec = 1 / var``; the statistics
    ``(x^2, x, 1)`` take ``(-prec / 2, loc prec, -loc^2 prec / 2 - log(2 pi var) / 2)``.
    Autograd through the same elementwise steps keeps and revisits more
    intermediates; this Function took about 9 ms against 12.8 ms per forward and
    backward over 500k leaves (ad-hoc timing, one thread). The leaf parameters are
    about as many as the circuit's weights, so this matters at small batches.
    """

    @staticmethod
    def forward(ctx, loc: Tensor, raw: Tensor, lo: float, hi: float) -> Tensor:
        eta, saved = _normal_natural(loc, raw, lo, hi)
        ctx.save_for_backward(*saved)
        ctx.span = hi - lo
        return torch.stack(eta, dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        g0, g1, g2 = grad.unbind(-1)
        return (*_normal_natural_grads(ctx.saved_tensors, g0, g1, g2, ctx.span, ctx.needs_input_grad[:2]), None, None)


class _NormalLayerNatural(torch.autograd.Function):
    """:class:`_NormalNatural` written straight into a leaf layer's layout (:meth:`Leaf.layer_coefficients`).

    ``loc, raw (R, n, K)`` -> ``coef (R, S' * n, K)`` and, when split, the
    constant statistic's ``(R, n, K)``. Each statistic's coefficients are one
    contiguous ``(n, K)`` block per region, in the parameters' own order, so
    they are written in place (no permuted copy) and their gradients are read
    the same way; the split replaces two slices whose backward passes would
    each fill and add a full-size zero gradient.
    """

    @staticmethod
    def forward(ctx, loc: Tensor, raw: Tensor, lo: float, hi: float, split: bool):
        R, n, K = loc.shape
        coef = loc.new_empty(R, 2 if split else 3, n, K)
        const = loc.new_empty(R, n, K) if split else None
        _, saved = _normal_natural(loc, raw, lo, hi, out=(coef[:, 0], coef[:, 1], coef[:, 2] if const is None else const))
        ctx.save_for_backward(*saved)
        ctx.span, ctx.split = hi - lo, split
        return coef.view(R, -1, K), const

    @staticmethod
    @once_differentiable
    def backward(ctx, g_coef: Tensor | None, g_const: Tensor | None):
        R, n, K = ctx.saved_tensors[0].shape
        if g_coef is None:
            assert g_const is not None  # backward runs with a gradient for at least one output
            g_coef = g_const.new_zeros(R, (2 if ctx.split else 3) * n, K)
        g = g_coef.reshape(R, -1, n, K)  # (R, S', n, K)
        g2 = g_const if ctx.split else g[:, 2]
        grads = _normal_natural_grads(ctx.saved_tensors, g[:, 0], g[:, 1], g2, ctx.span, ctx.needs_input_grad[:2])
        return (*grads, None, None, None)


@dataclass(frozen=True)
class Normal(Leaf):
    """Gaussian factors with learnable mean and variance bounded in ``[min_var, max_var]``.

    The variance is ``min_var + (max_var - min_var) * sigmoid(v)`` for an
    unconstrained ``v`` (SuPAIR separates objects from background by these
    bounds). Means start uniform in ``loc_range``; variances start spread over
    the middle of the bounds (``v`` uniform in [-1, 1]), or, with ``init_var =
    (low, high)``, with ``v`` uniform between the values that give those
    variances (kept a hair inside the bounds).
    """

    min_var: float = 1e-2
    max_var: float = 1.0
    loc_range: tuple[float, float] = (0.0, 1.0)
    init_var: tuple[float, float] | None = None
    num_stats = 3
    restricted_support = False
    constant_last = True

    def __post_init__(self) -> None:
        for name in ("min_var", "max_var"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in ("loc_range", "init_var"):
            value = getattr(self, name)
            if value is None and name == "init_var":
                continue
            if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{name} must be a pair of numbers (low, high), got {value!r}")
        if not (0 < self.min_var < self.max_var) or not math.isfinite(self.max_var):
            raise ValueError(f"need 0 < min_var < max_var < inf, got min_var={self.min_var}, max_var={self.max_var}")
        if not self.loc_range[0] <= self.loc_range[1]:
            raise ValueError(f"loc_range must be (low, high) with low <= high, got {self.loc_range}")
        if self.init_var is not None and not self.min_var <= self.init_var[0] <= self.init_var[1] <= self.max_var:
            raise ValueError(f"init_var must be (low, high) with min_var <= low <= high <= max_var, got {self.init_var}")

    @classmethod
    def from_data(cls, x: Tensor, marginalized: Tensor | None = None, *, min_ratio: float = 1e-3,
                  max_ratio: float = 2.0) -> "Normal":
        """A Normal family whose bounds and initial means suit the data's scale.

        ``Normal()``'s defaults (means start in [0, 1], variances bounded in
        [0.01, 1]) suit pixels in [0, 1]; standardized tabular data, or columns
        in other units, need bounds on their own scale. This returns
        ``min_var = min_ratio * (smallest column variance)``,
        ``max_var = max_ratio * (largest column variance)`` and means starting
        in ``[min(mean - sd), max(mean + sd)]`` over the columns. The bounds are
        shared by every column: they assume columns of comparable scale
        (standardize otherwise). ``min_ratio`` caps how far a component may
        narrow below the narrowest column (its density by ``-log(2 pi min_var) / 2``).

        Args:
            x: ``(N, D)`` data, ``N >= 2``; NaN entries count as missing.
            marginalized: optional ``(N, D)`` bool mask, True = missing.
            min_ratio, max_ratio: the variance bounds relative to the column variances.

        Raises:
            ValueError: for malformed input, or no column with two distinct observed values.

        Example:
            >>> import torch, spnkit
            >>> leaf = spnkit.Normal.from_data(torch.randn(1000, 3, dtype=torch.float64) * 10)
            >>> 50 < leaf.max_var < 300 and leaf.min_var < 0.2
            True
        """
        min_var, max_var, loc_range = data_bounds(x, marginalized, min_ratio, max_ratio)
        return cls(min_var=min_var, max_var=max_var, loc_range=loc_range)

    def init_params(self, shape, dtype):
        if self.init_var is None:
            lo, hi = -1.0, 1.0
        else:
            lo, hi = (self._unbound(v) for v in self.init_var)
        return {"loc": _uniform(shape, *self.loc_range, dtype), "var": _uniform(shape, lo, hi, dtype)}

    def _unbound(self, var: float) -> float:
        """The unconstrained ``v`` of a variance (clamped to 1e-4 inside the bounds)."""
        frac = min(max((var - self.min_var) / (self.max_var - self.min_var), 1e-4), 1 - 1e-4)
        return math.log(frac / (1 - frac))

    @property
    def prior_var(self) -> float:
        """The variance EM's prior pulls toward: the geometric mean of the bounds."""
        return math.sqrt(self.min_var * self.max_var)

    def variance(self, params: dict[str, Tensor]) -> Tensor:
        """The bounded variance ``(*P)``."""
        return self.min_var + (self.max_var - self.min_var) * torch.sigmoid(params["var"])

    def statistics(self, x):
        return self._statistics(x, constant=True)

    def varying_statistics(self, x):
        return self._statistics(x, constant=False)

    @staticmethod
    def _statistics(x: Tensor, constant: bool) -> Tensor:
        """``(x^2, x)``, and the constant 1 when ``constant``: ``(2 or 3, *X)``, a fresh tensor."""
        if x.requires_grad:
            return torch.stack([x * x, x, torch.ones_like(x)] if constant else [x * x, x])
        out = x.new_empty((3 if constant else 2, *x.shape))  # written in place: no temporaries (the leaf layer's inputs are large)
        torch.mul(x, x, out=out[0])
        out[1].copy_(x)
        if constant:
            out[2].fill_(1.0)
        return out

    def observed_statistics(self, x, observed, out, finite=False):
        out[2].copy_(observed)  # the constant statistic times the weight
        zero_unobserved(x, observed, out[2], finite, out=out[1])  # x, 0 where unobserved: x^2 and x vanish there
        torch.mul(out[1], out[1], out=out[0])  # after the zeroing: huge unobserved values cannot overflow

    def weighted_statistics(self, x, w):
        out = x.new_empty((3, *x.shape))
        torch.mul(x, x, out=out[0]).mul_(w)  # (x^2) w, x w, w: the values of statistics(x) * w, in 4 passes instead of 6
        torch.mul(x, w, out=out[1])
        out[2].copy_(w)
        return out

    def statistics_grads(self, x, grad, wrt_x):
        dot = torch.addcmul(grad[2], torch.addcmul(grad[1], grad[0], x), x)  # (g0 x + g1) x + g2
        return dot, torch.addcmul(grad[1], grad[0], x, value=2.0) if wrt_x else None  # 2 g0 x + g1

    def natural(self, params):
        return _NormalNatural.apply(params["loc"], params["var"], self.min_var, self.max_var)

    def layer_coefficients(self, params, split_constant):
        return _NormalLayerNatural.apply(params["loc"], params["var"], self.min_var, self.max_var, split_constant)

    def log_max(self, params):
        return -0.5 * torch.log(2 * math.pi * self.variance(params))

    def sample(self, params, generator):
        noise = torch.randn(params["loc"].shape, generator=generator, dtype=params["loc"].dtype, device=params["loc"].device)
        return params["loc"] + self.variance(params).sqrt() * noise

    def mode(self, params):
        return params["loc"]

    def moments(self, params):
        loc = params["loc"]
        return loc, self.variance(params) + loc * loc

    def mean_variance(self, params):
        return params["loc"], self.variance(params)

    def mean_statistics(self, params):
        loc = params["loc"]
        return torch.stack([self.variance(params) + loc * loc, loc, torch.ones_like(loc)], dim=-1)

    def support_error(self, x, observed):
        return None

    def m_step(self, stats, params, pseudocount=0.0):
        """The mean and variance of the weighted data; the variance shrunk toward :attr:`prior_var`.

        ``var = (count * var_data + pseudocount * prior_var) / (count + pseudocount)``:
        ``pseudocount`` observations of variance ``prior_var`` (an inverse-gamma
        prior's mode), so that a factor with few responsibilities keeps a
        sensible width instead of collapsing to ``min_var``.
        """
        count, s1, s2 = stats[..., 2], stats[..., 1], stats[..., 0]
        ok = has_data(count)
        safe = torch.where(ok, count, torch.ones_like(count))
        mean = s1 / safe
        var_data = (s2 / safe - mean * mean).clamp_min(0.0)
        var = ((count * var_data + pseudocount * self.prior_var) / (count + pseudocount)).clamp(self.min_var, self.max_var)
        # invert the sigmoid bound, a hair inside (min_var, max_var) to stay finite
        frac = ((var - self.min_var) / (self.max_var - self.min_var)).clamp(1e-6, 1 - 1e-6)
        return {
            "loc": torch.where(ok, mean, params["loc"]),
            "var": torch.where(ok, torch.logit(frac), params["var"]),
        }
