"""Atomic file writes for spnkit's outputs (saved circuits, drawings)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes) -> None:
    """Write a file so that readers see the old or the new version, never a part.

    ``write(fh)`` fills a temporary file in the target's folder (opened ``"wb"``;
    or pass the bytes themselves); it is flushed to disk and then renamed over
    ``path``. On any error the temporary file is removed and ``path`` is left as
    it was. The file gets the old file's permissions, or 0644 for a new one.

    Args:
        path: target file; missing parent folders are created.
        write: a function of a binary file handle, or the ``bytes`` to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's files are 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
