"""Compiling a region graph into layers: the leaf layer, one product layer per height, mixing where needed.

Each region becomes a vector of ``K`` nodes: ``num_leaves`` leaf distributions
for a leaf region, ``num_sums`` outputs for an inner one. The partitions whose
parent lies at height ``h`` form one product layer: a Tucker layer (outer
product of two children, then sums) or a CP layer (per-child projections
multiplied elementwise, any number of children). Regions with several
partitions get a mixing layer after their product layer. The root gives
``num_classes`` outputs: directly from a Tucker layer, or, for CP circuits,
through one more sum layer over the root region's ``num_sums`` products.

Buffer rows: the leaf regions, then the regions of each height in turn; the
root region is the last row. Within each height, regions are ordered by the
first layer that reads them (stable otherwise: leaf regions in
``region_graph.leaf_regions`` order, inner ones by index), and each height's
block is split into one *chunk* per reading layer: a layer's gradient flows
back into the chunk it reads, never into a whole block (a hidden Chow-Liu
tree reads one leaf per variable at every height). A RAT-SPN has one chunk per
height. Compilation reads the region graph and never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import ChildRows, CPLayer, LeafLayerBase, MixingLayer, RowSource, TuckerLayer
from .leaves import LeafFamily
from .region_graph import RegionGraph

__all__ = ["Level", "Compiled", "compile_circuit", "LAYER_KINDS"]

LAYER_KINDS = ("tucker", "cp")


@dataclass
class Level:
    """The layers of one height of the region graph.

    Attributes:
        height: the regions' height.
        regions: region indices, in buffer-row order.
        start: buffer row of the first region.
        partitions: partition indices, in the product layer's order (grouped by region).
        product: the product layer over these partitions.
        mixing: sums over the partitions of regions with several, or None.
    """

    height: int
    regions: list[int]
    start: int
    partitions: list[int]
    product: TuckerLayer | CPLayer
    mixing: MixingLayer | None


@dataclass
class Compiled:
    """What :func:`compile_circuit` builds."""

    leaf_layer: LeafLayerBase
    leaf_regions: tuple[int, ...]  # the leaf layer's rows
    levels: list[Level]
    root_sum: CPLayer | None
    row: dict[int, int]
    num_rows: int
    k_max: int
    chunks: list[list[int]]  # per block (leaf rows, then each level's regions), the sizes of its chunks


def _sources(blocks_of_rows: list[tuple[int, int]], block_sizes: list[int]) -> list[RowSource]:
    """Group gathered rows, given as ``(block, row in block)`` in output order, into one source per block.

    A block whose rows occupy a contiguous range of the output gets a slice (one ``index_select`` in place).
    """
    by_block: dict[int, tuple[list[int], list[int]]] = {}
    for pos, (b, r) in enumerate(blocks_of_rows):
        rows, dest = by_block.setdefault(b, ([], []))
        rows.append(r)
        dest.append(pos)
    out = []
    for b, (rows, dest) in by_block.items():
        contiguous = dest == list(range(dest[0], dest[0] + len(dest)))
        out.append(RowSource(b, torch.tensor(rows, dtype=torch.long),
                             slice(dest[0], dest[0] + len(dest)) if contiguous else torch.tensor(dest, dtype=torch.long)))
    return out


def compile_circuit(rg: RegionGraph, leaf: LeafFamily, num_sums: int, num_leaves: int, num_classes: int,
                    layer: str, project_leaves: bool) -> Compiled:
    """Build the layers of a circuit over ``rg`` (validated by the caller; see :class:`spnkit.SPN`)."""
    heights = rg.heights
    top = heights[rg.root]
    consumer = {rg.root: top}  # region -> the first height that reads it (the root: its root sums, if any)
    for p in rg.partitions:
        for c in p.children:
            consumer[c] = min(consumer.get(c, top), heights[p.parent])
    position = {r: i for i, r in enumerate(rg.leaf_regions)}
    leaves = sorted(rg.leaf_regions, key=lambda r: (consumer[r], position[r]))
    leaf_layer = leaf.make_layer([rg.regions[i] for i in leaves], rg.num_vars, num_leaves)
    row = {r: i for i, r in enumerate(leaves)}
    row_k = [num_leaves] * len(leaves)  # entries of each buffer row
    chunks: list[list[int]] = []
    where: dict[int, tuple[int, int]] = {}  # region -> (chunk, row in chunk)
    block_sizes: list[int] = []  # rows of every chunk

    def add_block(regions: list[int]) -> None:
        sizes: list[int] = []
        for i, r in enumerate(regions):
            if i == 0 or consumer[r] != consumer[regions[i - 1]]:
                sizes.append(0)
                block_sizes.append(0)
            where[r] = (len(block_sizes) - 1, sizes[-1])
            sizes[-1] += 1
            block_sizes[-1] += 1
        chunks.append(sizes)

    add_block(leaves)
    is_leaf = set(leaves)
    k_max = max(num_leaves, num_sums)
    by_height: list[list[int]] = [[] for _ in range(top + 1)]
    for r, h in enumerate(heights):
        by_height[h].append(r)
    levels: list[Level] = []
    for h in range(1, top + 1):
        regions = sorted(by_height[h], key=lambda r: (consumer[r], r))
        if not regions:
            continue
        parts_per_region = [list(rg.partitions_of[r]) for r in regions]
        partitions = [p for ps in parts_per_region for p in ps]
        kids = [rg.partitions[p].children for p in partitions]
        k_out = num_classes if layer == "tucker" and h == top else num_sums
        k_in = max(row_k[row[c]] for ks in kids for c in ks)
        product: TuckerLayer | CPLayer
        if layer == "tucker":
            order = [c for ks in kids for c in ks[:1]] + [c for ks in kids for c in ks[1:]]  # lefts, then rights
            gather = ChildRows(_sources([where[c] for c in order], block_sizes), len(order), k_in, block_sizes)
            child_k = torch.tensor([[row_k[row[c]] for c in ks] for ks in kids])  # (P, 2)
            valid = None
            if int(child_k.min()) < k_in:
                ar = torch.arange(k_in)
                valid = (ar.view(1, -1, 1) < child_k[:, 0].view(-1, 1, 1)) & (ar.view(1, 1, -1) < child_k[:, 1].view(-1, 1, 1))
            left = torch.tensor([row[ks[0]] for ks in kids], dtype=torch.long)
            right = torch.tensor([row[ks[1]] for ks in kids], dtype=torch.long)
            product = TuckerLayer(gather, left, right, k_in, k_out, valid)
        else:
            slots = [(pos, c) for pos, ks in enumerate(kids) for c in ks]
            projected = [s for s in slots if project_leaves or s[1] not in is_leaf]
            direct = [s for s in slots if not project_leaves and s[1] in is_leaf]
            projected.sort(key=lambda s: where[s[1]][0])  # by source block: each block's rows contiguous
            direct.sort(key=lambda s: where[s[1]][0])
            both = projected + direct
            gather = ChildRows(_sources([where[c] for _, c in both], block_sizes), len(both), k_in, block_sizes)
            child_k = torch.tensor([row_k[row[c]] for _, c in projected], dtype=torch.long)
            valid = None
            if len(projected) and int(child_k.min()) < k_in:
                valid = torch.arange(k_in).view(1, -1) < child_k.view(-1, 1)  # (S, k_in)

            def index(pairs: list[tuple[int, int]], i: int) -> torch.Tensor:
                return torch.tensor([p[i] if i == 0 else row[p[1]] for p in pairs], dtype=torch.long)

            product = CPLayer(gather, len(partitions), index(projected, 0), index(projected, 1),
                              index(direct, 0), index(direct, 1), k_in, k_out, valid)
        mixing = None
        if any(len(ps) > 1 for ps in parts_per_region):
            p_max = max(len(ps) for ps in parts_per_region)
            table = torch.full((len(regions), p_max), -1, dtype=torch.long)
            pos = 0
            for i, ps in enumerate(parts_per_region):
                table[i, : len(ps)] = torch.arange(pos, pos + len(ps))
                pos += len(ps)
            mixing = MixingLayer(table, k_out)
        start = len(row_k)
        for i, r in enumerate(regions):
            row[r] = start + i
            row_k.append(k_out)
        add_block(regions)
        levels.append(Level(h, regions, start, partitions, product, mixing))
    root_sum = None
    if layer == "cp":  # the root region's num_sums products, mixed by num_classes sums
        gather = ChildRows([RowSource(where[rg.root][0], torch.zeros(1, dtype=torch.long), slice(0, 1))], 1, num_sums, block_sizes)
        none = torch.zeros(0, dtype=torch.long)
        root_sum = CPLayer(gather, 1, torch.zeros(1, dtype=torch.long), torch.tensor([row[rg.root]]), none, none, num_sums, num_classes)
    return Compiled(leaf_layer, tuple(leaves), levels, root_sum, row, len(row_k), k_max, chunks)


def register(owner: nn.Module, compiled: Compiled) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The product and mixing layers of ``compiled`` as module lists of ``owner`` (so that ``.to()`` and ``state_dict`` see them)."""
    products = nn.ModuleList([lv.product for lv in compiled.levels])
    mixes = nn.ModuleList([lv.mixing for lv in compiled.levels if lv.mixing is not None])
    return products, mixes
