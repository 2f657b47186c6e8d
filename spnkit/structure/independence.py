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
# a feature covariance whose largest eigenvalue is below this is that of a constant variable
_EIG_FLOOR = 1e-24
# pairwise-complete whitening while the (d, d, k, k) matrices have at most this many entries
_PAIRWISE_ENTRIES = 1 << 25
# entries of (pairs x k x k) blocks of cross-covariances (64 MiB of float64)
_BLOCK_ENTRIES = 1 << 23


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

    Each column is mapped to its empirical CDF ``u`` (over its observed
    values), then to ``num_features`` random features ``sin(w1 * u + w0)`` with
    ``w ~ N(0, (scale / 2)^2)`` (the scale over the two inputs ``u`` and 1, as
    in the paper's reference code). The RDC of a pair is the largest canonical
    correlation between the two feature sets: the largest singular value of
    ``S_ii^{-1/2} S_ij S_jj^{-1/2}`` from the features' covariances, with
    directions of eigenvalue below ``1e-10`` of the largest dropped. Pairs are
    computed in blocks of variables with batched matrix products and eigen- and
    singular value decompositions.

    With missing entries, pair ``(i, j)`` uses the rows where both are
    observed for its cross-covariance and, while ``d^2 k^2`` stays below
    ``2^25`` (``d <= 289`` at ``k = 20``), for the within-variable covariances
    too; beyond that each variable's own covariance is taken over all of its
    observed rows (bounded memory).

    Args:
        x: ``(n, d)`` float64 values.
        observed: optional ``(n, d)`` bool, True where observed.
        num_features: random features per column ``k``.
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
    o = torch.ones(n, d, dtype=torch.float64) if observed is None else observed.to(torch.float64)
    f = (f - (f * o[:, :, None]).sum(0) / o.sum(0).clamp(min=1.0)[:, None]) * o[:, :, None]  # centred, 0 where missing
    flat = f.reshape(n, d * k)
    per_variable = f.permute(1, 2, 0) @ f.permute(1, 0, 2) / o.sum(0).clamp(min=1.0)[:, None, None]  # (d, k, k)
    whiten = _inverse_sqrt(per_variable)  # each variable's own whitening, over its observed rows
    cnt = o.T @ o  # (d, d) shared rows
    if observed is not None:
        m = (flat.T @ o).view(d, k, d).permute(0, 2, 1) / cnt.clamp(min=1.0)[:, :, None]  # i's feature means where j observed
        pairwise = d * d * k * k <= _PAIRWISE_ENTRIES
        if pairwise:
            # whitening of i's features on the rows shared with j, (d, d, k, k)
            sq = torch.zeros(d * k * k, d, dtype=torch.float64)
            chunk = max(1, _PAIRWISE_ENTRIES // (8 * d * k * k))
            for t in range(0, n, chunk):
                fc = f[t : t + chunk]
                sq += (fc[:, :, :, None] * fc[:, :, None, :]).reshape(fc.shape[0], d * k * k).T @ o[t : t + chunk]
            sq = sq.view(d, k, k, d).permute(0, 3, 1, 2) / cnt.clamp(min=1.0)[:, :, None, None]
            whiten_pairs = _inverse_sqrt(sq - m[:, :, :, None] * m[:, :, None, :])
    out = torch.zeros(d, d, dtype=torch.float64)
    block = max(1, _BLOCK_ENTRIES // (d * k * k))
    for i0 in range(0, d, block):
        i1 = min(d, i0 + block)
        cov = (flat[:, i0 * k : i1 * k].T @ flat).view(i1 - i0, k, d, k).permute(0, 2, 1, 3)
        cov = cov / cnt[i0:i1].clamp(min=1.0)[:, :, None, None]
        if observed is not None:
            cov = cov - m[i0:i1, :, :, None] * m.transpose(0, 1)[i0:i1, :, None, :]
        if observed is not None and pairwise:
            left, right = whiten_pairs[i0:i1], whiten_pairs[:, i0:i1].transpose(0, 1)
        else:
            left, right = whiten[i0:i1, None], whiten[None, :]
        out[i0:i1] = torch.linalg.matrix_norm(left @ cov @ right, ord=2)
    out = torch.where(cnt >= 2, out.clamp(0.0, 1.0), 0.0)
    out = 0.5 * (out + out.T)
    return out.fill_diagonal_(0.0)


def _inverse_sqrt(s: Tensor) -> Tensor:
    """Symmetric pseudo-inverse square roots of a batch of covariance matrices ``(..., k, k)``."""
    s = 0.5 * (s + s.transpose(-1, -2))
    lam, vec = torch.linalg.eigh(s)
    top = lam[..., -1:].clamp(min=0.0)
    keep = (lam > _EIG_CUTOFF * top) & (top > _EIG_FLOOR)
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
