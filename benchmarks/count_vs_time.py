"""Count accuracy against training time: SuPAIR, SuPAIR without the background SPN, and AIR.

For one data set, each model is trained ``--seeds`` times through the SuPAIR
harness (``python -m supair train`` in a subprocess, one run folder per
(data set, model, seed) under ``--runs-dir``), evaluating held-out count
accuracy every ``--eval-seconds`` of training CPU time. The clock is the
process's CPU time spent in training steps (evaluation excluded); wall time of
the training steps is recorded beside it. Runs are resumable: calling the script
again with a larger ``--budget`` continues every run from its checkpoint, and
the results accumulate.

Writes, under ``--out-dir`` (default benchmarks/results/):

- ``count_vs_time_<dataset>.csv``: the run context as ``# key: value`` lines (the
  training calls that made the runs, CPU, threads, torch and Python versions,
  the collecting command and its date), then one row per evaluation (model,
  dataset, seed, step, train_seconds = CPU seconds, wall_seconds,
  count_accuracy, iou, elbo, mean_count);
- ``count_vs_time_<dataset>.png``: mean and +-1 std band over seeds, one line
  per model (the paper's figure);
- ``count_vs_time_<dataset>.md``: the same context, accuracy at fixed times,
  time to reach 0.5, 0.9 and 0.95, and the AIR / SuPAIR speed-up.

``--from-csv FILE`` rebuilds all three from such a CSV alone (no runs folder
needed): the figure and tables come from its rows, the context from its header.

Models: ``supair``, ``supair-nobg`` (``--no-background-model``), ``air``.

Usage::

    .venv/bin/python benchmarks/count_vs_time.py                       # minutes: 1 seed, 2 CPU minutes each
    .venv/bin/python benchmarks/count_vs_time.py --budget supair=15 --budget supair-nobg=15 \\
        --budget air=60 --eval-seconds 30 --seeds 5 --parallel 2       # the full run
    .venv/bin/python benchmarks/count_vs_time.py --collect-only          # tables and figure from the runs so far
    .venv/bin/python benchmarks/count_vs_time.py --from-csv benchmarks/results/count_vs_time_multi-mnist.csv \
        --eval-seconds 5                                                # the report again from the results CSV
    .venv/bin/python benchmarks/count_vs_time.py --models air --seeds 3 --only-seeds 1 --budget air=60   # extend one run
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import atomic_write, csv_text, read_csv
from supair.names import DATASETS

__all__ = ["MODELS", "parse_args", "run_command", "collect", "summarize", "main"]

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "supair": ["--model", "supair"],
    "supair-nobg": ["--model", "supair", "--no-background-model"],
    "air": ["--model", "air"],
}
THRESHOLDS = (0.5, 0.9, 0.95)
FIELDS = ("model", "dataset", "seed", "step", "train_seconds", "wall_seconds", "count_accuracy", "iou", "elbo", "mean_count")


def _budget(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--budget takes MODEL=MINUTES, got {text!r}")
    if name != "all" and name not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {name!r} in --budget (expected one of {sorted(MODELS)} or 'all')")
    try:
        minutes = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget {name}= needs a number of CPU minutes, got {value!r}") from None
    if not minutes > 0:
        raise argparse.ArgumentTypeError(f"--budget {name}= must be positive, got {minutes}")
    return name, minutes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="multi-mnist", choices=DATASETS)
    p.add_argument("--models", default="supair,supair-nobg,air", help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--seeds", type=int, default=1, help="training seeds per model, 0..S-1 (default: 1)")
    p.add_argument("--only-seeds", metavar="I,J,...",
                   help="train only these seeds (e.g. extend one run to a longer budget); every seed on disk still counts in the outputs")
    p.add_argument("--budget", type=_budget, action="append", default=[], metavar="MODEL=MINUTES",
                   help="training CPU minutes of a model ('all=M' for every model); default 2 each")
    p.add_argument("--eval-seconds", type=float, default=15.0, help="training CPU seconds between evaluations (default: 15)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--parallel", type=int, default=1, help="runs trained side by side (default: 1)")
    p.add_argument("--train-images", type=int, help="training scenes (default: the data set's)")
    p.add_argument("--test-images", type=int, help="held-out scenes per evaluation (default: the harness's, 2000)")
    p.add_argument("--set", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                   help="config override passed to every run, or with a MODEL: prefix to that model's runs only "
                        "(e.g. supair:train.batch_size=32)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "count_vs_time")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--note", default="", help="a line for the report (e.g. how loaded the machine was)")
    p.add_argument("--collect-only", action="store_true", help="no training: write the CSV, figure and table from the runs so far")
    p.add_argument("--from-csv", type=Path, metavar="FILE",
                   help="no training: write the CSV, figure and table from a CSV this script wrote (its rows and its context header)")
    args = p.parse_args(argv)
    if args.from_csv is not None:
        args.collect_only = True
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        p.error(f"--models must name some of {sorted(MODELS)}, got {args.models!r}")
    if args.seeds < 1 or args.threads < 1 or args.parallel < 1 or args.eval_seconds <= 0:
        p.error("--seeds, --threads and --parallel must be >= 1 and --eval-seconds positive")
    args.model_list = models
    try:
        args.seed_list = sorted({int(t) for t in args.only_seeds.split(",") if t.strip()}) if args.only_seeds else list(range(args.seeds))
    except ValueError:
        p.error(f"--only-seeds must be comma-separated seed numbers, got {args.only_seeds!r}")
    if not args.seed_list or min(args.seed_list) < 0:
        p.error(f"--only-seeds must name seeds >= 0, got {args.only_seeds!r}")
    budgets = {m: 2.0 for m in models}
    for name, minutes in args.budget:
        for m in models if name == "all" else [name]:
            budgets[m] = minutes
    args.budgets = budgets
    return args


def run_dir(args: argparse.Namespace, model: str, seed: int) -> Path:
    return args.runs_dir / args.dataset / model / f"seed{seed}"


def run_command(args: argparse.Namespace, model: str, seed: int) -> list[str]:
    """The ``supair train`` command line that starts or continues one run."""
    folder = run_dir(args, model, seed)
    cmd = [sys.executable, "-m", "supair", "train", *MODELS[model], "--dataset", args.dataset,
           "--seed", str(seed), "--threads", str(args.threads), "--no-progress",
           "--cpu-minutes", repr(args.budgets[model]), "--eval-seconds", repr(args.eval_seconds)]
    if args.train_images is not None:
        cmd += ["--train-images", str(args.train_images)]
    if args.test_images is not None:
        cmd += ["--test-images", str(args.test_images)]
    if model != "air":
        # the attention network's own count, as AIR's: the detection search (docs/supair.md) multiplies an
        # evaluation's cost about fifty-fold (a --set can turn it on)
        cmd += ["--set", "model.inference.search_radius=0"]
    for item in args.set:
        target, sep, rest = item.partition(":")
        if sep and target in MODELS:
            if target == model:
                cmd += ["--set", rest]
        else:
            cmd += ["--set", item]
    # a folder without a checkpoint holds at most what a run stopped before its first checkpoint left: start it anew
    cmd += ["--resume", str(folder)] if (folder / "checkpoint.pt").exists() else ["--out", str(folder), "--overwrite"]
    return cmd


def _trained_cpu_seconds(folder: Path) -> float:
    rows = _read_metrics(folder)
    return max((r.get("cpu_seconds", 0.0) for r in rows), default=0.0)


def _train_one(args: argparse.Namespace, model: str, seed: int, log) -> int:
    folder = run_dir(args, model, seed)
    if _trained_cpu_seconds(folder) >= 60 * args.budgets[model]:
        log(f"{model} seed {seed}: budget of {args.budgets[model]} CPU minutes already spent")
        return 0
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = run_command(args, model, seed)
    log(f"{model} seed {seed}: {shlex.join(cmd[1:])}")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(folder.parent / f"seed{seed}.log", "a") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        log(f"{model} seed {seed}: training failed (exit {proc.returncode}); see {folder.parent / f'seed{seed}.log'}")
    return proc.returncode


def _read_metrics(folder: Path) -> list[dict]:
    return _read_jsonl(folder / "metrics.jsonl")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return rows


def _seeds_on_disk(args: argparse.Namespace, model: str) -> list[int]:
    folder = args.runs_dir / args.dataset / model
    found = {int(p.name[4:]) for p in folder.glob("seed*") if p.is_dir() and p.name[4:].isdigit()} if folder.is_dir() else set()
    return sorted(found | set(args.seed_list))


def collect(args: argparse.Namespace) -> list[dict]:
    """Every evaluation of every run of the data set so far, as CSV rows.

    All models and seeds found under ``--runs-dir`` count, not only this call's, so
    that calls for different models or seed counts accumulate into one table.
    Values are rounded to the CSV's 6 significant digits, so that the tables read from the runs
    and those rebuilt from the CSV (``--from-csv``) agree; this also makes an accuracy of
    1900/2000 computed in float32 (0.94999999) count as the 0.95 it is.
    """
    rows = []
    for model in MODELS:
        for seed in _seeds_on_disk(args, model):
            for r in _read_metrics(run_dir(args, model, seed)):
                rows.append({
                    "model": model, "dataset": args.dataset, "seed": seed, "step": r["step"],
                    "train_seconds": _digits(r["cpu_seconds"]), "wall_seconds": _digits(r["train_seconds"]),
                    "count_accuracy": _digits(r.get("count_accuracy", math.nan)), "iou": _digits(r.get("iou", math.nan)),
                    "elbo": _digits(r.get("elbo", math.nan)), "mean_count": _digits(r.get("mean_count", math.nan)),
                })
    return rows


def _digits(value):
    """``value`` at the CSV's precision (6 significant digits); None stays None."""
    return None if value is None else float(f"{float(value):.6g}")


