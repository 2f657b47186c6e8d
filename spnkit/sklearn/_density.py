""":class:`SPNDensity`: a sum-product network as a scikit-learn density estimator and imputer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..expectation import impute
from ._base import SPNBase

__all__ = ["SPNDensity", "IMPUTE_METHODS"]

#: how :meth:`SPNDensity.impute` fills missing values
IMPUTE_METHODS = ("expectation", "mpe", "sample")


class SPNDensity(DensityMixin, SPNBase):
    """A sum-product network density estimator with the scikit-learn interface.

    ``fit`` builds a circuit (:class:`spnkit.SPN`) over the columns of ``X`` and
    trains it with :func:`spnkit.fit`; ``score_samples`` returns exact
    log-densities, ``sample`` draws new rows and ``impute`` fills missing
    values. Missing values are NaN everywhere: ``fit`` learns from the observed
    entries (exact EM for missing data), ``score_samples`` integrates the missing
    entries out (marginal densities), ``impute`` fills them.

    Args:
        structure: ``"random"`` (RAT-SPN random binary trees: ``depth``,
            ``repetitions``), ``"poon-domingos"``, ``"quad-tree"``,
            ``"quad-graph"`` (image structures: need ``image_shape``),
            ``"hclt"`` (alias ``"chow-liu"``: a hidden Chow-Liu tree learned
            from the data, ``num_sums`` latent states), ``"learnspn"`` (LearnSPN:
            clusters and independence tests; one node per region), a
            :class:`spnkit.RegionGraph`, or a callable ``X -> RegionGraph``.
        leaf: ``"normal"`` (bounds taken from the data: means within its range,
            variances from its columns'), ``"bernoulli"``, ``"categorical"``
            (categories ``0..max``), ``"binomial"`` (``total_count = max``),
            ``"poisson"``, ``"multivariate-normal"`` (full covariance over each
            leaf region), or a leaf family instance such as
            ``spnkit.Normal(min_var=0.01, max_var=1.0)``.
        num_sums: ``K``, sums per inner region (latent states for HCLT).
        num_leaves: leaf distributions per leaf region.
        depth: random structures: split levels (None: ``min(3, log2(n_features))``).
        repetitions: random structures: independent random trees.
        image_shape: ``(height, width)`` or ``(height, width, channels)`` of
            image rows (row-major, channels last), for image structures and
            for drawings with thumbnails of HCLT circuits.
        structure_params: further keyword arguments of the structure's builder
            (e.g. ``{"delta": 2}`` for Poon-Domingos, ``{"min_rows": 50}`` for
            LearnSPN).
        layer: ``"tucker"`` or ``"cp"`` (None: Tucker for binary structures,
            CP otherwise and for learned ones).
        method: ``"em"`` (stochastic EM), ``"em-batch"`` or ``"adam"``.
        epochs: passes over the data (0: no training, e.g. to keep LearnSPN's
            closed-form parameters).
        batch_size, lr, step_size, weight_pseudocount, leaf_pseudocount,
            patience, valid_fraction, max_seconds: as in :func:`spnkit.fit`.
        init: ``"data"`` (leaves start from the data, :func:`spnkit.learn.init_leaves`),
            ``"keep"``, or ``"auto"`` (``"keep"`` for LearnSPN, whose leaves are
            fitted to their clusters, ``"data"`` otherwise).
        dtype: ``"float32"`` or ``"float64"``.
        random_state: seeds the structure, the initial parameters, the
            validation split and the training order.
        verbose: show :func:`spnkit.fit`'s progress.

    Attributes:
        spn_: the fitted :class:`spnkit.SPN` (draw it with :func:`spnkit.draw`).
        history_: :func:`spnkit.fit`'s records, one per epoch.
        n_features_in_: number of features seen in ``fit``.

    Example:
        >>> import numpy as np
        >>> from spnkit.sklearn import SPNDensity
        >>> X = np.random.default_rng(0).normal(size=(200, 4))
        >>> est = SPNDensity(num_sums=2, num_leaves=2, epochs=2, random_state=0).fit(X)
        >>> est.score_samples(X[:3]).shape, est.sample(5, random_state=0).shape
        ((3,), (5, 4))
    """

    def __init__(
        self,
        structure: Any = "random",
        leaf: Any = "normal",
        num_sums: int = 10,
        num_leaves: int = 10,
        *,
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

    def fit(self, X: Any, y: Any = None) -> "SPNDensity":
        """Build the circuit and train it on ``X`` (``(n_samples, n_features)``; NaN = missing).

        Args:
            X: training rows.
            y: ignored.

        Returns:
            the estimator.

        Raises:
            ValueError: on bad parameters or data (one line).
        """
        self._check_params()
        x = self._validate(X, reset=True)
        mask = np.isnan(x)
        if mask.all(axis=0).any():
            raise ValueError(f"column {int(np.flatnonzero(mask.all(axis=0))[0])} of X has no observed value")
        seed = self._seed()
        spn = self._build(x, mask, 1, seed)
        self.history_ = self._train(spn, x, mask, None, seed)
        self.spn_ = spn
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each row (``(n_samples,)``); NaN entries are integrated out (exact marginals)."""
        return self._log_prob(self.spn_, self._check_fitted_X(X))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-density of the rows of ``X`` (NaN entries integrated out)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw ``n_samples`` rows from the fitted circuit (``(n_samples, n_features)``)."""
        check_is_fitted(self)
        if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        g = torch.Generator().manual_seed(int(check_random_state(random_state).randint(np.iinfo(np.int32).max)))
        with torch.no_grad():
            return self.spn_.sample(int(n_samples), generator=g).double().numpy()

    def impute(self, X: Any, method: str = "expectation", random_state: Any = None) -> np.ndarray:
        """``X`` with its NaN entries filled in from the circuit, given each row's observed entries.

        Args:
            X: rows with missing values (NaN).
            method: ``"expectation"``: the conditional mean ``E[x_missing | x_observed]``
                (least squared error); ``"mpe"``: the most probable completion
                (max-product); ``"sample"``: one draw from the exact conditional.
            random_state: seeds ``"sample"``.

        Returns:
            a float64 copy of ``X``, observed entries unchanged.
        """
        if method not in IMPUTE_METHODS:
            raise ValueError(f"method must be one of {IMPUTE_METHODS}, got {method!r}")
        x = self._check_fitted_X(X)
        mask = np.isnan(x)
        out = x.copy()
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return out
        spn = self.spn_
        xt = torch.as_tensor(np.where(mask[rows], 0.0, x[rows])).to(spn.dtype)
        mt = torch.as_tensor(mask[rows])
        with torch.no_grad():
            if method == "expectation":
                filled = impute(spn, xt, mt)
            elif method == "mpe":
                filled = spn.mpe(xt, mt)
            else:
                g = torch.Generator().manual_seed(int(check_random_state(random_state).randint(np.iinfo(np.int32).max)))
                filled = spn.sample(evidence=xt, marginalized=mt, generator=g)
        out[rows] = np.where(mask[rows], filled.double().numpy(), x[rows])
        return out
