"""Evaluation metrics: count accuracy and box IoU."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["count_accuracy", "accuracy_by_count", "box_iou", "matched_iou", "match_boxes"]


def count_accuracy(pred: Tensor, true: Tensor) -> float:
    """Fraction of images whose predicted count equals the true count."""
    if pred.shape != true.shape:
        raise ValueError(f"pred and true counts must have the same shape, got {tuple(pred.shape)} and {tuple(true.shape)}")
    return float((pred.long() == true.long()).float().mean()) if len(true) else float("nan")


def accuracy_by_count(pred: Tensor, true: Tensor) -> dict[str, float]:
    """Count accuracy among the images of each true count: ``{"0": ..., "1": ..., ...}`` (counts that occur only)."""
    if pred.shape != true.shape:
        raise ValueError(f"pred and true counts must have the same shape, got {tuple(pred.shape)} and {tuple(true.shape)}")
    right = pred.long() == true.long()
    return {str(k): float(right[true == k].float().mean()) for k in torch.unique(true).tolist()}


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corner boxes ``(..., 4)`` ``(x0, y0, x1, y1)``, elementwise: ``(...)``."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area = lambda z: (z[..., 2:] - z[..., :2]).clamp_min(0).prod(-1)
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def match_boxes(pred: Tensor, true: Tensor) -> tuple[list[int], list[int], Tensor]:
    """The one-to-one matching of predicted and true corner boxes with the largest total IoU.

    Args:
        pred: ``(P, 4)``; true: ``(T, 4)``.

    Returns:
        matched indices into ``pred`` and into ``true`` (``min(P, T)`` pairs), and the IoU matrix ``(P, T)``.
    """
    iou = box_iou(pred.unsqueeze(1), true.unsqueeze(0))  # (P, T)
    rows, cols = linear_sum_assignment(iou.double().numpy(), maximize=True)
    return rows.tolist(), cols.tolist(), iou


def matched_iou(pred_boxes: Tensor, pred_count: Tensor, true_boxes: Tensor, true_count: Tensor) -> float:
    """Mean IoU of predicted and true boxes, over images whose count is right.

    Boxes of an image are matched one to one for the largest total IoU
    (:func:`match_boxes`). Images with a wrong count or no objects are skipped.

    Args:
        pred_boxes: ``(B, N, 4)`` corner boxes, the first ``pred_count`` valid.
        pred_count: ``(B,)``.
        true_boxes: ``(B, M, 4)``.
        true_count: ``(B,)``.
    """
    total, n = 0.0, 0
    for b in torch.nonzero((pred_count == true_count) & (true_count > 0)).flatten().tolist():  # per image, at evaluation
        k = int(true_count[b])
        rows, cols, iou = match_boxes(pred_boxes[b, :k].cpu(), true_boxes[b, :k].cpu())
        total += float(iou[rows, cols].sum())
        n += k
    return total / n if n else float("nan")
