"""Data-parallel training with ``torch.distributed``: process groups and reductions.

Data parallelism in spnkit has one rule: every process holds a replica of the
circuit, each global mini-batch is cut into contiguous shards (process ``r`` of
``W`` takes rows ``[r B / W, (r + 1) B / W)``, see :func:`rank_slice`), and the
per-shard results are SUMMED across processes before any parameter changes:

* Adam: gradients of the summed objective divided by the GLOBAL batch size, so
  the all-reduced gradient is the single-process gradient of the batch mean,
  even when shards are uneven (a last short batch).
* EM: the expected counts of the shards (:class:`spnkit.learn.Counts`) are
  additive, so all-reducing them before the M-step gives exactly the counts of
  the union (:func:`all_reduce_counts`).

Every process therefore ends each step with the same parameters, equal (up to
floating-point summation order) to a single process trained on the same
global batches. :func:`spnkit.fit` does this with ``distributed=True``.

Launching: ``torchrun`` starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` joins the group they describe (backend
``nccl`` for CUDA devices, ``gloo`` for CPU) and gives each process its share
of the CPU cores. See docs/scaling.md.

Example (two processes: ``torchrun --nproc_per_node 2 train.py``)::

    import torch, spnkit
    from spnkit.distributed import init_from_env

    info = init_from_env()  # None when not started by torchrun
    rg = spnkit.RegionGraph.random(num_vars=16, depth=2, repetitions=4, seed=0)
    torch.manual_seed(0)  # the same initial parameters in every process
    spn = spnkit.SPN(rg, spnkit.Bernoulli(), num_sums=4, num_leaves=4)
    data = torch.load("data.pt")  # the SAME data in every process
    spnkit.fit(spn, data, method="em-batch", distributed=info is not None)
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch import distributed as dist

if TYPE_CHECKING:
    from .learn.em import Counts

__all__ = [
    "DistInfo",
    "init_from_env",
    "current",
    "launched_by_torchrun",
    "cpu_threads_per_process",
    "rank_slice",
    "all_reduce_sum",
    "leave",
    "all_reduce_counts",
    "all_gather_rows",
    "any_rank",
    "broadcast_object",
    "check_same",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in an initialized process group.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the torch device of this process (``"cuda:<local_rank>"`` for CUDA).
        backend: ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    local_rank: int
    device: str
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment (``RANK`` and ``WORLD_SIZE``) is present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set; start the program with torchrun")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def cpu_threads_per_process(local_world_size: int) -> int:
    """CPU threads for one of ``local_world_size`` processes sharing this machine's cores (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def init_from_env(device: str | torch.device = "cpu", *, set_threads: bool = True, timeout_s: float = 600.0) -> DistInfo | None:
    """Join the process group described by torchrun's environment.

    Does nothing and returns None when the program was not started by torchrun
    or ``WORLD_SIZE`` is 1 (a single process keeps the single-process code path).
    Otherwise initializes the default process group (``nccl`` when ``device`` is
    CUDA, else ``gloo``), and, on CPU with ``set_threads``, sets
    ``torch.set_num_threads(cores // LOCAL_WORLD_SIZE)`` (torchrun itself sets
    ``OMP_NUM_THREADS=1``). A group that is already initialized is reused.

    Args:
        device: ``"cpu"``, or ``"cuda"`` (each process then uses ``cuda:<LOCAL_RANK>``).
        set_threads: share the CPU cores between the processes of this machine.
        timeout_s: how long collectives wait for a missing process.

    Returns:
        this process's :class:`DistInfo`, or None for a single process.

    Raises:
        ValueError: on malformed torchrun variables, or CUDA requested without CUDA.
    """
    if not launched_by_torchrun():
        return None
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    if world == 1:
        return None
    return _join(device, set_threads, timeout_s)


