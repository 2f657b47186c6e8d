"""benchmarks/supair_search.py: its settings and how it switches a model's search."""

from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark
from supair.config import InferenceConfig, ModelConfig, SPNConfig
from supair.model import Supair


def test_settings_parse_and_bad_ones_say_what_is_expected() -> None:
    mod = load_benchmark("supair_search")
    assert mod.parse_settings("6:7,4.5:3") == [(6.0, 7), (4.5, 3)]
    for bad in ("6", "6:x", "0:7", "6:1"):
        with pytest.raises(ValueError, match="RADIUS"):
            mod.parse_settings(bad)


def test_with_search_changes_only_the_search() -> None:
    mod = load_benchmark("supair_search")
    torch.manual_seed(0)
    cfg = ModelConfig(scene_size=12, glimpse_size=6, max_steps=2,
                      object_spn=SPNConfig(depth=1, repetitions=1, num_leaves=2, num_sums=2),
                      background_spn=SPNConfig(depth=1, repetitions=1, num_leaves=2, num_sums=2, min_var=0.01, max_var=0.1),
                      inference=InferenceConfig(lstm_units=8, head_units=4))
    model = Supair(cfg)
    images = torch.rand(3, 1, 12, 12)
    assert len(mod.with_search(model, 0.0, 1).search_offsets()) == 0
    off = model.detect(images).where
    assert len(mod.with_search(model, 2.0, 5).search_offsets()) == 24
    assert model.cfg.inference.lstm_units == 8 and model.cfg.scene_size == 12
    torch.testing.assert_close(model.detect(images, search=False).where, off)
