"""Checkpoints of a SuPAIR or AIR run, and the model they hold.

A checkpoint is a ``torch.save`` dict of tensors and plain values (read back with
``weights_only=True``: no pickled code): the format number, the run's config,
the model and optimizer states, the step, the training clocks and the random
generators' states. It is written atomically.

Reading one checks, in this order, that nothing was damaged and that it can be
used: the CRC of every member of the zip archive (torch does not), the format
(a file of a newer format says so), the SHA-256 of its content that format 2
stores under ``"sha256"`` (format 1 files have none), the keys and their types,
and that every floating-point tensor of the model and the optimizer is finite
(the message names the first that is not).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from torch import nn

from .config import SupairConfig
from .files import atomic_write
from .rundir import resolve_checkpoint

if TYPE_CHECKING:
    from .air import Air
    from .model import Supair

#: the models a run trains: SuPAIR, or AIR as its baseline
SceneModel: TypeAlias = "Supair | Air"

__all__ = [
    "CHECKPOINT_FORMAT", "READABLE_FORMATS", "build_model", "save_checkpoint", "load_checkpoint", "load_model", "load_state",
    "upgrade_optimizer_state", "content_digest", "first_non_finite", "config_of", "model_of", "build_stored_model",
]

CHECKPOINT_FORMAT = 2
"""Format of the checkpoints this version writes: 2 adds ``"sha256"``, the digest of the rest (:func:`content_digest`)."""

READABLE_FORMATS = (1, 2)

_KEYS = {  # key -> the types its value may have
    "config": (dict,), "model": (dict,), "optimizer": (dict,), "step": (int,), "train_seconds": (float, int),
    "cpu_seconds": (float, int), "batch_rng": (torch.Tensor,), "torch_rng": (torch.Tensor,),
}


def build_model(cfg: SupairConfig) -> SceneModel:
    """The model named by ``cfg.model_type``, with its seeded structure."""
    if cfg.model_type == "air":
        from .air import Air

        return Air(cfg.model)
    from .model import Supair

    return Supair(cfg.model, seed=cfg.train.seed)


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content without its ``"sha256"`` entry.

    Every tensor contributes its path in the dict, dtype, shape and bytes; every
    plain value its path, type and ``repr`` (exact for floats). Dict entries are
    taken in sorted order, so the digest does not depend on insertion order.
    """
    h = hashlib.sha256()

    def visit(where: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{where}:tensor:{value.dtype}:{tuple(value.shape)}\n".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            keys = sorted((k for k in value if not (where == "" and k == "sha256")), key=repr)
            h.update(f"{where}:dict:{len(keys)}\n".encode())
            for key in keys:
                visit(f"{where}/{key!r}", value[key])
        elif isinstance(value, (list, tuple)):
            h.update(f"{where}:{type(value).__name__}:{len(value)}\n".encode())
            for i, item in enumerate(value):
                visit(f"{where}[{i}]", item)
        else:
            h.update(f"{where}:{type(value).__name__}:{value!r}\n".encode())

    visit("", payload)
    return h.hexdigest()


def first_non_finite(payload: dict[str, Any]) -> str | None:
    """The name of the first model or optimizer tensor holding NaN or infinity, or None."""
    for name, t in payload.get("model", {}).items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"model tensor {name!r}"
    state = payload.get("optimizer", {}).get("state", {})
    for index, entry in state.items():
        for field, t in entry.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"optimizer state {field!r} of parameter {index}"
    return None


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename), with its format and digest.

    Temporaries of ``path`` left by killed writers are deleted first.

    Raises:
        ValueError: if a model or optimizer tensor is not finite (the file on disk is kept).
        OSError: if the file cannot be written (a full disk, a read-only folder).
    """
    bad = first_non_finite(payload)
    if bad is not None:
        raise ValueError(f"not writing {path}: {bad} holds NaN or infinite values (training diverged at step "
                         f"{payload.get('step')}; the previous checkpoint is kept)")
    payload = {k: v for k, v in payload.items() if k != "sha256"}
    payload["format"] = CHECKPOINT_FORMAT
    payload["sha256"] = content_digest(payload)
    atomic_write(path, lambda fh: torch.save(payload, fh), clean_stale=True)


def load_checkpoint(path: str | Path) -> dict:
    """Read and verify a checkpoint (tensors and plain values only; no pickled code).

    Args:
        path: the checkpoint file, or a run folder holding ``checkpoint.pt``.

    Raises:
        ValueError: if the file is missing, a folder, damaged (a CRC or the
            digest does not match), truncated, of a newer format, not a
            checkpoint of this harness, or holds non-finite values (naming
            the first such tensor).
    """
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise many types
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a SuPAIR/AIR checkpoint")
    fmt = ckpt["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ValueError(f"{path} is not a SuPAIR/AIR checkpoint (format {fmt!r})")
    if fmt > CHECKPOINT_FORMAT:
        raise ValueError(f"{path} was written by a newer version of supair (checkpoint format {fmt}; this version reads "
                         f"formats {READABLE_FORMATS[0]} to {CHECKPOINT_FORMAT}): upgrade supair to use it")
    if fmt >= 2 and ckpt.get("sha256") != content_digest(ckpt):
        raise ValueError(f"{path} is damaged: its content does not match the SHA-256 digest stored with it")
    for key, kinds in _KEYS.items():
        if key not in ckpt:
            raise ValueError(f"{path} is damaged: it has no {key!r}")
        if not isinstance(ckpt[key], kinds) or isinstance(ckpt[key], bool):
            raise ValueError(f"{path} is damaged: {key!r} is a {type(ckpt[key]).__name__}")
    if ckpt["step"] < 0 or not all(math.isfinite(ckpt[k]) and ckpt[k] >= 0 for k in ("train_seconds", "cpu_seconds")):
        raise ValueError(f"{path} is damaged: step {ckpt['step']}, clocks {ckpt['train_seconds']}, {ckpt['cpu_seconds']}")
    bad = first_non_finite(ckpt)
    if bad is not None:
        raise ValueError(f"{path} cannot be used: {bad} holds NaN or infinite values (the run diverged before this "
                         "checkpoint was written); resume from an earlier copy or start a new run")
    return ckpt


def load_model(path: str | Path, device: str = "cpu", detect_steps: int | None = None) -> tuple[SceneModel, SupairConfig]:
    """The trained model and its config from a checkpoint file or run folder (``detect_steps``: see :func:`config_of`)."""
    ckpt = load_checkpoint(path)
    return model_of(ckpt, path, device, detect_steps), config_of(ckpt, path, detect_steps)


def model_of(ckpt: dict, path: str | Path, device: str = "cpu", detect_steps: int | None = None) -> SceneModel:
    """The trained model held by a checkpoint read by :func:`load_checkpoint` (in eval mode; ``detect_steps``: see :func:`config_of`)."""
    model = build_stored_model(config_of(ckpt, path, detect_steps), ckpt, path)
    load_state(model, ckpt["model"], path)
    return model.to(device).eval()


def build_stored_model(cfg: SupairConfig, ckpt: dict, path: str | Path) -> SceneModel:
    """:func:`build_model` for a checkpoint's config, within an allocation budget set by the tensors the checkpoint holds.

    A config edited to describe a far larger model than the checkpoint's tensors
    (its sizes are bounded, but not small) is refused before it is allocated.
    """
    from spnkit.io import BudgetExceeded, allocation_budget

    stored = sum(t.numel() for t in ckpt["model"].values() if isinstance(t, torch.Tensor))
    try:
        with allocation_budget(_BUILD_FACTOR * stored + _BUILD_FLOOR):
            return build_model(cfg)
    except BudgetExceeded:
        raise ValueError(f"checkpoint {path} does not fit the model built from its config: the config describes a model "
                         f"far larger than the {stored:,} values the checkpoint holds") from None


_BUILD_FACTOR = 16  # building a model creates a few times its parameters in all (initial values, indices, temporaries)
_BUILD_FLOOR = 1 << 24


def config_of(ckpt: dict, path: str | Path, detect_steps: int | None = None) -> SupairConfig:
    """The run configuration stored in a checkpoint; with ``detect_steps``, detecting takes that many attention steps.

    The steps share their weights (SuPAIR's default attention), so a model
    trained with ``max_steps`` steps can look for more objects than it saw.
    """
    try:
        cfg = SupairConfig.from_dict(ckpt["config"])
        return cfg if detect_steps is None else cfg.replace(**{"model.inference.detect_steps": detect_steps})
    except ValueError as err:
        raise ValueError(f"{path} holds an invalid config: {err}") from None


def load_state(model: nn.Module, state: dict, path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the model built from its config: {str(err).splitlines()[0]}") from None


def upgrade_optimizer_state(model: nn.Module, saved_model: dict, saved_optimizer: dict) -> dict:
    """The optimizer state of a checkpoint saved by an older parameter layout of ``model``, fitted to the current one.

    Optimizer state is keyed by parameter position; the checkpoint's parameter
    names (its model state without the persistent buffers) say which parameter
    each position was. Each per-parameter field (Adam's moments) is rewritten by
    ``model.upgrade_state`` as the parameters themselves were, then re-keyed by
    the current positions. Unchanged layouts are returned as they are.
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = set(model.state_dict()) - set(names)
    old_names = [k for k in saved_model if k not in buffers]
    upgrade = getattr(model, "upgrade_state", None)
    if old_names == names or upgrade is None:
        return saved_optimizer
    saved = {old_names[int(i)]: s for i, s in saved_optimizer["state"].items()}  # by parameter name
    by_field: dict[str, dict] = {}  # field -> {name: tensor}, the shape model.upgrade_state rewrites
    for name, s in saved.items():
        for field, value in s.items():
            by_field.setdefault(field, {})[name] = value
    for tensors in by_field.values():
        upgrade(tensors)
    state = {}
    for j, name in enumerate(names):
        entry = {field: tensors[name] for field, tensors in by_field.items() if name in tensors}
        if entry:
            state[j] = entry
    position = {name: j for j, name in enumerate(names)}
    groups = [dict(g, params=[position[old_names[i]] for i in g["params"] if old_names[i] in position])
              for g in saved_optimizer["param_groups"]]
    return {"state": state, "param_groups": groups}
