"""What the scikit-learn estimators share: parameters, input checks, circuit construction and training."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..circuit import SPN
from ..learn import fit as _fit
from ..leaves import Bernoulli, Binomial, Categorical, LeafFamily, Normal
from ..models import hclt, learn_spn
from ..region_graph import RegionGraph

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover (scikit-learn 1.3 - 1.5)
    _validate_data = None

__all__ = ["SPNBase", "STRUCTURES", "LEAVES", "normal_for"]

#: the structures an estimator builds by name ("chow-liu" is another name of "hclt")
STRUCTURES = ("random", "poon-domingos", "quad-tree", "quad-graph", "hclt", "chow-liu", "learnspn")
#: the leaf families an estimator builds by name
LEAVES = ("normal", "bernoulli", "categorical", "binomial", "poisson", "multivariate-normal")
_IMAGE = ("poon-domingos", "quad-tree", "quad-graph")
_LEARNED = ("hclt", "chow-liu", "learnspn")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def normal_for(x: np.ndarray) -> Normal:
    """Normal leaves whose bounds suit the data: means within its range, variances from its columns'.

    ``spnkit.Normal()``'s defaults (means in [0, 1], variances in [0.01, 1])
    suit pixels in [0, 1]; for other scales the leaves need bounds of the
    data's own. Uses :meth:`spnkit.Normal.from_data` where the library has it.

    Args:
        x: ``(N, D)`` values; NaN = missing.
    """
    from_data = getattr(Normal, "from_data", None)
    if from_data is not None:
        return from_data(torch.as_tensor(x))
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(x), np.nanmax(x)
        var = np.nanvar(x, axis=0)
    var = var[np.isfinite(var)]
    top = float(var.max()) if var.size and var.max() > 0 else 1.0
    positive = var[var > 0]
    floor = max(1e-3 * float(positive.min()) if positive.size else 1e-3 * top, 1e-8)
    lo, hi = (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else (0.0, 1.0)
    return Normal(min_var=floor, max_var=max(top, 10 * floor), loc_range=(lo, hi))


def _leaf_from_name(name: str, x: np.ndarray) -> LeafFamily:
    """The leaf family called ``name``, with the parameters the data needs (categories, counts, bounds)."""
    import spnkit

    observed = x[~np.isnan(x)]
    top = int(observed.max()) if observed.size else 1
    if name in ("categorical", "binomial", "bernoulli", "poisson") and observed.size and (
        (observed < 0).any() or (observed != np.round(observed)).any()
    ):
        raise ValueError(f"leaf={name!r} needs non-negative integer data; got e.g. {observed[(observed < 0) | (observed != np.round(observed))][:3].tolist()}")
    if name == "normal":
        return normal_for(x)
    if name == "bernoulli":
        return Bernoulli()
    if name == "categorical":
        return Categorical(num_categories=max(top + 1, 2))
    if name == "binomial":
        return Binomial(total_count=max(top, 1))
    family = {"poisson": "Poisson", "multivariate-normal": "MultivariateNormal"}[name]
    cls = getattr(spnkit, family, None)
    if cls is None:
        raise ValueError(f"leaf={name!r} needs spnkit.{family}, which this version of spnkit does not have")
    from_data = getattr(cls, "from_data", None)
    return from_data(torch.as_tensor(x)) if from_data is not None else cls()


class SPNBase(BaseEstimator):
    """Parameters and machinery of :class:`~spnkit.sklearn.SPNDensity` and :class:`~spnkit.sklearn.SPNClassifier`."""

    def __sklearn_tags__(self) -> Any:  # scikit-learn >= 1.6
        t = super().__sklearn_tags__()
        t.input_tags.allow_nan = True  # NaN = a missing value, integrated out
        return t

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"allow_nan": True}

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        s = self.structure
        if not (isinstance(s, RegionGraph) or callable(s) or s in STRUCTURES):
            raise ValueError(f"structure must be one of {STRUCTURES}, a spnkit.RegionGraph or a callable X -> RegionGraph, got {s!r}")
        if not (isinstance(self.leaf, LeafFamily) or self.leaf in LEAVES):
            raise ValueError(f"leaf must be one of {LEAVES} or a spnkit leaf family such as spnkit.Normal(), got {self.leaf!r}")
        for name in ("num_sums", "num_leaves", "repetitions", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.epochs, numbers.Integral) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0 (0: no parameter training), got {self.epochs!r}")
        if self.depth is not None and (not isinstance(self.depth, numbers.Integral) or self.depth < 1):
            raise ValueError(f"depth must be None or a positive int, got {self.depth!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if self.init not in ("auto", "data", "keep"):
            raise ValueError(f"init must be 'auto', 'data' or 'keep', got {self.init!r}")
        if self.structure_params is not None and not isinstance(self.structure_params, dict):
            raise ValueError(f"structure_params must be None or a dict of keyword arguments, got {self.structure_params!r}")

    def _validate(self, X: Any, y: Any = None, *, reset: bool, with_y: bool = False) -> Any:
        """scikit-learn's input checks: 2-D float64, NaN allowed (missing values), inf refused; ``(X, y)`` when ``with_y``."""
        kwargs: dict[str, Any] = {"dtype": np.float64, "reset": reset}
        if reset:
            kwargs["ensure_min_samples"] = 2  # fitting a circuit's structure and leaves takes two rows at least
        if _validate_data is not None:
            kwargs["ensure_all_finite"] = "allow-nan"
            return _validate_data(self, X, y, **kwargs) if with_y else _validate_data(self, X, **kwargs)
        kwargs["force_all_finite"] = "allow-nan"  # pragma: no cover (scikit-learn < 1.6)
        return self._validate_data(X, y, **kwargs) if with_y else self._validate_data(X, **kwargs)  # pragma: no cover

    def _check_fitted_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self._validate(X, reset=False)

    # ------------------------------------------------------------ building
    @property
    def _torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _leaf(self, x: np.ndarray) -> LeafFamily:
        return self.leaf if isinstance(self.leaf, LeafFamily) else _leaf_from_name(self.leaf, x)

    def _structure_name(self) -> str | None:
        s = self.structure
        return "hclt" if s == "chow-liu" else (s if isinstance(s, str) else None)

    def _region_graph(self, x: np.ndarray, mask: np.ndarray, seed: int) -> RegionGraph:
        """The region graph of a structure given by name, instance or callable (not the learned circuits)."""
        D = x.shape[1]
        extra = dict(self.structure_params or {})
        s = self.structure
        if isinstance(s, RegionGraph):
            rg = s
        elif callable(s):
            rg = s(x)
            if not isinstance(rg, RegionGraph):
                raise ValueError(f"structure(X) must return a spnkit.RegionGraph, got {type(rg).__name__}")
        elif s == "random":
            depth = self.depth if self.depth is not None else min(3, int(math.log2(D)))
            if 2**depth > D:
                raise ValueError(f"depth={depth} splits the {D} features into {2**depth} regions; use depth <= {int(math.log2(D))}")
            rg = RegionGraph.random(D, depth, self.repetitions, seed=seed)
        else:
            h, w, c = self._image_shape(D)
            if s == "poon-domingos":
                rg = RegionGraph.poon_domingos(h, w, channels=c, **extra)
            elif s == "quad-tree":
                rg = RegionGraph.quad_tree(h, w, channels=c, **extra)
            else:
                rg = RegionGraph.quad_graph(h, w, channels=c, **extra)
        if rg.num_vars != D:
            raise ValueError(f"the structure has {rg.num_vars} variables but X has {D} features")
        return rg

    def _image_shape(self, num_features: int) -> tuple[int, int, int]:
        shape = self.image_shape
        if shape is None:
            raise ValueError(f"structure={self.structure!r} needs image_shape=(height, width) or (height, width, channels)")
        shape = tuple(int(v) for v in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"image_shape must be (height, width) or (height, width, channels), got {self.image_shape!r}")
        h, w, c = shape if len(shape) == 3 else (*shape, 1)
        if h * w * c != num_features:
            raise ValueError(f"image_shape {self.image_shape} holds {h * w * c} values but X has {num_features} features")
        return h, w, c

    def _build(self, x: np.ndarray, mask: np.ndarray, num_classes: int, seed: int) -> SPN:
        """A new circuit for ``x`` (``(N, D)``, NaN where ``mask``), in the estimator's dtype."""
        D = x.shape[1]
        if D < 2:
            raise ValueError(f"a circuit needs at least 2 variables; X has {D} feature(s)")
        leaf = self._leaf(x)
        name = self._structure_name()
        extra = dict(self.structure_params or {})
        xt = torch.as_tensor(np.where(mask, 0.0, x))
        mt = torch.as_tensor(mask) if mask.any() else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if name == "learnspn":
                if num_classes > 1:
                    raise ValueError("LearnSPN circuits have one node per region, so classes sharing one would differ "
                                     "only at the root; use shared=False (one circuit per class)")
                spn = learn_spn(xt, leaf, mt, seed=seed, **extra)
            elif name == "hclt":
                shape = None if self.image_shape is None else self._image_shape(D)
                if num_classes == 1:
                    spn = hclt(xt, self.num_sums, leaf, mt, image_shape=shape, seed=seed, **extra)
                else:
                    rg = RegionGraph.chow_liu(xt, mt, image_shape=shape, seed=seed, **extra)
                    spn = SPN(rg, leaf, num_sums=self.num_sums, num_leaves=self.num_sums, num_classes=num_classes,
                              layer="cp", project_leaves=False)
            else:
                rg = self._region_graph(x, mask, seed)
                binary = all(len(p.children) == 2 for p in rg.partitions)
                layer = self.layer or ("tucker" if binary else "cp")
                spn = SPN(rg, leaf, num_sums=self.num_sums, num_leaves=self.num_leaves, num_classes=num_classes, layer=layer)
        return spn.to(self._torch_dtype)

    def _train(self, spn: SPN, x: np.ndarray, mask: np.ndarray, labels: np.ndarray | None, seed: int,
               objective: str = "generative") -> list[dict]:
        """Train ``spn`` in place with :func:`spnkit.fit` (nothing when ``epochs == 0``); return its history."""
        if self.epochs == 0:
            return []
        init = self.init
        if init == "auto":
            init = "keep" if self._structure_name() == "learnspn" else "data"
        n = x.shape[0]
        return _fit(
            spn,
            torch.as_tensor(np.where(mask, 0.0, x)).to(self._torch_dtype),
            labels=None if labels is None else torch.as_tensor(labels, dtype=torch.long),
            marginalized=torch.as_tensor(mask) if mask.any() else None,
            method=self.method,
            objective=objective,
            epochs=int(self.epochs),
            batch_size=int(min(self.batch_size, n)),
            lr=self.lr,
            step_size=self.step_size,
            weight_pseudocount=self.weight_pseudocount,
            leaf_pseudocount=self.leaf_pseudocount,
            init=init,
            patience=self.patience,
            valid_fraction=self.valid_fraction if n >= 10 else 0.0,
            max_seconds=self.max_seconds,
            progress=bool(self.verbose),
            seed=seed,
        )

    # ------------------------------------------------------------- queries
    def _log_prob(self, spn: SPN, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """``spn.log_prob`` of every row, NaN entries marginalized: ``(N,)`` or ``(N, C)`` float64."""
        mask = np.isnan(x)
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                xb, mb = x[s : s + batch], mask[s : s + batch]
                xt = torch.as_tensor(np.where(mb, 0.0, xb)).to(spn.dtype)
                out.append(spn.log_prob(xt, torch.as_tensor(mb) if mb.any() else None).double().numpy())
        return np.concatenate(out) if out else np.zeros((0,))

