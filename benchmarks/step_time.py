"""Training-step time of SuPAIR and AIR as the trainer runs them, with and without kept freed memory.

Each (model, code, allocator) variant runs in its own process (the allocator
setting is process-wide), in rounds that alternate the variants (each round
starting one variant later), so that a disturbance of the shared machine falls
on all of them alike. Processes differ by a few percent with the same code and
setting (memory placement); for small code changes, alternate the versions step
by step in one process instead. A process builds
the model with the trainer's defaults for the data set (SuPAIR on multi-MNIST:
batch 64), fused Adam, one torch thread by default, trains ``--warmup`` steps
on one fixed batch, then times ``--steps`` more (process CPU time) and counts
the minor page faults they took. It also hashes the parameters after the
warm-up: variants whose code computes the same function print the same hash.

``--baseline PATH`` adds the code of another checkout (e.g. a ``git worktree``
of an older commit) under the same conditions, to measure a change.

Usage:
    python benchmarks/step_time.py [--models supair,air] [--rounds 3] [--baseline PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOCATORS = ("default", "keep")


def worker(root: str, model_type: str, allocator: str, dataset: str, threads: int, warmup: int, steps: int) -> dict:
    """One variant, in this process: returns the median step time, faults per step and the parameter hash."""
    import resource

    if allocator == "keep":  # this checkout's setting, whatever the code under test
        spec = importlib.util.spec_from_file_location("_spnkit_system", ROOT / "spnkit" / "system.py")
        system = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(system)
        if not system.keep_freed_memory():
            raise RuntimeError("keep_freed_memory is not available here (glibc only)")
    sys.path.insert(0, root)
    import torch

    torch.set_num_threads(threads)
    from apps.supair.cli import build_parser, config_from_args
    from apps.supair.data import load_dataset
    from apps.supair.train import build_model

    # the configuration `supair train --model M --dataset D` would run (the checkout's own defaults)
    cfg = config_from_args(build_parser().parse_args(["train", "--model", model_type, "--dataset", dataset]))
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate, fused=True)
    batch = cfg.train.batch_size
    x = load_dataset(dataset, "test", num_images=batch, scene_size=cfg.model.scene_size).float_batch(slice(0, batch))

    def step() -> None:
        loss, _ = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    torch.manual_seed(1)
    for _ in range(warmup):
        step()
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        t = time.process_time()
        step()
        times.append(time.process_time() - t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms": 1e3 * statistics.median(times), "faults": faults / steps, "params": digest.hexdigest()[:12], "batch": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="supair,air", help="comma-separated: supair, air")
    p.add_argument("--dataset", default="multi-mnist")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--allocators", default="default,keep", help="comma-separated: default, keep")
    p.add_argument("--baseline", default=None, help="another checkout whose code is timed alike")
    p.add_argument("--out", default=None, help="markdown file to write the table to")
    p.add_argument("--worker", nargs=3, metavar=("ROOT", "MODEL", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.dataset, args.threads, args.warmup, args.steps)))
        return 0
    models = [m for m in args.models.split(",") if m]
    allocators = [a for a in args.allocators.split(",") if a]
    for m in models:
        if m not in ("supair", "air"):
            raise SystemExit(f"--models: unknown model {m!r} (supair, air)")
    for a in allocators:
        if a not in ALLOCATORS:
            raise SystemExit(f"--allocators: unknown {a!r} ({', '.join(ALLOCATORS)})")
    if min(args.rounds, args.steps, args.threads) < 1 or args.warmup < 0:
        raise SystemExit("--rounds, --steps and --threads must be >= 1, --warmup >= 0")
    codes = {"this": str(ROOT)}
    if args.baseline:
        base = Path(args.baseline).resolve()
        if not (base / "apps" / "supair" / "train.py").is_file():
            raise SystemExit(f"--baseline {base} is not a checkout of this project (no apps/supair/train.py)")
        codes = {"baseline": str(base), **codes}
    variants = [(m, c, a) for m in models for c in codes for a in allocators]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results: dict[tuple, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        shift = r % len(variants)  # each round starts one variant later: no variant always runs first or after the same one
        for v in variants[shift:] + variants[:shift]:
            m, c, a = v
            cmd = [sys.executable, __file__, "--worker", codes[c], m, a, "--dataset", args.dataset,
                   "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"variant {v} failed (exit {out.returncode})")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(res)
            print(f"round {r + 1}: {m:6s} {c:8s} {a:7s} {res['ms']:7.2f} ms  {res['faults']:7.1f} faults/step  params {res['params']}", flush=True)
    import torch  # for the version only

    lines = [
        f"Training-step time, {args.dataset}, trainer defaults, {args.threads} thread(s), fused Adam; "
        f"per variant {args.rounds} processes (alternated), each the median of {args.steps} steps after {args.warmup}; "
        f"torch {torch.__version__}. Command: `python benchmarks/step_time.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "| model | batch | code | allocator | step ms (median of processes) | min - max | faults / step | params after warm-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        ms = [r["ms"] for r in results[v]]
        hashes = sorted({r["params"] for r in results[v]})
        lines.append(f"| {v[0]} | {results[v][0]['batch']} | {v[1]} | {v[2]} | {statistics.median(ms):.2f} | {min(ms):.2f} - {max(ms):.2f} | "
                     f"{statistics.median(r['faults'] for r in results[v]):.0f} | {', '.join(hashes)} |")
    lines += ["", "Ratios (median step time against the first variant of the same model):", ""]
    for m in models:
        first = [v for v in variants if v[0] == m][0]
        ref = statistics.median(r["ms"] for r in results[first])
        for v in variants:
            if v[0] == m and v != first:
                lines.append(f"- {m}: {v[1]}/{v[2]} against {first[1]}/{first[2]}: "
                             f"{statistics.median(r['ms'] for r in results[v]) / ref:.3f}x")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        from spnkit.io import atomic_write

        atomic_write(Path(args.out), text.encode())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
