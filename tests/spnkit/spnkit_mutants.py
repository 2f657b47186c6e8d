"""Deliberately broken variants of the spnkit core, to check that the tests catch real bugs.

Each mutant rewrites one snippet in the source of one function or method, compiles
the result and installs it in place of the original (nothing on disk changes).

Usage::

    SPNKIT_MUTANT=swap_children_downward .venv/bin/python -m pytest tests/spnkit -q
    .venv/bin/python tests/spnkit/spnkit_mutants.py            # every mutant, one table
    .venv/bin/python tests/spnkit/spnkit_mutants.py --list

A mutant whose snippet is no longer in the source (the core was edited) fails
loudly instead of silently testing the original.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    target: str  # "module:Qualified.name"
    old: str
    new: str
    doc: str


MUTANTS: dict[str, Mutant] = {
    "swap_children_downward": Mutant(
        "spnkit.layers.tucker:TuckerLayer.backtrack",
        "torch.cat([ij // self.k_in, ij % self.k_in])",
        "torch.cat([ij % self.k_in, ij // self.k_in])",
        "the downward pass sends each child of a Tucker product the other child's choice (sampling and MPE)",
    ),
    "first_partition_downward": Mutant(
        "spnkit.backtrack:downward",
        "part = lv.mixing.table[reg, choose(scores, 1)]",
        "part = lv.mixing.table[reg, torch.zeros_like(reg)]",
        "the downward pass always takes a region's first partition",
    ),
    "root_class_zero": Mutant(
        "spnkit.backtrack:complete",
        "else choose(root_values, -1)",
        "else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)",
        "sampling / MPE ignore the class posterior and always use root sum 0",
    ),
    "no_max_shift": Mutant(
        "spnkit.layers.kernels:shifted_exp",
        "m = torch.nan_to_num(log_x.detach().amax(1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)",
        "m = torch.zeros_like(log_x[:, :1])",
        "the log-space products lose their max-shift (underflow)",
    ),
    "leaf_ignores_mask": Mutant(
        "spnkit.layers.leaf:LeafLayer._forward",
        "_WeightedStatistics.apply(cols, self._columns(w), self.leaf)",
        "_WeightedStatistics.apply(cols, self._columns(torch.ones_like(w)), self.leaf)",
        "the leaf layer ignores the marginalization mask",
    ),
    "soft_evidence_constant_unweighted": Mutant(
        "spnkit.leaves.normal:Normal.weighted_statistics",
        "out[2].copy_(w)",
        "out[2].fill_(1.0)",
        "a float mask integrates an unobserved Normal factor out of its normalizer but not its constant",
    ),
    "hard_evidence_ignores_mask": Mutant(
        "spnkit.leaves.normal:Normal.observed_statistics",
        "out[2].copy_(observed)",
        "out[2].fill_(1.0)",
        "a bool mask integrates an unobserved Normal factor out of its normalizer but not its constant",
    ),
    "hard_evidence_keeps_unobserved_values": Mutant(
        "spnkit.leaves.base:zero_unobserved",
        "return torch.where(observed, x, x.new_zeros(()), out=out)",
        "return x if out is None else out.copy_(x)",
        "a bool mask lets the values at unobserved entries into the statistics",
    ),
    "hard_evidence_finite_keeps_values": Mutant(
        "spnkit.leaves.base:zero_unobserved",
        "return torch.mul(x, weight, out=out)",
        "return x if out is None else out.copy_(x)",
        "with validated finite values, a bool mask lets the unobserved values into the statistics",
    ),
    "sums_skip_softmax": Mutant(
        "spnkit.layers.base:SumWeights.weights",
        "return torch.softmax(self.masked_logits(), dim=1)",
        "return torch.exp(self.masked_logits())",
        "sum weights are not normalized in the product layers",
    ),
    "log_weights_skip_softmax": Mutant(
        "spnkit.layers.base:SumWeights.log_weights",
        "return torch.log_softmax(self.masked_logits(), dim=1)",
        "return self.masked_logits()",
        "normalized log-weights (mixing layers, max-product, backtracking, EM) are not normalized",
    ),
    "batch_reshape": Mutant(
        "spnkit.evidence:Evidence.leaf_input",
        "return self.values, (~m if m.dtype == torch.bool else 1 - m)",
        "return self.values.t().reshape(self.values.shape), (~m if m.dtype == torch.bool else 1 - m)",
        "reshape instead of transpose: samples of a batch get mixed",
    ),
    "mpe_no_peak": Mutant(
        "spnkit.layers.leaf:LeafLayer._forward_max",
        "unobserved.unsqueeze(0)])",
        "torch.zeros_like(unobserved).unsqueeze(0)])",
        "max-product treats unobserved factors as 1 instead of their maximum",
    ),
    "overwrite_evidence": Mutant(
        "spnkit.backtrack:complete",
        "torch.where(m > 0, filled, x)",
        "filled",
        "sample / mpe overwrite observed entries",
    ),
    "ignore_evidence": Mutant(
        "spnkit.backtrack:complete",
        "spn.upward(Evidence(x, m),",
        "spn.upward(Evidence(x, torch.ones_like(m)),",
        "sample / mpe draw from the prior instead of the conditional",
    ),
    "soft_mask_rounded": Mutant(
        "spnkit.evidence:validate",
        "m = marginalized.to(dtype)",
        "m = marginalized.round().to(dtype)",
        "soft masks are rounded to hard ones",
    ),
    "check_valid_no_overlap": Mutant(
        "spnkit.region_graph:RegionGraph.check_valid",
        "if overlap:",
        "if False:",
        "check_valid misses non-decomposable partitions",
    ),
    "check_valid_no_cover": Mutant(
        "spnkit.region_graph:RegionGraph.check_valid",
        "if root_scope != set(range(self.num_vars)):",
        "if False:",
        "check_valid misses a root that does not cover every variable",
    ),
    "detach_sum_weights": Mutant(
        "spnkit.layers.tucker:TuckerLayer.forward",
        "LogOuterMatmul.apply(ab, None, w)",
        "LogOuterMatmul.apply(ab, None, w.detach())",
        "no gradient reaches the Tucker sum weights",
    ),
    "detach_leaf_input": Mutant(
        "spnkit.layers.leaf:LeafLayer._forward",
        "cols = self._columns(x)",
        "cols = self._columns(x.detach())",
        "no gradient reaches the inputs",
    ),
    "networkx_wrong_child": Mutant(
        "spnkit.circuit_graph:node_graph",
        "g.add_edge(node, nb)",
        "g.add_edge(node, na)",
        "to_networkx wires both children of a Tucker product to the same region",
    ),
    "compile_same_child": Mutant(
        "spnkit.compile:compile_circuit",
        "order = [c for ks in kids for c in ks[:1]] + [c for ks in kids for c in ks[1:]]",
        "order = [c for ks in kids for c in ks[:1]] * 2",
        "the compiled Tucker products read their left child twice",
    ),
    "normal_sample_scale": Mutant(
        "spnkit.leaves.normal:Normal.sample",
        "self.variance(params).sqrt() * noise",
        "self.variance(params) * noise",
        "Normal leaves sample with the variance as the standard deviation",
    ),
    "load_skips_weights": Mutant(
        "spnkit.io:_load_state",
        "spn.load_state_dict(state)",
        "None",
        "spnkit.load returns a circuit with fresh parameters",
    ),
    "cp_direct_entry_zero": Mutant(
        "spnkit.layers.cp:CPLayer.backtrack",
        "entries.append(choice[a])",
        "entries.append(torch.zeros_like(choice[a]))",
        "backtracking a CP product hands its unprojected children entry 0 instead of the product's own entry",
    ),
    "cp_first_slot_only": Mutant(
        "spnkit.layers.cp:_expand",
        "offset = torch.arange(active.shape[0], device=part.device) - first",
        "offset = torch.zeros_like(first)",
        "backtracking a CP product visits its first child once per child instead of every child",
    ),
    "cp_projection_transposed": Mutant(
        "spnkit.layers.kernels:LogMatmul.forward",
        "s = torch.bmm(w.transpose(1, 2), e)",
        "s = torch.bmm(w, e) if w.shape[1] == w.shape[2] else torch.bmm(w.transpose(1, 2), e)",
        "a CP projection uses its weights transposed (normalized over the wrong index)",
    ),
    "cp_fused_projection_transposed": Mutant(
        "spnkit.layers.kernels:_shifted_projections",
        "torch.bmm(w.transpose(1, 2), e)",
        "(torch.bmm(w, e) if w.shape[1] == w.shape[2] else torch.bmm(w.transpose(1, 2), e))",
        "the fused CP kernel projects with its weights transposed (normalized over the wrong index)",
    ),
    "cp_fused_slots_misgrouped": Mutant(
        "spnkit.layers.kernels:LogProjectProduct.forward",
        "out = torch.log(s).view(P, arity, K, B).sum(1)",
        "out = torch.log(s).view(arity, P, K, B).sum(0)",
        "the fused CP kernel multiplies slots of different partitions (in the pass that keeps a graph)",
    ),
    "leaf_groups_slots_misordered": Mutant(
        "spnkit.layers.leaf:LeafLayer._merge",
        "index = index.view(G, a, S, n).transpose(1, 2).reshape(G, S * a * n)",
        "index = index.reshape(G, S * a * n)",
        "a fused leaf group reads its members' statistics in another order than their coefficients",
    ),
    "gather_rows_copies_repeats": Mutant(
        "spnkit.layers.kernels:GatherRows.backward",
        "if p.distinct and p.covers:",
        "if True:",
        "the gather's backward copies the gradient of rows read several times instead of adding it",
    ),
    "cp_direct_skipped": Mutant(
        "spnkit.layers.cp:CPLayer._combine",
        "out = out.index_add(0, self.direct_partition, direct)",
        "out = out",
        "CP products drop their unprojected (leaf) children",
    ),
}


def _resolve(target: str):
    module_name, qualname = target.split(":")
    module = importlib.import_module(module_name)
    owner, attr = module, qualname
    if "." in qualname:
        cls_name, attr = qualname.split(".")
        owner = getattr(module, cls_name)
    return module, owner, attr


def _matching(name: str) -> tuple[object, object, str, str]:
    """``(module, owner, attribute, mutated source)`` of mutant ``name``.

    Raises:
        RuntimeError: if the snippet does not occur exactly once in its target's source.
    """
    if name not in MUTANTS:
        raise ValueError(f"unknown mutant {name!r}; choose one of {sorted(MUTANTS)}")
    mutant = MUTANTS[name]
    tried = []
    for target, old, new in ((mutant.target, mutant.old, mutant.new),):
        try:
            module, owner, attr = _resolve(target)
        except AttributeError as err:
            tried.append(f"{target} does not exist ({err})")
            continue
        original = inspect.getattr_static(owner, attr)
        func = original.fget if isinstance(original, property) else getattr(original, "__func__", original)
        src = textwrap.dedent(inspect.getsource(func))
        if src.count(old) != 1:
            tried.append(f"{old!r} occurs {src.count(old)} times in {target}")
            continue
        return module, owner, attr, src.replace(old, new)
    raise RuntimeError(f"mutant {name} no longer matches the core: " + "; ".join(tried))


def apply(name: str) -> None:
    """Install mutant ``name`` (for the rest of the process); RuntimeError if it no longer matches the core."""
    module, owner, attr, src = _matching(name)
    namespace = dict(vars(module))
    exec(compile(src, f"<mutant {name}>", "exec"), namespace)
    setattr(owner, attr, namespace[attr])


def _run_all(paths: list[str]) -> int:
    """Run the given test paths once per mutant; print which tests fail."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", SPNKIT_HYPOTHESIS_PROFILE="mutation")
    survivors = []
    for name in MUTANTS:
        env["SPNKIT_MUTANT"] = name
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--tb=no", "-rf", *paths],
            env=env, capture_output=True, text=True,
        )
        if proc.returncode not in (0, 1):  # 0: all passed, 1: some failed; anything else: the run broke
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            print(f"{name:26s} could not run (exit {proc.returncode}): {' | '.join(tail)}", flush=True)
            survivors.append(name)
            continue
        failed = sorted({m.group(1).split("[")[0] for m in re.finditer(r"^FAILED \S+::(\S+)", proc.stdout, re.M)})
        print(f"{name:26s} {len(failed):2d} failing: {', '.join(failed) or '-'}", flush=True)
        if not failed:
            survivors.append(name)
    print(f"survivors: {survivors or 'none'}")
    return 1 if survivors else 0


if __name__ == "__main__":
    if "--list" in sys.argv:
        for name, m in MUTANTS.items():
            print(f"{name:26s} {m.target:45s} {m.doc}")
        sys.exit(0)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(_run_all([a for a in sys.argv[1:] if not a.startswith("-")] or [os.path.join(here, "test_properties.py")]))
