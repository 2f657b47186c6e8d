"""A convolutional attention step: where is an object in what is left, and how large is it.

``inference.encoder = "spatial"``. A small convolutional network reads the step's input (the
image with the earlier boxes filled, average-pooled by ``inference.input_pool``) and gives, on
a grid of cells (stride 2 of the pooled image), four maps: an attention logit, a presence
logit, the box's raw shape (scale, height/width) and a centre offset, and the raw standard
deviations. The step looks near the cell of the highest attention logit: a softmax over the
cells within ``window`` cells of it weighs them, and the step's box is the attention-weighted
mean of their boxes (centre: cell centre plus offset, within ``max_offset_cells`` cells) and its
presence logit the attention-weighted presence logits. (A softmax over all cells would put the
box between objects where several are left.)

The attention logit is the network's own map plus ``saliency_gain`` (learned) times the
cell's mean absolute difference between the input and the fill: from the first step of
training the attention lands on ink that no earlier box took, not between objects, and the
network learns from there what an object looks like. Every map is computed by the same
convolutions at every cell, so what the step does does not depend on where objects are or
on how many there are; each step of a scene applies the same function to what is left.

Shapes: ``B`` images, ``C`` channels, ``S`` scene side, ``H`` cells per side.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import ModelConfig

__all__ = ["SpatialAttention"]

_SALIENCY_GAIN = 20.0  # initial gain of the saliency term: a cell half covered by ink outweighs an empty one by ~e^5 at the start


class SpatialAttention(nn.Module):
    """One attention step over a grid of cells; see the module docstring.

    Args:
        cfg: the model config (``inference.conv_channels`` channels, ``inference.input_pool``,
            the box ranges, ``inference.presence_bias``).
    """

    max_offset_cells = 2.0
    window = 2  # cells on each side of the peak that the softmax weighs

    centres: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        icfg = cfg.inference
        C, S, p, K = cfg.channels, cfg.scene_size, icfg.input_pool, icfg.conv_channels
        self.cfg = cfg
        self.pool = nn.AvgPool2d(p, ceil_mode=True, count_include_pad=False) if p > 1 else nn.Identity()
        self.trunk = nn.Sequential(
            nn.Conv2d(C, K, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(K, K, 3, padding=1), nn.ReLU(),
            nn.Conv2d(K, K, 3, padding=1), nn.ReLU(),
        )
        self.maps = nn.Conv2d(K, 10, 1)  # attention, presence, scale, ratio, dx, dy, 4 raw stds
        with torch.no_grad():
            assert self.maps.bias is not None
            self.maps.bias[1] = icfg.presence_bias
        self.saliency_gain = nn.Parameter(torch.tensor(_SALIENCY_GAIN))
        cells = math.ceil(math.ceil(S / p) / 2)
        self.cell = S / cells  # cell side in image pixels
        self.register_buffer("centres", (torch.arange(cells, dtype=torch.float32) + 0.5) * self.cell, persistent=False)  # (H,)

    def _near_peak(self, logits: Tensor) -> Tensor:
        """``logits`` ``(B, H, W)`` with every cell farther than ``window`` cells from the highest one set to -inf.

        The softmax then weighs the cells around one peak only: where several objects are left,
        the box goes to one of them, not to the mean of their places.
        """
        B, H, W = logits.shape
        peak = logits.flatten(1).argmax(1)  # (B,)
        rows = torch.arange(H, device=logits.device).view(1, H, 1)
        cols = torch.arange(W, device=logits.device).view(1, 1, W)
        near = ((rows - (peak // W).view(B, 1, 1)).abs() <= self.window) & ((cols - (peak % W).view(B, 1, 1)).abs() <= self.window)
        return logits.masked_fill(~near, float("-inf"))

    def forward(self, shown: Tensor, fill: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step on ``shown`` ``(B, C, S, S)`` (``fill``: what the earlier boxes were filled with, or None for zeros).

        Returns:
            presence logit ``(B,)``, raw box shape ``(B, 2)`` (scale, ratio: squashed into their
            ranges by the caller), box centre in pixels ``(B, 2)`` and raw stds ``(B, 4)``.
        """
        z = self.pool(shown)
        maps = self.maps(self.trunk(z))  # (B, 10, H, H)
        B, _, H, W = maps.shape
        ink = (z if fill is None else z - self.pool(fill)).abs().sum(1, keepdim=True)  # (B, 1, S/p, S/p)
        saliency = F.adaptive_avg_pool2d(ink, (H, W))  # (B, 1, H, W): mean ink per cell
        saliency = F.avg_pool2d(saliency, 3, stride=1, padding=1, count_include_pad=False)  # about an object's extent
        logits = maps[:, 0] + self.saliency_gain * saliency[:, 0]  # (B, H, W)
        weight = torch.softmax(self._near_peak(logits).flatten(1), 1).view(B, H, W)  # (B, H, W)
        pooled = torch.einsum("bhw,bchw->bc", weight, maps[:, 1:])  # (B, 9): attention-weighted maps
        offset = self.max_offset_cells * self.cell * torch.tanh(maps[:, 4:6])  # (B, 2, H, W): dx, dy in pixels
        cx = torch.einsum("bhw,bhw->b", weight, self.centres.view(1, 1, W) + offset[:, 0])  # (B,)
        cy = torch.einsum("bhw,bhw->b", weight, self.centres.view(1, H, 1) + offset[:, 1])  # (B,)
        return pooled[:, 0], pooled[:, 1:3], torch.stack([cx, cy], 1), pooled[:, 5:9]
