"""Circuits with learned structure: hidden Chow-Liu trees (HCLT) and LearnSPN.

Both build a region graph from data (:mod:`spnkit.structure`) and compile it
into the same layers as every other circuit.

Example:
    >>> import torch, spnkit
    >>> x = (torch.rand(500, 8) < 0.3).long()
    >>> spn = spnkit.hclt(x, num_latents=4, leaf=spnkit.Categorical(num_categories=2), seed=0)
    >>> spn.layer, spn.num_sums, spn.log_prob(x[:3].double()).shape
    ('cp', 4, torch.Size([3]))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .circuit import SPN
from .layers import LeafLayer, LeafLayerBase, MixedLeafLayer, MVNLeafLayer
from .leaves import Leaf, LeafFamily, MultivariateNormal
from .structure import chow_liu_region_graph, learn_spn_structure

__all__ = ["hclt", "learn_spn"]


def hclt(
    data: Tensor | np.ndarray,
    num_latents: int,
    leaf: LeafFamily,
    marginalized: Tensor | np.ndarray | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    root: str | int = "center",
    num_bins: int = 8,
    max_rows: int | None = None,
    discrete: bool | None = None,
    seed: int = 0,
) -> SPN:
    """A hidden Chow-Liu tree (Liu & Van den Broeck, NeurIPS 2021) learned from ``data``.

    The Chow-Liu tree of the data (the maximum spanning tree of the pairwise
    mutual information, rooted at a center) gets one latent variable with
    ``num_latents`` states per variable: a variable's ``K`` leaf distributions
    are its latent's states, and each tree edge is a ``K x K`` sum, the
    conditional of the child's latent given the parent's. Compiled as a CP
    circuit whose leaves enter the products unprojected (``layer="cp"``,
    ``project_leaves=False``); train it with :func:`spnkit.fit`.

    Args:
        data: ``(N, D)`` training data (for the tree only).
        num_latents: ``K``, states of each latent variable.
        leaf: the leaf family, e.g. ``spnkit.Categorical(num_categories=256)``.
        marginalized: optional ``(N, D)`` bool mask of missing entries.
        image_shape: ``(height, width, channels)`` of image data, for drawings.
        root, num_bins, max_rows, discrete: see :func:`spnkit.structure.chow_liu_tree`.
        seed: seeds the tree's data subsample (``max_rows``) and the circuit's initial parameters.

    Returns:
        the circuit, in float32.
    """
    if not isinstance(num_latents, int) or isinstance(num_latents, bool) or num_latents < 1:
        raise ValueError(f"num_latents must be a positive int, got {num_latents!r}")
    rg = chow_liu_region_graph(data, marginalized, image_shape=image_shape, root=root, discrete=discrete,
                               num_bins=num_bins, max_rows=max_rows, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SPN(rg, leaf, num_sums=num_latents, num_leaves=num_latents, layer="cp", project_leaves=False)


def learn_spn(
    data: Tensor | np.ndarray,
    leaf: LeafFamily,
    marginalized: Tensor | np.ndarray | None = None,
    *,
    min_rows: int = 100,
    threshold: float | None = None,
    num_clusters: int = 2,
    clustering: str = "kmeans",
    max_depth: int | None = None,
    discrete: bool | None = None,
    num_bins: int = 8,
    seed: int = 0,
) -> SPN:
    """A sum-product network learned by LearnSPN (Gens & Domingos, ICML 2013).

    Sums come from clustering the rows, products from independence tests
    between the variables (see :func:`spnkit.structure.learn_spn_structure`
    for the tests, thresholds and clustering). The structure is compiled with
    one node per region (``num_sums = num_leaves = 1``, CP layers: a
    product's children in one product of any arity); each sum's weights are
    its clusters' proportions and each leaf is fitted (the family's M-step) to
    the rows of its cluster. With :class:`~spnkit.MultivariateNormal` leaves a
    slice that is not split further is one full-covariance Gaussian over its
    variables (``multivariate=True`` of the structure learner) instead of a
    product of univariate leaves: the correlations within a cluster are kept.

    Args:
        data: ``(N, D)`` data.
        leaf: the leaf family; its parameters are fitted to the data.
        marginalized: optional ``(N, D)`` bool mask of missing entries (ignored when fitting).
        min_rows, threshold, num_clusters, clustering, max_depth, discrete, num_bins:
            see :func:`spnkit.structure.learn_spn_structure`.
        seed: seeds the structure learning (the same seed gives the same circuit).

    Returns:
        the circuit, in float64.
    """
    learned = learn_spn_structure(data, marginalized, discrete=discrete, min_rows=min_rows, threshold=threshold,
                                  num_clusters=num_clusters, clustering=clustering, max_depth=max_depth,
                                  num_bins=num_bins, seed=seed, multivariate=isinstance(leaf, MultivariateNormal))
    rg = learned.region_graph
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        spn = SPN(rg, leaf, num_sums=1, num_leaves=1, layer="cp").double()
    x = torch.as_tensor(np.asarray(data)).to(torch.float64)
    observed = torch.ones_like(x, dtype=torch.bool) if marginalized is None else ~torch.as_tensor(np.asarray(marginalized), dtype=torch.bool)
    with torch.no_grad():
        _set_mixing_weights(spn, learned.partition_weights)
        _fit_leaves(spn, x, observed, learned.leaf_rows)
    return spn


def _set_mixing_weights(spn: SPN, weights: dict[int, np.ndarray]) -> None:
    """Each sum's weights over its region's partitions (in ``partitions_of`` order, as the mixing tables hold them)."""
    for lv in spn.levels:
        if lv.mixing is None:
            continue
        for i, r in enumerate(lv.regions):
            w = weights.get(r)
            if w is not None:
                logw = torch.log(torch.as_tensor(w, dtype=lv.mixing.logits.dtype).clamp_min(1e-12))
                lv.mixing.logits[i, : len(w), :] = logw.unsqueeze(-1)


def _fit_leaves(spn: SPN, x: Tensor, observed: Tensor, leaf_rows: dict[int, np.ndarray]) -> None:
    """Fit every leaf region's distribution to its rows: one M-step on their statistics (per family of a mixed circuit)."""
    rg = spn.region_graph
    if isinstance(spn.leaf_layer, MVNLeafLayer):
        _fit_joint(spn.leaf_layer, x, observed, [leaf_rows.get(r, np.zeros(0, dtype=np.int64)) for r in spn.leaf_regions])
        return
    regions, rows, cols = [], [], []
    for row, r in enumerate(spn.leaf_regions):  # construction, not a forward pass
        v = rg.regions[r][0]
        idx = torch.as_tensor(leaf_rows.get(r, np.zeros(0, dtype=np.int64)), dtype=torch.long)
        if idx.numel() == 0:  # no observed row in its cluster: fit to every observed row
            idx = torch.nonzero(observed[:, v]).squeeze(1)
        regions.append(torch.full((idx.numel(),), row, dtype=torch.long))
        rows.append(idx)
        cols.append(torch.full((idx.numel(),), v, dtype=torch.long))
    reg, rws, cls = torch.cat(regions), torch.cat(rows), torch.cat(cols)
    keep = observed[rws, cls]
    reg, vals, cls = reg[keep], x[rws[keep], cls[keep]], cls[keep]
    layer = spn.leaf_layer
    parts: list[tuple[LeafFamily, LeafLayerBase, Tensor | None]] = [(spn.leaf, layer, None)]
    if isinstance(layer, MixedLeafLayer):  # its family is spn.leaf
        parts = [(fam, sub, torch.as_tensor(c)) for sub, (fam, c) in zip(layer.family_layers(), layer.leaf.parts)]
    for family, sub, columns in parts:
        mine = torch.ones_like(cls, dtype=torch.bool) if columns is None else torch.isin(cls, columns)
        _fit_part(family, sub, reg[mine], vals[mine])


