"""One training step per mini-batch for each of :func:`~spnkit.learn.fit`'s methods: Adam, stochastic EM and full-batch EM.

:class:`Trainer` updates a circuit from one batch (a gradient step, or an E-step and
an M-step, or counts kept for the end of the epoch); data-parallel, it sums the
gradients or counts over the processes first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import distributed as _dist
from ..circuit import SPN
from ..evidence import Evidence
from .em import Counts, e_step, m_step, root_log_likelihood

__all__ = ["Trainer", "sample_objective"]


def sample_objective(root: Tensor, labels: Tensor | None, objective: str) -> Tensor:
    """Per-sample objective ``(B,)`` from root values ``(B, C)``."""
    ll = root_log_likelihood(root, labels)
    if objective == "discriminative":
        return ll - torch.logsumexp(root, dim=1)  # log p(y | x) under a uniform class prior
    return ll


class Trainer:
    """One optimization step per mini-batch, for each method (data-parallel with ``info``)."""

    def __init__(self, spn: SPN, method: str, objective: str, lr: float, steps: tuple[float, float],
                 pseudocounts: tuple[float, float], info: _dist.DistInfo | None = None) -> None:
        self.spn, self.method, self.objective, self.steps = spn, method, objective, steps
        self.prior = {"weight_pseudocount": pseudocounts[0], "leaf_pseudocount": pseudocounts[1]}
        self.progress = 0.0  # fraction of training done, set by fit before each step
        self.optimizer = torch.optim.Adam(spn.parameters(), lr=lr) if method == "adam" else None
        self.counts: Counts | None = None
        self.info = info

    @property
    def step_size(self) -> float:
        """Mini-batch EM's step size now: linear from the first to the second of ``steps`` over training."""
        start, end = self.steps
        return start + (end - start) * self.progress

    def step(self, ev: Evidence, y: Tensor | None, total: int | None = None) -> tuple[float, int]:
        """Update on one batch; return its summed objective (before the update) and correct predictions.

        Data-parallel, ``ev`` is this process's shard of a global batch of ``total``
        samples, and the returned figures are those of the global batch.
        """
        if self.info is not None:
            return self._step_parallel(ev, y, ev.num_samples if total is None else total)
        spn = self.spn
        if self.optimizer is not None:  # method "adam"
            self.optimizer.zero_grad(set_to_none=True)
            root = spn.upward(ev, root_only=True).root  # (B, C)
            obj = sample_objective(root, y, self.objective)
            if not bool(torch.isfinite(obj).all()):
                raise ValueError("the objective is -inf or NaN on a training batch (a sample has zero likelihood)")
            (-obj.mean()).backward()
            self.optimizer.step()
            obj_sum = float(obj.detach().sum())
        else:
            counts, root = e_step(spn, ev, y)
            if self.method == "em":
                m_step(spn, counts, self.step_size, **self.prior)
            else:
                self.counts = counts if self.counts is None else self.counts + counts
            obj_sum = float(counts.log_likelihood)
        correct = 0 if y is None else int((root.detach().argmax(1) == y).sum())
        return obj_sum, correct

    def _step_parallel(self, ev: Evidence, y: Tensor | None, total: int) -> tuple[float, int]:
        """:meth:`step` on a shard: gradients or counts are summed over the processes before the update.

        Failures (a zero-likelihood sample) are reduced too, so every process raises together.
        """
        spn, b = self.spn, ev.num_samples
        obj_sum, correct, bad = 0.0, 0, False
        if self.optimizer is not None:  # method "adam"
            self.optimizer.zero_grad(set_to_none=True)
            params = [p for p in spn.parameters() if p.requires_grad]
            if b:
                root = spn.upward(ev, root_only=True).root  # (b, C)
                obj = sample_objective(root, y, self.objective)  # (b,)
                bad = not bool(torch.isfinite(obj).all())
                if not bad:
                    (-obj.sum() / total).backward()  # this shard's part of the global batch mean
                    obj_sum = float(obj.detach().sum())
                correct = 0 if y is None else int((root.detach().argmax(1) == y).sum())
            grads = [torch.zeros_like(p) if bad or p.grad is None else p.grad for p in params]
            stats = torch.tensor([obj_sum, correct, float(bad)], dtype=torch.float64, device=spn.device)
            *grads, stats = _dist.all_reduce_sum([*grads, stats])
            if stats[2] > 0:
                raise ValueError("the objective is -inf or NaN on a training batch (a sample has zero likelihood)")
            for p, g in zip(params, grads):
                p.grad = g
            self.optimizer.step()
            return float(stats[0]), int(stats[1])
        counts = None
        if b:
            try:
                counts, root = e_step(spn, ev, y)
                obj_sum = float(counts.log_likelihood)
                correct = 0 if y is None else int((root.argmax(1) == y).sum())
            except ValueError:
                bad = True
        stats = _dist.all_reduce_sum([torch.tensor([obj_sum, correct, float(bad)], dtype=torch.float64, device=spn.device)])[0]
        if stats[2] > 0:
            raise ValueError("a sample has zero likelihood (log-likelihood -inf or NaN); EM needs every sample to have positive density")
        counts = Counts.zeros(spn) if counts is None else counts
        if self.method == "em":
            m_step(spn, _dist.all_reduce_counts(counts), self.step_size, **self.prior)
        else:
            self.counts = counts if self.counts is None else self.counts + counts
        return float(stats[0]), int(stats[1])

    def end_epoch(self, complete: bool = True) -> None:
        """Full-batch EM's M-step, on complete epochs only: the counts of the few batches
        of an epoch cut short (time budget, hook) would overfit them."""
        if self.method == "em-batch" and not complete:
            self.counts = None
        elif self.method == "em-batch" and self.info is not None:
            counts = _dist.all_reduce_counts(Counts.zeros(self.spn) if self.counts is None else self.counts)
            if counts.num_samples > 0:
                m_step(self.spn, counts, 1.0, **self.prior)
            self.counts = None
        elif self.method == "em-batch" and self.counts is not None:
            m_step(self.spn, self.counts, 1.0, **self.prior)
            self.counts = None
