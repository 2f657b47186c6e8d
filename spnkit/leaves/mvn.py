"""Multivariate Normal leaves: one full-covariance Gaussian per leaf region and component.

Parameterization. Each component holds a mean ``loc (d,)`` and an
unconstrained square matrix ``factor (d, d)``; its covariance is

    ``cov = max_var * I - (max_var - min_var) * (I + factor @ factor.T)^-1``

Every eigenvalue of ``cov`` lies in ``[min_var, max_var)`` whatever the
parameters (an eigenvalue ``s`` of ``factor @ factor.T`` gives
``max_var - (max_var - min_var) / (1 + s)``), and every such covariance is
reached: densities stay bounded (no component collapses onto a point or a
line) and gradients are defined everywhere, without eigendecompositions in
the forward pass.

Natural parameters: ``(prec, prec @ loc, c)`` with ``prec = cov^-1`` and
``c = -(loc' prec loc + log det cov + d log 2 pi) / 2`` for the statistics
``(-x x' / 2, x, 1)``.

EM: the expected statistics (responsibility-weighted, with the conditional
moments of missing entries) give the weighted mean and covariance; the
covariance is shrunk toward ``prior_var * I`` by the prior's pseudo-counts and
its eigenvalues are clamped into the bounds, which is the exact maximizer of
the expected log-likelihood under the eigenvalue bounds (the maximizer shares
the weighted covariance's eigenvectors; each eigenvalue's term
``-(log v + s / v) / 2`` rises up to ``s`` and falls after it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import LeafFamily, has_data

if TYPE_CHECKING:  # pragma: no cover
    from ..layers.mvn import MVNLeafLayer

__all__ = ["MultivariateNormal"]

_LOG_2PI = math.log(2 * math.pi)


def _symmetric(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _eye(d: int, like: Tensor) -> Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class MultivariateNormal(LeafFamily):
    """A full-covariance Gaussian over each leaf region's variables, eigenvalues bounded in ``[min_var, max_var)``.

    A leaf region's scope is the event of its distributions: ``K`` Gaussians
    over the region's ``d`` variables (regions of one variable are univariate
    Normals). Masks marginalize exactly (the observed sub-vector's Gaussian
    marginal); sampling and MPE fill the unobserved entries of a region from
    the conditional Gaussian given its observed ones. Soft evidence (float
    masks strictly between 0 and 1) has no meaning for a joint factor and is
    refused. See the module docstring for the parameterization and the EM step.

    Args:
        min_var, max_var: bounds on every eigenvalue of every covariance.
        loc_range: means start uniform in this range.
    """

    min_var: float = 1e-2
    max_var: float = 1.0
    loc_range: tuple[float, float] = (0.0, 1.0)
    restricted_support = False
    soft_evidence = False

    def __post_init__(self) -> None:
        for name in ("min_var", "max_var"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        value = self.loc_range
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"loc_range must be a pair of numbers (low, high), got {value!r}")
        if not (0 < self.min_var < self.max_var) or not math.isfinite(self.max_var):
            raise ValueError(f"need 0 < min_var < max_var < inf, got min_var={self.min_var}, max_var={self.max_var}")
        if not value[0] <= value[1]:
            raise ValueError(f"loc_range must be (low, high) with low <= high, got {value}")

    @classmethod
    def from_data(cls, x: Tensor, marginalized: Tensor | None = None, *, min_ratio: float = 1e-3,
                  max_ratio: float = 2.0) -> "MultivariateNormal":
        """Bounds and initial means from data: see :meth:`spnkit.Normal.from_data` (the same rules).

        ``max_var`` is ``max_ratio`` times the largest eigenvalue of the data's
        covariance (an upper bound on any leaf region's eigenvalues), so that
        strongly correlated columns fit.
        """
        from .normal import data_bounds

        min_var, max_var, loc_range = data_bounds(x, marginalized, min_ratio, max_ratio, joint=True)
        return cls(min_var=min_var, max_var=max_var, loc_range=loc_range)

    @property
    def prior_var(self) -> float:
        """The variance EM's prior pulls every eigenvalue toward: the geometric mean of the bounds."""
        return math.sqrt(self.min_var * self.max_var)

    def make_layer(self, scopes, num_vars, num_leaves) -> "MVNLeafLayer":
        from ..layers.mvn import MVNLeafLayer

        return MVNLeafLayer(self, scopes, num_vars, num_leaves)

    def support_error(self, x, observed):
        return None

    # ------------------------------------------------------------ parameters
    def init_params(self, shape: tuple[int, ...], d: int, dtype: torch.dtype) -> dict[str, Tensor]:
        """Means uniform in ``loc_range``, covariances near the middle of the bounds with small random correlations.

        Returns:
            ``loc (*shape, d)`` and ``factor (*shape, d, d)``.
        """
        loc = torch.empty((*shape, d), dtype=dtype).uniform_(*self.loc_range)
        scale = torch.empty((*shape, 1, 1), dtype=dtype).uniform_(0.5, 1.5)
        factor = scale * torch.eye(d, dtype=dtype) + 0.2 * torch.randn((*shape, d, d), dtype=dtype)
        return {"loc": loc, "factor": factor}

    def covariance(self, params: dict[str, Tensor]) -> Tensor:
        """The bounded covariance ``(*P, d, d)``."""
        a = params["factor"]
        d = a.shape[-1]
        eye = _eye(d, a)
        inner = torch.cholesky_inverse(torch.linalg.cholesky(eye + a @ a.transpose(-1, -2)))  # (I + A A')^-1
        return _symmetric(self.max_var * eye - (self.max_var - self.min_var) * inner)

    def natural(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(prec (*P, d, d), prec @ loc (*P, d), c (*P))`` for the statistics ``(-x x' / 2, x, 1)``."""
        loc = params["loc"]
        chol = torch.linalg.cholesky(self.covariance(params))
        prec = _symmetric(torch.cholesky_inverse(chol))
        lin = (prec @ loc.unsqueeze(-1)).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        const = -0.5 * ((lin * loc).sum(-1) + log_det + loc.shape[-1] * _LOG_2PI)
        return prec, lin, const

    def moments(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The mean ``(*P, d)`` and the second-moment matrix ``E[x x'] (*P, d, d)``."""
        loc = params["loc"]
        return loc, self.covariance(params) + loc.unsqueeze(-1) * loc.unsqueeze(-2)

    def mean_statistics(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``E[T(x)]``: ``(-E[x x'] / 2, E[x], 1)``."""
        loc, second = self.moments(params)
        return -0.5 * second, loc, torch.ones_like(loc[..., 0])

    def factor_of(self, cov: Tensor) -> Tensor:
        """A ``factor`` whose covariance is ``cov`` after clamping its eigenvalues into the bounds: ``(*P, d, d)``."""
        span = self.max_var - self.min_var
        vals, vecs = torch.linalg.eigh(_symmetric(cov))
        vals = vals.clamp(self.min_var + 1e-6 * span, self.max_var - 1e-6 * span)
        s = (vals - self.min_var) / (self.max_var - vals)  # eigenvalues of factor @ factor'
        return (vecs * s.sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)  # the symmetric square root

    def m_step(self, stats: tuple[Tensor, Tensor, Tensor], params: dict[str, Tensor], pseudocount: float = 0.0
               ) -> dict[str, Tensor]:
        """The weighted mean and covariance, the covariance shrunk toward ``prior_var * I`` and clamped into the bounds.

        Args:
            stats: expected statistics ``(G (*P, d, d), s (*P, d), count (*P))``
                with ``G = -sum r x x' / 2`` and ``s = sum r x``.
            params: the current parameters, kept where a component saw no data.
            pseudocount: pseudo-observations of covariance ``prior_var * I``.
        """
        g, s1, count = stats
        ok = has_data(count)
        safe = torch.where(ok, count, torch.ones_like(count))
        mean = s1 / safe.unsqueeze(-1)
        second = -2 * _symmetric(g) / safe.unsqueeze(-1).unsqueeze(-1)
        cov = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        d = mean.shape[-1]
        if pseudocount:
            c = count.unsqueeze(-1).unsqueeze(-1)
            cov = (c * cov + pseudocount * self.prior_var * _eye(d, cov)) / (c + pseudocount)
        cov = torch.where(ok.unsqueeze(-1).unsqueeze(-1), cov, self.prior_var * _eye(d, cov))  # finite everywhere for eigh
        factor = self.factor_of(cov)
        return {
            "loc": torch.where(ok.unsqueeze(-1), mean, params["loc"]),
            "factor": torch.where(ok.unsqueeze(-1).unsqueeze(-1), factor, params["factor"]),
        }
