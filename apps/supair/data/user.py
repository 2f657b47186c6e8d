"""The user's own scenes: a folder of images or an ``.npz`` of arrays, as a :class:`SceneSet`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..images import IMAGE_SUFFIXES, LUMA, check_image_folder, decode_image
from .scenes import MAX_SCENE_SIZE, Log, SceneSet

__all__ = ["load_user_images", "IMAGE_SUFFIXES"]


def _convert_channels(images: np.ndarray, channels: int, source: str) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, H, W, channels)`` uint8 (luma, replication, alpha drop)."""
    c = images.shape[-1]
    if c == channels:
        return images
    if c == 4:
        images, c = images[..., :3], 3
        if channels == 3:
            return np.ascontiguousarray(images)
    if c == 3 and channels == 1:
        grey = np.rint(images.astype(np.float64) @ LUMA)
        return np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    raise ValueError(
        f"{source}: cannot convert images with {c} channels to {channels}; expected 1 (grey), "
        "3 (RGB) or 4 (RGBA) channels"
    )


def _read_folder(folder: Path, channels: int) -> list[np.ndarray]:
    """Every image of ``folder`` (headers first: a file too large or not an image is named before any decoding)."""
    return [decode_image(p, channels) for p in check_image_folder(folder)]


def _images_from_array(raw: np.ndarray, source: str) -> np.ndarray:
    """Validate an ``images`` array and return it as ``(N, H, W, C)`` uint8."""
    if raw.ndim == 3:
        raw = raw[..., None]
    elif raw.ndim != 4:
        raise ValueError(
            f"{source}: 'images' has shape {raw.shape}; expected (N, H, W) or (N, H, W, C)"
        )
    if raw.shape[0] == 0 or raw.shape[1] == 0 or raw.shape[2] == 0:
        raise ValueError(f"{source}: 'images' is empty (shape {raw.shape})")
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all():
            raise ValueError(f"{source}: 'images' contains NaN or infinite values")
        lo, hi = float(raw.min()), float(raw.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{source}: float 'images' must lie in [0, 1], found values in [{lo:g}, {hi:g}]"
            )
        return np.rint(raw.astype(np.float64) * 255.0).astype(np.uint8)
    if np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_:
        if raw.dtype == np.bool_:
            return raw.astype(np.uint8) * 255
        lo, hi = int(raw.min()), int(raw.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{source}: integer 'images' must lie in [0, 255], found [{lo}, {hi}]; "
                "expected uint8 or float in [0, 1]"
            )
        return raw.astype(np.uint8)
    raise ValueError(f"{source}: 'images' has dtype {raw.dtype}; expected uint8 or float in [0, 1]")


def _resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, size, size, C)`` uint8 (bilinear, antialiased)."""
    out = np.empty((images.shape[0], size, size, images.shape[3]), dtype=np.uint8)
    for start in range(0, images.shape[0], 1024):
        x = torch.from_numpy(images[start : start + 1024]).permute(0, 3, 1, 2).to(torch.float32)
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + 1024] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays ``images`` and, when present, ``counts`` and ``boxes`` of an npz (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            if "images" not in files:
                missing = True
            else:
                missing = False
                keys = [k for k in ("images", "counts", "boxes") if k in files]
                out = {k: np.asarray(f[k]) for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"cannot read {path} as an .npz file of plain arrays (no pickles): {e}"
        ) from e
    if missing:
        raise ValueError(
            f"{path} has no array 'images' (found: {', '.join(files) or 'nothing'}); expected "
            "images (N, H, W) or (N, H, W, C), optionally counts (N,) and boxes (N, M, 4)"
        )
    return out


def _check_labels(
    raw_counts: np.ndarray | None, raw_boxes: np.ndarray | None, n: int, path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate optional ``counts (n,)`` and ``boxes (n, M, 4)``; zero box rows beyond counts."""
    counts = boxes = None
    if raw_counts is not None:
        if raw_counts.ndim != 1 or raw_counts.shape[0] != n:
            raise ValueError(
                f"{path}: 'counts' has shape {raw_counts.shape}; expected ({n},), "
                "one count per image"
            )
        integral = np.issubdtype(raw_counts.dtype, np.integer) or (
            np.issubdtype(raw_counts.dtype, np.floating)
            and bool(np.isfinite(raw_counts).all())
            and bool((raw_counts == np.round(raw_counts)).all())
        )
        if not integral:
            raise ValueError(
                f"{path}: 'counts' must hold whole numbers, got dtype {raw_counts.dtype}"
            )
        counts = raw_counts.astype(np.int64)
        if (counts < 0).any():
            raise ValueError(
                f"{path}: 'counts' must be >= 0 (numbers of objects), found {int(counts.min())}"
            )
    if raw_boxes is not None:
        if raw_boxes.ndim != 3 or raw_boxes.shape[0] != n or raw_boxes.shape[2] != 4:
            raise ValueError(
                f"{path}: 'boxes' has shape {raw_boxes.shape}; expected ({n}, M, 4) "
                "as (x0, y0, x1, y1)"
            )
        kind = raw_boxes.dtype
        if not (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)):
            raise ValueError(f"{path}: 'boxes' must be numeric, got dtype {raw_boxes.dtype}")
        boxes = raw_boxes.astype(np.float32)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{path}: 'boxes' contains NaN or infinite values")
        if counts is not None:
            if (counts > boxes.shape[1]).any():
                raise ValueError(
                    f"{path}: a count ({int(counts.max())}) exceeds the {boxes.shape[1]} boxes "
                    "given per image"
                )
            boxes[np.arange(boxes.shape[1])[None, :] >= counts[:, None]] = 0.0
    return counts, boxes


