"""Files of a run: written atomically, so that a reader sees the old or the new version, never a part.

A write goes to a temporary file ``.<name>.<pid>.<random>.tmp`` next to its
target and is renamed over it once complete. A process killed in the middle
leaves that temporary behind; :func:`remove_stale_temporaries` deletes the
ones whose writer is no longer running. Failures to write (a full disk, a
read-only folder) surface as an :class:`OSError` naming the target file, also
when the error happened inside a library that reports it otherwise (torch's
zip writer says "unexpected pos"). :func:`check_zip` verifies the CRC of every
member of a zip archive (a checkpoint), which torch's reader does not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "remove_stale_temporaries", "temporaries_of", "check_writable", "describe_os_error", "check_zip"]


class _RecordingWriter:
    """A binary file handle that remembers the first OSError its writes raised."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_fh", "error"):
            raise AttributeError(name)
        return getattr(self._fh, name)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes, clean_stale: bool = False) -> None:
    """Write ``path`` atomically.

    ``write(fh)`` fills a temporary file in the target's folder (opened ``"wb"``;
    or pass the bytes themselves); it is flushed to disk and then renamed over
    ``path``. On any error the temporary file is removed and ``path`` is left as
    it was. The file gets the old file's permissions, or 0644 for a new one.

    Args:
        path: target file; missing parent folders are created.
        write: a function of a binary file handle, or the ``bytes`` to write.
        clean_stale: first delete temporaries of ``path`` left by writers that are no longer running.

    Raises:
        OSError: the file could not be written (``filename`` is ``path``); a
            failure inside ``write`` caused by the file system (for instance a
            full disk) is re-raised as that OSError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temporaries(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's files are 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    recorder: _RecordingWriter | None = None
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                recorder = _RecordingWriter(fh)
                write(recorder)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = recorder.error if recorder is not None else None
        if isinstance(err, OSError):
            cause = err
        if cause is not None:
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise


def temporaries_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_write` may have left next to ``path``."""
    path = Path(path)
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp") and e.is_file(follow_symlinks=False)]


def _writer_alive(tmp: Path, target_name: str) -> bool:
    """Whether the process that named ``tmp`` is still running (unknown writers count as running)."""
    middle = tmp.name[len(target_name) + 2 : -len(".tmp")]
    pid_text = middle.split(".", 1)[0]
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike, all_of_them: bool = False) -> list[Path]:
    """Delete temporaries of ``path`` whose writer has stopped; returns those deleted.

    Args:
        path: the target file whose temporaries are meant.
        all_of_them: delete every temporary of ``path``, also of unknown or
            running writers; for a caller that knows nobody else writes ``path``
            (it holds the run folder's lock).
    """
    path = Path(path)
    removed = []
    for tmp in temporaries_of(path):
        if all_of_them or not _writer_alive(tmp, path.name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise a ValueError unless files can be created in ``folder`` (or, if it is missing, in the folder that would hold it).

    Args:
        folder: the folder files will be written to.
        what: how the message names it, e.g. ``"--out runs/x"``.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        reason = "it is on a read-only file system" if _read_only(probe) else "permission denied"
        place = "" if probe == folder else f" (in {probe})"
        raise ValueError(f"{what}: cannot write to {folder}{place}: {reason}")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation, e.g. ``"cannot write run/checkpoint.pt: no space left on device"``."""
    reason = (err.strerror or str(err)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (free some space, then run the command again)"
    if err.filename:
        return f"cannot write {err.filename}: {reason}" if _is_write_error(err) else f"{err.filename}: {reason}"
    return reason


def _is_write_error(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO, errno.EISDIR)


def check_zip(path: str | os.PathLike) -> None:
    """Raise a ValueError if ``path`` is a truncated zip archive or one whose data fails a member's CRC-32.

    A file that is not a zip archive at all passes (its reader says what it is).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"PK\x03\x04":  # the start of a zip without its end: cut short
            raise ValueError(f"{path} is truncated (a zip archive without its directory)") from None
        return
    except (OSError, EOFError, zlib.error, zipfile.LargeZipFile, ValueError) as err:
        raise ValueError(f"{path} is truncated or damaged ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise ValueError(f"{path} is damaged: the data of {bad!r} in it fails its CRC check")
