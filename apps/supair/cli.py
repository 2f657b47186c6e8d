"""The ``supair`` command line: ``supair train``, ``supair detect``, ``supair show``.

Every bad input is answered with one line on stderr (``supair: error: ...``,
or ``supair train: error: ...`` for a flag argparse refuses) and exit status 2,
before anything is written; flags, ``--set`` values and run folders are checked
before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .names import DATASETS, MAX_OBJECTS, MAX_SHOW_IMAGES

__all__ = ["main", "build_parser", "config_from_args"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _number(low: float, strict: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {low:g}, got {text}")
        return value

    return parse


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train SuPAIR (or AIR) and log count accuracy, IoU and ELBO")
    p.add_argument("--model", choices=("supair", "air"), help="model to train (default: supair)")
    p.add_argument("--dataset", choices=DATASETS, help="built-in data set (default: multi-mnist)")
    p.add_argument("--data", metavar="PATH", help="your own images: a folder of PNG/JPEG files or an .npz with 'images' (and optionally 'counts', 'boxes')")
    p.add_argument("--steps", type=_integer(0), help="stop after this many steps")
    p.add_argument("--minutes", type=_number(0), help="stop after this much training wall time (default 10 when no other budget is given)")
    p.add_argument("--cpu-minutes", type=_number(0), help="stop after this much training CPU time (process time spent in training steps)")
    p.add_argument("--eval-seconds", type=_number(0, strict=True), help="evaluate every this many training CPU seconds (instead of --eval-every steps)")
    p.add_argument("--batch-size", type=_integer(1))
    p.add_argument("--lr", type=_number(0, strict=True), help="Adam learning rate")
    p.add_argument("--eval-every", type=_integer(1), help="evaluate every N steps")
    p.add_argument("--checkpoint-every", type=_integer(1), help="checkpoint every N steps")
    p.add_argument("--train-images", type=_integer(1), help="number of generated training scenes")
    p.add_argument("--test-images", type=_integer(1), help="held-out scenes used at each evaluation")
    p.add_argument("--seed", type=_integer(0))
    p.add_argument("--threads", type=_integer(1), help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder of a new run (default: runs/<dataset>-<model>-<time>-<random>)")
    p.add_argument("--overwrite", action="store_true", help="start the new run even if --out holds an earlier run (whose files are replaced) or other files")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with the configuration of its checkpoint")
    p.add_argument("--no-background-model", action="store_true", help="fixed Normal background instead of the background SPN (the paper's ablation)")
    p.add_argument("--structure", choices=("random", "poon-domingos"), help="region graph of both SPNs")
    p.add_argument("--max-steps", type=_integer(1), help="N_max, the most objects per image")
    p.add_argument("--glimpse-size", type=_integer(1))
    p.add_argument("--colour", action="store_true", help="RGB scenes (sprites in colour, or RGB user images)")
    p.add_argument("--encoder", choices=("flat", "cnn", "spatial"), help="image encoder of the inference network")
    p.add_argument("--detect-steps", type=_integer(1, MAX_OBJECTS),
                   help="attention steps when detecting (evaluation, detect, show); default --max-steps")
    p.add_argument("--objects", nargs=2, type=_integer(0, MAX_OBJECTS), metavar=("LEAST", "MOST"),
                   help="objects per generated training scene (default: the data set's)")
    p.add_argument("--test-objects", nargs=2, type=_integer(0, MAX_OBJECTS), metavar=("LEAST", "MOST"),
                   help="objects per held-out scene (default: as --objects)")
    p.add_argument("--object-size", nargs=2, type=_number(0, strict=True), metavar=("MIN", "MAX"),
                   help="box width range in pixels (default for --data: chosen from a look at the images; else the data set's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set model.prior.count_rate=1.0 (JSON values)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def config_from_args(args: argparse.Namespace, saved=None):
    """The run configuration: defaults, the model's and data set's defaults, then the flags.

    With ``saved`` (the config of a run being resumed) only the flags given
    explicitly change it; a model option that differs is refused by the Trainer.
    A ``--set`` value is read as JSON; one that is not JSON is taken as a
    string, which only a string field accepts (every value is checked against
    its field's type).
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
        "threads": "train.threads", "cpu_minutes": "train.cpu_minutes", "eval_seconds": "train.eval_cpu_seconds",
        "max_steps": "model.max_steps", "glimpse_size": "model.glimpse_size",
        "encoder": "model.inference.encoder", "detect_steps": "model.inference.detect_steps",
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
    for flag, key in (("objects", "train.objects"), ("test_objects", "train.test_objects"), ("object_size", "model.inference.object_size")):
        if getattr(args, flag) is not None:
            changes[key] = list(getattr(args, flag))
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


def _checkpoint_config(run_dir: str):
    """The configuration stored in the checkpoint of the run in ``run_dir`` (the base of a resumed run's)."""
    from .checkpoint import config_of, load_checkpoint
    from .rundir import check_resumable

    path = check_resumable(run_dir)
    return config_of(load_checkpoint(path), path)


def _check_train_flags(args: argparse.Namespace) -> None:
    if args.resume is not None and args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--out {args.out} and --resume {args.resume}: a resumed run stays in its own folder; "
                         "drop --out (or drop --resume to start a new run in --out)")
    if args.resume is not None and args.overwrite:
        raise ValueError("--overwrite starts a new run; it cannot be combined with --resume")


