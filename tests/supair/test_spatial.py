"""The spatial attention, attention steps at test time and boxes sized in pixels."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from supair.config import InferenceConfig, ModelConfig, SPNConfig
from supair.model import Supair

SPATIAL = InferenceConfig(encoder="spatial", conv_channels=4, position_max_std=1.0)


def small_config(**changes) -> ModelConfig:
    base = dict(
        scene_size=32, glimpse_size=8, max_steps=2,
        object_spn=SPNConfig(depth=1, repetitions=1, num_leaves=2, num_sums=2),
        background_spn=SPNConfig(depth=1, repetitions=1, num_leaves=2, num_sums=2, min_var=0.01, max_var=0.1),
        inference=SPATIAL,
    )
    base.update(changes)
    return ModelConfig(**base)


def squares(*corners: tuple[int, int], size: int = 32, side: int = 6) -> torch.Tensor:
    """One image ``(1, 1, size, size)`` with a bright ``side`` x ``side`` square at each (x, y) corner."""
    x = torch.zeros(1, 1, size, size)
    for cx, cy in corners:
        x[0, 0, cy : cy + side, cx : cx + side] = 1.0
    return x


def centre(inf, step: int = 0) -> torch.Tensor:
    w, h, x0, y0 = inf.where[0, step]
    return torch.stack([x0 + w / 2, y0 + h / 2])


def test_untrained_attention_lands_on_the_ink_and_then_on_what_is_left() -> None:
    torch.manual_seed(0)
    model = Supair(small_config())
    inf = model.infer(squares((4, 20), (22, 4)), sample=False)
    first, second = centre(inf, 0), centre(inf, 1)
    targets = torch.tensor([[7.0, 23.0], [25.0, 7.0]])
    d1 = (targets - first).norm(dim=1)
    assert d1.min() < 3.5  # on one square, not between them (the middle is 12.7 px from either)
    d2 = (targets[int(d1.argmax())] - second).norm()
    assert d2 < 3.5  # the second step takes the other square: the first was filled


def test_gradients_reach_every_parameter_and_boxes_stay_in_range() -> None:
    torch.manual_seed(1)
    cfg = small_config(inference=dataclasses.replace(SPATIAL, object_size=(5.0, 14.0)))
    model = Supair(cfg)
    x = torch.rand(3, 1, 32, 32) * 0.2 + squares((5, 5))
    model.loss(x)[0].backward()
    names = [n for n, p in model.inference.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not names
    inf = model.infer(x, sample=False)
    w, h = inf.where[..., 0], inf.where[..., 1]
    assert bool(((w >= 5 - 1e-4) & (w <= 14 + 1e-4)).all())  # object_size: box width in pixels
    assert bool(((h >= 0.75 * w - 1e-4) & (h <= 1.25 * w + 1e-4)).all())
    assert bool((inf.where[..., 2:] >= 0).all() and (inf.where[..., 2:] <= 0.9 * 32 + 1e-4).all())


def test_more_steps_when_detecting() -> None:
    torch.manual_seed(2)
    model = Supair(small_config(inference=dataclasses.replace(SPATIAL, detect_steps=5, search_radius=0.0)))
    x = squares((2, 2), (20, 2), (2, 20), (20, 20))
    assert model.infer(x).where.shape == (1, 2, 4)  # training: max_steps
    inf = model.detect(x)
    assert inf.where.shape == (1, 5, 4) and inf.presence().shape == (1, 5)
    assert model.log_joint(x, inf)["log_joint"].shape == (1, 6)
    steps = torch.stack([centre(inf, i) for i in range(4)])  # four steps, four different squares
    assert torch.cdist(steps, steps).add(torch.eye(4) * 100).min() > 8


@pytest.mark.parametrize("bad", [dict(input="image"), dict(recurrent=True)])
def test_spatial_attention_needs_residual_steps(bad: dict) -> None:
    with pytest.raises(ValueError, match="residual"):
        small_config(inference=dataclasses.replace(SPATIAL, **bad)).assert_valid()


@pytest.mark.parametrize("field, value", [("object_size", (8.0, 4.0)), ("detect_steps", 0), ("input_pool", 0), ("conv_channels", 0)])
def test_inference_fields_are_bounded(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SPATIAL, **{field: value}).assert_valid()
