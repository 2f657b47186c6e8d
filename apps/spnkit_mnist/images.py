"""Pictures of digits: grids of samples and completions, written as PNG."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["to_images", "pad_tiles", "grid", "write_png", "write_json"]

SHAPE = (28, 28)


def to_images(x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 784)`` values in [0, 1] to RGB images ``(N, 28, 28, 3)``; hidden pixels tinted blue."""
    img = x.detach().float().clamp(0, 1).view(-1, *SHAPE, 1).expand(-1, -1, -1, 3).clone()
    if hidden is not None:
        tint = torch.tensor([0.15, 0.25, 0.6], dtype=img.dtype)
        img[hidden.view(-1, *SHAPE)] = tint
    return img


def pad_tiles(tiles: torch.Tensor, count: int) -> torch.Tensor:
    """Tiles ``(n, ...)`` padded with white ones to ``count``."""
    if tiles.shape[0] == count:
        return tiles
    return torch.cat([tiles, tiles.new_ones(count - tiles.shape[0], *tiles.shape[1:])])


def grid(tiles: torch.Tensor, gap: int = 2, scale: int = 2) -> np.ndarray:
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


def write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    _atomic_write(path, lambda fh: Image.fromarray(image).save(fh, format="PNG"))


def write_json(obj: dict, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=float).encode()))
