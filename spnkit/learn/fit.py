"""Parameter learning: :func:`fit` trains a circuit by Adam or by EM.

Example:
    >>> import torch, spnkit
    >>> rg = spnkit.RegionGraph.random(num_vars=6, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, spnkit.Bernoulli(), num_sums=3, num_leaves=3)
    >>> x = (torch.rand(400, 6) < 0.3).float()
    >>> history = spnkit.fit(spn, x, method="em", epochs=3, progress=False)
    >>> [sorted(k for k in history[0] if k in ("train_ll", "valid_ll", "seconds"))]
    [['seconds', 'train_ll', 'valid_ll']]
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .. import distributed as _dist
from ..circuit import SPN
from ..evidence import Evidence
from .em import check_labels
from .init import init_leaves
from .trainer import Trainer, sample_objective

__all__ = ["fit", "METHODS", "OBJECTIVES"]

METHODS = ("adam", "em", "em-batch")
OBJECTIVES = ("generative", "discriminative")

#: a hook: called with a record (dict); returning True stops training
Callback = Callable[[dict], "bool | None"]


def fit(
    spn: SPN,
    data: Tensor,
    valid: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    valid_labels: Tensor | None = None,
    marginalized: Tensor | None = None,
    valid_marginalized: Tensor | None = None,
    method: str = "adam",
    objective: str = "generative",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-2,
    step_size: float | tuple[float, float] = 0.1,
    full_batch_epochs: int = 0,
    weight_pseudocount: float = 0.1,
    leaf_pseudocount: float = 1.0,
    init: str = "keep",
    patience: int | None = None,
    valid_fraction: float = 0.1,
    max_seconds: float | None = None,
    callbacks: Iterable[Callback] = (),
    step_callbacks: Iterable[Callback] = (),
    progress: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    distributed: bool = False,
) -> list[dict]:
    """Train the parameters of ``spn`` in place; return one record per epoch.

    Methods:
        * ``"adam"``: mini-batch gradient ascent on the objective with Adam (``lr``).
        * ``"em"``: mini-batch (stochastic) EM, as EinsumNetworks and PyJuice
          train: after each mini-batch, new and old estimates are mixed with
          weight ``step_size``; a pair ``(start, end)`` decays it linearly over
          training (by the larger of the epochs done and the time budget used),
          e.g. ``(0.5, 0.05)``. With ``full_batch_epochs = k``, the last ``k``
          epochs are full-batch EM, as PyJuice and Juice.jl finish mini-batch
          EM: one exact M-step on the whole training set's counts removes the
          noise that mini-batch updates leave. Within ``max_seconds``, mini-batch
          EM stops early enough for them (their time is estimated from the
          mini-batch epochs', E-steps and validation), and they are not cut short.
        * ``"em-batch"``: full-batch EM: counts are summed over all mini-batches
          of an epoch, then one exact M-step (none for an epoch cut short by
          ``max_seconds`` or a hook). It never decreases the training log-likelihood.

    Objectives (``num_classes > 1`` with ``labels``):
        * ``"generative"``: ``log p(x | y)`` of the labelled root (without labels,
          ``log p(x)`` under a uniform class prior).
        * ``"discriminative"``: ``log p(y | x) = log p(x | y) - logsumexp_c log p(x | c)``,
          i.e. minus the cross-entropy over the class posteriors (RAT-SPN); Adam only.

    Validation: when ``valid`` is None, a seeded ``valid_fraction`` of ``data``
    is held out (0 disables validation). After each epoch the mean validation
    objective is computed; with ``patience`` training stops after that many
    epochs without improvement, and the best parameters are restored at the end.

    Data parallelism (``distributed=True``, under torchrun; see
    :mod:`spnkit.distributed` and docs/scaling.md): every process passes the SAME
    data and seed; each mini-batch (and the validation set) is split into one
    contiguous shard per process; Adam all-reduces the gradients of the summed
    objective over the global batch size, EM all-reduces the expected counts
    before each M-step (stochastic EM: per batch; ``"em-batch"``: once per epoch).
    Every process ends with the same parameters, equal to a single process's up
    to floating-point summation order; records hold global figures.

    Args:
        spn: the circuit, trained in place.
        data: ``(N, D)`` training samples.
        valid: ``(M, D)`` validation samples, or None.
        labels, valid_labels: ``(N,)`` / ``(M,)`` class indices (``num_classes > 1``).
        marginalized, valid_marginalized: masks of ``data`` / ``valid`` (True = missing).
        method: one of :data:`METHODS`.
        objective: one of :data:`OBJECTIVES`.
        epochs: passes over the training data.
        batch_size: mini-batch size.
        lr: Adam's learning rate.
        step_size: mini-batch EM's step size in ``(0, 1]``, or ``(start, end)`` for a linear decay.
        full_batch_epochs: full-batch EM epochs that end ``method="em"`` (0: none).
        weight_pseudocount: EM's symmetric Dirichlet prior on each sum's weights:
            pseudo-counts per sum, spread over its inputs (0: maximum likelihood).
        leaf_pseudocount: EM's prior on the leaves, per factor (see
            :meth:`spnkit.Leaf.m_step`: Dirichlet/Beta pseudo-counts for discrete
            families, pseudo-observations of the prior variance for Normal ones).
            The defaults keep rare values and sparsely used components from
            collapsing, which is what overfits on small data.
        init: ``"keep"`` trains from the circuit's current parameters;
            ``"data"`` first sets every leaf component from the training data
            (:func:`spnkit.learn.init_leaves`: the family's fit to a randomly
            weighted subsample, e.g. means and variances near the data's).
        patience: early-stopping patience in epochs (None: train all epochs).
        valid_fraction: share of ``data`` held out when ``valid`` is None.
        max_seconds: wall-clock budget; training stops after the step that exceeds it.
        callbacks: called after each epoch with its record; returning True stops.
        step_callbacks: called after each step with ``{"epoch", "step", "batch_ll",
            "elapsed", "samples"}``; returning True stops.
        progress: show a progress bar with the running log-likelihood and samples/s
            (with tqdm installed: ``pip install 'spnkit[progress]'``) and one line per epoch.
        seed: seeds shuffling and the validation split (ignored with ``generator``).
        generator: random generator for shuffling and the split.
        distributed: train data-parallel over the ``torch.distributed`` default
            group (initialized from torchrun's environment if needed).

    Returns:
        per epoch a dict with ``epoch``, ``train_ll`` (mean per sample over the
        epoch's mini-batches, each scored before its update), ``valid_ll`` (mean
        per validation sample after the epoch, None without validation),
        ``seconds`` (training time of the epoch), ``elapsed``, ``samples_per_second``,
        ``steps``, ``method`` (the epoch's: ``"em-batch"`` for the epochs that
        finish mini-batch EM), ``best`` (True where valid_ll was the best so far), and with
        labels ``train_acc`` / ``valid_acc``.

    Raises:
        ValueError: on inconsistent arguments or malformed data.
    """
    if not isinstance(spn, SPN):
        raise ValueError(f"spn must be a spnkit.SPN, got {type(spn).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "discriminative":
        if spn.num_classes < 2 or labels is None:
            raise ValueError("objective='discriminative' needs a circuit with num_classes > 1 and labels")
        if method != "adam":
            raise ValueError("EM maximizes a likelihood; objective='discriminative' needs method='adam'")
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("full_batch_epochs", full_batch_epochs, 0)
    if full_batch_epochs and method != "em":
        raise ValueError(f"full_batch_epochs finishes mini-batch EM; it needs method='em', got {method!r}")
    if full_batch_epochs > epochs:
        raise ValueError(f"full_batch_epochs ({full_batch_epochs}) is more than epochs ({epochs})")
    if patience is not None:
        _check_int("patience", patience, 1)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    steps = step_size if isinstance(step_size, tuple) else (step_size, step_size)
    if len(steps) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in steps):
        raise ValueError(f"step_size must lie in (0, 1], or be a pair (start, end) of such, got {step_size!r}")
    for name, value in (("weight_pseudocount", weight_pseudocount), ("leaf_pseudocount", leaf_pseudocount)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not (isinstance(valid_fraction, (int, float)) and 0 <= valid_fraction < 1):
        raise ValueError(f"valid_fraction must lie in [0, 1), got {valid_fraction!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    callbacks, step_callbacks = list(callbacks), list(step_callbacks)
    for cb in callbacks + step_callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables taking a dict, got {cb!r}")

    if init not in ("keep", "data"):
        raise ValueError(f"init must be 'keep' or 'data', got {init!r}")
    ev = spn.prepare(data, marginalized, "data")
    y = check_labels(spn, labels, ev.num_samples)
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else seed)
    if valid is None:
        if valid_labels is not None or valid_marginalized is not None:
            raise ValueError("valid_labels / valid_marginalized need valid")
        (ev, y), (vev, vy) = _split(ev, y, valid_fraction, generator)
    else:
        vev = spn.prepare(valid, valid_marginalized, "valid")
        vy = check_labels(spn, valid_labels, vev.num_samples)
        if (y is None) != (vy is None):
            raise ValueError("give labels for both data and valid, or for neither")
    if ev.num_samples < 1:
        raise ValueError("no training samples left after the validation split")
    if init == "data":
        x_train, m_train = ev.float_input()
        init_leaves(spn, x_train, m_train, seed=0 if seed is None else seed, pseudocount=max(leaf_pseudocount, 1e-3))

    info = _dist.current(spn.device) if distributed else None
    if info is not None:  # lock-step training needs identical inputs everywhere; say so rather than hang
        progress = progress and info.is_main
        _dist.check_same("data, validation data, generator state and settings", [
            *_fingerprint(ev.values), *_fingerprint(ev.marginalized), *_fingerprint(None if vev is None else vev.values),
            *_fingerprint(None if vev is None else vev.marginalized), *_fingerprint(generator.get_state()),
            METHODS.index(method), OBJECTIVES.index(objective), epochs, batch_size, lr, *steps, full_batch_epochs,
            weight_pseudocount, leaf_pseudocount,
            -1 if patience is None else patience,
        ], spn.device)
    trainer = Trainer(spn, method, objective, lr, steps, (float(weight_pseudocount), float(leaf_pseudocount)), info)
    history: list[dict] = []
    best_ll, best_state, bad_epochs = -math.inf, None, 0
    start = time.perf_counter()
    step = 0
    stop = False
    n = ev.num_samples
    finish = _Finish(full_batch_epochs, epochs, max_seconds, n)
    for epoch in range(1, epochs + 1):
        if finish.due(epoch, time.perf_counter() - start, info, spn.device):
            trainer.method = "em-batch"
        elif finish.done:
            break
        order = torch.randperm(n, generator=generator).to(spn.device)
        t0 = time.perf_counter()
        ll_sum, correct, seen = 0.0, 0, 0
        bar = _progress_bar(progress, total=n, desc=f"epoch {epoch}/{epochs} [{trainer.method}]", unit="samples", unit_scale=True,
                            leave=False)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            mine = idx if info is None else idx[_dist.rank_slice(len(idx), info.rank, info.world_size)]  # this process's shard
            done = (epoch - 1 + s / n) / finish.minibatch_epochs
            if finish.deadline is not None:
                done = max(done, (time.perf_counter() - start) / finish.deadline)
                if info is not None and steps[0] != steps[1]:
                    done = float(_dist.broadcast_object(done))  # the processes' clocks differ: rank 0's decides
            trainer.progress = min(done, 1.0)
            batch_ll, batch_correct = trainer.step(ev[mine], None if y is None else y[mine], len(idx))
            step += 1
            ll_sum += batch_ll
            correct += batch_correct
            seen += len(idx)
            elapsed = time.perf_counter() - start
            bar.update(len(idx))
            bar.set_postfix(ll=f"{ll_sum / seen:.4g}", refresh=False)
            record: dict[str, Any] = {"epoch": epoch, "step": step, "batch_ll": batch_ll / len(idx), "elapsed": elapsed, "samples": len(idx)}
            if any(cb(record) for cb in step_callbacks):
                stop = True
            if max_seconds is not None and elapsed >= max_seconds and not finish.active:
                stop = True
            if not finish.active:
                finish.timed(time.perf_counter() - t0, seen)
            switch = finish.mini_batch_over(elapsed)
            if info is not None and (step_callbacks or max_seconds is not None):
                stop = _dist.any_rank(stop, spn.device)  # clocks and callbacks may differ: stop together
                switch = _dist.any_rank(switch, spn.device)
            if stop or switch:
                break
        trainer.end_epoch(complete=seen == n)
        finish.epoch_ended()
        bar.close()
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "train_ll": ll_sum / seen,
            "valid_ll": None,
            "seconds": seconds,
            "samples_per_second": seen / max(seconds, 1e-12),
            "steps": step,
            "method": trainer.method,
        }
        if y is not None:
            record["train_acc"] = correct / seen
        if vev is not None:
            t_valid = time.perf_counter()
            record["valid_ll"], acc = _evaluate(spn, vev, vy, objective, max(batch_size, 256), info)
            finish.valid_seconds = time.perf_counter() - t_valid
            if vy is not None:
                record["valid_acc"] = acc
            if record["valid_ll"] > best_ll:
                best_ll, best_state, bad_epochs = record["valid_ll"], copy.deepcopy(spn.state_dict()), 0
                record["best"] = True
            else:
                bad_epochs += 1
                record["best"] = False
            if patience is not None and bad_epochs >= patience:
                stop = True
        record["elapsed"] = time.perf_counter() - start
        history.append(record)
        if progress:
            _write(_describe(record))
        if any(cb(record) for cb in callbacks):
            stop = True
        if info is not None and callbacks:
            stop = _dist.any_rank(stop, spn.device)
        if stop:
            break
    if best_state is not None:
        spn.load_state_dict(best_state)
    return history


class _Finish:
    """When :func:`fit`'s mini-batch EM hands over to the full-batch epochs that finish it.

    By epoch count, the last ``k`` of ``epochs``; within ``max_seconds``, when
    the time left is what ``k`` epochs need: each takes about a mini-batch
    epoch's time per sample (an upper bound: the E-steps without the many
    M-steps) times the training set, plus a validation pass.
    """

    def __init__(self, k: int, epochs: int, max_seconds: float | None, n: int) -> None:
        self.k, self.epochs, self.max_seconds, self.n = k, epochs, max_seconds, n
        self.active = False
        self.per_sample: float | None = None  # seconds per training sample of the mini-batch epochs
        self.valid_seconds = 0.0
        self.finished = 0  # full-batch epochs run

    @property
    def minibatch_epochs(self) -> int:
        return max(self.epochs - self.k, 1)

    @property
    def reserve(self) -> float:
        """Seconds the full-batch epochs are expected to take (0 before any measurement)."""
        return 0.0 if self.per_sample is None else self.k * (self.per_sample * self.n + self.valid_seconds)

    @property
    def deadline(self) -> float | None:
        """When mini-batch EM ends, in seconds from the start (None without a budget)."""
        return None if self.max_seconds is None else max(self.max_seconds - self.reserve, 1e-9)

    def timed(self, seconds: float, samples: int) -> None:
        if samples:
            self.per_sample = seconds / samples

    def mini_batch_over(self, elapsed: float) -> bool:
        """Whether the mini-batch epoch under way should end now for the full-batch ones."""
        deadline = self.deadline
        return bool(self.k) and not self.active and deadline is not None and elapsed >= deadline

    def due(self, epoch: int, elapsed: float, info: _dist.DistInfo | None, device: torch.device) -> bool:
        """Whether ``epoch`` is the first full-batch one (the processes agree)."""
        if not self.k or self.active:
            return False
        due = epoch > self.epochs - self.k or self.mini_batch_over(elapsed)
        if info is not None:
            due = _dist.any_rank(due, device)
        self.active = due
        return due

    @property
    def done(self) -> bool:
        """Whether the full-batch epochs are over (the next epoch would be one more)."""
        return self.active and self.finished >= self.k

    def epoch_ended(self) -> None:
        if self.active:
            self.finished += 1


def evaluate(
    spn: SPN,
    x: Tensor,
    marginalized: Tensor | None = None,
    labels: Tensor | None = None,
    objective: str = "generative",
    batch_size: int = 1024,
) -> tuple[float, float | None]:
    """Mean objective per sample and, with labels, accuracy (argmax over the class roots).

    Args:
        spn: the circuit.
        x: ``(N, D)`` data.
        marginalized: ``(N, D)`` mask (True = missing) or None.
        labels: ``(N,)`` class indices or None.
        objective: "generative" (``log p(x | y)``, or ``log p(x)`` without labels) or
            "discriminative" (``log p(y | x)``, needs labels).
        batch_size: evaluation batch size.

    Returns:
        ``(mean objective, accuracy or None)``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "discriminative" and labels is None:
        raise ValueError("objective='discriminative' needs labels")
    _check_int("batch_size", batch_size, 1)
    ev = spn.prepare(x, marginalized, "x")
    return _evaluate(spn, ev, check_labels(spn, labels, ev.num_samples), objective, batch_size)


@torch.no_grad()
def _evaluate(spn: SPN, ev: Evidence, y: Tensor | None, objective: str, batch_size: int,
              info: _dist.DistInfo | None = None) -> tuple[float, float | None]:
    """:func:`evaluate` on prepared evidence; with ``info``, each process scores its shard and the sums are all-reduced."""
    n = ev.num_samples
    if info is not None:
        part = _dist.rank_slice(n, info.rank, info.world_size)
        ev, y = ev[part], None if y is None else y[part]
    total, correct = 0.0, 0
    for s in range(0, ev.num_samples, batch_size):
        yb = None if y is None else y[s : s + batch_size]
        root = spn.upward(ev[s : s + batch_size], root_only=True).root  # (B, C)
        total += float(sample_objective(root, yb, objective).sum())
        if yb is not None:
            correct += int((root.argmax(1) == yb).sum())
    if info is not None:
        summed = _dist.all_reduce_sum([torch.tensor([total, float(correct)], dtype=torch.float64, device=spn.device)])[0]
        total, correct = float(summed[0]), int(summed[1])
    return total / n, (None if y is None else correct / n)


def _fingerprint(t: Tensor | None) -> list[float]:
    """Size and two checksums of ``t`` (order-sensitive), to compare inputs across processes."""
    if t is None:
        return [-1.0, 0.0, 0.0]
    v = t.detach().reshape(t.shape[0] if t.dim() else 1, -1).double().sum(1)  # (rows,)
    w = torch.arange(1, v.shape[0] + 1, dtype=torch.float64, device=v.device)
    return [float(t.numel()), float(v.sum()), float((v * w).sum())]


def _split(ev: Evidence, y: Tensor | None, fraction: float, generator: torch.Generator
           ) -> tuple[tuple[Evidence, Tensor | None], tuple[Evidence | None, Tensor | None]]:
    """Seeded split of the evidence and labels into training and validation parts."""
    n = ev.num_samples
    k = int(round(n * fraction))
    if k == 0:
        return (ev, y), (None, None)
    if k >= n:
        raise ValueError(f"valid_fraction={fraction} leaves no training samples out of {n}")
    perm = torch.randperm(n, generator=generator).to(ev.values.device)
    tr, va = perm[k:], perm[:k]
    return (ev[tr], None if y is None else y[tr]), (ev[va], None if y is None else y[va])


class _NoBar:
    """What :func:`_progress_bar` returns without a bar."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(show: bool, **kwargs: Any) -> Any:
    """A tqdm bar when ``show`` and tqdm is installed (tqdm is optional), else an object that does nothing."""
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(**kwargs)
    return _NoBar()


def _write(line: str) -> None:
    """One line on stdout, through tqdm when it is loaded (so that a bar is not torn)."""
    tqdm = sys.modules.get("tqdm.auto")
    if tqdm is not None:
        tqdm.tqdm.write(line)
    else:
        print(line)


def _describe(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"train_ll {record['train_ll']:.4f}"]
    if record.get("valid_ll") is not None:
        parts.append(f"valid_ll {record['valid_ll']:.4f}")
    for key in ("train_acc", "valid_acc"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"{record['samples_per_second']:.0f} samples/s")
    return ", ".join(parts)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
