"""Pairwise independence tests and the independent groups of variables they imply.

LearnSPN splits a set of variables into the connected components of the graph
whose edges join the pairs a test declares dependent:

* continuous data: the randomized dependence coefficient (RDC, Lopez-Paz,
  Hennig & Schoelkopf, NeurIPS 2013), dependent when above a threshold;
* discrete data: the G-test of independence on each pair's contingency table,
  dependent when its p-value is below a threshold.

Missing entries are left out pair by pair (pairwise-complete statistics).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._data import Data
from ._pairwise import discrete_pairwise

__all__ = ["connected_components", "g_test_pvalues", "independent_groups", "rdc"]

#: RDC's random features per variable and their scale (the paper's defaults).
RDC_FEATURES = 20
RDC_SCALE = 1.0 / 6.0
# eigenvalues of a feature covariance below this fraction of its largest are dropped (rank deficiency)
_EIG_CUTOFF = 1e-10


def _copula(x: Tensor, observed: Tensor | None) -> Tensor:
    """Empirical CDF of every column at every entry: the fraction of observed values <= it (0 where missing)."""
    n = x.shape[0]
    if observed is None:
        srt = x.T.contiguous().sort(dim=1).values
        return torch.searchsorted(srt, x.T.contiguous(), right=True).T.to(torch.float64) / n
    filled = x.masked_fill(~observed, torch.inf).T.contiguous()
    srt = filled.sort(dim=1).values
    count = observed.sum(0).clamp(min=1).to(torch.float64)
    u = torch.searchsorted(srt, filled, right=True).T.to(torch.float64) / count
    return u.masked_fill(~observed, 0.0)


def rdc(
    x: Tensor,
    observed: Tensor | None = None,
    *,
    num_features: int = RDC_FEATURES,
    scale: float = RDC_SCALE,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomized dependence coefficient of every pair of columns.

    Each column is mapped to its empirical CDF ``u``, then to
    ``num_features`` random features ``sin(w1 * u + w0)`` with
    ``w ~ N(0, (scale / 2)^2)`` (the scale over the two inputs ``u`` and 1, as
    in the paper's reference code). The RDC of a pair is the largest canonical
    correlation between the two feature sets: the largest singular value of
    ``S_ii^{-1/2} S_ij S_jj^{-1/2}`` from the features' covariance ``S``, with
    directions of eigenvalue below ``1e-10`` of the largest dropped. All pairs
    are computed at once (one covariance matrix, batched eigen- and singular
    value decompositions).

    Args:
        x: ``(n, d)`` float64 values.
        observed: optional ``(n, d)`` bool, True where observed; pair ``(i, j)``
            then uses the rows where both are observed.
        num_features: random features per column.
        scale: scale of the random projections.
        generator: torch generator of the projections.

    Returns:
        ``(d, d)`` float64 in ``[0, 1]``, zero diagonal; 0 for a pair with a
        constant column or fewer than 2 shared rows.
    """
    n, d = x.shape
    k = num_features
    u = _copula(x, observed)
    w = torch.randn(2, d, k, generator=generator, dtype=torch.float64) * (scale / 2)
    f = torch.sin(u[:, :, None] * w[0] + w[1])  # (n, d, k)
    if observed is None:
        f = f - f.mean(0)
        flat = f.reshape(n, d * k)
        cov = (flat.T @ flat / max(n, 1)).view(d, k, d, k).permute(0, 2, 1, 3)  # (d, d, k, k)
        whiten = _inverse_sqrt(cov[torch.arange(d), torch.arange(d)])  # (d, k, k)
        whiten_i, whiten_j = whiten[:, None], whiten[None, :]
        enough = torch.full((d, d), n >= 2)
    else:
        o = observed.to(torch.float64)
        f = f * o[:, :, None]
        f = (f - f.sum(0) / o.sum(0).clamp(min=1.0)[:, None]) * o[:, :, None]  # centred: accurate moments
        flat = f.reshape(n, d * k)
        cnt = o.T @ o  # (d, d) shared rows
        m = (flat.T @ o).view(d, k, d).permute(0, 2, 1) / cnt.clamp(min=1.0)[:, :, None]  # mean of i's features where j observed
        cross = (flat.T @ flat).view(d, k, d, k).permute(0, 2, 1, 3) / cnt.clamp(min=1.0)[:, :, None, None]
        cov = cross - m[:, :, :, None] * m.transpose(0, 1)[:, :, None, :]
        outer = (f[:, :, :, None] * f[:, :, None, :]).reshape(n, d * k * k)
        sq = (outer.T @ o).view(d, k, k, d).permute(0, 3, 1, 2) / cnt.clamp(min=1.0)[:, :, None, None]
        s_ii = sq - m[:, :, :, None] * m[:, :, None, :]  # covariance of i's features on rows shared with j
        whiten_i = _inverse_sqrt(s_ii)
        whiten_j = whiten_i.transpose(0, 1)
        enough = cnt >= 2
    core = whiten_i @ cov @ whiten_j
    out = torch.linalg.matrix_norm(core, ord=2).clamp(0.0, 1.0)
    out = torch.where(enough, out, 0.0)
    out = 0.5 * (out + out.T)
    return out.fill_diagonal_(0.0)


