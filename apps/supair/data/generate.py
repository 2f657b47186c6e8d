"""Generated scene data sets: the four families of the SuPAIR paper, crowded and occluded scenes.

Counts are uniform over ``{min_objects, ..., max_objects}`` (by default ``{0, ..., 2}`` on 50x50
canvases; :data:`~supair.names.DATASET_DEFAULTS` gives each data set's):

* ``"multi-mnist"``: MNIST digits, each rescaled by ``1 / (1.3 + 0.1 * N(0, 1))`` (about 21 px),
  placed at random so that no two digits' bounding boxes overlap; combined by pixel-wise max.
* ``"sprites"``: circles, squares and diamonds of 12 to 16 px in random bright colours on black;
  grey (ITU-R 601 luma) unless ``colour=True``.
* ``"noisy-mnist"``: multi-MNIST followed by ``x -> 0.8 x + 0.1 + N(0, 0.2^2)``, clipped to [0, 1].
* ``"grid-mnist"``: multi-MNIST over one-pixel grid lines every 5 px (random offset per image and
  axis) of intensity 0.4, combined by pixel-wise max (as the original SuPAIR data: every grid pixel
  is raised to at least 0.4).
* ``"crowded-mnist"``: multi-MNIST's digits and placement on a 96x96 canvas with 0 to 9 digits
  (its own random streams).
* ``"occluded-mnist"``: 0 to 3 digits that may overlap, each printed on an opaque card the size of
  its tight box, so the digits in front hide what lies behind them (:mod:`.occluded`); with
  ``layers=True`` every digit is also kept alone, unoccluded.

A box is the tight box of the object's nonzero pixels (as stored, i.e. after quantisation to
uint8). Except in ``"occluded-mnist"``, non-overlap is enforced on these tight boxes (rejection
sampling), so objects never share a pixel. The object's square patch (its resized 28x28 digit,
or its sprite) always lies fully inside the canvas.

Determinism: every scene is generated from :class:`numpy.random.SeedSequence` streams keyed by
``(seed, family, split, chunk, purpose)`` (:func:`.render.stream`); scenes are produced in chunks
of ``CHUNK_SIZE``, so a smaller ``num_images`` gives a prefix of a larger one with the same other
parameters. The three MNIST families of the paper share the digit layout stream: ``noisy-mnist``
and ``grid-mnist`` with seed *s* are ``multi-mnist`` with seed *s* plus their background;
``crowded-mnist`` and ``occluded-mnist`` have families of their own. Train and test scenes use
different streams and different source digits (MNIST train vs MNIST test; a ``"valid"`` split
uses MNIST's validation digits), read with :func:`spnkit.datasets.load_mnist`.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
import torch

from spnkit.datasets import load_mnist

from ..names import DATASET_DEFAULTS, DATASETS
from .occluded import occluded_chunk
from .render import CHUNK_SIZE, UniformPool, bright_colours, compose, digit_patches, grey, stream, tight_boxes_list
from .scenes import MAX_SCENE_SIZE, SceneSet

__all__ = ["DATASETS", "SPLITS", "CHUNK_SIZE", "FORMAT_VERSION", "GRID_LEVEL", "generate_dataset", "validate_request", "mnist_digits"]

SPLITS: tuple[str, ...] = ("train", "test", "valid")
"""Splits accepted by :func:`generate_dataset` (``"valid"`` uses MNIST's validation digits)."""

FORMAT_VERSION = 2
"""Version of the generated scenes; part of every cache key, so that changed generation never reuses stale files."""

GRID_LEVEL = 102  # grid intensity as uint8: 102 / 255 = 0.4

DEFAULT_NUM_IMAGES = {"train": 50000, "test": 5000, "valid": 5000}
_FAMILY = {"multi-mnist": "mnist", "noisy-mnist": "mnist", "grid-mnist": "mnist", "sprites": "sprites",
           "crowded-mnist": "crowded", "occluded-mnist": "occluded"}  # the random streams each data set draws from

_MIN_SCENE_SIZE = 16
_MAX_NUM_IMAGES = 10_000_000


@lru_cache(maxsize=3)
def mnist_digits(split: str) -> np.ndarray:
    """MNIST digits of one split as read-only ``(N, 28, 28)`` float32 in [0, 1) (pixel ``k`` as ``k / 256``)."""
    pixels = load_mnist(split)[0].numpy()  # (N, 784) uint8
    digits = pixels.reshape(-1, 28, 28).astype(np.float32) / np.float32(256.0)  # exact: k / 256 is a float32
    digits.flags.writeable = False
    return digits



def _mnist_chunk(
    digits: np.ndarray,
    keep: int,
    seed: int,
    split: str,
    chunk: int,
    scene_size: int,
    objects: tuple[int, int],
    colour: bool,
    family: str = "mnist",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``keep`` scenes of a chunk of MNIST digits that do not overlap (multi-MNIST, crowded MNIST).

    All random draws are made for the full chunk (``CHUNK_SIZE`` scenes) so that the kept scenes
    do not depend on ``keep``; only the kept scenes are rendered. ``objects``: the count range.

    Returns:
        ``images (keep, C, S, S)`` uint8, ``counts (keep,)`` int64, ``boxes (keep, M, 4)``.
    """
    rng = stream(seed, family, split, chunk, "scene")
    counts = rng.integers(objects[0], objects[1] + 1, size=CHUNK_SIZE)
    used = int(counts[:keep].sum())
    patches = digit_patches(rng, digits, int(counts.sum()), used, scene_size)
    colours = None
    channels = 1
    if colour:
        colours = bright_colours(stream(seed, family, split, chunk, "colour"), int(counts.sum()))
        channels = 3
    tight = tight_boxes_list(patches)
    images, boxes = compose(
        keep, counts, patches, tight, colours, UniformPool(rng), scene_size, objects[1], channels
    )
    return images, counts[:keep].astype(np.int64), boxes


@cache
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
    keep: int, seed: int, split: str, chunk: int, scene_size: int, objects: tuple[int, int], colour: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``keep`` scenes of a sprites chunk (draws made for the full chunk).

    Returns:
        ``images (keep, C, S, S)`` uint8, ``counts (keep,)`` int64, ``boxes (keep, M, 4)``.
    """
    rng = stream(seed, "sprites", split, chunk, "scene")
    counts = rng.integers(objects[0], objects[1] + 1, size=CHUNK_SIZE)
    total = int(counts.sum())
    shapes = rng.integers(0, 3, size=total)
    sizes = np.minimum(rng.integers(12, 17, size=total), scene_size)
    rgb = bright_colours(rng, total)
    used = int(counts[:keep].sum())
    patches = [
        _sprite_mask(int(a), int(s)) for a, s in zip(shapes[:used].tolist(), sizes[:used].tolist())
    ]
    tight = tight_boxes_list(patches)
    colours = rgb if colour else grey(rgb)
    images, boxes = compose(
        keep, counts, patches, tight, colours, UniformPool(rng), scene_size, objects[1],
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
    name: str, split: str, num_images: int | None, seed: int, scene_size: int | None = None,
    max_objects: int | None = None, min_objects: int = 0, layers: bool = False,
) -> dict[str, object]:
    """The generation parameters of a request, defaults filled in; a ValueError for a bad one.

    Returns:
        The parameters that name a cache file: ``format_version``, ``name``, ``split``,
        ``num_images``, ``seed``, ``scene_size``, ``max_objects``, ``colour`` (False; the caller
        sets it), and ``min_objects`` and ``layers`` only where they are not 0 and False (so that
        the keys of the sets generated before these parameters existed stay the same).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    default_size, (_, default_most) = DATASET_DEFAULTS[name]
    num_images = DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
    scene_size = default_size if scene_size is None else scene_size
    max_objects = default_most if max_objects is None else max_objects
    for label, value in (("num_images", num_images), ("seed", seed), ("scene_size", scene_size),
                         ("max_objects", max_objects), ("min_objects", min_objects)):
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
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
    # Rough capacity check: objects' tight boxes (about 12x12 at least) must fit side by side.
    if max_objects * 12 * 12 > scene_size * scene_size:
        raise ValueError(
            f"max_objects={max_objects} objects cannot fit without overlap in a "
            f"{scene_size}x{scene_size} scene"
        )
    if layers and _FAMILY[name] != "occluded":
        raise ValueError(f"layers (each object alone) are kept for occluded-mnist only, not {name}")
    params: dict[str, object] = {
        "format_version": FORMAT_VERSION, "name": name, "split": split, "num_images": int(num_images),
        "seed": int(seed), "scene_size": int(scene_size), "max_objects": int(max_objects), "colour": False,
    }
    if min_objects:
        params["min_objects"] = int(min_objects)
    if layers:
        params["layers"] = True
    return params


def generate_dataset(
    name: str,
    split: str,
    *,
    num_images: int | None = None,
    seed: int = 0,
    scene_size: int | None = None,
    max_objects: int | None = None,
    colour: bool = False,
    min_objects: int = 0,
    layers: bool = False,
) -> SceneSet:
    """Generate a scene set without touching the cache (see :func:`load_dataset`).

    ``scene_size`` and ``max_objects`` default to the data set's (:data:`DATASET_DEFAULTS`);
    counts are uniform over ``{min_objects, ..., max_objects}``. ``layers`` (occluded-mnist
    only): also keep every object alone on an empty canvas, unoccluded.

    Returns:
        A :class:`SceneSet` with images ``(N, C, S, S)`` uint8, counts ``(N,)``, boxes
        ``(N, max_objects, 4)`` and, with ``layers``, layers ``(N, max_objects, C, S, S)``.
    """
    p = validate_request(name, split, num_images, seed, scene_size, max_objects, min_objects, layers)
    n, seed, size = int(p["num_images"]), int(p["seed"]), int(p["scene_size"])  # type: ignore[call-overload]
    objects = (int(min_objects), int(p["max_objects"]))  # type: ignore[call-overload]
    family = _FAMILY[name]
    digits = mnist_digits(split) if family != "sprites" else None
    parts: list[tuple[np.ndarray, ...]] = []
    for chunk in range(math.ceil(n / CHUNK_SIZE)):
        # Random draws are made for full chunks so that smaller sets are prefixes of larger ones.
        keep = min(CHUNK_SIZE, n - chunk * CHUNK_SIZE)
        if family == "sprites":
            part: tuple[np.ndarray, ...] = _sprites_chunk(keep, seed, split, chunk, size, objects, colour)
        elif family == "occluded":
            assert digits is not None
            part = occluded_chunk(digits, keep, seed, split, chunk, size, objects, colour, layers)
        else:
            assert digits is not None
            part = _mnist_chunk(digits, keep, seed, split, chunk, size, objects, colour, family)
        if name == "noisy-mnist":
            _add_noise(part[0], stream(seed, "mnist", split, chunk, "noise"))
        elif name == "grid-mnist":
            _add_grid(part[0], stream(seed, "mnist", split, chunk, "grid"))
        parts.append(part)
    cat = lambda k: torch.from_numpy(np.concatenate([q[k] for q in parts]))
    return SceneSet(images=cat(0), counts=cat(1), boxes=cat(2), name=f"{name}/{split}", layers=cat(3) if layers else None)
