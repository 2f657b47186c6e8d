"""Helpers shared by the benchmark scripts: atomic result files and the context a result records.

Every results file starts with the context of the run that produced it (command, date,
CPU, cores, threads, Python and torch versions): a CSV as ``# key: value`` comment lines
before its header row (:func:`csv_text`, read back by :func:`read_csv`), a markdown file
as a list under its title (:func:`context_lines` with ``prefix="- "``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "context", "context_lines", "csv_text", "read_csv"]


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


def context_lines(ctx: Mapping[str, object], prefix: str = "") -> str:
    """``ctx`` as one ``key: value`` line each (a list value: one line per item), each starting with ``prefix``."""
    return "".join(f"{prefix}{k}: {item}\n" for k, v in ctx.items() for item in (v if isinstance(v, list) else [v]))


def csv_text(fields: Iterable[str], rows: Iterable[Mapping[str, object]], ctx: Mapping[str, object] | None = None) -> str:
    """``rows`` as CSV text with the header row ``fields``, preceded by ``ctx`` as ``# key: value`` lines.

    A value that is a list gives one line per item (``# key: item``). Readers skip the
    comment lines with :func:`read_csv` (or ``pandas.read_csv(path, comment="#")``).
    """
    buf = io.StringIO()
    for key, value in (ctx or {}).items():
        for item in value if isinstance(value, list) else [value]:
            buf.write(f"# {key}: {item}\n")
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_csv(path: str | os.PathLike) -> tuple[dict[str, object], list[dict[str, str]]]:
    """The context lines and the rows of a CSV written by :func:`csv_text`.

    Returns ``(ctx, rows)``: ``ctx`` maps each key of the leading ``# key: value`` lines to its
    value (a list where the key occurs more than once), ``rows`` are ``csv.DictReader`` dicts.
    """
    ctx: dict[str, object] = {}
    lines = Path(path).read_text().splitlines(keepends=True)
    body = 0
    while body < len(lines) and lines[body].startswith("#"):
        key, _, value = lines[body][1:].strip().partition(": ")
        if key in ctx:
            old = ctx[key]
            ctx[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            ctx[key] = value
        body += 1
    return ctx, list(csv.DictReader(lines[body:]))
