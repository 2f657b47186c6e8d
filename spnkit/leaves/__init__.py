"""Leaf distribution families (see :mod:`spnkit.leaves.base` for the interface).

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

from .base import Leaf, LeafFamily, natural_to_layer
from .discrete import Bernoulli, Binomial, Categorical
from .mixed import Mixed
from .mvn import MultivariateNormal
from .normal import Normal
from .poisson import Poisson

__all__ = ["LeafFamily", "Leaf", "Normal", "Bernoulli", "Categorical", "Binomial", "Poisson", "MultivariateNormal", "Mixed",
           "natural_to_layer"]
