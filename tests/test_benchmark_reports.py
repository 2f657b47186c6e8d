"""The benchmarks' shared helpers and their report modes: results files rebuilt from their raw data, with the run's context."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import ROOT, load_benchmark

benchlib = load_benchmark("benchlib")
RESULTS = ROOT / "benchmarks" / "results"


def test_csv_context_round_trip(tmp_path: Path) -> None:
    ctx = {"command": "python x.py --a 1", "date": "2026-01-02", "call": ["one: 1", "two"], "note": "a: b"}
    rows = [{"a": "1", "b": "x"}, {"a": "2", "b": ""}]
    text = benchlib.csv_text(["a", "b"], rows, ctx)
    assert text.startswith("# command: python x.py --a 1\n# date: 2026-01-02\n# call: one: 1\n# call: two\n# note: a: b\na,b\n")
    (tmp_path / "r.csv").write_text(text)
    assert benchlib.read_csv(tmp_path / "r.csv") == (ctx, rows)
    assert benchlib.context_lines(ctx, prefix="- ").splitlines()[2:4] == ["- call: one: 1", "- call: two"]
    (tmp_path / "plain.csv").write_text("a,b\n1,x\n")
    assert benchlib.read_csv(tmp_path / "plain.csv") == ({}, [{"a": "1", "b": "x"}])


def test_context_names_the_command_and_the_machine() -> None:
    ctx = benchlib.context(3, [str(ROOT / "benchmarks" / "spn_speed.py"), "--smoke"])
    assert ctx["command"] == "python benchmarks/spn_speed.py --smoke"
    assert ctx["threads"] == "3" and {"date", "cpu", "cores", "python", "torch"} <= set(ctx)


@pytest.mark.parametrize("name", ["count_vs_time_multi-mnist", "count_vs_time_sprites", "count_vs_time_noisy-mnist",
                                  "count_vs_time_grid-mnist", "spn_speed", "scaling", "em_vs_adam", "practical",
                                  "structure_learning"])
def test_every_results_csv_starts_with_its_context(name: str) -> None:
    ctx, rows = benchlib.read_csv(RESULTS / f"{name}.csv")
    assert rows
    for key in ("command", "date", "cpu", "threads", "torch"):
        assert ctx.get(key), f"{name}.csv: no {key} in its header"


def test_scaling_report_from_its_csv(tmp_path: Path) -> None:
    scaling = load_benchmark("scaling")
    assert scaling.main(["--from-csv", str(RESULTS / "scaling.csv"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scaling.md").read_text() == (RESULTS / "scaling.md").read_text()
    assert benchlib.read_csv(tmp_path / "scaling.csv") == benchlib.read_csv(RESULTS / "scaling.csv")


def test_em_vs_adam_report_from_its_csv(tmp_path: Path) -> None:
    em_vs_adam = load_benchmark("em_vs_adam")
    assert em_vs_adam.main(["--from-csv", str(RESULTS / "em_vs_adam.csv"), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "em_vs_adam.md").read_text()
    assert md == (RESULTS / "em_vs_adam.md").read_text()
    assert "| em | " in md and "| adam | " in md and "- command: python benchmarks/em_vs_adam.py" in md
    assert benchlib.read_csv(tmp_path / "em_vs_adam.csv") == benchlib.read_csv(RESULTS / "em_vs_adam.csv")
    assert (tmp_path / "em_vs_adam.png").read_bytes()[:4] == b"\x89PNG"


def test_practical_report_from_its_csv(tmp_path: Path) -> None:
    practical = load_benchmark("practical")
    assert practical.main(["--from-csv", str(RESULTS / "practical.csv"), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "practical.md").read_text()
    assert md == (RESULTS / "practical.md").read_text()
    assert "| imputation | digits | RMSE |" in md and "| classification | digits | accuracy |" in md


def test_density_report_from_its_csv(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    shutil.copy(RESULTS / "density.csv", tmp_path / "density.csv")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "density.py"), "--report", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "density.md").read_text()
    assert md == (RESULTS / "density.md").read_text()
    ctx, rows = benchlib.read_csv(RESULTS / "density.csv")
    assert ctx.get("command") and ctx.get("date") and all(r["threads"] for r in rows)
    assert {r["config"] for r in rows} >= {"hclt-categorical-em", "classify-rat-normal"}
