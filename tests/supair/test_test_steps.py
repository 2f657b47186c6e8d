"""Counts never seen in training: count ranges per split, more attention steps when detecting, by-count accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from supair.checkpoint import load_model
from supair.cli import main

SMALL = [  # a small spatial-attention SuPAIR on 64x64 crowded scenes
    "--dataset", "crowded-mnist", "--set", "model.scene_size=64", "--set", "model.glimpse_size=8",
    "--set", "model.object_spn.depth=1", "--set", "model.object_spn.repetitions=1",
    "--set", "model.object_spn.num_leaves=2", "--set", "model.object_spn.num_sums=2",
    "--set", "model.background_spn.repetitions=1", "--set", "model.background_spn.num_leaves=2",
    "--set", "model.background_spn.num_sums=2", "--set", "model.inference.conv_channels=4",
    "--set", "model.inference.input_pool=1", "--train-images", "16", "--test-images", "12",
    "--batch-size", "4", "--threads", "1", "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("steps") / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--max-steps", "3", "--objects", "0", "2",
                 "--test-objects", "3", "4", "--detect-steps", "6", *SMALL]) == 0
    return out


def test_held_out_scenes_have_their_own_counts_and_detection_its_own_steps(run: Path) -> None:
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["objects"] == [0, 2] and cfg["train"]["test_objects"] == [3, 4]
    assert cfg["model"]["max_steps"] == 3 and cfg["model"]["inference"]["detect_steps"] == 6
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(row["count_accuracy_by_count"]) <= {"3", "4"} and row["count_accuracy_by_count"]
    model, _ = load_model(run)
    assert model.detect_steps == 6
    assert load_model(run, detect_steps=9)[0].detect_steps == 9


def test_detect_and_show_take_more_steps(run: Path, tmp_path: Path, capsys) -> None:
    img = np.zeros((64, 64), dtype=np.uint8)
    for y, x in ((4, 4), (4, 40), (40, 4), (40, 40)):
        img[y : y + 16, x : x + 10] = 220
    path = tmp_path / "four.png"
    Image.fromarray(img).save(path)
    capsys.readouterr()
    assert main(["detect", str(run), str(path), "--max-steps", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out[0]["count"] <= 8
    assert main(["show", str(run), "--num-images", "2", "--max-steps", "8", "--glimpses", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize("argv", [["detect", "RUN", "IMG", "--max-steps", "0"], ["show", "RUN", "--glimpses", "0"],
                                  ["train", "--test-objects", "4", "2", "--steps", "1"]])
def test_bad_steps_and_ranges_are_one_line(run: Path, tmp_path: Path, capsys, argv: list[str]) -> None:
    argv = [str(run) if a == "RUN" else str(tmp_path / "x.png") if a == "IMG" else a for a in argv]
    try:
        code = main(argv + (["--out", str(tmp_path / "r"), *SMALL] if argv[0] == "train" else []))
    except SystemExit as stop:  # argparse refuses a flag's value itself
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
