"""Helpers shared by the benchmark scripts: atomic result files and the context a result records."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "context", "context_lines"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes) -> None:
    """Write ``path`` through a temporary file in its folder and a rename (missing folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                write(fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def context(threads: int | None = None, argv: list[str] | None = None) -> dict[str, str]:
    """What produced a result: command, date, machine, CPU, cores, threads, Python and torch versions."""
    import torch

    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path(__file__).resolve().parents[1])
    return {
        "command": shlex.join(["python", str(script), *argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "threads": str(threads if threads is not None else torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def context_lines(ctx: dict[str, str], prefix: str = "") -> str:
    """``ctx`` as one ``key: value`` line each, every line starting with ``prefix`` (e.g. ``"# "`` for a CSV header)."""
    return "".join(f"{prefix}{k}: {v}\n" for k, v in ctx.items())
