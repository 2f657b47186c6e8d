"""Generated scene data sets: the four families of the SuPAIR paper.

All 50x50 by default, 0 to ``max_objects`` objects per scene, count uniform over
``{0, ..., max_objects}``:

* ``"multi-mnist"``: MNIST digits, each rescaled by ``1 / (1.3 + 0.1 * N(0, 1))`` (about 21 px),
  placed at random so that no two digits' bounding boxes overlap; combined by pixel-wise max.
* ``"sprites"``: circles, squares and diamonds of 12 to 16 px in random bright colours on black;
  grey (ITU-R 601 luma) unless ``colour=True``.
* ``"noisy-mnist"``: multi-MNIST followed by ``x -> 0.8 x + 0.1 + N(0, 0.2^2)``, clipped to [0, 1].
* ``"grid-mnist"``: multi-MNIST over one-pixel grid lines every 5 px (random offset per image and
  axis) of intensity 0.4, combined by pixel-wise max (as the original SuPAIR data: every grid pixel
  is raised to at least 0.4).

A box is the tight box of the object's nonzero pixels (as stored, i.e. after quantisation to
uint8). Non-overlap is enforced on these tight boxes (rejection sampling), so objects never share
a pixel. The object's square patch (its resized 28x28 digit, or its sprite) always lies fully
inside the canvas.

Determinism: every scene is generated from :class:`numpy.random.SeedSequence` streams keyed by
``(seed, family, split, chunk, purpose)``; scenes are produced in chunks of ``CHUNK_SIZE``, so a
smaller ``num_images`` gives a prefix of a larger one with the same other parameters. The three
MNIST families share the digit layout stream: ``noisy-mnist`` and ``grid-mnist`` with seed *s*
are ``multi-mnist`` with seed *s* plus their background. Train and test scenes use different
streams and different source digits (MNIST train vs MNIST test; a ``"valid"`` split uses MNIST's
validation digits), read with :func:`spnkit.datasets.load_mnist`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from spnkit.datasets import load_mnist

from ..names import DATASETS
from .scenes import LUMA, MAX_SCENE_SIZE, SceneSet

__all__ = ["DATASETS", "SPLITS", "CHUNK_SIZE", "FORMAT_VERSION", "GRID_LEVEL", "generate_dataset", "validate_request", "mnist_digits"]

SPLITS: tuple[str, ...] = ("train", "test", "valid")
"""Splits accepted by :func:`generate_dataset` (``"valid"`` uses MNIST's validation digits)."""

FORMAT_VERSION = 2
"""Version of the generated scenes; part of every cache key, so that changed generation never reuses stale files."""

GRID_LEVEL = 102  # grid intensity as uint8: 102 / 255 = 0.4

CHUNK_SIZE = 1000
"""Scenes are generated in chunks of this many, each from its own random streams."""

DEFAULT_NUM_IMAGES = {"train": 50000, "test": 5000, "valid": 5000}
_SPLIT_IDS = {"train": 0, "test": 1, "valid": 2}
_FAMILY_IDS = {"mnist": 0, "sprites": 1}
_PURPOSE_IDS = {"scene": 0, "colour": 1, "noise": 2, "grid": 3}

_REJECTION_TRIES = 20
_MAX_RESTARTS_PER_SCENE = 200
_MIN_SCENE_SIZE = 16
_MAX_NUM_IMAGES = 10_000_000


@lru_cache(maxsize=3)
def mnist_digits(split: str) -> np.ndarray:
    """MNIST digits of one split as read-only ``(N, 28, 28)`` float32 in [0, 1) (pixel ``k`` as ``k / 256``)."""
    pixels = load_mnist(split)[0].numpy()  # (N, 784) uint8
    digits = pixels.reshape(-1, 28, 28).astype(np.float32) / np.float32(256.0)  # exact: k / 256 is a float32
    digits.flags.writeable = False
    return digits



def _rng(seed: int, family: str, split: str, chunk: int, purpose: str) -> np.random.Generator:
    key = (_FAMILY_IDS[family], _SPLIT_IDS[split], chunk, _PURPOSE_IDS[purpose])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class _UniformPool:
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


def _tight_boxes(patches: np.ndarray) -> np.ndarray:
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


def _place_scene(
    pool: _UniformPool, patch_sizes: Sequence[int], tight: np.ndarray, scene_size: int
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


def _bright_colours(rng: np.random.Generator, n: int, min_luma: float = 0.35) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, uniform over those whose luma is at least ``min_luma``."""
    out = np.empty((0, 3), dtype=np.uint8)
    while out.shape[0] < n:
        cand = rng.integers(0, 256, size=(max(2 * (n - out.shape[0]), 16), 3), dtype=np.int64)
        ok = cand @ LUMA >= min_luma * 255.0
        out = np.concatenate([out, cand[ok].astype(np.uint8)])
    return out[:n]


def _grey(colours: np.ndarray) -> np.ndarray:
    """``(n, 3)`` uint8 RGB -> ``(n, 1)`` uint8 luma."""
    return np.clip(np.rint(colours.astype(np.float64) @ LUMA), 0, 255).astype(np.uint8)[:, None]


def _compose(
    n: int,
    counts: np.ndarray,
    patches: list[np.ndarray],
    tight: np.ndarray,
    colours: np.ndarray | None,
    pool: _UniformPool,
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
        positions = _place_scene(pool, sizes, tight[k : k + c], scene_size)
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


def _resize_digits(digits: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
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


def _mnist_chunk(
    digits: np.ndarray,
    keep: int,
    seed: int,
    split: str,
    chunk: int,
    scene_size: int,
    max_objects: int,
    colour: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``keep`` scenes of a multi-MNIST chunk.

    All random draws are made for the full chunk (``CHUNK_SIZE`` scenes) so that the kept scenes
    do not depend on ``keep``; only the kept scenes are rendered.

    Returns:
        ``images (keep, C, S, S)`` uint8, ``counts (keep,)`` int64, ``boxes (keep, M, 4)``.
    """
    rng = _rng(seed, "mnist", split, chunk, "scene")
    counts = rng.integers(0, max_objects + 1, size=CHUNK_SIZE)
    total = int(counts.sum())
    which = rng.integers(0, digits.shape[0], size=total)
    z = np.clip(rng.standard_normal(total), -3.0, 3.0)
    sizes = np.clip(np.rint(28.0 / (1.3 + 0.1 * z)).astype(np.int64), 4, scene_size)
    colours = None
    channels = 1
    if colour:
        colours = _bright_colours(_rng(seed, "mnist", split, chunk, "colour"), total)
        channels = 3
    used = int(counts[:keep].sum())
    patches = _resize_digits(digits[which[:used]], sizes[:used])
    tight = _tight_boxes_list(patches)
    images, boxes = _compose(
        keep, counts, patches, tight, colours, _UniformPool(rng), scene_size, max_objects, channels
    )
    return images, counts[:keep].astype(np.int64), boxes


def _tight_boxes_list(patches: list[np.ndarray]) -> np.ndarray:
    """Tight boxes ``(K, 4)`` of a list of square patches of varying size."""
    out = np.zeros((len(patches), 4), dtype=np.int64)
    by_size: dict[int, list[int]] = {}
    for j, p in enumerate(patches):
        by_size.setdefault(p.shape[0], []).append(j)
    for idx in by_size.values():
        out[idx] = _tight_boxes(np.stack([patches[j] for j in idx]))
    return out


@lru_cache(maxsize=None)
def _sprite_mask(shape: int, s: int) -> np.ndarray:
    """``(s, s)`` uint8 mask (0 or 255) of a circle (0), square (1) or diamond (2)."""
    c = (s - 1) / 2.0
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    if shape == 0:
        mask = (xx - c) ** 2 + (yy - c) ** 2 <= (s / 2.0) ** 2
    elif shape == 1:
        mask = np.ones((s, s), dtype=bool)
    else:
        mask = np.abs(xx - c) + np.abs(yy - c) <= s / 2.0
    out = mask.astype(np.uint8) * 255
    out.flags.writeable = False
    return out


def _sprites_chunk(
    keep: int, seed: int, split: str, chunk: int, scene_size: int, max_objects: int, colour: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``keep`` scenes of a sprites chunk (draws made for the full chunk).

    Returns:
        ``images (keep, C, S, S)`` uint8, ``counts (keep,)`` int64, ``boxes (keep, M, 4)``.
    """
    rng = _rng(seed, "sprites", split, chunk, "scene")
    counts = rng.integers(0, max_objects + 1, size=CHUNK_SIZE)
    total = int(counts.sum())
    shapes = rng.integers(0, 3, size=total)
    sizes = np.minimum(rng.integers(12, 17, size=total), scene_size)
    rgb = _bright_colours(rng, total)
    used = int(counts[:keep].sum())
    patches = [
        _sprite_mask(int(a), int(s)) for a, s in zip(shapes[:used].tolist(), sizes[:used].tolist())
    ]
    tight = _tight_boxes_list(patches)
    colours = rgb if colour else _grey(rgb)
    images, boxes = _compose(
        keep, counts, patches, tight, colours, _UniformPool(rng), scene_size, max_objects,
        3 if colour else 1,
    )
    return images, counts[:keep].astype(np.int64), boxes


def _add_noise(images: np.ndarray, rng: np.random.Generator) -> None:
    """In place: ``x -> clip(0.8 x + 0.1 + N(0, 0.2^2), 0, 1)`` on uint8 images."""
    x = images.astype(np.float32) * np.float32(0.8 / 255.0)
    x += np.float32(0.1)
    x += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(0.2)
    np.clip(x, 0.0, 1.0, out=x)
    x *= np.float32(255.0)
    np.rint(x, out=x)
    images[...] = x.astype(np.uint8)


def _add_grid(images: np.ndarray, rng: np.random.Generator) -> None:
    """In place: max with 1-px grid lines of intensity 0.4 every 5 px, random offsets per image and axis."""
    n, _, h, w = images.shape
    offsets = rng.integers(0, 5, size=(CHUNK_SIZE, 2))[:n]  # drawn for a full chunk: prefixes
    rows = (np.arange(h)[None, :] - offsets[:, 1:2]) % 5 == 0  # (n, h)
    cols = (np.arange(w)[None, :] - offsets[:, 0:1]) % 5 == 0  # (n, w)
    grid = (rows[:, :, None] | cols[:, None, :]).astype(np.uint8) * np.uint8(GRID_LEVEL)
    np.maximum(images, grid[:, None], out=images)


def validate_request(
    name: str, split: str, num_images: int | None, seed: int, scene_size: int, max_objects: int
) -> int:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if num_images is None:
        num_images = DEFAULT_NUM_IMAGES[split]
    for label, value in (("num_images", num_images), ("seed", seed), ("scene_size", scene_size),
                         ("max_objects", max_objects)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{label} must be an int, got {value!r}")
    if not 1 <= num_images <= _MAX_NUM_IMAGES:
        raise ValueError(f"num_images must be in [1, {_MAX_NUM_IMAGES}], got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not _MIN_SCENE_SIZE <= scene_size <= MAX_SCENE_SIZE:
        raise ValueError(
            f"scene_size must be in [{_MIN_SCENE_SIZE}, {MAX_SCENE_SIZE}], got {scene_size}"
        )
    if max_objects < 0:
        raise ValueError(f"max_objects must be >= 0, got {max_objects}")
    # Rough capacity check: objects' tight boxes (about 12x12 at least) must fit side by side.
    if max_objects * 12 * 12 > scene_size * scene_size:
        raise ValueError(
            f"max_objects={max_objects} objects cannot fit without overlap in a "
            f"{scene_size}x{scene_size} scene"
        )
    return int(num_images)


def generate_dataset(
    name: str,
    split: str,
    *,
    num_images: int | None = None,
    seed: int = 0,
    scene_size: int = 50,
    max_objects: int = 2,
    colour: bool = False,
) -> SceneSet:
    """Generate a scene set without touching the cache (see :func:`load_dataset`).

    Returns:
        A :class:`SceneSet` with images ``(N, C, S, S)`` uint8, counts ``(N,)`` and boxes
        ``(N, max_objects, 4)``.
    """
    n = validate_request(name, split, num_images, seed, scene_size, max_objects)
    seed = int(seed)
    digits = mnist_digits(split) if name != "sprites" else None
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for chunk in range(math.ceil(n / CHUNK_SIZE)):
        # Random draws are made for full chunks so that smaller sets are prefixes of larger ones.
        keep = min(CHUNK_SIZE, n - chunk * CHUNK_SIZE)
        if name == "sprites":
            imgs, cnts, bxs = _sprites_chunk(
                keep, seed, split, chunk, scene_size, max_objects, colour
            )
        else:
            assert digits is not None
            imgs, cnts, bxs = _mnist_chunk(
                digits, keep, seed, split, chunk, scene_size, max_objects, colour
            )
        if name == "noisy-mnist":
            _add_noise(imgs, _rng(seed, "mnist", split, chunk, "noise"))
        elif name == "grid-mnist":
            _add_grid(imgs, _rng(seed, "mnist", split, chunk, "grid"))
        parts.append((imgs, cnts, bxs))
    images = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    boxes = np.concatenate([p[2] for p in parts])
    return SceneSet(
        images=torch.from_numpy(images),
        counts=torch.from_numpy(counts),
        boxes=torch.from_numpy(boxes),
        name=f"{name}/{split}",
    )
