"""benchmarks/density.py end to end on a tiny budget: it trains, and writes its CSV and table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_density_benchmark_writes_csv_and_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "density.py"), "--smoke", "--out-dir", str(out),
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    csv = (out / "density.csv").read_text()
    assert csv.startswith("# command: ") and "dataset,structure,layer,leaf,method" in csv
    assert "hclt,cp,categorical,em" in csv and "discriminative" in csv
    md = (out / "density.md").read_text()
    assert "| hclt | cp | categorical | em |" in md and "Published figures" in md
    rebuilt = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "density.py"), "--report", "--out-dir", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0 and (out / "density.md").read_text() == md


def _load_density():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import importlib

    return importlib.import_module("density")


def test_merge_keeps_every_runs_rows_commands_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    density = _load_density()
    from benchlib import csv_text, read_csv

    row = dict.fromkeys(density.FIELDS, "")
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, config, threads, command in ((a, "hclt-categorical-em", "2", "python run-a"), (b, "rat-normal-em", "1", "python run-b")):
        folder.mkdir()
        r = dict(row, config=config, structure="s", layer="cp", leaf="categorical", method="em", sums="2", parameters="10",
                 likelihood="exact discrete", test_bits_per_dim="1.5")
        r.pop("threads")  # a file written before threads were recorded per row: its header's threads apply
        (folder / "density.csv").write_text(csv_text([f for f in density.FIELDS if f != "threads"], [r],
                                                     {"command": command, "threads": threads}))
    monkeypatch.setattr(sys, "argv", ["density.py", "--out-dir", str(a), "--merge", str(b / "density.csv")])
    assert density.main() == 0
    ctx, rows = read_csv(a / "density.csv")
    assert ctx["command"] == ["python run-a", "python run-b"] and "threads" not in ctx
    assert [(r["config"], r["threads"]) for r in rows] == [("hclt-categorical-em", "2"), ("rat-normal-em", "1")]
    md = (a / "density.md").read_text()
    assert "- command: python run-a\n- command: python run-b\n" in md
