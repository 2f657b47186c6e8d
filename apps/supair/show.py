"""The paper-style figure: inputs, detections, reconstructions and amodal completions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_write, check_writable
from .names import MAX_SHOW_IMAGES

if TYPE_CHECKING:
    import torch

__all__ = ["show_figure", "check_show_request", "figure_path"]


def figure_path(checkpoint: str | Path, out: str | Path | None) -> Path:
    """Where the figure goes: ``out``, or ``show.png`` in the run folder of ``checkpoint``."""
    if out is not None:
        return Path(out)
    ckpt = Path(checkpoint)
    return (ckpt if ckpt.is_dir() else ckpt.parent) / "show.png"


def check_show_request(checkpoint: str | Path, out: str | Path | None, num_images: int) -> None:
    """Raise a ValueError for a number of images out of range or a figure path that cannot be written (nothing is written)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 1 <= num_images <= MAX_SHOW_IMAGES:
        raise ValueError(f"--num-images must be between 1 and {MAX_SHOW_IMAGES}, got {num_images!r}")
    from .rundir import resolve_checkpoint

    resolve_checkpoint(checkpoint)
    target = figure_path(checkpoint, out)
    if target.is_dir():
        raise ValueError(f"--out {target} is a folder; give a .png file name such as {target / 'show.png'}")
    if target.suffix.lower() != ".png":
        raise ValueError(f"--out {target}: the figure is a PNG; give a file name ending in .png")
    check_writable(target.parent, f"--out {target}" if out is not None else f"the run folder {target.parent}")


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor to an ``(H, W)`` or ``(H, W, 3)`` array."""
    a = t.detach().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def show_figure(checkpoint: str | Path, out: str | Path | None = None, num_images: int = 8, data: str | None = None,
                seed: int = 0, log: Callable[[str], None] = print, max_steps: int | None = None,
                glimpses: int | None = None) -> Path:
    """Render the figure for ``num_images`` held-out images (or the user's ``data``) and write it as a PNG.

    Rows: input; detections with coloured boxes; reconstruction; then, for
    the first ``glimpses`` objects (default: up to 3), the glimpse with its
    occluded part (hatched in red) and the object model's amodal completion of
    it. ``max_steps``: attention steps (default: the run's).

    Returns:
        the path written (atomically).

    Raises:
        ValueError: for a bad checkpoint, data, ``num_images`` or ``out`` (checked before anything is written).
    """
    check_show_request(checkpoint, out, num_images)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .checkpoint import config_of, load_checkpoint, model_of
    from .data import load_user_images
    from .detect import BOX_COLOURS, draw_boxes
    from .train import DATA_SEED, test_scenes

    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_of(ckpt, checkpoint, detect_steps=max_steps), config_of(ckpt, checkpoint, detect_steps=max_steps)
    m = cfg.model
    if data is not None:
        scenes, _ = load_user_images(data, scene_size=m.scene_size, channels=m.channels, log=log)
    elif cfg.train.data_path is not None:
        scenes, test = load_user_images(cfg.train.data_path, scene_size=m.scene_size, channels=m.channels, seed=DATA_SEED, log=log)
        scenes = test if test is not None else scenes
    else:
        scenes = test_scenes(cfg, max(num_images, 100))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(scenes), generator=gen)[:num_images]
    x = scenes.float_batch(idx)
    ex = model.explain(x)
    N = min(ex["glimpses"].shape[1], 3 if glimpses is None else glimpses)  # objects whose glimpses are shown
    rows = 3 + 2 * N
    cmap = "gray" if m.channels == 1 else None
    fig, axes = plt.subplots(rows, len(idx), figsize=(1.3 * len(idx), 1.35 * rows), squeeze=False)
    boxes = ex["inference"].boxes()
    labels = ["input", "detections", "reconstruction"] + [f"{kind} {i + 1}" for i in range(N) for kind in ("glimpse", "completion")]
    for j in range(len(idx)):  # figure columns
        k = int(ex["count"][j])
        img = _to_hwc(x[j])
        axes[0, j].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1, j].imshow(np.asarray(draw_boxes(img, boxes[j, :k].tolist(), 4)))
        axes[2, j].imshow(_to_hwc(ex["reconstruction"][j]), cmap=cmap, vmin=0, vmax=1)
        for i in range(N):
            g_ax, c_ax = axes[3 + 2 * i, j], axes[4 + 2 * i, j]
            if i < k:
                glimpse = _to_hwc(ex["glimpses"][j, i])
                g_ax.imshow(glimpse, cmap=cmap, vmin=0, vmax=1)
                hidden = ex["hidden"][j, i, 0].numpy()
                g_ax.imshow(np.ma.masked_where(hidden < 0.5, hidden), cmap="Reds", alpha=0.45, vmin=0, vmax=1)
                c_ax.imshow(_to_hwc(ex["completions"][j, i]), cmap=cmap, vmin=0, vmax=1)
                for ax in (g_ax, c_ax):
                    for spine in ax.spines.values():
                        spine.set_edgecolor(np.array(BOX_COLOURS[i % len(BOX_COLOURS)]) / 255)
                        spine.set_linewidth(2)
            else:
                g_ax.set_facecolor("white")
                c_ax.set_facecolor("white")
        for r in range(rows):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    for r, label in enumerate(labels):
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"{cfg.model_type} on {cfg.train.dataset if not cfg.train.data_path else 'custom data'}: step {ckpt['step']}", fontsize=9)
    fig.tight_layout()
    target = figure_path(checkpoint, out)
    try:
        atomic_write(target, lambda fh: fig.savefig(fh, dpi=110, format="png"), clean_stale=True)
    finally:
        plt.close(fig)
    return target
