"""Checkpoints of a SuPAIR or AIR run, and the model they hold.

A checkpoint is a ``torch.save`` dict of tensors and plain values (read back with
``weights_only=True``: no pickled code): the format number, the run's config,
the model and optimizer states, the step, the training clocks and the random
generators' states. It is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import SupairConfig
from .files import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "build_model", "save_checkpoint", "load_checkpoint", "load_model", "load_state", "upgrade_optimizer_state"]

CHECKPOINT_FORMAT = 1


def build_model(cfg: SupairConfig) -> nn.Module:
    """The model named by ``cfg.model_type``, with its seeded structure."""
    if cfg.model_type == "air":
        from .air import Air

        return Air(cfg.model)
    from .model import Supair

    return Supair(cfg.model, seed=cfg.train.seed)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (tensors and plain values only; no pickled code).

    Raises:
        ValueError: if the file is missing, truncated, or not a checkpoint of this harness.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise many types
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "config" not in ckpt:
        raise ValueError(f"{path} is not a SuPAIR/AIR checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, SupairConfig]:
    """The trained model and its config from a checkpoint file or run folder."""
    ckpt = load_checkpoint(path)
    cfg = SupairConfig.from_dict(ckpt["config"])
    model = build_model(cfg)
    load_state(model, ckpt["model"], path)
    return model.to(device).eval(), cfg


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
