"""Leaf distribution families.

Every leaf of a circuit is a fully factorized distribution over its region's
variables, and every univariate factor belongs to an exponential family:
``log p(x) = <T(x), eta(theta)>`` with sufficient statistics ``T`` (the base
measure folded into the constant statistic). That makes a whole leaf layer one
batched matrix product of statistics and natural parameters, and marginalizing a
variable is multiplying its statistics by ``1 - m``.

A leaf family is a small frozen dataclass; its parameters live in the leaf layer
as tensors of shape ``(regions, slots, K)`` (plus trailing dimensions such as
categories), where ``slots`` runs over the variables of a leaf region. Adding a
family means writing one such class; no layer changes.

Example:
    >>> import torch
    >>> leaf = Normal(min_var=0.5, max_var=2.0)
    >>> params = leaf.init_params((1, 1, 1), torch.float64)
    >>> x = torch.tensor([[[0.3]]], dtype=torch.float64)
    >>> direct = torch.distributions.Normal(params["loc"], leaf.variance(params).sqrt()).log_prob(x)
    >>> stats = leaf.statistics(x)                      # (S, 1, 1, 1)
    >>> eta = leaf.natural(params)                      # (1, 1, 1, S)
    >>> bool(torch.allclose((stats.movedim(0, -1) * eta).sum(-1), direct))
    True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["Leaf", "Normal", "Bernoulli", "Categorical"]


def _zero_unobserved(x: Tensor, observed: Tensor, weight: Tensor, finite: bool, out: Tensor | None = None) -> Tensor:
    """``x`` where ``observed`` (bool), 0 elsewhere; ``weight`` is ``observed`` as 0/1 in any dtype.

    With every entry of ``x`` finite this is the product ``x * weight``
    (several times faster than ``torch.where`` on CPU); otherwise a select, so
    that NaN and inf at unobserved entries give 0.
    """
    if finite:
        return torch.mul(x, weight, out=out)
    return torch.where(observed, x, x.new_zeros(()), out=out)


class Leaf(ABC):
    """A family of univariate exponential-family factors.

    Shapes: ``params`` maps names to tensors of shape ``(*P)`` or ``(*P, E)``,
    where ``P`` is the parameter batch shape (in a leaf layer ``(R, n, K)``).
    """

    #: number of sufficient statistics ``S``
    num_stats: int

    @abstractmethod
    def init_params(self, shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, Tensor]:
        """Random unconstrained parameters of batch shape ``shape``."""

    @abstractmethod
    def statistics(self, x: Tensor) -> Tensor:
        """Sufficient statistics ``T(x)``: ``(*X) -> (S, *X)``, the constant statistic included."""

    def varying_statistics(self, x: Tensor) -> Tensor:
        """The statistics without the constant last one, ``(*X) -> (S - 1, *X)``, a fresh tensor (families with :attr:`constant_last`).

        The leaf layer's input when every entry is observed (the constant's share is
        then a bias); families override this to skip building the constant.
        """
        return self.statistics(x)[:-1].clone()

    def observed_statistics(self, x: Tensor, observed: Tensor, out: Tensor, finite: bool = False) -> None:
        """Hard evidence: write ``T(x)`` where ``observed`` is True, 0 elsewhere, into ``out`` ``(S, *X)``.

        ``observed`` is bool; ``x`` may hold anything (NaN, inf) where it is
        False, unless ``finite`` says every entry is finite (then a family may
        zero by multiplying with the mask, much faster than ``torch.where``).
        Both may be strided views (the leaf layer passes transposed ones, so
        that zeroing and the change of layout are one pass). The default
        zeroes ``x``, computes :meth:`statistics` and multiplies by the mask;
        families whose non-constant statistics vanish at 0 write each row once.
        """
        out.copy_(self.statistics(_zero_unobserved(x, observed, observed, finite)))
        out.mul_(observed)

    def weighted_statistics(self, x: Tensor, w: Tensor) -> Tensor:
        """Soft evidence: ``T(x) * w`` ``(S, *X)``, a fresh tensor, from values and weights of equal shape.

        The default multiplies :meth:`statistics` by ``w``; families override
        it to weight each statistic as it is written (the constant one is ``w``).
        """
        return self.statistics(x).mul_(w)

    def statistics_grads(self, x: Tensor, grad: Tensor, wrt_x: bool) -> tuple[Tensor, Tensor | None]:
        """A gradient ``grad`` ``(S, *X)`` on ``T(x)`` contracted with the statistics and with their derivatives.

        Returns ``sum_s grad_s T_s(x)`` (the gradient of an evidence weight that
        multiplies every statistic of its entry) and, when ``wrt_x``,
        ``sum_s grad_s dT_s/dx`` (None for families whose statistics have no
        derivative), each ``(*X)``. The default differentiates :meth:`statistics`;
        families override it with closed forms.
        """
        with torch.enable_grad():
            xx = x.detach().requires_grad_(wrt_x)
            t = self.statistics(xx)
            d_x = torch.autograd.grad(t, xx, grad)[0] if wrt_x and t.requires_grad else None
        return (grad * t.detach()).sum(0), d_x

    @abstractmethod
    def natural(self, params: dict[str, Tensor]) -> Tensor:
        """Natural parameters with the log-normalizer folded in: ``(*P, S)``."""

    def layer_coefficients(self, params: dict[str, Tensor], split_constant: bool) -> tuple[Tensor, Tensor | None]:
        """The natural parameters of a leaf layer, laid out for its matrix product.

        Args:
            params: parameters of batch shape ``(R, n, K)`` (regions, slots, components).
            split_constant: return the constant (last) statistic's coefficients
                apart from the others (for families with :attr:`constant_last`).

        Returns:
            ``coef (R, S' * n, K)``, statistic-major (``S' = S - 1`` when split,
            else ``S``; row ``s * n + j`` holds statistic ``s`` of slot ``j``), and
            the constant statistic's ``(R, n, K)`` when split, else None. Families override this to write that layout
            directly; the default permutes :meth:`natural`.
        """
        return natural_to_layer(self.natural(params), split_constant)

    @abstractmethod
    def log_max(self, params: dict[str, Tensor]) -> Tensor:
        """Log of the largest value of each factor's density or mass: ``(*P)``."""

    @abstractmethod
    def sample(self, params: dict[str, Tensor], generator: torch.Generator | None) -> Tensor:
        """One draw from each factor: ``(*P)``."""

    @abstractmethod
    def mode(self, params: dict[str, Tensor]) -> Tensor:
        """The most probable value of each factor: ``(*P)``."""

    #: False when every real value is in the support (then :meth:`support_error` is not called)
    restricted_support: bool = True

    #: True when the statistics are the one-hot indicators of an integer value
    #: (:meth:`index`): the leaf layer then gathers log-probabilities from
    #: :meth:`natural` ``(*P, C)``, the log-probability of every value, instead
    #: of multiplying ``C``-fold statistics.
    indexed: bool = False

    def index(self, x: Tensor) -> Tensor:
        """The value index of each entry (families with :attr:`indexed`): ``(*X)`` int64 in ``[0, num_stats)``."""
        return x.long()

    def softmax_logits(self, params: dict[str, Tensor]) -> Tensor | None:
        """Logits whose ``log_softmax`` over the last dimension is :meth:`natural`, or None (families with :attr:`indexed`).

        The leaf layer then normalizes while it gathers instead of building the normalized table.
        """
        return None

    #: True when the last statistic is the constant 1. Then, with every entry
    #: observed, a leaf layer adds that statistic's coefficients as one bias per
    #: region and component instead of gathering and multiplying a row of ones
    #: (a third less leaf work for a Normal).
    constant_last: bool = False

    @abstractmethod
    def support_error(self, x: Tensor, observed: Tensor | None) -> str | None:
        """A message if an observed entry of ``x`` lies outside the support, else None (``observed`` None: every entry)."""

    @abstractmethod
    def m_step(self, stats: Tensor, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unconstrained parameters maximizing the expected log-likelihood.

        Args:
            stats: expected sufficient statistics ``(*P, S)`` (the sum of
                responsibilities times ``T(x)``; the constant statistic is the
                expected count).
            params: the current parameters, kept where a factor saw no data.
        """

    def mean_statistics(self, params: dict[str, Tensor]) -> Tensor:
        """Expected sufficient statistics ``E[T(x)]`` of each factor: ``(*P, S)``.

        The mean parameters in which stochastic EM mixes old and new estimates;
        ``m_step(mean_statistics(params), params)`` recovers ``params`` up to the
        family's bounds.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define mean_statistics, which stochastic EM needs")

    def dtype_error(self, dtype: torch.dtype) -> str | None:
        """A message if a circuit of ``dtype`` cannot hold this family's values exactly, else None."""
        return None

    def event_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype of samples (the module's float dtype for every built-in family)."""
        return dtype


def natural_to_layer(eta: Tensor, split_constant: bool) -> tuple[Tensor, Tensor | None]:
    """Natural parameters ``(R, n, K, S)`` in the layout of :meth:`Leaf.layer_coefficients`."""
    t = eta.permute(0, 3, 1, 2)  # (R, S, n, K)
    R, S, n, K = t.shape
    if split_constant:
        return t[:, :-1].reshape(R, (S - 1) * n, K), t[:, -1]
    return t.reshape(R, S * n, K), None


def _uniform(shape: tuple[int, ...], low: float, high: float, dtype: torch.dtype) -> Tensor:
    return torch.empty(shape, dtype=dtype).uniform_(low, high)


def _has_data(count: Tensor, eps: float = 1e-12) -> Tensor:
    return count > eps


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
        return (*_normal_natural_grads(ctx.saved_tensors, *grad.unbind(-1), ctx.span, ctx.needs_input_grad[:2]), None, None)


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
        _, saved = _normal_natural(loc, raw, lo, hi, out=(coef[:, 0], coef[:, 1], const if split else coef[:, 2]))
        ctx.save_for_backward(*saved)
        ctx.span, ctx.split = hi - lo, split
        return coef.view(R, -1, K), const

    @staticmethod
    @once_differentiable
    def backward(ctx, g_coef: Tensor | None, g_const: Tensor | None):
        R, n, K = ctx.saved_tensors[0].shape
        if g_coef is None:
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
        _zero_unobserved(x, observed, out[2], finite, out=out[1])  # x, 0 where unobserved: x^2 and x vanish there
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

    def mean_statistics(self, params):
        loc = params["loc"]
        return torch.stack([self.variance(params) + loc * loc, loc, torch.ones_like(loc)], dim=-1)

    def support_error(self, x, observed):
        return None

    def m_step(self, stats, params):
        count, s1, s2 = stats[..., 2], stats[..., 1], stats[..., 0]
        ok = _has_data(count)
        safe = torch.where(ok, count, torch.ones_like(count))
        mean = s1 / safe
        var = (s2 / safe - mean * mean).clamp(self.min_var, self.max_var)
        # invert the sigmoid bound, a hair inside (min_var, max_var) to stay finite
        frac = ((var - self.min_var) / (self.max_var - self.min_var)).clamp(1e-6, 1 - 1e-6)
        return {
            "loc": torch.where(ok, mean, params["loc"]),
            "var": torch.where(ok, torch.logit(frac), params["var"]),
        }


@dataclass(frozen=True)
class Bernoulli(Leaf):
    """Binary factors over ``{0, 1}``, parameterized by logits."""

    num_stats = 2
    constant_last = True

    def init_params(self, shape, dtype):
        return {"logits": torch.randn(shape, dtype=dtype)}

    def statistics(self, x):
        return torch.stack([x, torch.ones_like(x)])

    def varying_statistics(self, x):
        return x.unsqueeze(0).clone()

    def observed_statistics(self, x, observed, out, finite=False):
        out[1].copy_(observed)
        _zero_unobserved(x, observed, out[1], finite, out=out[0])

    def weighted_statistics(self, x, w):
        out = x.new_empty((2, *x.shape))
        torch.mul(x, w, out=out[0])
        out[1].copy_(w)
        return out

    def statistics_grads(self, x, grad, wrt_x):
        return torch.addcmul(grad[1], grad[0], x), grad[0].clone() if wrt_x else None

    def natural(self, params):
        logits = params["logits"]
        return torch.stack([logits, F.logsigmoid(-logits)], dim=-1)

    def log_max(self, params):
        return F.logsigmoid(params["logits"].abs())

    def sample(self, params, generator):
        probs = torch.sigmoid(params["logits"])
        u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
        return (u < probs).to(probs.dtype)

    def mode(self, params):
        return (params["logits"] > 0).to(params["logits"].dtype)

    def mean_statistics(self, params):
        p = torch.sigmoid(params["logits"])
        return torch.stack([p, torch.ones_like(p)], dim=-1)

    def support_error(self, x, observed):
        bad = (x != 0) & (x != 1)
        bad = bad if observed is None else bad & observed
        if bool(bad.any()):
            return f"Bernoulli leaves take values in {{0, 1}}; got e.g. {x[bad][:5].tolist()}"
        return None

    def m_step(self, stats, params):
        ones, count = stats[..., 0], stats[..., 1]
        ok = _has_data(count)
        p = (ones / torch.where(ok, count, torch.ones_like(count))).clamp(1e-6, 1 - 1e-6)
        return {"logits": torch.where(ok, torch.logit(p), params["logits"])}


@dataclass(frozen=True)
class Categorical(Leaf):
    """Discrete factors over ``{0, ..., num_categories - 1}``, parameterized by logits."""

    num_categories: int = 2
    indexed = True

    def __post_init__(self) -> None:
        if not isinstance(self.num_categories, int) or isinstance(self.num_categories, bool) or self.num_categories < 2:
            raise ValueError(f"num_categories must be an int >= 2, got {self.num_categories!r}")

    @property
    def num_stats(self) -> int:  # type: ignore[override]
        return self.num_categories

    def init_params(self, shape, dtype):
        return {"logits": torch.randn((*shape, self.num_categories), dtype=dtype)}

    def statistics(self, x):
        onehot = F.one_hot(x.long().clamp(0, self.num_categories - 1), self.num_categories).to(x.dtype)
        return onehot.movedim(-1, 0)

    def natural(self, params):
        return torch.log_softmax(params["logits"], dim=-1)

    def softmax_logits(self, params):
        return params["logits"]

    def log_max(self, params):
        return torch.log_softmax(params["logits"], dim=-1).amax(-1)

    def sample(self, params, generator):
        logits = params["logits"]
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return (torch.log_softmax(logits, -1) + gumbel).argmax(-1).to(logits.dtype)

    def mode(self, params):
        return params["logits"].argmax(-1).to(params["logits"].dtype)

    def mean_statistics(self, params):
        return torch.softmax(params["logits"], dim=-1)

    def dtype_error(self, dtype):
        limit = int(round(2 / torch.finfo(dtype).eps))  # every integer up to this is exact in dtype
        if self.num_categories - 1 > limit:
            return (f"Categorical leaves with {self.num_categories} categories need a dtype that holds the integers up to "
                    f"{self.num_categories - 1} exactly; {str(dtype).replace('torch.', '')} holds them only up to {limit} "
                    "(use float32 or float64)")
        return None

    def support_error(self, x, observed):
        bad = (x != torch.round(x)) | (x < 0) | (x >= self.num_categories)
        bad = bad if observed is None else bad & observed
        if bool(bad.any()):
            return f"Categorical leaves take integers in 0..{self.num_categories - 1}; got e.g. {x[bad][:5].tolist()}"
        return None

    def m_step(self, stats, params):
        count = stats.sum(-1, keepdim=True)
        ok = _has_data(count)
        probs = (stats / torch.where(ok, count, torch.ones_like(count))).clamp_min(1e-8)
        return {"logits": torch.where(ok, probs.log(), params["logits"])}
