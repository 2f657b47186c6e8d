"""Helpers for testing circuits built with spnkit, shipped so that users and apps can reuse them.

* :mod:`spnkit.testing.brute_force`: a slow reference evaluator walking
  :meth:`spnkit.SPN.to_networkx` node by node, exhaustive enumeration of
  discrete circuits (joint states, MPE, conditional means and variances) and a
  goodness-of-fit test for samplers; :mod:`spnkit.testing.reference_leaves`
  evaluates its leaf regions from textbook formulas (univariate factors,
  multivariate Normals, mixed families).
* :mod:`spnkit.testing.validity`: smoothness / decomposability / coverage /
  normalization checks written independently of :meth:`RegionGraph.check_valid`.
* :mod:`spnkit.testing.circuits`: random (and extreme) parameters, and
  deterministic circuits whose max-product equals their exact MPE.
* :mod:`spnkit.testing.strategies`: hypothesis strategies for region graphs of
  every builder, circuits, inputs, masks and corrupted graphs (needs
  ``hypothesis``, imported only with that module).
"""

from . import brute_force, circuits, validity

__all__ = ["brute_force", "circuits", "validity"]
