"""Test-suite configuration: hypothesis profiles.

Choose a profile with the environment variable ``SPNKIT_HYPOTHESIS_PROFILE``
(see docs/testing.md):

* ``ci`` (default): few examples per property, derandomized (the same examples
  on every run and machine), no example database; the property tests stay
  within about two minutes on two cores.
* ``thorough``: 10 times as many examples, random exploration, examples that
  failed before are replayed from the local ``.hypothesis/`` database.
* ``mutation``: the ``ci`` examples without shrinking, for the mutation
  harness ``tests/spnkit/spnkit_mutants.py``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

#: examples per property in the "ci" profile; tests scale their budgets relative to it
CI_EXAMPLES = 100

settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=10 * CI_EXAMPLES,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(  # used by tests/spnkit/spnkit_mutants.py: the ci examples, no shrinking
    "mutation",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
)

_PROFILES = ("ci", "thorough", "mutation")
_PROFILE = os.environ.get("SPNKIT_HYPOTHESIS_PROFILE", "ci")
if _PROFILE not in _PROFILES:
    raise pytest.UsageError(f"SPNKIT_HYPOTHESIS_PROFILE must be one of {_PROFILES}, got {_PROFILE!r}")
settings.load_profile(_PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    header = f"hypothesis profile: {_PROFILE} (set SPNKIT_HYPOTHESIS_PROFILE=ci|thorough)"
    if os.environ.get("SPNKIT_MUTANT"):
        header += f"\nspnkit mutant applied: {os.environ['SPNKIT_MUTANT']} (deliberately broken core, see docs/testing.md)"
    return header


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "statistical: compares samples with exact probabilities (fixed seeds; see docs/testing.md)")
    config.addinivalue_line("markers", "serialization: needs spnkit.save / spnkit.load")
