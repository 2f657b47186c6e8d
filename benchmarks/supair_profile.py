"""SuPAIR training throughput and where a step's time goes.

Times one full training step (forward, backward, Adam) at the configured batch
size, then each part of the step on its own, forward and backward, with the
shapes a real step uses: the inference network (encoder + attention over the
N steps), the spatial transformer (glimpses, visibility, coverage), the object
SPN (B*N glimpses with soft masks) and the background SPN (B*(N+1) images with
soft masks). Medians of repeated runs after warm-up; threads pinned;
OMP_WAIT_POLICY=PASSIVE (set before torch is imported).

Usage:
    python benchmarks/supair_profile.py [--batch-size 256] [--threads 2] [--repeats 10] [--out benchmarks/results/supair_profile.md]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supair.config import ModelConfig  # noqa: E402
from supair.data import load_dataset  # noqa: E402
from supair.model import Supair  # noqa: E402
from supair.transform import cut_glimpses  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None, help="markdown file to write the table to")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = Supair(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = load_dataset("multi-mnist", "test", num_images=args.batch_size, scene_size=cfg.scene_size)
    x = data.float_batch(slice(0, args.batch_size))
    B, N, G, S = args.batch_size, cfg.max_steps, cfg.glimpse_size, cfg.scene_size

    def step():
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with torch.no_grad():
        inf = model.infer(x)
        where = inf.where.detach()
        vis = model.visibility(where)
    glimpses = cut_glimpses(x.unsqueeze(1).expand(B, N, 1, S, S).reshape(B * N, 1, S, S), where.reshape(B * N, 4), G)
    obj_x = glimpses.reshape(B * N, G * G).detach()
    obj_m = (1 - cut_glimpses(vis[:, :N].reshape(B * N, 1, S, S), where.reshape(B * N, 4), G)).clamp(0, 1).reshape(B * N, G * G).detach()
    bg_x = x.reshape(B, 1, S * S).expand(B, N + 1, S * S).reshape(-1, S * S)
    bg_m = (1 - vis).reshape(-1, S * S).clamp(0, 1).detach()

    def inference():
        lo, loc, std, z = model.inference(x)
        (lo.sum() + loc.sum() + std.sum() + z.sum()).backward()

    def transformer():
        w = where.clone().requires_grad_(True)
        v = model.visibility(w)
        rep = x.unsqueeze(1).expand(B, N, 1, S, S).reshape(B * N, 1, S, S)
        g = cut_glimpses(rep, w.reshape(B * N, 4), G)
        gv = cut_glimpses(v[:, :N].reshape(B * N, 1, S, S), w.reshape(B * N, 4), G)
        (g.sum() + gv.sum() + v.sum()).backward()

    def object_spn():
        xx, mm = obj_x.clone().requires_grad_(True), obj_m.clone().requires_grad_(True)
        model.object_spn.log_prob(xx, marginalized=mm).sum().backward()

    def background_spn():
        mm = bg_m.clone().requires_grad_(True)
        model.background_spn.log_prob(bg_x, marginalized=mm).sum().backward()

    rows = [("full training step", median_time(step, args.repeats))]
    for name, fn in (("inference network (encoder + attention)", inference), ("spatial transformer + visibility", transformer),
                     ("object SPN (B*N glimpses)", object_spn), ("background SPN (B*(N+1) images)", background_spn)):
        rows.append((name, median_time(fn, args.repeats)))
    total = rows[0][1]
    lines = [
        f"SuPAIR training step on multi-MNIST defaults, batch {B}, {args.threads} threads, torch {torch.__version__}, median of {args.repeats}",
        "",
        "| part (forward + backward) | seconds | share of the step |",
        "|---|---|---|",
    ]
    for name, t in rows:
        lines.append(f"| {name} | {t:.3f} | {t / total:.0%} |")
    lines.append("")
    lines.append(f"throughput: {B / total:.0f} images/s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
