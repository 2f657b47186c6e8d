"""Detection on image files with a trained model: counts, boxes and presence probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from .checkpoint import load_model

__all__ = ["read_images", "detect_files", "draw_boxes", "BOX_COLOURS"]

BOX_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def read_images(paths: list[str | Path], size: int, channels: int, log: Callable[[str], None] = print) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Read image files as ``(B, C, size, size)`` floats in [0, 1], and their original (width, height).

    Raises:
        ValueError: for a missing or unreadable file.
    """
    arrays, sizes = [], []
    for p in paths:  # per file, at load time
        p = Path(p)
        if not p.is_file():
            raise ValueError(f"no image file at {p}")
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                sizes.append(im.size)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {p}: {err}") from None
    resized = sum(1 for s in sizes if s != (size, size))
    if resized:
        log(f"resized {resized} of {len(paths)} images to {size}x{size}; boxes are reported in the original pixel coordinates")
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    return x.contiguous(), sizes


def draw_boxes(image: np.ndarray, boxes: list[list[float]], scale: int = 1) -> Image.Image:
    """Draw corner boxes ``(x0, y0, x1, y1)`` on an ``(H, W)`` or ``(H, W, 3)`` float image in [0, 1]."""
    arr = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=max(1, scale // 2))
    return im


def detect_files(checkpoint: str | Path, paths: list[str], out_dir: str | Path | None = None, device: str = "cpu",
                 log: Callable[[str], None] = print) -> list[dict]:
    """Detect objects in image files.

    Returns:
        one dict per image: ``path``, ``count``, ``boxes`` (``[x0, y0, x1, y1]``
        in the image's own pixel coordinates, one per counted object) and
        ``presence`` (each counted object's presence probability).
    """
    model, cfg = load_model(checkpoint, device)
    S = cfg.model.scene_size
    x, sizes = read_images(paths, S, cfg.model.channels, log)
    inf = model.detect(x.to(device))
    count, boxes, presence = inf.count().cpu(), inf.boxes().cpu(), inf.presence().cpu()
    results = []
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i, (path, (w, h)) in enumerate(zip(paths, sizes)):  # per image, to report
        k = int(count[i])
        b = boxes[i, :k] * torch.tensor([w / S, h / S, w / S, h / S])
        entry = {
            "path": str(path),
            "count": k,
            "boxes": [[round(float(v), 2) for v in row] for row in b],
            "presence": [round(float(p), 4) for p in presence[i, :k]],
        }
        if out_dir is not None:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L" if cfg.model.channels == 1 else "RGB"), dtype=np.float32) / 255.0
            scale = max(1, 256 // max(w, h))
            target = Path(out_dir) / (Path(path).stem + "_boxes.png")
            draw_boxes(arr, entry["boxes"], scale).save(target)
            entry["drawing"] = str(target)
        results.append(entry)
    return results
