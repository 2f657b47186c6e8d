"""Helpers of the fault-injection tests (``pytest -m fault``), and a launcher that kills supair at a chosen point.

:func:`supair_killed` runs ``supair ARGS...`` in a child process forked from
the test process (torch is imported already, so a start costs milliseconds, not
seconds) that sends itself SIGKILL at the point KILL names; as a script,
``python supair_faults.py KILL -- ARGS...`` does the same in a fresh interpreter:

* ``step:N``: right after training step N;
* ``checkpoint-write:N``: in the N-th checkpoint write, when half of the file's
  bytes are on disk (the temporary file is left behind, torn);
* ``checkpoint-rename:N``: after the N-th checkpoint is completely written, just
  before it is renamed over the old one;
* ``metrics-rename:N``: likewise for the N-th write of metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "--set", "model.scene_size=12", "--set", "model.glimpse_size=6", "--set", "model.max_steps=2",
    "--set", "model.object_spn.depth=1", "--set", "model.object_spn.repetitions=2",
    "--set", "model.object_spn.num_leaves=3", "--set", "model.object_spn.num_sums=2",
    "--set", "model.background_spn.repetitions=2", "--set", "model.background_spn.num_leaves=2",
    "--set", "model.background_spn.num_sums=2", "--set", "model.inference.lstm_units=16",
    "--set", "model.inference.head_units=8", "--batch-size", "8", "--threads", "1", "--no-progress",
    "--object-size", "3", "8", "--set", "model.variance_scale=1",  # given, so that a failing run's only line on stderr is its error
]
"""Flags of a tiny SuPAIR on 12x12 scenes (a training step takes milliseconds)."""

TIMING = ("train_seconds", "cpu_seconds")  # the only metrics that differ between identical runs


def write_scenes(path: Path, n: int = 40) -> Path:
    """``n`` grey 12x12 scenes with 0 or 1 bright square and their counts, as an .npz (seeded)."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 12, 12), dtype=np.float32)
    counts = rng.integers(0, 2, size=n)
    for i, c in enumerate(counts):
        if c:
            r, col = rng.integers(0, 7, size=2)
            images[i, r : r + 5, col : col + 5] = 0.9
    np.savez(path, images=images, counts=counts)
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")


def supair(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m supair ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "supair", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def supair_killed(kill: str, *args: str) -> subprocess.CompletedProcess:
    """``supair ARGS`` in a forked child process that SIGKILLs itself at ``kill`` (see the module's docstring).

    Returns its exit status (``-9`` once killed), stdout and stderr.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                _install(kill)
                from supair.cli import main

                code = main(list(args))
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["supair", *args], code, out.read().decode(), err.read().decode())


def start_supair(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "supair", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, one line on stderr naming the problem (each of ``words``, case-insensitive), no traceback."""
    err = proc.stderr
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert len(lines) == 1, err
    assert lines[0].startswith("supair"), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a hash of its content (folders: "dir")."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- mounts

def mount_problem() -> str | None:
    """Why a tmpfs cannot be mounted here (None if it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root; these tests run as an ordinary user"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount commands"
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"mounting a tmpfs failed: {probe.stderr.strip()}"
        subprocess.run(["umount", d], check=True)
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "300k") mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, read_only: bool, size: str | None = None) -> None:
    options = f"remount,{'ro' if read_only else 'rw'}" + (f",size={size}" if size else "")
    subprocess.run(["mount", "-o", options, str(path)], check=True)


# ---------------------------------------------------------------- the launcher

def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill: str) -> None:
    """Patch supair so that this process kills itself at the point ``kill`` names."""
    import io

    import supair.train as train
    import torch

    what, _, n = kill.partition(":")
    target = int(n)
    calls = {"n": 0}

    if what == "step":
        real_step = train.Trainer.train_step

        def train_step(self):
            value = real_step(self)
            if self.step == target:
                _die()
            return value

        train.Trainer.train_step = train_step
    elif what == "checkpoint-write":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if not (isinstance(obj, dict) and "optimizer" in obj and "config" in obj):  # not a checkpoint
                return real_save(obj, f, *args, **kwargs)
            calls["n"] += 1
            if calls["n"] != target:
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _die()

        torch.save = save
    elif what in ("checkpoint-rename", "metrics-rename"):
        name = "checkpoint.pt" if what == "checkpoint-rename" else "metrics.jsonl"
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == name:
                calls["n"] += 1
                if calls["n"] == target:
                    _die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown kill point {kill!r}")


if __name__ == "__main__":
    kill, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: supair_faults.py KILL -- ARGS..."
    _install(kill)
    from supair.cli import main

    sys.exit(main(rest))
