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
