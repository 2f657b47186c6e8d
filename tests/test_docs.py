"""The documentation's runnable examples run, and what the pages state about signatures holds.

A code block of ``README.md`` or ``docs/*.md`` is runnable when the line before
its opening fence is ``<!-- runnable -->``. The runnable blocks of a page run in
order, in one namespace (a page may build on its earlier blocks), in a
temporary working folder: ``python`` blocks with ``exec``, ``bash`` blocks line
by line in a shell whose ``PATH`` starts with this interpreter's folder (so
``spnkit ...`` is the installed command line).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spnkit

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- runnable -->"


def runnable_blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every block marked runnable in a page.

    Raises:
        ValueError: if a mark is not followed by a fenced block.
    """
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
        match = re.fullmatch(r"```(python|bash)", fence)
        if match is None:
            raise ValueError(f"{path.name}:{i + 1}: {MARK} must be followed by a ```python or ```bash fence, got {fence!r}")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        blocks.append((i + 3, match.group(1), "\n".join(lines[i + 2 : end])))
    return blocks


RUNNABLE = [p for p in PAGES if runnable_blocks(p)]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_runnable_blocks(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__docs__"}
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    try:
        for line, language, code in runnable_blocks(page):
            where = f"{page.name}:{line}"
            if language == "python":
                exec(compile(code, where, "exec"), namespace)
                continue
            for command in code.splitlines():
                command = command.split("  #")[0].strip()
                if command and not command.startswith("#"):
                    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)
                    assert done.returncode == 0, f"{where}: `{command}` failed:\n{done.stderr[-2000:]}"
    finally:
        torch.set_num_threads(threads)


def test_every_page_with_examples_has_runnable_ones() -> None:
    for page in ("README.md", "density.md", "visualization.md"):
        assert any(p.name == page for p in RUNNABLE), f"{page} has no block marked {MARK}"


def test_marks_are_followed_by_code(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(f"{MARK}\ntext\n")
    with pytest.raises(ValueError, match="must be followed"):
        runnable_blocks(page)


def _documented_signature(page: Path, name: str, first: str) -> str:
    """The signature written as ``name(first, ...)`` in backticks, whitespace normalized."""
    text = page.read_text()
    match = re.search(rf"`{name}\(({first},.*?)\)`", text, flags=re.S)
    assert match, f"{page.name} does not show the signature of {name}"
    return re.sub(r"\s+", " ", match.group(1)).strip()


def _actual_signature(fn: object) -> str:
    parts = []
    seen_star = False
    for p in inspect.signature(fn).parameters.values():  # type: ignore[arg-type]
        if p.kind is p.KEYWORD_ONLY and not seen_star:
            parts.append("*")
            seen_star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}".replace("'", '"'))
    return ", ".join(parts)


def test_density_page_shows_fits_signature() -> None:
    assert _documented_signature(ROOT / "docs" / "density.md", "fit", "spn") == _actual_signature(spnkit.fit)
