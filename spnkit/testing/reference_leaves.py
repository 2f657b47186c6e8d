"""Textbook leaf densities for the brute-force evaluator, in float64 numpy.

Each leaf region of a circuit becomes an evaluator that, given values and
evidence weights ``(B, D)``, returns the log-values ``(B, K)`` of the region's
``K`` leaves, computed from the formulas of each distribution (not from the
exponential-family statistics the leaf layers use). Only parameters are read
from the compiled layers: factorized layers' ``params (R0, n, K, ...)``, a
multivariate Normal layer's per-size groups (``group_index``,
``group_params`` and the family's ``covariance``), and a mixed layer's
families with their columns.

Mask polarity: ``w = 1 - m``; a soft weight scales a univariate factor's
log-density; multivariate factors take hard evidence only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..layers import LeafLayer, MixedLeafLayer, MVNLeafLayer
from ..leaves import Bernoulli, Binomial, Categorical, Leaf, LeafFamily, Mixed, Normal, Poisson

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["support", "supports", "factor_log_density", "factor_log_max", "region_evaluators", "Evaluator"]

#: ``f(xs, w, mode) -> (B, K)`` log-values of one leaf region's leaves
Evaluator = Callable[[np.ndarray, np.ndarray, str], np.ndarray]

_LGAMMA = np.vectorize(math.lgamma)


def factor_log_density(leaf: Leaf, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Log-density of univariate factors: ``params`` each ``(K,)`` or ``(K, E)`` for one slot, ``x (B,)`` -> ``(B, K)``."""
    if isinstance(leaf, Normal):
        var = leaf.variance({k: torch.as_tensor(v) for k, v in params.items()}).numpy()  # (K,)
        loc = params["loc"]
        return -0.5 * np.log(2 * math.pi * var)[None, :] - (x[:, None] - loc[None, :]) ** 2 / (2 * var[None, :])
    if isinstance(leaf, Bernoulli):
        logit = params["logits"][None, :]  # (1, K)
        log_p1, log_p0 = -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)
        return np.where(x[:, None] == 1, log_p1, log_p0)
    if isinstance(leaf, Categorical):
        logits = params["logits"]  # (K, E)
        log_p = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        return log_p[:, x.astype(np.int64)].T  # (B, K)
    if isinstance(leaf, Binomial):
        n, logit = leaf.total_count, params["logits"][None, :]  # (1, K)
        log_p1, log_p0 = -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)
        xs = x[:, None]
        log_choose = math.lgamma(n + 1) - _LGAMMA(xs + 1) - _LGAMMA(n - xs + 1)
        return log_choose + xs * log_p1 + (n - xs) * log_p0
    if isinstance(leaf, Poisson):
        rate = leaf.rate({k: torch.as_tensor(v) for k, v in params.items()}).numpy()[None, :]  # (1, K)
        xs = x[:, None]
        return xs * np.log(rate) - rate - _LGAMMA(xs + 1)
    raise ValueError(f"the brute-force evaluator knows Normal, Bernoulli, Categorical, Binomial and Poisson factors, got {leaf!r}")


def factor_log_max(leaf: Leaf, params: dict[str, np.ndarray]) -> np.ndarray:
    """Log of each factor's largest density or mass, ``(K,)``."""
    if isinstance(leaf, Normal):
        var = leaf.variance({k: torch.as_tensor(v) for k, v in params.items()}).numpy()
        return -0.5 * np.log(2 * math.pi * var)
    if isinstance(leaf, Bernoulli):
        logit = params["logits"]
        return np.maximum(-np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit))
    if isinstance(leaf, Categorical):
        logits = params["logits"]
        return (logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)).max(-1)
    if isinstance(leaf, Binomial):
        values = np.arange(leaf.total_count + 1, dtype=np.float64)
        return factor_log_density(leaf, params, values).max(0)  # (K,): the largest mass over the support
    if isinstance(leaf, Poisson):
        rate = leaf.rate({k: torch.as_tensor(v) for k, v in params.items()}).numpy()  # the mode is floor or ceil of the rate
        lo, hi = np.floor(rate), np.ceil(rate)
        both = [np.diagonal(factor_log_density(leaf, params, v)) for v in (lo, hi)]
        return np.maximum(*both)
    raise ValueError(f"the brute-force evaluator knows Normal, Bernoulli, Categorical, Binomial and Poisson factors, got {leaf!r}")


def support(leaf: LeafFamily) -> list[float]:
    """The values of a finite discrete leaf family.

    Raises:
        ValueError: for continuous, unbounded or mixed families (see :func:`supports`).
    """
    if isinstance(leaf, Bernoulli):
        return [0.0, 1.0]
    if isinstance(leaf, Categorical):
        return [float(v) for v in range(leaf.num_categories)]
    if isinstance(leaf, Binomial):
        return [float(v) for v in range(leaf.total_count + 1)]
    raise ValueError(f"{type(leaf).__name__} leaves have no finite support to enumerate")


def supports(leaf: LeafFamily, num_vars: int) -> list[list[float]]:
    """The values of each of ``num_vars`` variables (a mixed family: per column)."""
    if isinstance(leaf, Mixed):
        return [support(leaf.family_of(v)) for v in range(num_vars)]
    return [support(leaf)] * num_vars