def _join(device: str | torch.device, set_threads: bool = True, timeout_s: float = 600.0) -> DistInfo:
    """Initialize (or reuse) the default group from torchrun's environment; see :func:`init_from_env`."""
    world = _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
        if set_threads:
            torch.set_num_threads(cpu_threads_per_process(local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        atexit.register(leave)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=str(dev), backend=dist.get_backend())


def leave() -> None:
    """Leave the process group after every process has arrived (also registered at exit).

    Destroying the group while another process still talks to the store that rank 0
    hosts made rank 0 abort at exit now and then ("terminate called without an active
    exception"); the barrier (bounded, so a crashed peer cannot hang the exit) closes that race.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except Exception:  # a peer is gone: leave anyway
            pass
        dist.destroy_process_group()


def current(device: str | torch.device = "cpu") -> DistInfo:
    """The :class:`DistInfo` of the initialized default group (joining torchrun's group, of any size, if needed).

    Raises:
        ValueError: if there is no process group and none can be made.
    """
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build")
    if not dist.is_initialized():
        if not launched_by_torchrun():
            raise ValueError(
                "distributed training needs a torch.distributed process group: start the program with "
                "torchrun or call torch.distributed.init_process_group first"
            )
        return _join(device)  # also a group of one process (torchrun --nproc_per_node 1)
    dev = torch.device(device)
    local_rank = _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=str(dev), backend=dist.get_backend())


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rows ``[n r / W, n (r + 1) / W)`` of a batch of ``n``: contiguous, balanced, their union is ``0..n-1``.

    Example:
        >>> [rank_slice(5, r, 2) for r in range(2)]
        [slice(0, 2, None), slice(2, 5, None)]
    """
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"need n >= 0 and 0 <= rank < world_size, got n={n}, rank={rank}, world_size={world_size}")
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def _buffer_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    return torch.float64 if all(t.device.type != "mps" for t in tensors) else torch.float32


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Element-wise sums over all processes of ``tensors``, in ONE collective.

    The tensors are flattened into one float64 buffer (exact for the float32
    and integer-valued entries typical here), summed, and cut back into the
    original shapes and dtypes. Inputs are not modified.

    Args:
        tensors: tensors on this process's device, the same shapes on every process.

    Returns:
        new tensors with the sums, shapes and dtypes as the inputs.
    """
    if not tensors:
        return []
    dtype = _buffer_dtype(tensors)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])  # (sum of numel,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return out


def all_reduce_counts(counts: "Counts") -> "Counts":
    """The EM counts of all processes' shards summed, as if computed on their union.

    Use between :func:`spnkit.learn.expected_counts` and
    :func:`spnkit.learn.m_step` when each process holds a shard of the data::

        counts = all_reduce_counts(expected_counts(spn, my_shard))
        m_step(spn, counts)  # the same update in every process

    Args:
        counts: this process's counts (the same circuit structure everywhere).

    Returns:
        a new :class:`spnkit.learn.Counts` with the summed counts and sample numbers.
    """
    from .layers.leaf_base import flat, unflat
    from .learn.em import Counts

    n = len(counts.weights)
    leaves = flat(counts.leaves)
    parts = [*counts.weights, *leaves, counts.log_likelihood.reshape(1),
             torch.tensor([float(counts.num_samples)], device=leaves[0].device)]
    summed = all_reduce_sum(parts)
    k = n + len(leaves)
    return Counts(summed[:n], unflat(counts.leaves, summed[n:k]), summed[k].reshape(()), int(round(float(summed[k + 1]))))


def all_gather_rows(local: Tensor, sizes: Sequence[int]) -> Tensor:
    """Concatenate every process's rows in rank order: ``(sizes[r], ...)`` each -> ``(sum(sizes), ...)``.

    Args:
        local: this process's rows, ``(sizes[rank], *shape)``.
        sizes: the number of rows of every process (known to all of them).

    Returns:
        all rows, rank 0's first, on ``local``'s device and in its dtype.
    """
    world = dist.get_world_size()
    if len(sizes) != world:
        raise ValueError(f"sizes must give one row count per process ({world}), got {len(sizes)}")
    if local.shape[0] != sizes[dist.get_rank()]:
        raise ValueError(f"this process has {local.shape[0]} rows but sizes says {sizes[dist.get_rank()]}")
    most = max(sizes)
    padded = local.new_zeros((most, *local.shape[1:]))  # (max rows, ...)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])


def any_rank(flag: bool, device: str | torch.device = "cpu") -> bool:
    """True on every process if ``flag`` is True on any (for stopping decisions all must share)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every process (e.g. a run folder chosen from the clock)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_same(name: str, values: Sequence[float], device: str | torch.device = "cpu") -> None:
    """Raise ValueError on every process unless all processes passed equal ``values``.

    Used to check that every process was given the same data (sizes and a checksum)
    before training in lock-step; a mismatch would otherwise hang or silently diverge.
    """
    local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)  # (k,)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    table = torch.stack(gathered)  # (W, k)
    same = (table == table[0]) | (torch.isnan(table) & torch.isnan(table[0]))
    if not bool(same.all()):
        rows = ", ".join(f"rank {r}: {table[r].tolist()}" for r in range(table.shape[0]))
        raise ValueError(f"every process must pass the same {name}; got {rows}")