def _runs(rows: list[dict], model: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        if r["model"] == model:
            out.setdefault(r["seed"], []).append(r)
    return {s: sorted(v, key=lambda r: r["train_seconds"]) for s, v in out.items()}


def _at(run: list[dict], t: float, tol: float) -> float:
    """Accuracy of a run at training time ``t``: its last evaluation at or before ``t`` (NaN if it stopped before)."""
    if not run or run[-1]["train_seconds"] < t - tol:
        return math.nan
    before = [r for r in run if r["train_seconds"] <= t + tol]
    return before[-1]["count_accuracy"] if before else math.nan


def _interp(run: list[dict], t: float) -> float:
    """Accuracy of a run at ``t``, linear between its evaluations (NaN outside them): for the figure."""
    if not run or t < run[0]["train_seconds"] or t > run[-1]["train_seconds"]:
        return math.nan
    for a, b in zip(run, run[1:]):
        if a["train_seconds"] <= t <= b["train_seconds"]:
            span = b["train_seconds"] - a["train_seconds"]
            w = (t - a["train_seconds"]) / span if span > 0 else 1.0
            return (1 - w) * a["count_accuracy"] + w * b["count_accuracy"]
    return run[-1]["count_accuracy"]


def _bound(run: list[dict], thr: float) -> float:
    t = _time_to(run, thr)
    return run[-1]["train_seconds"] if math.isnan(t) else t


def _time_to(run: list[dict], thr: float) -> float:
    return next((r["train_seconds"] for r in run if r["count_accuracy"] >= thr), math.nan)


def _time_to_interpolated(run: list[dict], thr: float) -> float:
    """The time of the first crossing of ``thr``, linear between the evaluation before it and the first at or above it."""
    for prev, r in zip([None] + run[:-1], run):
        if r["count_accuracy"] >= thr:
            if prev is None:
                return r["train_seconds"]
            a0, a1, t0, t1 = prev["count_accuracy"], r["count_accuracy"], prev["train_seconds"], r["train_seconds"]
            return t0 + (thr - a0) / (a1 - a0) * (t1 - t0)  # a0 < thr <= a1
    return math.nan


def _ratio_suffix(model: str, air_time: float, model_time: float) -> str:
    """``"; 9.25x"``: AIR's time over the model's, two decimals; empty for AIR itself or where either is missing."""
    if model == "air" or math.isnan(air_time) or math.isnan(model_time) or model_time <= 0:
        return ""
    return f"; {air_time / model_time:.2f}x"


def _threshold_header() -> list[str]:
    """The two header lines of a table with one column per accuracy threshold."""
    return ["| model | " + " | ".join(f">= {t}" for t in THRESHOLDS) + " |", "|---" * (len(THRESHOLDS) + 1) + "|"]


def _mean_std_all(values: list[float]) -> tuple[float, float]:
    """Mean and standard deviation over seeds, the mean NaN unless every seed has a value."""
    m, s, n = _mean_std(values)
    return (m if n == len(values) else math.nan), s


def _median(values: list[float]) -> float:
    """Median of the values, NaN if any is NaN (a seed that did not get there) or there are none."""
    return math.nan if not values or any(math.isnan(v) for v in values) else statistics.median(values)


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan, 0
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), len(v)


