"""Names and limits shared by the configuration and the data, importable without torch.

The command line validates its flags, ``--set`` values and ``config.json``
against these before it imports torch, so that a bad input is answered at once.
"""

from __future__ import annotations

__all__ = ["DATASETS", "DATASET_DEFAULTS", "MODELS", "MAX_SCENE_SIZE", "MAX_SHOW_IMAGES", "MAX_OBJECTS"]

DATASETS: tuple[str, ...] = ("multi-mnist", "sprites", "noisy-mnist", "grid-mnist", "crowded-mnist", "occluded-mnist")
"""The built-in generated data sets (:func:`supair.data.generate_dataset`)."""

DATASET_DEFAULTS: dict[str, tuple[int, tuple[int, int]]] = {
    "multi-mnist": (50, (0, 2)),
    "sprites": (50, (0, 2)),
    "noisy-mnist": (50, (0, 2)),
    "grid-mnist": (50, (0, 2)),
    "crowded-mnist": (96, (0, 9)),
    "occluded-mnist": (50, (0, 3)),
}
"""Each built-in data set's canvas side and range of object counts (least, most)."""

MODELS: tuple[str, ...] = ("supair", "air")
"""The models the harness trains."""

MAX_SCENE_SIZE = 1024
"""Largest side length of a scene."""

MAX_OBJECTS = 64
"""Most objects per scene, and most attention steps."""

MAX_SHOW_IMAGES = 64
"""Most columns (images) of ``supair show``'s figure."""
