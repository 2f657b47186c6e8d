"""Structure-learning speed: Chow-Liu / HCLT on MNIST and LearnSPN on tabular data.

* Chow-Liu: ``spnkit.structure.chow_liu_region_graph`` on the 60,000 x 784
  uint8 MNIST pixels (train + valid), binned into 8 equal-width bins, rooted
  at the tree center; the region graph's depth is printed with the depth when
  rooted at pixel 0.
* LearnSPN: ``spnkit.structure.learn_spn_structure`` (defaults: RDC 0.3,
  k-means k=2, min_rows=100) on 10,000 x 30 standardized continuous data
  drawn with numpy: a mixture of 3 clusters, each with 6 independent blocks of
  5 linearly correlated Gaussian variables.

Each task runs ``--repeats`` times (median, min and max printed) with
``torch.set_num_threads(--threads)`` and ``OMP_WAIT_POLICY=PASSIVE`` set before
torch is imported; the load average at the start is printed (the machine may be
shared).

Usage::

    .venv/bin/python benchmarks/structure_learning.py               # both tasks, 3 repeats
    .venv/bin/python benchmarks/structure_learning.py --no-mnist --rows 2000 --repeats 1   # seconds
    .venv/bin/python benchmarks/structure_learning.py --out benchmarks/results/structure_learning   # writes .csv and .md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import atomic_write, context, context_lines, csv_text

from spnkit.structure import (
    chow_liu_region_graph,
    chow_liu_tree,
    hclt_region_graph,
    learn_spn_structure,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per task (default: 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--no-mnist", action="store_true", help="skip the Chow-Liu task on MNIST")
    p.add_argument("--rows", type=int, default=10_000, help="LearnSPN rows (default: 10000)")
    p.add_argument("--cols", type=int, default=30, help="LearnSPN columns, a multiple of 5 (default: 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="write the figures to OUT.csv and OUT.md with the run's context (e.g. benchmarks/results/structure_learning)")
    return p.parse_args(argv)


def tabular_blocks(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """``(rows, cols)`` standardized data: 3 clusters (proportions 0.2, 0.3, 0.5) of independent blocks of 5 correlated Gaussians."""
    rng = np.random.default_rng(seed)
    z = rng.choice(3, size=rows, p=[0.2, 0.3, 0.5])
    blocks = np.array_split(rng.permutation(cols), max(1, cols // 5))
    x = np.zeros((rows, cols))
    for c in range(3):
        sel = z == c
        for b in blocks:
            mix = rng.normal(size=(len(b), len(b)))
            x[np.ix_(sel, b)] = rng.normal(scale=2.0, size=len(b)) + rng.normal(size=(int(sel.sum()), len(b))) @ mix
    return (x - x.mean(0)) / x.std(0)


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Wall times of ``repeats`` calls of ``fn`` and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def report(rows: list[dict], task: str, data: str, times: list[float], detail: str) -> None:
    """Print one task's times and keep them as a row."""
    print(f"{task + ' ' + data:<34} median {statistics.median(times):7.2f} s  (min {min(times):.2f}, max {max(times):.2f}, "
          f"{len(times)} runs)  {detail}", flush=True)
    rows.append({"task": task, "data": data, "median_seconds": round(statistics.median(times), 2), "min_seconds": round(min(times), 2),
                 "max_seconds": round(max(times), 2), "runs": len(times), "result": detail})


FIELDS = ["task", "data", "median_seconds", "min_seconds", "max_seconds", "runs", "result"]


def write(out: Path, rows: list[dict], threads: int, argv: list[str] | None) -> None:
    """``out``.csv and ``out``.md, each headed by the run's context."""
    ctx = context(threads=threads, argv=None if argv is None else [__file__, *argv])
    atomic_write(out.with_suffix(".csv"), csv_text(FIELDS, rows, ctx).encode())
    lines = ["# Structure learning time", "", context_lines(ctx, "- "), "| task | data | median s | min s | max s | runs | result |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['data']} | {r['median_seconds']} | {r['min_seconds']} | {r['max_seconds']} | {r['runs']} | {r['result']} |"
              for r in rows]
    atomic_write(out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} "
          f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    results: dict[str, list[float]] = {}
    rows: list[dict] = []
    if not args.no_mnist:
        from spnkit.datasets import load_mnist

        x = torch.cat([load_mnist("train")[0], load_mnist("valid")[0]])
        times, rg = timed(lambda: chow_liu_region_graph(x, image_shape=(28, 28, 1)), args.repeats)
        depth0 = hclt_region_graph(784, chow_liu_tree(x, root=0)).depth
        report(rows, "chow_liu", f"MNIST {tuple(x.shape)} uint8", times,
               f"regions={len(rg.regions)} depth={rg.depth} (rooted at pixel 0: {depth0})")
        results["chow_liu_mnist"] = times
    data = tabular_blocks(args.rows, args.cols, args.seed)
    times, ls = timed(lambda: learn_spn_structure(data, seed=args.seed), args.repeats)
    rg = ls.region_graph
    report(rows, "learn_spn", f"tabular {data.shape} float64", times,
           f"regions={len(rg.regions)} partitions={len(rg.partitions)} sums={len(ls.partition_weights)} depth={rg.depth}")
    results["learn_spn_tabular"] = times
    if args.out is not None:
        write(args.out, rows, args.threads, argv)
    return results


if __name__ == "__main__":
    main()
