"""Saving and loading circuits without pickle.

A spnkit file is a zip archive holding

* ``spn.json``: the format marker and version, the region graph (``num_vars``,
  ``regions``, ``partitions``, ``image_shape``), the leaf family (its name and
  dataclass fields; a :class:`~spnkit.Mixed` family lists its parts, each a
  family with its fields and columns), ``num_sums``, ``num_leaves``, ``num_classes``, the layer kind
  (``layer``, ``project_leaves``) and the dtype;
* ``weights.pt``: the parameters, a ``state_dict`` written by ``torch.save`` and
  read back with ``torch.load(weights_only=True)`` (tensors only, no code).

Writes are atomic (a temporary file in the target folder, then ``os.replace``).
Loading a truncated, corrupted or foreign file, or one written by a newer
format, raises a ValueError saying which. So does a ``spn.json`` whose fields
have the wrong JSON types (every field is checked, the leaf's against its
dataclass annotations), or that describes a circuit far larger than the
parameters the file holds: the circuit is built under an allocation budget
proportional to the stored parameters, so a small crafted file cannot make
``load`` ask for terabytes.

Example:
    >>> import os, tempfile, torch, spnkit
    >>> rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, spnkit.Normal(0.1, 1.0), num_sums=2, num_leaves=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.spn")
    >>> spn.save(path)
    >>> x = torch.rand(3, 4)
    >>> bool(torch.equal(spnkit.load(path).log_prob(x), spn.log_prob(x)))
    True
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import types
import typing
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, cast

import torch
from torch.overrides import TorchFunctionMode

from ._files import atomic_write
from .circuit import SPN
from .compile import LAYER_KINDS
from .leaves import Bernoulli, Binomial, Categorical, LeafFamily, Mixed, MultivariateNormal, Normal, Poisson
from .region_graph import Partition, RegionGraph

__all__ = ["save", "load", "register_leaf", "allocation_budget", "BudgetExceeded", "FORMAT", "FORMAT_VERSION"]

FORMAT = "spnkit"
FORMAT_VERSION = 1
_JSON, _WEIGHTS = "spn.json", "weights.pt"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}

#: leaf families a file may name; extend with :func:`register_leaf`
_LEAVES: dict[str, type[LeafFamily]] = {cls.__name__: cls for cls in (Normal, Bernoulli, Categorical, Binomial, Poisson,
                                                                        MultivariateNormal)}


def register_leaf(cls: type[LeafFamily]) -> type[LeafFamily]:
    """Allow files to name a custom leaf family (a dataclass subclass of :class:`~spnkit.leaves.LeafFamily`); usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, LeafFamily) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"register_leaf needs a dataclass subclass of spnkit.Leaf, got {cls!r}")
    _LEAVES[cls.__name__] = cls
    return cls


def _leaf_meta(leaf: LeafFamily) -> dict:
    """The ``{"family", "fields"}`` of a leaf family (a Mixed family: its ``parts`` with their columns)."""
    if isinstance(leaf, Mixed):
        parts = [{**_leaf_meta(fam), "columns": list(cols)} for fam, cols in leaf.parts]
        return {"family": "Mixed", "fields": {"parts": parts}}
    name = type(leaf).__name__
    if _LEAVES.get(name) is not type(leaf):
        raise ValueError(f"leaf family {name} is not registered; call spnkit.io.register_leaf({name}) before saving")
    return {"family": name, "fields": {f.name: getattr(leaf, f.name) for f in dataclasses.fields(cast(Any, leaf))}}  # families are dataclasses


def _leaf_from_meta(meta: dict) -> LeafFamily:
    family = meta["family"]
    if family == "Mixed":
        return Mixed({_leaf_from_meta(p): [int(c) for c in p["columns"]] for p in meta["fields"]["parts"]})
    if family not in _LEAVES:
        raise ValueError(f"unknown leaf family {family!r}; known: {sorted([*_LEAVES, 'Mixed'])} (see spnkit.io.register_leaf)")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["fields"].items()}
    return _LEAVES[family](**fields)


def _describe(spn: SPN) -> dict:
    rg, leaf = spn.region_graph, spn.leaf
    dtype = next(k for k, v in _DTYPES.items() if v == spn.dtype) if spn.dtype in _DTYPES.values() else None
    if dtype is None:
        raise ValueError(f"cannot save a circuit of dtype {spn.dtype}")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "region_graph": {
            "num_vars": int(rg.num_vars),
            "regions": [list(map(int, r)) for r in rg.regions],
            "partitions": [[int(p.parent), list(map(int, p.children))] for p in rg.partitions],
            "image_shape": None if rg.image_shape is None else list(map(int, rg.image_shape)),
            "tree_edges": None if rg.tree_edges is None else [[int(a), int(b)] for a, b in rg.tree_edges],
        },
        "leaf": _leaf_meta(leaf),
        "num_sums": spn.num_sums,
        "num_leaves": spn.num_leaves,
        "num_classes": spn.num_classes,
        "layer": spn.layer,
        "project_leaves": spn.project_leaves,
        "dtype": dtype,
    }


