"""Data-parallel SuPAIR training under torchrun: the Trainer's view of the process group.

``torchrun --nproc_per_node W -m supair train ...`` starts W processes;
the CLI calls :func:`init_from_env`, which returns a :class:`DataParallel`
(None for a single process) that :class:`~supair.train.Trainer` uses to

* take this process's contiguous shard of each global batch (every process
  draws the same global batch from the same seeded generator, so the union of
  the shards IS the single-process batch; per-process batch = global / W),
* compute the loss through DistributedDataParallel (DDP),
* evaluate on shards of the test set and gather the per-image results, and
* let rank 0 alone write ``config.json``, ``metrics.jsonl`` and checkpoints.

Why a wrapper module around the loss: DDP hooks ``forward`` only, and the
harness trains through ``model.loss`` (which also returns logging stats).
:class:`ShardedLoss` is a small ``nn.Module`` whose ``forward`` is that loss;
DDP wraps it, so the gradient all-reduce is DDP's own (bucketed, overlapped
with the backward pass) rather than a hand-written loop. The shards are equal
(the global batch must divide by W), so DDP's gradient MEAN over processes is
exactly the gradient of the mean loss over the global batch.

Why the random draws are made for the whole global batch: SuPAIR samples
``z_where = loc + std * eps`` inside its loss (AIR also ``z_what`` and, by
``rand_like(p) < p``, ``z_pres``). Every process keeps the global torch
generator in the same state (same seed, same draws), and inside the loss
:class:`GlobalBatchNoise` (a ``TorchFunctionMode``) turns each
``randn_like(t)`` / ``rand_like(t)`` / ``t.normal_()`` / ``t.uniform_()`` on a
batch-first tensor of the shard into the same draw for the WHOLE global batch,
cut to this process's rows. Image ``i`` then gets exactly the noise it gets in
a single process, so W processes follow the single-process trajectory (up to
floating-point summation order of the gradient mean), metrics equal a single
process's, and a checkpoint resumes under any number of processes. Any other
random operation inside the loss raises, so a model change that would break
this cannot go unnoticed. The cost is ``W`` times the (small) noise draws.
(AIR with ``air.nvil_normalize`` keeps running moments of its learning signal
in buffers; those follow rank 0's shard, broadcast by DDP before each step.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.overrides import TorchFunctionMode

from spnkit import distributed as sd
from spnkit.distributed import DistInfo, rank_slice

from .data import SceneSet
from .evaluation import detections, searches, summarize
from .model import Supair

if TYPE_CHECKING:
    from .checkpoint import SceneModel

__all__ = ["DataParallel", "ShardedLoss", "GlobalBatchNoise", "init_from_env", "shard_loss", "evaluate_sharded"]

T = TypeVar("T")

# random functions made global-batch-exact by GlobalBatchNoise: fresh tensors ...
_LIKE = (torch.randn_like, torch.rand_like)
# ... and in-place fills
_FILL = (torch.Tensor.normal_, torch.Tensor.uniform_)
# random functions whose draw cannot be matched to a single process's from the shard alone
_REFUSED = (
    torch.rand, torch.randn, torch.randint, torch.randint_like, torch.randperm, torch.normal, torch.bernoulli,
    torch.multinomial, torch.poisson, torch.Tensor.bernoulli, torch.Tensor.bernoulli_, torch.Tensor.random_,
    torch.Tensor.exponential_, torch.Tensor.geometric_, torch.Tensor.cauchy_, torch.Tensor.log_normal_,
    torch.Tensor.multinomial,
)
_DROPOUT = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)


class GlobalBatchNoise(TorchFunctionMode):
    """Inside this mode, per-image random draws of a shard equal those of the whole global batch.

    A ``randn_like`` / ``rand_like`` of a tensor ``(b, ...)`` (``b`` = rows of the
    shard) returns rows ``rows`` of the same call on ``(total, ...)``; in-place
    ``normal_`` / ``uniform_`` fill likewise. Every process thus draws the global
    batch's noise from its (shared-state) generator and keeps its own rows.

    Args:
        rows: this process's rows of the global batch.
        total: size of the global batch.

    Raises:
        RuntimeError: (when used) for a draw of another leading size, or any other
            random operation (``bernoulli``, ``randn(size)``, dropout, ...).
    """

    def __init__(self, rows: slice, total: int) -> None:
        super().__init__()
        if not 0 <= rows.start <= rows.stop <= total:
            raise ValueError(f"rows {rows} do not lie in a batch of {total}")
        self.rows, self.total, self.b = rows, total, rows.stop - rows.start

    def _full(self, func, t: Tensor) -> Tensor:
        if t.dim() == 0 or t.shape[0] != self.b:
            raise RuntimeError(
                f"{getattr(func, '__name__', func)} on a tensor of shape {tuple(t.shape)} inside a data-parallel loss: "
                f"per-image noise must be drawn batch-first (leading size {self.b}) to match a single process"
            )
        return t.new_empty((self.total, *t.shape[1:]))  # (total, ...)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LIKE:
            return func(self._full(func, args[0]), *args[1:], **kwargs)[self.rows]
        if func in _FILL:
            full = self._full(func, args[0])
            func(full, *args[1:], **kwargs)
            with torch.no_grad():
                args[0].copy_(full[self.rows])
            return args[0]
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        if func in _REFUSED or (func in _DROPOUT and training):
            raise RuntimeError(
                f"{getattr(func, '__name__', func)} inside a data-parallel SuPAIR loss cannot be matched to a single "
                "process; draw per-image noise with randn_like / rand_like on batch-first tensors"
            )
        return func(*args, **kwargs)


def shard_loss(model: SceneModel, images: Tensor, rows: slice, total: int) -> tuple[Tensor, dict[str, Tensor]]:
    """``model.loss`` of this process's rows ``rows`` of a global batch of ``total`` images.

    The draws are those of a single process (see :class:`GlobalBatchNoise`):
    ``shard_loss(model, x, slice(0, len(x)), len(x))`` equals ``model.loss(x)``
    from the same generator state. Every process must call it with at least one
    row so that the generators stay in step.

    Args:
        model: the unwrapped model (SuPAIR or AIR: any model whose ``loss`` draws
            per-image noise with ``randn_like`` / ``rand_like`` on batch-first tensors).
        images: ``(b, C, S, S)``, the rows ``rows`` of the global batch.
        rows: this process's rows.
        total: size of the global batch.

    Returns:
        the loss (mean over the shard) and the stats of ``model.loss``.
    """
    if images.shape[0] != rows.stop - rows.start or images.shape[0] < 1:
        raise ValueError(f"images must hold the {rows.stop - rows.start} rows {rows} (at least one), got {images.shape[0]}")
    with GlobalBatchNoise(rows, total):
        return model.loss(images)


class ShardedLoss(nn.Module):
    """``forward(images)`` = the training loss of this process's shard, for DDP to wrap.

    Args:
        model: the model (its parameters are this module's parameters).
        rank: this process's rank.
        world_size: number of processes; every shard has ``len(images)`` rows.
    """

    def __init__(self, model: SceneModel, rank: int, world_size: int) -> None:
        super().__init__()
        self.model = model
        self.rank, self.world_size = rank, world_size

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``model.loss`` of ``images`` ``(B / W, C, S, S)``, this process's rows of the global batch."""
        b = images.shape[0]
        return shard_loss(self.model, images, slice(self.rank * b, (self.rank + 1) * b), b * self.world_size)


@torch.no_grad()
def evaluate_sharded(model: SceneModel, test: SceneSet, info: DistInfo, batch_size: int = 500, elbo_images: int = 500,
                     device: str = "cpu") -> dict[str, Any]:
    """:func:`supair.train.evaluate` with each batch of ``test`` split over the processes.

    Detections are computed on this process's shard of every batch of
    ``batch_size`` held-out images and gathered in image order; the ELBO sums of
    the shards (with single-process noise, see :func:`shard_loss`) are summed.
    Every process returns the same metrics, those of one process evaluating
    everything; afterwards the generators are re-synchronized.
    """
    model.eval()
    W, r = info.world_size, info.rank
    N = model.cfg.inference.detect_steps or model.cfg.max_steps  # the steps detection takes
    local = [torch.zeros(0, 2 + 4 * N, dtype=torch.float64, device=device)]  # this process's (count, box, network count) rows
    owned: list[list[Tensor]] = [[] for _ in range(W)]  # every process's global image indices
    elbo_sum = torch.zeros(1, dtype=torch.float64, device=device)
    for start in range(0, len(test), batch_size):  # batches of the held-out set
        n = min(batch_size, len(test) - start)
        for q in range(W):
            s = rank_slice(n, q, W)
            owned[q].append(torch.arange(start + s.start, start + s.stop))
        rows = rank_slice(n, r, W)
        x = test.float_batch(slice(start + rows.start, start + rows.stop)).to(device)  # (b, C, S, S)
        if x.shape[0]:
            count, box, network = detections(model, x)
            network = count if network is None else network  # a column either way; used only with a search
            local.append(torch.cat([count.double().unsqueeze(1), box.double().flatten(1),
                                    network.double().unsqueeze(1)], 1))  # (b, 2 + 4N)
        if start < elbo_images:
            k = min(n, elbo_images - start)  # the batch's first k images enter the ELBO, split on their own
            e = rank_slice(k, r, W)  # never empty for the last process
            if e.stop > e.start:
                xe = test.float_batch(slice(start + e.start, start + e.stop)).to(device)  # (b_e, C, S, S)
                elbo_sum += float(shard_loss(model, xe, e, k)[1]["elbo"]) * xe.shape[0]
    index = [torch.cat(o) for o in owned]
    table = sd.all_gather_rows(torch.cat(local), [len(i) for i in index]).cpu()
    ordered = torch.empty_like(table)
    ordered[torch.cat(index)] = table  # (len(test), 2 + 4N) in image order
    elbo_total = float(sd.all_reduce_sum([elbo_sum])[0])
    _sync_generators(W - 1, device)  # a process without ELBO rows skipped draws; the last one never does
    model.train()
    return summarize(ordered[:, 0].long(), ordered[:, 1:-1].reshape(-1, N, 4).float(), elbo_total, test, elbo_images,
                     ordered[:, -1].long() if searches(model) else None)


def _sync_generators(src: int, device: str) -> None:
    """Give every process rank ``src``'s torch generator states (CPU, and CUDA for a CUDA device)."""
    dev = torch.device(device)
    state = sd.broadcast_object((torch.get_rng_state(), torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None), src=src)
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], dev)


