"""The run folder: its name, its lock, and what a new or resumed run may find in it.

A run folder holds ``config.json``, ``checkpoint.pt``, ``metrics.jsonl`` (and
``show.png`` once drawn). One process at a time trains in it: the trainer holds
an exclusive ``flock`` on the folder itself for as long as it runs. The kernel
releases the lock when the process ends, however it ends, so a lock is never
stale; a second trainer is told the holder's process id (read from
``/proc/locks`` where there is one). Nothing is written by the checks here: a
command that fails them leaves the disk as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import check_writable, check_zip, remove_stale_temporaries

if TYPE_CHECKING:
    from .config import SupairConfig

__all__ = [
    "RUN_FILES", "RunLock", "default_run_dir", "resolve_checkpoint", "check_new_run", "check_resumable", "check_config_json", "clear_run_files",
    "remove_run_temporaries",
]

CHECKPOINT, CONFIG, METRICS, FIGURE = "checkpoint.pt", "config.json", "metrics.jsonl", "show.png"
RUN_FILES: tuple[str, ...] = (CHECKPOINT, CONFIG, METRICS, FIGURE)
"""The files a run writes in its folder."""


def default_run_dir(dataset: str, model: str, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<model>-<date>-<time>-<6 hex digits>``: the random suffix keeps runs started in the same second apart."""
    return Path(root) / f"{dataset}-{model}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file named by ``path`` (the file, or a run folder holding it), its zip archive checked.

    Raises:
        ValueError: if there is none, it is a folder, or it is truncated or fails a CRC check.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a checkpoint file")
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    check_zip(path)
    return path


def _holder(fd: int) -> int | None:
    """The process id holding a ``flock`` on the file of ``fd`` (Linux ``/proc/locks``), or None if unknown."""
    try:
        inode = os.fstat(fd).st_ino
        with open("/proc/locks") as fh:
            for line in fh:
                parts = line.split()
                if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
                    continue
                if parts[5].rsplit(":", 1)[-1] == str(inode):
                    return int(parts[4])
    except (OSError, ValueError):
        return None
    return None


class RunLock:
    """An exclusive lock on a run folder, held until :meth:`release` or the end of the process.

    Args:
        folder: an existing run folder.

    Raises:
        ValueError: if another process holds the lock (naming its process id when known).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            who = "this process" if pid == os.getpid() else f"process {pid}" if pid else "another process"
            raise ValueError(f"{self.folder} is in use: {who} is training in it; wait for it to end, "
                             "or give another --out") from None
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self._finalizer = weakref.finalize(self, os.close, fd)  # closing the descriptor releases the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            self._fd = None
            self._finalizer()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def check_new_run(folder: str | Path, overwrite: bool = False, what: str = "--out") -> None:
    """Raise a ValueError unless a new run may start in ``folder`` (nothing is written).

    A new run needs a folder that does not exist yet, or an empty one; with
    ``overwrite``, also one that holds an earlier run (its run files are then
    replaced) or other files (which are left alone).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a run folder")
    check_writable(folder, f"{what} {folder}")
    if not folder.exists() or overwrite:
        return
    entries = _listing(folder)
    if CHECKPOINT in entries:
        raise ValueError(f"{folder} already holds a run; continue it with --resume {folder}, start it anew with --overwrite, "
                         f"or give another {what}")
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        kind = "the files of a run stopped before its first checkpoint" if CONFIG in entries or METRICS in entries else "files"
        raise ValueError(f"{folder} is not empty ({kind}: {shown}); pass --overwrite to start a new run there, or give another {what}")


def check_resumable(folder: str | Path) -> Path:
    """The checkpoint of the run in ``folder`` to resume; a ValueError if there is none (nothing is written)."""
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"--resume {folder}: no such run folder")
    if not folder.is_dir():
        raise ValueError(f"--resume {folder}: a file, not a run folder")
    ckpt = folder / CHECKPOINT
    if not ckpt.is_file():
        if (folder / CONFIG).exists() or (folder / METRICS).exists():
            raise ValueError(f"{folder} holds no checkpoint to resume from (the run stopped before its first checkpoint); "
                             f"start it anew with --out {folder} --overwrite")
        raise ValueError(f"{folder} holds no run to resume (no {CHECKPOINT})")
    check_writable(folder, f"--resume {folder}")
    return resolve_checkpoint(ckpt)


def remove_run_temporaries(folder: str | Path) -> None:
    """Delete every temporary file of a run file in ``folder`` (call it holding the folder's lock)."""
    for name in (CHECKPOINT, CONFIG, METRICS):
        remove_stale_temporaries(Path(folder) / name, all_of_them=True)
    remove_stale_temporaries(Path(folder) / FIGURE)


def clear_run_files(folder: str | Path) -> None:
    """Delete the run files of an earlier run in ``folder`` (for ``--overwrite``; call it holding the folder's lock)."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (Path(folder) / name).unlink()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested dicts, tuples as lists (as JSON has them)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): list(d) if isinstance(d, tuple) else d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


_MISSING = object()


def check_config_json(path: str | Path, saved: dict[str, Any], requested: "SupairConfig") -> None:
    """Raise a ValueError if a resumed run's ``config.json`` disagrees with its checkpoint (nothing is written).

    The checkpoint's config is the run's; ``config.json`` is its copy for
    people and must equal it, or the configuration the run resumes with (the
    checkpoint's changed by the flags given; a run killed right after writing
    it). A missing ``config.json`` is written anew.

    Args:
        path: the run's ``config.json``.
        saved: the config dict stored in the checkpoint.
        requested: the configuration the run resumes with.
    """
    from .config import SupairConfig

    path = Path(path)
    if not path.exists():
        return
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it, or delete it and it is written anew from the checkpoint") from None
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    try:
        SupairConfig.from_dict(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    mine = _flatten(raw)
    theirs = _flatten(SupairConfig.from_dict(saved).to_dict())  # with the fields an older version did not write
    if mine in (_flatten(saved), theirs, _flatten(requested.to_dict())):
        return
    keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k, _MISSING) != theirs.get(k, _MISSING))

    def show(d: dict[str, Any], k: str) -> str:
        return "missing" if k not in d else json.dumps(d[k])

    listed = ", ".join(f"{k} ({show(mine, k)} in config.json, {show(theirs, k)} in the checkpoint)" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    raise ValueError(f"{path} disagrees with the run's checkpoint on {listed}{more}; a resumed run takes its config from "
                     "the checkpoint: restore config.json (or delete it), and give changes as flags such as --set KEY=VALUE")
