"""The supair command line end to end on tiny settings: train, resume, detect, show, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from supair.checkpoint import load_checkpoint, save_checkpoint
from supair.cli import main

TINY = [
    "--set", "model.scene_size=12", "--set", "model.glimpse_size=6", "--set", "model.max_steps=2",
    "--set", "model.object_spn.depth=1", "--set", "model.object_spn.repetitions=2",
    "--set", "model.object_spn.num_leaves=3", "--set", "model.object_spn.num_sums=2",
    "--set", "model.background_spn.repetitions=2", "--set", "model.background_spn.num_leaves=2",
    "--set", "model.background_spn.num_sums=2", "--set", "model.inference.lstm_units=16",
    "--set", "model.inference.head_units=8", "--batch-size", "8", "--threads", "1", "--no-progress",
]


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = np.zeros((60, 12, 12), dtype=np.float32)
    counts = rng.integers(0, 2, size=60)
    for i, c in enumerate(counts):
        if c:
            r, col = rng.integers(0, 7, size=2)
            images[i, r : r + 5, col : col + 5] = 0.9
    path = tmp_path / "scenes.npz"
    np.savez(path, images=images, counts=counts)
    return path


def _train(tmp_path: Path, scenes: Path, *extra: str) -> Path:
    run = tmp_path / "run"
    assert main(["train", "--data", str(scenes), "--out", str(run), "--eval-every", "2", "--checkpoint-every", "2", *TINY, *extra]) == 0
    return run


def test_train_writes_config_checkpoint_and_metrics(tmp_path: Path, scenes: Path) -> None:
    run = _train(tmp_path, scenes, "--steps", "4")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["scene_size"] == 12 and cfg["train"]["steps"] == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("step", "train_seconds", "cpu_seconds", "elbo", "count_accuracy", "iou"):
        assert key in rows[-1]
    assert load_checkpoint(run)["step"] == 4


def test_learning_rate_decays_over_the_budget_and_resumes_on_schedule(tmp_path: Path, scenes: Path) -> None:
    """``train.lr_decay_to``: cosine from the rate to that fraction of it at the end of the step budget, resumable."""
    import math

    from supair.config import SupairConfig
    from supair.train import Trainer

    run = _train(tmp_path, scenes, "--steps", "2", "--set", "train.lr_decay_to=0.1")
    ckpt = load_checkpoint(run)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 1 / 2))))
    cfg = SupairConfig.from_dict(ckpt["config"])
    with Trainer(cfg, run, resume=True, progress=False, log=lambda m: None) as trainer:  # the budget of the first call: 2 steps
        assert trainer.finished and trainer.run() == []
    with Trainer(cfg.replace(**{"train.steps": 4}), run, resume=True, progress=False, log=lambda m: None) as trainer:
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # reset to the base, then set by the schedule
        assert trainer.budget_used() == 0.5
        trainer._set_learning_rate()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))
        trainer.step = 4
        trainer._set_learning_rate()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert main(["train", "--data", str(scenes), "--out", str(tmp_path / "bad"), *TINY, "--set", "train.lr_decay_to=0"]) != 0


def test_resume_continues_without_duplicates(tmp_path: Path, scenes: Path) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    before = load_checkpoint(run)
    with open(run / "metrics.jsonl", "a") as f:  # a row written after the checkpoint by a killed run
        f.write(json.dumps({"step": 3, "train_seconds": 1.0}) + "\n{\"step\": 4, \"trunc")
    assert main(["train", "--resume", str(run), "--steps", "6", "--eval-every", "2", "--checkpoint-every", "2",
                 "--no-progress", "--threads", "1", "--batch-size", "8"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    after = load_checkpoint(run)
    assert after["step"] == 6 and after["train_seconds"] > before["train_seconds"]
    assert after["optimizer"]["state"], "optimizer state must survive"


def test_resume_with_other_model_config_is_refused(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    assert main(["train", "--resume", str(run), "--steps", "4", "--max-steps", "3", "--no-progress"]) == 2
    assert "another model config" in capsys.readouterr().err


def test_resume_may_change_only_the_detection_search(tmp_path: Path, scenes: Path) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress", "--threads", "1",
                 "--set", "model.inference.search_radius=0"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["inference"]["search_radius"] == 0
    assert load_checkpoint(run)["step"] == 4


def test_detect_prints_json_and_draws(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    img = np.zeros((24, 24), dtype=np.uint8)
    img[4:14, 4:14] = 230
    path = tmp_path / "scene.png"
    Image.fromarray(img).save(path)
    capsys.readouterr()
    assert main(["detect", str(run), str(path), "--out", str(tmp_path / "boxes")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["path"] == str(path)
    assert out[0]["count"] == len(out[0]["boxes"]) == len(out[0]["presence"])
    assert all(0 <= v <= 24 * 3 for box in out[0]["boxes"] for v in box)
    assert Path(out[0]["drawing"]).is_file()


def test_show_writes_figure(tmp_path: Path, scenes: Path) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    assert main(["show", str(run), "--num-images", "3"]) == 0
    with Image.open(run / "show.png") as im:
        assert im.size[0] > 100


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_bad_checkpoint_is_a_clear_error(tmp_path: Path, content: bytes, capsys) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(content)
    assert main(["detect", str(bad), str(bad)]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_checkpoint_of_another_config_is_refused(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    ckpt = load_checkpoint(run)
    ckpt["config"]["model"]["object_spn"]["num_leaves"] = 5
    save_checkpoint(tmp_path / "other.pt", ckpt)  # a consistent file whose config does not match its tensors
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(image)
    assert main(["detect", str(tmp_path / "other.pt"), str(image)]) == 2
    assert "does not fit" in capsys.readouterr().err


@pytest.mark.parametrize("make", ["empty_folder", "unreadable", "missing"])
def test_bad_image_inputs(tmp_path: Path, scenes: Path, make: str, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    if make == "empty_folder":
        (tmp_path / "empty").mkdir()
        args = ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r2"), "--steps", "1", *TINY]
    elif make == "unreadable":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
        args = ["detect", str(run), str(tmp_path / "broken.png")]
    else:
        args = ["detect", str(run), str(tmp_path / "nope.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_bad_flag_prints_usage() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "cifar"])
    assert exc.value.code == 2


def test_multi_mnist_defaults_apply_and_flags_override_them() -> None:
    from supair.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["train"]))
    assert (cfg.train.batch_size, cfg.train.eval_every) == (64, 500)
    assert cfg.model.inference.position_max_std == 2.0
    assert (cfg.model.prior.count_rate_start, cfg.model.prior.count_rate, cfg.model.prior.anneal_steps) == (0.7, 300.0, 2250)
    assert cfg.model.prior.overlap_anneal_steps == 750
    prior = cfg.model.prior
    assert (prior.overlap_rate_start, prior.overlap_rate, prior.overlap_anneal_begin, cfg.train.lr_decay_to) == (120.0, 400.0, 300, 0.1)
    assert tuple(cfg.model.background_spn.init_var) == (0.005, 0.05)
    assert config_from_args(build_parser().parse_args(["train", "--dataset", "sprites"])).model.background_spn.init_var is None
    cfg = config_from_args(build_parser().parse_args(["train", "--batch-size", "256", "--set", "model.prior.anneal_steps=0"]))
    assert (cfg.train.batch_size, cfg.model.prior.anneal_steps) == (256, 0)
    other = config_from_args(build_parser().parse_args(["train", "--dataset", "noisy-mnist"]))
    assert other.train.batch_size == 256 and other.model.prior.count_rate_start is None
    own = config_from_args(build_parser().parse_args(["train", "--data", "scenes.npz"]))  # a user's images: the original's settings
    assert own.train.batch_size == 256 and own.model.prior.count_rate_start is None
    assert own.model.prior.overlap_rate == 120.0 and own.train.lr_decay_to == 1.0


def test_detect_names_drawings_of_same_named_images_apart(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    img = np.zeros((24, 24), dtype=np.uint8)
    img[4:14, 4:14] = 230
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(img if folder == "a" else img[::-1]).save(tmp_path / folder / "x.png")
    capsys.readouterr()
    args = ["detect", str(run), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "--out", str(tmp_path / "boxes")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    drawings = [Path(entry["drawing"]) for entry in out]
    assert drawings[0] != drawings[1] and all(d.is_file() and d.name.startswith("x-") for d in drawings)
    assert sorted(p.name for p in (tmp_path / "boxes").iterdir()) == sorted(d.name for d in drawings)
    assert main(args) == 0  # the same images: the same drawings, replaced
    assert [Path(e["drawing"]) for e in json.loads(capsys.readouterr().out)] == drawings
    assert len(list((tmp_path / "boxes").iterdir())) == 2


def test_detect_reads_16_bit_images_by_their_depth(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    img = np.zeros((12, 12), dtype=np.uint8)
    img[3:8, 2:7] = 230
    Image.fromarray(img).save(tmp_path / "eight.png")
    Image.fromarray(img.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    capsys.readouterr()
    assert main(["detect", str(run), str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")]) == 0
    eight, sixteen = json.loads(capsys.readouterr().out)
    assert (eight["count"], eight["boxes"], eight["presence"]) == (sixteen["count"], sixteen["boxes"], sixteen["presence"])


def test_a_diverged_model_is_not_written_over_the_last_checkpoint(tmp_path: Path, scenes: Path) -> None:
    from supair.config import SupairConfig
    from supair.train import Trainer

    run = _train(tmp_path, scenes, "--steps", "2")
    cfg = SupairConfig.from_dict(load_checkpoint(run)["config"]).replace(**{"train.steps": 4})
    with Trainer(cfg, run, resume=True, progress=False, log=lambda m: None) as trainer:
        before = (run / "checkpoint.pt").read_bytes()  # the new budget is recorded at the start
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
        with pytest.raises(ValueError, match="NaN or infinite.*the previous checkpoint is kept"):
            trainer.checkpoint()
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_show_writes_its_figure_atomically_where_asked(tmp_path: Path, scenes: Path, capsys) -> None:
    run = _train(tmp_path, scenes, "--steps", "2")
    target = tmp_path / "figures" / "fig.png"
    capsys.readouterr()
    assert main(["show", str(run / "checkpoint.pt"), "--num-images", "2", "--out", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    with Image.open(target) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in target.parent.iterdir()) == ["fig.png"]
