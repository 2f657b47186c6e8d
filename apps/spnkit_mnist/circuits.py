"""The circuits the MNIST commands build: a structure, a layer kind and a leaf family, by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

import spnkit
from spnkit import SPN, Leaf

__all__ = ["ModelSpec", "build", "STRUCTURES", "LEAVES", "leaf_family"]

STRUCTURES = ("hclt", "random", "poon-domingos", "quad-tree", "quad-graph")
LEAVES = ("categorical", "binomial", "normal")


@dataclass(frozen=True)
class ModelSpec:
    """A circuit over the 784 pixels.

    Attributes:
        structure: one of :data:`STRUCTURES` (``hclt``: a hidden Chow-Liu tree
            learned from the training pixels; ``random``: a RAT-SPN).
        layer: ``"tucker"`` or ``"cp"`` (HCLT and 4-ary quad trees: CP).
        leaf: one of :data:`LEAVES`.
        sums, leaves: ``K`` of the sum and leaf vectors.
        classes: root sums (10 for a classifier).
        depth, repetitions: RAT-SPN sizes; ``depth`` also limits quad trees and graphs.
        delta: Poon-Domingos cut spacing.
        arity: quad-tree product arity (2 or 4).
        min_var, max_var: Normal variance bounds.
        seed: seeds the structure and the initial parameters.
    """

    structure: str = "hclt"
    layer: str = "cp"
    leaf: str = "categorical"
    sums: int = 32
    leaves: int = 32
    classes: int = 1
    depth: int = 4
    repetitions: int = 10
    delta: int = 7
    arity: int = 2
    min_var: float = 1e-4
    max_var: float = 0.25
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def leaf_family(spec: ModelSpec) -> Leaf:
    """The leaf family a spec names."""
    if spec.leaf == "categorical":
        return spnkit.Categorical(num_categories=256)
    if spec.leaf == "binomial":
        return spnkit.Binomial(total_count=255)
    if spec.leaf == "normal":
        return spnkit.Normal(min_var=spec.min_var, max_var=spec.max_var, loc_range=(0.0, 1.0))
    raise ValueError(f"leaf must be one of {LEAVES}, got {spec.leaf!r}")


def build(spec: ModelSpec, train_pixels: Tensor | None = None) -> SPN:
    """The float32 circuit of ``spec`` (HCLT needs ``train_pixels`` ``(N, 784)`` uint8 for its tree)."""
    if spec.structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {spec.structure!r}")
    leaf = leaf_family(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.structure == "hclt":
            if train_pixels is None:
                raise ValueError("an HCLT needs the training pixels to learn its tree")
            if spec.sums != spec.leaves:
                raise ValueError(f"an HCLT has one latent size: give --sums equal to --leaves, got {spec.sums} and {spec.leaves}")
            return spnkit.hclt(train_pixels, num_latents=spec.sums, leaf=leaf, image_shape=(28, 28, 1), seed=spec.seed)
        if spec.structure == "random":
            rg = spnkit.RegionGraph.random(784, depth=spec.depth, repetitions=spec.repetitions, seed=spec.seed)
        elif spec.structure == "poon-domingos":
            rg = spnkit.RegionGraph.poon_domingos(28, 28, delta=spec.delta)
        elif spec.structure == "quad-tree":
            rg = spnkit.RegionGraph.quad_tree(28, 28, arity=spec.arity)
        else:
            rg = spnkit.RegionGraph.quad_graph(28, 28)
        return SPN(rg, leaf, num_sums=spec.sums, num_leaves=spec.leaves, num_classes=spec.classes, layer=spec.layer).float()