def save(spn: SPN, path: str | os.PathLike) -> None:
    """Write ``spn`` (structure and parameters) to ``path``, atomically.

    Args:
        spn: the circuit.
        path: target file; its folder must exist. An existing file is replaced
            only once the new one is completely written.
    """
    if not isinstance(spn, SPN):
        raise ValueError(f"save needs a spnkit.SPN, got {type(spn).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file path such as {str(path / 'model.spn')!r}")
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} does not exist")
    meta = json.dumps(_describe(spn), indent=1)
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in spn.state_dict().items()}, weights)

    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_JSON, meta)
            zf.writestr(_WEIGHTS, weights.getvalue())

    atomic_write(path, write)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SPN:
    """Read a circuit written by :func:`save`.

    Args:
        path: the file.
        map_location: device of the returned circuit.

    Raises:
        ValueError: if the file is not a spnkit file, is truncated or corrupted,
            or was written by a newer format version.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder, not a spnkit file")
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if _JSON not in names:
                raise ValueError(f"{str(path)!r} is not a spnkit file: the archive has no {_JSON}")
            if zf.getinfo(_JSON).file_size > _MAX_JSON_BYTES:
                raise ValueError(f"{str(path)!r} is not a spnkit file: its {_JSON} is larger than {_MAX_JSON_BYTES} bytes")
            meta = json.loads(zf.read(_JSON).decode("utf-8"))
            _check_meta(meta, path)
            _check_fields(meta, path)
            if _WEIGHTS not in names:
                raise ValueError(f"{str(path)!r} is damaged: the archive has no {_WEIGHTS}")
            raw = zf.read(_WEIGHTS)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{str(path)!r} is not a spnkit file, or it is truncated or corrupted ({err})") from None
    except (EOFError, OSError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is truncated or corrupted ({type(err).__name__}: {err})") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises assorted types on damaged or unsafe payloads
        raise ValueError(f"{str(path)!r}: cannot read the parameters ({type(err).__name__}: {err})") from None
    stored = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor)) if isinstance(state, dict) else 0
    spn = _build(meta, path, budget=_BUILD_BUDGET_FACTOR * stored + _BUILD_BUDGET_FLOOR)
    _load_state(spn, state, path)
    return spn.to(map_location)


def _check_meta(meta: object, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a spnkit file (its {_JSON} has no format marker {FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{str(path)!r} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written in spnkit file format {version}; this spnkit reads formats up to "
            f"{FORMAT_VERSION}. Upgrade spnkit to load it."
        )


def _build(meta: dict, path: Path, budget: int | None = None) -> SPN:
    """The circuit described by ``meta``, with fresh parameters (the global RNG is left untouched).

    With ``budget``, building it may create at most that many tensor elements in all.
    """
    try:
        g = meta["region_graph"]
        shape = g["image_shape"]
        rg = RegionGraph(
            int(g["num_vars"]),
            tuple(tuple(int(v) for v in r) for r in g["regions"]),
            tuple(Partition(int(p), tuple(int(c) for c in kids)) for p, kids in g["partitions"]),
            None if shape is None else cast("tuple[int, int, int]", tuple(int(v) for v in shape)),  # RegionGraph checks the length
            None if g.get("tree_edges") is None else tuple((int(a), int(b)) for a, b in g["tree_edges"]),
        )
        leaf = _leaf_from_meta(meta["leaf"])
        dtype = _DTYPES[meta["dtype"]]
        guard = allocation_budget(budget) if budget is not None else None
        with torch.random.fork_rng(devices=[]):
            kwargs = dict(num_sums=int(meta["num_sums"]), num_leaves=int(meta["num_leaves"]), num_classes=int(meta["num_classes"]),
                          layer=meta.get("layer", "tucker"), project_leaves=meta.get("project_leaves", True))
            if guard is None:
                spn = SPN(rg, leaf, **kwargs)
            else:
                with guard:
                    spn = SPN(rg, leaf, **kwargs)
        return spn.to(dtype)
    except BudgetExceeded as err:
        raise ValueError(f"{str(path)!r} describes a circuit far larger than the parameters it holds: building it would "
                         f"create more than {err.budget:,} tensor elements (num_sums {meta['num_sums']}, num_leaves "
                         f"{meta['num_leaves']}, num_classes {meta['num_classes']})") from None
    except ValueError as err:
        raise ValueError(f"{str(path)!r} describes an invalid circuit: {err}") from None
    except (KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} has a malformed {_JSON} ({type(err).__name__}: {err})") from None


def _load_state(spn: SPN, state: object, path: Path) -> None:
    expected = spn.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{str(path)!r}: the parameters do not match the structure (expected {sorted(expected)[:6]}..., got {str(got)[:200]})")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != expected[name].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{str(path)!r}: the parameters do not match the structure: {name} is {shape}, expected {tuple(expected[name].shape)}")
    spn.load_state_dict(state)


# ----------------------------------------------------------- checks of spn.json

_MAX_JSON_BYTES = 1 << 28  # a region graph of millions of regions fits in far less
_BUILD_BUDGET_FACTOR = 16  # building a circuit creates 1-4 times its parameters in all (indices, temporaries)
_BUILD_BUDGET_FLOOR = 1 << 24


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(meta: dict, path: Path) -> None:
    """Every field of a ``spn.json`` has its JSON type; ``num_vars`` is no larger than the largest region."""

    def malformed(where: str, expected: str, value: object) -> ValueError:
        return ValueError(f"{str(path)!r} has a malformed {_JSON}: {where} must be {expected}, got {_short(value)}")

    def need(d: dict, key: str, where: str) -> Any:
        if key not in d:
            raise ValueError(f"{str(path)!r} has a malformed {_JSON}: {where}{key} is missing")
        return d[key]

    def int_list(value: object, where: str) -> list[int]:
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            raise malformed(where, "a list of integers", value)
        return value

    g = need(meta, "region_graph", "")
    if not isinstance(g, dict):
        raise malformed("region_graph", "an object", g)
    num_vars = need(g, "num_vars", "region_graph.")
    if not _is_int(num_vars):
        raise malformed("region_graph.num_vars", "an integer", num_vars)
    regions = need(g, "regions", "region_graph.")
    if not isinstance(regions, list):
        raise malformed("region_graph.regions", "a list of lists of variables", regions)
    for i, r in enumerate(regions):
        int_list(r, f"region_graph.regions[{i}]")
    partitions = need(g, "partitions", "region_graph.")
    if not isinstance(partitions, list):
        raise malformed("region_graph.partitions", "a list of [parent, [children]] pairs", partitions)
    for j, p in enumerate(partitions):
        if not (isinstance(p, list) and len(p) == 2 and _is_int(p[0])):
            raise malformed(f"region_graph.partitions[{j}]", "a pair [parent, [children]]", p)
        int_list(p[1], f"region_graph.partitions[{j}] children")
    shape = need(g, "image_shape", "region_graph.")
    if shape is not None:
        int_list(shape, "region_graph.image_shape")
    largest = max((len(r) for r in regions), default=0)
    if num_vars > largest:  # the root region covers every variable
        raise ValueError(f"{str(path)!r} describes an invalid circuit: num_vars is {num_vars} but no region has more "
                         f"than {largest} variables (the root covers all of them)")
    for key in ("num_sums", "num_leaves", "num_classes"):
        value = need(meta, key, "")
        if not _is_int(value):
            raise malformed(key, "an integer", value)
    dtype = need(meta, "dtype", "")
    if dtype not in _DTYPES:
        raise malformed("dtype", f"one of {sorted(_DTYPES)}", dtype)
    if meta.get("layer", "tucker") not in LAYER_KINDS:  # files written before CP layers have neither key
        raise malformed("layer", f"one of {list(LAYER_KINDS)}", meta.get("layer"))
    if not isinstance(meta.get("project_leaves", True), bool):
        raise malformed("project_leaves", "true or false", meta.get("project_leaves"))
    edges = g.get("tree_edges")
    if edges is not None:
        if not isinstance(edges, list):
            raise malformed("region_graph.tree_edges", "a list of [parent, child] pairs", edges)
        for i, e in enumerate(edges):
            if len(int_list(e, f"region_graph.tree_edges[{i}]")) != 2:
                raise malformed(f"region_graph.tree_edges[{i}]", "a pair [parent, child]", e)
    _check_leaf(need(meta, "leaf", ""), "leaf", path, malformed, need, nested=False)


def _check_leaf(leaf: object, where: str, path: Path, malformed, need, nested: bool) -> None:
    """The ``{"family", "fields"}`` object of a leaf family (a Mixed family's parts recursively, each with ``columns``)."""
    if not isinstance(leaf, dict):
        raise malformed(where, "an object", leaf)
    family, fields = need(leaf, "family", f"{where}."), need(leaf, "fields", f"{where}.")
    if not isinstance(family, str):
        raise malformed(f"{where}.family", "a string", family)
    if not isinstance(fields, dict):
        raise malformed(f"{where}.fields", "an object", fields)
    if nested:
        cols = need(leaf, "columns", f"{where}.")
        if not isinstance(cols, list) or not cols or not all(_is_int(c) and c >= 0 for c in cols):
            raise malformed(f"{where}.columns", "a non-empty list of integers >= 0", cols)
    if family == "Mixed":
        parts = fields.get("parts")
        if nested or set(fields) != {"parts"} or not isinstance(parts, list) or not parts:
            raise malformed(f"{where}.fields", "{\"parts\": [...]} with at least one part (and no nesting)", fields)
        for i, part in enumerate(parts):
            _check_leaf(part, f"{where}.fields.parts[{i}]", path, malformed, need, nested=True)
        return
    cls = _LEAVES.get(family)
    if cls is None:
        return  # named by _build
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # annotations this module cannot resolve: the leaf's own checks decide
        return
    names = {f.name for f in dataclasses.fields(cast(Any, cls))}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"{str(path)!r} has a malformed {_JSON}: leaf {family} has no field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    for name, value in fields.items():
        if name in hints and not _fits(value, hints[name]):
            raise malformed(f"{where}.fields.{name}", _type_name(hints[name]), value)


def _union(annotation: Any) -> tuple[Any, ...] | None:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return None


def _fits(value: object, annotation: Any) -> bool:
    """Whether a JSON value can stand for a field of type ``annotation`` (unknown annotations: yes)."""
    members = _union(annotation)
    if members is not None:
        return any(_fits(value, m) for m in members)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def _type_name(annotation: Any) -> str:
    members = _union(annotation)
    if members is not None:
        return " or ".join(_type_name(m) for m in members)
    if typing.get_origin(annotation) is tuple:
        return f"a list of {len(typing.get_args(annotation))} values"
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


# ----------------------------------------------------- the allocation budget

class BudgetExceeded(ValueError):
    """Raised inside :func:`allocation_budget` by the operation that would pass the budget."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"more than {budget:,} tensor elements requested")
        self.budget = budget


def _numel(size: object) -> int | None:
    if isinstance(size, (list, tuple, torch.Size)) and all(isinstance(v, int) for v in size):
        return math.prod(size)
    return None


def allocation_budget(max_elements: int) -> "_AllocationBudget":
    """A context in which torch operations may create at most ``max_elements`` tensor elements in all.

    For building something whose size a file describes (a circuit, a model) so
    that a crafted description cannot ask for more memory than the file could
    justify. Operations that create a tensor from a size are refused before
    they allocate; :class:`BudgetExceeded` (a ValueError) is raised.

    Example:
        >>> import torch
        >>> with allocation_budget(100):
        ...     torch.zeros(10).shape
        torch.Size([10])
    """
    return _AllocationBudget(max_elements)


_FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy)  # sized by data that already exists


class _AllocationBudget(TorchFunctionMode):
    """Counts the tensor elements created by torch calls and stops at ``budget``.

    A call that creates a tensor from sizes alone (``torch.empty``,
    ``torch.randn``, ``torch.full``, ``torch.arange``, ...) is checked before it
    runs, so an oversized request never reaches the allocator; the results of
    other calls are counted after they run, unless they share their inputs'
    memory (views and in-place operations).
    """

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget, self.used = budget, 0

    def _charge(self, n: int) -> None:
        self.used += n
        if self.used > self.budget:
            raise BudgetExceeded(self.budget)

    @staticmethod
    def _requested(func, args: tuple, kwargs: dict) -> int:
        """Elements a factory call asks for: the product of its size (an upper bound where it is ambiguous)."""
        if func is torch.arange:
            nums = [a for a in (*args, kwargs.get("start"), kwargs.get("end")) if isinstance(a, (int, float)) and not isinstance(a, bool)]
            step = kwargs.get("step", args[2] if len(args) > 2 else 1) or 1
            start, end = (0, nums[0]) if len(nums) == 1 else (nums[0], nums[1]) if nums else (0, 0)
            return max(0, math.ceil((end - start) / step))
        sizes = [a for a in (*args, kwargs.get("size")) if isinstance(a, (list, tuple, torch.Size))]
        if sizes:
            return max(_numel(sz) or 0 for sz in sizes)
        ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        if func is torch.eye and ints:
            return ints[0] * (ints[1] if len(ints) > 1 else ints[0])
        return math.prod(ints) if ints else 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not inputs and func not in _FROM_DATA:
            self._charge(self._requested(func, args, kwargs))
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        shared = {t.untyped_storage().data_ptr() for t in inputs if t.device.type != "meta"}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta" and t.untyped_storage().data_ptr() not in shared:
                self._charge(t.numel())
        return out
