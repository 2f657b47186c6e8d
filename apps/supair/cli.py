"""The ``supair`` command line: ``supair train``, ``supair detect``, ``supair show``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "config_from_args"]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train SuPAIR (or AIR) and log count accuracy, IoU and ELBO")
    p.add_argument("--model", choices=("supair", "air"), help="model to train (default: supair)")
    p.add_argument("--dataset", choices=("multi-mnist", "sprites", "noisy-mnist", "grid-mnist"), help="built-in data set (default: multi-mnist)")
    p.add_argument("--data", metavar="PATH", help="your own images: a folder of PNG/JPEG files or an .npz with 'images' (and optionally 'counts', 'boxes')")
    p.add_argument("--steps", type=int, help="stop after this many steps")
    p.add_argument("--minutes", type=float, help="stop after this much training wall time (default 10 when no other budget is given)")
    p.add_argument("--cpu-minutes", type=float, help="stop after this much training CPU time (process time spent in training steps)")
    p.add_argument("--eval-seconds", type=float, help="evaluate every this many training CPU seconds (instead of --eval-every steps)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps")
    p.add_argument("--train-images", type=int, help="number of generated training scenes")
    p.add_argument("--test-images", type=int, help="held-out scenes used at each evaluation")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--no-background-model", action="store_true", help="fixed Normal background instead of the background SPN (the paper's ablation)")
    p.add_argument("--structure", choices=("random", "poon-domingos"), help="region graph of both SPNs")
    p.add_argument("--max-steps", type=int, help="N_max, the most objects per image")
    p.add_argument("--glimpse-size", type=int)
    p.add_argument("--colour", action="store_true", help="RGB scenes (sprites in colour, or RGB user images)")
    p.add_argument("--encoder", choices=("flat", "cnn"), help="image encoder of the inference network")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field, e.g. --set model.prior.count_rate=1.0 (JSON values)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def config_from_args(args: argparse.Namespace, saved=None):
    """The run configuration: defaults, the model's and data set's defaults, then the flags.

    With ``saved`` (the config of a run being resumed) only the flags given
    explicitly change it; a model option that differs is refused by the Trainer.
    """
    from .config import SupairConfig

    changes: dict = {}
    if saved is None:
        base = SupairConfig.preset(args.dataset or "multi-mnist", args.model or "supair", user_data=args.data is not None)
    else:
        base = saved
        if args.model is not None:
            changes["model_type"] = args.model
        if args.dataset is not None:
            changes["train.dataset"] = args.dataset
    flag_map = {
        "data": "train.data_path", "steps": "train.steps", "minutes": "train.minutes", "batch_size": "train.batch_size",
        "lr": "train.learning_rate", "eval_every": "train.eval_every", "checkpoint_every": "train.checkpoint_every",
        "train_images": "train.train_images", "test_images": "train.test_images", "seed": "train.seed",
        "threads": "train.threads", "cpu_minutes": "train.cpu_minutes", "eval_seconds": "train.eval_cpu_seconds", "max_steps": "model.max_steps", "glimpse_size": "model.glimpse_size",
        "encoder": "model.inference.encoder",
    }
    for flag, key in flag_map.items():
        value = getattr(args, flag)
        if value is not None:
            changes[key] = value
    if saved is None and args.steps is None and args.minutes is None and args.cpu_minutes is None:
        changes["train.minutes"] = 10.0
    elif args.steps is not None or args.minutes is not None or args.cpu_minutes is not None:
        # a new budget replaces the old one on resume
        for key, flag in (("train.steps", "steps"), ("train.minutes", "minutes"), ("train.cpu_minutes", "cpu_minutes")):
            changes.setdefault(key, getattr(args, flag))
    if args.no_background_model:
        changes["model.background_model"] = False
    if args.structure:
        changes["model.object_spn.structure"] = args.structure
        changes["model.background_spn.structure"] = args.structure
    if args.colour:
        changes["model.channels"] = 3
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    top = {k: changes.pop(k) for k in list(changes) if "." not in k}
    cfg = SupairConfig(model=base.model, train=base.train, model_type=top.pop("model_type", base.model_type))
    if top:
        raise ValueError(f"unknown config fields {sorted(top)}")
    return cfg.replace(**changes)


def _saved_config(run_dir: str):
    from .config import SupairConfig

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no run to resume (no config.json)")
    try:
        return SupairConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _train(args: argparse.Namespace) -> int:
    from .distributed import init_from_env
    from .train import Trainer

    cfg = config_from_args(args, _saved_config(args.resume) if args.resume else None)
    dist = init_from_env(args.device)  # under torchrun: data-parallel over the launched processes
    try:
        main_process = dist is None or dist.is_main
        if args.resume:
            run_dir = Path(args.resume)
        else:
            run_dir = Path(args.out or f"runs/{cfg.train.dataset if not cfg.train.data_path else 'custom'}-{cfg.model_type}-{time.strftime('%Y%m%d-%H%M%S')}")
            if dist is not None:
                run_dir = dist.broadcast(run_dir)  # rank 0's clock names the folder
            if (run_dir / "checkpoint.pt").exists():
                raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        trainer = Trainer(cfg, run_dir, device=args.device if dist is None else dist.device, resume=bool(args.resume),
                          progress=not args.no_progress, log=_err if main_process else _quiet, dist=dist)
        rows = trainer.run()
    finally:
        if dist is not None:
            dist.close()
    if not main_process:
        return 0
    last = rows[-1]
    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
    print(f"run folder: {run_dir}\nlast evaluation: {summary}")
    return 0


def _add_detect(sub) -> None:
    p = sub.add_parser("detect", help="count and locate objects in images with a trained model")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG)")
    p.add_argument("--out", metavar="DIR", help="also write a PNG per image with the boxes drawn")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_detect)


def _detect(args: argparse.Namespace) -> int:
    from .detect import detect_files

    results = detect_files(args.checkpoint, args.images, out_dir=args.out, device=args.device, log=_err)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="figure: inputs, detections, reconstructions and amodal completions")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--out", metavar="FILE", help="PNG to write (default: show.png in the run folder)")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--data", metavar="PATH", help="images to show instead of the run's test set")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from .show import show_figure

    path = show_figure(args.checkpoint, out=args.out, num_images=args.num_images, data=args.data, seed=args.seed, log=_err)
    print(path)
    return 0


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _quiet(msg: str) -> None:
    """Messages of processes other than rank 0 under torchrun (rank 0 says the same)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supair", description="SuPAIR: unsupervised object detection with sum-product networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_detect(sub)
    _add_show(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["train"])  # `supair` alone runs the main job
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"supair: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
