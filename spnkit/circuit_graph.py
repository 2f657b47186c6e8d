"""The compiled circuit as a graph: its validity check and its node-level networkx export.

Both read only the compiled layers' index tensors and weights (not the region
graph's partitions, except to name nodes), so they check and show what the
layers compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from .layers import CPLayer, TuckerLayer
from .region_graph import InvalidStructureError

if TYPE_CHECKING:  # pragma: no cover
    from .circuit import SPN

__all__ = ["check_compiled", "node_graph"]


def _partition_children(layer: TuckerLayer | CPLayer) -> list[list[int]]:
    """The children's buffer rows of each partition of a product layer."""
    if isinstance(layer, TuckerLayer):
        return [[a, b] for a, b in zip(layer.left.tolist(), layer.right.tolist())]
    kids: list[list[int]] = [[] for _ in range(layer.num_partitions)]
    for p, r in zip(layer.slot_partition.tolist() + layer.direct_partition.tolist(), layer.slot_rows.tolist() + layer.direct_rows.tolist()):
        kids[p].append(r)
    return kids


def check_compiled(spn: "SPN") -> None:
    """Recompute scopes bottom-up from the compiled index tensors and check them.

    Every product's children must have pairwise disjoint scopes (decomposable),
    every partition mixed into a region must have the region's scope (smooth),
    each region's compiled scope must equal the region graph's, and the root
    must cover every variable once.

    Raises:
        InvalidStructureError: naming the offending level and row.
    """
    spn.region_graph.check_valid()
    D = spn.num_vars
    idx = spn.leaf_layer.var_index
    scopes: list[frozenset[int]] = []
    for r in range(idx.shape[0]):
        s = [int(v) for v in idx[r] if int(v) < D]
        if len(set(s)) != len(s):
            raise InvalidStructureError(f"leaf region row {r} lists a variable twice")
        scopes.append(frozenset(s))
    for lv in spn.levels:
        part_scopes = []
        for p, kids in enumerate(_partition_children(lv.product)):
            seen: set[int] = set()
            for c in kids:
                if seen & scopes[c]:
                    raise InvalidStructureError(f"height {lv.height}, product {p}: children rows {kids} share variables")
                seen |= scopes[c]
            part_scopes.append(frozenset(seen))
        if lv.mixing is None:
            region_scopes = part_scopes
        else:
            region_scopes = []
            for r, (row, ok) in enumerate(zip(lv.mixing.table.tolist(), lv.mixing.valid[..., 0].tolist())):
                used = {part_scopes[p] for p, v in zip(row, ok) if v}
                if len(used) != 1:
                    raise InvalidStructureError(f"height {lv.height}, region {lv.regions[r]}: its partitions have different scopes")
                region_scopes.append(used.pop())
        for r, scope in zip(lv.regions, region_scopes):
            if scope != frozenset(spn.region_graph.regions[r]):
                raise InvalidStructureError(f"height {lv.height}: compiled scope of region {r} differs from the region graph")
        scopes.extend(region_scopes)
    if scopes[-1] != frozenset(range(D)):
        raise InvalidStructureError("the root does not cover every variable")


