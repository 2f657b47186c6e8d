"""Evaluation of a trained model on held-out scenes: count accuracy, box IoU and ELBO.

Shared by single-process training, data-parallel training (which gathers
per-image detections and calls :func:`summarize`), and the benchmarks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch

from .data import SceneSet
from .metrics import accuracy_by_count, count_accuracy, matched_iou

if TYPE_CHECKING:
    from .checkpoint import SceneModel
    from .model import Supair

__all__ = ["searches", "detections", "evaluate", "summarize"]


def searches(model: SceneModel) -> bool:
    """Whether ``model.detect`` refines the attention network's detections (SuPAIR's detection search)."""
    return hasattr(model, "detect_with_network") and len(cast("Supair", model).search_offsets()) > 0


def detections(model: SceneModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Counts ``(B,)`` and boxes ``(B, N, 4)`` of ``model.detect``, and the attention network's own counts where a
    detection search refines them (SuPAIR with ``inference.search_radius > 0``; else None)."""
    if searches(model):
        inf, network = cast("Supair", model).detect_with_network(x)
        return inf.count(), inf.boxes(), network.count()
    inf = model.detect(x)
    return inf.count(), inf.boxes(), None


@torch.no_grad()
def evaluate(model: SceneModel, test: SceneSet, batch_size: int = 500, elbo_images: int = 500, device: str = "cpu") -> dict[str, Any]:
    """Count accuracy and box IoU on ``test``, and the mean ELBO on its first ``elbo_images``."""
    model.eval()
    counts, boxes, elbos, network = [], [], [], []
    for start in range(0, len(test), batch_size):  # batches of the held-out set
        x = test.float_batch(slice(start, start + batch_size)).to(device)
        count, box, net = detections(model, x)
        counts.append(count.cpu())
        boxes.append(box.cpu())
        if net is not None:
            network.append(net.cpu())
        if start < elbo_images:
            elbos.append(model.loss(x[: elbo_images - start])[1]["elbo"].cpu() * min(len(x), elbo_images - start))
    model.train()
    return summarize(torch.cat(counts), torch.cat(boxes), float(sum(elbos)), test, elbo_images,
                     torch.cat(network) if network else None)


def summarize(count: torch.Tensor, box: torch.Tensor, elbo_sum: float, test: SceneSet, elbo_images: int = 500,
              network_count: torch.Tensor | None = None) -> dict[str, Any]:
    """The metrics of :func:`evaluate` from per-image detections of all of ``test`` (also used by the data-parallel evaluation).

    Args:
        count: ``(len(test),)`` predicted counts.
        box: ``(len(test), N, 4)`` predicted boxes ``(x0, y0, x1, y1)``.
        elbo_sum: the summed ELBO of the first ``elbo_images`` images.
        network_count: ``(len(test),)`` the attention network's counts before a detection search, or None.
    """
    out: dict[str, Any] = {"elbo": elbo_sum / min(len(test), elbo_images)}
    # None (JSON null) where the data set cannot tell: no true counts or boxes, or no image counted right
    out["count_accuracy"] = count_accuracy(count, test.counts) if test.counts is not None else None
    iou = matched_iou(box, count, test.boxes, test.counts) if test.counts is not None and test.boxes is not None else math.nan
    out["iou"] = None if math.isnan(iou) else iou
    out["mean_count"] = float(count.float().mean())
    if network_count is not None and test.counts is not None:  # the attention network's count, before the detection search
        out["count_accuracy_network"] = count_accuracy(network_count, test.counts)
    if test.counts is not None:
        out["count_accuracy_by_count"] = accuracy_by_count(count, test.counts)
    return out


