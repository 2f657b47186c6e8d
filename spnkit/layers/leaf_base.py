"""What every leaf layer provides: the contract between a circuit and its leaf distributions.

A leaf family (:class:`~spnkit.leaves.LeafFamily`) builds its layer
(:meth:`~spnkit.leaves.LeafFamily.make_layer`); the circuit, EM, backtracking,
conditional expectations and the data-driven initialisation talk to it only
through the methods below. Three layers implement it:
:class:`~spnkit.layers.LeafLayer` (factorized univariate families),
:class:`~spnkit.layers.MVNLeafLayer` (a full-covariance Gaussian per leaf
region and component) and :class:`~spnkit.layers.MixedLeafLayer` (one layer
per family of a mixed circuit, outputs added).

Natural parameters (:meth:`LeafLayerBase.natural`) are a tensor or a tuple of
tensors; running the layer on copies of them that require grad and
differentiating the summed root log-likelihood gives the expected sufficient
statistics (EM's counts) in the same structure (:meth:`LeafLayerBase.m_step`
reads them).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

__all__ = ["LeafLayerBase", "Natural", "flat", "unflat", "sum_groups"]

#: a leaf layer's natural parameters, or its expected statistics: one tensor or a tuple of them
Natural = Tensor | tuple[Tensor, ...]


def flat(value: Natural) -> tuple[Tensor, ...]:
    """The tensors of ``value``."""
    return value if isinstance(value, tuple) else (value,)


def unflat(like: Natural, tensors: list[Tensor] | tuple[Tensor, ...]) -> Natural:
    """``tensors`` in the structure of ``like`` (a tensor or a tuple)."""
    return tuple(tensors) if isinstance(like, tuple) else tensors[0]


def sum_groups(values: Tensor, groups: Tensor) -> Tensor:
    """Sums of rows of ``values`` ``(R, ...)`` over each group: ``(G, ...)``.

    ``groups`` ``(G, a)`` lists the rows of each group; entries equal to ``R``
    are padding and add nothing. One ``index_select`` and one ``index_add``.
    """
    G, a = groups.shape
    rows = groups.reshape(-1)
    keep = rows < values.shape[0]
    dest = torch.arange(G, device=groups.device).repeat_interleave(a)
    if not bool(keep.all()):
        rows, dest = rows[keep], dest[keep]
    out = values.new_zeros((G, *values.shape[1:]))
    return out.index_add_(0, dest, values.index_select(0, rows))


class LeafLayerBase(nn.Module):
    """``K`` leaf distributions per leaf region: ``(R, B, K)`` log-values, region-major (see :mod:`spnkit.layers`).

    Attributes:
        num_vars: variables ``D`` of the input ``(B, D)``.
        num_leaves: ``K``.
        var_index: buffer ``(R, n)``, the variables of each leaf region, padded with ``D``.
    """

    num_vars: int
    num_leaves: int
    var_index: Tensor

    @property
    def num_regions(self) -> int:
        return self.var_index.shape[0]

    @abstractmethod
    def forward(self, x: Tensor, w: Tensor | None, eta: Natural | None = None, finite: bool = False) -> Tensor:
        """Log-densities ``(R, B, K)`` of values ``x (B, D)`` under evidence weights ``w`` (see :meth:`LeafLayer._forward`).

        ``eta``: natural parameters to use instead of the layer's own (as :meth:`natural` returns them).
        """

    def grouped(self, x: Tensor, w: Tensor | None, groups: Tensor, eta: Natural | None = None, finite: bool = False) -> Tensor:
        """Summed log-densities of groups of leaf regions: ``(G, B, K)``, the products of their components ``k``.

        The values of product nodes whose children are leaf vectors entered
        unprojected (component ``k`` of each child multiplies product ``k``).
        ``groups`` ``(G, a)`` lists each group's rows of this layer, padded with
        ``R`` (:func:`sum_groups`); the other arguments are those of
        :meth:`forward`. This default sums :meth:`forward`'s rows; layers whose
        log-densities are linear in per-region coefficients override it to
        compute the sums without the rows.
        """
        return sum_groups(self.forward(x, w, eta, finite).transpose(1, 2), groups).transpose(1, 2)  # summed batch-fastest

    @abstractmethod
    def forward_max(self, x: Tensor, w: Tensor | None) -> Tensor:
        """Max-product values ``(R, B, K)``: the log-density of the observed entries times the maximum over the unobserved ones."""

    @abstractmethod
    def natural(self) -> Natural:
        """Natural parameters, differentiable in the layer's parameters."""

    @abstractmethod
    def m_step(self, counts: Natural, step_size: float, pseudocount: float) -> None:
        """Set the parameters from expected statistics (the gradient of the log-likelihood w.r.t. :meth:`natural`), in place.

        ``step_size < 1`` mixes old and new estimates in mean-parameter space
        (stochastic EM); factors that received no count keep their parameters.
        """

    def counts_match(self, counts: object) -> bool:
        """Whether ``counts`` have the structure of this layer's natural parameters (the default computes them to compare)."""
        with torch.no_grad():
            ours = flat(self.natural())
        theirs = counts if isinstance(counts, tuple) else (counts,)
        return len(ours) == len(theirs) and all(isinstance(c, Tensor) and c.shape == o.shape for o, c in zip(ours, theirs))

    @abstractmethod
    def fill(self, region: Tensor, choice: Tensor, sample: Tensor, x: Tensor, m: Tensor, greedy: bool,
             generator: torch.Generator | None, out: Tensor) -> None:
        """Write the values of chosen leaf components into ``out``: draws (or modes, ``greedy``) given the evidence.

        Args:
            region, choice, sample: ``(A,)`` leaf-layer rows, chosen components and samples.
            x: ``(B, D)`` values, zero where unobserved.
            m: ``(B, D)`` float mask (1 = unobserved).
            out: ``(B, D + 1)``; the pairs' variables are written (column ``D`` takes padding).
        """

    @abstractmethod
    def moments(self, x: Tensor, hidden: Tensor, posterior: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of every variable under the posterior mixture of the leaf components: each ``(B, D)``.

        Each variable lies in exactly one leaf region of any induced tree, so
        ``sum_{r holding d, k} posterior[r, b, k] = 1`` and the conditional
        distribution of ``x_d`` is the mixture of the components'
        conditionals ``p(x_d | component (r, k), evidence in r)`` with these
        weights. Computed in the dtype of ``posterior`` about a per-variable
        centre (the components' mean mean), so that the variance does not
        cancel away for variables far from zero.

        Args:
            x: ``(B, D)`` values, zero where hidden.
            hidden: ``(B, D)`` bool, True = unobserved.
            posterior: ``(R, B, K)``, the probability that component ``k`` of
                region ``r`` lies in the induced tree of sample ``b``.

        Returns:
            the mixture's mean and variance; at observed entries whatever the
            components say (callers keep the observed values).
        """

    @abstractmethod
    def init_from_data(self, x: Tensor, observed: Tensor, weights: Tensor, pseudocount: float) -> None:
        """Set component ``k`` of every region to the family's fit of the data weighted by ``weights[k]``, in place.

        Args:
            x: ``(N, D)`` values, zero where unobserved.
            observed: ``(N, D)`` float, 1 where observed.
            weights: ``(K, N)`` non-negative sample weights per component.
            pseudocount: the family's prior strength in the M-step.
        """

    @abstractmethod
    def effective_parameter_counts(self) -> Tensor:
        """Parameters of each leaf region, padding excluded: ``(R,)`` int64."""
