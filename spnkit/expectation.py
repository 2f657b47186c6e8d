"""Conditional expectations ``E[x_hidden | x_observed]`` and variances in closed form, and imputation.

In a smooth, decomposable circuit the conditional distribution of the hidden
entries given the observed ones is a mixture over induced trees, and every
variable lies in exactly one leaf region of any induced tree. So

    ``E[x_d | e] = sum_{r holding d, k} P(leaf (r, k) in the tree | e) * E[x_d | leaf (r, k), e]``

where ``E[x_d | leaf (r, k), e]`` is the leaf's own conditional mean (its
mean for a factorized leaf; the conditional Gaussian mean given the region's
observed entries for a multivariate Normal), and likewise for the second
moment. The posterior of every leaf component is the gradient of the summed
root log-likelihood with respect to the leaf layer's log-values (one upward
and one backward pass, :meth:`spnkit.SPN.upward` with ``leaf_grad=True``).
The leaf layers combine the moments (:meth:`spnkit.layers.LeafLayerBase.moments`)
in float64, about a per-variable centre.

Example:
    >>> import torch, spnkit
    >>> rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, spnkit.Normal(0.1, 1.0), num_sums=2, num_leaves=3).double()
    >>> x = torch.rand(5, 4, dtype=torch.float64)
    >>> hidden = torch.zeros(5, 4, dtype=torch.bool)
    >>> hidden[:, 2:] = True
    >>> mean, var = spn.expectation(x, hidden, variance=True)
    >>> bool(torch.equal(mean[:, :2], x[:, :2])) and bool((var[:, :2] == 0).all())
    True
    >>> filled = spnkit.impute(spn, x.masked_fill(hidden, float("nan")))   # NaN entries are the hidden ones
    >>> bool(torch.allclose(filled, mean))
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .evidence import CircuitParams, Evidence, root_choice

if TYPE_CHECKING:  # pragma: no cover
    from .circuit import SPN

__all__ = ["expectation", "impute", "leaf_posterior"]


def _hard_mask(x: object, marginalized: Tensor | None) -> Tensor | None:
    """A float mask of 0s and 1s as bool; soft masks are refused (other checks are :meth:`SPN.prepare`'s)."""
    if isinstance(marginalized, Tensor) and marginalized.is_floating_point():
        if bool(((marginalized > 0) & (marginalized < 1)).any()):
            raise ValueError("expectation takes hard evidence: a bool mask (True = hidden) or a float mask of 0s and 1s")
        return marginalized >= 1 if not bool(torch.isnan(marginalized).any()) else marginalized
    return marginalized


def leaf_posterior(spn: "SPN", evidence: Evidence, root: Tensor | None = None) -> Tensor:
    """Per sample, the probability that each leaf component lies in the induced tree: ``(R, B, K)``.

    Args:
        spn: the circuit.
        evidence: from :meth:`spnkit.SPN.prepare`.
        root: ``(B,)`` root sums to condition on, or None (``num_classes > 1``:
            the uniform mixture of the roots).

    Raises:
        ValueError: if a sample has probability zero (no posterior exists).
    """
    with torch.no_grad():
        weights = tuple(m.log_weights() for m in spn.weighted_layers)
    with torch.enable_grad():
        trace = spn.upward(evidence, params=CircuitParams(None, weights), leaf_grad=True)
        top = trace.root  # (B, C)
        if root is not None:
            ll = top.gather(1, root.view(-1, 1)).squeeze(1)
        elif top.shape[1] == 1:
            ll = top[:, 0]
        else:
            ll = torch.logsumexp(top, dim=1) - math.log(top.shape[1])
        if not bool(torch.isfinite(ll).all()):
            raise ValueError("a sample has probability zero under the circuit (log-likelihood -inf or NaN): "
                             "its conditional expectation is undefined")
        assert trace.leaf is not None
        (post,) = torch.autograd.grad(ll.sum(), trace.leaf)
    return post


@torch.no_grad()
def expectation(spn: "SPN", x: Tensor, marginalized: Tensor | None = None, *, variance: bool = False,
                root: int | Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """``E[x_hidden | x_observed]`` per sample (and the conditional variance), observed entries unchanged.

    Args:
        spn: the circuit; every leaf family needs a mean (``Leaf.moments``).
        x: ``(B, D)``; hidden entries may hold anything, NaN included.
        marginalized: ``(B, D)`` bool, True = hidden; a float mask must hold
            only 0s and 1s. None: nothing hidden (``x`` comes back).
        variance: also return ``Var[x_d | x_observed]`` (0 at observed entries).
        root: with ``num_classes > 1``: None conditions on the uniform mixture
            of the class roots (as ``log_prob``'s generative objective); an int
            or ``(B,)`` integer tensor on that class.

    Returns:
        ``(B, D)`` in the circuit's dtype, or ``(mean, variance)``. For a
        Categorical variable the mean is that of its category index.

    Raises:
        ValueError: for malformed inputs, soft masks, families without moments,
            or samples of probability zero.
    """
    if not isinstance(variance, bool):
        raise ValueError(f"variance must be True or False, got {variance!r}")
    ev = spn.prepare(x, _hard_mask(x, marginalized))
    B, D = ev.values.shape
    chosen = root_choice(root, B, spn.num_classes, spn.device)
    m = ev.marginalized
    hidden = torch.zeros(B, D, dtype=torch.bool, device=spn.device) if m is None else (m if m.dtype == torch.bool else m >= 1)
    values = ev.values.masked_fill(hidden, 0.0)  # NaN at hidden entries never enters the arithmetic
    wide = torch.float32 if spn.device.type == "mps" else torch.float64  # moments combined in float64 where the device has it
    if bool(hidden.any()):
        post = leaf_posterior(spn, ev, chosen).to(wide)
        mean, var = spn.leaf_layer.moments(values.to(wide), hidden, post)
    else:
        mean, var = values.to(wide), torch.zeros_like(values, dtype=wide)
    out = torch.where(hidden, mean.to(spn.dtype), values)
    if not variance:
        return out
    return out, torch.where(hidden, var.to(spn.dtype), torch.zeros_like(values))


def impute(spn: "SPN", x: Tensor, marginalized: Tensor | None = None) -> Tensor:
    """``x`` with its unobserved entries replaced by their conditional expectation given the observed ones.

    Args:
        spn: the circuit.
        x: ``(B, D)`` float; unobserved entries may hold anything, NaN included.
        marginalized: ``(B, D)`` bool, True = unobserved; None: the NaN entries of ``x``.

    Returns:
        ``(B, D)`` in the circuit's dtype (see :meth:`spnkit.SPN.expectation`).

    Example:
        >>> import torch, spnkit
        >>> spn = spnkit.SPN(spnkit.RegionGraph.random(3, 1, 1), spnkit.Normal(), 2, 2)
        >>> x = torch.tensor([[0.2, float("nan"), 0.7]])
        >>> filled = spnkit.impute(spn, x)
        >>> bool(torch.isfinite(filled).all()) and filled[0, 0].item() == x[0, 0].item()
        True
    """
    from .circuit import SPN

    if not isinstance(spn, SPN):
        raise ValueError(f"impute needs a spnkit.SPN, got {type(spn).__name__}")
    if marginalized is None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError("without a mask, impute fills the NaN entries of a float tensor x; pass marginalized otherwise")
        marginalized = torch.isnan(x)
    return spn.expectation(x, marginalized)