# ---------------------------------------------------------------- regions
def _factorized(layer: LeafLayer, cols: list[int]) -> dict[int, tuple[list[int], Evaluator]]:
    """Per leaf-layer row: its (global) variables and the evaluator of its product of factors."""
    params = {k: v.detach().to(torch.float64).cpu().numpy() for k, v in layer.params.items()}  # (R0, n, K, ...)
    index = layer.var_index.cpu().numpy()
    out: dict[int, tuple[list[int], Evaluator]] = {}
    for row in range(index.shape[0]):
        slots = [(j, int(v)) for j, v in enumerate(index[row]) if int(v) < layer.num_vars]
        per_var = [(cols[v], {k: p[row, j] for k, p in params.items()}) for j, v in slots]

        def evaluate(xs: np.ndarray, w: np.ndarray, mode: str, per_var=per_var) -> np.ndarray:
            total = np.zeros((xs.shape[0], layer.num_leaves))
            for v, prm in per_var:
                lp = factor_log_density(layer.leaf, prm, xs[:, v])  # (B, K)
                term = np.where(w[:, v : v + 1] > 0, w[:, v : v + 1] * lp, 0.0)
                if mode == "max":
                    term = term + (1 - w[:, v : v + 1]) * factor_log_max(layer.leaf, prm)[None, :]
                total = total + term
            return total

        out[row] = ([v for v, _ in per_var], evaluate)
    return out


def _gaussian(layer: MVNLeafLayer, cols: list[int]) -> dict[int, tuple[list[int], Evaluator]]:
    """Per leaf-layer row with variables: the Gaussian log-density of the observed sub-vector (max: times the hidden peak)."""
    out: dict[int, tuple[list[int], Evaluator]] = {}
    for d in layer.sizes:
        rows, index = layer.group_index(d)
        params = layer.group_params(d)
        loc = params["loc"].detach().to(torch.float64).cpu().numpy()  # (R_d, K, d)
        cov = layer.leaf.covariance({k: v.detach().to(torch.float64) for k, v in params.items()}).cpu().numpy()
        for i, row in enumerate(rows.tolist()):
            variables = [cols[v] for v in index[i].tolist()]

            def evaluate(xs: np.ndarray, w: np.ndarray, mode: str, variables=variables, mu=loc[i], sigma=cov[i]) -> np.ndarray:
                ww = w[:, variables]
                if np.any((ww > 0) & (ww < 1)):
                    raise ValueError("multivariate Normal leaves take hard evidence only")
                res = np.zeros((xs.shape[0], mu.shape[0]))
                for b in range(xs.shape[0]):  # a reference: one sample and component at a time
                    o = np.flatnonzero(ww[b] > 0)
                    h = np.flatnonzero(ww[b] == 0)
                    for k in range(mu.shape[0]):
                        s_oo = sigma[k][np.ix_(o, o)]
                        z = xs[b, np.array(variables)[o]] - mu[k][o] if len(o) else np.zeros(0)
                        val = 0.0
                        if len(o):
                            val = -0.5 * (len(o) * math.log(2 * math.pi) + np.linalg.slogdet(s_oo)[1] + z @ np.linalg.solve(s_oo, z))
                        if mode == "max" and len(h):
                            s_hh = sigma[k][np.ix_(h, h)]
                            if len(o):
                                s_ho = sigma[k][np.ix_(h, o)]
                                s_hh = s_hh - s_ho @ np.linalg.solve(s_oo, s_ho.T)
                            val -= 0.5 * (len(h) * math.log(2 * math.pi) + np.linalg.slogdet(s_hh)[1])
                        res[b, k] = val
                return res

            out[row] = (variables, evaluate)
    return out


def region_evaluators(spn: "SPN") -> dict[int, tuple[list[int], Evaluator]]:
    """For each leaf region (by region index): its variables and the evaluator of its ``K`` leaves."""
    layer = spn.leaf_layer
    parts: list[tuple[object, list[int]]] = []
    if isinstance(layer, MixedLeafLayer):
        parts = [(sub, list(cols)) for sub, (_, cols) in zip(layer.layers, layer.leaf.parts)]
    else:
        parts = [(layer, list(range(spn.num_vars)))]
    per_row: dict[int, list[tuple[list[int], Evaluator]]] = {}
    for sub, cols in parts:
        if isinstance(sub, MVNLeafLayer):
            found = _gaussian(sub, cols)
        elif isinstance(sub, LeafLayer):
            found = _factorized(sub, cols)
        else:
            raise ValueError(f"the brute-force evaluator knows factorized, multivariate Normal and mixed leaf layers, got {type(sub).__name__}")
        for row, item in found.items():
            per_row.setdefault(row, []).append(item)
    out: dict[int, tuple[list[int], Evaluator]] = {}
    for row, region in enumerate(spn.leaf_regions):
        items = per_row.get(row, [])
        variables = [v for vs, _ in items for v in vs]

        def evaluate(xs: np.ndarray, w: np.ndarray, mode: str, items=items) -> np.ndarray:
            return sum((f(xs, w, mode) for _, f in items), np.zeros((xs.shape[0], spn.num_leaves)))

        out[region] = (variables, evaluate)
    return out
