"""Boxes and the spatial transformer: cutting glimpses from images and pasting them back.

A box ``z_where = (width, height, x0, y0)`` is given in pixels of a square
canvas of side ``S`` (top-left corner at ``(x0, y0)``). The glimpse is the box
resampled to ``G x G`` pixels (bilinear, ``align_corners=False``); pixels of the
box outside the canvas read as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["box_to_theta", "glimpse_to_image_theta", "cut_glimpses", "paste_glimpses", "box_coverage", "box_corners"]


def _affine_terms(where: Tensor, canvas: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scales and translations of the glimpse-to-image map in normalized coordinates."""
    w, h, x0, y0 = where.unbind(-1)
    return w / canvas, h / canvas, (2 * x0 + w) / canvas - 1, (2 * y0 + h) / canvas - 1


def _theta(sx: Tensor, sy: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, tx], -1), torch.stack([zero, sy, ty], -1)], -2)


def box_to_theta(where: Tensor, canvas: int) -> Tensor:
    """Affine maps from glimpse coordinates to image coordinates (both in [-1, 1]).

    Args:
        where: ``(..., 4)`` boxes ``(width, height, x0, y0)`` in pixels.
        canvas: side of the square image in pixels.

    Returns:
        ``(..., 2, 3)`` for ``F.affine_grid``.
    """
    return _theta(*_affine_terms(where, canvas))


def _inverse_terms(where: Tensor, canvas: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scales and translations of the image-to-glimpse map (the inverse of :func:`_affine_terms`'s)."""
    sx, sy, tx, ty = _affine_terms(where, canvas)
    return 1 / sx, 1 / sy, -tx / sx, -ty / sy


def glimpse_to_image_theta(where: Tensor, canvas: int) -> Tensor:
    """The inverse maps, image coordinates to glimpse coordinates: ``(..., 2, 3)``."""
    return _theta(*_inverse_terms(where, canvas))


def _box_grid(sx: Tensor, sy: Tensor, tx: Tensor, ty: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid`` of axis-aligned maps ``(sx, 0, tx; 0, sy, ty)`` (``align_corners=False``): ``(B, H, W, 2)``.

    The map is separable, so the grid is a broadcast of ``sx u + tx`` over rows
    and ``sy v + ty`` over columns: no batched product with a third homogeneous
    coordinate (``affine_grid``'s ``(B, H*W, 3) x (B, 3, 2)`` bmm, slow at
    inner size 3), and a backward that sums two small broadcasts.
    """
    def centres(n: int) -> Tensor:  # pixel centres in [-1, 1], as align_corners=False places them
        return torch.arange(n, dtype=sx.dtype, device=sx.device).mul_(2.0).add_(1.0).div_(n).sub_(1.0)

    gx = torch.addcmul(tx.unsqueeze(-1), sx.unsqueeze(-1), centres(width))  # (B, W)
    gy = torch.addcmul(ty.unsqueeze(-1), sy.unsqueeze(-1), centres(height))  # (B, H)
    B = gx.shape[0]
    return torch.stack([gx.unsqueeze(1).expand(B, height, width), gy.unsqueeze(2).expand(B, height, width)], -1)


def cut_glimpses(images: Tensor, where: Tensor, size: int) -> Tensor:
    """Cut one glimpse per box.

    Args:
        images: ``(B, C, S, S)``.
        where: ``(B, 4)`` boxes in pixels.
        size: glimpse side ``G``.

    Returns:
        ``(B, C, G, G)``.
    """
    grid = _box_grid(*_affine_terms(where, images.shape[-1]), size, size)  # as F.affine_grid(box_to_theta(...))
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste_glimpses(glimpses: Tensor, where: Tensor, canvas: int) -> Tensor:
    """Paste glimpses back into their boxes on an empty canvas.

    Args:
        glimpses: ``(B, C, G, G)``.
        where: ``(B, 4)`` boxes in pixels.
        canvas: image side ``S``.

    Returns:
        ``(B, C, S, S)``, zero outside the boxes.
    """
    grid = _box_grid(*_inverse_terms(where, canvas), canvas, canvas)  # as F.affine_grid(glimpse_to_image_theta(...))
    return F.grid_sample(glimpses, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def box_coverage(where: Tensor, canvas: int) -> Tensor:
    """Fraction of each pixel's area inside each box: ``(..., 4) -> (..., S, S)``.

    Exact and piecewise linear in the box, so pixels wholly inside a box are
    covered by exactly 1 (a bilinear paste of ones leaks at the edges).
    """
    w, h, x0, y0 = where.unbind(-1)
    px = torch.arange(canvas, dtype=where.dtype, device=where.device)  # pixel [px, px + 1)
    cx = (torch.minimum(px + 1, (x0 + w).unsqueeze(-1)) - torch.maximum(px, x0.unsqueeze(-1))).clamp(0, 1)  # (..., S)
    cy = (torch.minimum(px + 1, (y0 + h).unsqueeze(-1)) - torch.maximum(px, y0.unsqueeze(-1))).clamp(0, 1)  # (..., S)
    return cy.unsqueeze(-1) * cx.unsqueeze(-2)  # (..., S rows, S cols)


def box_corners(where: Tensor) -> Tensor:
    """``(..., 4)`` boxes ``(width, height, x0, y0)`` to corners ``(x0, y0, x1, y1)``."""
    w, h, x0, y0 = where.unbind(-1)
    return torch.stack([x0, y0, x0 + w, y0 + h], -1)
