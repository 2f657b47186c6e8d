"""A table of a compiled circuit's layers and parameters, like torch tooling's model summaries.

Parameters are counted *effectively*: entries a layer stores only for padding
(leaf slots of short leaf regions, weights that read padded child entries,
mixing weights of absent partitions) are fixed to zero probability or never
read, so they are excluded. Sum weights are counted one per edge (a region's
``K`` sums over ``I * J`` products hold ``I * J * K`` weights), not as degrees
of freedom after normalization.

Example:
    >>> import spnkit
    >>> rg = spnkit.RegionGraph.random(num_vars=784, depth=4, repetitions=10, seed=0)
    >>> spn = spnkit.SPN(rg, leaf=spnkit.Normal(), num_sums=10, num_leaves=10)
    >>> s = summary(spn)
    >>> s.total_params
    297810
    >>> [row.params for row in s.rows]
    [156800, 80000, 40000, 20000, 1000, 10]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .layers import LeafLayerBase, SumWeights

if TYPE_CHECKING:  # pragma: no cover
    from .circuit import SPN

__all__ = ["summary", "Summary", "SummaryRow", "effective_parameter_counts"]


def effective_parameter_counts(layer: nn.Module) -> Tensor:
    """Effective parameters of each row of a layer (padding excluded).

    Args:
        layer: a leaf layer (:class:`~spnkit.layers.LeafLayerBase`; rows are leaf regions) or a
            sum layer (:class:`~spnkit.layers.TuckerLayer`: rows are partitions;
            :class:`~spnkit.layers.CPLayer`: rows are (partition, child) slots;
            :class:`~spnkit.layers.MixingLayer`: rows are regions).

    Returns:
        ``(rows,)`` int64 counts.

    Raises:
        ValueError: for any other module.
    """
    if isinstance(layer, LeafLayerBase):
        return layer.effective_parameter_counts()
    if isinstance(layer, SumWeights):
        return layer.effective_counts()
    raise ValueError(f"expected a LeafLayer or a sum layer (TuckerLayer, CPLayer, MixingLayer), got {type(layer).__name__}")


@dataclass(frozen=True)
class SummaryRow:
    """One layer of the table.

    Attributes:
        name: the layer's class (the leaf family in brackets for the leaf layer).
        height: region-graph height the layer computes (0 for leaves).
        regions: region vectors the layer's output belongs to.
        partitions: partitions the layer computes (0 for the leaf layer).
        k: text ``"K"`` or ``"K_in -> K_out"``.
        output_shape: ``(rows, batch, K)``, per the layout contract in :mod:`spnkit.layers`.
        params: effective parameters.
        stored: parameter entries the layer stores, padding included.
    """

    name: str
    height: int
    regions: int
    partitions: int
    k: str
    output_shape: tuple[int, int, int]
    params: int
    stored: int


@dataclass(frozen=True, repr=False)
class Summary:
    """Layer table of an :class:`~spnkit.SPN`; ``str()`` (and ``repr()``) render it.

    Attributes:
        rows: one per layer, bottom-up (the order of ``SPN.layers``).
        total_params: effective parameters of the whole circuit.
        stored_params: parameter entries stored, padding included.
        param_bytes: memory of the effective parameters.
        stored_bytes: memory of all stored parameter tensors.
        batch_size: the batch size used in the output shapes.
        header: one line describing the circuit.
    """

    rows: tuple[SummaryRow, ...]
    total_params: int
    stored_params: int
    param_bytes: int
    stored_bytes: int
    batch_size: int
    header: str

    def __str__(self) -> str:
        cols = ("#", "Layer", "Height", "Regions", "Partitions", "K", "Output shape", "Params")
        body = [
            (str(i), r.name, str(r.height), f"{r.regions:,}", f"{r.partitions:,}" if r.partitions else "-",
             r.k, str(r.output_shape), f"{r.params:,}")
            for i, r in enumerate(self.rows)
        ]
        width = [max(len(c), *(len(b[j]) for b in body)) for j, c in enumerate(cols)]
        right = {0, 2, 3, 4, 7}

        def fmt(cells: tuple[str, ...]) -> str:
            return "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, width))).rstrip()

        line = "-" * len(fmt(cols))
        out = [self.header, line, fmt(cols), line, *(fmt(b) for b in body), line]
        out.append(f"Total parameters: {self.total_params:,}")
        out.append(f"Parameter memory: {_human(self.param_bytes)}")
        if self.stored_params != self.total_params:
            pad = self.stored_params - self.total_params
            out.append(f"Stored (with {pad:,} padding entries): {self.stored_params:,} entries, {_human(self.stored_bytes)}")
        out.append(line)
        return "\n".join(out)

    __repr__ = __str__


def _human(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def summary(spn: "SPN", batch_size: int = 1) -> Summary:
    """Summarize the layers of a compiled circuit.

    Args:
        spn: the circuit.
        batch_size: the batch size ``B`` shown in the output shapes ``(rows, B, K)``.

    Returns:
        a :class:`Summary`; print it for the table.

    Raises:
        ValueError: if ``spn`` is not an SPN or ``batch_size`` is not a positive int.
    """
    from .circuit import SPN

    if not isinstance(spn, SPN):
        raise ValueError(f"expected a spnkit.SPN, got {type(spn).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    B = batch_size
    leaf = spn.leaf_layer
    rows = [
        SummaryRow(
            name=f"{type(leaf).__name__}[{type(spn.leaf).__name__}]",
            height=0,
            regions=leaf.num_regions,
            partitions=0,
            k=str(spn.num_leaves),
            output_shape=(leaf.num_regions, B, spn.num_leaves),
            params=int(effective_parameter_counts(leaf).sum()),
            stored=sum(p.numel() for p in leaf.parameters()),
        )
    ]
    for lv in spn.levels:
        prod = lv.product
        k_out = prod.k_out
        rows.append(
            SummaryRow(
                name=type(prod).__name__,
                height=lv.height,
                regions=len(lv.regions),
                partitions=prod.num_partitions,
                k=f"{prod.k_in} -> {k_out}",
                output_shape=(prod.num_partitions, B, k_out),
                params=int(effective_parameter_counts(prod).sum()),
                stored=prod.logits.numel(),
            )
        )
        if lv.mixing is not None:
            m = lv.mixing
            rows.append(
                SummaryRow(
                    name="MixingLayer",
                    height=lv.height,
                    regions=len(lv.regions),
                    partitions=prod.num_partitions,
                    k=str(k_out),
                    output_shape=(len(lv.regions), B, k_out),
                    params=int(effective_parameter_counts(m).sum()),
                    stored=m.logits.numel(),
                )
            )
    top = spn.levels[-1].height
    if spn.root_sum is not None:
        r = spn.root_sum
        rows.append(SummaryRow("CPLayer[root sums]", top, 1, 0, f"{r.k_in} -> {r.k_out}", (1, B, r.k_out),
                               int(effective_parameter_counts(r).sum()), r.logits.numel()))
    covered = {id(p) for layer in spn.layers for p in layer.parameters()}
    other = [p for p in spn.parameters() if id(p) not in covered]
    if other:  # parameters a subclass adds outside the compiled layers count in full
        n = sum(p.numel() for p in other)
        rows.append(SummaryRow("other parameters", top, 0, 0, "-", (0, B, 0), n, n))
    item = torch.empty((), dtype=spn.dtype).element_size()
    total = sum(r.params for r in rows)
    stored = sum(r.stored for r in rows)
    stored_bytes = sum(p.numel() * p.element_size() for p in spn.parameters())
    header = (
        f"SPN: {spn.num_vars} variables, leaf {spn.leaf}, layer={spn.layer}, num_leaves={spn.num_leaves}, "
        f"num_sums={spn.num_sums}, num_classes={spn.num_classes}, dtype={str(spn.dtype).replace('torch.', '')}, batch={B}"
    )
    return Summary(tuple(rows), total, stored, total * item, stored_bytes, B, header)
