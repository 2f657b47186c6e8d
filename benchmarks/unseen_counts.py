"""Count accuracy by true count on held-out scenes, with as many attention steps as asked.

SuPAIR's attention steps share their weights and each looks at what the earlier boxes left,
so a model trained with ``max_steps`` steps on scenes of a few objects can take more steps at
test time and count objects it never saw that many of. For each checkpoint and each number of
steps, this script evaluates the checkpoint's data set's held-out scenes of ``--objects LEAST
MOST`` objects (the training harness's evaluation, the detection search as the run has it) and
reports count accuracy overall and by true count.

Writes ``--out`` (markdown, default benchmarks/results/unseen_counts.md) and a CSV beside it,
both headed by the run's context, and prints the table.

Usage::

    .venv/bin/python benchmarks/unseen_counts.py runs/<run> --objects 0 9 --steps 6,10 --test-images 2000
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
from supair.evaluation import evaluate
from supair.names import DATASET_DEFAULTS
from supair.train import test_scenes

__all__ = ["main", "rows_for"]


def rows_for(checkpoint: str, steps: int, objects: tuple[int, int], test_images: int) -> dict:
    """One evaluation: the checkpoint with ``steps`` attention steps on held-out scenes of ``objects`` objects."""
    model, cfg = load_model(checkpoint, detect_steps=steps)
    cfg = cfg.replace(**{"train.test_objects": list(objects)})
    test = test_scenes(cfg, test_images)
    start = time.perf_counter()
    metrics = evaluate(model, test)
    trained = cfg.train.objects or DATASET_DEFAULTS[cfg.train.dataset][1]
    return {"checkpoint": checkpoint, "trained_objects": f"{trained[0]}-{trained[1]}", "trained_steps": cfg.model.max_steps,
            "steps": steps, "objects": f"{objects[0]}-{objects[1]}", "images": len(test),
            "count_accuracy": round(metrics["count_accuracy"], 4), "mean_count": round(metrics["mean_count"], 3),
            "by_count": metrics["count_accuracy_by_count"], "seconds": round(time.perf_counter() - start, 1)}


def _table(rows: list[dict]) -> str:
    counts = sorted({int(k) for r in rows for k in r["by_count"]})
    head = "| checkpoint | trained on | steps | test objects | count accuracy | " + " | ".join(f"{k}" for k in counts) + " |"
    lines = [head, "|---" * (5 + len(counts)) + "|"]
    for r in rows:
        by = [f"{r['by_count'][str(k)]:.3f}" if str(k) in r["by_count"] else "-" for k in counts]
        lines.append(f"| {r['checkpoint']} | {r['trained_objects']} objects, {r['trained_steps']} steps | {r['steps']} | "
                     f"{r['objects']} | **{r['count_accuracy']:.4f}** | " + " | ".join(by) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders of SuPAIR runs on a built-in data set")
    p.add_argument("--objects", nargs=2, type=int, default=(6, 9), metavar=("LEAST", "MOST"), help="objects per held-out scene (default 6 9)")
    p.add_argument("--steps", default="10", help="comma-separated numbers of attention steps (default 10)")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unseen_counts.md")
    args = p.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        p.error(f"--steps takes comma-separated integers, got {args.steps!r}")
    if not steps or min(steps) < 1 or not 0 <= args.objects[0] <= args.objects[1] or args.test_images < 1:
        p.error("--steps must be >= 1, --objects LEAST MOST with 0 <= LEAST <= MOST, --test-images >= 1")
    torch.set_num_threads(args.threads)
    rows = [rows_for(ck, n, tuple(args.objects), args.test_images) for ck in args.checkpoints for n in steps]
    table = _table(rows)
    print(table)
    ctx = context(threads=args.threads)
    md = f"# Count accuracy by true count\n\n{context_lines(ctx, prefix='- ')}\n{table}"
    atomic_write(args.out, md.encode())
    flat = [{**{k: v for k, v in r.items() if k != "by_count"}, **{f"acc_{k}": v for k, v in r["by_count"].items()}} for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    atomic_write(args.out.with_suffix(".csv"), csv_text(fields, flat, ctx).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
