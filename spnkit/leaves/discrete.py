"""Discrete leaves: Bernoulli, Categorical (evaluated by gathering) and Binomial."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from .base import CountStatistics, Leaf, has_data

__all__ = ["Bernoulli", "Categorical", "Binomial"]


@dataclass(frozen=True)
class Bernoulli(CountStatistics, Leaf):
    """Binary factors over ``{0, 1}``, parameterized by logits."""

    discrete = True
    x_gradient = True  # soft binary inputs in [0, 1]

    def init_params(self, shape, dtype):
        return {"logits": torch.randn(shape, dtype=dtype)}

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

    def moments(self, params):
        p = torch.sigmoid(params["logits"])
        return p, p

    def mean_variance(self, params):
        p = torch.sigmoid(params["logits"])
        return p, p * (1 - p)

    def mean_statistics(self, params):
        p = torch.sigmoid(params["logits"])
        return torch.stack([p, torch.ones_like(p)], dim=-1)

    def support_error(self, x, observed):
        bad = (x != 0) & (x != 1)
        bad = bad if observed is None else bad & observed
        if bool(bad.any()):
            return f"Bernoulli leaves take values in {{0, 1}}; got e.g. {x[bad][:5].tolist()}"
        return None

    def m_step(self, stats, params, pseudocount=0.0):
        """``p = (ones + a / 2) / (count + a)``: a Beta(a/2, a/2) prior for ``a = pseudocount``."""
        ones, count = stats[..., 0], stats[..., 1]
        ok = has_data(count) | (pseudocount > 0)
        p = ((ones + pseudocount / 2) / torch.where(ok, count + pseudocount, torch.ones_like(count))).clamp(1e-6, 1 - 1e-6)
        return {"logits": torch.where(ok, torch.logit(p), params["logits"])}


@dataclass(frozen=True)
class Categorical(Leaf):
    """Discrete factors over ``{0, ..., num_categories - 1}``, parameterized by logits."""

    num_categories: int = 2
    indexed = True
    discrete = True

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

    def moments(self, params):
        """The mean and second moment of the category index ``0 .. C - 1``."""
        probs = torch.softmax(params["logits"], dim=-1)
        values = torch.arange(self.num_categories, dtype=probs.dtype, device=probs.device)
        return probs @ values, probs @ (values * values)

    def mean_variance(self, params):
        probs = torch.softmax(params["logits"], dim=-1)
        values = torch.arange(self.num_categories, dtype=probs.dtype, device=probs.device)
        mean = probs @ values
        return mean, (probs * (values - mean.unsqueeze(-1)) ** 2).sum(-1)

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

    def m_step(self, stats, params, pseudocount=0.0):
        """``p_c = (n_c + a / C) / (n + a)``: a symmetric Dirichlet prior of total strength ``a = pseudocount``."""
        stats = stats + pseudocount / self.num_categories
        count = stats.sum(-1, keepdim=True)
        ok = has_data(count)
        probs = (stats / torch.where(ok, count, torch.ones_like(count))).clamp_min(1e-12)
        return {"logits": torch.where(ok, probs.log(), params["logits"])}



@dataclass(frozen=True)
class Binomial(CountStatistics, Leaf):
    """Counts in ``{0, ..., total_count}`` (e.g. 8-bit pixels with ``total_count=255``), parameterized by logits.

    ``log p(x) = x logit(p) + N log(1 - p) + log C(N, x)``: statistics ``(x, 1)``
    like a Bernoulli's, and the binomial coefficient as the base measure.
    """

    total_count: int = 1
    has_base_measure = True
    discrete = True

    def __post_init__(self) -> None:
        if not isinstance(self.total_count, int) or isinstance(self.total_count, bool) or self.total_count < 1:
            raise ValueError(f"total_count must be an int >= 1, got {self.total_count!r}")

    def init_params(self, shape, dtype):
        return {"logits": torch.randn(shape, dtype=dtype)}

    def log_base_measure(self, x):
        n = float(self.total_count)
        return math.lgamma(n + 1) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)

    def natural(self, params):
        logits = params["logits"]
        return torch.stack([logits, self.total_count * F.logsigmoid(-logits)], dim=-1)

    def _log_pmf(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        logits = params["logits"]
        return x * F.logsigmoid(logits) + (self.total_count - x) * F.logsigmoid(-logits) + self.log_base_measure(x)

    def log_max(self, params):
        return self._log_pmf(params, self.mode(params))

    def sample(self, params, generator):
        probs = torch.sigmoid(params["logits"])
        return torch.binomial(torch.full_like(probs, float(self.total_count)), probs, generator=generator)

    def mode(self, params):
        p = torch.sigmoid(params["logits"])
        return torch.floor((self.total_count + 1) * p).clamp(0, self.total_count)

    def moments(self, params):
        p = torch.sigmoid(params["logits"])
        mean = self.total_count * p
        return mean, mean * (1 - p) + mean * mean

    def mean_variance(self, params):
        p = torch.sigmoid(params["logits"])
        mean = self.total_count * p
        return mean, mean * (1 - p)

    def mean_statistics(self, params):
        p = torch.sigmoid(params["logits"])
        return torch.stack([self.total_count * p, torch.ones_like(p)], dim=-1)

    def dtype_error(self, dtype):
        limit = int(round(2 / torch.finfo(dtype).eps))
        if self.total_count > limit:
            return (f"Binomial leaves with total_count={self.total_count} need a dtype that holds the integers up to "
                    f"{self.total_count} exactly; {str(dtype).replace('torch.', '')} holds them only up to {limit}")
        return None

    def support_error(self, x, observed):
        bad = (x != torch.round(x)) | (x < 0) | (x > self.total_count)
        bad = bad if observed is None else bad & observed
        if bool(bad.any()):
            return f"Binomial leaves take integers in 0..{self.total_count}; got e.g. {x[bad][:5].tolist()}"
        return None

    def m_step(self, stats, params, pseudocount=0.0):
        """``p = (sum x + a / 2) / (N count + a)``: a Beta(a/2, a/2) prior for ``a = pseudocount``."""
        successes, count = stats[..., 0], stats[..., 1]
        ok = has_data(count) | (pseudocount > 0)
        trials = torch.where(ok, self.total_count * count + pseudocount, torch.ones_like(count))
        p = ((successes + pseudocount / 2) / trials).clamp(1e-6, 1 - 1e-6)
        return {"logits": torch.where(ok, torch.logit(p), params["logits"])}
