"""Row clustering for LearnSPN: k-means and a diagonal Gaussian mixture fitted by EM.

Both work on standardized data (each column centred and scaled by its
standard deviation over the observed rows; constant columns become 0) with
missing entries imputed by the column mean (0 after standardizing), and are
seeded: the same generator state gives the same clusters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cluster_rows", "gaussian_mixture", "kmeans", "standardize"]

CLUSTERINGS = ("kmeans", "em")


def standardize(x: Tensor, observed: Tensor | None = None) -> Tensor:
    """Columns of ``x`` ``(n, d)`` centred and scaled over their observed rows; missing entries and constant columns become 0."""
    o = torch.ones_like(x) if observed is None else observed.to(x.dtype)
    count = o.sum(0).clamp(min=1.0)
    centred = (x - (x * o).sum(0) / count) * o
    std = torch.sqrt((centred * centred).sum(0) / count)
    constant = std <= 1e-12 * (x * o).abs().amax(0).clamp(min=1e-300)
    return centred / torch.where(constant, torch.inf, std)


def _sq_dist(z: Tensor, centers: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, k)`` between rows and centers."""
    return ((z * z).sum(1, keepdim=True) - 2.0 * z @ centers.T + (centers * centers).sum(1)[None, :]).clamp(min=0.0)


def _plus_plus(z: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next center drawn with probability proportional to the squared distance."""
    n = z.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centers = z[first : first + 1]
    d2 = _sq_dist(z, centers)[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:
            nxt = int(torch.randint(n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial(d2 / total, 1, generator=generator))
        centers = torch.cat([centers, z[nxt : nxt + 1]])
        d2 = torch.minimum(d2, _sq_dist(z, centers[-1:])[:, 0])
    return centers


def kmeans(z: Tensor, k: int, generator: torch.Generator, max_iter: int = 100) -> Tensor:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        z: ``(n, d)`` float64 (standardized) rows.
        k: number of clusters.
        generator: seeds the initial centers.
        max_iter: iterations at most; stops when no assignment changes.

    Returns:
        ``(n,)`` int64 cluster labels in ``0 .. k-1`` (a cluster may be empty).
    """
    centers = _plus_plus(z, k, generator)
    labels = torch.full((z.shape[0],), -1, dtype=torch.int64)
    for _ in range(max_iter):
        new = _sq_dist(z, centers).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).to(z.dtype)
        sums = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, labels, z)
        centers = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1.0)[:, None], centers)
    return labels


def gaussian_mixture(z: Tensor, k: int, generator: torch.Generator, max_iter: int = 50, tol: float = 1e-6) -> Tensor:
    """A mixture of ``k`` diagonal Gaussians fitted by EM from the k-means clusters; rows go to their most probable component.

    Variances are floored at ``1e-3`` (of the standardized unit variance).

    Args:
        z: ``(n, d)`` float64 (standardized) rows.
        k: number of components.
        generator: seeds the k-means initialization.
        max_iter: EM iterations at most; stops when the mean log-likelihood
            improves by less than ``tol``.
        tol: that tolerance.

    Returns:
        ``(n,)`` int64 labels in ``0 .. k-1``.
    """
    labels = kmeans(z, k, generator)
    resp = torch.nn.functional.one_hot(labels, k).to(z.dtype)
    last = -math.inf
    for _ in range(max_iter):
        weight = resp.sum(0) + 1e-10
        mean = resp.T @ z / weight[:, None]
        var = (resp.T @ (z * z) / weight[:, None] - mean * mean).clamp(min=1e-3)
        logp = (
            torch.log(weight / weight.sum())[None, :]
            - 0.5 * (torch.log(2 * math.pi * var).sum(1)[None, :] + ((z * z) @ (1 / var).T - 2 * z @ (mean / var).T + (mean * mean / var).sum(1)[None, :]))
        )
        norm = torch.logsumexp(logp, 1, keepdim=True)
        resp = torch.exp(logp - norm)
        ll = float(norm.mean())
        if ll - last < tol:
            break
        last = ll
    return resp.argmax(1)


def cluster_rows(x: Tensor, observed: Tensor | None, k: int, method: str, generator: torch.Generator) -> Tensor:
    """Cluster the rows of ``x`` ``(n, d)`` by ``method`` ("kmeans" or "em") on standardized, mean-imputed data.

    Returns:
        ``(n,)`` int64 labels in ``0 .. k-1``.
    """
    z = standardize(x, observed)
    if method == "kmeans":
        return kmeans(z, k, generator)
    return gaussian_mixture(z, k, generator)
