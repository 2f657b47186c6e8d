"""JSON values checked against the field types of the configuration's dataclasses.

One place decides whether a value fits a field: :func:`check_field` reads the
field's annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``,
``tuple[float, float]``) and either returns the value in the field's own type
(a JSON list becomes a tuple, an integer given for a float becomes a float) or
raises a ValueError that names the field by its dotted path, e.g.
``train.batch_size must be an integer, got 'abc'``. Both ``--set`` and
``config.json`` go through it (via :meth:`supair.config.SupairConfig.from_dict`).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

__all__ = ["check_field", "describe"]

_NONE = type(None)


def describe(annotation: Any) -> str:
    """A type in words, e.g. ``"an integer or null"``."""
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a finite number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is _NONE:
        return "null"
    members = _union_members(annotation)
    if members is not None:
        return " or ".join(describe(m) for m in members)
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of values, each {describe(args[0])}"
        if len(set(args)) == 1:
            kind = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(args[0], describe(args[0]))
            return f"a list of {len(args)} {kind}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    return getattr(annotation, "__name__", str(annotation))


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Mismatch(Exception):
    """The value does not fit (internal: turned into one ValueError naming the field)."""


def _convert(value: Any, annotation: Any) -> Any:
    if annotation is Any:
        return value
    if annotation is _NONE:
        if value is None:
            return None
        raise _Mismatch
    members = _union_members(annotation)
    if members is not None:
        for member in members:
            try:
                return _convert(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if typing.get_origin(annotation) is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args))
    raise TypeError(f"no JSON check for the field type {annotation!r}")  # a field type this module does not know yet


def check_field(value: Any, annotation: Any, name: str) -> Any:
    """``value`` converted to the field's type.

    Args:
        value: a value as JSON gives it (``None``, bool, int, float, str, list).
        annotation: the field's resolved type annotation.
        name: the field's dotted path, for the message.

    Raises:
        ValueError: ``"<name> must be <type>, got <value>"``.
    """
    try:
        return _convert(value, annotation)
    except _Mismatch:
        raise ValueError(f"{name} must be {describe(annotation)}, got {_short(value)}") from None
