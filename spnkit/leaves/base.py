"""The leaf family interface: univariate exponential-family factors evaluated as one matrix product.

Every leaf of a circuit is a fully factorized distribution over its region's
variables, and every univariate factor belongs to an exponential family:
``log p(x) = <T(x), eta(theta)> + log h(x)`` with sufficient statistics ``T``
(the parameter-free part of the log-normalizer folded into a constant
statistic) and a base measure ``h`` (zero for most families). That makes a
whole leaf layer one batched matrix product of statistics and natural
parameters, and marginalizing a variable is multiplying its statistics by
``1 - m``. Families whose statistics are the one-hot indicators of an integer
value (:attr:`Leaf.indexed`) are evaluated by gathering log-probabilities.

A leaf family is a small frozen dataclass; its parameters live in the leaf layer
as tensors of shape ``(regions, slots, K)`` (plus trailing dimensions such as
categories), where ``slots`` runs over the variables of a leaf region. Adding a
family means writing one such class; no layer changes.

:class:`LeafFamily` is what a circuit takes as its ``leaf``: it validates
values and builds the leaf layer (:meth:`LeafFamily.make_layer`). Every
:class:`Leaf` builds the factorized :class:`~spnkit.layers.LeafLayer`; families
that are not products of univariate factors (:class:`~spnkit.MultivariateNormal`,
:class:`~spnkit.Mixed`) build their own layer with the same output layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ..layers.leaf_base import LeafLayerBase

__all__ = ["LeafFamily", "Leaf", "CountStatistics", "natural_to_layer", "zero_unobserved", "has_data"]


def zero_unobserved(x: Tensor, observed: Tensor, weight: Tensor, finite: bool, out: Tensor | None = None) -> Tensor:
    """``x`` where ``observed`` (bool), 0 elsewhere; ``weight`` is ``observed`` as 0/1 in any dtype.

    With every entry of ``x`` finite this is the product ``x * weight``
    (several times faster than ``torch.where`` on CPU); otherwise a select, so
    that NaN and inf at unobserved entries give 0.
    """
    if finite:
        return torch.mul(x, weight, out=out)
    return torch.where(observed, x, x.new_zeros(()), out=out)


class LeafFamily(ABC):
    """What a circuit's leaf distributions are: it checks values and builds the leaf layer.

    A family is a small frozen (hashable) dataclass. Subclasses: :class:`Leaf`
    (fully factorized univariate factors), :class:`~spnkit.MultivariateNormal`
    (one full-covariance Gaussian per leaf region and component) and
    :class:`~spnkit.Mixed` (a family per variable).
    """

    #: False when every real value is in the support (then :meth:`support_error` is not called)
    restricted_support: bool = True

    #: False when float masks strictly between 0 and 1 (soft evidence) have no meaning for
    #: the family; hard masks (bool, or float 0/1) are always taken
    soft_evidence: bool = True

    #: True for families of probability mass functions (every density is at most 1)
    discrete: bool = False

    @abstractmethod
    def support_error(self, x: Tensor, observed: Tensor | None) -> str | None:
        """A message if an observed entry of ``x`` lies outside the support, else None (``observed`` None: every entry)."""

    def dtype_error(self, dtype: torch.dtype) -> str | None:
        """A message if a circuit of ``dtype`` cannot hold this family's values exactly, else None."""
        return None

    @abstractmethod
    def make_layer(self, scopes: list[tuple[int, ...]], num_vars: int, num_leaves: int) -> "LeafLayerBase":
        """The leaf layer of a circuit: ``num_leaves`` distributions over each scope (variables ``< num_vars``)."""


class Leaf(LeafFamily):
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
        out.copy_(self.statistics(zero_unobserved(x, observed, observed, finite)))
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
    def m_step(self, stats: Tensor, params: dict[str, Tensor], pseudocount: float = 0.0) -> dict[str, Tensor]:
        """Unconstrained parameters maximizing the expected log-likelihood (plus the log-prior of ``pseudocount``).

        Args:
            stats: expected sufficient statistics ``(*P, S)`` (the sum of
                responsibilities times ``T(x)``; the constant statistic is the
                expected count).
            params: the current parameters, kept where a factor saw no data.
            pseudocount: the strength of the family's conjugate prior, in
                pseudo-observations per factor (0: maximum likelihood): a
                symmetric Dirichlet (Beta) prior on discrete probabilities, a
                prior variance for Normal factors. See each family.
        """

    def mean_statistics(self, params: dict[str, Tensor]) -> Tensor:
        """Expected sufficient statistics ``E[T(x)]`` of each factor: ``(*P, S)``.

        The mean parameters in which stochastic EM mixes old and new estimates;
        ``m_step(mean_statistics(params), params)`` recovers ``params`` up to the
        family's bounds.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define mean_statistics, which stochastic EM needs")

    #: True when ``log p(x)`` has a parameter-free term :meth:`log_base_measure` outside the statistics
    has_base_measure: bool = False

    def log_base_measure(self, x: Tensor) -> Tensor:
        """``log h(x)``, the parameter-free part of each entry's log-density (families with :attr:`has_base_measure`)."""
        return torch.zeros_like(x)

    def moments(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The mean and the second moment ``E[x^2]`` of each factor: each ``(*P)``.

        What conditional expectations (:meth:`spnkit.SPN.expectation`) combine.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define moments, which conditional expectations need")

    def mean_variance(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The mean and variance of each factor: each ``(*P)``.

        The default subtracts the squared mean from :meth:`moments`'s second
        moment; the built-in families give the variance in closed form, which
        does not cancel for factors far from zero.
        """
        mean, second = self.moments(params)
        return mean, (second - mean * mean).clamp_min(0)

    def make_layer(self, scopes, num_vars, num_leaves):
        from ..layers.leaf import LeafLayer

        return LeafLayer(self, scopes, num_vars, num_leaves)

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


def has_data(count: Tensor, eps: float = 1e-12) -> Tensor:
    return count > eps


class CountStatistics:
    """The sufficient statistics ``(x, 1)`` of Bernoulli, Binomial and Poisson leaves (mixed into their :class:`Leaf`).

    ``log p(x) = a x + b`` (plus the family's base measure) for natural parameters ``(a, b)``.
    ``x_gradient``: whether a gradient flows to ``x`` (soft binary inputs of a Bernoulli leaf;
    counts have none).
    """

    num_stats = 2
    constant_last = True
    x_gradient = False

    def statistics(self, x: Tensor) -> Tensor:
        return torch.stack([x, torch.ones_like(x)])

    def varying_statistics(self, x: Tensor) -> Tensor:
        return x.unsqueeze(0).clone()

    def observed_statistics(self, x: Tensor, observed: Tensor, out: Tensor, finite: bool = False) -> None:
        out[1].copy_(observed)
        zero_unobserved(x, observed, out[1], finite, out=out[0])

    def weighted_statistics(self, x: Tensor, w: Tensor) -> Tensor:
        out = x.new_empty((2, *x.shape))
        torch.mul(x, w, out=out[0])
        out[1].copy_(w)
        return out

    def statistics_grads(self, x: Tensor, grad: Tensor, wrt_x: bool) -> tuple[Tensor, Tensor | None]:
        return torch.addcmul(grad[1], grad[0], x), grad[0].clone() if wrt_x and self.x_gradient else None
