"""A user's own scenes: digits of varied size that may touch, on backgrounds no built-in data set has.

Writes an ``.npz`` for ``supair train --data`` with ``images`` (N, 50, 50) uint8, ``counts`` (N,)
and ``boxes`` (N, 3, 4) (tight boxes of the digits' ink, for the IoU; SuPAIR never trains on
them). Each scene:

* a background of one of three kinds, drawn at random: a smooth **gradient** (a linear ramp in a
  random direction between two grey levels in [0, 0.55]), **blobs** (a base level plus two to
  five Gaussian blobs of random width, bright or dark) or a **texture** (a base level plus
  a low-contrast pattern: oriented stripes or smoothed noise, amplitude up to 0.12);
* 0 to 3 handwritten digits (uniform), MNIST's validation digits, each cut to its ink and
  resized so that it is 18 to 26 px tall (uniform; width in proportion), drawn as ink of
  brightness 0.75 to 1 over the background (``x = bg (1 - a) + level a`` with ``a`` the digit);
* positions uniform inside the canvas; digits may touch: their tight boxes may overlap by up to
  ``--touch`` px in each direction (default 3), and are otherwise kept apart.

Usage::

    python benchmarks/user_scenes.py --out runs/user/scenes.npz [--num-images 20000] [--seed 0]
    supair train --data runs/user/scenes.npz --minutes 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import atomic_write

from spnkit.datasets import load_mnist

__all__ = ["make_scenes", "main"]

SIZE = 50
MAX_DIGITS = 3


def _digits(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` MNIST validation digits cut to their ink, resized to 18-26 px tall, as float arrays in [0, 1]."""
    pool = load_mnist("valid")[0].numpy().reshape(-1, 28, 28).astype(np.float32) / 255.0
    out = []
    for k in rng.integers(0, len(pool), size=n).tolist():
        d = pool[k]
        rows, cols = np.flatnonzero(d.any(1)), np.flatnonzero(d.any(0))
        d = d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h = int(rng.integers(18, 27))
        w = max(2, int(round(d.shape[1] * h / d.shape[0])))
        t = torch.from_numpy(np.ascontiguousarray(d))[None, None]
        out.append(F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0, 0].clamp(0, 1).numpy())
    return out


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        a, b = rng.uniform(0, 0.55, size=2)
        return (a + (b - a) * t).astype(np.float32)
    base = rng.uniform(0.05, 0.4)
    if kind == 1:  # blobs
        bg = np.full((SIZE, SIZE), base, dtype=np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
            amp = rng.uniform(-0.2, 0.25)
            bg += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        return bg
    amp = rng.uniform(0.04, 0.12)  # texture
    if rng.random() < 0.5:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 10) / SIZE
        phase = np.cos(angle) * xx + np.sin(angle) * yy
        return (base + amp * np.sin(2 * np.pi * phase / period)).astype(np.float32)
    noise = torch.from_numpy(rng.standard_normal((1, 1, SIZE, SIZE)).astype(np.float32))
    smooth = F.avg_pool2d(F.pad(noise, (2, 2, 2, 2), mode="circular"), 5, stride=1)[0, 0].numpy()
    return (base + amp * smooth / max(float(np.abs(smooth).max()), 1e-6)).astype(np.float32)


def _layout(rng: np.random.Generator, shapes: list[tuple[int, int]], touch: int) -> list[tuple[int, int]] | None:
    """Top-left corners ``(x, y)`` whose boxes overlap by at most ``touch`` px in each direction (None: no room)."""
    placed: list[tuple[int, int, int, int]] = []
    for h, w in shapes:
        for _ in range(200):
            x, y = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
            if all(min(x + w, X1) - max(x, X0) <= touch or min(y + h, Y1) - max(y, Y0) <= touch for X0, Y0, X1, Y1 in placed):
                placed.append((x, y, x + w, y + h))
                break
        else:
            return None
    return [(p[0], p[1]) for p in placed]


def make_scenes(num_images: int, seed: int = 0, touch: int = 3) -> dict[str, np.ndarray]:
    """``images`` (N, 50, 50) uint8, ``counts`` (N,) int64 and ``boxes`` (N, 3, 4) float32 (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((num_images, SIZE, SIZE), dtype=np.uint8)
    counts = rng.integers(0, MAX_DIGITS + 1, size=num_images)
    boxes = np.zeros((num_images, MAX_DIGITS, 4), dtype=np.float32)
    digits = _digits(rng, int(counts.sum()))
    k = 0
    for i in range(num_images):  # scenes
        bg = _background(rng)
        c = int(counts[i])
        mine = digits[k : k + c]
        k += c
        where = None
        while where is None:
            where = _layout(rng, [d.shape for d in mine], touch)
            if where is None:  # no room for these sizes: shrink the tallest digit's draw by redrawing the scene's digits
                mine = _digits(rng, c)
        x = bg.copy()
        for slot, (d, (x0, y0)) in enumerate(zip(mine, where)):
            h, w = d.shape
            level = rng.uniform(0.75, 1.0)
            region = x[y0 : y0 + h, x0 : x0 + w]
            np.copyto(region, np.maximum(region * (1 - d) + level * d, region))
            boxes[i, slot] = (x0, y0, x0 + w, y0 + h)
        images[i] = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return {"images": images, "counts": counts.astype(np.int64), "boxes": boxes}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help=".npz to write")
    p.add_argument("--num-images", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--touch", type=int, default=3, help="most overlap of two digits' tight boxes, in px per direction")
    args = p.parse_args(argv)
    if args.num_images < 1 or args.touch < 0:
        p.error("--num-images must be >= 1 and --touch >= 0")
    arrays = make_scenes(args.num_images, args.seed, args.touch)
    atomic_write(args.out, lambda fh: np.savez_compressed(fh, **arrays))
    print(f"{args.out}: {args.num_images} scenes, counts {np.bincount(arrays['counts']).tolist()}")


if __name__ == "__main__":
    main()
