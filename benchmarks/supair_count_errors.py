"""Where a trained SuPAIR model miscounts, and whether its own joint density agrees with it.

For a checkpoint and its data set's held-out scenes, prints the confusion matrix
of true against predicted counts (the inference network's count), and, for
each (true, predicted) cell with errors, compares three log joints
``log p(x, z, n)`` per scene:

* the model's explanation under its predicted count,
* the model's boxes under the true count (the first ``n`` of its boxes),
* the true count with boxes around the true objects: each labelled box grown
  by 0-3 px per side and fitted into the boxes the model can express (scale,
  aspect and position ranges), in both orders; the best of these.

If the third beats the first, the model's joint prefers the truth and the
error is one of amortised inference (the attention network did not find the
better boxes); otherwise the error is in the model itself.

Usage::

    .venv/bin/python benchmarks/supair_count_errors.py runs/<run>/checkpoint.pt [--scenes 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supair.checkpoint import load_model
from supair.inference import Inference
from supair.train import load_data


def fitted_box(corners: torch.Tensor, pad: float, cfg) -> list[float]:
    """A true box ``(x0, y0, x1, y1)`` grown by ``pad`` px per side, as ``(width, height, x0, y0)`` the model can express."""
    icfg, G = cfg.inference, cfg.glimpse_size
    x0, y0, x1, y1 = corners.tolist()
    w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    w = min(max(w, h / icfg.ratio_range[1], icfg.scale_range[0] * G), icfg.scale_range[1] * G)
    h = min(max(h, w * icfg.ratio_range[0]), w * icfg.ratio_range[1])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [w, h, cx - w / 2, cy - h / 2]


def log_joint(model, image: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``log p(x, z, n)`` for ``n = 0..N`` of one image ``(1, C, S, S)`` with boxes ``where (N, 4)`` (pixels)."""
    N = where.shape[0]
    z = torch.zeros(1, N, 4)
    inf = Inference(torch.zeros(1, N), z, torch.ones(1, N, 4), z, where.view(1, N, 4))
    return model.log_joint(image, inf)["log_joint"][0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--scenes", type=int, default=2000, help="held-out scenes to examine (default: 2000, the evaluation's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.checkpoint)
    model.eval()
    _, test = load_data(cfg)
    if test is None or test.counts is None or test.boxes is None:
        print("the checkpoint's data set has no labelled held-out scenes", file=sys.stderr)
        return 2
    n = min(args.scenes, len(test))
    images, counts, true_boxes = test.float_batch(slice(0, n)), test.counts[:n], test.boxes[:n]
    with torch.no_grad():
        inf = model.detect(images)
        pred = inf.count()
        N = cfg.model.max_steps
        conf = torch.zeros(N + 1, N + 1, dtype=torch.long)
        conf.index_put_((counts.clamp_max(N), pred), torch.ones(n, dtype=torch.long), accumulate=True)
        print(f"{args.checkpoint}: {n} held-out scenes, count accuracy {float((pred == counts).float().mean()):.4f}")
        print("confusion (rows: true count, columns: predicted):")
        print("      " + " ".join(f"{j:>5}" for j in range(N + 1)))
        for i in range(N + 1):
            print(f"  {i:>3} " + " ".join(f"{int(v):>5}" for v in conf[i]))
        for t in range(N + 1):
            for q in range(N + 1):
                rows = ((counts == t) & (pred == q)).nonzero().flatten()
                if t == q or not len(rows):
                    continue
                truth_wins, gaps, own = 0, [], []
                for i in rows.tolist():
                    img, where = images[i : i + 1], inf.where[i]
                    model_lj = log_joint(model, img, where)
                    own.append(float(model_lj[t] - model_lj[q]))
                    best_true = -float("inf")
                    for pad in (0, 1, 2, 3):
                        for order in ((0, 1), (1, 0)) if t == 2 else ((0,),) if t == 1 else ((),):
                            boxes = [fitted_box(true_boxes[i, k], pad, cfg.model) for k in order]
                            filled = torch.cat([torch.tensor(boxes).view(-1, 4), where[len(boxes):]]) if boxes else where
                            best_true = max(best_true, float(log_joint(model, img, filled)[t]))
                    gap = best_true - float(model_lj[q])
                    gaps.append(gap)
                    truth_wins += gap > 0
                g, o = torch.tensor(gaps), torch.tensor(own)
                print(f"true {t}, predicted {q}: {len(rows)} scenes; boxes around the true objects beat the model's explanation "
                      f"in {truth_wins} (median {float(g.median()):+.0f} nats, range {float(g.min()):+.0f} to {float(g.max()):+.0f}); "
                      f"the model's own boxes under the true count: median {float(o.median()):+.0f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
