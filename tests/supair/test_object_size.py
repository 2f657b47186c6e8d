"""Box sizes for the user's images: estimated from a look at the images, or given with --object-size."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from supair.cli import main
from supair.config import SupairConfig
from supair.data import SceneSet
from supair.data.objectsize import HIGH, LOW, REFERENCE_CONTRAST, estimate_object_size, variance_scale
from supair.model import Supair

TINY = [  # a small model (the user's images are 24x24 here)
    "--set", "model.scene_size=24", "--set", "model.glimpse_size=6", "--set", "model.max_steps=2",
    "--set", "model.object_spn.depth=1", "--set", "model.object_spn.repetitions=2",
    "--set", "model.object_spn.num_leaves=3", "--set", "model.object_spn.num_sums=2",
    "--set", "model.background_spn.repetitions=2", "--set", "model.background_spn.num_leaves=2",
    "--set", "model.background_spn.num_sums=2", "--set", "model.inference.lstm_units=16",
    "--set", "model.inference.head_units=8", "--batch-size", "8", "--threads", "1", "--no-progress",
]


def _scenes(side: int, n: int = 60, size: int = 50, seed: int = 0, contrast: float | None = None) -> SceneSet:
    """Images with 1-2 bright squares of ``side`` px on smooth gradients and blobs (two squares may touch).

    The squares are 0.95 bright, or ``contrast`` above the background under them when given.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, 1, size, size), dtype=np.uint8)
    for i in range(n):
        a = rng.uniform(0, 2 * np.pi)
        bg = 0.1 + 0.3 * (np.cos(a) * xx + np.sin(a) * yy + 1) / 2 + 0.1 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.3) ** 2) / 0.05)
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.integers(0, size - side, size=2)
            patch = bg[y0 : y0 + side, x0 : x0 + side]
            bg[y0 : y0 + side, x0 : x0 + side] = 0.95 if contrast is None else patch + contrast
        out[i, 0] = np.clip(bg * 255, 0, 255).astype(np.uint8)
    return SceneSet(images=torch.from_numpy(out), counts=None, boxes=None, name="squares")


@pytest.mark.parametrize("side", [8, 14, 22])
def test_estimate_is_around_the_objects_size(side: int) -> None:
    size = estimate_object_size(_scenes(side))
    assert size is not None and size.images == 60 and size.regions >= 60
    assert size.median == pytest.approx(side, rel=0.15)
    assert size.least == pytest.approx(LOW * size.median, abs=0.1) and size.most == pytest.approx(HIGH * size.median, abs=0.1)
    assert size.least < side < size.most
    assert "\n" not in size.describe() and "--object-size" in size.describe()


@pytest.mark.parametrize("contrast", [0.2, 0.35, 0.5])
def test_contrast_is_how_far_the_objects_stand_out(contrast: float) -> None:
    size = estimate_object_size(_scenes(10, contrast=contrast))
    assert size is not None and size.contrast == pytest.approx(contrast, abs=0.03)
    assert variance_scale(size.contrast) == pytest.approx((size.contrast / REFERENCE_CONTRAST) ** 2)


def test_variance_scale_is_bounded_and_scales_both_spns() -> None:
    assert variance_scale(0.0) == 0.05 and variance_scale(0.9) == 1.0 and variance_scale(REFERENCE_CONTRAST) == 1.0
    cfg = SupairConfig.preset("multi-mnist").model
    plain, scaled = Supair(cfg), Supair(dataclasses.replace(cfg, variance_scale=0.25))
    for name in ("object_spn", "background_spn"):
        a, b = getattr(plain, name).leaf, getattr(scaled, name).leaf
        assert b.min_var == pytest.approx(0.25 * a.min_var) and b.max_var == pytest.approx(0.25 * a.max_var)
    assert scaled.fixed_background_var == pytest.approx(0.25 * plain.fixed_background_var)


def test_no_objects_gives_no_estimate() -> None:
    blank = SceneSet(images=torch.full((10, 1, 30, 30), 40, dtype=torch.uint8), counts=None, boxes=None, name="blank")
    assert estimate_object_size(blank) is None


@pytest.fixture
def squares_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    images = np.zeros((40, 24, 24), dtype=np.float32)
    counts = rng.integers(0, 2, size=40)
    for i, c in enumerate(counts):
        if c:
            r, col = rng.integers(0, 17, size=2)
            images[i, r : r + 7, col : col + 7] = 0.3  # a faint object: contrast 0.3
    path = tmp_path / "squares.npz"
    np.savez(path, images=images, counts=counts)
    return path


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_a_run_on_the_users_images_sizes_its_boxes_and_says_so(tmp_path: Path, squares_npz: Path, capsys) -> None:
    tiny = TINY
    run = tmp_path / "run"
    assert main(["train", "--data", str(squares_npz), "--out", str(run), "--steps", "1", *tiny]) == 0
    least, most = _config(run)["model"]["inference"]["object_size"]
    assert least < 7 < most
    err = capsys.readouterr().err
    assert "object size: boxes" in err and "contrast: objects stand out of their background by 0.30" in err
    given = tmp_path / "given"
    assert main(["train", "--data", str(squares_npz), "--out", str(given), "--steps", "1", "--object-size", "5", "12", *tiny]) == 0
    assert _config(given)["model"]["inference"]["object_size"] == [5.0, 12.0]
    assert "object size: boxes" not in capsys.readouterr().err
    assert _config(given)["model"]["variance_scale"] == _config(run)["model"]["variance_scale"] == pytest.approx(
        variance_scale(0.3), abs=0.02)
    kept = tmp_path / "kept"
    assert main(["train", "--data", str(squares_npz), "--out", str(kept), "--steps", "1", "--set", "model.variance_scale=1", *tiny]) == 0
    assert _config(kept)["model"]["variance_scale"] == 1
    assert "contrast:" not in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--object-size", "9", "4"], ["--object-size", "0", "4"], ["--objects", "5", "2"]])
def test_bad_sizes_and_counts_are_one_line(tmp_path: Path, squares_npz: Path, capsys, flag: list[str]) -> None:
    try:
        code = main(["train", "--data", str(squares_npz), "--out", str(tmp_path / "r"), "--steps", "1", *flag, *TINY])
    except SystemExit as stop:  # argparse refuses a flag's value itself
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
    assert not (tmp_path / "r").exists()
