"""The package boundaries: what importing spnkit loads, and how the applications reach spnkit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("matplotlib", "PIL", "tqdm", "hypothesis", "graphviz", "sklearn", "scipy", "supair", "spnkit_mnist")


def test_import_spnkit_loads_no_optional_dependency() -> None:
    # torch itself imports tqdm when it is installed (torch.hub): count only what spnkit adds
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import spnkit, spnkit.learn, spnkit.viz, spnkit.io\n"
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules and m not in before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _spnkit_imports(path: Path) -> list[str]:
    """Every ``spnkit...`` module a file imports, and every attribute path ``spnkit.x.y`` it reads."""
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "spnkit":
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "spnkit"]
        elif isinstance(node, ast.Attribute):
            parts = []
            cur: ast.expr = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "spnkit":
                names.append(".".join(["spnkit", *reversed(parts)]))
    return names


@pytest.mark.parametrize("app", ["supair", "spnkit_mnist"])
def test_applications_use_only_public_spnkit_names(app: str) -> None:
    private = [
        (str(p.relative_to(ROOT)), name)
        for p in sorted((ROOT / "apps" / app).rglob("*.py"))
        for name in _spnkit_imports(p)
        if any(part.startswith("_") for part in name.split("."))
    ]
    assert private == []


def test_spnkit_does_not_import_the_applications() -> None:
    found = [
        (str(p.relative_to(ROOT)), node.module if isinstance(node, ast.ImportFrom) else node.names[0].name)
        for p in sorted((ROOT / "spnkit").rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text()))
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("supair", "spnkit_mnist", "apps"))
        or (isinstance(node, ast.Import) and node.names[0].name.split(".")[0] in ("supair", "spnkit_mnist", "apps"))
    ]
    assert found == []
