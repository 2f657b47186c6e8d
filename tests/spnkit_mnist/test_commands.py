"""The MNIST application: ``spnkit fit mnist``, ``spnkit inpaint`` and ``spnkit classify mnist`` (float32 models)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from spnkit_mnist.commands import masks

import spnkit
from spnkit.cli import main


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SMALL = ["--minutes", "0.02", "--subset", "300", "--depth", "2", "--repetitions", "2", "--sums", "4", "--leaves", "4", "--no-progress"]
NORMAL_RAT = ["--structure", "random", "--layer", "tucker", "--leaf", "normal"]


@pytest.mark.slow
def test_cli_fit_inpaint_and_classify_mnist_end_to_end(tmp_path, capsys):
    from PIL import Image

    assert main(["fit", "mnist", *SMALL, "--out", str(tmp_path / "quad")]) == 0  # the default: a 4-ary CP quad tree, exact discrete
    metrics = json.loads((tmp_path / "quad" / "metrics.json").read_text())
    assert metrics["model"]["structure"] == "quad-tree" and metrics["model"]["arity"] == 4 and metrics["model"]["layer"] == "cp"
    assert metrics["likelihood"].startswith("discrete")
    assert metrics["test_bits_per_dim"] == pytest.approx(-metrics["test_log_likelihood_nats"] / (784 * math.log(2)))
    assert 0 < metrics["test_bits_per_dim"] < 8
    assert main(["fit", "mnist", *SMALL, *NORMAL_RAT, "--out", str(tmp_path / "fit")]) == 0
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert math.isfinite(metrics["test_bits_per_dim"]) and metrics["test_bits_per_dim"] > 0
    assert metrics["test_bits_per_dim"] == pytest.approx(8 - metrics["test_log_likelihood_nats"] / (784 * math.log(2)))
    assert Image.open(tmp_path / "fit" / "samples.png").size == (2 * (8 * 30 + 2),) * 2
    assert spnkit.load(tmp_path / "fit" / "model.spn").num_vars == 784

    assert main(["inpaint", "--model", str(tmp_path / "fit" / "model.spn"), "--num-digits", "3", "--out", str(tmp_path / "inp"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "inp" / "inpaint.json").read_text())
    assert set(report["hidden_pixel_mse"]) == {"left", "top", "random50"}
    assert all(0 <= v <= 1 for e in report["hidden_pixel_mse"].values() for v in e.values())
    assert Image.open(tmp_path / "inp" / "inpaint.png").size == (2 * (10 * 30 + 2), 2 * (3 * 30 + 2))

    assert main(["classify", "mnist", *SMALL, "--out", str(tmp_path / "cls")]) == 0
    acc = json.loads((tmp_path / "cls" / "metrics.json").read_text())["test_accuracy"]
    assert 0 <= acc <= 1
    assert "test accuracy" in capsys.readouterr().out


def test_inpaint_masks_hide_the_stated_pixels():
    m = masks(4, _gen(0))
    img = m["left"].view(4, 28, 28)
    assert img[:, :, :14].all() and not img[:, :, 14:].any()
    img = m["top"].view(4, 28, 28)
    assert img[:, :14].all() and not img[:, 14:].any()
    assert (m["random50"].sum(1) == 392).all() and not torch.equal(m["random50"][0], m["random50"][1])


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["inpaint", "--model", str(tmp_path / "missing.spn"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
