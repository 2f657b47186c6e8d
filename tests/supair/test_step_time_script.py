"""benchmarks/step_time.py: every variant runs, the table is written, the allocator leaves the arithmetic alone."""

from __future__ import annotations

import re

import pytest
from benchmark_scripts import ROOT, load_benchmark


def test_variants_run_and_the_allocator_changes_no_value(tmp_path, capsys) -> None:
    mod = load_benchmark("step_time")
    out = tmp_path / "step_time.md"
    assert mod.main(["--models", "air", "--rounds", "1", "--steps", "2", "--warmup", "2",
                     "--baseline", str(ROOT), "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| air |")]
    assert len(rows) == 4  # baseline and this code, each with both allocators
    assert {tuple(r.split(" | ")[2:4]) for r in rows} == {(c, a) for c in ("baseline", "this") for a in ("default", "keep")}
    hashes = {r.rstrip(" |").split(" | ")[-1] for r in rows}
    assert len(hashes) == 1 and re.fullmatch(r"[0-9a-f]{12}", hashes.pop())  # same code, same parameters
    assert "against baseline/default" in out.read_text()


def test_bad_arguments_say_what_is_expected(tmp_path) -> None:
    mod = load_benchmark("step_time")
    with pytest.raises(SystemExit, match="unknown model"):
        mod.main(["--models", "vae"])
    with pytest.raises(SystemExit, match="allocators"):
        mod.main(["--allocators", "jemalloc"])
    with pytest.raises(SystemExit, match="not a checkout"):
        mod.main(["--baseline", str(tmp_path)])
