"""Evaluation metrics: count accuracy and box IoU."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["count_accuracy", "box_iou", "matched_iou"]


def count_accuracy(pred: Tensor, true: Tensor) -> float:
    """Fraction of images whose predicted count equals the true count."""
    if pred.shape != true.shape:
        raise ValueError(f"pred and true counts must have the same shape, got {tuple(pred.shape)} and {tuple(true.shape)}")
    return float((pred.long() == true.long()).float().mean()) if len(true) else float("nan")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corner boxes ``(..., 4)`` ``(x0, y0, x1, y1)``, elementwise: ``(...)``."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area = lambda z: (z[..., 2:] - z[..., :2]).clamp_min(0).prod(-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def matched_iou(pred_boxes: Tensor, pred_count: Tensor, true_boxes: Tensor, true_count: Tensor) -> float:
    """Mean IoU of predicted and true boxes, over images whose count is right.

    Boxes of an image are matched by the permutation with the largest total IoU
    (counts are small). Images with a wrong count or no objects are skipped.

    Args:
        pred_boxes: ``(B, N, 4)`` corner boxes, the first ``pred_count`` valid.
        pred_count: ``(B,)``.
        true_boxes: ``(B, M, 4)``.
        true_count: ``(B,)``.
    """
    total, n = 0.0, 0
    for b in torch.nonzero((pred_count == true_count) & (true_count > 0)).flatten().tolist():  # per image, at evaluation
        k = int(true_count[b])
        iou = box_iou(pred_boxes[b, :k].unsqueeze(1), true_boxes[b, :k].unsqueeze(0))  # (k, k)
        best = max(sum(float(iou[i, p]) for i, p in enumerate(perm)) for perm in itertools.permutations(range(k)))
        total += best
        n += k
    return total / n if n else float("nan")
