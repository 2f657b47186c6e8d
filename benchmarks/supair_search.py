"""Count accuracy of trained SuPAIR checkpoints with and without the detection search.

For each checkpoint, evaluates its data set's held-out scenes (the training
harness's evaluation: count accuracy, box IoU, mean count) with the attention
network's boxes alone and with the detection search at each requested setting
(``RADIUS:GRID``: the first box's corner tried on a GRID x GRID grid of offsets
within +-RADIUS pixels; docs/supair.md, "Detection search"), and prints one row
per (checkpoint, setting) with the time the evaluation took.

Usage::

    .venv/bin/python benchmarks/supair_search.py runs/<run>/checkpoint.pt [more checkpoints] \\
        [--settings 6:7,6:5,6:3] [--test-images 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supair.checkpoint import load_model
from supair.evaluation import evaluate
from supair.model import Supair
from supair.train import load_data


def parse_settings(text: str) -> list[tuple[float, int]]:
    """``"6:7,4:5"`` -> ``[(6.0, 7), (4.0, 5)]``; raises ValueError with the expected form."""
    out = []
    for item in text.split(","):
        radius, sep, grid = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((float(radius), int(grid)))
        except ValueError:
            raise ValueError(f"a search setting is RADIUS:GRID (pixels, grid points per axis), e.g. 6:7; got {item!r}") from None
        if out[-1][0] <= 0 or out[-1][1] < 2:
            raise ValueError(f"a search setting needs RADIUS > 0 and GRID >= 2, got {item!r}")
    return out


def with_search(model: Supair, radius: float, grid: int) -> Supair:
    """``model`` with its detection search set to ``radius`` and ``grid`` (0: off); the weights are shared."""
    icfg = dataclasses.replace(model.cfg.inference, search_radius=radius, search_grid=grid)
    model.cfg = dataclasses.replace(model.cfg, inference=icfg)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders of SuPAIR runs")
    p.add_argument("--settings", default="6:7", help="comma-separated RADIUS:GRID search settings (default 6:7, the default)")
    p.add_argument("--test-images", type=int, help="held-out scenes (default: the run's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
    except ValueError as err:
        p.error(str(err))
    torch.set_num_threads(args.threads)
    print("| checkpoint | search | count accuracy | IoU | mean count | seconds |")
    print("|---|---|---|---|---|---|")
    for ck in args.checkpoints:
        model, cfg = load_model(ck)
        if not isinstance(model, Supair):
            print(f"{ck}: not a SuPAIR checkpoint (the search needs SuPAIR's tractable joint)", file=sys.stderr)
            return 2
        _, test = load_data(cfg)
        if test is None or test.counts is None:
            print(f"{ck}: its data set has no labelled held-out scenes", file=sys.stderr)
            return 2
        if args.test_images:
            test = test.subset(slice(0, args.test_images))
        for radius, grid in [(0.0, 1), *settings]:
            with_search(model, radius, grid)
            start = time.perf_counter()
            row = evaluate(model, test)
            label = "off (network)" if radius == 0 else f"+-{radius:g} px, {grid}x{grid}"
            print(f"| {ck} | {label} | {row['count_accuracy']:.4f} | {row['iou'] or float('nan'):.3f} | "
                  f"{row['mean_count']:.3f} | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
