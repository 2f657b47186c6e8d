"""Reference computations for tiny circuits, written independently of the compiled layers.

Everything here walks the node-level graph of :meth:`spnkit.SPN.to_networkx`
(node attribute ``kind`` in {"sum", "product", "leaf"}, ``scope``, ``weight`` on
sum edges) in plain float64 numpy, one node at a time, and evaluates each leaf
factor from its textbook formula (not from the exponential-family statistics the
leaf layer uses). Only the leaf *parameters* are read from the compiled module:
the leaf layer's parameters (see :mod:`spnkit.testing.reference_leaves`, which
evaluates each leaf region from textbook formulas: univariate factors,
multivariate Normals, mixed families).

It is slow (a Python loop over nodes) and meant for circuits of a few hundred
nodes. Mask polarity as everywhere in spnkit: True or 1.0 = unobserved,
integrated out; a soft mask ``m`` weights a factor's log-density by ``1 - m``.

Example:
    >>> import torch, spnkit
    >>> from spnkit.testing import brute_force
    >>> rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, spnkit.Bernoulli(), num_sums=2, num_leaves=2).double()
    >>> states = brute_force.all_states(spn)                      # (16, 4)
    >>> ref = brute_force.log_prob(spn, states)
    >>> bool(torch.allclose(ref, spn.log_prob(states), atol=1e-12))
    True
    >>> abs(float(torch.logsumexp(ref, 0))) < 1e-9                # normalized
    True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from .reference_leaves import region_evaluators, support, supports

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = [
    "log_prob",
    "max_product",
    "node_values",
    "support",
    "supports",
    "all_states",
    "expectation",
    "log_normalizer",
    "mpe",
    "GoodnessOfFit",
    "goodness_of_fit",
    "chi2_sf",
    "ks_distance",
]


# ---------------------------------------------------------------- evaluator
def _as_inputs(spn: "SPN", x: Tensor, marginalized: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and the evidence weights ``1 - m`` as float64 numpy ``(B, D)``."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != spn.num_vars:
        raise ValueError(f"x must be a tensor of shape (batch, {spn.num_vars}), got {getattr(x, 'shape', type(x))}")
    xs = x.detach().to(torch.float64).cpu().numpy().copy()
    if marginalized is None:
        m = np.zeros_like(xs)
    else:
        if not isinstance(marginalized, Tensor) or marginalized.shape != x.shape:
            raise ValueError(f"marginalized must be a tensor of shape {tuple(x.shape)}")
        m = marginalized.detach().to(torch.float64).cpu().numpy()
        if np.any(~((m >= 0) & (m <= 1))):
            raise ValueError("marginalized must lie in [0, 1]")
    w = 1.0 - m
    bad = (w > 0) & ~np.isfinite(xs)
    if bad.any():
        raise ValueError("x has NaN or inf at observed entries")
    xs[w == 0] = 0.0  # never read; keeps the arithmetic finite
    return xs, w


def node_values(spn: "SPN", x: Tensor, marginalized: Tensor | None = None, mode: str = "sum", graph: nx.DiGraph | None = None) -> dict:
    """Log-value of every node of ``spn.to_networkx()`` for each sample.

    Args:
        spn: the circuit.
        x: ``(B, D)`` values; entries with mask 1 may hold anything.
        marginalized: ``(B, D)`` bool or float mask in ``[0, 1]`` (1 = unobserved).
        mode: "sum" for the circuit's value, "max" for max-product (sums take
            the best weighted child; an unobserved factor contributes its
            largest log-density, a soft one ``w log p(x) + (1 - w) log max p``).
        graph: ``spn.to_networkx()``, if already at hand.

    Returns:
        node -> ``(B,)`` float64 numpy array.
    """
    if mode not in ("sum", "max"):
        raise ValueError(f"mode must be 'sum' or 'max', got {mode!r}")
    xs, w = _as_inputs(spn, x, marginalized)
    g = spn.to_networkx() if graph is None else graph
    leaves = region_evaluators(spn)
    cache: dict[int, np.ndarray] = {}  # leaf region -> (B, K)
    values: dict = {}
    for node in reversed(list(nx.topological_sort(g))):  # children before parents
        data = g.nodes[node]
        kind = data["kind"]
        if kind == "leaf":
            region = data["region"]
            if region not in cache:
                variables, evaluate = leaves[region]
                if sorted(variables) != sorted(data["scope"]):
                    raise ValueError(f"leaf region {region}: layer variables {variables} differ from the scope {data['scope']}")
                cache[region] = evaluate(xs, w, mode)  # (B, K)
            values[node] = cache[region][:, _leaf_index(node, data)]
        elif kind == "product":
            kids = list(g.successors(node))
            values[node] = np.sum([values[c] for c in kids], axis=0)
        elif kind == "sum":
            with np.errstate(divide="ignore"):  # log of a zero weight is -inf
                terms = np.stack([np.log(g.edges[node, c]["weight"]) + values[c] for c in g.successors(node)])
                values[node] = terms.max(0) if mode == "max" else np.logaddexp.reduce(terms, axis=0)
        else:
            raise ValueError(f"node {node!r} has kind {kind!r}; expected sum, product or leaf")
    return values


def _leaf_index(node, data) -> int:
    """Position ``k`` of a leaf node within its region's vector."""
    if "k" in data:
        return int(data["k"])
    return int(node[-1])  # nodes are ("leaf", region, k)