def node_graph(spn: "SPN") -> nx.DiGraph:
    """Node-level graph of the circuit (see :meth:`spnkit.SPN.to_networkx`)."""
    rg = spn.region_graph
    g = nx.DiGraph()
    g.graph["num_vars"] = spn.num_vars
    g.graph["layer"] = spn.layer
    unit: dict[int, list[tuple]] = {}  # buffer row -> the node of each entry
    node: tuple
    out: list[tuple]
    for row, r in enumerate(spn.leaf_regions):
        unit[row] = []
        for k in range(spn.num_leaves):
            g.add_node(("leaf", r, k), kind="leaf", scope=rg.regions[r], region=r)
            unit[row].append(("leaf", r, k))
    for lv in spn.levels:
        layer = lv.product
        mixed = lv.mixing is not None
        region_of_part = {}
        for i, r in enumerate(lv.regions):
            for p in rg.partitions_of[r]:
                region_of_part[p] = (i, r)
        heads: list[list[tuple]] = []  # per partition position, its K output nodes
        kids = _partition_children(layer)
        if isinstance(layer, TuckerLayer):
            w = layer.weights().detach()  # (P, I*J, K_out)
            for pos, pj in enumerate(lv.partitions):
                _, r = region_of_part[pj]
                scope = rg.regions[r]
                a, b = kids[pos]
                for i, na in enumerate(unit[a]):
                    for j, nb in enumerate(unit[b]):
                        node = ("product", pj, i, j)
                        g.add_node(node, kind="product", scope=scope, partition=pj)
                        g.add_edge(node, na)
                        g.add_edge(node, nb)
                out = []
                for k in range(layer.k_out):
                    head = ("psum", pj, k) if mixed else ("sum", r, k)
                    g.add_node(head, kind="sum", scope=scope, region=r, root=(r == rg.root and not mixed))
                    for i in range(len(unit[a])):
                        for j in range(len(unit[b])):
                            g.add_edge(head, ("product", pj, i, j), weight=float(w[pos, i * layer.k_in + j, k]))
                    out.append(head)
                heads.append(out)
        else:
            w = layer.weights().detach()  # (S, I, K)
            slots: list[list[tuple[int, int | None]]] = [[] for _ in lv.partitions]  # (child row, slot or None if direct)
            for s, (p, row) in enumerate(zip(layer.slot_partition.tolist(), layer.slot_rows.tolist())):
                slots[p].append((row, s))
            for p, row in zip(layer.direct_partition.tolist(), layer.direct_rows.tolist()):
                slots[p].append((row, None))
            for pos, pj in enumerate(lv.partitions):
                _, r = region_of_part[pj]
                scope = rg.regions[r]
                out = []
                for k in range(layer.k_out):
                    node = ("product", pj, k)
                    g.add_node(node, kind="product", scope=scope, partition=pj, region=r)
                    out.append(node)
                for row, slot in slots[pos]:
                    if slot is None:
                        for k in range(layer.k_out):
                            g.add_edge(out[k], unit[row][k])
                        continue
                    for k in range(layer.k_out):
                        proj = ("proj", pj, slot, k)
                        g.add_node(proj, kind="sum", scope=_scope_of(g, unit[row][0]), region=r)
                        g.add_edge(out[k], proj)
                        for i, child in enumerate(unit[row]):
                            g.add_edge(proj, child, weight=float(w[slot, i, k]))
                heads.append(out)
        mix_w = lv.mixing.weights().detach() if lv.mixing is not None else None
        for i, r in enumerate(lv.regions):
            row = lv.start + i
            parts = [lv.partitions.index(p) for p in rg.partitions_of[r]]
            if mix_w is None:
                unit[row] = heads[parts[0]]
                continue
            unit[row] = []
            for k in range(len(heads[parts[0]])):
                node = ("sum", r, k)
                g.add_node(node, kind="sum", scope=rg.regions[r], region=r, root=(r == rg.root and spn.root_sum is None))
                for slot, pos in enumerate(parts):
                    g.add_edge(node, heads[pos][k], weight=float(mix_w[i, slot, k]))
                unit[row].append(node)
    if spn.root_sum is not None:
        w = spn.root_sum.weights().detach()  # (1, K, C)
        top = unit[spn.num_rows - 1]
        for c in range(spn.num_classes):
            node = ("sum", "root", c)
            g.add_node(node, kind="sum", scope=rg.regions[rg.root], region=rg.root, root=True)
            for i, child in enumerate(top):
                g.add_edge(node, child, weight=float(w[0, i, c]))
    return g


def _scope_of(g: nx.DiGraph, node: tuple) -> tuple[int, ...]:
    return g.nodes[node]["scope"]