def _check_config_json(run_dir: str) -> None:
    """A resumed run's config.json: valid JSON with fields of the right types (its agreement with the checkpoint is checked later)."""
    from .config import SupairConfig

    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    try:
        SupairConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it, or delete it and it is written anew from the checkpoint") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _train(args: argparse.Namespace) -> int:
    from .images import check_image_source
    from .rundir import check_new_run, check_resumable, default_run_dir
    from .runtime import check_device

    _check_train_flags(args)
    if args.resume:  # what can be checked without torch first: a bad input is answered at once
        check_resumable(args.resume)
        _check_config_json(args.resume)
        if args.data is not None:
            check_image_source(args.data)
        device = check_device(args.device)
        cfg = config_from_args(args, _checkpoint_config(args.resume))
        run_dir = Path(args.resume)
    else:
        cfg = config_from_args(args)
        if cfg.train.data_path is not None:
            check_image_source(cfg.train.data_path)
        source = cfg.train.dataset if not cfg.train.data_path else "custom"
        run_dir = Path(args.out) if args.out else default_run_dir(source, cfg.model_type)
        check_new_run(run_dir, args.overwrite)
        device = check_device(args.device)

    from .distributed import init_from_env
    from .train import Trainer

    dist = init_from_env(device)  # under torchrun: data-parallel over the launched processes
    try:
        main_process = dist is None or dist.is_main
        if dist is not None and not args.resume:
            run_dir = dist.broadcast(run_dir)  # rank 0 names the folder
        with Trainer(cfg, run_dir, device=device if dist is None else dist.device, resume=bool(args.resume),
                     progress=not args.no_progress, log=_err if main_process else _quiet, dist=dist,
                     overwrite=args.overwrite) as trainer:
            rows = trainer.run()
    finally:
        if dist is not None:
            dist.close()
    if not main_process:
        return 0
    if not rows:
        print(f"run folder: {run_dir}\nalready finished at step {trainer.step}; nothing was trained")
        return 0
    last = rows[-1]
    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
    print(f"run folder: {run_dir}\nlast evaluation: {summary}")
    return 0


def _add_detect(sub) -> None:
    p = sub.add_parser("detect", help="count and locate objects in images with a trained model")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG; 8 or 16 bits, grey, RGB, with or without alpha)")
    p.add_argument("--out", metavar="DIR", help="also write a PNG per image with the boxes drawn (named after the image and a hash of its path)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--max-steps", type=_integer(1, MAX_OBJECTS), help="attention steps, the most objects counted per image (default: the run's)")
    p.set_defaults(func=_detect)


def _detect(args: argparse.Namespace) -> int:
    from .detect import check_detect_request, detect_files
    from .rundir import resolve_checkpoint
    from .runtime import check_device

    resolve_checkpoint(args.checkpoint)
    check_detect_request(args.images, args.out)
    device = check_device(args.device)
    results = detect_files(args.checkpoint, args.images, out_dir=args.out, device=device, log=_err, max_steps=args.max_steps)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="figure: inputs, detections, reconstructions and amodal completions")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--out", metavar="FILE", help="PNG to write (default: show.png in the run folder)")
    p.add_argument("--num-images", type=_integer(1, MAX_SHOW_IMAGES), default=8, help=f"columns of the figure (at most {MAX_SHOW_IMAGES})")
    p.add_argument("--data", metavar="PATH", help="images to show instead of the run's test set")
    p.add_argument("--seed", type=_integer(0), default=0)
    p.add_argument("--max-steps", type=_integer(1, MAX_OBJECTS), help="attention steps, the most objects counted per image (default: the run's)")
    p.add_argument("--glimpses", type=_integer(1, MAX_OBJECTS), help="rows of glimpses and completions: the first K objects (default: up to 3)")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from .show import check_show_request, show_figure

    check_show_request(args.checkpoint, args.out, args.num_images)
    path = show_figure(args.checkpoint, out=args.out, num_images=args.num_images, data=args.data, seed=args.seed, log=_err,
                       max_steps=args.max_steps, glimpses=args.glimpses)
    print(path)
    return 0


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _quiet(msg: str) -> None:
    """Messages of processes other than rank 0 under torchrun (rank 0 says the same)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="supair", description="SuPAIR: unsupervised object detection with sum-product networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
        return _fail(str(err))
    except OSError as err:  # a full disk, a read-only or vanished folder
        from .files import describe_os_error

        return _fail(describe_os_error(err))
    except KeyboardInterrupt:
        print("supair: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    """One line on stderr, exit status 2."""
    line = " ".join(message.split())  # messages that quote other tools' errors may span lines
    print(f"supair: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
