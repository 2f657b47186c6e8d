"""Evaluation metrics: count accuracy by true count, and box matching for many objects."""

from __future__ import annotations

import itertools

import pytest
import torch
from supair.metrics import accuracy_by_count, box_iou, match_boxes, matched_iou


def test_accuracy_by_count() -> None:
    true = torch.tensor([0, 0, 1, 1, 1, 3, 9])
    pred = torch.tensor([0, 1, 1, 1, 2, 3, 8])
    assert accuracy_by_count(pred, true) == {"0": 0.5, "1": pytest.approx(2 / 3), "3": 1.0, "9": 0.0}
    with pytest.raises(ValueError, match="shape"):
        accuracy_by_count(pred[:3], true)


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    corner = torch.rand(n, 2, generator=gen) * 60
    return torch.cat([corner, corner + 8 + torch.rand(n, 2, generator=gen) * 12], 1)


@pytest.mark.parametrize("seed", range(4))
def test_matching_is_the_best_permutation(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    pred, true = _boxes(6, gen), _boxes(6, gen)
    rows, cols, iou = match_boxes(pred, true)
    best = max(sum(float(iou[i, p]) for i, p in enumerate(perm)) for perm in itertools.permutations(range(6)))
    assert float(iou[rows, cols].sum()) == pytest.approx(best)


def test_nine_shuffled_boxes_match_exactly() -> None:
    gen = torch.Generator().manual_seed(5)
    true = _boxes(9, gen)
    order = torch.randperm(9, generator=gen)
    pred = true[order]
    assert matched_iou(pred.unsqueeze(0), torch.tensor([9]), true.unsqueeze(0), torch.tensor([9])) == pytest.approx(1.0)
    rows, cols, _ = match_boxes(pred, true)
    assert [int(order[r]) for r in rows] == cols
    assert float(box_iou(pred[0], true[0])) <= 1.0
