"""benchmarks/count_vs_time.py: the tables' arithmetic, and an end-to-end run on a tiny budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_scripts import ROOT, load_benchmark

bench = load_benchmark("count_vs_time")
benchlib = load_benchmark("benchlib")


def _rows(model: str, seed: int, points: list[tuple[float, float]]) -> list[dict]:
    return [{"model": model, "dataset": "d", "seed": seed, "step": i, "train_seconds": t, "wall_seconds": 2 * t,
             "count_accuracy": a, "iou": math.nan, "elbo": 0.0, "mean_count": 1.0} for i, (t, a) in enumerate(points)]


def test_times_to_threshold_and_speed_up() -> None:
    rows = (_rows("supair", 0, [(0, 0.3), (30, 0.6), (60, 0.92), (90, 0.96)])
            + _rows("supair", 1, [(0, 0.3), (30, 0.95), (60, 0.97), (90, 0.97)])
            + _rows("air", 0, [(0, 0.3), (300, 0.55), (600, 0.91), (900, 0.93)]))
    args = bench.parse_args(["--models", "supair,air", "--seeds", "2", "--eval-seconds", "30"])
    md = bench.summarize(rows, args, "cmd")
    # supair: 0.9 at 60 s and 30 s -> 45 s mean; AIR at 600 s -> 13.3x; 0.5 at 30 s both -> AIR 300 / 30 = 10x
    assert "| supair | 30 s +- 0 (2/2 seeds) | 45 s +- 15 (2/2 seeds) | 60 s +- 30 (2/2 seeds) |" in md
    assert "| supair | 10.00x | 13.33x | > 15.00x (AIR not there yet) |" in md
    assert "AIR not there yet" in md  # AIR never reached 0.95
    times, means, stds, ns = bench.curves(rows, ["supair"], 30)["supair"]
    assert ns == [2, 2, 2, 2]
    assert times == [0, 30, 60, 90] and means[1] == pytest.approx(0.775) and stds[1] == pytest.approx(0.175)
    assert bench._at(bench._runs(rows, "air")[0], 450, 15) == 0.55  # last evaluation before 450 s
    assert math.isnan(bench._at(bench._runs(rows, "air")[0], 1200, 15))  # the run stopped before
    assert bench._interp(bench._runs(rows, "air")[0], 450) == pytest.approx(0.73)  # the figure interpolates
    # interpolated crossings: seed 0 reaches 0.9 between (30, 0.6) and (60, 0.92), seed 1 between (0, 0.3) and (30, 0.95)
    runs = bench._runs(rows, "supair")
    assert bench._time_to_interpolated(runs[0], 0.9) == pytest.approx(30 + 30 * 0.3 / 0.32)
    assert bench._time_to_interpolated(runs[1], 0.9) == pytest.approx(30 * 0.6 / 0.65)
    assert bench._time_to_interpolated(runs[1], 0.95) == pytest.approx(30.0)  # exactly at an evaluation
    assert bench._time_to_interpolated(runs[0], 0.3) == 0.0 and math.isnan(bench._time_to_interpolated(runs[0], 0.99))
    # AIR 0.5 at 240 s, 0.9 at 591.7 s; supair 14.6 s and 42.9 s mean
    assert "| supair | 14.6 s +- 5.4; 16.42x | 42.9 s +- 15.2; 13.79x | 56.2 s +- 26.2 |" in md
    assert "| air | 240.0 s +- 0.0 | 591.7 s +- 0.0 | not reached by every seed |" in md
    # medians: supair 0.5 at 30 and 30 s, 0.9 at 60 and 30 s (45 s); AIR 300 and 600 s (one seed); AIR never reached 0.95
    assert "| supair | 30 s; 10.00x | 45 s; 13.33x | 60 s |" in md
    assert "| air | 300 s | 600 s | not reached by every seed |" in md
    assert bench._median([1.0, 5.0, 2.0]) == 2.0 and math.isnan(bench._median([1.0, math.nan])) and math.isnan(bench._median([]))
    assert "budgets of this call (CPU minutes): supair=" in md
    collected = bench.summarize(rows, bench.parse_args(["--models", "supair,air", "--collect-only"]), "cmd")
    assert "budgets of this call" not in collected and "this call only collected" in collected
    md_partial = bench.summarize([r for r in rows if r["train_seconds"] <= 30 or r["model"] == "air"], args, "cmd")
    assert "< 20.00x (supair not there yet)" in md_partial  # AIR reached 0.9 at 600 s; supair only trained 30 s


def test_only_seeds_selects_the_runs_to_train() -> None:
    assert bench.parse_args(["--seeds", "3"]).seed_list == [0, 1, 2]
    assert bench.parse_args(["--seeds", "3", "--only-seeds", "2,1"]).seed_list == [1, 2]


@pytest.mark.parametrize("argv", [["--models", "nope"], ["--budget", "air"], ["--budget", "air=-1"], ["--seeds", "0"],
                                  ["--only-seeds", "a"], ["--only-seeds", "-1"], ["--only-seeds", ","]])
def test_bad_arguments_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_end_to_end_tiny_budget(tmp_path: Path) -> None:
    tiny = ["--set", "model.inference.lstm_units=8", "--set", "model.object_spn.repetitions=1", "--set", "model.object_spn.num_leaves=2",
            "--set", "model.object_spn.num_sums=2", "--set", "model.air.z_what_size=3", "--set", "model.air.encoder_units=8",
            "--set", "model.air.decoder_units=8", "--set", "model.air.predict_units=8", "--set", "model.air.baseline_units=8",
            "--set", "train.batch_size=4"]
    argv = ["--models", "supair-nobg,air", "--budget", "all=0.01", "--eval-seconds", "0.2", "--train-images", "16", "--test-images", "8",
            "--parallel", "2", "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), *tiny]
    assert bench.main(argv) == 0
    base = tmp_path / "out" / "count_vs_time_multi-mnist"
    ctx, rows = benchlib.read_csv(base.with_suffix(".csv"))
    assert ctx["dataset"] == "multi-mnist" and ctx["threads"] == "1" and "torch" in ctx and "cpu" in ctx
    assert "count_vs_time.py --models supair-nobg,air" in str(ctx["call"])  # the training call heads the CSV
    assert {r["model"] for r in rows} == {"supair-nobg", "air"}
    for model in ("supair-nobg", "air"):
        mine = [r for r in rows if r["model"] == model]
        assert float(mine[0]["train_seconds"]) == 0 and float(mine[-1]["train_seconds"]) >= 0.6  # evaluated at 0 and at the end
        assert all(0 <= float(r["count_accuracy"]) <= 1 for r in mine)
    md = base.with_suffix(".md").read_text()
    assert "torch threads per run: 1" in md and "| air |" in md and "CPU:" in md
    assert base.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # a second call with the budget spent trains nothing and keeps the results
    n = len(rows)
    assert bench.main(argv) == 0
    assert len(benchlib.read_csv(base.with_suffix(".csv"))[1]) == n
    # both training calls are listed in the report, oldest first
    md = base.with_suffix(".md").read_text()
    assert md.count("count_vs_time.py --models supair-nobg,air") >= 3  # two listed calls and "this call"
    assert "1. " in md and "2. " in md
    # the same report from the CSV alone, without the runs folder
    assert bench.main(["--from-csv", str(base.with_suffix(".csv")), "--eval-seconds", "0.2", "--out-dir", str(tmp_path / "again")]) == 0
    again = tmp_path / "again" / "count_vs_time_multi-mnist"
    assert _tables(again.with_suffix(".md").read_text()) == _tables(md)
    assert benchlib.read_csv(again.with_suffix(".csv")) == benchlib.read_csv(base.with_suffix(".csv"))
    assert "report rebuilt from the CSV" in again.with_suffix(".md").read_text()


def _tables(md: str) -> str:
    return md[md.index("\n## "):]


@pytest.mark.parametrize("dataset,eval_seconds", [("multi-mnist", "5"), ("sprites", "30"), ("noisy-mnist", "15"), ("grid-mnist", "15")])
def test_committed_results_are_what_the_script_writes_from_their_csv(tmp_path: Path, dataset: str, eval_seconds: str) -> None:
    results = ROOT / "benchmarks" / "results" / f"count_vs_time_{dataset}"
    assert bench.main(["--from-csv", str(results.with_suffix(".csv")), "--eval-seconds", eval_seconds, "--out-dir", str(tmp_path)]) == 0
    committed = results.with_suffix(".md").read_text()
    assert _tables((tmp_path / f"count_vs_time_{dataset}.md").read_text()) == _tables(committed)
    assert f"--from-csv benchmarks/results/count_vs_time_{dataset}.csv --eval-seconds {eval_seconds}`" in committed
    ctx, _ = benchlib.read_csv(results.with_suffix(".csv"))
    assert {"command", "date", "cpu", "threads", "torch", "call"} <= set(ctx)


def test_collected_accuracies_are_read_at_the_csv_precision(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "multi-mnist" / "supair" / "seed0"
    folder.mkdir(parents=True)
    rows = [{"step": 0, "cpu_seconds": 0.0, "train_seconds": 0.0, "count_accuracy": 0.5},
            {"step": 9, "cpu_seconds": 10.0, "train_seconds": 11.0, "count_accuracy": 0.949999988079071}]  # 1900/2000 in float32
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    collected = bench.collect(bench.parse_args(["--models", "supair", "--runs-dir", str(tmp_path)]))
    assert collected[-1]["count_accuracy"] == 0.95
    assert bench._time_to(bench._runs(collected, "supair")[0], 0.95) == 10.0


def test_per_model_overrides_reach_only_that_model(tmp_path: Path) -> None:
    args = bench.parse_args(["--set", "supair:train.batch_size=32", "--set", "train.test_images=100",
                             "--runs-dir", str(tmp_path)])
    supair = bench.run_command(args, "supair", 0)
    air = bench.run_command(args, "air", 0)
    assert ["--set", "train.batch_size=32"] == supair[supair.index("train.batch_size=32") - 1:][:2]
    assert "train.batch_size=32" not in air and "supair:train.batch_size=32" not in air
    assert "train.test_images=100" in supair and "train.test_images=100" in air


def test_collect_gathers_every_model_and_seed_on_disk(tmp_path: Path) -> None:
    import json

    for model, seeds in (("supair", (0, 1, 2)), ("air", (0,))):
        for seed in seeds:
            folder = tmp_path / "multi-mnist" / model / f"seed{seed}"
            folder.mkdir(parents=True)
            row = {"step": 1, "cpu_seconds": 10.0 + seed, "train_seconds": 12.0, "count_accuracy": 0.5}
            (folder / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    args = bench.parse_args(["--models", "air", "--seeds", "1", "--runs-dir", str(tmp_path)])
    rows = bench.collect(args)
    assert sorted((r["model"], r["seed"]) for r in rows) == [("air", 0), ("supair", 0), ("supair", 1), ("supair", 2)]
    md = bench.summarize(rows, args, "cmd")
    assert "| supair |" in md and "| air |" in md
