"""The MNIST application's data: splits, model inputs and exact discrete bits per dimension."""

from __future__ import annotations

import math

import pytest
import torch
from spnkit_mnist.data import VALID_SIZE, bits_per_dim, mnist_splits, model_input

import spnkit


def test_splits_hold_every_training_digit_once_and_the_test_set() -> None:
    s = mnist_splits()
    assert s.train[0].shape == (60000 - VALID_SIZE, 784) and s.valid[0].shape == (VALID_SIZE, 784)
    assert s.test[0].shape == (10000, 784) and s.train[0].dtype == torch.uint8
    both = torch.cat([s.train[0], s.valid[0]]).float()
    assert float(both.sum()) == float(torch.cat([spnkit.datasets.load_mnist("train")[0], spnkit.datasets.load_mnist("valid")[0]]).float().sum())


def test_model_input_is_the_integer_for_discrete_leaves_and_dequantized_for_normal_ones() -> None:
    px = torch.tensor([[0, 7, 255]], dtype=torch.uint8)
    assert torch.equal(model_input(px, spnkit.Categorical(256)), torch.tensor([[0.0, 7.0, 255.0]]))
    y = model_input(px, spnkit.Normal(), torch.Generator().manual_seed(0))
    assert bool(((y * 256).floor() == px.float()).all()) and bool((y < 1).all())


def test_exact_discrete_bits_per_dim_equals_a_brute_force_sum() -> None:
    """On a 2-pixel circuit with 256-value leaves, the probabilities of all 65,536 images sum to 1 and bits/dim is -log2 P / D."""
    rg = spnkit.RegionGraph.random(2, depth=1, repetitions=2, seed=0)
    leaf = spnkit.Categorical(256)
    spn = spnkit.SPN(rg, leaf, 3, 3).double()
    k = torch.arange(256, dtype=torch.float64)
    states = torch.cartesian_prod(k, k)
    with torch.no_grad():
        lp = spn.log_prob(states)
        assert abs(float(torch.logsumexp(lp, 0))) < 1e-9
        x = torch.tensor([[3.0, 200.0], [0.0, 0.0]], dtype=torch.float64)
        mean_ll = float(spn.log_prob(x).mean())
    want = -float(lp[(x[:, 0] * 256 + x[:, 1]).long()].mean()) / (2 * math.log(2))
    assert bits_per_dim(mean_ll, leaf) * 784 / 2 == pytest.approx(want)