class DataParallel:
    """What the Trainer needs from the process group (see the module docstring).

    Args:
        info: this process's place in the initialized group.
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: writes the run folder's files and prints."""
        return self.info.is_main

    @property
    def device(self) -> str:
        return self.info.device

    def per_process_batch(self, batch_size: int) -> int:
        """``batch_size / world_size``; ValueError unless it divides evenly."""
        if batch_size % self.world_size:
            raise ValueError(
                f"the global batch size {batch_size} must be divisible by the number of processes {self.world_size} "
                f"(each process takes batch_size / {self.world_size} images); choose --batch-size accordingly"
            )
        return batch_size // self.world_size

    def shard(self, batch: Tensor) -> Tensor:
        """This process's contiguous rows of a global batch (indices or images)."""
        return batch[rank_slice(batch.shape[0], self.rank, self.world_size)]

    def wrap(self, model: SceneModel) -> nn.Module:
        """DDP around :class:`ShardedLoss`: calling it returns ``(loss, stats)`` and its backward averages gradients.

        Every parameter of SuPAIR and AIR enters the loss, so DDP does not search
        for unused ones. Buffers: SuPAIR's are the SPNs' index tables, constant
        during training, so they are not re-broadcast before each step; other
        models (AIR updates a step counter and running moments) get rank 0's
        buffers before each step, DDP's default.
        """
        dev = torch.device(self.device)
        ids = [dev.index] if dev.type == "cuda" else None
        options: dict = {"find_unused_parameters": False}
        if isinstance(model, Supair):  # torch 2.13 renamed broadcast_buffers to forward_sync_buffers
            name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
            options[name] = False
        return DistributedDataParallel(ShardedLoss(model, self.rank, self.world_size), device_ids=ids, **options)

    def mean(self, value: Tensor) -> float:
        """The mean of a per-process scalar over the processes (for logging)."""
        return float(sd.all_reduce_sum([value.detach().reshape(1)])[0]) / self.world_size

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` in every process: decisions from clocks, which differ between processes."""
        return bool(self.broadcast(bool(flag)))

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (e.g. building a data cache once)."""
        if self.is_main:
            out = fn()
            torch.distributed.barrier()
            return out
        torch.distributed.barrier()
        return fn()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` everywhere."""
        return sd.broadcast_object(obj)

    def evaluate(self, model: SceneModel, test: SceneSet, device: str = "cpu") -> dict[str, Any]:
        """Metrics on the whole test set, computed on shards (see :func:`evaluate_sharded`)."""
        return evaluate_sharded(model, test, self.info, device=device)

    def close(self) -> None:
        """Leave the process group."""
        sd.leave()


def init_from_env(device: str = "cpu") -> DataParallel | None:
    """Join torchrun's process group (None when not under torchrun, or a single process).

    The backend is ``nccl`` for CUDA and ``gloo`` for CPU; on CPU each process
    gets ``cores / LOCAL_WORLD_SIZE`` threads (``--threads`` overrides).
    """
    info = sd.init_from_env(device)
    return None if info is None else DataParallel(info)
