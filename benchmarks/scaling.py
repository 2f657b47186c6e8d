"""Data-parallel scaling on one machine: SuPAIR images/s and spnkit.fit samples/s, 1 vs 2 processes.

SuPAIR: the default model (multi-MNIST, 50x50 scenes, 28x28 glimpses, N=3)
trains ``--steps`` steps of a global batch of ``--batch-size`` images with
``supair train`` as one process (2 threads, and 1 thread) and under
``torchrun --nproc_per_node 2`` (1 thread per process, chosen automatically).
Throughput = images of the steps after ``--warmup`` / their training wall time
(the harness's clock, evaluation excluded). The 2-process run must reproduce
the 1-process run: the table gives the largest parameter difference and the
final ELBOs (the point of this benchmark on 2 cores is correctness).

spnkit.fit: a RAT-SPN with Normal leaves on synthetic data, ``em-batch`` and
``adam``, samples/s of the last epoch (``fit``'s own record), 1 process (2
threads) vs 2 processes (``distributed=True``, 1 thread each).

Writes ``benchmarks/results/scaling.csv`` and ``scaling.md`` (atomically), each
starting with the run's context (command, date, CPU, cores, Python and torch
versions), and prints the table. ``OMP_WAIT_POLICY=PASSIVE``; the machine may be
shared: the load average at the start of each run is recorded, repeat with
``--repeats``. ``--from-csv FILE`` rewrites both from a CSV this script wrote.

Usage::

    .venv/bin/python benchmarks/scaling.py --steps 30 --warmup 5 --repeats 2
    .venv/bin/python benchmarks/scaling.py --from-csv benchmarks/results/scaling.csv   # the table again, no runs
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import atomic_write, context, context_lines, csv_text, read_csv

FIELDS = ["task", "setting", "processes", "threads_per_process", "repeat", "throughput", "unit", "load_avg",
          "max_param_diff_vs_1proc", "final_elbo", "seconds"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30, help="SuPAIR training steps per run (default: 30)")
    p.add_argument("--warmup", type=int, default=5, help="steps excluded from the throughput (default: 5)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default: 64; must divide by 2)")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--fit-samples", type=int, default=20000, help="spnkit.fit: synthetic training samples (0 skips fit)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--from-csv", type=Path, metavar="FILE", help="run nothing: rewrite the CSV and the table from a CSV this script wrote")
    p.add_argument("--fit-worker", type=Path, help=argparse.SUPPRESS)  # internal: one fit run, results to this JSON
    args = p.parse_args(argv)
    if args.batch_size % 2 or args.warmup < 1 or args.steps <= args.warmup:
        p.error("need an even --batch-size and 1 <= --warmup < --steps")
    return args


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes: int, target: list[str]) -> list[str]:
    """Command running ``target`` (``-m module ...`` or ``script ...``) in 1 process or under torchrun."""
    if processes == 1:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), *target]


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


# ----------------------------------------------------------------- SuPAIR


def supair_run(args: argparse.Namespace, processes: int, threads: int | None, run_dir: Path) -> dict:
    """Train once; return throughput (images/s after the warm-up), final ELBO and the parameters."""
    import torch

    flags = ["-m", "supair", "train", "--dataset", "multi-mnist", "--train-images", str(args.train_images), "--test-images", "50",
             "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--eval-every", str(args.warmup),
             "--checkpoint-every", str(args.steps), "--no-progress", "--out", str(run_dir)]
    if threads is not None:
        flags += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    _run(_launch(processes, flags))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == args.warmup)
    last = rows[-1]
    images = (last["step"] - first["step"]) * args.batch_size
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {"throughput": images / (last["train_seconds"] - first["train_seconds"]), "final_elbo": last["elbo"],
            "load_avg": load, "seconds": time.perf_counter() - t0, "params": ckpt["model"]}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def bench_supair(args: argparse.Namespace, rows: list[dict]) -> None:
    settings = [("1 process x 2 threads", 1, 2), ("1 process x 1 thread", 1, 1), ("2 processes x 1 thread (torchrun)", 2, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            reference = None
            for name, procs, threads in settings:
                r = supair_run(args, procs, threads, Path(tmp) / f"{repeat}-{procs}-{threads}")
                if reference is None:
                    reference = r["params"]
                rows.append({"task": "supair train", "setting": name, "processes": procs, "threads_per_process": threads or 1,
                             "repeat": repeat, "throughput": round(r["throughput"], 1), "unit": "images/s",
                             "load_avg": round(r["load_avg"], 2), "max_param_diff_vs_1proc": f"{_max_diff(r['params'], reference):.2e}",
                             "final_elbo": round(r["final_elbo"], 4), "seconds": round(r["seconds"], 1)})
                print(_fmt(rows[-1]), flush=True)


# ------------------------------------------------------------ spnkit.fit


def fit_worker(args: argparse.Namespace) -> None:
    """One fit run per method in this process (data-parallel under torchrun); results to ``args.fit_worker``."""
    import torch

    import spnkit
    from spnkit.distributed import init_from_env

    info = init_from_env()
    if info is None:
        torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(args.fit_samples, 64, generator=g) + 2.0 * (torch.rand(args.fit_samples, 1, generator=g) < 0.5)
    out = {}
    for method in ("em-batch", "adam"):
        torch.manual_seed(0)
        rg = spnkit.RegionGraph.random(num_vars=64, depth=3, repetitions=8, seed=0)
        spn = spnkit.SPN(rg, spnkit.Normal(0.05, 4.0), num_sums=8, num_leaves=8)
        history = spnkit.fit(spn, data, method=method, epochs=3, batch_size=1000, lr=0.02, valid_fraction=0.0, progress=False,
                             distributed=info is not None)
        out[method] = {"samples_per_second": history[-1]["samples_per_second"], "train_ll": history[-1]["train_ll"],
                       "params": {k: v.tolist() for k, v in spn.state_dict().items()}}
    if info is None or info.is_main:
        args.fit_worker.write_text(json.dumps(out))


def bench_fit(args: argparse.Namespace, rows: list[dict]) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            results = {}
            for procs in (1, 2):
                path = Path(tmp) / f"fit-{repeat}-{procs}.json"
                load, t0 = os.getloadavg()[0], time.perf_counter()
                _run(_launch(procs, [str(Path(__file__).resolve()), "--fit-worker", str(path), "--fit-samples", str(args.fit_samples)]))
                results[procs] = (json.loads(path.read_text()), load, time.perf_counter() - t0)
            for procs, (res, load, seconds) in results.items():
                for method, r in res.items():
                    ref = {k: torch.tensor(v) for k, v in results[1][0][method]["params"].items()}
                    mine = {k: torch.tensor(v) for k, v in r["params"].items()}
                    setting = f"{procs} process{'es' if procs > 1 else ''} x {2 // procs} thread{'s' if procs == 1 else ''}"
                    rows.append({"task": f"spnkit.fit {method}", "setting": setting,
                                 "processes": procs, "threads_per_process": 2 // procs, "repeat": repeat,
                                 "throughput": round(r["samples_per_second"], 1), "unit": "samples/s", "load_avg": round(load, 2),
                                 "max_param_diff_vs_1proc": f"{_max_diff(mine, ref):.2e}", "final_elbo": round(r["train_ll"], 4),
                                 "seconds": round(seconds, 1)})
                    print(_fmt(rows[-1]), flush=True)


# --------------------------------------------------------------- output


def _fmt(row: dict) -> str:
    return (f"{row['task']:<20} {row['setting']:<36} repeat {row['repeat']}: {row['throughput']:>9} {row['unit']}"
            f"  (load {row['load_avg']}, max |param diff| vs 1 process {row['max_param_diff_vs_1proc']})")


def write_results(args: argparse.Namespace, rows: list[dict], ctx: dict) -> None:
    """``scaling.csv`` (``ctx`` as its header) and ``scaling.md`` under ``--out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "scaling.csv", csv_text(FIELDS, rows, ctx).encode())
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["setting"]), []).append(r)
    lines = [
        "# Data-parallel scaling on one machine (CPU, gloo)",
        "",
        *context_lines(ctx, prefix="- ").splitlines(),
        "",
        "Median of the repeats; the load average at the start of each run is in scaling.csv.",
        "",
        "| task | setting | throughput (median) | runs | max abs param diff vs 1 process | final ELBO / train LL |",
        "|---|---|---|---|---|---|",
    ]
    for (task, setting), rs in groups.items():
        med = statistics.median(float(r["throughput"]) for r in rs)
        runs = ", ".join(str(r["throughput"]) for r in rs)
        diffs = max(rs, key=lambda r: float(r["max_param_diff_vs_1proc"]))["max_param_diff_vs_1proc"]
        lines.append(f"| {task} | {setting} | {med:.1f} {rs[0]['unit']} | {runs} | {diffs} | {rs[-1]['final_elbo']} |")
    atomic_write(args.out / "scaling.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fit_worker is not None:
        fit_worker(args)
        return 0
    if args.from_csv is not None:
        ctx, rows = read_csv(args.from_csv)
        write_results(args, rows, ctx)
        return 0
    ctx = context(argv=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    ctx["threads"] = "per row (threads_per_process)"
    rows: list[dict] = []
    bench_supair(args, rows)
    if args.fit_samples > 0:
        bench_fit(args, rows)
    write_results(args, rows, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
