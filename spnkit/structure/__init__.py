"""Structure learning: region graphs and initial parameters learned from data.

* :mod:`~spnkit.structure.chow_liu`: pairwise mutual information, Chow-Liu
  trees and the hidden Chow-Liu tree (HCLT) region graph.
* :mod:`~spnkit.structure.learnspn`: LearnSPN (Gens & Domingos, ICML 2013).

All functions take ``(N, D)`` data and an optional mask ``marginalized``
(True = missing), and are seeded and reproducible.
"""

from .chow_liu import (
    chow_liu_region_graph,
    chow_liu_tree,
    hclt_region_graph,
    maximum_spanning_tree,
    mutual_information,
    tree_center,
)
from .learnspn import LearnedStructure, learn_spn_structure

__all__ = [
    "LearnedStructure",
    "chow_liu_region_graph",
    "chow_liu_tree",
    "hclt_region_graph",
    "learn_spn_structure",
    "maximum_spanning_tree",
    "mutual_information",
    "tree_center",
]
