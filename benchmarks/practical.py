"""spnkit for practitioners, on small data sets that ship with scikit-learn: imputation, tabular likelihood, classification.

Three tasks, each against scikit-learn's own tools on the same splits:

* ``imputation``: 8x8 digits (pixels / 16, in [0, 1]), 30% of the pixels of each
  validation and test image hidden at random; RMSE on the hidden pixels of
  spnkit's conditional expectation (:meth:`spnkit.sklearn.SPNDensity.impute`)
  against a full-covariance Gaussian mixture's conditional mean, a
  5-nearest-neighbour imputer (``KNNImputer``) and the column means.
* ``tabular``: breast-cancer and wine measurements, standardized with the
  training split's statistics; mean test log-likelihood per sample of spnkit
  against the full-covariance Gaussian mixture with the best validation
  likelihood (1 to 8 components).
* ``classification``: digits, :class:`spnkit.sklearn.SPNClassifier` against
  logistic regression (standardized pixels).

Splits: 60% training, 20% validation, 20% test (seeded, stratified by class for
digits). Every method's configuration is chosen on the validation split (for
imputation by validation RMSE, for tabular data by validation likelihood, for
classification by validation accuracy) and reported on the test split;
the table lists every configuration tried. Writes
``benchmarks/results/practical.csv`` (context header, one row per method and
configuration) and ``practical.md``; ``--from-csv FILE`` rewrites the markdown
from such a CSV.

Usage::

    .venv/bin/python benchmarks/practical.py                   # a few minutes on 2 threads
    .venv/bin/python benchmarks/practical.py --smoke --out /tmp/x   # seconds (the test runs this)
    .venv/bin/python benchmarks/practical.py --from-csv benchmarks/results/practical.csv
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import atomic_write, context, context_lines, csv_text, read_csv

import spnkit

FIELDS = ["task", "dataset", "method", "config", "selected", "metric", "valid", "test", "seconds"]
TASKS = ("imputation", "tabular", "classification")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--missing", type=float, default=0.3, help="share of hidden pixels (default 0.3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny models and subsets: checks that the script runs")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--from-csv", type=Path, metavar="FILE", help="run nothing: rewrite the markdown from a CSV this script wrote")
    return p.parse_args(argv)


# --------------------------------------------------------------------- data
def splits(x: np.ndarray, y: np.ndarray, seed: int, stratify: bool) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """60 / 20 / 20 seeded splits ``((x, y) train, valid, test)``."""
    from sklearn.model_selection import train_test_split

    xa, xt, ya, yt = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y if stratify else None)
    xr, xv, yr, yv = train_test_split(xa, ya, test_size=0.25, random_state=seed, stratify=ya if stratify else None)
    return (xr, yr), (xv, yv), (xt, yt)


def hide(x: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``x`` with a random ``share`` of its entries set to NaN (at least one observed entry per row)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(x.shape) < share
    mask[mask.all(axis=1), 0] = False
    return np.where(mask, np.nan, x)


# ------------------------------------------------------- Gaussian mixtures
def gmm_conditional_mean(gmm: Any, x: np.ndarray) -> np.ndarray:
    """``E[x_missing | x_observed]`` under a full-covariance ``GaussianMixture`` (NaN = missing)."""
    out = x.copy()
    logw = np.log(gmm.weights_)
    for i in np.flatnonzero(np.isnan(x).any(axis=1)):
        h = np.isnan(x[i])
        o = ~h
        scores, means = [], []
        for k in range(gmm.n_components):
            mu, cov = gmm.means_[k], gmm.covariances_[k]
            chol = np.linalg.cholesky(cov[np.ix_(o, o)])
            diff = x[i, o] - mu[o]
            z = np.linalg.solve(chol, diff)
            alpha = np.linalg.solve(chol.T, z)
            scores.append(logw[k] - 0.5 * (z @ z) - np.log(np.diag(chol)).sum() - 0.5 * o.sum() * math.log(2 * math.pi))
            means.append(mu[h] + cov[np.ix_(h, o)] @ alpha)
        s = np.array(scores)
        w = np.exp(s - s.max())
        out[i, h] = (w / w.sum()) @ np.array(means)
    return out


def fit_gmm(x: np.ndarray, k: int, seed: int) -> Any:
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(k, covariance_type="full", random_state=seed, n_init=2).fit(x)


def rmse(filled: np.ndarray, truth: np.ndarray, holes: np.ndarray) -> float:
    mask = np.isnan(holes)
    return float(np.sqrt(np.mean((filled[mask] - truth[mask]) ** 2)))


def mark_selected(rows: list[dict], higher_is_better: bool) -> None:
    """Mark, per method, the configuration with the best validation figure."""
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        best = (max if higher_is_better else min)(mine, key=lambda r: r["valid"])
        for r in mine:
            r["selected"] = r is best


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- the tasks
def imputation(args: argparse.Namespace) -> list[dict]:
    from sklearn.datasets import load_digits
    from sklearn.impute import KNNImputer

    from spnkit.sklearn import SPNDensity

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    (xr, _), (xv, _), (xt, _) = splits(x, y, args.seed, stratify=True)
    if args.smoke:
        xr, xv, xt = xr[:200], xv[:60], xt[:60]
    hv, ht = hide(xv, args.missing, args.seed + 1), hide(xt, args.missing, args.seed + 2)
    rows: list[dict] = []

    def add(method: str, config: str, impute: Callable[[np.ndarray], np.ndarray], seconds: float) -> None:
        rows.append({"task": "imputation", "dataset": "digits", "method": method, "config": config, "metric": "RMSE",
                     "valid": rmse(impute(hv), xv, hv), "test": rmse(impute(ht), xt, ht), "seconds": seconds})
        print(f"imputation  {method:<24} {config:<60} valid {rows[-1]['valid']:.4f} test {rows[-1]['test']:.4f}", flush=True)

    means = np.nanmean(xr, axis=0)
    add("column mean", "training means", lambda h: np.where(np.isnan(h), means, h), 0.0)
    knn, s = timed(lambda: KNNImputer(n_neighbors=5).fit(xr))
    add("5-NN imputer", "KNNImputer(n_neighbors=5)", knn.transform, s)
    for k in ((1, 2) if args.smoke else (1, 2, 4, 8, 16)):
        gmm, s = timed(lambda k=k: fit_gmm(xr, k, args.seed))
        add("Gaussian mixture", f"full covariance, {k} components", lambda h, g=gmm: gmm_conditional_mean(g, h), s)
    for config, params in spn_density_configs(args, image=True):
        est, s = timed(lambda p=params: SPNDensity(random_state=args.seed, **p).fit(xr))
        add("spnkit", config, est.impute, s)
        if config.startswith("random") and not args.smoke:  # the other completions of the same circuit, for comparison
            add("spnkit MPE", config, lambda h, e=est: e.impute(h, method="mpe"), s)
            add("spnkit mean of 32 samples", config, lambda h, e=est: np.mean(
                [e.impute(h, method="sample", random_state=i) for i in range(32)], axis=0), s)
    mark_selected(rows, higher_is_better=False)
    return rows


def _mvn() -> Any:
    """The multivariate Normal family if this spnkit has it (else None: its configurations are left out)."""
    return getattr(spnkit, "MultivariateNormal", None)


def spn_density_configs(args: argparse.Namespace, image: bool, num_features: int = 64) -> list[tuple[str, dict]]:
    """The spnkit configurations tried: name and :class:`~spnkit.sklearn.SPNDensity` parameters."""
    if args.smoke:
        return [("random, normal, K=2", {"num_sums": 2, "num_leaves": 2, "depth": 1, "repetitions": 2, "epochs": 1})]
    train = {"method": "em", "epochs": 40, "patience": 5}
    out = [
        ("random depth 3, R=10, normal, K=10", {"depth": 3, "repetitions": 10, **train}),
        ("hclt, normal, K=16", {"structure": "hclt", "num_sums": 16, **train}),
        ("learnspn, normal", {"structure": "learnspn", "epochs": 0}),
    ]
    if image:
        out.append(("poon-domingos delta 2, normal, K=4", {"structure": "poon-domingos", "image_shape": (8, 8),
                                                          "structure_params": {"delta": 2}, "num_sums": 4, "num_leaves": 4, **train}))
    if _mvn() is not None:
        for depth, reps, k in ((1, 10, 5), (2, 10, 5)):
            if 2**depth <= num_features:
                out.append((f"random depth {depth}, R={reps}, multivariate-normal, K={k}",
                            {"leaf": "multivariate-normal", "depth": depth, "repetitions": reps, "num_sums": k, "num_leaves": k, **train}))
        for reps, k in ((10, 5), (20, 8)) if image else ():  # pixels in [0, 1]: eigenvalues down to 1e-4 and a weak prior: the regressions between pixels kept
            out.append((f"random depth 1, R={reps}, multivariate-normal(min_var=1e-4), leaf prior 0.01, K={k}",
                        {"leaf": _mvn()(min_var=1e-4, max_var=1.0), "depth": 1, "repetitions": reps, "num_sums": k, "num_leaves": k,
                         "leaf_pseudocount": 0.01, **train}))
        # LearnSPN ending in full-covariance Gaussians over each cluster's dependent variables, then EM
        for min_rows in (100, 200, 400) if image else (50, 100, 200):
            leaf: Any = _mvn()(min_var=1e-4, max_var=1.0) if image else "multivariate-normal"
            name = "multivariate-normal(min_var=1e-4)" if image else "multivariate-normal"
            out.append((f"learnspn min_rows={min_rows}, {name}, EM with leaf prior 0.1",
                        {"structure": "learnspn", "structure_params": {"min_rows": min_rows}, "leaf": leaf, "leaf_pseudocount": 0.1, **train}))
    return out


def tabular(args: argparse.Namespace) -> list[dict]:
    from sklearn.datasets import load_breast_cancer, load_wine

    rows: list[dict] = []
    for name, load in (("breast-cancer", load_breast_cancer), ("wine", load_wine)):
        rows += _tabular_dataset(args, name, load)
    return rows


def _tabular_dataset(args: argparse.Namespace, name: str, load: Callable[..., Any]) -> list[dict]:
    from sklearn.preprocessing import StandardScaler

    from spnkit.sklearn import SPNDensity

    x, y = load(return_X_y=True)
    (xr, _), (xv, _), (xt, _) = splits(x, y, args.seed, stratify=False)
    scaler = StandardScaler().fit(xr)
    xr, xv, xt = scaler.transform(xr), scaler.transform(xv), scaler.transform(xt)
    mine: list[dict] = []

    def add(method: str, config: str, score: Callable[[np.ndarray], float], seconds: float) -> None:
        mine.append({"task": "tabular", "dataset": name, "method": method, "config": config, "metric": "test log-likelihood",
                     "valid": score(xv), "test": score(xt), "seconds": seconds})
        print(f"tabular {name:<14} {method:<18} {config:<56} valid {mine[-1]['valid']:9.3f} test {mine[-1]['test']:9.3f}", flush=True)

    for k in ((1, 2) if args.smoke else range(1, 9)):
        gmm, s = timed(lambda k=k: fit_gmm(xr, k, args.seed))
        add("Gaussian mixture", f"full covariance, {k} components", gmm.score, s)
    for config, params in spn_density_configs(args, image=False, num_features=x.shape[1]):
        try:
            est, s = timed(lambda p=params: SPNDensity(random_state=args.seed, **p).fit(xr))
        except ValueError as err:  # e.g. a structure the data cannot take
            print(f"tabular {name}: {config}: {err}")
            continue
        add("spnkit", config, est.score, s)
    mark_selected(mine, higher_is_better=True)
    return mine


def classification(args: argparse.Namespace) -> list[dict]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from spnkit.sklearn import SPNClassifier

    x, y = load_digits(return_X_y=True)
    (xr, yr), (xv, yv), (xt, yt) = splits(x, y, args.seed, stratify=True)
    if args.smoke:
        xr, yr = xr[:300], yr[:300]
    rows: list[dict] = []

    def add(method: str, config: str, clf: Any, seconds: float) -> None:
        rows.append({"task": "classification", "dataset": "digits", "method": method, "config": config, "metric": "accuracy",
                     "valid": float(clf.score(xv, yv)), "test": float(clf.score(xt, yt)), "seconds": seconds})
        print(f"classification {method:<20} {config:<64} valid {rows[-1]['valid']:.4f} test {rows[-1]['test']:.4f}", flush=True)

    lr, s = timed(lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(xr, yr))
    add("logistic regression", "standardized pixels, C=1", lr, s)
    train = {"epochs": 1 if args.smoke else 30, "patience": 5}
    small = {"num_sums": 2, "num_leaves": 2, "depth": 1, "repetitions": 2} if args.smoke else {}
    configs = [
        ("per class, random, binomial(16), K=10", {"shared": False, "leaf": "binomial", **train, **small}),
        ("per class, random, normal(min_var 0.01), K=10",
         {"shared": False, "leaf": spnkit.Normal(min_var=0.01, max_var=0.25), **train, **small}),
        ("shared, random, binomial(16), K=10", {"shared": True, "leaf": "binomial", **train, **small}),
    ]
    if not args.smoke:
        configs.append(("per class, hclt, binomial(16), K=8", {"shared": False, "leaf": "binomial", "structure": "hclt", "num_sums": 8, **train}))
    for config, params in configs:
        scale = 16.0 if isinstance(params.get("leaf"), spnkit.Normal) else 1.0
        clf, s = timed(lambda p=params, sc=scale: _Scaled(SPNClassifier(random_state=args.seed, **p), sc).fit(xr, yr))
        add("spnkit", config, clf, s)
    mark_selected(rows, higher_is_better=True)
    return rows


class _Scaled:
    """A classifier that sees ``x / scale`` (pixels in [0, 1] for Normal leaves; counts 0..16 for Binomial ones)."""

    def __init__(self, clf: Any, scale: float) -> None:
        self.clf, self.scale = clf, scale

    def fit(self, x: np.ndarray, y: np.ndarray) -> "_Scaled":
        self.clf.fit(x / self.scale, y)
        return self

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.clf.score(x / self.scale, y))


# ------------------------------------------------------------------ reports
GOALS = {
    "imputation": ("spnkit", ("Gaussian mixture", "5-NN imputer"), False),
    "tabular": ("spnkit", ("Gaussian mixture",), True),
    "classification": ("spnkit", ("logistic regression",), True),
}


def _fmt(task: str, v: float) -> str:
    return f"{v:.4f}" if task != "tabular" else f"{v:.2f}"


def report(rows: list[dict], ctx: dict) -> str:
    """The markdown: the goals (selected configurations on the test split), then every configuration."""
    lines = ["# spnkit for practitioners: imputation, tabular likelihood, classification", "",
             *context_lines(ctx, prefix="- ").splitlines(), "",
             "Each method's configuration was chosen on the validation split; test figures of the chosen ones:", "",
             "| task | data set | metric | spnkit (chosen) | best baseline (chosen) | spnkit at least as good |", "|---|---|---|---|---|---|"]
    for task, (ours, theirs, higher) in GOALS.items():
        for dataset in dict.fromkeys(r["dataset"] for r in rows if r["task"] == task):
            chosen = [r for r in rows if r["task"] == task and r["dataset"] == dataset and r["selected"]]
            mine = next((r for r in chosen if r["method"] == ours), None)
            base = [r for r in chosen if r["method"] in theirs]
            if mine is None or not base:
                continue
            best = (max if higher else min)(base, key=lambda r: r["test"])
            met = all((mine["test"] >= b["test"]) if higher else (mine["test"] < b["test"]) for b in base)
            lines.append(f"| {task} | {dataset} | {mine['metric']} | {_fmt(task, mine['test'])} ({mine['config']}) | "
                         f"{_fmt(task, best['test'])} ({best['method']}, {best['config']}) | {'yes' if met else 'no'} |")
    lines += ["", "Every configuration (validation and test; * = chosen on validation; seconds = training time):", "",
              "| task | data set | method | configuration | metric | validation | test | seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        star = " *" if r["selected"] else ""
        lines.append(f"| {r['task']} | {r['dataset']} | {r['method']}{star} | {r['config']} | {r['metric']} | "
                     f"{_fmt(r['task'], r['valid'])} | {_fmt(r['task'], r['test'])} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], ctx: dict, out: Path) -> None:
    atomic_write(out / "practical.csv", csv_text(FIELDS, rows, ctx).encode())
    atomic_write(out / "practical.md", report(rows, ctx).encode())


def from_csv(args: argparse.Namespace) -> int:
    ctx, raw = read_csv(args.from_csv)
    rows = [{**r, "selected": r["selected"] == "True", "valid": float(r["valid"]), "test": float(r["test"]),
             "seconds": float(r["seconds"])} for r in raw]
    write(rows, ctx, args.out)
    print(report(rows, ctx))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_csv is not None:
        return from_csv(args)
    ctx = context(args.threads, [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for task in args.tasks:
        rows += {"imputation": imputation, "tabular": tabular, "classification": classification}[task](args)
    args.out.mkdir(parents=True, exist_ok=True)
    write(rows, ctx, args.out)
    print(report(rows, ctx))
    print(f"wrote practical.csv and practical.md in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