def _inverse_sqrt(s: Tensor) -> Tensor:
    """Symmetric pseudo-inverse square roots of a batch of covariance matrices ``(..., k, k)``."""
    s = 0.5 * (s + s.transpose(-1, -2))
    lam, vec = torch.linalg.eigh(s)
    top = lam[..., -1:].clamp(min=0.0)
    keep = (lam > _EIG_CUTOFF * top) & (top > 1e-300)
    inv = torch.where(keep, 1.0 / torch.sqrt(lam.clamp(min=1e-300)), 0.0)
    return (vec * inv[..., None, :]) @ vec.transpose(-1, -2)


def g_test_pvalues(d: Data, num_bins: int) -> Tensor:
    """P-values of the G-test of independence for every pair of discrete variables.

    ``G = 2 n MI`` with ``n`` the pair's shared rows and ``MI`` the plug-in
    mutual information in nats; under independence ``G`` is asymptotically
    chi-square with ``(r - 1)(c - 1)`` degrees of freedom (``r``, ``c``: the
    levels that occur), so the p-value is the regularized upper incomplete
    gamma function ``Q(dof / 2, G / 2)``. Pairs without a degree of freedom (a
    constant variable) get p-value 1.

    Returns:
        ``(d, d)`` float64 p-values, 1 on the diagonal.
    """
    stats = discrete_pairwise(d, num_bins)
    g = 2.0 * stats.rows * stats.mi
    return torch.where(stats.dof > 0, torch.special.gammaincc(stats.dof.clamp(min=1.0) / 2, g / 2), 1.0)


def connected_components(adjacency: Tensor) -> list[list[int]]:
    """Connected components of an undirected graph given by a ``(d, d)`` bool adjacency matrix.

    Each vertex repeatedly takes the smallest label among itself and its
    neighbours (vectorized over vertices) until no label changes.

    Returns:
        the components, each sorted, ordered by their smallest vertex.
    """
    d = adjacency.shape[0]
    adj = adjacency | adjacency.T
    labels = torch.arange(d)
    big = torch.full((d, d), d, dtype=torch.int64)
    while True:
        new = torch.minimum(labels, torch.where(adj, labels[None, :], big).min(1).values)
        new = new[new]  # jump to the label's label
        if torch.equal(new, labels):
            break
        labels = new
    groups: dict[int, list[int]] = {}
    for v, lab in enumerate(labels.tolist()):
        groups.setdefault(lab, []).append(v)
    return [groups[k] for k in sorted(groups)]


def independent_groups(
    d: Data,
    threshold: float,
    *,
    num_bins: int,
    generator: torch.Generator | None = None,
) -> list[np.ndarray]:
    """Split the variables of ``d`` into groups with no dependent pair across groups.

    Continuous data: pairs with RDC above ``threshold`` are dependent.
    Discrete data: pairs whose G-test p-value is below ``threshold`` are
    dependent; pairs with no degree of freedom (a constant variable) are
    independent.

    Args:
        d: the data of one recursion step (its columns are the scope).
        threshold: the RDC threshold, or the G-test p-value.
        num_bins: the most levels per discrete variable.
        generator: torch generator for the RDC's random features.

    Returns:
        the groups as sorted arrays of column indices, ordered by first column.
    """
    if d.discrete:
        dep = g_test_pvalues(d, num_bins) < threshold
    else:
        dep = rdc(d.values, d.observed, generator=generator) > threshold
    return [np.asarray(c, dtype=np.int64) for c in connected_components(dep)]