def curves(rows: list[dict], models: list[str], step: float) -> dict[str, tuple[list[float], list[float], list[float], list[int]]]:
    """Per model: times ``0, step, 2 step, ...``, mean and std over seeds of the accuracy interpolated between evaluations, and the seeds counted."""
    out = {}
    for model in models:
        runs = _runs(rows, model)
        if not runs:
            continue
        end = max(r[-1]["train_seconds"] for r in runs.values())
        times, means, stds, ns = [], [], [], []
        k = 0
        while k * step <= end + 1e-9:
            t = k * step
            m, s, n = _mean_std([_interp(r, t) for r in runs.values()])
            if n:
                times.append(t)
                means.append(m)
                stds.append(s)
                ns.append(n)
            k += 1
        out[model] = (times, means, stds, ns)
    return out


def _fmt_time(t: float) -> str:
    return "-" if math.isnan(t) else f"{t:.0f} s"


def calls_path(args: argparse.Namespace) -> Path:
    """The data set's log of training calls (one JSON object per line), beside its runs."""
    return args.runs_dir / args.dataset / "calls.jsonl"


def record_call(args: argparse.Namespace, command: str) -> None:
    """Append this training call to the data set's call log (the report lists them all)."""
    path = calls_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "command": command,
             "threads": args.threads, "parallel": args.parallel, "note": args.note}
    with open(path, "a") as f:  # one short line per call: an append is all or nothing in practice
        f.write(json.dumps(entry) + "\n")


