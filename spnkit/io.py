"""Saving and loading circuits without pickle.

A spnkit file is a zip archive holding

* ``spn.json``: the format marker and version, the region graph (``num_vars``,
  ``regions``, ``partitions``, ``image_shape``), the leaf family (its name and
  dataclass fields), ``num_sums``, ``num_leaves``, ``num_classes`` and the dtype;
* ``weights.pt``: the parameters, a ``state_dict`` written by ``torch.save`` and
  read back with ``torch.load(weights_only=True)`` (tensors only, no code).

Writes are atomic (a temporary file in the target folder, then ``os.replace``).
Loading a truncated, corrupted or foreign file, or one written by a newer
format, raises a ValueError saying which.

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
import os
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import torch

from ._files import atomic_write
from .circuit import SPN
from .leaves import Bernoulli, Categorical, Leaf, Normal
from .region_graph import Partition, RegionGraph

__all__ = ["save", "load", "register_leaf", "FORMAT", "FORMAT_VERSION"]

FORMAT = "spnkit"
FORMAT_VERSION = 1
_JSON, _WEIGHTS = "spn.json", "weights.pt"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}

#: leaf families a file may name; extend with :func:`register_leaf`
_LEAVES: dict[str, type[Leaf]] = {cls.__name__: cls for cls in (Normal, Bernoulli, Categorical)}


def register_leaf(cls: type[Leaf]) -> type[Leaf]:
    """Allow files to name a custom leaf family (a dataclass subclass of :class:`Leaf`); usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Leaf) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"register_leaf needs a dataclass subclass of spnkit.Leaf, got {cls!r}")
    _LEAVES[cls.__name__] = cls
    return cls


def _describe(spn: SPN) -> dict:
    rg, leaf = spn.region_graph, spn.leaf
    name = type(leaf).__name__
    if _LEAVES.get(name) is not type(leaf):
        raise ValueError(f"leaf family {name} is not registered; call spnkit.io.register_leaf({name}) before saving")
    fields = {f.name: getattr(leaf, f.name) for f in dataclasses.fields(leaf)}
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
        },
        "leaf": {"family": name, "fields": fields},
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
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if _JSON not in names:
                raise ValueError(f"{str(path)!r} is not a spnkit file: the archive has no {_JSON}")
            meta = json.loads(zf.read(_JSON).decode("utf-8"))
            _check_meta(meta, path)
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
    spn = _build(meta, path)
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


def _build(meta: dict, path: Path) -> SPN:
    """The circuit described by ``meta``, with fresh parameters (the global RNG is left untouched)."""
    try:
        g = meta["region_graph"]
        shape = g["image_shape"]
        rg = RegionGraph(
            int(g["num_vars"]),
            tuple(tuple(int(v) for v in r) for r in g["regions"]),
            tuple(Partition(int(p), tuple(int(c) for c in kids)) for p, kids in g["partitions"]),
            None if shape is None else tuple(int(v) for v in shape),
        )
        family = meta["leaf"]["family"]
        if family not in _LEAVES:
            raise ValueError(f"unknown leaf family {family!r}; known: {sorted(_LEAVES)} (see spnkit.io.register_leaf)")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["leaf"]["fields"].items()}
        leaf = _LEAVES[family](**fields)
        dtype = _DTYPES[meta["dtype"]]
        with torch.random.fork_rng(devices=[]):
            spn = SPN(rg, leaf, num_sums=int(meta["num_sums"]), num_leaves=int(meta["num_leaves"]), num_classes=int(meta["num_classes"]),
                      layer=meta.get("layer", "tucker"), project_leaves=meta.get("project_leaves", True))
        return spn.to(dtype)
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
