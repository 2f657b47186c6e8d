"""Load a script of ``benchmarks/`` as a module, for the tests of that script.

Importable from any test because pytest puts ``tests/`` on ``sys.path`` (it holds
the root ``conftest.py`` and is not a package).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (registered in ``sys.modules`` under ``name``).

    ``benchmarks/`` joins ``sys.path``, as it does when a script runs, so that the scripts' shared
    helpers (``benchlib``) import.
    """
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
