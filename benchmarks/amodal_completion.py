"""Amodal completion on occluded MNIST: the object SPN's fill of occluded pixels against the hidden truth.

For each checkpoint (SuPAIR runs on occluded-mnist), evaluates its held-out scenes with every
digit also kept alone (``layers``): count accuracy, and on the pixels of each matched glimpse
that the model treats as hidden and that are truly occluded, the mean absolute and root mean
squared error of the object SPN's completion (``supair.completion``), beside the mean true
digit at the same boxes (an oracle's constant fill) and zeros.

Writes ``--out`` (markdown, default benchmarks/results/amodal_completion.md) and a CSV beside
it, both headed by the run's context, and prints the table.

Usage::

    .venv/bin/python benchmarks/amodal_completion.py runs/<run> [more runs] --test-images 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import atomic_write, context, context_lines, csv_text
from supair.checkpoint import load_model
from supair.completion import completion_errors
from supair.evaluation import evaluate
from supair.model import Supair
from supair.train import test_scenes

__all__ = ["main", "row_for"]

FIELDS = ("checkpoint", "images", "count_accuracy", "objects", "occluded_objects", "pixels",
          "mae_spn", "mae_mean", "mae_zero", "rmse_spn", "rmse_mean", "rmse_zero", "seconds")


def row_for(checkpoint: str, test_images: int) -> dict:
    """Count accuracy and completion errors of one checkpoint on its held-out scenes."""
    model, cfg = load_model(checkpoint)
    if not isinstance(model, Supair):
        raise ValueError(f"{checkpoint}: not a SuPAIR checkpoint (completion needs the object SPN)")
    if cfg.train.dataset != "occluded-mnist" or cfg.train.data_path is not None:
        raise ValueError(f"{checkpoint}: trained on {cfg.train.data_path or cfg.train.dataset}; the hidden truth is kept by occluded-mnist")
    scenes = test_scenes(cfg, test_images, layers=True)
    start = time.perf_counter()
    errors = completion_errors(model, scenes)
    accuracy = evaluate(model, scenes)["count_accuracy"]
    return {"checkpoint": checkpoint, "images": len(scenes), "count_accuracy": round(accuracy, 4),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in errors.items()},
            "seconds": round(time.perf_counter() - start, 1)}


def _table(rows: list[dict]) -> str:
    lines = ["| checkpoint | count accuracy | objects measured (of occluded) | pixels | MAE: SPN completion | mean digit | zeros "
             "| RMSE: SPN completion | mean digit | zeros |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['checkpoint']} | {r['count_accuracy']:.4f} | {r['objects']} ({r['occluded_objects']}) | {r['pixels']} | "
                     f"**{r['mae_spn']:.4f}** | {r['mae_mean']:.4f} | {r['mae_zero']:.4f} | **{r['rmse_spn']:.4f}** | "
                     f"{r['rmse_mean']:.4f} | {r['rmse_zero']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders of SuPAIR runs on occluded-mnist")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "amodal_completion.md")
    args = p.parse_args(argv)
    if args.test_images < 1 or args.threads < 1:
        p.error("--test-images and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        rows = [row_for(ck, args.test_images) for ck in args.checkpoints]
    except ValueError as err:
        print(f"amodal_completion: error: {err}", file=sys.stderr)
        return 2
    table = _table(rows)
    print(table)
    ctx = context(threads=args.threads)
    md = f"# Amodal completion on occluded MNIST\n\n{context_lines(ctx, prefix='- ')}\n{table}"
    atomic_write(args.out, md.encode())
    atomic_write(args.out.with_suffix(".csv"), csv_text(FIELDS, rows, ctx).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
