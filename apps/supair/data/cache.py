"""The scene cache: generated data sets stored once per parameter set, verified on every read.

A cache file is an ``.npz`` of plain arrays (no pickles) named by a hash of the generation
parameters (:data:`~supair.data.generate.FORMAT_VERSION` included), with the SHA-256 of its
arrays in its metadata; a file that does not verify is rebuilt. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .generate import generate_dataset, validate_request
from .scenes import Log, SceneSet

__all__ = ["load_dataset", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$SUPAIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/supair``, else ``~/.cache/supair``."""
    explicit = os.environ.get("SUPAIR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "supair"
    return Path.home() / ".cache" / "supair"


def _arrays_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def _cache_path(cache_dir: Path, params: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"{params['name']}_{params['split']}_{params['num_images']}_{key}.npz"


def _read_cache(path: Path, params: dict[str, Any]) -> tuple[SceneSet | None, str | None]:
    """Returns ``(set, None)`` on a verified hit, ``(None, reason)`` when the file is bad."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
            images = np.array(f["images"])
            counts = np.array(f["counts"])
            boxes = np.array(f["boxes"])
            layers = np.array(f["layers"]) if params.get("layers") else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    if not isinstance(meta, dict):
        return None, "its metadata is malformed"
    if meta.get("params") != params:
        return None, "its parameters do not match"
    arrays = (images, counts, boxes) if layers is None else (images, counts, boxes, layers)
    if meta.get("sha256") != _arrays_digest(*arrays):
        return None, "SHA-256 mismatch"
    try:
        scenes = SceneSet(
            images=torch.from_numpy(images),
            counts=torch.from_numpy(counts),
            boxes=torch.from_numpy(boxes),
            name=f"{params['name']}/{params['split']}",
            layers=None if layers is None else torch.from_numpy(layers),
        )
    except ValueError as e:
        return None, str(e)
    if len(scenes) != params["num_images"]:
        return None, "wrong number of images"
    return scenes, None


def _write_cache(path: Path, params: dict[str, Any], scenes: SceneSet) -> None:
    """Atomically write ``scenes`` to ``path`` (temp file in the same folder + os.replace)."""
    assert scenes.counts is not None and scenes.boxes is not None
    images = scenes.images.numpy()
    counts = scenes.counts.numpy()
    boxes = scenes.boxes.numpy()
    extra = {} if scenes.layers is None else {"layers": scenes.layers.numpy()}
    meta = {"params": params, "sha256": _arrays_digest(images, counts, boxes, *extra.values())}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, counts=counts, boxes=boxes, meta=np.array(json.dumps(meta)), **extra)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_dataset(
    name: str,
    split: str,
    *,
    num_images: int | None = None,
    seed: int = 0,
    scene_size: int | None = None,
    max_objects: int | None = None,
    colour: bool = False,
    min_objects: int = 0,
    layers: bool = False,
    cache_dir: str | Path | None = None,
    log: Log = print,
) -> SceneSet:
    """Load (from the cache) or generate a scene set.

    Args:
        name: One of :data:`DATASETS`.
        split: ``"train"``, ``"test"`` or ``"valid"``; MNIST scenes use the digits of the same
            MNIST split, and every split has its own random streams.
        num_images: Number of scenes; default 50000 for train, 5000 for test and valid.
        seed: Non-negative seed; identical parameters always give identical arrays.
        scene_size: Side length S of the square scenes (16 to 1024); default the data set's
            (96 for crowded-mnist, 50 for the others).
        max_objects: Counts are uniform over ``{min_objects, ..., max_objects}``; default the
            data set's (9 for crowded-mnist, 3 for occluded-mnist, 2 for the others).
        colour: Sprites keep RGB (C = 3) instead of grey; MNIST digits are tinted with random
            bright colours (noise is then drawn per channel, grid lines stay grey).
        min_objects: The least count (default 0).
        layers: Also keep each object alone, unoccluded (occluded-mnist only).
        cache_dir: Folder of the cache; default :func:`default_cache_dir`.
        log: Called with a one-line message when a bad cache file is rebuilt, or the cache cannot
            be written.

    Returns:
        A :class:`SceneSet`: images ``(N, C, S, S)`` uint8, counts ``(N,)`` int64, boxes
        ``(N, max_objects, 4)`` float32 (and layers ``(N, max_objects, C, S, S)`` uint8).

    Raises:
        ValueError: Unknown name or split, or bad sizes.
    """
    params = validate_request(name, split, num_images, seed, scene_size, max_objects, min_objects, layers)
    params["colour"] = bool(colour)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = _cache_path(folder, params)
    if path.exists():
        scenes, reason = _read_cache(path, params)
        if scenes is not None:
            return scenes
        log(f"cache file {path} is corrupt or stale ({reason}); rebuilding it")
    scenes = generate_dataset(
        name, split, num_images=cast(int, params["num_images"]), seed=int(seed), scene_size=cast(int, params["scene_size"]),
        max_objects=cast(int, params["max_objects"]), colour=bool(colour), min_objects=int(min_objects), layers=bool(layers),
    )
    try:
        _write_cache(path, params, scenes)
    except OSError as e:
        log(f"could not write cache file {path} ({e}); continuing without cache")
    return scenes
