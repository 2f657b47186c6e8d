"""Stochastic EM against Adam: validation log-likelihood over wall-clock training time.

The same RAT-SPN (same structure, same initial parameters) is trained on
dequantized MNIST by each method for the same time budget; every
``--eval-every`` seconds of training, the validation log-likelihood is computed
(its time is excluded from the training clock). Writes
``benchmarks/results/em_vs_adam.csv`` (the run's context as ``# key: value``
lines, then one row per evaluation), ``em_vs_adam.md`` (the context and the
validation bits/dim at fixed training times) and ``em_vs_adam.png``.
``--from-csv FILE`` rewrites all three from such a CSV without training.

Timing: fixed ``--threads`` (default 2) and ``OMP_WAIT_POLICY=PASSIVE`` (set
before torch is imported); one run per method, no repetitions (the machine may
be shared: compare curves, not single digits).

Usage::

    .venv/bin/python benchmarks/em_vs_adam.py --seconds 120 --subset 10000
    .venv/bin/python benchmarks/em_vs_adam.py --from-csv benchmarks/results/em_vs_adam.csv   # reports only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import io
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import atomic_write, context, context_lines, csv_text, read_csv

import spnkit
from spnkit.datasets import bits_per_dim, dequantize, load_mnist
from spnkit.learn import evaluate, fit

D = 784


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="training time per method (default: 120)")
    p.add_argument("--eval-every", type=float, default=5.0, help="seconds of training between evaluations (default: 5)")
    p.add_argument("--subset", type=int, default=10000, help="training digits (default: 10000)")
    p.add_argument("--valid", type=int, default=2000, help="validation digits (default: 2000)")
    p.add_argument("--methods", nargs="+", default=["adam", "em"], choices=["adam", "em", "em-batch"])
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--repetitions", type=int, default=10)
    p.add_argument("--sums", type=int, default=10)
    p.add_argument("--leaves", type=int, default=10)
    p.add_argument("--min-var", type=float, default=1e-6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default: 0.02)")
    p.add_argument("--step-size", type=float, default=0.05, help="stochastic EM step size (default: 0.05)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--from-csv", type=Path, metavar="FILE", help="train nothing: rewrite the CSV, table and figure from a CSV this script wrote")
    return p.parse_args(argv)


FIELDS = ["method", "train_seconds", "step", "epoch", "valid_ll", "valid_bits_per_dim"]
MARKS = (10, 20, 30, 40, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)


def run_method(spn: spnkit.SPN, method: str, train: torch.Tensor, valid: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """Train ``spn`` with ``method`` for ``args.seconds``; return the evaluation points."""
    points: list[dict] = []
    clock = {"eval": 0.0, "next": 0.0}
    start = time.perf_counter()

    def record(step: int, epoch: int) -> None:
        t0 = time.perf_counter()
        ll, _ = evaluate(spn, valid)
        train_seconds = t0 - start - clock["eval"]
        clock["eval"] += time.perf_counter() - t0
        points.append({"method": method, "train_seconds": round(train_seconds, 3), "step": step, "epoch": epoch,
                       "valid_ll": ll, "valid_bits_per_dim": bits_per_dim(ll, D)})
        print(f"{method:>8} {train_seconds:7.1f} s  step {step:5d}  valid {ll:9.2f} nats = {bits_per_dim(ll, D):.4f} bits/dim", flush=True)
        clock["next"] = train_seconds + args.eval_every

    def on_step(r: dict) -> bool:
        train_seconds = time.perf_counter() - start - clock["eval"]
        done = train_seconds >= args.seconds
        if train_seconds >= clock["next"] or done:
            record(r["step"], r["epoch"])
        return done

    record(0, 0)
    fit(spn, train, method=method, valid_fraction=0.0, epochs=10**6, batch_size=args.batch_size, lr=args.lr,
        step_size=args.step_size, step_callbacks=[on_step], progress=False, seed=args.seed)
    return points


def plot(points: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in args.methods:
        pts = [p for p in points if p["method"] == method]
        ax.plot([p["train_seconds"] for p in pts], [p["valid_bits_per_dim"] for p in pts], marker=".", label=method)
    ax.set_xlabel(f"training time [s] ({args.threads} CPU threads)")
    ax.set_ylabel("validation bits/dim (lower is better)")
    lo = min(p["valid_bits_per_dim"] for p in points)
    ax.set_ylim(lo - 0.2, min(max(p["valid_bits_per_dim"] for p in points), lo + 6))
    ax.set_title(f"RAT-SPN on MNIST (depth {args.depth}, R={args.repetitions}, S=I={args.sums}/{args.leaves}), {args.subset} digits", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def summary(points: list[dict], ctx: dict, args: argparse.Namespace) -> str:
    """The markdown report: the run's context and each method's validation bits/dim at fixed training times."""
    end = max(p["train_seconds"] for p in points)
    marks = [t for t in MARKS if t <= end]
    lines = ["# Stochastic EM against Adam: validation bits/dim over training time", "",
             *context_lines(ctx, prefix="- ").splitlines(), "",
             "Validation bits/dim (lower is better) at the first evaluation at or after each training time "
             f"(evaluations every {args.eval_every:g} s of training; evaluation time excluded):", "",
             "| method | " + " | ".join(f"{t} s" for t in marks) + " | last |", "|---" * (len(marks) + 2) + "|"]
    for method in dict.fromkeys(p["method"] for p in points):
        pts = [p for p in points if p["method"] == method]
        cells = [next((f"{p['valid_bits_per_dim']:.2f}" for p in pts if p["train_seconds"] >= t), "-") for t in marks]
        last = pts[-1]
        cells.append(f"{last['valid_bits_per_dim']:.2f} ({last['train_seconds']:.0f} s, {last['step']} steps)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(points: list[dict], ctx: dict, args: argparse.Namespace) -> None:
    """``em_vs_adam.csv``, ``.md`` and ``.png`` under ``--out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "em_vs_adam.csv", csv_text(FIELDS, points, ctx).encode())
    atomic_write(args.out / "em_vs_adam.md", summary(points, ctx, args).encode())
    plot(points, args.out / "em_vs_adam.png", args)


