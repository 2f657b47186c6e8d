"""Occluded MNIST: digits that overlap, the ones in front hiding what lies behind them.

Each digit is printed on an opaque black card the size of its tight box. Digits are ordered
front to back (object 0 in front, as SuPAIR orders its objects: earlier objects occlude later
ones) and drawn back to front, each card replacing the pixels beneath it, so the occluded pixels
are truly gone from the image. Positions are uniform (each square patch inside the canvas),
redrawn until at least :data:`MIN_VISIBLE` of the digit's ink stays visible; a scene whose
digit finds no such position in :data:`_TRIES` draws is laid out anew.

Boxes are the full (amodal) tight boxes, front to back. With ``layers`` each digit is also kept
alone on an empty canvas, unoccluded: the hidden truth that an amodal completion is measured
against.
"""

from __future__ import annotations

import numpy as np

from .render import CHUNK_SIZE, UniformPool, bright_colours, digit_patches, stream, tight_boxes_list

__all__ = ["MIN_VISIBLE", "occluded_chunk"]

MIN_VISIBLE = 0.5
"""Least fraction of each digit's ink (nonzero pixels) left visible by the cards in front of it."""

_TRIES = 50
_RESTARTS = 200


def _place(pool: UniformPool, patches: list[np.ndarray], tight: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Top-left positions of the patches, front to back, each leaving :data:`MIN_VISIBLE` of its ink visible.

    Args:
        pool: Source of uniform numbers.
        patches: Square uint8 patches, front to back.
        tight: ``(K, 4)`` their tight boxes within the patches.
        size: Canvas side S.

    Raises:
        ValueError: No layout was found (the canvas is too small for these digits).
    """
    for _ in range(_RESTARTS):
        hidden = np.zeros((size, size), dtype=bool)  # covered by the cards placed so far (all in front)
        positions: list[tuple[int, int]] = []
        for patch, (bx0, by0, bx1, by1) in zip(patches, tight.tolist()):
            s = patch.shape[0]
            ink = patch > 0
            total = max(int(ink.sum()), 1)
            for _ in range(_TRIES):
                x = int(pool.next() * (size - s + 1))
                y = int(pool.next() * (size - s + 1))
                if int((ink & ~hidden[y : y + s, x : x + s]).sum()) >= MIN_VISIBLE * total:
                    positions.append((x, y))
                    hidden[y + by0 : y + by1, x + bx0 : x + bx1] = True
                    break
            else:
                break
        if len(positions) == len(patches):
            return positions
    raise ValueError(f"could not lay out {len(patches)} occluding digits in a {size}x{size} scene")


def occluded_chunk(
    digits: np.ndarray,
    keep: int,
    seed: int,
    split: str,
    chunk: int,
    scene_size: int,
    objects: tuple[int, int],
    colour: bool,
    layers: bool,
) -> tuple[np.ndarray, ...]:
    """The first ``keep`` scenes of an occluded-MNIST chunk (draws made for the full chunk).

    Returns:
        ``images (keep, C, S, S)`` uint8, ``counts (keep,)`` int64, ``boxes (keep, M, 4)``
        float32 (front to back), and with ``layers`` also ``(keep, M, C, S, S)`` uint8: each
        digit alone.
    """
    rng = stream(seed, "occluded", split, chunk, "scene")
    counts = rng.integers(objects[0], objects[1] + 1, size=CHUNK_SIZE)
    total, used = int(counts.sum()), int(counts[:keep].sum())
    patches = digit_patches(rng, digits, total, used, scene_size)
    channels = 3 if colour else 1
    tint = bright_colours(stream(seed, "occluded", split, chunk, "colour"), total) if colour else None
    tight = tight_boxes_list(patches)
    pool = UniformPool(stream(seed, "occluded", split, chunk, "layout"))
    S, M = scene_size, objects[1]
    images = np.zeros((keep, channels, S, S), dtype=np.uint8)
    boxes = np.zeros((keep, M, 4), dtype=np.float32)
    alone = np.zeros((keep, M, channels, S, S), dtype=np.uint8) if layers else None
    k = 0
    for i in range(keep):  # scenes
        c = int(counts[i])
        positions = _place(pool, patches[k : k + c], tight[k : k + c], S) if c else []
        for slot in reversed(range(c)):  # back to front: each card replaces what lies beneath it
            j = k + slot
            x, y = positions[slot]
            patch = patches[j][None].astype(np.uint16)
            drawn = (patch if tint is None else (patch * tint[j][:, None, None] + 127) // 255).astype(np.uint8)
            bx0, by0, bx1, by1 = tight[j].tolist()
            images[i, :, y + by0 : y + by1, x + bx0 : x + bx1] = drawn[:, by0:by1, bx0:bx1]
            boxes[i, slot] = (x + bx0, y + by0, x + bx1, y + by1)
            if alone is not None:
                s = patch.shape[-1]
                alone[i, slot, :, y : y + s, x : x + s] = drawn
        k += c
    out: tuple[np.ndarray, ...] = (images, counts[:keep].astype(np.int64), boxes)
    return out + (alone,) if alone is not None else out
