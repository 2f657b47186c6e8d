"""Amodal completion measured: the object SPN's fill of occluded pixels against the hidden truth.

On scenes that keep every object alone, unoccluded (``SceneSet.layers``, kept by
occluded-mnist), each detected object is matched to a true one (largest total IoU, IoU at
least :data:`MIN_IOU`). The pixels measured are those of the object's glimpse that the model
treats as hidden (covered by the boxes of objects it put in front) and that are truly
occluded in the image (covered by the cards of the objects truly in front). On them the
completion, the object SPN's most probable fill given the visible pixels
(``Supair.explain``'s ``completions``), is compared with the true unoccluded digit cut from the
same box, beside two fills that do not look at the visible pixels: the mean of the true digits
at the same boxes over all measured objects (an oracle's constant: it has seen the hidden truth
on average) and zeros (the background of the digits' cards).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .data import SceneSet
from .metrics import match_boxes
from .transform import box_coverage, cut_glimpses

if TYPE_CHECKING:
    from .checkpoint import SceneModel

__all__ = ["MIN_IOU", "completion_errors"]

MIN_IOU = 0.5
"""Least IoU of a detected box with the true box it is matched to."""


def _true_occlusion(boxes: Tensor, count: int, size: int) -> tuple[Tensor, Tensor]:
    """Image-space occlusion of each true object by the cards in front of it, and each object's own card.

    ``boxes``: ``(M, 4)`` corner boxes, front to back (each card is its object's tight box).
    Returns two ``(count, S, S)`` tensors in {0, 1}.
    """
    where = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 0], boxes[:, 1]], -1)[:count]
    cover = box_coverage(where, size)  # (count, S, S)
    front = torch.zeros_like(cover)
    for j in range(1, count):  # objects, front to back
        front[j] = torch.maximum(front[j - 1], cover[j - 1])
    return front, cover


@torch.no_grad()
def completion_errors(model: SceneModel, scenes: SceneSet, batch_size: int = 250) -> dict[str, float | int]:
    """Errors of the completions of truly occluded pixels, against the hidden truth, with the two fills beside them.

    Args:
        model: a trained SuPAIR model (its ``explain``).
        scenes: scenes with ``counts``, ``boxes`` and ``layers``.

    Returns:
        ``objects`` (matched objects with measured pixels), ``pixels`` (pixel-channel values
        measured), ``occluded_objects`` (true objects whose box is partly covered by a card in
        front), and the mean absolute and root mean squared errors ``mae_<fill>``,
        ``rmse_<fill>`` of the fills ``spn`` (the completion), ``mean`` and ``zero``.

    Raises:
        ValueError: the scenes do not keep their objects' layers, counts and boxes.
    """
    if scenes.layers is None or scenes.counts is None or scenes.boxes is None:
        raise ValueError(f"{scenes.name} does not keep each object alone (layers), its counts and boxes: "
                         "use occluded-mnist scenes loaded with layers=True")
    model.eval()
    truths, fills, masks = [], [], []  # per measured object: (C, G, G) each
    hidden_objects = 0
    for start in range(0, len(scenes), batch_size):  # batches of scenes
        idx = slice(start, start + batch_size)
        x = scenes.float_batch(idx)
        ex = model.explain(x)
        boxes = ex["inference"].boxes()  # (B, N, 4)
        layers = scenes.layers[idx].float() / 255  # (B, M, C, S, S)
        S, G = x.shape[-1], ex["glimpses"].shape[-1]
        for b in range(x.shape[0]):  # scenes of the batch
            k, true_k = int(ex["count"][b]), int(scenes.counts[start + b])
            if true_k == 0:
                continue
            true_boxes = scenes.boxes[start + b]
            occluded, own = _true_occlusion(true_boxes, true_k, S)  # (true_k, S, S) each
            hidden_objects += int((occluded * own > 0.5).flatten(1).any(1).sum())
            if k == 0:
                continue
            rows, cols, iou = match_boxes(boxes[b, :k], true_boxes[:true_k])
            for i, j in zip(rows, cols):  # matched (detected, true) pairs
                if iou[i, j] < MIN_IOU:
                    continue
                where = ex["inference"].where[b, i : i + 1]  # (1, 4)
                truly = cut_glimpses(occluded[j].view(1, 1, S, S), where, G)[0] > 0.5  # (1, G, G)
                mask = (ex["hidden"][b, i] > 0.5) & truly  # (1, G, G)
                if not bool(mask.any()):
                    continue
                truths.append(cut_glimpses(layers[b, j : j + 1], where, G)[0])
                fills.append(ex["completions"][b, i])
                masks.append(mask.expand_as(fills[-1]))
    out: dict[str, float | int] = {"objects": len(truths), "pixels": int(sum(int(m.sum()) for m in masks)),
                                   "occluded_objects": hidden_objects}
    if not truths:
        return out | {f"{e}_{f}": math.nan for e in ("mae", "rmse") for f in ("spn", "mean", "zero")}
    truth, fill, mask = torch.stack(truths), torch.stack(fills), torch.stack(masks)  # (K, C, G, G)
    mean = truth.mean(0, keepdim=True).expand_as(truth)
    for name, guess in (("spn", fill), ("mean", mean), ("zero", torch.zeros_like(truth))):
        err = (guess - truth)[mask]
        out[f"mae_{name}"] = float(err.abs().mean())
        out[f"rmse_{name}"] = float(err.pow(2).mean().sqrt())
    return out
