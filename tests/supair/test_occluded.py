"""Occluded MNIST (cards in front hide what lies behind them) and the amodal completion error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from supair import data as D
from supair.completion import completion_errors
from supair.data.occluded import MIN_VISIBLE
from supair.inference import Inference


@pytest.fixture(scope="module")
def scenes() -> D.SceneSet:
    return D.generate_dataset("occluded-mnist", "test", num_images=120, seed=2, layers=True)


def test_image_is_the_layers_with_cards_front_to_back(scenes: D.SceneSet) -> None:
    assert scenes.layers is not None and scenes.counts is not None and scenes.boxes is not None
    assert scenes.layers.shape == (120, 3, 1, 50, 50)
    occluded = 0
    for i in range(len(scenes)):  # scenes
        k = int(scenes.counts[i])
        expected = np.zeros((50, 50), dtype=np.uint8)
        for j in reversed(range(k)):  # back to front, each card replacing what is beneath
            x0, y0, x1, y1 = scenes.boxes[i, j].int().tolist()
            expected[y0:y1, x0:x1] = scenes.layers[i, j, 0, y0:y1, x0:x1].numpy()
            layer = scenes.layers[i, j, 0].numpy()
            ys, xs = np.nonzero(layer)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)  # the box is the layer's tight box
        assert np.array_equal(expected, scenes.images[i, 0].numpy())
        assert not scenes.layers[i, k:].any() and not scenes.boxes[i, k:].any()
        for j in range(k):  # at least MIN_VISIBLE of each digit's ink stays in view
            ink = scenes.layers[i, j, 0].numpy() > 0
            hidden = np.zeros_like(ink)
            for f in range(j):
                x0, y0, x1, y1 = scenes.boxes[i, f].int().tolist()
                hidden[y0:y1, x0:x1] = True
            assert (ink & ~hidden).sum() >= MIN_VISIBLE * ink.sum()
            occluded += int((ink & hidden).any())
    assert occluded > 10  # the data set does hold occlusions


def test_layers_only_where_asked_and_cached(tmp_path: Path) -> None:
    plain = D.load_dataset("occluded-mnist", "test", num_images=30, cache_dir=tmp_path)
    full = D.load_dataset("occluded-mnist", "test", num_images=30, layers=True, cache_dir=tmp_path)
    again = D.load_dataset("occluded-mnist", "test", num_images=30, layers=True, cache_dir=tmp_path)
    assert plain.layers is None and full.layers is not None and torch.equal(full.layers, again.layers)
    assert torch.equal(plain.images, full.images) and len(list(tmp_path.glob("*.npz"))) == 2
    assert full.subset([1, 2]).layers is not None
    with pytest.raises(ValueError, match="occluded-mnist only"):
        D.generate_dataset("multi-mnist", "test", num_images=5, layers=True)


class _Oracle(torch.nn.Module):
    """A stand-in for SuPAIR's explain: the true boxes, each glimpse's front part hidden, a chosen completion."""

    def __init__(self, scenes: D.SceneSet, fill: str) -> None:
        super().__init__()
        self.scenes, self.fill, self.seen = scenes, fill, 0

    def explain(self, x: torch.Tensor) -> dict:
        from supair.completion import _true_occlusion
        from supair.transform import cut_glimpses

        B, N, G, S = x.shape[0], 3, 28, 50
        idx = slice(self.seen, self.seen + B)
        self.seen += B
        boxes, counts, layers = self.scenes.boxes[idx], self.scenes.counts[idx], self.scenes.layers[idx].float() / 255
        where = torch.stack([boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1], boxes[..., 0], boxes[..., 1]], -1)
        where = where.clamp_min(1.0)  # empty slots: any box
        hidden = torch.zeros(B, N, 1, G, G)
        truth = torch.zeros(B, N, 1, G, G)
        for b in range(B):
            k = int(counts[b])
            front = _true_occlusion(boxes[b], k, S)[0] if k else torch.zeros(0, S, S)
            for j in range(k):
                hidden[b, j] = cut_glimpses(front[j].view(1, 1, S, S), where[b, j : j + 1], G)[0]
                truth[b, j] = cut_glimpses(layers[b, j : j + 1], where[b, j : j + 1], G)[0]
        logits = torch.where(torch.arange(N) < counts.unsqueeze(1), 6.0, -6.0)
        inf = Inference(logits, where, torch.ones_like(where), where, where)
        completion = truth if self.fill == "truth" else torch.zeros_like(truth)
        return {"inference": inf, "count": counts, "glimpses": truth, "hidden": hidden, "completions": completion}


def test_completion_errors_of_the_truth_and_of_zeros(scenes: D.SceneSet) -> None:
    exact = completion_errors(_Oracle(scenes, "truth"), scenes, batch_size=50)
    assert exact["objects"] > 5 and exact["pixels"] > 100 and exact["occluded_objects"] >= exact["objects"]
    assert exact["mae_spn"] == pytest.approx(0.0, abs=1e-6) and exact["mae_mean"] > 0.05
    zero = completion_errors(_Oracle(scenes, "zero"), scenes, batch_size=50)
    assert zero["mae_spn"] == pytest.approx(zero["mae_zero"]) and zero["rmse_spn"] == pytest.approx(zero["rmse_zero"])
    assert zero["objects"] == exact["objects"]


def test_completion_needs_layers() -> None:
    plain = D.generate_dataset("occluded-mnist", "test", num_images=5)
    with pytest.raises(ValueError, match="layers"):
        completion_errors(_Oracle(plain, "zero"), plain)
