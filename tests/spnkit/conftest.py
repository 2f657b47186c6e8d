"""Fixtures for the spnkit tests: float64 by default, and optional mutation testing.

Setting ``SPNKIT_MUTANT=<name>`` applies one deliberately broken variant of the
core from ``spnkit_mutants.py`` for the whole session, to check that the tests
catch it (see docs/testing.md); the header of the run names the mutant.
"""

from __future__ import annotations

import os

import pytest
import torch

_MUTANT = os.environ.get("SPNKIT_MUTANT")
if _MUTANT:
    import spnkit_mutants

    spnkit_mutants.apply(_MUTANT)


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """Tests compute in float64; the previous default dtype is restored after each module."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