def from_csv(args: argparse.Namespace) -> int:
    """Rewrite the results from a CSV: the settings come from the command in its header."""
    ctx, raw = read_csv(args.from_csv)
    command = shlex.split(str(ctx.get("command", "")))
    run_args = parse_args(command[2:] if len(command) >= 2 and command[1].endswith("em_vs_adam.py") else [])
    run_args.out, run_args.from_csv = args.out, args.from_csv
    points = [{"method": r["method"], "train_seconds": float(r["train_seconds"]), "step": int(r["step"]), "epoch": int(r["epoch"]),
               "valid_ll": float(r["valid_ll"]), "valid_bits_per_dim": float(r["valid_bits_per_dim"])} for r in raw]
    run_args.methods = list(dict.fromkeys(p["method"] for p in points))
    write_results(points, ctx, run_args)
    print(summary(points, ctx, run_args))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_csv is not None:
        return from_csv(args)
    ctx = context(args.threads, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_px, _ = load_mnist("train", args.subset)
    valid_px, _ = load_mnist("valid", args.valid)
    train = dequantize(train_px, torch.Generator().manual_seed(args.seed))
    valid = dequantize(valid_px, torch.Generator().manual_seed(args.seed + 1))
    torch.manual_seed(args.seed)
    rg = spnkit.RegionGraph.random(D, args.depth, args.repetitions, seed=args.seed)
    leaf = spnkit.Normal(min_var=args.min_var, max_var=0.25, loc_range=(0.0, 1.0))
    base = spnkit.SPN(rg, leaf, num_sums=args.sums, num_leaves=args.leaves).float()
    points: list[dict] = []
    for method in args.methods:
        points += run_method(copy.deepcopy(base), method, train, valid, args)
    write_results(points, ctx, args)
    for method in args.methods:
        last = [p for p in points if p["method"] == method][-1]
        print(f"{method}: {last['valid_bits_per_dim']:.4f} bits/dim after {last['train_seconds']:.0f} s ({last['step']} steps)")
    print(f"wrote em_vs_adam.csv, .md and .png in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
