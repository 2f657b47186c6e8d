"""Layers of a compiled circuit.

The layout contract, for every layer, written once here:

* A layer reads and writes **log-space, region-major** tensors of shape
  ``(regions, batch, K)``: entry ``[r, b, k]`` is the log-value of the ``k``-th
  node of region vector ``r`` for sample ``b``. Region-major makes each layer a
  batched matrix product with the regions as the batch dimension.
* The upward pass keeps one *block* per height of the region graph: the leaf
  layer's rows, then the region vectors of each height, each ``(rows, K_max,
  B)``. A layer gathers its children's rows from the blocks they lie in
  (:class:`~spnkit.layers.base.ChildRows`); the blocks are never concatenated
  in the upward pass. Vectors with fewer than ``K_max`` entries are padded with
  ``-inf`` (probability zero), and the weights that would read the padding are
  fixed to zero. Concatenated, the blocks are the circuit's *buffer*
  ``(rows, B, K_max)``, which backtracking (sampling, MPE) reads by global row.
* Leaf layers (:class:`~spnkit.layers.leaf_base.LeafLayerBase`: factorized
  :class:`LeafLayer`, :class:`MVNLeafLayer`, :class:`MixedLeafLayer`) are built
  by the leaf family and produce the same ``(R, B, K)`` layout.
* Inputs to the leaf layer are sample-major: values ``x`` and evidence weights
  ``w`` of shape ``(batch, num_vars)``. Leaf regions are padded to equal size
  with slots pointing at variable ``num_vars``, which contributes nothing.
* Mask polarity, for the whole library: ``m = 1`` (or True) means unobserved,
  integrated out; the leaf layer weights each factor's log-density by
  ``w = 1 - m``.
* Memory format: the ``(regions, batch, K)`` tensors that layers return, and
  the blocks, are stored **batch-fastest**: each is the ``.transpose(1, 2)``
  view of a contiguous ``(regions, K, batch)`` tensor, as torch's
  ``channels_last`` keeps NCHW shapes over NHWC memory. Internally every layer
  works on ``(regions, K, batch)``, so each matrix product has the batch as its
  long, contiguous dimension (3-4x faster than ``(batch, K)`` rows for small
  ``K``). Layers accept inputs of any strides; use ``reshape``, not ``view``.
* Sum weights are stored as logits ``(A, I, K)`` normalized over dim 1
  (:class:`~spnkit.layers.base.SumWeights`) in every sum layer.

Product-sum layers of two kinds: :class:`TuckerLayer` (outer product of two
children, then ``K`` sums over the ``K^2`` products) and :class:`CPLayer`
(each child projected by its own ``K x K`` sums, the projections multiplied
elementwise; any number of children). :class:`MixingLayer` sums over the
partitions of regions that have several.

No layer loops over regions, nodes or variables: each is a handful of batched
tensor operations. The only loops run over *blocks* of rows sized so that no
temporary exceeds :data:`~spnkit.layers.kernels.CHUNK_BYTES`, and over the
blocks of the upward pass a layer reads from.
"""

from .base import ChildRows, RowSource, SumWeights
from .cp import CPLayer
from .kernels import log_matmul_exp
from .leaf import LeafLayer
from .leaf_base import LeafLayerBase
from .mixed import MixedLeafLayer
from .mixing import MixingLayer
from .mvn import MVNLeafLayer
from .tucker import TuckerLayer

__all__ = ["LeafLayerBase", "LeafLayer", "MVNLeafLayer", "MixedLeafLayer", "TuckerLayer", "CPLayer", "MixingLayer",
           "SumWeights", "ChildRows", "RowSource", "log_matmul_exp"]