def read_calls(args: argparse.Namespace) -> list[dict]:
    return _read_jsonl(calls_path(args))


def run_context(args: argparse.Namespace, command: str) -> dict:
    """The context of the runs collected now: the training calls, this call, CPU, threads, versions, date."""
    import torch

    ctx: dict = {
        "dataset": args.dataset,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "threads": str(args.threads),
        "runs side by side": "per training call (this call only collected)" if args.collect_only else str(args.parallel),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "clock": CLOCK,
        "call": [json.dumps(c) for c in read_calls(args)],
    }
    if args.note:
        ctx["note"] = args.note
    return ctx


CLOCK = "process CPU seconds spent in training steps (evaluation excluded); wall seconds of the same steps in the CSV"


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def summarize(rows: list[dict], args: argparse.Namespace, command: str, ctx: dict | None = None) -> str:
    """The markdown report: the runs' context, accuracy at fixed times, times to thresholds, speed-up.

    ``ctx`` is the runs' context (:func:`run_context`, or a CSV's header with ``--from-csv``).
    """
    ctx = run_context(args, command) if ctx is None else ctx
    lines = [f"# Count accuracy vs training time: {args.dataset}", ""]
    calls = [json.loads(c) for c in _as_list(ctx.get("call"))]
    if calls:
        lines += ["Training calls that made the runs below, oldest first (UTC; threads per run; runs side by side):", ""]
        lines += [f"{i}. {c['utc']}: `{c['command']}` ({c['threads']} thread(s), {c['parallel']} side by side)"
                  + (f"; {c['note']}" if c.get("note") else "") for i, c in enumerate(calls, 1)]
        lines.append("")
    lines += [
        f"- command: `{ctx['command']}`",
        *([f"- report rebuilt from the CSV: `{command}`"] if args.from_csv is not None else []),
        f"- CPU: {ctx['cpu']}; torch threads per run: {ctx['threads']}; runs side by side: {ctx['runs side by side']}",
        f"- torch {ctx['torch']}, Python {ctx['python']}; written {ctx['date']}",
        f"- clock: {ctx.get('clock', CLOCK)}",
        *[f"- note: {n}" for n in _as_list(ctx.get("note"))],
        (f"- budgets and evaluation intervals: the training calls' above (this call only collected); tables and figure read every {args.eval_seconds:g} CPU s"
         if args.collect_only else
         f"- budgets of this call (CPU minutes): {', '.join(f'{m}={args.budgets[m]:g}' for m in args.model_list)};"
         f" evaluation every {args.eval_seconds:g} CPU s"),
        "",
    ]
    longest = max((r["train_seconds"] for r in rows), default=0.0)
    marks = [t for t in (30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200) if t <= longest]
    tol = 0.5 * args.eval_seconds
    lines += ["## Count accuracy at fixed training times (mean +- std over seeds, n = seeds that ran that long)", ""]
    lines += ["| model | " + "".join(f"{t} s | " for t in marks) + "last (CPU s; wall s) |", "|---" * (len(marks) + 2) + "|"]
    present = [m for m in MODELS if _runs(rows, m)]
    for model in present:
        runs = _runs(rows, model)
        cells = []
        for t in marks:
            m, s, n = _mean_std([_at(r, t, tol) for r in runs.values()])
            cells.append("-" if not n else f"{m:.3f} +- {s:.3f} (n={n})")
        lm, ls, ln = _mean_std([r[-1]["count_accuracy"] for r in runs.values()])
        lt = sum(r[-1]["train_seconds"] for r in runs.values()) / len(runs)
        lw = sum(r[-1]["wall_seconds"] for r in runs.values()) / len(runs)
        cells.append(f"{lm:.3f} +- {ls:.3f} ({lt:.0f} s; {lw:.0f} s)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "## Training CPU time to reach a count accuracy (mean over the seeds that reached it)", "",
              "A seed's time is that of its first evaluation at or above the accuracy: up to one evaluation interval late.", ""]
    lines += _threshold_header()
    reach: dict[str, dict[float, float]] = {}
    for model in present:
        runs = _runs(rows, model)
        cells = []
        reach[model] = {}
        for thr in THRESHOLDS:
            m, s, n = _mean_std([_time_to(r, thr) for r in runs.values()])
            reach[model][thr] = m if n == len(runs) else math.nan
            cells.append("not reached" if not n else f"{_fmt_time(m)} +- {s:.0f} ({n}/{len(runs)} seeds)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if "air" in reach:
        lines += ["", "## Speed-up: AIR's time to a count accuracy divided by the model's (all seeds must reach it)", ""]
        lines += _threshold_header()
        for model in (m for m in reach if m != "air"):
            cells = []
            for thr in THRESHOLDS:
                # lower bounds of a mean time to thr: a seed not there yet counts with the time it has trained
                air_end = _mean_std([_bound(r, thr) for r in _runs(rows, "air").values()])[0]
                model_end = _mean_std([_bound(r, thr) for r in _runs(rows, model).values()])[0]
                a, b = reach["air"][thr], reach[model][thr]
                if not (math.isnan(a) or math.isnan(b)) and b > 0:
                    cells.append(f"{a / b:.2f}x")  # two decimals: 9.99x is not 10x
                elif math.isnan(a) and not math.isnan(b) and b > 0:  # AIR needs more than it has trained
                    cells.append(f"> {air_end / b:.2f}x (AIR not there yet)")
                elif math.isnan(b) and not math.isnan(a) and model_end > 0:  # the model needs more than it has trained
                    cells.append(f"< {a / model_end:.2f}x ({model} not there yet)")
                else:
                    cells.append("-")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        # the same times read between evaluations (less biased where the evaluation interval is a large share
        # of a time), and the median seed (a mean over few seeds follows one slow seed; AIR's spread is wide)
        derived = (
            ("The same with each seed's crossing interpolated linearly between the evaluation before it and the first at or above",
             _time_to_interpolated, _mean_std_all, lambda m, s: f"{m:.1f} s +- {s:.1f}"),
            ("Median over seeds of each seed's first evaluation at or above the accuracy (all seeds must reach it)",
             _time_to, lambda v: (_median(v), math.nan), lambda m, s: _fmt_time(m)),
        )
        for title, time_of, summary, fmt in derived:
            lines += ["", f"## {title}", "", *_threshold_header()]
            table = {m: {thr: summary([time_of(r, thr) for r in _runs(rows, m).values()]) for thr in THRESHOLDS} for m in reach}
            for model in reach:
                cells = []
                for thr in THRESHOLDS:
                    m, s = table[model][thr]
                    cells.append("not reached by every seed" if math.isnan(m) else fmt(m, s) + _ratio_suffix(model, table["air"][thr][0], m))
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_results_csv(path: Path) -> tuple[dict, list[dict]]:
    """The context and the rows (typed as :func:`collect` returns them) of a CSV this script wrote."""
    ctx, raw = read_csv(path)
    rows = []
    for r in raw:
        row: dict = {}
        for k in FIELDS:
            v = r[k]
            # an empty cell (a metric the evaluation did not report) stays None, and is written back empty
            row[k] = v if k in ("model", "dataset") else None if v == "" else int(v) if k in ("seed", "step") else float(v)
        rows.append(row)
    return ctx, rows


def write_outputs(args: argparse.Namespace, command: str) -> dict[str, Path]:
    """Write the CSV, the figure and the markdown table from the runs so far (or from ``--from-csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.from_csv is not None:
        ctx, rows = read_results_csv(args.from_csv)
    else:
        ctx, rows = run_context(args, command), collect(args)
    base = args.out_dir / f"count_vs_time_{args.dataset}"
    formatted = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    paths = {"csv": base.with_suffix(".csv"), "png": base.with_suffix(".png"), "md": base.with_suffix(".md")}
    atomic_write(paths["csv"], csv_text(FIELDS, formatted, ctx).encode())
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = {"supair": "tab:blue", "supair-nobg": "tab:green", "air": "tab:red"}
    labels = {"supair": "SuPAIR", "supair-nobg": "SuPAIR w/o bg SPN", "air": "AIR"}
    for model, (times, means, stds, ns) in curves(rows, [m for m in MODELS if _runs(rows, m)], args.eval_seconds).items():
        seeds = len(_runs(rows, model))
        full = sum(1 for n in ns if n == seeds)  # the mean of every seed; then of the seeds that ran longer, dotted
        longer = "; dotted: the seeds that ran longer" if full < len(ns) else ""
        ax.plot(times[:full], means[:full], color=colours[model], label=f"{labels[model]} ({seeds} seeds{longer})")
        ax.fill_between(times[:full], [m - s for m, s in zip(means, stds)][:full], [m + s for m, s in zip(means, stds)][:full],
                        color=colours[model], alpha=0.2, linewidth=0)
        if full < len(ns):
            ax.plot(times[max(full - 1, 0):], means[max(full - 1, 0):], color=colours[model], linestyle=":")
    ax.set_xlabel(f"training time (CPU seconds, {args.threads} thread{'s' if args.threads > 1 else ''})")
    ax.set_ylabel("count accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{args.dataset}: count accuracy vs training time", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf_png = io.BytesIO()
    fig.savefig(buf_png, format="png", dpi=120)
    plt.close(fig)
    atomic_write(paths["png"], buf_png.getvalue())
    atomic_write(paths["md"], summarize(rows, args, command, ctx).encode())
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["benchmarks/count_vs_time.py", *(sys.argv[1:] if argv is None else argv)])
    if args.from_csv is not None:
        datasets = {r["dataset"] for r in read_results_csv(args.from_csv)[1]}
        if len(datasets) != 1:
            raise SystemExit(f"{args.from_csv}: expected the rows of one data set, found {sorted(datasets) or 'none'}")
        args.dataset = datasets.pop()
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
    failures = 0
    if not args.collect_only:
        record_call(args, command)
        jobs = [(m, s) for s in args.seed_list for m in args.model_list]  # seed-major: every model gets seed 0 first

        lock = threading.Lock()  # pyplot is not thread-safe

        def job(ms: tuple[str, int]) -> int:
            code = _train_one(args, *ms, log)
            with lock:
                write_outputs(args, command)  # results accumulate as runs finish
            return code

        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            failures = sum(1 for code in pool.map(job, jobs) if code != 0)
    paths = write_outputs(args, command)
    for p in paths.values():
        log(f"wrote {p}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
