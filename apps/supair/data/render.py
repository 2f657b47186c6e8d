"""Drawing scenes: the random streams, object placement, digit resizing and compositing.

Shared by the generated families (:mod:`.generate`, :mod:`.crowded`). Every random draw
comes from a :func:`stream` keyed by ``(seed, family, split, chunk, purpose)``; a family
added later gets a new family id, so that the streams of the existing families never change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..images import LUMA

__all__ = [
    "CHUNK_SIZE", "FAMILY_IDS", "SPLIT_IDS", "stream", "UniformPool", "tight_boxes", "tight_boxes_list", "place_scene",
    "compose", "resize_digits", "bright_colours", "grey", "digit_patches", "LUMA",
]

CHUNK_SIZE = 1000
"""Scenes are generated in chunks of this many, each from its own random streams."""

SPLIT_IDS = {"train": 0, "test": 1, "valid": 2}
FAMILY_IDS = {"mnist": 0, "sprites": 1, "crowded": 2, "occluded": 3}
PURPOSE_IDS = {"scene": 0, "colour": 1, "noise": 2, "grid": 3, "layout": 4}

_REJECTION_TRIES = 20
_MAX_RESTARTS_PER_SCENE = 200


def stream(seed: int, family: str, split: str, chunk: int, purpose: str) -> np.random.Generator:
    """The random generator of one (seed, family, split, chunk, purpose)."""
    key = (FAMILY_IDS[family], SPLIT_IDS[split], chunk, PURPOSE_IDS[purpose])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class UniformPool:
    """Uniform [0, 1) numbers drawn from ``rng`` in blocks, handed out one at a time."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng = rng
        self._block = block
        self._values: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._values):
            self._values = self._rng.random(self._block).tolist()
            self._pos = 0
        value = self._values[self._pos]
        self._pos += 1
        return value


