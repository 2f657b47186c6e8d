"""The scene container shared by every SuPAIR data source.

Conventions:

* Images are stored as ``uint8`` tensors ``(N, C, H, W)``; :meth:`SceneSet.float_batch` gives
  float32 in [0, 1].
* Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates, half-open: the object's pixels are the
  columns ``x0 .. x1 - 1`` and the rows ``y0 .. y1 - 1`` (so width is ``x1 - x0``). Rows of
  ``boxes`` at or beyond a scene's count are zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..images import LUMA
from ..names import MAX_SCENE_SIZE

__all__ = ["SceneSet", "Index", "Log", "LUMA", "MAX_SCENE_SIZE"]


Index = torch.Tensor | slice | int | Sequence[int] | np.ndarray
Log = Callable[[str], Any]



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
        layers: ``(N, M, C, H, W)`` uint8 tensor: each object alone on an empty canvas,
            unoccluded (kept by occluded-mnist on request; the truth behind occluded pixels),
            or ``None``.
    """

    images: torch.Tensor
    counts: torch.Tensor | None
    boxes: torch.Tensor | None
    name: str
    layers: torch.Tensor | None = None

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
        if self.layers is not None:
            lay = self.layers
            if not isinstance(lay, torch.Tensor) or lay.dtype != torch.uint8 or lay.dim() != 5 or lay.shape[0] != n \
                    or tuple(lay.shape[2:]) != tuple(images.shape[1:]):
                raise ValueError(f"SceneSet.layers must be a uint8 tensor of shape ({n}, M, {', '.join(map(str, images.shape[1:]))})")

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
            layers=None if self.layers is None else self.layers[idx],
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