def _fit_size(
    frames: list[np.ndarray], boxes: np.ndarray | None, scene_size: int, log: Log
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack images to ``(N, S, S, C)`` uint8, resizing those of another size (one message).

    Args:
        frames: Either single images ``(H, W, C)`` or one batch ``(N, H, W, C)`` in a list.
        boxes: Optional ``(N, M, 4)`` boxes, scaled along (modified in place).
        scene_size: S.
        log: Receives the message.

    Returns:
        ``(images, boxes)``.
    """
    if len(frames) == 1 and frames[0].ndim == 4:
        batch = frames[0]
        singles = None
    else:
        batch = None
        singles = frames
    if batch is not None:
        groups = {(batch.shape[1], batch.shape[2]): np.arange(batch.shape[0])}
        n, c = batch.shape[0], batch.shape[3]
    else:
        assert singles is not None
        groups_l: dict[tuple[int, int], list[int]] = {}
        for i, fr in enumerate(singles):
            groups_l.setdefault((fr.shape[0], fr.shape[1]), []).append(i)
        groups = {k: np.array(v) for k, v in groups_l.items()}
        n, c = len(singles), singles[0].shape[2]
    out = np.empty((n, scene_size, scene_size, c), dtype=np.uint8)
    resized = 0
    sizes_seen: list[str] = []
    for (h, w), idx in groups.items():
        part = batch[idx] if batch is not None else np.stack([frames[i] for i in idx])  # frames: the singles
        if (h, w) != (scene_size, scene_size):
            part = _resize_batch(part, scene_size)
            resized += len(idx)
            sizes_seen.append(f"{w}x{h}")
            if boxes is not None:
                boxes[idx, :, 0::2] *= scene_size / w
                boxes[idx, :, 1::2] *= scene_size / h
        out[idx] = part
    if resized:
        log(
            f"resized {resized} image{'s' if resized != 1 else ''} from "
            f"{', '.join(sizes_seen)} to {scene_size}x{scene_size}"
        )
    return out, boxes


def load_user_images(
    path: str | Path,
    *,
    scene_size: int = 50,
    channels: int = 1,
    test_fraction: float = 0.1,
    seed: int = 0,
    log: Log = print,
) -> tuple[SceneSet, SceneSet | None]:
    """Load the user's own scenes from a folder of images or an ``.npz`` file.

    A folder is read in file-name order (``*.png``, ``*.jpg``, ``*.jpeg``; other files are
    ignored), each image scaled by its bit depth and composited onto black where it is
    transparent (:func:`supair.images.decode_image`). An ``.npz`` must hold ``images`` ``(N, H, W)`` or ``(N, H, W, C)`` (uint8, or float
    in [0, 1]) and may hold ``counts`` ``(N,)`` and ``boxes`` ``(N, M, 4)`` (pixel coordinates
    ``x0, y0, x1, y1``; rows at or beyond a scene's count are set to zero). Images that are not
    ``scene_size x scene_size`` are resized (bilinear; boxes are scaled along), with one message
    via ``log``.

    Args:
        path: Folder or ``.npz`` file.
        scene_size: Side length S of the returned scenes.
        channels: 1 (grey, ITU-R 601 luma) or 3 (RGB).
        test_fraction: Fraction held out as a test set when counts are known (0 for none).
        seed: Seed of the train/test split.
        log: Receives the one-line resize message.

    Returns:
        ``(train, test)`` when counts are known (``test`` is ``None`` if ``test_fraction`` is 0
        or there is only one image), otherwise ``(all, None)``. Images are ``(N, C, S, S)`` uint8.

    Raises:
        ValueError: Missing path, empty folder, unreadable image (named), malformed npz, bad
            values, unconvertible channels, bad counts or boxes, bad arguments.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(scene_size, bool) or not isinstance(scene_size, (int, np.integer)) or not (
        1 <= scene_size <= MAX_SCENE_SIZE
    ):
        raise ValueError(f"scene_size must be an int in [1, {MAX_SCENE_SIZE}], got {scene_size!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(
            f"{path} does not exist; expected a folder of PNG/JPEG images or an .npz file "
            "with an 'images' array"
        )
    counts: np.ndarray | None = None
    boxes: np.ndarray | None = None
    if path.is_dir():
        images, boxes = _fit_size(_read_folder(path, channels), None, scene_size, log)
    elif path.suffix.lower() == ".npz":
        arrays = _read_npz(path)
        arr = _images_from_array(arrays["images"], str(path))
        arr = _convert_channels(arr, channels, str(path))
        counts, boxes = _check_labels(arrays.get("counts"), arrays.get("boxes"), arr.shape[0], path)
        images, boxes = _fit_size([arr], boxes, scene_size, log)
    else:
        raise ValueError(
            f"{path} is neither a folder nor an .npz file; expected a folder of PNG/JPEG images "
            "or an .npz file with an 'images' array"
        )
    images_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    scenes = SceneSet(
        images=images_t,
        counts=None if counts is None else torch.from_numpy(counts),
        boxes=None if boxes is None else torch.from_numpy(boxes),
        name=f"user:{path.name}",
    )
    n = len(scenes)
    if counts is None or test_fraction == 0.0 or n < 2:
        return scenes, None
    n_test = min(max(1, int(round(test_fraction * n))), n - 1)
    perm = np.random.default_rng(np.random.SeedSequence(int(seed))).permutation(n)
    test_idx = torch.from_numpy(np.sort(perm[:n_test]))
    train_idx = torch.from_numpy(np.sort(perm[n_test:]))
    return scenes.subset(train_idx), scenes.subset(test_idx)
