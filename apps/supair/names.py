"""Names and limits shared by the configuration and the data, importable without torch.

The command line validates its flags, ``--set`` values and ``config.json``
against these before it imports torch, so that a bad input is answered at once.
"""

from __future__ import annotations

__all__ = ["DATASETS", "MODELS", "MAX_SCENE_SIZE", "MAX_SHOW_IMAGES"]

DATASETS: tuple[str, ...] = ("multi-mnist", "sprites", "noisy-mnist", "grid-mnist")
"""The built-in generated data sets (:func:`supair.data.generate_dataset`)."""

MODELS: tuple[str, ...] = ("supair", "air")
"""The models the harness trains."""

MAX_SCENE_SIZE = 1024
"""Largest side length of a scene."""

MAX_SHOW_IMAGES = 64
"""Most columns (images) of ``supair show``'s figure."""
