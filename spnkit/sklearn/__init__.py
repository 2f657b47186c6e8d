"""Sum-product networks as scikit-learn estimators (needs ``pip install 'spnkit[sklearn]'``).

* :class:`SPNDensity`: a density estimator (``fit``, ``score_samples``,
  ``score``, ``sample``) that also fills missing values (``impute``: conditional
  expectation, most probable completion or a conditional draw).
* :class:`SPNClassifier`: class-conditional circuits and Bayes' rule
  (``predict``, ``predict_proba`` with an estimated or given class prior),
  sharing one circuit below the roots or one circuit per class.

Both take numpy arrays (or anything scikit-learn accepts as ``X``), treat NaN
as a missing value everywhere, build the circuit from a named structure
(random, Poon-Domingos, quad tree, quad graph, HCLT, LearnSPN) or a given
region graph, and train it with :func:`spnkit.fit`. ``import spnkit`` does not
import this module (nor scikit-learn).

Example:
    >>> import numpy as np
    >>> from spnkit.sklearn import SPNDensity
    >>> X = np.random.default_rng(0).normal(size=(300, 6))
    >>> est = SPNDensity(num_sums=2, num_leaves=2, epochs=2, random_state=0).fit(X)
    >>> X_missing = X[:4].copy(); X_missing[:, 0] = np.nan
    >>> bool(np.isfinite(est.score_samples(X_missing)).all())
    True
"""

try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover
    raise ImportError("spnkit.sklearn needs scikit-learn: pip install 'spnkit[sklearn]'") from None

from ._base import LEAVES, STRUCTURES
from ._classifier import OBJECTIVES, SPNClassifier
from ._density import IMPUTE_METHODS, SPNDensity

__all__ = ["SPNDensity", "SPNClassifier", "STRUCTURES", "LEAVES", "OBJECTIVES", "IMPUTE_METHODS"]