def tight_boxes(patches: np.ndarray) -> np.ndarray:
    """Tight boxes of nonzero pixels.

    Args:
        patches: ``(K, h, w)`` array.

    Returns:
        ``(K, 4)`` int64 ``(x0, y0, x1, y1)`` half-open within the patch; the whole patch for an
        all-zero patch.
    """
    k, h, w = patches.shape
    rows = patches.any(axis=2)
    cols = patches.any(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    empty = ~rows.any(axis=1)
    boxes[empty] = (0, 0, w, h)
    return boxes


def place_scene(
    pool: UniformPool, patch_sizes: Sequence[int], tight: np.ndarray, scene_size: int
) -> list[tuple[int, int]]:
    """Sample patch positions whose tight boxes do not overlap.

    Objects are placed one after the other, each uniformly among the positions where its tight
    box overlaps no earlier one: first by rejection sampling (a few tries), then, if those fail,
    by choosing among all free positions at once (same distribution, exact). An object with no
    free position restarts the scene.

    Args:
        pool: Source of uniform numbers.
        patch_sizes: Side length of each (square) patch.
        tight: ``(K, 4)`` tight boxes within the patches.
        scene_size: Canvas side length S.

    Returns:
        ``K`` top-left positions ``(x, y)`` with each patch fully inside the canvas.

    Raises:
        ValueError: The objects could not be placed (canvas too small for this many).
    """
    tight_list = tight.tolist()
    for _ in range(_MAX_RESTARTS_PER_SCENE):
        placed: list[tuple[int, int, int, int]] = []
        positions: list[tuple[int, int]] = []
        for s, (bx0, by0, bx1, by1) in zip(patch_sizes, tight_list):
            span = scene_size - s + 1
            found = None
            for _ in range(_REJECTION_TRIES):
                x = int(pool.next() * span)
                y = int(pool.next() * span)
                ax0, ay0, ax1, ay1 = x + bx0, y + by0, x + bx1, y + by1
                for qx0, qy0, qx1, qy1 in placed:
                    if ax0 < qx1 and qx0 < ax1 and ay0 < qy1 and qy0 < ay1:
                        break
                else:
                    found = (x, y)
                    break
            if found is None:
                # Free top-left positions: x + bx0 < qx1 and qx0 < x + bx1 means a clash.
                free = np.ones((span, span), dtype=bool)  # [y, x]
                for qx0, qy0, qx1, qy1 in placed:
                    xa, xb = max(qx0 - bx1 + 1, 0), min(qx1 - bx0, span)
                    ya, yb = max(qy0 - by1 + 1, 0), min(qy1 - by0, span)
                    if xa < xb and ya < yb:
                        free[ya:yb, xa:xb] = False
                options = np.flatnonzero(free)
                if options.size == 0:
                    break  # no room for this object: restart the scene
                pick = int(options[min(int(pool.next() * options.size), options.size - 1)])
                found = (pick % span, pick // span)
            x, y = found
            placed.append((x + bx0, y + by0, x + bx1, y + by1))
            positions.append(found)
        if len(positions) == len(patch_sizes):
            return positions
    raise ValueError(
        f"could not place {len(patch_sizes)} non-overlapping objects in a "
        f"{scene_size}x{scene_size} scene; use a larger scene_size or a smaller max_objects"
    )


def compose(
    n: int,
    counts: np.ndarray,
    patches: list[np.ndarray],
    tight: np.ndarray,
    colours: np.ndarray | None,
    pool: UniformPool,
    scene_size: int,
    max_objects: int,
    channels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Place patches into scenes (pixel-wise max).

    Args:
        n: Number of scenes.
        counts: ``(n,)`` objects per scene; objects are consumed in order.
        patches: One ``(s, s)`` uint8 intensity patch per object.
        tight: ``(K, 4)`` tight boxes within the patches.
        colours: ``(K, channels)`` uint8 colour per object, or ``None`` for plain grey.
        pool: Uniform numbers for the positions.
        scene_size: S.
        max_objects: M, the second dimension of the boxes.
        channels: C.

    Returns:
        ``images (n, C, S, S)`` uint8 and ``boxes (n, M, 4)`` float32.
    """
    images = np.zeros((n, channels, scene_size, scene_size), dtype=np.uint8)
    boxes = np.zeros((n, max_objects, 4), dtype=np.float32)
    k = 0
    for i in range(n):
        c = int(counts[i])
        if c == 0:
            continue
        sizes = [patches[j].shape[0] for j in range(k, k + c)]
        positions = place_scene(pool, sizes, tight[k : k + c], scene_size)
        for slot, (x, y) in enumerate(positions):
            j = k + slot
            patch = patches[j]
            s = patch.shape[0]
            region = images[i, :, y : y + s, x : x + s]
            if colours is None:
                np.maximum(region, patch[None], out=region)
            else:
                tinted = (patch[None].astype(np.uint16) * colours[j][:, None, None] + 127) // 255
                np.maximum(region, tinted.astype(np.uint8), out=region)
            bx0, by0, bx1, by1 = tight[j]
            boxes[i, slot] = (x + bx0, y + by0, x + bx1, y + by1)
        k += c
    return images, boxes


def resize_digits(digits: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Resize 28x28 float digits to the given square sizes (bilinear, antialiased).

    Args:
        digits: ``(K, 28, 28)`` float32 in [0, 1].
        sizes: ``(K,)`` target side lengths.

    Returns:
        ``K`` uint8 arrays ``(sizes[k], sizes[k])``.
    """
    out: list[np.ndarray] = [np.empty(0, dtype=np.uint8)] * len(sizes)
    for s in np.unique(sizes).tolist():
        idx = np.flatnonzero(sizes == s)
        x = torch.from_numpy(np.ascontiguousarray(digits[idx]))[:, None]
        if s != x.shape[-1]:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        q = (x[:, 0] * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
        for row, j in enumerate(idx.tolist()):
            out[j] = q[row]
    return out


def tight_boxes_list(patches: list[np.ndarray]) -> np.ndarray:
    """Tight boxes ``(K, 4)`` of a list of square patches of varying size."""
    out = np.zeros((len(patches), 4), dtype=np.int64)
    by_size: dict[int, list[int]] = {}
    for j, p in enumerate(patches):
        by_size.setdefault(p.shape[0], []).append(j)
    for idx in by_size.values():
        out[idx] = tight_boxes(np.stack([patches[j] for j in idx]))
    return out




def bright_colours(rng: np.random.Generator, n: int, min_luma: float = 0.35) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, uniform over those whose luma is at least ``min_luma``."""
    out = np.empty((0, 3), dtype=np.uint8)
    while out.shape[0] < n:
        cand = rng.integers(0, 256, size=(max(2 * (n - out.shape[0]), 16), 3), dtype=np.int64)
        ok = cand @ LUMA >= min_luma * 255.0
        out = np.concatenate([out, cand[ok].astype(np.uint8)])
    return out[:n]


def grey(colours: np.ndarray) -> np.ndarray:
    """``(n, 3)`` uint8 RGB -> ``(n, 1)`` uint8 luma."""
    return np.clip(np.rint(colours.astype(np.float64) @ LUMA), 0, 255).astype(np.uint8)[:, None]


def digit_patches(rng: np.random.Generator, digits: np.ndarray, total: int, used: int, scene_size: int) -> list[np.ndarray]:
    """Draw ``total`` digits and their sizes from ``rng``; the first ``used`` resized into square uint8 patches.

    Each digit is one of ``digits`` ``(K, 28, 28)`` at random, resized to ``28 / (1.3 + 0.1 z)``
    pixels with ``z ~ N(0, 1)`` clipped to +-3 (about 21 px; at most ``scene_size``). The draws
    are made for all ``total`` digits of a chunk, so the patches do not depend on ``used``.
    """
    which = rng.integers(0, digits.shape[0], size=total)
    z = np.clip(rng.standard_normal(total), -3.0, 3.0)
    sizes = np.clip(np.rint(28.0 / (1.3 + 0.1 * z)).astype(np.int64), 4, scene_size)
    return resize_digits(digits[which[:used]], sizes[:used])
