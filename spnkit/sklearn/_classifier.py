""":class:`SPNClassifier`: class-conditional sum-product networks with the scikit-learn interface."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets

from ..circuit import SPN
from ._base import SPNBase

__all__ = ["SPNClassifier", "OBJECTIVES"]

OBJECTIVES = ("generative", "discriminative")


class SPNClassifier(ClassifierMixin, SPNBase):
    """Classification by class-conditional sum-product networks and Bayes' rule.

    ``p(c | x) ∝ p(c) p(x | c)``: the class-conditional densities are circuits
    and the class prior ``p(c)`` is estimated from the labels or given.
    Missing features (NaN) are integrated out of ``p(x | c)`` exactly, at
    training and at prediction time.

    Two ways to model the classes (``shared``):

    * ``shared=True``: one circuit with one root per class
      (``spnkit.SPN(..., num_classes=C)``). Everything below the roots is
      shared by all classes; only the root sums' weights differ, so the classes
      are different mixtures of the same components. Cheap, and the only form
      that can be trained discriminatively.
    * ``shared=False``: a separate circuit per class, each built and trained on
      its class's rows alone (learned structures are learned per class).
      Components are not shared, so each class gets the full capacity.

    Args:
        shared: one circuit with a root per class (True) or a circuit per class (False).
        objective: ``"generative"`` (maximize ``log p(x | y)``; every method)
            or ``"discriminative"`` (maximize ``log p(y | x)`` under a uniform
            prior, as RAT-SPN; ``shared=True`` and ``method="adam"`` only).
        class_prior: None (the labels' frequencies for the generative objective;
            uniform for the discriminative one, whose roots already model
            ``p(y | x)``), ``"uniform"``, or an array of ``n_classes``
            positive numbers (normalized).
        Other arguments: as :class:`~spnkit.sklearn.SPNDensity`.

    Attributes:
        classes_: the class labels.
        class_prior_: ``p(c)`` used by ``predict_proba``.
        spn_: the shared circuit (``shared=True``), else None.
        spns_: the circuits of the classes (``shared=False``; ``[spn_]`` otherwise).
        history_: :func:`spnkit.fit`'s records (a list per class when ``shared=False``).

    Example:
        >>> import numpy as np
        >>> from spnkit.sklearn import SPNClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(-2, 1, (100, 4)), rng.normal(2, 1, (100, 4))])
        >>> y = np.repeat([0, 1], 100)
        >>> clf = SPNClassifier(num_sums=2, num_leaves=2, epochs=3, random_state=0).fit(X, y)
        >>> clf.score(X, y) > 0.9, clf.predict_proba(X[:2]).shape
        (True, (2, 2))
    """

    def __init__(
        self,
        structure: Any = "random",
        leaf: Any = "normal",
        num_sums: int = 10,
        num_leaves: int = 10,
        *,
        shared: bool = True,
        objective: str = "generative",
        class_prior: Any = None,
        depth: int | None = None,
        repetitions: int = 10,
        image_shape: tuple[int, ...] | None = None,
        structure_params: dict | None = None,
        layer: str | None = None,
        method: str = "em",
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-2,
        step_size: float | tuple[float, float] = 0.1,
        weight_pseudocount: float = 0.1,
        leaf_pseudocount: float = 1.0,
        init: str = "auto",
        patience: int | None = 5,
        valid_fraction: float = 0.1,
        max_seconds: float | None = None,
        dtype: str = "float64",
        random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        self.structure = structure
        self.leaf = leaf
        self.num_sums = num_sums
        self.num_leaves = num_leaves
        self.shared = shared
        self.objective = objective
        self.class_prior = class_prior
        self.depth = depth
        self.repetitions = repetitions
        self.image_shape = image_shape
        self.structure_params = structure_params
        self.layer = layer
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.step_size = step_size
        self.weight_pseudocount = weight_pseudocount
        self.leaf_pseudocount = leaf_pseudocount
        self.init = init
        self.patience = patience
        self.valid_fraction = valid_fraction
        self.max_seconds = max_seconds
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _needs_y(self) -> bool:
        return True

    def fit(self, X: Any, y: Any) -> "SPNClassifier":
        """Build and train the class-conditional circuits on ``X`` and labels ``y``.

        Returns:
            the estimator.

        Raises:
            ValueError: on bad parameters, data or labels (one line).
        """
        self._check_params()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not isinstance(self.shared, (bool, np.bool_)):
            raise ValueError(f"shared must be True or False, got {self.shared!r}")
        if self.objective == "discriminative" and (not self.shared or self.method != "adam"):
            raise ValueError("objective='discriminative' trains one shared circuit by gradients: it needs shared=True and method='adam'")
        x, y = self._validate(X, y, reset=True, with_y=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        C = len(self.classes_)
        self.class_prior_ = self._prior(np.bincount(codes, minlength=C))
        mask = np.isnan(x)
        seed = self._seed()
        self.spn_: SPN | None
        self.history_: list[Any]
        if self.shared:
            spn = self._build(x, mask, C, seed)
            objective = self.objective if C > 1 else "generative"
            self.history_ = self._train(spn, x, mask, codes if C > 1 else None, seed, objective)
            self.spn_, self.spns_ = spn, [spn]
        else:
            spns, histories = [], []
            for c in range(C):
                rows = codes == c
                spn = self._build(x[rows], mask[rows], 1, seed + c)
                histories.append(self._train(spn, x[rows], mask[rows], None, seed + c))
                spns.append(spn)
            self.spn_, self.spns_, self.history_ = None, spns, histories
        return self

    def _prior(self, counts: np.ndarray) -> np.ndarray:
        C = len(counts)
        p = self.class_prior
        if p is None:
            return counts / counts.sum() if self.objective == "generative" else np.full(C, 1.0 / C)
        if isinstance(p, str):
            if p != "uniform":
                raise ValueError(f"class_prior must be None, 'uniform' or an array of {C} positive numbers, got {p!r}")
            return np.full(C, 1.0 / C)
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (C,) or not np.all(np.isfinite(p)) or not np.all(p > 0):
            raise ValueError(f"class_prior must be None, 'uniform' or an array of {C} positive numbers (one per class), got {self.class_prior!r}")
        return p / p.sum()

    def predict_joint_log_proba(self, X: Any) -> np.ndarray:
        """``log p(x, c) = log p(x | c) + log p(c)`` for each row and class, ``(n_samples, n_classes)``."""
        x = self._check_fitted_X(X)
        if self.spn_ is not None:
            lp = self._log_prob(self.spn_, x)
            lp = lp.reshape(x.shape[0], -1)
        else:
            lp = np.stack([self._log_prob(spn, x) for spn in self.spns_], axis=1)
        return lp + np.log(self.class_prior_)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log p(c | x)``, ``(n_samples, n_classes)``; NaN features are integrated out."""
        joint = self.predict_joint_log_proba(X)
        top = joint.max(axis=1, keepdims=True)
        return joint - (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """``p(c | x)``, ``(n_samples, n_classes)``, rows summing to 1."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        joint = self.predict_joint_log_proba(X)
        return self.classes_[np.argmax(joint, axis=1)]

    def score_samples(self, X: Any) -> np.ndarray:
        """``log p(x) = log sum_c p(c) p(x | c)`` of each row (for the generative objective a density)."""
        joint = self.predict_joint_log_proba(X)
        top = joint.max(axis=1)
        return top + np.log(np.exp(joint - top[:, None]).sum(axis=1))
