"""Pairwise statistics of all variable pairs at once: contingency tables and correlations.

Both are computed from sums over rows accumulated chunk by chunk (bounded
memory) with one matrix product per chunk. With missing entries every pair
uses only the rows where both of its variables are observed (pairwise-complete
statistics).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ._data import Data, discrete_codes

__all__ = ["PairwiseCounts", "discrete_pairwise", "gaussian_correlation"]

# entries of float32 scratch per chunk of rows (64 MiB)
_CHUNK_ENTRIES = 1 << 24
# entries of float64 contingency tables per block of variables (64 MiB)
_BLOCK_ENTRIES = 1 << 23
# indicator matrices with fewer ones than this fraction are multiplied as sparse matrices
_SPARSE_DENSITY = 0.04
# column blocks of indicator products (only blocks on and above the diagonal are computed)
_GRAM_BLOCKS = 8


@dataclass(frozen=True)
class PairwiseCounts:
    """Mutual information and G-test ingredients of every pair of discrete variables.

    Attributes:
        mi: ``(D, D)`` float64 mutual information in nats, zero diagonal.
        rows: ``(D, D)`` float64, the number of rows where both are observed.
        dof: ``(D, D)`` float64 degrees of freedom ``(r - 1)(c - 1)`` of the
            pair's contingency table, counting only levels that occur.
    """

    mi: Tensor
    rows: Tensor
    dof: Tensor


def _indicator_gram(idx: Tensor, width: int) -> Tensor:
    """``R^T R`` of the 0/1 matrix ``R`` (``(N, width)``) with a one at ``(r, idx[r, j])`` for ``idx[r, j] < width``.

    Sparse indicators (below :data:`_SPARSE_DENSITY` ones) are multiplied as
    sparse CSR matrices, dense ones as float32 chunks of rows; either way only
    the blocks on and above the diagonal are computed, then mirrored.

    Returns:
        ``(width + 1, width + 1)`` float64 counts, the last row and column 0
        (the place of "no column").
    """
    n = idx.shape[0]
    bounds = [width * k // _GRAM_BLOCKS for k in range(_GRAM_BLOCKS + 1)]
    gram = torch.zeros(width + 1, width + 1, dtype=torch.float64)
    hit = idx < width
    nnz = int(hit.sum())
    if nnz < _SPARSE_DENSITY * n * width:
        r, j = hit.nonzero(as_tuple=True)
        c = idx[r, j]
        key = r * width + c
        order = torch.argsort(key)  # row-major, columns sorted within each row
        r, c = r[order], c[order]
        by_col = torch.argsort(c, stable=True)
        rc = r[by_col]
        ccum = torch.zeros(width + 1, dtype=torch.int64)
        ccum[1:] = torch.bincount(c, minlength=width).cumsum(0)
        ones = torch.ones(nnz, dtype=torch.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR support is labelled beta
            for s, e in itertools.pairwise(bounds):
                if e == s:
                    continue
                lo, hi = int(ccum[s]), int(ccum[e])
                left = torch.sparse_csr_tensor(ccum[s : e + 1] - lo, rc[lo:hi], ones[: hi - lo], (e - s, n))
                keep = c >= s
                rr = r[keep]
                crow = torch.zeros(n + 1, dtype=torch.int64)
                crow[1:] = torch.bincount(rr, minlength=n).cumsum(0)
                right = torch.sparse_csr_tensor(crow, c[keep] - s, ones[: rr.numel()], (n, width - s))
                gram[s:e, s:width] = (left @ right).to_dense().to(torch.float64)
    else:
        chunk = max(1, _CHUNK_ENTRIES // (width + 1))
        exact32 = n < (1 << 24)  # float32 holds every count exactly
        acc = torch.zeros(width, width, dtype=torch.float32 if exact32 else torch.float64)
        for t in range(0, n, chunk):
            part = idx[t : t + chunk]
            a = torch.zeros(part.shape[0], width + 1, dtype=torch.float32)
            a.scatter_(1, part, 1.0)
            for s, e in itertools.pairwise(bounds):
                acc[s:e, s:] += (a[:, s:e].T @ a[:, s:width]).to(acc.dtype)
        gram[:width, :width] = acc
    for s, e in itertools.pairwise(bounds):
        gram[e:width, s:e] = gram[s:e, e:width].T
    return gram


def discrete_pairwise(d: Data, num_bins: int) -> PairwiseCounts:
    """Pairwise-complete contingency tables of all pairs, reduced to MI, row counts and dof.

    Each variable's codes (see :func:`discrete_codes`) are one-hot encoded
    without the variable's most frequent level and without levels that never
    occur, giving ``C`` indicator columns; with missing entries, ``D`` more
    columns indicate them (``M``). The product of this indicator matrix with
    itself (:func:`_indicator_gram`) holds every joint count of two kept
    levels. The other cells of each table are recovered from marginal counts:
    the counts of a variable's levels on the rows where the other variable is
    observed (``colsum(A) - A^T M``) and the rows per pair
    (``N - colsum(M)_i - colsum(M)_j + (M^T M)_ij``).

    Args:
        d: discrete data.
        num_bins: the most levels per variable.

    Returns:
        the :class:`PairwiseCounts`.
    """
    n, D = d.shape
    codes, levels = discrete_codes(d, num_bins)
    B = int(levels.max())
    flat = codes + torch.arange(D).mul(B)[None, :]
    observed = d.observed
    marg = torch.bincount(flat.reshape(-1) if observed is None else flat[observed], minlength=D * B)
    marg = marg.view(D, B).to(torch.float64)
    mode = marg.argmax(1)  # (D,) the dropped level of each variable
    kept = marg > 0
    kept[torch.arange(D), mode] = False
    C = int(kept.sum())
    masked = observed is not None
    width = C + (D if masked else 0)
    col = torch.full((D * B,), width, dtype=torch.int64)  # width = no column
    col[kept.view(-1)] = torch.arange(C)
    idx = col[flat]
    del flat
    if observed is not None:
        idx = torch.where(observed, idx, torch.arange(C, C + D)[None, :])
    ext = _indicator_gram(idx, width)
    del idx

    # the table of pair (i, j) over levels (a, b) is ext[col[i*B+a], col[j*B+b]] (0 at dropped levels)
    if masked:
        miss = ext.diagonal()[C:width]  # missing entries per variable
        pair_rows = n - miss[:, None] - miss[None, :] + ext[C:width, C:width]
        # counts of i's kept levels on the rows where j is observed, (D, B, D); 0 at dropped levels
        cond = (ext.diagonal()[:, None] - ext[:, C : C + D])[col].view(D, B, D)
        cond[~kept] = 0.0
    else:
        pair_rows = torch.full((D, D), float(n), dtype=torch.float64)
    onehot_mode = torch.zeros(D, B, dtype=torch.float64)
    onehot_mode[torch.arange(D), mode] = 1.0
    not_mode = 1.0 - onehot_mode

    mi = torch.zeros(D, D, dtype=torch.float64)
    dof = torch.zeros(D, D, dtype=torch.float64)
    block = max(1, _BLOCK_ENTRIES // (D * B * B))
    for i0 in range(0, D, block):
        i1 = min(D, i0 + block)
        bi = i1 - i0
        table = ext[col.view(D, B)[i0:i1].reshape(-1)][:, col]
        table = table.view(bi, B, D, B).permute(0, 2, 1, 3).contiguous()  # (bi, D, B, B)
        if masked:
            r_row = cond[i0:i1].permute(0, 2, 1)  # (bi, D, B): counts of i's level a where j observed
            r_col = cond[:, :, i0:i1].permute(2, 0, 1)  # (bi, D, B): counts of j's level b where i observed
        else:
            r_row = marg[i0:i1, None, :].expand(bi, D, B)
            r_col = marg[None, :, :].expand(bi, D, B)
        m_i = onehot_mode[i0:i1, None, :, None]  # (bi, 1, B, 1)
        m_j = onehot_mode[None, :, None, :]  # (1, D, 1, B)
        # fill column m_j of rows a != m_i, then row m_i of columns b != m_j, then the corner
        table += ((r_row - table.sum(-1)) * not_mode[i0:i1, None, :])[..., None] * m_j
        table += ((r_col - table.sum(-2)) * not_mode[None, :, :])[..., None, :] * m_i
        table += (pair_rows[i0:i1] - table.sum((-1, -2)))[..., None, None] * m_i * m_j
        table.clamp_(min=0.0)
        tot = table.sum((-1, -2))
        pa, pb = table.sum(-1), table.sum(-2)
        h = (
            torch.xlogy(pa, pa).sum(-1)
            + torch.xlogy(pb, pb).sum(-1)
            - torch.xlogy(table, table).sum((-1, -2))
            - torch.xlogy(tot, tot)
        )
        mi[i0:i1] = torch.where(tot > 0, -h / tot.clamp(min=1.0), 0.0)
        ra = ((pa > 0).sum(-1) - 1).clamp(min=0).to(torch.float64)
        rb = ((pb > 0).sum(-1) - 1).clamp(min=0).to(torch.float64)
        dof[i0:i1] = ra * rb
    mi.clamp_(min=0.0).fill_diagonal_(0.0)
    mi = 0.5 * (mi + mi.T)
    dof.fill_diagonal_(0.0)
    return PairwiseCounts(mi, pair_rows, dof)


def gaussian_correlation(d: Data) -> Tensor:
    """Pairwise-complete Pearson correlations ``(D, D)`` float64, unit diagonal.

    Values are standardized by their observed column means and standard
    deviations first (for accuracy); a variable whose standard deviation is
    below ``1e-12`` times its largest absolute value is constant.
    Without missing entries this is the ordinary correlation matrix; with
    missing entries pair ``(i, j)`` uses means, variances and the covariance
    over the rows where both are observed. Pairs with fewer than 2 such rows
    or a constant variable on them get correlation 0.

    Args:
        d: continuous (or any) data.

    Returns:
        the correlation matrix.
    """
    n, D = d.shape
    x = d.values
    o = torch.ones_like(x) if d.observed is None else d.observed.to(torch.float64)
    num = o.sum(0).clamp(min=1.0)
    x = (x - x.sum(0) / num) * o
    std = torch.sqrt((x * x).sum(0) / num)
    constant = std <= 1e-12 * d.values.abs().amax(0)
    x = x / torch.where(constant, torch.inf, std)
    chunk = max(1, _CHUNK_ENTRIES // (3 * D))
    s = torch.zeros(D, D, dtype=torch.float64)
    if d.observed is None:
        for c in range(0, n, chunk):
            xc = x[c : c + chunk]
            s += xc.T @ xc
        var = s.diagonal().clone()
        denom = torch.sqrt(var[:, None] * var[None, :])
        corr = torch.where(denom > 1e-20, s / denom.clamp(min=1e-20), 0.0)
    else:
        t = torch.zeros(D, D, dtype=torch.float64)
        q = torch.zeros(D, D, dtype=torch.float64)
        cnt = torch.zeros(D, D, dtype=torch.float64)
        for c in range(0, n, chunk):
            xc, oc = x[c : c + chunk], o[c : c + chunk]
            s += xc.T @ xc
            t += xc.T @ oc  # t[i, j]: sum of x_i over rows where i and j are observed
            q += (xc * xc).T @ oc
            cnt += oc.T @ oc
        k = cnt.clamp(min=1.0)
        cov = s / k - (t / k) * (t.T / k)
        var_i = q / k - (t / k) ** 2  # variance of i on the rows shared with j
        var_ij = (var_i * var_i.T).clamp(min=0.0)
        ok = (cnt >= 2) & (var_ij > 1e-20)
        corr = torch.where(ok, cov / torch.sqrt(var_ij.clamp(min=1e-20)), 0.0)
    corr = corr.clamp(-1.0, 1.0)
    corr = 0.5 * (corr + corr.T)
    corr.fill_diagonal_(1.0)
    return corr
