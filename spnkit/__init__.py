"""spnkit: sum-product networks as layered tensor circuits in PyTorch.

Structure (:class:`RegionGraph`) is compiled into a circuit (:class:`SPN`) whose
layers are batched tensor operations; queries (likelihood, marginals,
conditional sampling, MPE) take marginalization masks as arguments.

Mask polarity, everywhere in spnkit: True (or 1.0) = unobserved, integrated out.
"""

from .circuit import SPN
from .expectation import impute
from .io import load, save
from .learn import fit
from .leaves import Bernoulli, Binomial, Categorical, Leaf, LeafFamily, Mixed, MultivariateNormal, Normal, Poisson
from .models import hclt, learn_spn
from .region_graph import InvalidStructureError, Partition, RegionGraph
from .viz import draw

__all__ = [
    "SPN",
    "RegionGraph",
    "Partition",
    "InvalidStructureError",
    "LeafFamily",
    "Leaf",
    "Normal",
    "Bernoulli",
    "Categorical",
    "Binomial",
    "Poisson",
    "MultivariateNormal",
    "Mixed",
    "impute",
    "draw",
    "fit",
    "load",
    "save",
    "hclt",
    "learn_spn",
]

__version__ = "0.1.0"
