"""Detection on image files with a trained model: counts, boxes and presence probabilities."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write, check_writable
from .images import decode_image, image_size

__all__ = ["read_images", "detect_files", "draw_boxes", "drawing_name", "check_detect_request", "BOX_COLOURS", "DETECT_BATCH"]

BOX_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
DETECT_BATCH = 256  # images per forward pass: memory stays bounded for any number of files


def check_detect_request(paths: Sequence[str | Path], out_dir: str | Path | None) -> None:
    """Raise a ValueError for a missing, unreadable or too large image, or an ``--out`` that cannot hold drawings.

    Reads only the images' headers; nothing is written.
    """
    if not paths:
        raise ValueError("no image files given")
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the drawings")
        check_writable(out, f"--out {out}")
    for p in paths:
        image_size(p)


def read_images(paths: Sequence[str | Path], size: int, channels: int, log: Callable[[str], None] = print):
    """Read image files as ``(B, C, size, size)`` floats in [0, 1], and their original (width, height).

    Each file is decoded by :func:`supair.images.decode_image` (16-bit
    images by their bit depth, transparency onto black), then resized bilinearly.

    Raises:
        ValueError: for a missing, unreadable or too large file.
    """
    import torch
    from PIL import Image

    arrays, sizes = [], []
    for p in paths:  # per file, at load time
        arr = decode_image(p, channels)
        im = Image.fromarray(arr[..., 0] if channels == 1 else arr)
        sizes.append(im.size)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    resized = sum(1 for s in sizes if s != (size, size))
    if resized:
        log(f"resized {resized} of {len(paths)} images to {size}x{size}; boxes are reported in the original pixel coordinates")
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    return x.contiguous(), sizes


def draw_boxes(image: np.ndarray, boxes: list[list[float]], scale: int = 1):
    """Draw corner boxes ``(x0, y0, x1, y1)`` on an ``(H, W)`` or ``(H, W, 3)`` float image in [0, 1]."""
    from PIL import Image, ImageDraw

    arr = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=max(1, scale // 2))
    return im


def drawing_name(path: str | Path) -> str:
    """The file name of ``path``'s drawing: its stem and 8 hex digits of a hash of its absolute path.

    Images of the same name in different folders get different drawings, and
    the same image always the same one.
    """
    key = os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")
    return f"{Path(path).stem}-{hashlib.sha256(key).hexdigest()[:8]}_boxes.png"


def detect_files(checkpoint: str | Path, paths: Sequence[str | Path], out_dir: str | Path | None = None, device: str = "cpu",
                 log: Callable[[str], None] = print, max_steps: int | None = None) -> list[dict]:
    """Detect objects in image files (``max_steps``: attention steps, default the run's; the most objects counted).

    Returns:
        one dict per image: ``path``, ``count``, ``boxes`` (``[x0, y0, x1, y1]``
        in the image's own pixel coordinates, one per counted object) and
        ``presence`` (each counted object's presence probability); with
        ``out_dir``, also ``drawing``, the path of the PNG with the boxes drawn
        (named by :func:`drawing_name`, written atomically).

    Raises:
        ValueError: for a bad checkpoint, image or ``out_dir`` (checked before anything is written).
    """
    import torch

    from .checkpoint import load_model

    check_detect_request(paths, out_dir)
    model, cfg = load_model(checkpoint, device, detect_steps=max_steps)
    S, C = cfg.model.scene_size, cfg.model.channels
    counts, boxes, presence = [], [], []
    sizes: list[tuple[int, int]] = []
    messages: list[str] = []
    for start in range(0, len(paths), DETECT_BATCH):  # batches of images: read, then detect
        x, batch_sizes = read_images(paths[start : start + DETECT_BATCH], S, C, log=messages.append)
        inf = model.detect(x.to(device))
        counts.append(inf.count().cpu())
        boxes.append(inf.boxes().cpu())
        presence.append(inf.presence().cpu())
        sizes += batch_sizes
    resized = sum(1 for s in sizes if s != (S, S))
    if resized:
        log(f"resized {resized} of {len(paths)} images to {S}x{S}; boxes are reported in the original pixel coordinates")
    count, box, pres = torch.cat(counts), torch.cat(boxes), torch.cat(presence)
    results = []
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i, (path, (w, h)) in enumerate(zip(paths, sizes)):  # per image, to report
        k = int(count[i])
        b = box[i, :k] * torch.tensor([w / S, h / S, w / S, h / S])
        drawn = [[round(float(v), 2) for v in row] for row in b]
        entry: dict[str, Any] = {
            "path": str(path),
            "count": k,
            "boxes": drawn,
            "presence": [round(float(p), 4) for p in pres[i, :k]],
        }
        if out_dir is not None:
            arr = decode_image(path, C).astype(np.float32) / 255.0
            scale = max(1, 256 // max(w, h))
            target = Path(out_dir) / drawing_name(path)
            drawing = draw_boxes(arr[..., 0] if C == 1 else arr, drawn, scale)
            atomic_write(target, functools.partial(drawing.save, format="PNG"))
            entry["drawing"] = str(target)
        results.append(entry)
    return results
