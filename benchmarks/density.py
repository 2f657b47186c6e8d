"""MNIST density: test bits/dim and training time of every circuit family, side by side.

Each configuration trains in its own process (the ``spnkit fit mnist`` code
path, :func:`spnkit_mnist.commands.train_density`) within a wall-clock budget,
and the rows go to ``results/density.csv`` and ``results/density.md`` with the
run's context, beside the published figures of other circuit libraries.
Discrete leaves (Categorical, Binomial) give exact discrete bits/dim;
Normal leaves on dequantized pixels give an upper bound (marked).
``--classify`` adds MNIST classification rows (``spnkit classify mnist``).

Usage::

    python benchmarks/density.py --minutes 5 --flagship-minutes 60          # every configuration
    python benchmarks/density.py --only hclt-categorical-em --minutes 60    # one of them
    python benchmarks/density.py --report                                   # rebuild the markdown from the CSV
    python benchmarks/density.py --smoke                                    # tiny end-to-end check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import atomic_write, context, context_lines, csv_text, read_csv

FIELDS = ["dataset", "structure", "layer", "leaf", "method", "sums", "parameters", "budget_minutes", "threads", "train_seconds",
          "epochs", "test_bits_per_dim", "likelihood", "test_accuracy", "objective", "config"]

#: name -> (command, flags); flags are those of `spnkit fit mnist` / `spnkit classify mnist`
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "hclt-categorical-em": ("fit", ["--structure", "hclt", "--leaf", "categorical", "--sums", "32", "--leaves", "32", "--method", "em"]),
    "hclt-binomial-em": ("fit", ["--structure", "hclt", "--leaf", "binomial", "--sums", "32", "--leaves", "32", "--method", "em"]),
    "hclt-categorical-adam": ("fit", ["--structure", "hclt", "--leaf", "categorical", "--sums", "32", "--leaves", "32", "--method", "adam",
                                      "--batch-size", "256", "--lr", "0.02"]),
    "hclt-normal-em": ("fit", ["--structure", "hclt", "--leaf", "normal", "--sums", "32", "--leaves", "32", "--method", "em"]),
    "quad-graph-cp-categorical-adam": ("fit", ["--structure", "quad-graph", "--layer", "cp", "--leaf", "categorical", "--sums", "32",
                                               "--leaves", "32", "--method", "adam", "--batch-size", "256", "--lr", "0.01"]),
    "quad-tree4-cp-categorical-em": ("fit", ["--structure", "quad-tree", "--arity", "4", "--leaf", "categorical", "--sums", "32",
                                             "--leaves", "32", "--method", "em"]),
    "quad-tree-tucker-categorical-em": ("fit", ["--structure", "quad-tree", "--layer", "tucker", "--leaf", "categorical", "--sums", "10",
                                                "--leaves", "10", "--method", "em"]),
    "poon-domingos-categorical-em": ("fit", ["--structure", "poon-domingos", "--layer", "tucker", "--leaf", "categorical", "--sums", "10",
                                             "--leaves", "10", "--delta", "7", "--method", "em"]),
    "rat-categorical-em": ("fit", ["--structure", "random", "--layer", "tucker", "--leaf", "categorical", "--sums", "10", "--leaves", "10",
                                   "--method", "em"]),
    "rat-binomial-em": ("fit", ["--structure", "random", "--layer", "tucker", "--leaf", "binomial", "--sums", "10", "--leaves", "10",
                                "--method", "em"]),
    "rat-normal-adam": ("fit", ["--structure", "random", "--layer", "tucker", "--leaf", "normal", "--sums", "10", "--leaves", "10",
                                "--method", "adam", "--batch-size", "128", "--lr", "0.02"]),
    "rat-normal-em": ("fit", ["--structure", "random", "--layer", "tucker", "--leaf", "normal", "--sums", "10", "--leaves", "10",
                              "--method", "em"]),
}
CLASSIFY: dict[str, tuple[str, list[str]]] = {
    "classify-rat-normal": ("classify", ["--structure", "random", "--leaf", "normal", "--depth", "3", "--repetitions", "10",
                                         "--sums", "10", "--leaves", "10"]),
}
FLAGSHIP = "hclt-categorical-em"

#: published figures: (model, bits/dim or accuracy, source)
PUBLISHED = [
    ("HCLT (Liu & Van den Broeck, NeurIPS 2021)", "1.20 bits/dim", "the paper's MNIST table"),
    ("HCLT in PyJuice, 128 latent states", "< 1.18 bits/dim (its test's bound)", "Tractables/pyjuice tests"),
    ("cirkit QuadGraph, CP layers, 64 units, 10 epochs of Adam", "1.255 bits/dim", "april-tools/cirkit notebook learning-a-circuit"),
    ("EinsumNetworks (Peharz et al., ICML 2020)", "no MNIST bits/dim reported", "cambridge-mlg/EinsumNetworks"),
    ("RAT-SPN (Peharz et al., UAI 2019), classification", "98.19% accuracy", "the paper's MNIST table"),
]


def _run_one(name: str, minutes: float, out: Path, extra: list[str]) -> dict:
    """Train one configuration in a fresh process; returns its row."""
    command, flags = {**CONFIGS, **CLASSIFY}[name]
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
    argv = [sys.executable, "-m", "spnkit_mnist", command, "mnist", *flags, "--minutes", str(minutes), "--no-progress",
            "--out", str(folder), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    m = json.loads((folder / "metrics.json").read_text())
    model = m["model"]
    curve = [{"epoch": h["epoch"], "seconds": round(h["elapsed"], 1), "valid_bits_per_dim": round(_bpd(h["valid_ll"], model["leaf"]), 4)}
             for h in m["history"] if h.get("valid_ll") is not None] if "test_bits_per_dim" in m else []
    return {"curve": curve,
        "dataset": "MNIST",
        "structure": model["structure"] + (f" ({model['arity']}-ary)" if model["structure"] == "quad-tree" else ""),
        "layer": model["layer"],
        "leaf": model["leaf"],
        "method": m["method"],
        "sums": model["sums"],
        "parameters": m["parameters"],
        "budget_minutes": minutes,
        "threads": m.get("threads", ""),
        "train_seconds": round(m["train_seconds"], 1),
        "epochs": m["epochs_run"],
        "test_bits_per_dim": round(m["test_bits_per_dim"], 4) if "test_bits_per_dim" in m else "",
        "likelihood": ("" if "test_bits_per_dim" not in m else
                       "exact discrete" if m["likelihood"].startswith("discrete") else "dequantized bound"),
        "test_accuracy": round(m["test_accuracy"], 4) if "test_accuracy" in m else "",
        "objective": "discriminative" if command == "classify" else "generative",
        "config": name,
    }


def _bpd(ll: float, leaf: str) -> float:
    """Bits/dim of a mean log-likelihood: exact for discrete leaves, the dequantization bound for Normal ones."""
    return -ll / (784 * math.log(2)) + (8.0 if leaf == "normal" else 0.0)


def markdown(ctx: dict, rows: list[dict]) -> str:
    lines = ["# MNIST density and classification", "", *context_lines(ctx, "- ").splitlines(), "",
             "Bits/dim on the 10,000 test digits after training on 55,000 (5,000 held out for validation) within the budget "
             "on the stated threads. Exact discrete bits/dim for Categorical and Binomial leaves; Normal leaves on "
             "dequantized pixels give an upper bound.", "",
             "| structure | layer | leaf | method | K | parameters | budget (min) | threads | trained (s) | epochs | test bits/dim | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bpd = r["test_bits_per_dim"]
        bpd = f"{bpd}" + (" (bound)" if r["likelihood"] == "dequantized bound" else "") if bpd != "" else "-"
        acc = f"{100 * float(r['test_accuracy']):.2f}%" if r["test_accuracy"] not in ("", None) else "-"
        lines.append(f"| {r['structure']} | {r['layer']} | {r['leaf']} | {r['method']} | {r['sums']} | {int(r['parameters']):,} | "
                     f"{r['budget_minutes']} | {r.get('threads', '')} | {r['train_seconds']} | {r['epochs']} | {bpd} | {acc} |")
    lines += ["", "Published figures:", "", "| model | figure | source |", "|---|---|---|"]
    lines += [f"| {m} | {f} | {s} |" for m, f, s in PUBLISHED]
    return "\n".join(lines) + "\n"


def _commands(ctx: dict) -> list[str]:
    c = ctx.get("command", [])
    return list(c) if isinstance(c, list) else [str(c)]


def _with_commands(ctx: dict, *others: dict) -> dict:
    """``ctx`` with every command of ``others`` too (the rows of one table may come from several runs); threads are per row."""
    commands = [c for o in others for c in _commands(o)]
    commands += [c for c in _commands(ctx) if c not in commands]
    out = {k: v for k, v in ctx.items() if k != "threads"}
    out["command"] = commands if len(commands) > 1 else commands[0]
    return out


def _merged(paths: list[Path]) -> tuple[dict, list[dict]]:
    """Context and rows of several density.csv files (a configuration's last row wins; rows without threads take their file's)."""
    ctx: dict = {}
    by_config: dict[str, dict] = {}
    for path in paths:
        c, rows = read_csv(path)
        for r in rows:
            r.setdefault("threads", "")
            r["threads"] = r["threads"] or str(c.get("threads", ""))
            by_config[r["config"]] = r
        ctx = _with_commands(c, ctx) if ctx else _with_commands(c)
    order = [n for n in [*CONFIGS, *CLASSIFY] if n in by_config]
    return ctx, [by_config[n] for n in order]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="budget of each configuration (default: 5)")
    parser.add_argument("--flagship-minutes", type=float, default=None, help=f"budget of {FLAGSHIP} (default: --minutes)")
    parser.add_argument("--only", nargs="+", choices=sorted({**CONFIGS, **CLASSIFY}), help="run only these configurations")
    parser.add_argument("--classify", action="store_true", help="also the classification rows")
    parser.add_argument("--curve", action="store_true", help=f"write every configuration's validation curve (always for {FLAGSHIP})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "out" / "density")
    parser.add_argument("--report", action="store_true", help="rebuild density.md from density.csv")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="CSV",
                        help="add the rows of these density.csv files (runs made side by side) to --out-dir's, then rebuild the table")
    parser.add_argument("--smoke", action="store_true", help="two tiny configurations on 300 digits (a test of the script)")
    args = parser.parse_args()
    csv_path, md_path = args.out_dir / "density.csv", args.out_dir / "density.md"
    if args.report:
        ctx, rows = read_csv(csv_path)
        atomic_write(md_path, markdown(ctx, rows).encode())
        return 0
    if args.merge:
        ctx, rows = _merged([csv_path, *args.merge])
        atomic_write(csv_path, csv_text(FIELDS, rows, ctx).encode())
        atomic_write(md_path, markdown(ctx, rows).encode())
        return 0
    names = args.only or [*CONFIGS, *(CLASSIFY if args.classify else {})]
    extra = ["--threads", str(args.threads)]
    if args.smoke:
        names = args.only or ["hclt-categorical-em", "classify-rat-normal"]
        extra += ["--subset", "300", "--sums", "4", "--leaves", "4", "--depth", "2", "--repetitions", "2"]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    old_ctx, old_rows = _merged([csv_path]) if csv_path.exists() and not args.smoke else ({}, [])
    old = {r["config"]: r for r in old_rows}
    for name in names:
        minutes = 0.05 if args.smoke else (args.flagship_minutes or args.minutes) if name == FLAGSHIP else args.minutes
        row = _run_one(name, minutes, args.runs_dir, extra)
        curve = row.pop("curve")
        old[name] = row
        print(json.dumps(row), flush=True)
        if (name == FLAGSHIP or args.curve) and curve:  # bits/dim against training time
            curve_path = args.out_dir / f"density_curve_{name}.csv"
            atomic_write(curve_path, csv_text(["epoch", "seconds", "valid_bits_per_dim"], curve, context(threads=args.threads)).encode())
        rows = [old[n] for n in [*CONFIGS, *CLASSIFY] if n in old]
        ctx = _with_commands(context(threads=args.threads), old_ctx)
        atomic_write(csv_path, csv_text(FIELDS, rows, ctx).encode())
        atomic_write(md_path, markdown(ctx, rows).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