def _roots(g: nx.DiGraph) -> list:
    roots = sorted((n for n in g.nodes if g.in_degree(n) == 0), key=lambda n: n[-1])
    flagged = sorted((n for n, d in g.nodes(data=True) if d.get("root")), key=lambda n: n[-1])
    if roots != flagged:
        raise ValueError(f"nodes without parents {roots[:5]} differ from the nodes flagged root {flagged[:5]}")
    return roots


def _evaluate(spn: "SPN", x: Tensor, marginalized: Tensor | None, mode: str) -> Tensor:
    g = spn.to_networkx()
    values = node_values(spn, x, marginalized, mode, g)
    roots = _roots(g)
    out = torch.as_tensor(np.stack([values[r] for r in roots], axis=1), dtype=torch.float64)  # (B, C)
    return out[:, 0] if len(roots) == 1 else out


def log_prob(spn: "SPN", x: Tensor, marginalized: Tensor | None = None) -> Tensor:
    """Reference ``spn.log_prob(x, marginalized)``: ``(B,)`` or ``(B, num_classes)``, float64."""
    return _evaluate(spn, x, marginalized, "sum")


def max_product(spn: "SPN", x: Tensor, marginalized: Tensor | None = None) -> Tensor:
    """Reference max-product value (the value ``spn.mpe(..., return_value=True)`` reports), float64."""
    return _evaluate(spn, x, marginalized, "max")


# -------------------------------------------------------------- enumeration
def all_states(spn: "SPN", max_states: int = 4096) -> Tensor:
    """Every joint state of a discrete circuit, lexicographic: ``(N, D)`` float64.

    Raises:
        ValueError: for continuous leaves or more than ``max_states`` states.
    """
    values = supports(spn.leaf, spn.num_vars)
    n = math.prod(len(v) for v in values)
    if n > max_states:
        raise ValueError(f"{n} joint states exceed max_states={max_states}")
    return torch.tensor(list(itertools.product(*values)), dtype=torch.float64)


def log_normalizer(spn: "SPN", max_states: int = 4096) -> Tensor:
    """``log sum_x p(x)`` over all states, with ``spn.log_prob``: ``()`` or ``(num_classes,)``."""
    with torch.no_grad():
        lp = spn.log_prob(all_states(spn, max_states).to(spn.dtype))
    return torch.logsumexp(lp.to(torch.float64), dim=0)


def mpe(
    spn: "SPN", x: Tensor, marginalized: Tensor, root: int | None = None, max_states: int = 4096
) -> tuple[Tensor, Tensor]:
    """Exact most probable completion by enumeration, with the reference evaluator.

    Args:
        x: ``(B, D)``.
        marginalized: ``(B, D)`` bool, True = to be completed.
        root: the root sum to maximize; None maximizes over all of them.

    Returns:
        completions ``(B, D)`` and their log-probabilities ``(B,)``.
    """
    if not isinstance(marginalized, Tensor) or marginalized.dtype != torch.bool or marginalized.shape != x.shape:
        raise ValueError("marginalized must be a bool tensor of the shape of x")
    values = supports(spn.leaf, spn.num_vars)
    cands, owner = [], []
    for b in range(x.shape[0]):
        free = torch.nonzero(marginalized[b]).flatten().tolist()
        n = math.prod(len(values[v]) for v in free)
        if n > max_states:
            raise ValueError(f"sample {b}: {n} completions exceed max_states={max_states}")
        combos = torch.tensor(list(itertools.product(*[values[v] for v in free])), dtype=torch.float64).reshape(n, len(free))
        cand = x[b].to(torch.float64).nan_to_num(0.0).repeat(n, 1)  # (n, D)
        cand[:, free] = combos
        cands.append(cand)
        owner += [b] * n
    cand = torch.cat(cands)
    lp = log_prob(spn, cand)  # one evaluation for every candidate of every sample
    if lp.dim() == 2:
        lp = lp.amax(1) if root is None else lp[:, root]
    owner_t = torch.tensor(owner)
    outs, vals = [], []
    for b in range(x.shape[0]):
        rows = torch.nonzero(owner_t == b).flatten()
        best = rows[int(lp[rows].argmax())]
        outs.append(cand[best])
        vals.append(lp[best])
    return torch.stack(outs), torch.stack(vals)


