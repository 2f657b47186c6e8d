"""Fault injection on training runs: kills, concurrent trainers, a full and a read-only disk, damaged and stale files.

A command whose exit status and stderr are checked runs in a fresh interpreter
(``python -m supair``); a run killed at a chosen point is a child process forked
from this one (``supair_faults.supair_killed``); runs that only set the stage
or finish a run run in this process.
"""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from supair.checkpoint import content_digest, load_checkpoint
from supair.cli import main
from supair.rundir import RunLock
from supair_faults import (
    TIMING,
    TINY,
    assert_one_line_error,
    mount_problem,
    remount,
    snapshot,
    start_supair,
    supair,
    supair_killed,
    tmpfs,
    write_scenes,
)

pytestmark = pytest.mark.fault

STEPS = 12
FLAGS = ["--steps", str(STEPS), "--eval-every", "2", "--checkpoint-every", "3", *TINY]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def scenes(work: Path) -> Path:
    return write_scenes(work / "scenes.npz")


@pytest.fixture(scope="module")
def reference(work: Path, scenes: Path) -> Path:
    """The uninterrupted run (in this process)."""
    run = work / "reference"
    assert main(["train", "--data", str(scenes), "--out", str(run), *FLAGS]) == 0
    return run


@pytest.fixture
def finished(reference: Path, tmp_path: Path) -> Path:
    """A copy of the finished reference run."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in (run / "metrics.jsonl").read_text().splitlines()]


def _temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for index, entry in a["optimizer"]["state"].items():
        for field, value in entry.items():
            assert torch.equal(value, b["optimizer"]["state"][index][field]), (index, field)
    assert torch.equal(a["batch_rng"], b["batch_rng"]) and torch.equal(a["torch_rng"], b["torch_rng"])


def test_runs_killed_anywhere_resume_to_the_uninterrupted_result(work: Path, scenes: Path, reference: Path) -> None:
    """SIGKILL after a step, in the middle of a checkpoint write, before a checkpoint's and a metrics file's rename."""
    run = work / "killed"
    first = random.Random(7).randrange(4, STEPS)  # any step after the first checkpoint (step 3)
    kills = [f"step:{first}", "checkpoint-write:1", "metrics-rename:1", "checkpoint-rename:1"]
    for i, kill in enumerate(kills):
        args = ["train", "--data", str(scenes), "--out", str(run), *FLAGS] if i == 0 else ["train", "--resume", str(run), "--no-progress"]
        proc = supair_killed(kill, *args)
        assert proc.returncode == -9, (kill, proc.stderr[-2000:])
        ckpt = load_checkpoint(run)  # whatever the moment, the checkpoint on disk is whole
        assert ckpt["step"] % 3 == 0
        _rows(run)  # and every metrics line parses
        if kill == "checkpoint-write:1":
            assert _temporaries(run), "the torn checkpoint write leaves its temporary file"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _temporaries(run) == []
    _assert_same_state(load_checkpoint(run), load_checkpoint(reference))
    assert _rows(run) == _rows(reference)
    assert [r["step"] for r in _rows(run)] == list(range(2, STEPS + 1, 2))


def test_a_held_run_folder_is_refused_with_the_holders_pid(finished: Path) -> None:
    import os

    before = snapshot(finished)
    with RunLock(finished):
        proc = supair("train", "--resume", str(finished), "--steps", "20", "--no-progress")
        assert_one_line_error(proc, "in use", f"process {os.getpid()}")
        with pytest.raises(ValueError, match="in use"):
            RunLock(finished)
    assert snapshot(finished) == before
    RunLock(finished).release()  # free again


def _race(*commands: list[str]) -> list:
    procs = [start_supair(*cmd) for cmd in commands]
    outputs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def _assert_one_won(results: list) -> None:
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert "Traceback" not in loser and len(loser.strip().splitlines()) == 1, loser
    assert any(w in loser for w in ("in use", "already holds a run", "not empty")), loser


def test_trainers_started_together_on_one_folder_do_not_mix(scenes: Path, tmp_path: Path) -> None:
    run = tmp_path / "sweep"
    new = ["train", "--data", str(scenes), "--out", str(run), "--steps", "20", "--eval-every", "5", "--checkpoint-every", "5", *TINY]
    _assert_one_won(_race(new, new))
    assert [r["step"] for r in _rows(run)] == [5, 10, 15, 20]
    assert load_checkpoint(run)["step"] == 20


# ------------------------------------------------------------ disks

@pytest.fixture(scope="module")
def mounting() -> None:
    problem = mount_problem()
    if problem:
        pytest.skip(f"needs a tmpfs: {problem}")


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(mounting, scenes: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "200k") as disk:  # room for one tiny checkpoint (~140 kB), not for a second beside it
        run = disk / "run"
        proc = supair("train", "--data", str(scenes), "--out", str(run), "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2", *TINY)
        line = assert_one_line_error(proc, "cannot write", "checkpoint.pt", "no space left")
        assert "unexpected pos" not in line
        assert _temporaries(run) == []
        assert load_checkpoint(run)["step"] == 2
        assert [r["step"] for r in _rows(run)] == [2, 4]
        remount(disk, read_only=False, size="2m")
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
        assert load_checkpoint(run)["step"] == 4
        assert [r["step"] for r in _rows(run)] == [2, 4]


def test_a_read_only_folder_is_named_before_anything_runs(mounting, finished: Path, scenes: Path, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(image)
    with tmpfs(tmp_path / "ro", "2m") as disk:
        shutil.copytree(finished, disk / "run")
        remount(disk, read_only=True)
        before = snapshot(disk)
        cases = [
            (["train", "--resume", str(disk / "run"), "--steps", "20", "--no-progress"], "read-only"),
            (["train", "--data", str(scenes), "--out", str(disk / "new"), "--steps", "1", *TINY], "read-only"),
            (["detect", str(disk / "run"), str(image), "--out", str(disk / "drawings")], "read-only"),
            (["show", str(disk / "run")], "read-only"),
        ]
        for args, word in cases:
            assert_one_line_error(supair(*args), word)
        assert snapshot(disk) == before


# ------------------------------------------------------------ damaged checkpoints

def _data_start(path: Path, member_suffix: str) -> tuple[int, int]:
    """Offset and size of the stored bytes of the largest zip member whose name ends in ``member_suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if i.filename.rsplit("/", 2)[-2:-1] == [member_suffix]), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _damage(run: Path, how: str) -> None:
    path = run / "checkpoint.pt"
    if how == "flipped":  # 64 bytes inside a weight tensor
        start, size = _data_start(path, "data")
        raw = bytearray(path.read_bytes())
        mid = start + size // 2
        raw[mid : mid + 64] = bytes(b ^ 0xFF for b in raw[mid : mid + 64])
        path.write_bytes(bytes(raw))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        ckpt = load_checkpoint(path)
        if how == "nan":  # a diverged run, written with a consistent digest
            name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
            ckpt["model"][name] = ckpt["model"][name].clone().fill_(float("nan"))
            ckpt["sha256"] = content_digest(ckpt)
        elif how == "edited":  # a tensor changed, the zip re-written: CRCs fine, digest not
            name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
            ckpt["model"][name] = ckpt["model"][name] + 1
        elif how == "newer":
            ckpt["format"] = 3
        torch.save(ckpt, path)


