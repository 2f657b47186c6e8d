"""Process-level settings: the torch device a command runs on, and the allocator setting that makes CPU training loops faster.

PyTorch allocates each CPU tensor with the C library's ``malloc``. glibc hands
blocks above a threshold (128 KiB at first, adapting up to 32 MiB) straight from
the kernel with ``mmap`` and gives them back on ``free``, and returns freed
memory at the top of its heap to the kernel beyond another threshold. A training
step that builds the same multi-megabyte temporaries every time therefore maps
fresh, zero-filled pages each time: a minor page fault per 4 KiB touched. A
SuPAIR training step (batch 64, one thread) takes about 2500 such faults with
glibc's defaults and about 30 with freed blocks kept, and 0.95x as long (AIR's
step: 0.94x); the arithmetic is the same (benchmarks/README.md, "Training-step
time and the allocator").
"""

from __future__ import annotations

import ctypes
import platform
import re

__all__ = ["keep_freed_memory", "check_device"]

_DEVICE = re.compile(r"(cpu|cuda|mps)(:(\d+))?")


def check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has, else a ValueError saying why.

    Accepted: ``cpu``, ``cuda``, ``cuda:N`` and ``mps``. torch is imported only
    for a device other than the CPU.
    """
    match = _DEVICE.fullmatch(name.strip())
    if match is None:
        raise ValueError(f"--device {name}: not a device; expected cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(3)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"--device {name}: there is one CPU device, cpu")
        return "cpu"
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}")
    elif not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple's MPS is not available on this machine; use --device cpu")
    return name.strip()

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(max_block_bytes: int = 2**30) -> bool:
    """Let this process keep freed memory for reuse instead of returning it to the kernel.

    Under glibc, blocks up to ``max_block_bytes`` come from the heap rather than
    from fresh ``mmap`` calls, and the heap is not trimmed, so a loop that
    allocates and frees the same sizes reuses pages that are already mapped. The
    process's resident memory then stays at its peak. Other C libraries: nothing
    is changed.

    Args:
        max_block_bytes: largest block served from the heap (at most ``2**31 - 1``).

    Returns:
        True if the settings were applied.
    """
    if not 0 < max_block_bytes < 2**31:
        raise ValueError(f"max_block_bytes must be in (0, 2**31), got {max_block_bytes}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, max_block_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, max_block_bytes))