def expectation(spn: "SPN", x: Tensor, marginalized: Tensor, root: int | None = None, max_states: int = 4096
                ) -> tuple[Tensor, Tensor]:
    """Exact conditional mean and variance of the hidden entries of a discrete circuit, by enumerating their completions.

    Args:
        x: ``(B, D)``.
        marginalized: ``(B, D)`` bool, True = hidden.
        root: the root sum to condition on; None: the uniform mixture of the roots.

    Returns:
        ``(mean, variance)``, each ``(B, D)`` float64; observed entries keep
        their value and variance 0.
    """
    if not isinstance(marginalized, Tensor) or marginalized.dtype != torch.bool or marginalized.shape != x.shape:
        raise ValueError("marginalized must be a bool tensor of the shape of x")
    values = supports(spn.leaf, spn.num_vars)
    mean = x.detach().to(torch.float64).clone()
    mean[marginalized] = 0.0
    var = torch.zeros_like(mean)
    for b in range(x.shape[0]):
        free = torch.nonzero(marginalized[b]).flatten().tolist()
        if not free:
            continue
        n = math.prod(len(values[v]) for v in free)
        if n > max_states:
            raise ValueError(f"sample {b}: {n} completions exceed max_states={max_states}")
        combos = torch.tensor(list(itertools.product(*[values[v] for v in free])), dtype=torch.float64).reshape(n, len(free))
        cand = mean[b].repeat(n, 1)
        cand[:, free] = combos
        lp = log_prob(spn, cand)
        if lp.dim() == 2:
            lp = torch.logsumexp(lp, 1) if root is None else lp[:, root]
        p = torch.softmax(lp, 0).unsqueeze(1)  # (n, 1) the conditional of the completions
        m1 = (p * combos).sum(0)
        mean[b, free] = m1
        var[b, free] = (p * (combos - m1) ** 2).sum(0)
    return mean, var


