"""Data-parallel SuPAIR training under torchrun (two CPU processes, gloo, 127.0.0.1).

In-process tests check the pieces (shards of the global batch get the noise
of a single process; bad batch sizes; refused random operations). One torchrun
launch of this file (``--worker``) trains a tiny SuPAIR in two processes, saves
each rank's parameters at a checkpoint, and kills itself (SIGKILL, rank 0)
after an evaluation that follows that checkpoint; a second launch resumes the
run through the real command line (``torchrun -m supair train --resume``).
A single process trained in this process on the same global batches is the
reference.

Why the comparison with one process can be tight: every process draws the
z_where noise of the whole global batch from the same generator state and
keeps its rows (apps/supair/distributed.py), so image ``i`` gets the same noise
under 1 or 2 processes; what remains is float32 summation order in the
gradient mean (about 1e-7 relative per step).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the worker runs as a script

from supair.checkpoint import build_model, load_checkpoint  # noqa: E402
from supair.cli import build_parser, config_from_args, main  # noqa: E402
from supair.distributed import DataParallel, GlobalBatchNoise, shard_loss  # noqa: E402
from supair.model import Supair  # noqa: E402
from supair.train import Trainer  # noqa: E402

from spnkit.distributed import DistInfo  # noqa: E402

WORLD = 2
DUMP_AT, KILL_AT, STEPS = 4, 5, 7  # checkpoint (and parameter dump) at 4, killed after evaluating 5, resumed to 7


def _write_data(path: Path) -> None:
    """80 grey 12x12 scenes with 0-2 bright squares, their counts and boxes (seeded)."""
    rng = np.random.default_rng(0)
    n, S = 80, 12
    images = (rng.random((n, S, S)) * 50).astype(np.uint8)
    counts = rng.integers(0, 3, n)
    boxes = np.zeros((n, 2, 4), np.float32)
    for i in range(n):
        for j in range(counts[i]):
            x0, y0 = rng.integers(0, 7, 2)
            images[i, y0 : y0 + 5, x0 : x0 + 5] = 230
            boxes[i, j] = [x0, y0, x0 + 5, y0 + 5]
    np.savez(path, images=images, counts=counts, boxes=boxes)


def _args(data: Path, steps: int) -> list[str]:
    """``supair train`` flags of the tiny run (global batch 8: 4 images per process)."""
    tiny = {
        "model.scene_size": 12, "model.object_spn.depth": 1, "model.object_spn.repetitions": 2, "model.object_spn.num_leaves": 3,
        "model.object_spn.num_sums": 2, "model.background_spn.depth": 1, "model.background_spn.repetitions": 2,
        "model.background_spn.num_leaves": 2, "model.background_spn.num_sums": 2, "model.inference.lstm_units": 16,
        "model.inference.head_units": 8, "train.learning_rate": 0.003,
    }
    args = ["train", "--data", str(data), "--steps", str(steps), "--batch-size", "8", "--eval-every", "1", "--checkpoint-every", str(DUMP_AT),
            "--test-images", "9", "--glimpse-size", "6", "--max-steps", "2", "--threads", "1", "--no-progress"]
    for key, value in tiny.items():
        args += ["--set", f"{key}={value}"]
    return args


# ------------------------------------------------------------------ worker


def _worker(data: Path, run_dir: Path, dumps: Path) -> None:
    """Train in this torchrun process; dump parameters at DUMP_AT; rank 0 dies (SIGKILL) after evaluating KILL_AT."""
    from supair.distributed import init_from_env

    dist = init_from_env("cpu")
    assert dist is not None and dist.world_size == WORLD, "start with torchrun --nproc_per_node 2"
    cfg = config_from_args(build_parser().parse_args(_args(data, STEPS)))

    class Killed(Trainer):
        def checkpoint(self) -> None:
            super().checkpoint()
            if self.step == DUMP_AT:
                torch.save(self.model.state_dict(), dumps / f"rank{dist.rank}.pt")

        def evaluate(self) -> dict:
            row = super().evaluate()
            if self.step == KILL_AT and dist.is_main:
                os.kill(os.getpid(), signal.SIGKILL)  # a crash between checkpoints, after a metrics row
            return row

    Killed(cfg, run_dir, dist=dist, progress=False, log=lambda m: None).run()


# ------------------------------------------------------------------- tests

import pytest  # noqa: E402  (the worker above runs without pytest)

F64 = torch.float64


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
           "--master_port", str(port), *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("supair_ddp")
    data, dumps = tmp / "tiny.npz", tmp / "dumps"
    dumps.mkdir()
    _write_data(data)
    # two processes, killed after step KILL_AT
    killed = _torchrun(str(Path(__file__).resolve()), "--worker", str(data), str(tmp / "ddp"), str(dumps))
    assert killed.returncode != 0, "the worker should have been killed"
    rows_at_kill = [json.loads(line)["step"] for line in (tmp / "ddp" / "metrics.jsonl").read_text().splitlines()]
    step_at_kill = load_checkpoint(tmp / "ddp")["step"]
    # resumed with the real command line under torchrun
    resumed = _torchrun("-m", "supair", *_args(data, STEPS), "--resume", str(tmp / "ddp"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # the reference: one process, same flags, in this process
    torch.set_num_threads(1)
    assert main([*_args(data, DUMP_AT), "--out", str(tmp / "single4")]) == 0
    assert main([*_args(data, STEPS), "--out", str(tmp / "single")]) == 0
    return {"tmp": tmp, "rows_at_kill": rows_at_kill, "step_at_kill": step_at_kill, "resume_out": resumed.stdout}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_the_kill_happened_between_checkpoint_and_end(runs: dict) -> None:
    assert runs["step_at_kill"] == DUMP_AT
    assert runs["rows_at_kill"] == list(range(1, KILL_AT + 1))  # rows after the checkpoint exist at the kill


def test_parameters_identical_on_both_processes(runs: dict) -> None:
    a, b = (torch.load(runs["tmp"] / "dumps" / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_processes_equal_one_process_on_the_same_global_batches(runs: dict) -> None:
    ddp = torch.load(runs["tmp"] / "dumps" / "rank0.pt", weights_only=True)
    single = load_checkpoint(runs["tmp"] / "single4")["model"]
    start = Supair(config_from_args(build_parser().parse_args(_args(Path("x.npz"), 1))).model, seed=0)
    assert _max_diff(ddp, single) < 2e-5
    assert _max_diff(ddp, start.state_dict()) > 100 * 2e-5  # training moved the parameters far more than that


def test_resumed_run_has_each_step_once_and_the_single_process_metrics(runs: dict) -> None:
    got, want = _metrics(runs["tmp"] / "ddp"), _metrics(runs["tmp"] / "single")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert load_checkpoint(runs["tmp"] / "ddp")["step"] == STEPS
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in ("elbo", "iou", "count_accuracy", "mean_count"):
            if w[key] is None:  # unknown (e.g. no box counted right)
                assert g[key] is None, (g["step"], key)
            else:
                assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-4), (g["step"], key)
    assert "run folder" in runs["resume_out"]  # rank 0 printed the summary ...
    assert runs["resume_out"].count("run folder") == 1  # ... and only rank 0


def test_resumed_parameters_equal_the_single_process_run(runs: dict) -> None:
    ddp = load_checkpoint(runs["tmp"] / "ddp")
    single = load_checkpoint(runs["tmp"] / "single")
    assert _max_diff(ddp["model"], single["model"]) < 5e-5
    assert torch.equal(ddp["torch_rng"], single["torch_rng"]) and torch.equal(ddp["batch_rng"], single["batch_rng"])


# ------------------------------------------------ pieces, in this process


def _tiny_model(model_type: str = "supair") -> torch.nn.Module:
    air = ["--model", "air", "--set", "model.air.z_what_size=3", "--set", "model.air.encoder_units=8", "--set", "model.air.decoder_units=8",
           "--set", "model.air.predict_units=8", "--set", "model.air.baseline_units=8"] if model_type == "air" else []
    cfg = config_from_args(build_parser().parse_args(_args(Path("x.npz"), 1) + air))
    torch.manual_seed(0)
    return build_model(cfg).double()


@pytest.mark.parametrize("model_type", ["supair", "air"])
def test_shards_get_the_single_process_noise(model_type: str) -> None:
    """Two shards' losses, each from the same generator state, average to the whole batch's loss (and gradient)."""
    model = _tiny_model(model_type)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.manual_seed(5)
    whole = model.loss(x)[0]
    grad_whole = torch.autograd.grad(whole, list(model.parameters()))
    parts = []
    for r in range(2):
        torch.manual_seed(5)
        parts.append(shard_loss(model, x[3 * r : 3 * r + 3], slice(3 * r, 3 * r + 3), 6)[0])
    mean = (parts[0] + parts[1]) / 2
    grad_mean = torch.autograd.grad(mean, list(model.parameters()))
    assert torch.allclose(mean, whole, rtol=1e-12)
    for g, h in zip(grad_mean, grad_whole):
        assert torch.allclose(g, h, rtol=1e-9, atol=1e-12)
    torch.manual_seed(6)  # a different draw gives a different loss: the noise matters
    assert not torch.allclose(model.loss(x)[0], whole, rtol=1e-6)


def test_whole_batch_shard_equals_the_loss() -> None:
    model = _tiny_model()
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.manual_seed(9)
    want = model.loss(x)[0]
    state = torch.get_rng_state()
    torch.manual_seed(9)
    assert torch.equal(shard_loss(model, x, slice(0, 4), 4)[0], want)
    assert torch.equal(torch.get_rng_state(), state)  # the generator advanced exactly as in one process


def test_noise_mode_refuses_unmatched_draws() -> None:
    with GlobalBatchNoise(slice(2, 4), 4):
        with pytest.raises(RuntimeError, match="bernoulli"):
            torch.bernoulli(torch.full((2, 3), 0.5))
        with pytest.raises(RuntimeError, match="batch-first"):
            torch.randn_like(torch.zeros(3, 2))
        assert torch.randn_like(torch.zeros(2, 5)).shape == (2, 5)


def test_global_batch_must_divide_by_the_processes() -> None:
    dp = DataParallel(DistInfo(rank=1, world_size=3, local_rank=1, device="cpu", backend="gloo"))
    assert dp.per_process_batch(12) == 4
    with pytest.raises(ValueError, match="divisible"):
        dp.per_process_batch(8)
    assert dp.shard(torch.arange(12)).tolist() == [4, 5, 6, 7]


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "--worker":
        sys.exit("usage: torchrun --nproc_per_node 2 tests/supair/test_distributed.py --worker DATA RUN_DIR DUMP_DIR")
    _worker(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
