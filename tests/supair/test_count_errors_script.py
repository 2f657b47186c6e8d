"""benchmarks/supair_count_errors.py: boxes around true objects are ones the model can express."""

from __future__ import annotations

import torch
from benchmark_scripts import load_benchmark
from supair.config import ModelConfig


def test_fitted_boxes_cover_the_true_box_within_the_models_ranges() -> None:
    mod = load_benchmark("supair_count_errors")
    cfg = ModelConfig()
    G, icfg = cfg.glimpse_size, cfg.inference
    for corners in ([10.0, 5.0, 17.0, 25.0], [3.0, 3.0, 30.0, 12.0], [20.0, 20.0, 22.0, 23.0]):
        for pad in (0, 2):
            w, h, x0, y0 = mod.fitted_box(torch.tensor(corners), pad, cfg)
            assert icfg.scale_range[0] * G - 1e-9 <= w <= icfg.scale_range[1] * G + 1e-9
            assert icfg.ratio_range[0] - 1e-9 <= h / w <= icfg.ratio_range[1] + 1e-9
            cx, cy = (corners[0] + corners[2]) / 2, (corners[1] + corners[3]) / 2
            assert abs(x0 + w / 2 - cx) < 1e-9 and abs(y0 + h / 2 - cy) < 1e-9  # centred on the true box
            tw, th = corners[2] - corners[0], corners[3] - corners[1]
            if tw + 2 * pad <= w and th + 2 * pad <= icfg.ratio_range[1] * w:  # expressible: it covers the padded box
                assert w >= tw + 2 * pad - 1e-9 and h >= th + 2 * pad - 1e-9