# ---------------------------------------------------------- goodness of fit
def chi2_sf(stat: float, dof: int) -> float:
    """Survival function of the chi-square distribution, ``P(X >= stat)``."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(max(stat, 0.0) / 2, dtype=torch.float64)))


@dataclass(frozen=True)
class GoodnessOfFit:
    """Result of comparing sample frequencies with a discrete distribution.

    Attributes:
        num_samples: ``N``.
        chi2: Pearson's statistic over the bins (bins with expected count below
            ``min_expected`` pooled into one).
        dof: degrees of freedom (bins - 1).
        p_value: chi-square survival probability of ``chi2``; 0 when a sample
            fell on a state of probability zero or outside the listed states.
        tv: total variation distance between the empirical and the given distribution.
        tv_bound: ``0.5 sum sqrt(p (1 - p) / N) + sqrt(log(1 / delta) / (2 N))``:
            with probability at least ``1 - delta``, the TV of a correct sampler
            stays below it (Jensen for the mean, McDiarmid for the deviation).
        outside: samples that match no listed state of positive probability.
    """

    num_samples: int
    chi2: float
    dof: int
    p_value: float
    tv: float
    tv_bound: float
    outside: int

    def passed(self, alpha: float = 1e-6) -> bool:
        """True when neither the chi-square test (level ``alpha``) nor the TV bound rejects."""
        return self.outside == 0 and self.p_value >= alpha and self.tv <= self.tv_bound


def goodness_of_fit(
    samples: Tensor, states: Tensor, log_probs: Tensor, min_expected: float = 5.0, delta: float = 1e-6
) -> GoodnessOfFit:
    """Compare samples with the probabilities ``exp(log_probs)`` of ``states``.

    Args:
        samples: ``(N, D)`` draws.
        states: ``(S, D)`` distinct states.
        log_probs: ``(S,)`` log-probabilities of ``states``; must sum to 1 within 1e-6.
        min_expected: bins expected to hold fewer samples are pooled.
        delta: failure probability allowed to the TV bound.

    Returns:
        A :class:`GoodnessOfFit`.

    Example:
        >>> import torch
        >>> states = torch.tensor([[0.], [1.]], dtype=torch.float64)
        >>> g = torch.Generator().manual_seed(0)
        >>> draws = (torch.rand(4000, 1, generator=g) < 0.3).double()
        >>> goodness_of_fit(draws, states, torch.tensor([0.7, 0.3]).log()).passed()
        True
        >>> goodness_of_fit(draws, states, torch.tensor([0.6, 0.4]).log()).passed()
        False
    """
    if samples.dim() != 2 or states.dim() != 2 or samples.shape[1] != states.shape[1]:
        raise ValueError(f"samples (N, D) and states (S, D) must agree in D; got {tuple(samples.shape)} and {tuple(states.shape)}")
    if log_probs.shape != states.shape[:1]:
        raise ValueError(f"log_probs must have shape ({states.shape[0]},), got {tuple(log_probs.shape)}")
    p = log_probs.detach().to(torch.float64).exp().cpu().numpy()
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"the probabilities of the states must sum to 1, got {p.sum():.9f}")
    both = torch.cat([t.detach().to(torch.float64).cpu() for t in (states, samples)]).numpy()  # (S + N, D)
    _, ids = np.unique(both, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    state_ids, sample_ids = ids[: len(p)], ids[len(p) :]
    if len(np.unique(state_ids)) != len(p):
        raise ValueError("states must be distinct")
    slot = np.full(len(both), -1)
    slot[state_ids] = np.arange(len(p))
    where = slot[sample_ids]  # (N,) index into states, -1 if none
    hit = where >= 0
    hit[hit] = p[where[hit]] > 0
    counts = np.bincount(where[hit], minlength=len(p)).astype(np.float64)
    outside = int((~hit).sum())
    n = samples.shape[0]
    expected = n * p
    small = expected < min_expected
    obs_bins = np.array(list(counts[~small]) + ([counts[small].sum()] if small.any() else []))
    exp_bins = np.array(list(expected[~small]) + ([expected[small].sum()] if small.any() else []))
    keep = exp_bins > 0
    chi2 = float((((obs_bins - exp_bins) ** 2)[keep] / exp_bins[keep]).sum())
    dof = max(int(keep.sum()) - 1, 1)
    p_value = 0.0 if outside else chi2_sf(chi2, dof)
    tv = 0.5 * float(np.abs(counts / n - p).sum()) + 0.5 * outside / n
    tv_bound = 0.5 * float(np.sqrt(p * (1 - p) / n).sum()) + math.sqrt(math.log(1 / delta) / (2 * n))
    return GoodnessOfFit(n, chi2, dof, p_value, tv, tv_bound, outside)


def ks_distance(samples: Tensor, grid: Tensor, log_density: Tensor) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance between 1-d samples and a density tabulated on a grid.

    The CDF is the cumulative trapezoid of ``exp(log_density)`` over ``grid``
    (normalized by its total, which should be close to 1 when the grid covers
    the mass); samples outside the grid count as CDF 0 or 1.

    Args:
        samples: ``(N,)`` draws.
        grid: ``(G,)`` increasing points.
        log_density: ``(G,)`` log-density at the points.

    Returns:
        ``(distance, p_bound)``: the sup-distance between the empirical and the
        tabulated CDF, and the Dvoretzky-Kiefer-Wolfowitz bound
        ``2 exp(-2 N distance**2)`` on the probability that a correct sampler
        gets this far.
    """
    if samples.dim() != 1 or grid.dim() != 1 or grid.shape != log_density.shape:
        raise ValueError("samples (N,), grid (G,) and log_density (G,) expected")
    g = grid.detach().to(torch.float64).cpu().numpy()
    dens = log_density.detach().to(torch.float64).exp().cpu().numpy()
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(g))])
    cdf = cdf / cdf[-1]
    xs = np.sort(samples.detach().to(torch.float64).cpu().numpy())
    n = len(xs)
    at = np.interp(xs, g, cdf, left=0.0, right=1.0)
    upper = np.arange(1, n + 1) / n
    dist = float(max(np.abs(upper - at).max(), np.abs(at - (upper - 1.0 / n)).max()))
    return dist, float(min(1.0, 2 * math.exp(-2 * n * dist * dist)))
