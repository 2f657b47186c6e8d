"""Data-parallel spnkit.fit and EM under torchrun (two CPU processes, gloo, 127.0.0.1).

One torchrun launch (this file run as a script, ``--worker``) trains every
scenario in two processes and saves each rank's parameters; the tests compare
them with each other (bit-identical replicas) and with one process trained on
the same data in this process (float64; tolerances cover summation order only).

Seed policy: data, circuit initialization and shuffling are seeded identically
in every process and in the reference.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import spnkit
from spnkit.distributed import rank_slice
from spnkit.learn import expected_counts, fit, m_step

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64
WORLD = 2
FIT_SCENARIOS = {  # name: fit keyword arguments
    "em-batch": dict(method="em-batch", epochs=3, batch_size=37),
    "em": dict(method="em", epochs=2, batch_size=40, step_size=0.3),
    "adam": dict(method="adam", epochs=2, batch_size=33, lr=0.05),
    "adam-valid": dict(method="adam", epochs=2, batch_size=50, lr=0.05, valid_fraction=0.25, patience=1),
    "adam-classes": dict(method="adam", epochs=2, batch_size=45, lr=0.05, valid_fraction=0.2, objective="discriminative"),
    "em-classes": dict(method="em", epochs=2, batch_size=45, step_size=0.5, valid_fraction=0.2),
}
MANUAL_ITERATIONS = 3
KEPT = ("train_ll", "valid_ll", "steps", "train_acc", "valid_acc")


def _data() -> torch.Tensor:
    """``(240, 8)`` float64 samples from two clusters (seeded)."""
    return _clusters()[0]


def _clusters() -> tuple[torch.Tensor, torch.Tensor]:
    """The samples and their cluster labels ``(240,)``."""
    g = torch.Generator().manual_seed(7)
    z = (torch.rand(240, 1, generator=g, dtype=F64) < 0.4).to(F64)
    return torch.randn(240, 8, generator=g, dtype=F64) * 0.7 + 1.5 * z, z[:, 0].long()


def _circuit(num_classes: int = 1) -> spnkit.SPN:
    """The same float64 circuit in every process, whatever the default dtype (the test suite's is float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        torch.manual_seed(3)
        rg = spnkit.RegionGraph.random(num_vars=8, depth=2, repetitions=2, seed=1)
        return spnkit.SPN(rg, spnkit.Normal(0.05, 4.0), num_sums=3, num_leaves=3, num_classes=num_classes)
    finally:
        torch.set_default_dtype(previous)


def _fit(name: str, distributed: bool) -> tuple[spnkit.SPN, list[dict]]:
    classes = name.endswith("classes")
    spn = _circuit(2 if classes else 1)
    x, y = _clusters()
    kwargs = dict(valid_fraction=0.0, progress=False, seed=5, labels=y if classes else None)
    kwargs.update(FIT_SCENARIOS[name])
    history = fit(spn, x, distributed=distributed, **kwargs)
    return spn, history


def _manual_em(shard: torch.Tensor, reduce) -> spnkit.SPN:
    """Batch EM by hand: counts of ``shard`` (reduced by ``reduce``), then the exact M-step."""
    spn = _circuit()
    for _ in range(MANUAL_ITERATIONS):
        m_step(spn, reduce(expected_counts(spn, shard)))
    return spn


# ------------------------------------------------------------------ worker


def _worker(out: Path) -> None:
    """Run every scenario in this torchrun process; save parameters and histories."""
    from spnkit.distributed import all_reduce_counts, init_from_env

    info = init_from_env()
    assert info is not None and info.world_size == WORLD, "start with torchrun --nproc_per_node 2"
    torch.set_num_threads(1)
    r = info.rank
    results: dict = {}
    for name in FIT_SCENARIOS:
        spn, history = _fit(name, distributed=True)
        torch.save(spn.state_dict(), out / f"{name}.rank{r}.pt")
        results[name] = [{k: v for k, v in rec.items() if k in KEPT} for rec in history]
    # each process holds ONLY its own shard of the data
    shard = _data()[rank_slice(240, r, WORLD)]
    torch.save(_manual_em(shard, all_reduce_counts).state_dict(), out / f"manual.rank{r}.pt")
    # processes given different data must all refuse, not hang
    try:
        fit(_circuit(), _data()[: 200 + 10 * r], method="em-batch", epochs=1, valid_fraction=0.0, progress=False, distributed=True)
        results["mismatch"] = "no error"
    except ValueError as err:
        results["mismatch"] = str(err)
    (out / f"history.rank{r}.json").write_text(json.dumps(results))


# ------------------------------------------------------------------- tests


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


import pytest  # noqa: E402  (the worker above runs without pytest)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spnkit_ddp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).resolve()), "--worker", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _load(out: Path, name: str, rank: int) -> dict:
    return torch.load(out / f"{name}.rank{rank}.pt", weights_only=True)


def _assert_close(got: dict, want: dict, rtol: float = 1e-9, atol: float = 1e-11) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("name", [*FIT_SCENARIOS, "manual"])
def test_replicas_are_identical(runs: Path, name: str) -> None:
    a, b = _load(runs, name, 0), _load(runs, name, 1)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs between the two processes"


@pytest.mark.parametrize("name", list(FIT_SCENARIOS))
def test_fit_equals_single_process(runs: Path, name: str) -> None:
    spn, history = _fit(name, distributed=False)
    _assert_close(_load(runs, name, 0), spn.state_dict())
    got = json.loads((runs / "history.rank0.json").read_text())[name]
    assert [rec["steps"] for rec in got] == [rec["steps"] for rec in history]
    for g, h in zip(got, history):
        assert g.keys() == {k for k in h if k in KEPT}
        assert abs(g["train_ll"] - h["train_ll"]) <= 1e-9 * abs(h["train_ll"])
        assert (g["valid_ll"] is None) == (h["valid_ll"] is None)
        if h["valid_ll"] is not None:
            assert abs(g["valid_ll"] - h["valid_ll"]) <= 1e-9 * abs(h["valid_ll"])
        for key in ("train_acc", "valid_acc"):
            assert g.get(key) == h.get(key), key  # counts of correct predictions: exact


def test_fit_moved_the_parameters(runs: Path) -> None:
    """The comparison above is not vacuous: training changed every scenario's parameters."""
    for name in FIT_SCENARIOS:
        start = _circuit(2 if name.endswith("classes") else 1).state_dict()
        got = _load(runs, name, 0)
        assert any(not torch.allclose(got[k], start[k]) for k in start), name


def test_sharded_batch_em_equals_em_on_the_union(runs: Path) -> None:
    """Two processes holding disjoint shards, counts all-reduced: single-process batch EM on all the data."""
    want = _manual_em(_data(), lambda c: c).state_dict()
    _assert_close(_load(runs, "manual", 0), want)
    # ... and not what EM on one shard alone would give
    alone = _manual_em(_data()[rank_slice(240, 0, WORLD)], lambda c: c).state_dict()
    assert any(not torch.allclose(alone[k], want[k], rtol=1e-6) for k in want)


def test_different_data_refused_by_every_process(runs: Path) -> None:
    for r in range(WORLD):
        msg = json.loads((runs / f"history.rank{r}.json").read_text())["mismatch"]
        assert "every process must pass the same" in msg


def test_rank_slice_covers_the_batch() -> None:
    for n in (0, 1, 5, 37):
        for w in (1, 2, 3, 8):
            parts = [rank_slice(n, r, w) for r in range(w)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_distributed_fit_without_a_group_is_a_clear_error(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        fit(_circuit(), _data(), epochs=1, progress=False, distributed=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: torchrun --nproc_per_node 2 tests/spnkit/test_distributed_fit.py --worker OUT_DIR")
    _worker(Path(sys.argv[2]))
