"""What a circuit has learned, in the terms drawings show: how much each node is used, and what it generates on average.

* **Flow**: the probability that a node lies in the induced tree of a sample
  drawn from the circuit (sum edges taken with their weights, every child of a
  product taken); the root classes share the flow by a prior (uniform, or one
  given root). It is computed for every region entry and partition at once as
  the gradient of the root's log-value with respect to the nodes' log-values
  when every variable is integrated out (each node then has value 1).
* **Means**: a leaf component's mean, and a region's mean ``E[x_scope | the
  region is reached]``, the flow-weighted mean of the leaf components below
  it (flows of the circuit restricted to the region, weighted by the use of its
  entries).

A trained circuit differs from its initial parameters in both: weights
concentrate on fewer entries, and means move to the data's.

Example:
    >>> import torch, spnkit
    >>> from spnkit.viz.learned import circuit_flows, region_means
    >>> spn = spnkit.SPN(spnkit.RegionGraph.random(6, 1, 2, seed=0), spnkit.Normal(), 2, 3).double()
    >>> flows = circuit_flows(spn)
    >>> round(float(flows.entries[spn.region_graph.root].sum()), 6), len(flows.partitions)
    (1.0, 2)
    >>> means = region_means(spn)
    >>> means[spn.region_graph.root].shape
    (6,)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ..circuit import SPN

__all__ = ["Flows", "circuit_flows", "leaf_means", "region_means"]


@dataclass(frozen=True)
class Flows:
    """Flows of a circuit's region entries and partitions.

    Attributes:
        entries: region -> ``(K,)`` flow of each entry of its vector (the root's
            entries sum to 1; a region's total is the probability that it is reached).
        partitions: ``(num_partitions,)`` flow into each partition's products.
    """

    entries: dict[int, np.ndarray]
    partitions: np.ndarray

    def region(self, r: int) -> float:
        """The flow of region ``r`` (the sum over its entries)."""
        return float(self.entries[r].sum())


def _root_objective(spn: "SPN", root: Tensor, which: int | None) -> Tensor:
    """Per sample, the log-value of the root under the class prior: uniform over the roots, or root ``which``."""
    if which is not None:
        return root[:, which]
    return torch.logsumexp(root, dim=1) - math.log(root.shape[1])


def _marginal_pass(spn: "SPN", batch: int):
    """An upward pass with every variable integrated out (every node value 1), recorded for gradients."""
    D = spn.num_vars
    ev = spn.prepare(torch.zeros(batch, D, dtype=spn.dtype, device=spn.device),
                     torch.ones(batch, D, dtype=torch.bool, device=spn.device))
    with torch.enable_grad():
        return spn.upward(ev)


def _k_of(spn: "SPN", r: int) -> int:
    rg = spn.region_graph
    if not rg.partitions_of[r]:
        return spn.num_leaves
    return spn.num_classes if r == rg.root and spn.root_sum is None else spn.num_sums


def circuit_flows(spn: "SPN", root: int | None = None) -> Flows:
    """The flow of every region entry and partition of ``spn``.

    Args:
        spn: the circuit.
        root: with several root sums, the class whose circuit to follow (None: all, uniformly).

    Returns:
        the :class:`Flows`.

    Raises:
        ValueError: for a root index out of range.
    """
    if root is not None and not (isinstance(root, int) and 0 <= root < spn.num_classes):
        raise ValueError(f"root must be None or an int in [0, {spn.num_classes}), got {root!r}")
    rg = spn.region_graph
    with torch.enable_grad():
        trace = _marginal_pass(spn, 1)
        inputs = [*trace.blocks, *trace.parts, trace.root]
        obj = _root_objective(spn, trace.root, root).sum()
        raw = torch.autograd.grad(obj, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, raw)]
    nb, npart = len(trace.blocks), len(trace.parts)
    rows = torch.cat(grads[:nb])[:, :, 0].detach().double().cpu().numpy()  # (rows in blocks, K_max)
    entries: dict[int, np.ndarray] = {}
    for r in range(len(rg.regions)):
        row = spn.row_of(r)
        if row < rows.shape[0]:
            entries[r] = rows[row, : _k_of(spn, r)].copy()
        else:  # the Tucker root's vector is the root sums themselves
            entries[r] = grads[-1][0].detach().double().cpu().numpy()
    parts = np.zeros(len(rg.partitions))
    for lv, g in zip(spn.levels, grads[nb : nb + npart]):
        per = g[:, 0, :].sum(1).detach().double().cpu().numpy()  # (P,)
        parts[lv.partitions] = per
    return Flows(entries, np.clip(parts, 0.0, None))


def _family_mean(leaf: object, params: dict[str, Tensor]) -> Tensor | None:
    """The mean of each leaf factor ``(R, n, K)``, or None for a family whose mean is not known here."""
    from ..leaves import Bernoulli, Binomial, Categorical, Normal

    own: Any = getattr(leaf, "mean", None)
    if callable(own):
        try:
            out = own(params)
        except (NotImplementedError, TypeError):
            out = None
        if isinstance(out, Tensor) and out.shape == next(iter(params.values())).shape[:3]:
            return out
    if isinstance(leaf, Normal):
        return params["loc"]
    if isinstance(leaf, Bernoulli):
        return torch.sigmoid(params["logits"])
    if isinstance(leaf, Binomial):
        return leaf.total_count * torch.sigmoid(params["logits"])
    if isinstance(leaf, Categorical):
        p = torch.softmax(params["logits"], dim=-1)
        return (p * torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)).sum(-1)
    return None


def leaf_means(spn: "SPN") -> np.ndarray | None:
    """The mean of every leaf factor, ``(R0, n, K)`` in the leaf layer's order (rows: :attr:`SPN.leaf_regions`,
    slots: ``leaf_layer.var_index``); None for leaf families whose mean is not known here."""
    from ..layers import LeafLayer

    layer = spn.leaf_layer
    if not isinstance(layer, LeafLayer):  # full-covariance and mixed leaf layers have no per-factor parameters
        return None
    with torch.no_grad():
        m = _family_mean(spn.leaf, layer.param_dict())
    return None if m is None else m.detach().double().cpu().numpy()


def region_means(spn: "SPN", regions: Sequence[int] | None = None, flows: Flows | None = None,
                 batch: int = 64) -> dict[int, np.ndarray]:
    """``E[x_scope | region reached]`` of regions, aligned with their scopes (``rg.regions[r]``).

    A region's entries are weighted by their flows (its use in the circuit;
    uniformly where it gets none); below it, the circuit's own weights.

    Args:
        spn: the circuit.
        regions: the regions (None: all).
        flows: :func:`circuit_flows` of ``spn``, if already computed.
        batch: regions per upward pass.

    Returns:
        region -> ``(len(scope),)`` means; empty when the leaf family's mean is not known.
    """
    means = leaf_means(spn)
    if means is None:
        return {}
    rg = spn.region_graph
    flows = flows or circuit_flows(spn)
    regions = list(range(len(rg.regions))) if regions is None else list(regions)
    D = spn.num_vars
    index = spn.leaf_layer.var_index
    var_index = index.cpu().numpy()  # (R0, n), padding = D
    leaf_rows = np.array([spn.row_of(r) for r in spn.leaf_regions])
    out: dict[int, np.ndarray] = {}
    for s in range(0, len(regions), batch):
        chunk = regions[s : s + batch]
        with torch.enable_grad():
            trace = _marginal_pass(spn, len(chunk))
            full = torch.cat(trace.blocks)  # (rows, K_max, B)
            terms = []
            for b, r in enumerate(chunk):
                use = flows.entries[r]
                use = use / use.sum() if use.sum() > 0 else np.full(len(use), 1.0 / len(use))
                logu = torch.as_tensor(np.log(np.maximum(use, 1e-300)), dtype=full.dtype, device=full.device)
                row = spn.row_of(r)
                vec = full[row, : len(use), b] if row < full.shape[0] else trace.root[b]
                terms.append(torch.logsumexp(vec + logu, 0))
            raw = torch.autograd.grad(torch.stack(terms).sum(), list(trace.blocks), allow_unused=True)
            grad = torch.cat([torch.zeros_like(t) if g is None else g for t, g in zip(trace.blocks, raw)])  # (rows, K_max, B)
        leaf_flow = grad[leaf_rows, : spn.num_leaves].detach().double().cpu().numpy()  # (R0, K, B)
        contrib = np.einsum("lkb,lsk->lsb", leaf_flow, means)  # (R0, n, B)
        dense = np.zeros((D + 1, len(chunk)))
        np.add.at(dense, var_index.reshape(-1), contrib.reshape(-1, len(chunk)))
        for b, r in enumerate(chunk):
            out[r] = dense[list(rg.regions[r]), b]
    return out
