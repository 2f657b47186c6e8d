"""The paper-style figure: inputs, detections, reconstructions and amodal completions."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .detect import BOX_COLOURS, draw_boxes
from .checkpoint import load_checkpoint, load_model
from .train import DATA_SEED

__all__ = ["show_figure"]


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor to an ``(H, W)`` or ``(H, W, 3)`` array."""
    a = t.detach().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def show_figure(checkpoint: str | Path, out: str | Path | None = None, num_images: int = 8, data: str | None = None,
                seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Render the figure for ``num_images`` held-out images (or the user's ``data``) and write it as a PNG.

    Rows: input; detections with coloured boxes; reconstruction; then, per
    step, the glimpse with its occluded part (hatched in red) and the object
    model's amodal completion of it.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data import load_dataset, load_user_images

    model, cfg = load_model(checkpoint)
    m = cfg.model
    if data is not None:
        scenes, _ = load_user_images(data, scene_size=m.scene_size, channels=m.channels, log=log)
    elif cfg.train.data_path is not None:
        scenes, test = load_user_images(cfg.train.data_path, scene_size=m.scene_size, channels=m.channels, seed=DATA_SEED, log=log)
        scenes = test if test is not None else scenes
    else:
        scenes = load_dataset(cfg.train.dataset, "test", num_images=max(num_images, 100), scene_size=m.scene_size, colour=m.channels == 3, seed=DATA_SEED)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(scenes), generator=gen)[:num_images]
    x = scenes.float_batch(idx)
    ex = model.explain(x)
    N = m.max_steps
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
    fig.suptitle(f"{cfg.model_type} on {cfg.train.dataset if not cfg.train.data_path else 'custom data'}: step {load_checkpoint(checkpoint)['step']}", fontsize=9)
    fig.tight_layout()
    ckpt = Path(checkpoint)
    target = Path(out) if out else (ckpt if ckpt.is_dir() else ckpt.parent) / "show.png"
    tmp = target.with_name(target.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(target)
    return target
