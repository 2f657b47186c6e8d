"""Smoke test of benchmarks/spn_speed.py: it runs on a tiny grid and writes its results (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "spn_speed.py"


def test_speed_script_writes_csv_json_and_markdown(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## other section\nkept\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--no-spflow", "--no-memory", "--repeats", "2", "--warmup", "1",
           "--threads", "1", "--out-dir", str(tmp_path / "results"), "--readme", str(readme)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    ctx, rows = _read_csv(tmp_path / "results" / "spn_speed.csv")
    assert {"command", "date", "cpu", "threads", "torch"} <= set(ctx)  # the run's context heads the CSV
    queries = {r["query"] for r in rows if r["library"] == "spnkit"}
    assert queries == {"fwd", "fwd_masked", "fwd_bwd", "em", "sample", "mpe"}
    for r in rows:
        assert float(r["median_ms"]) > 0 and float(r["work_mflop"]) > 0 and float(r["fom"]) > 0
    data = json.loads((tmp_path / "results" / "spn_speed.json").read_text())
    assert len(data["rows"]) == len(rows) and data["meta"]["gemm_gflops"]["used"] > 0
    text = readme.read_text()
    assert "## other section\nkept" in text  # other sections survive
    assert text.count("<!-- spn_speed:begin -->") == 1 and "| fwd_bwd |" in text
    # a second run replaces the block instead of appending another
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert readme.read_text().count("<!-- spn_speed:begin -->") == 1
    # the reports again from the JSON, timing nothing: the same table
    res = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(tmp_path / "results" / "spn_speed.json"),
                          "--out-dir", str(tmp_path / "again"), "--no-readme"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "again" / "spn_speed.md").read_text() == (tmp_path / "results" / "spn_speed.md").read_text()
    assert _read_csv(tmp_path / "again" / "spn_speed.csv") == _read_csv(tmp_path / "results" / "spn_speed.csv")


def test_committed_report_is_what_the_script_writes_from_its_json(tmp_path):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    results = ROOT / "benchmarks" / "results"
    res = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(results / "spn_speed.json"), "--out-dir", str(tmp_path),
                          "--no-readme"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    md = (tmp_path / "spn_speed.md").read_text()
    assert md == (results / "spn_speed.md").read_text()
    assert md.startswith("- command: python benchmarks/spn_speed.py")
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert "<!-- spn_speed:begin -->\n" + md + "<!-- spn_speed:end -->" in readme


def _read_csv(path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from benchlib import read_csv
    finally:
        sys.path.pop(0)
    return read_csv(path)


def test_work_counts_match_hand_count():
    """The flop formula on a tiny RAT-SPN, counted by hand."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import spn_speed
    finally:
        sys.path.pop(0)
    case = spn_speed.Case(num_vars=8, depth=1, repetitions=2, k=3, batch=5)
    spn = spn_speed.build_spnkit(case, __import__("torch").float64)
    B, S, K = 5, 3, 3
    leaf = 2 * B * (S - 1) * (2 * 8) * K  # each repetition covers the 8 variables once; the Normal's constant statistic is a bias
    leaf_masked = 2 * B * S * (2 * 8) * K  # under a mask every statistic, the constant one included, is weighted
    layer = 2 * B * (2 * 9) * 1 + B * (2 * 9)  # 2 partitions (one per repetition) of 3x3 products into 1 root sum
    mixing = 2 * B * 2 * 1  # the root mixes its 2 partitions
    assert spn_speed.work(spn, "fwd", B) == leaf + layer + mixing
    assert spn_speed.work(spn, "fwd_masked", B) == leaf_masked + layer + mixing + B * 8 * S
    assert spn_speed.work(spn, "fwd_bwd", B) == 2 * leaf + 3 * (layer + mixing)
    assert spn_speed.work(spn, "sample", B) == 2 * B * (9 + 8)