def _fit_joint(layer: MVNLeafLayer, x: Tensor, observed: Tensor, rows_of: list[np.ndarray]) -> None:
    """Fit each multivariate Normal leaf region (leaf-layer row ``i``) to the data rows ``rows_of[i]``.

    A region without rows is fitted to every row on which its variables are all observed.
    """
    for d in layer.sizes:
        rows, idx = layer.group_index(d)  # (R_d,), (R_d, d)
        picked = []
        for i, r in enumerate(rows.tolist()):  # construction, not a forward pass
            mine = torch.as_tensor(rows_of[r], dtype=torch.long)
            if mine.numel() == 0:
                mine = torch.nonzero(observed[:, idx[i]].all(1)).squeeze(1)
            picked.append(mine)
        reg = torch.cat([torch.full((t.numel(),), i, dtype=torch.long) for i, t in enumerate(picked)])
        _fit_group(layer, d, reg, x[torch.cat(picked).unsqueeze(1), idx[reg]])


def _fit_group(layer: MVNLeafLayer, d: int, reg: Tensor, xs: Tensor) -> None:
    """One M-step of the regions with ``d`` variables on the values ``xs`` ``(P, d)`` of their group rows ``reg`` ``(P,)``."""
    R = layer.group_index(d)[0].numel()
    count = xs.new_zeros(R).index_add_(0, reg, torch.ones_like(xs[:, 0]))
    s1 = xs.new_zeros(R, d).index_add_(0, reg, xs)
    s2 = xs.new_zeros(R, d, d).index_add_(0, reg, xs.unsqueeze(2) * xs.unsqueeze(1))
    params = layer.group_params(d)
    dt, k = params["loc"].dtype, params["loc"].shape[1]
    stats = ((-0.5 * s2).unsqueeze(1).expand(R, k, d, d).to(dt), s1.unsqueeze(1).expand(R, k, d).to(dt),
             count.unsqueeze(1).expand(R, k).to(dt))
    layer.set_group_params(d, layer.leaf.m_step(stats, params))


def _fit_part(family: object, layer: object, reg: Tensor, vals: Tensor) -> None:
    """One M-step of a (sub-)layer of univariate regions on the values ``vals`` of its leaf-layer rows ``reg``."""
    R = layer.num_regions  # type: ignore[attr-defined]
    if isinstance(layer, MVNLeafLayer):  # univariate Gaussians: the regions with one variable of this family
        rows = layer.group_index(1)[0]
        pos = torch.full((R,), -1, dtype=torch.long)
        pos[rows] = torch.arange(rows.numel())
        keep = pos[reg] >= 0
        _fit_group(layer, 1, pos[reg][keep], vals[keep].unsqueeze(1))
        return
    if not isinstance(family, Leaf) or not isinstance(layer, LeafLayer):
        raise ValueError(f"learn_spn fits univariate leaves; {type(family).__name__} is not one")
    stats = family.statistics(vals)  # (S, M)
    total = stats.new_zeros(R, stats.shape[0]).index_add_(0, reg, stats.t())  # (R, S)
    params = layer.param_dict()
    new = family.m_step(total.view(R, 1, 1, -1).to(next(iter(params.values())).dtype), params)
    for name, value in new.items():
        layer.params[name].copy_(value)
