"""LearnSPN (Gens & Domingos, ICML 2013): a region graph learned by splitting variables and clustering rows.

The algorithm works on a *slice*, a set of variables (scope) and of rows:

* a single variable is a leaf region (its distribution is fitted on the rows);
* a slice with fewer than ``min_rows`` rows (or at ``max_depth``) is a naive
  factorization: a product of one univariate leaf region per variable, or,
  with ``multivariate=True`` (for a joint leaf family such as the
  multivariate Normal), one leaf region over the slice's whole scope;
* otherwise the variables are split into groups with no dependent pair across
  groups (:func:`~spnkit.structure.independence.independent_groups`); two or
  more groups make a product of one child region per group, on the same rows;
* otherwise the rows are clustered into ``num_clusters`` clusters, each
  cluster a slice of its own, mixed by a sum weighted by the cluster
  proportions.

In a region graph (one unit per region) a region with one partition is a
product and a region with several partitions is a sum over them. A cluster
of a sum is therefore not a region of its own: its product becomes one
partition of the sum's region, and when the cluster is clustered again (no
independence found in it) its partitions join the region's partitions with
their proportions multiplied (the sum of sums is flattened). A child of an
independence split starts with clustering (its variables were just found
dependent on these rows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..region_graph import Partition, RegionGraph
from ._data import DEFAULT_BINS, ArrayLike, Data, as_data, check_float, check_int
from .clustering import CLUSTERINGS, cluster_rows
from .independence import independent_groups

__all__ = ["G_TEST_PVALUE", "RDC_THRESHOLD", "LearnedStructure", "learn_spn_structure"]

#: Default dependence thresholds: RDC above 0.3 (continuous data), G-test p-value below 0.001 (discrete data).
RDC_THRESHOLD = 0.3
G_TEST_PVALUE = 0.001


@dataclass(frozen=True)
class LearnedStructure:
    """The result of :func:`learn_spn_structure`.

    Attributes:
        region_graph: the valid region graph; regions are numbered in the order
            the algorithm creates them, the root first (region 0), every region
            before its children.
        partition_weights: for each region with two or more partitions (a sum),
            its mixing weights, ``(len(region_graph.partitions_of[r]),)``
            float64 in the order of ``partitions_of[r]``, summing to 1: the
            proportions of the clusters the partitions come from.
        leaf_rows: for each leaf region (a single variable, or with
            ``multivariate=True`` possibly a slice's whole scope), the sorted
            int64 indices of the data rows its distribution should be fitted
            on: the rows of its slice on which all its variables are observed
            (may be empty when none is fully observed).
    """

    region_graph: RegionGraph
    partition_weights: dict[int, np.ndarray]
    leaf_rows: dict[int, np.ndarray]


@dataclass
class _Slice:
    scope: np.ndarray  # variable indices, sorted
    rows: np.ndarray  # row indices, sorted
    depth: int
    region: int
    tested: bool  # the scope was just found not to split on these rows


class _Learner:
    def __init__(self, d: Data, min_rows: int, threshold: float, num_clusters: int, clustering: str,
                 max_depth: int | None, num_bins: int, seed: int, multivariate: bool = False) -> None:
        self.d = d
        self.multivariate = multivariate
        self.min_rows, self.threshold, self.k = min_rows, threshold, num_clusters
        self.clustering, self.max_depth, self.num_bins = clustering, max_depth, num_bins
        self.gen = torch.Generator().manual_seed(int(seed))
        self.regions: list[tuple[int, ...]] = []
        self.partitions: list[Partition] = []
        self.weights: dict[int, np.ndarray] = {}
        self.leaf_rows: dict[int, np.ndarray] = {}
        self.stack: deque[_Slice] = deque()

    def new_region(self, scope: np.ndarray, rows: np.ndarray, depth: int, tested: bool, leaf: bool = False) -> int:
        self.regions.append(tuple(int(v) for v in scope))
        idx = len(self.regions) - 1
        ends = len(rows) < self.min_rows or (self.max_depth is not None and depth >= self.max_depth)
        if len(scope) == 1 or leaf or (self.multivariate and depth > 0 and ends):
            if self.d.observed is not None:
                full = self.d.observed[torch.from_numpy(rows)][:, torch.from_numpy(scope)].all(1)
                rows = rows[full.numpy()]
            self.leaf_rows[idx] = rows.astype(np.int64)
        else:
            self.stack.append(_Slice(scope, rows, depth, idx, tested))
        return idx

    def slice_data(self, scope: np.ndarray, rows: np.ndarray) -> Data:
        r, c = torch.from_numpy(rows), torch.from_numpy(scope)
        values = self.d.values[r][:, c]
        observed = None
        if self.d.observed is not None:
            observed = self.d.observed[r][:, c]
            if bool(observed.all()):
                observed = None
        return Data(values, observed, self.d.discrete)

    def naive(self, scope: np.ndarray, rows: np.ndarray, depth: int) -> tuple[int, ...]:
        """The children of a slice that is not split further: one joint leaf (``multivariate``) or one leaf per variable."""
        if self.multivariate and len(scope) > 1:
            return (self.new_region(scope, rows, depth + 1, False, leaf=True),)
        return tuple(self.new_region(scope[i : i + 1], rows, depth + 1, False) for i in range(len(scope)))

    def expand(self, s: _Slice) -> None:
        """Create the partitions of the region of slice ``s`` (several when its rows are clustered)."""
        parts: list[tuple[float, tuple[int, ...]]] = []
        todo = deque([(s.rows, s.depth, 1.0, s.tested)])  # sub-slices of the region's sum, in order
        while todo:
            rows, depth, weight, tested = todo.popleft()
            if len(rows) < self.min_rows or (self.max_depth is not None and depth >= self.max_depth):
                parts.append((weight, self.naive(s.scope, rows, depth)))
                continue
            sub = self.slice_data(s.scope, rows)
            if not tested:
                groups = independent_groups(sub, self.threshold, num_bins=self.num_bins, generator=self.gen)
                if len(groups) >= 2:
                    kids = tuple(self.new_region(s.scope[g], rows, depth + 1, len(g) > 1) for g in groups)
                    parts.append((weight, kids))
                    continue
            labels = cluster_rows(sub.values, sub.observed, self.k, self.clustering, self.gen).numpy()
            counts = np.bincount(labels, minlength=self.k)
            if (counts > 0).sum() < 2:
                parts.append((weight, self.naive(s.scope, rows, depth)))
                continue
            for c in np.flatnonzero(counts):
                todo.append((rows[labels == c], depth + 1, weight * counts[c] / len(rows), False))
        for _, kids in parts:
            self.partitions.append(Partition(s.region, kids))
        if len(parts) >= 2:
            w = np.array([p[0] for p in parts], dtype=np.float64)
            self.weights[s.region] = w / w.sum()

    def run(self) -> LearnedStructure:
        n, D = self.d.shape
        self.new_region(np.arange(D), np.arange(n), 0, False)
        while self.stack:
            self.expand(self.stack.popleft())
        rg = RegionGraph(D, tuple(self.regions), tuple(self.partitions))
        rg.check_valid()
        return LearnedStructure(rg, self.weights, self.leaf_rows)


def learn_spn_structure(
    data: ArrayLike,
    marginalized: ArrayLike | None = None,
    *,
    discrete: bool | None = None,
    min_rows: int = 100,
    threshold: float | None = None,
    num_clusters: int = 2,
    clustering: str = "kmeans",
    max_depth: int | None = None,
    num_bins: int = DEFAULT_BINS,
    seed: int = 0,
    multivariate: bool = False,
) -> LearnedStructure:
    """Learn a region graph and its mixing weights with LearnSPN.

    Independence tests: continuous data use the RDC (20 random sine features
    per variable) with pairs above ``threshold`` dependent; discrete data use
    the G-test with pairs below the p-value ``threshold`` dependent. Both use
    pairwise-complete rows under missing data. Clustering: k-means
    (k-means++ seeding) or EM for a diagonal Gaussian mixture, on the slice's
    standardized values with missing entries imputed by the column mean.
    A clustering that leaves fewer than 2 non-empty clusters makes the slice
    a naive factorization; so does a cluster of fewer than ``min_rows`` rows.

    Args:
        data: ``(N, D)`` values.
        marginalized: optional ``(N, D)`` bool mask, True = missing.
        discrete: force discrete (True) or continuous (False); None infers:
            integer or bool dtypes and whole-number floats are discrete.
        min_rows: slices with fewer rows are naive factorizations (>= 1).
        threshold: the RDC threshold in ``[0, 1]`` (default 0.3) or the G-test
            p-value in ``(0, 1)`` (default 0.001).
        num_clusters: clusters per clustering step (>= 2).
        clustering: ``"kmeans"`` or ``"em"``.
        max_depth: slices this many steps (splits or clusterings) below the
            root are naive factorizations; None for no limit.
        num_bins: discrete variables with a wider range are binned into this
            many equal-width bins for the G-test (as in
            :func:`~spnkit.structure.mutual_information`).
        seed: seeds the RDC features and the clustering; the same seed gives
            the same structure.
        multivariate: a slice that is not split further becomes one leaf
            region over its whole scope (for joint leaf families, e.g. the
            multivariate Normal) instead of one leaf region per variable.

    Returns:
        the :class:`LearnedStructure`.

    Raises:
        ValueError: on bad data, mask or arguments (one line).
    """
    check_int("min_rows", min_rows, 1)
    check_int("num_clusters", num_clusters, 2)
    check_int("num_bins", num_bins, 2)
    check_int("seed", seed, 0)
    if clustering not in CLUSTERINGS:
        raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {clustering!r}")
    if max_depth is not None:
        check_int("max_depth", max_depth, 0)
    d = as_data(data, marginalized, discrete)
    if threshold is None:
        threshold = G_TEST_PVALUE if d.discrete else RDC_THRESHOLD
    elif d.discrete:
        check_float("threshold (a G-test p-value)", threshold, 0.0, 1.0)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold (a G-test p-value) must lie strictly between 0 and 1, got {threshold!r}")
    else:
        check_float("threshold (an RDC)", threshold, 0.0, 1.0)
    learner = _Learner(d, min_rows, float(threshold), num_clusters, clustering, max_depth, num_bins, seed, multivariate)
    return learner.run()
