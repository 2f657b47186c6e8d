"""Parameter learning for compiled circuits: gradient training and EM.

* :func:`fit`: mini-batch training by Adam, stochastic EM or full-batch EM, with
  a validation split, early stopping, callbacks and a progress bar.
* :func:`expected_counts` / :func:`m_step`: the two halves of EM, for custom loops.
* :func:`init_leaves`: leaves initialised from the data (``fit(..., init="data")``).
"""

from .em import Counts, expected_counts, m_step
from .fit import METHODS, OBJECTIVES, evaluate, fit
from .init import init_leaves

__all__ = ["fit", "evaluate", "expected_counts", "m_step", "init_leaves", "Counts", "METHODS", "OBJECTIVES"]