DAMAGE = {
    "flipped": ("damaged", "crc"),
    "truncated": ("truncated",),
    "nan": ("nan or infinite", "model tensor"),
    "edited": ("damaged", "sha-256"),
    "newer": ("newer version", "format 3"),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_checkpoints_are_refused_by_resume_and_detect(finished: Path, tmp_path: Path, how: str, capsys) -> None:
    """``train --resume`` runs as a subprocess; ``detect``, the same reader, in this process (one torch start fewer)."""
    import numpy as np
    from PIL import Image

    _damage(finished, how)
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(image)
    before = snapshot(finished)
    assert_one_line_error(supair("train", "--resume", str(finished), "--steps", "20", "--no-progress"), *DAMAGE[how])
    capsys.readouterr()
    assert main(["detect", str(finished), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err.lower() for w in DAMAGE[how]), err
    assert snapshot(finished) == before


def test_format_1_checkpoints_still_load(finished: Path) -> None:
    ckpt = load_checkpoint(finished)
    del ckpt["sha256"]
    ckpt["format"] = 1
    torch.save(ckpt, finished / "checkpoint.pt")
    assert load_checkpoint(finished)["step"] == STEPS


# ------------------------------------------------------------ stale files, finished and failed resumes

def test_a_run_killed_before_its_first_checkpoint_needs_overwrite(scenes: Path, tmp_path: Path) -> None:
    run = tmp_path / "early"
    flags = ["--steps", "6", "--eval-every", "1", "--checkpoint-every", "100", *TINY]
    proc = supair_killed("step:3", "train", "--data", str(scenes), "--out", str(run), *flags)
    assert proc.returncode == -9
    assert [r["step"] for r in _rows(run)] == [1, 2]  # rows of a run that has no checkpoint
    before = snapshot(run)
    assert_one_line_error(supair("train", "--data", str(scenes), "--out", str(run), *flags), "not empty", "--overwrite")
    assert_one_line_error(supair("train", "--resume", str(run), "--no-progress"), "no checkpoint", "--overwrite")
    assert snapshot(run) == before
    assert main(["train", "--data", str(scenes), "--out", str(run), "--overwrite", *flags]) == 0
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4, 5, 6]  # the old rows are gone


def test_a_finished_run_resumed_without_a_larger_budget_does_nothing(finished: Path) -> None:
    before = snapshot(finished)
    proc = supair("train", "--resume", str(finished), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stderr and "nothing" in proc.stdout
    assert snapshot(finished) == before


def test_a_failed_resume_leaves_the_run_as_it_was_and_the_next_start_removes_stale_temporaries(finished: Path) -> None:
    (finished / ".checkpoint.pt.4194999.x1y2z3.tmp").write_bytes(b"torn" * 1000)  # a writer that no longer runs
    (finished / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"older naming")
    (finished / ".metrics.jsonl.4194999.q.tmp").write_bytes(b"{")
    before = snapshot(finished)
    assert_one_line_error(supair("train", "--resume", str(finished), "--steps", "20", "--max-steps", "3", "--no-progress"),
                          "another model config")
    assert snapshot(finished) == before
    assert main(["train", "--resume", str(finished), "--steps", str(STEPS + 2), "--no-progress"]) == 0
    assert json.loads((finished / "config.json").read_text())["train"]["steps"] == STEPS + 2
    assert _temporaries(finished) == []


def test_config_json_must_agree_with_the_checkpoint(finished: Path) -> None:
    config = json.loads((finished / "config.json").read_text())
    del config["train"]
    (finished / "config.json").write_text(json.dumps(config))
    before = snapshot(finished)
    line = assert_one_line_error(supair("train", "--resume", str(finished), "--steps", "20", "--no-progress"), "disagrees", "train.")
    assert "missing in config.json" in line
    assert snapshot(finished) == before
    (finished / "config.json").unlink()  # a deleted copy is written anew from the checkpoint
    assert main(["train", "--resume", str(finished), "--steps", str(STEPS + 1), "--no-progress"]) == 0
    assert json.loads((finished / "config.json").read_text())["train"]["batch_size"] == 8
