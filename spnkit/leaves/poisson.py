"""Poisson leaves for counts: statistics ``(x, 1)`` and ``-log x!`` as the base measure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import CountStatistics, Leaf, has_data

__all__ = ["Poisson"]


@dataclass(frozen=True)
class Poisson(CountStatistics, Leaf):
    """Counts in ``{0, 1, 2, ...}`` with a rate bounded in ``[min_rate, max_rate]``.

    ``log p(x) = x log(rate) - rate - log x!``: statistics ``(x, 1)`` with
    natural parameters ``(log rate, -rate)``, and ``-log x!`` as the base
    measure the leaf layer adds. The log-rate is ``log min_rate + (log max_rate
    - log min_rate) * sigmoid(r)`` for an unconstrained ``r`` (parameter
    ``"rate"``): bounded both ways, so no component's rate collapses to zero
    (a single non-zero count would then have probability zero) or runs off.
    Rates start log-uniform over the middle of the bounds (``r`` uniform in
    [-1, 1]); ``fit(..., init="data")`` starts them at the data instead.
    """

    min_rate: float = 1e-3
    max_rate: float = 1e4
    has_base_measure = True
    discrete = True

    def __post_init__(self) -> None:
        for name in ("min_rate", "max_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 < self.min_rate < self.max_rate:
            raise ValueError(f"need 0 < min_rate < max_rate, got min_rate={self.min_rate}, max_rate={self.max_rate}")

    def init_params(self, shape, dtype):
        return {"rate": torch.empty(shape, dtype=dtype).uniform_(-1.0, 1.0)}

    def log_rate(self, params: dict[str, Tensor]) -> Tensor:
        """The bounded log-rate ``(*P)``."""
        lo, hi = math.log(self.min_rate), math.log(self.max_rate)
        return lo + (hi - lo) * torch.sigmoid(params["rate"])

    def rate(self, params: dict[str, Tensor]) -> Tensor:
        """The bounded rate ``(*P)``."""
        return torch.exp(self.log_rate(params))

    def log_base_measure(self, x):
        return -torch.lgamma(x + 1)

    def natural(self, params):
        log_rate = self.log_rate(params)
        return torch.stack([log_rate, -torch.exp(log_rate)], dim=-1)

    def _log_pmf(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        log_rate = self.log_rate(params)
        return x * log_rate - torch.exp(log_rate) - torch.lgamma(x + 1)

    def log_max(self, params):
        return self._log_pmf(params, self.mode(params))

    def sample(self, params, generator):
        return torch.poisson(self.rate(params), generator=generator)

    def mode(self, params):
        return torch.floor(self.rate(params))

    def moments(self, params):
        rate = self.rate(params)
        return rate, rate + rate * rate

    def mean_variance(self, params):
        rate = self.rate(params)
        return rate, rate

    def mean_statistics(self, params):
        rate = self.rate(params)
        return torch.stack([rate, torch.ones_like(rate)], dim=-1)

    def support_error(self, x, observed):
        bad = (x != torch.round(x)) | (x < 0) | ~torch.isfinite(x)
        bad = bad if observed is None else bad & observed
        if bool(bad.any()):
            return f"Poisson leaves take non-negative integers; got e.g. {x[bad][:5].tolist()}"
        return None

    def m_step(self, stats, params, pseudocount=0.0):
        """``rate = (sum x + a) / (count + a)``: ``a = pseudocount`` pseudo-observations of the count 1 (a Gamma prior).

        The rate is then clamped into ``[min_rate, max_rate]``, the exact
        constrained maximizer (the expected log-likelihood ``S log r - N r`` is
        concave in the rate).
        """
        total, count = stats[..., 0], stats[..., 1]
        ok = has_data(count) | (pseudocount > 0)
        rate = (total + pseudocount) / torch.where(ok, count + pseudocount, torch.ones_like(count))
        lo, hi = math.log(self.min_rate), math.log(self.max_rate)
        frac = ((rate.clamp(self.min_rate, self.max_rate).log() - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        return {"rate": torch.where(ok, torch.logit(frac), params["rate"])}
