"""supair.rundir and supair.files: the run folder's lock and checks, atomic writes and their temporaries."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from supair.config import SupairConfig
from supair.files import atomic_write, check_writable, describe_os_error, remove_stale_temporaries, temporaries_of
from supair.rundir import RunLock, check_config_json, check_new_run, check_resumable, default_run_dir

HOLD = "import sys, time; from supair.rundir import RunLock; lock = RunLock(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_the_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use: process {holder.pid} is training in it"):
            RunLock(tmp_path)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no cleanup runs
        holder.wait()
    with RunLock(tmp_path) as lock:  # the kernel released it: no stale lock
        assert lock.held
        with pytest.raises(ValueError, match="this process"):
            RunLock(tmp_path)
    assert not lock.held
    RunLock(tmp_path).release()
    assert sorted(os.listdir(tmp_path)) == []  # locking writes nothing


def test_an_unreferenced_lock_is_released() -> None:
    import gc
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        RunLock(d)
        gc.collect()
        RunLock(d).release()


def test_default_run_names_differ_within_one_second() -> None:
    names = {default_run_dir("multi-mnist", "supair") for _ in range(50)}
    assert len(names) == 50
    assert all(n.parent == Path("runs") and n.name.startswith("multi-mnist-supair-") for n in names)


def test_new_run_checks(tmp_path: Path) -> None:
    check_new_run(tmp_path / "fresh")
    check_new_run(tmp_path)  # empty
    (tmp_path / "metrics.jsonl").write_text('{"step": 5}\n')
    with pytest.raises(ValueError, match="not empty.*stopped before its first checkpoint.*--overwrite"):
        check_new_run(tmp_path)
    check_new_run(tmp_path, overwrite=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds a run"):
        check_new_run(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        check_new_run(tmp_path / "metrics.jsonl")
    assert not (tmp_path / "fresh").exists()


def test_resume_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such run folder"):
        check_resumable(tmp_path / "x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no checkpoint to resume.*--overwrite"):
        check_resumable(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04cut")
    with pytest.raises(ValueError, match="truncated"):
        check_resumable(tmp_path)


def test_config_json_is_compared_with_the_checkpoint(tmp_path: Path) -> None:
    saved = SupairConfig.preset("sprites")
    path = tmp_path / "config.json"
    check_config_json(path, saved.to_dict(), saved)  # missing: fine
    path.write_text(saved.to_json())
    check_config_json(path, saved.to_dict(), saved)
    longer = saved.replace(**{"train.steps": 50})
    path.write_text(longer.to_json())
    check_config_json(path, saved.to_dict(), longer)  # the resumed configuration, written before its first checkpoint
    with pytest.raises(ValueError, match=r"train\.steps \(50 in config.json, null in the checkpoint\)"):
        check_config_json(path, saved.to_dict(), saved)
    edited = json.loads(saved.to_json())
    del edited["train"]
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"train\.batch_size \(missing in config.json, 256 in the checkpoint\).* more"):
        check_config_json(path, saved.to_dict(), saved)
    path.write_text('{"train": {"batch_size": 16.5}}')
    with pytest.raises(ValueError, match="train.batch_size must be an integer"):
        check_config_json(path, saved.to_dict(), saved)


# ------------------------------------------------------------------ files

def test_a_full_disk_inside_a_library_writer_is_reported_as_the_os_error(tmp_path: Path, monkeypatch) -> None:
    import supair.files as files

    class FullDisk:
        """A file that takes 100 bytes, then fails as a full disk does."""

        def __init__(self, fh) -> None:
            self.fh, self.room = fh, 100

        def write(self, data) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.fh.write(data)

        def __getattr__(self, name: str):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode, buffering=0)))
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as err:
        atomic_write(target, lambda fh: torch.save({"x": torch.zeros(1000)}, fh))  # torch reports "unexpected pos"
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert describe_os_error(err.value) == f"cannot write {target}: no space left on device (free some space, then run the command again)"
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_are_those_of_dead_writers(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f".checkpoint.pt.{os.getpid()}.aaa.tmp"
    theirs = tmp_path / f".checkpoint.pt.{dead.pid}.bbb.tmp"
    unknown = tmp_path / ".checkpoint.pt.zzz.tmp"
    other = tmp_path / f".metrics.jsonl.{dead.pid}.ccc.tmp"
    for p in (mine, theirs, unknown, other):
        p.write_bytes(b"x")
    assert sorted(temporaries_of(target)) == sorted([mine, theirs, unknown])
    assert remove_stale_temporaries(target) == [theirs]
    assert sorted(remove_stale_temporaries(target, all_of_them=True)) == sorted([mine, unknown])
    assert sorted(os.listdir(tmp_path)) == [other.name]
    atomic_write(target, b"data")
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.pt", other.name])


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b", "--out")
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        check_writable(tmp_path / "f" / "sub", "--out")
    if os.geteuid() != 0:  # root writes to read-only folders: tests/supair/test_fault_runs.py mounts one
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        try:
            with pytest.raises(ValueError, match="permission denied"):
                check_writable(ro / "run", "--out")
        finally:
            os.chmod(ro, 0o700)
