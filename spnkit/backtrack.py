"""Backtracking from the root: the induced tree of a sample or of the MPE, and the leaf values it chooses.

Sampling and MPE run an upward pass (sum or max-product), then walk down:
per height, only the (region, sample) pairs on a chosen path are scored: the
active pairs gather their children's values and the chosen sums' weights,
choose (a draw or the argmax), and write the choices into the children's rows.
Without an upward pass (``trace`` None) the walk follows the prior: every
value is 0, as when nothing is observed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .evidence import Evidence, Trace

if TYPE_CHECKING:  # pragma: no cover
    from .circuit import SPN

__all__ = ["chooser", "downward", "fill_leaves", "complete"]


def chooser(greedy: bool, generator: torch.Generator | None) -> Callable[[Tensor, int], Tensor]:
    """``choose(logits, dim)``: the argmax (greedy) or a draw by Gumbel-max along ``dim``."""

    def choose(logits: Tensor, dim: int) -> Tensor:
        if not greedy:
            u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
            logits = logits - torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return logits.argmax(dim)

    return choose


@torch.no_grad()
def downward(spn: "SPN", trace: Trace | None, root_choice: Tensor, choose: Callable[[Tensor, int], Tensor]) -> Tensor:
    """The chosen node of every leaf region per sample, ``(R0, B)`` (-1 where a region is not on the chosen tree).

    Args:
        spn: the circuit.
        trace: its upward pass (sum or max-product), or None for the prior.
        root_choice: ``(B,)`` the chosen root sum per sample.
        choose: see :func:`chooser`.
    """
    B = root_choice.shape[0]
    chosen = torch.full((spn.num_rows, B), -1, dtype=torch.long, device=root_choice.device)
    buf = None if trace is None else trace.buf  # (rows, B, K_max)
    samples = torch.arange(B, device=root_choice.device)
    if spn.root_sum is None:
        chosen[spn.num_rows - 1] = root_choice
    else:
        rows, smp, k = spn.root_sum.backtrack(buf, torch.zeros_like(samples), samples, root_choice, choose)
        chosen[rows, smp] = k
    for i in reversed(range(len(spn.levels))):
        lv = spn.levels[i]
        c = chosen[lv.start : lv.start + len(lv.regions)]  # (R_h, B)
        reg, smp = torch.nonzero(c >= 0, as_tuple=True)  # (A,) active pairs
        k = c[reg, smp]  # (A,) chosen sums
        if lv.mixing is None:
            part = reg  # partition p belongs to region p
        else:
            scores = lv.mixing.pair_scores(None if trace is None else trace.parts[i], reg, smp, k)  # (A, P_max)
            part = lv.mixing.table[reg, choose(scores, 1)]  # (A,)
        rows, smp_c, entries = lv.product.backtrack(buf, part, smp, k, choose)
        chosen[rows, smp_c] = entries
    return chosen[: spn.leaf_layer.num_regions]  # (R0, B)


@torch.no_grad()
def fill_leaves(spn: "SPN", leaf_choice: Tensor, greedy: bool, generator: torch.Generator | None,
                x: Tensor | None = None, m: Tensor | None = None) -> Tensor:
    """Values of every variable from the chosen leaf components: ``(B, D)``; only the chosen leaves are drawn.

    ``x`` and the float mask ``m`` (``(B, D)``; None: nothing observed) are the
    evidence that leaves over several variables condition their draws on.
    """
    B = leaf_choice.shape[1]
    if x is None or m is None:
        x = torch.zeros(B, spn.num_vars, dtype=spn.dtype, device=leaf_choice.device)
        m = torch.ones_like(x)
    reg, smp = torch.nonzero(leaf_choice >= 0, as_tuple=True)  # (A,) leaf regions on the chosen trees
    out = x.new_zeros(B, spn.num_vars + 1)  # column D takes the padding slots
    spn.leaf_layer.fill(reg, leaf_choice[reg, smp], smp, x, m, greedy, generator, out)
    return out[:, : spn.num_vars]  # (B, D)


@torch.no_grad()
def complete(spn: "SPN", x: Tensor, m: Tensor, greedy: bool, root: Tensor | None, generator: torch.Generator | None,
             keep_observed: bool = True) -> tuple[Tensor, Tensor]:
    """Sampled (``greedy`` False) or MPE (True) completions of ``x`` under the float mask ``m``, and the root values.

    Args:
        x: ``(B, D)`` values, zero where ``m >= 1``.
        m: ``(B, D)`` float mask.
        root: ``(B,)`` chosen root sums, or None: drawn from (or the best of) the class posterior.

    Returns:
        ``(B, D)`` completions and the chosen root's log-value ``(B,)``.
    """
    choose = chooser(greedy, generator)
    if not greedy and bool((m >= 1).all()):  # nothing observed: the posterior is the prior, no upward pass
        trace, root_values = None, x.new_zeros(x.shape[0], spn.num_classes)  # every value log 1 = 0
    else:
        trace = spn.upward(Evidence(x, m), mode="max" if greedy else "sum")
        root_values = trace.root
    if root is None:
        root = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if spn.num_classes == 1 else choose(root_values, -1)
    filled = fill_leaves(spn, downward(spn, trace, root, choose), greedy, generator, x, m)
    value = torch.gather(root_values, 1, root.view(-1, 1)).squeeze(1)
    return (torch.where(m > 0, filled, x) if keep_observed else filled), value
