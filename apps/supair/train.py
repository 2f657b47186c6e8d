"""Training harness shared by SuPAIR and AIR: data, loop, evaluation, checkpoints, resume.

A run folder holds ``config.json``, ``checkpoint.pt`` and ``metrics.jsonl`` (one
JSON object per evaluation), each written atomically. A run killed at any moment
loses at most the steps since its last checkpoint; ``resume`` continues with
optimizer state, step counter, clocks and metrics log intact, and its
configuration is the checkpoint's (``config.json`` must agree with it).

Everything a run needs is checked before anything is written: the folder
(:mod:`supair.rundir`), the configuration, the checkpoint, the data and the
model. Then the trainer takes the folder's lock, which it holds until it ends,
and writes: ``config.json``, and on resume ``metrics.jsonl`` cut back to the
checkpoint's step. A resumed run that has already spent its budget does nothing.

Under torchrun the Trainer gets a :class:`~supair.distributed.DataParallel`
(``dist``): each process trains on its shard of every global batch through DDP,
evaluates a shard of the test set, and rank 0 alone writes the run folder. The
files are the same as a single process writes, so runs resume either way.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import build_model, build_stored_model, config_of, load_checkpoint, load_state, save_checkpoint, upgrade_optimizer_state
from .config import SupairConfig
from .data import SceneSet, load_dataset, load_user_images
from .data.objectsize import REFERENCE_CONTRAST, estimate_object_size, variance_scale
from .evaluation import evaluate
from .files import atomic_write
from .names import DATASET_DEFAULTS
from .rundir import CONFIG, RunLock, check_config_json, check_new_run, check_resumable, clear_run_files, remove_run_temporaries
from .runtime import keep_freed_memory

if TYPE_CHECKING:
    from .distributed import DataParallel

__all__ = ["load_data", "test_scenes", "Trainer", "DATA_SEED"]

DATA_SEED = 0  # built-in data sets are the same for every training seed


def load_data(cfg: SupairConfig, log: Callable[[str], None] = print) -> tuple[SceneSet, SceneSet | None]:
    """Training and held-out scenes for ``cfg`` (built-in data set or the user's images)."""
    m, t = cfg.model, cfg.train
    if t.data_path is not None:
        train, test = load_user_images(t.data_path, scene_size=m.scene_size, channels=m.channels, seed=DATA_SEED, log=log)
        if test is not None:
            test = test.subset(slice(0, t.test_images))
        return train, test
    objects = t.objects or DATASET_DEFAULTS[t.dataset][1]
    train = load_dataset(t.dataset, "train", num_images=t.train_images, min_objects=objects[0], max_objects=objects[1],
                         scene_size=m.scene_size, colour=m.channels == 3, seed=DATA_SEED)
    return train, test_scenes(cfg, t.test_images)


def test_scenes(cfg: SupairConfig, num_images: int, layers: bool = False) -> SceneSet:
    """The first ``num_images`` held-out scenes of ``cfg``'s built-in data set (``train.test_objects`` objects each)."""
    t = cfg.train
    least, most = t.test_objects or t.objects or DATASET_DEFAULTS[t.dataset][1]
    return load_dataset(t.dataset, "test", num_images=num_images, min_objects=least, max_objects=most, layers=layers,
                        scene_size=cfg.model.scene_size, colour=cfg.model.channels == 3, seed=DATA_SEED)


@dataclass
class _Clock:
    """Training time: wall seconds and process CPU seconds spent in training steps only."""

    wall: float = 0.0
    cpu: float = 0.0


class Trainer:
    """Trains one run; evaluation time is excluded from the training clocks.

    Construction checks, then writes. It runs seven named steps:
    :meth:`_reconcile_config` (a resumed run's checkpoint config against the
    requested one and ``config.json``), :meth:`_set_up_process` (threads,
    allocator, seed), :meth:`_load_data` (training and held-out scenes),
    :meth:`_sized_to_data` (a new run on the user's images: the box sizes that
    cover their objects and the SPN variance scale of their contrast, unless given), :meth:`_build_model_and_optimizer`
    (and the loss, sharded under torchrun), :meth:`_restore` (checkpoint state
    on resume) and :meth:`_prepare_folder` (the lock, then the first writes). Any error before the last step leaves
    the disk as it was. The lock is released by :meth:`close`, at the end of
    :meth:`run`, or when the process ends.

    Args:
        cfg: the run's configuration (on resume: the checkpoint's with the requested changes).
        run_dir: the run folder (created if missing).
        device: torch device string.
        resume: continue the run in ``run_dir`` from its checkpoint.
        progress: show a tqdm progress bar.
        log: where one-line messages go.
        dist: the process group under torchrun (None: a single process).
        overwrite: a new run may start in a folder that holds an earlier run or other files
            (the earlier run's files are deleted; other files are left alone).

    Raises:
        ValueError: the folder is in use or holds something else, the checkpoint or
            ``config.json`` does not fit, or the config or data are invalid.
    """

    _next_eval_cpu: float  # process CPU seconds at which the next evaluation is due

    def __init__(self, cfg: SupairConfig, run_dir: str | Path, device: str = "cpu", resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print, dist: DataParallel | None = None,
                 overwrite: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.device = device
        self.dist = dist
        self.is_main = dist is None or dist.is_main  # the process that writes files
        self.progress = progress and self.is_main
        self.log = log
        self._lock: RunLock | None = None
        try:
            self._open(cfg, resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _open(self, cfg: SupairConfig, resume: bool, overwrite: bool) -> None:
        ckpt = None
        if resume:
            path = check_resumable(self.run_dir)
            if self.is_main:
                self._lock = RunLock(self.run_dir)  # before reading: no other process moves the checkpoint on meanwhile
            ckpt = load_checkpoint(path)
        elif self.is_main:
            check_new_run(self.run_dir, overwrite)
        self.cfg = self._reconcile_config(cfg, ckpt)
        self.step = 0
        self.clock = _Clock()
        if ckpt is not None:
            self.step = int(ckpt["step"])
            self.clock = _Clock(float(ckpt["train_seconds"]), float(ckpt["cpu_seconds"]))
        self.finished = ckpt is not None and self._finished()
        if self.finished:
            return  # nothing to train: no model, no data, nothing written
        self._set_up_process()
        self._load_data()
        said: list[str] = []  # said once the folder is locked: a run refused for a busy folder prints one line
        if ckpt is None:
            self.cfg = self._sized_to_data(self.cfg, said.append)
        self._build_model_and_optimizer(ckpt)
        if ckpt is not None:
            self._restore(ckpt)
        # the loss: model.loss, or under torchrun this process's shard of it through DDP
        self._loss = self.model.loss if self.dist is None else self.dist.wrap(self.model)
        self._prepare_folder(ckpt, overwrite)
        for line in said:
            self.log(line)

    def close(self) -> None:
        """Release the run folder's lock (the trainer writes nothing more)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reconcile_config(self, cfg: SupairConfig, ckpt: dict[str, Any] | None) -> SupairConfig:
        """The validated config of this run: on resume, the checkpoint's model with the requested training settings."""
        self._saved_cfg: SupairConfig | None = None
        if ckpt is not None:
            saved = config_of(ckpt, self.run_dir / "checkpoint.pt")
            if saved.model.with_detection(cfg.model) != cfg.model or saved.model_type != cfg.model_type:
                raise ValueError(f"{self.run_dir} was trained with another model config; resume without model options "
                                 "(the detection search's may change) or start a new run")
            cfg = SupairConfig(model=saved.model.with_detection(cfg.model), train=cfg.train, model_type=saved.model_type)
            self._saved_cfg = saved
        cfg = cfg.assert_valid()
        if ckpt is not None and self.is_main:
            check_config_json(self.run_dir / CONFIG, ckpt["config"], cfg)
        if self.dist is not None:
            self.dist.per_process_batch(cfg.train.batch_size)  # ValueError unless it divides
        return cfg

    def _set_up_process(self) -> None:
        """Threads, the allocator and the global seed."""
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        if torch.device(self.device).type == "cpu":
            keep_freed_memory()  # a step's temporaries reuse mapped pages: 0.95x SuPAIR's step, 0.94x AIR's (supair.runtime)
        torch.manual_seed(self.cfg.train.seed)

    def _build_model_and_optimizer(self, ckpt: dict[str, Any] | None = None) -> None:
        cfg, device = self.cfg, self.device
        # a resumed run's model is built within a budget set by its checkpoint's tensors
        model = build_model(cfg) if ckpt is None else build_stored_model(cfg, ckpt, self.run_dir / "checkpoint.pt")
        self.model = model.to(device)
        groups = getattr(self.model, "param_groups", None)  # a model may set per-group rates (AIR's baseline)
        params = groups(cfg.train.learning_rate) if callable(groups) else self.model.parameters()
        # fused: one kernel over all parameters (2.3 against 6.0 ms a step for SuPAIR's 3.2M parameters, one thread)
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.learning_rate, fused=torch.device(device).type in ("cpu", "cuda"))
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.batch_gen = torch.Generator().manual_seed(cfg.train.seed)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Model, optimizer, step, clocks and random generators from a checkpoint; metrics rows after it are dropped."""
        load_state(self.model, ckpt["model"], self.run_dir)
        self.optimizer.load_state_dict(upgrade_optimizer_state(self.model, ckpt["model"], ckpt["optimizer"]))
        for g, base in zip(self.optimizer.param_groups, self._base_lrs):
            g["lr"] = base  # the schedule sets each step's rate from the budget used
        self.step = int(ckpt["step"])
        self.clock = _Clock(float(ckpt["train_seconds"]), float(ckpt["cpu_seconds"]))
        try:
            self.batch_gen.set_state(ckpt["batch_rng"])
            torch.set_rng_state(ckpt["torch_rng"])
        except RuntimeError as err:
            raise ValueError(f"{self.run_dir / 'checkpoint.pt'} is damaged: a random generator state does not fit ({err})") from None

    def _load_data(self) -> None:
        """Training and held-out scenes (rank 0 first under torchrun: it builds the cache)."""
        cfg = self.cfg
        if self.dist is None:
            self.train_set, self.test_set = load_data(cfg, log=self.log)
        else:
            self.train_set, self.test_set = self.dist.main_first(lambda: load_data(cfg, log=self.log))
        self._check_data(self.train_set)

    def _sized_to_data(self, cfg: SupairConfig, say: Callable[[str], None]) -> SupairConfig:
        """A new run on the user's images: the box size range and SPN variance scale their objects need, unless given (told to ``say``)."""
        icfg = cfg.model.inference
        need_size, need_scale = icfg.object_size is None, cfg.model.variance_scale is None
        if cfg.train.data_path is None or cfg.model_type != "supair" or not (need_size or need_scale):
            return cfg
        size = estimate_object_size(self.train_set, ratio_max=icfg.ratio_range[1])
        if size is None:
            if need_size:
                lo, hi = (r * cfg.model.glimpse_size for r in icfg.scale_range)
                say(f"object size: found no objects to measure in the images; boxes {lo:.1f} to {hi:.1f} px wide "
                    "(the default; --object-size MIN MAX sets it)")
            return cfg
        changes: dict[str, object] = {}
        if need_size:
            say(size.describe())
            changes["model.inference.object_size"] = (size.least, size.most)
        if need_scale:
            scale = round(variance_scale(size.contrast), 3)
            say(f"contrast: objects stand out of their background by {size.contrast:.2f} (median; multi-MNIST {REFERENCE_CONTRAST:.2f}): "
                f"SPN variance bounds scaled by {scale:.3f} (--set model.variance_scale=1 keeps the preset's)")
            changes["model.variance_scale"] = scale
        return cfg.replace(**changes)

    def _finished(self) -> bool:
        """Whether the resumed run has spent its budget and recorded its final evaluation (the same answer in every process)."""
        return self._spent() and self._last_metrics_step() == self.step

    def _prepare_folder(self, ckpt: dict[str, Any] | None, overwrite: bool) -> None:
        """Lock the folder (a new run's), remove what killed writers left, and write the run's first files."""
        if not self.is_main:
            return
        if ckpt is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.run_dir)
            check_new_run(self.run_dir, overwrite)  # again, holding the lock: nobody started a run here meanwhile
            remove_run_temporaries(self.run_dir)
            if overwrite:
                clear_run_files(self.run_dir)
        else:
            remove_run_temporaries(self.run_dir)
            self._truncate_metrics(self.step)
            if self.cfg != self._saved_cfg:
                self.checkpoint()  # the same state with the new settings: config.json and checkpoint agree
            self.log(f"resumed {self.run_dir} at step {self.step}")
        text = self.cfg.to_json()
        path = self.run_dir / CONFIG
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text.encode())

    def _last_metrics_step(self) -> int | None:
        rows = self._metrics_rows()
        return rows[-1][0] if rows else None

    def _metrics_rows(self) -> list[tuple[int, str]]:
        """``(step, line)`` of each complete row of metrics.jsonl (a line cut by a kill is skipped)."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if isinstance(step, int):
                rows.append((step, line))
        return rows

    def _check_data(self, data: SceneSet) -> None:
        m = self.cfg.model
        shape = tuple(data.images.shape[1:])
        if shape != (m.channels, m.scene_size, m.scene_size):
            raise ValueError(f"data has images of shape {shape}; the model expects {(m.channels, m.scene_size, m.scene_size)}")

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric rows written after the checkpoint (a run killed between evaluation and checkpoint), and cut lines."""
        if not self.metrics_path.exists():
            return
        text = "".join(line + "\n" for s, line in self._metrics_rows() if s <= step)
        if text != self.metrics_path.read_text():
            atomic_write(self.metrics_path, text.encode())

    def checkpoint(self) -> None:
        if not self.is_main:
            return
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "train_seconds": self.clock.wall,
            "cpu_seconds": self.clock.cpu,
            "batch_rng": self.batch_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        })

    def evaluate(self) -> dict:
        row: dict = {"step": self.step, "train_seconds": round(self.clock.wall, 3), "cpu_seconds": round(self.clock.cpu, 3)}
        if self.test_set is not None:
            if self.dist is None:
                row.update(evaluate(self.model, self.test_set, device=self.device))
            else:
                row.update(self.dist.evaluate(self.model, self.test_set, device=self.device))
        if self.is_main:
            old = self.metrics_path.read_text() if self.metrics_path.exists() else ""
            atomic_write(self.metrics_path, (old + json.dumps(row) + "\n").encode())
        return row

    def train_step(self) -> float:
        t = self.cfg.train
        idx = torch.randint(len(self.train_set), (t.batch_size,), generator=self.batch_gen)
        if self.dist is not None:
            idx = self.dist.shard(idx)  # this process's rows of the global batch
        x = self.train_set.float_batch(idx).to(self.device)
        if t.lr_decay_to < 1:
            self._set_learning_rate()
        wall, cpu = time.perf_counter(), time.process_time()
        loss, stats = self._loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # the one host sync per step, for logging (under torchrun: the global batch's mean)
        elbo = float(stats["elbo"]) if self.dist is None else self.dist.mean(stats["elbo"])
        self.clock.wall += time.perf_counter() - wall
        self.clock.cpu += time.process_time() - cpu
        self.step += 1
        return elbo

    def budget_used(self) -> float:
        """Fraction of the training budget spent, in [0, 1]: the largest of steps, wall and CPU minutes (0 without a budget)."""
        t = self.cfg.train
        used = 0.0
        if t.steps:
            used = max(used, self.step / t.steps)
        if t.minutes:
            used = max(used, self.clock.wall / (60 * t.minutes))
        if t.cpu_minutes:
            used = max(used, self.clock.cpu / (60 * t.cpu_minutes))
        return min(used, 1.0)

    def _set_learning_rate(self) -> None:
        """Cosine decay from the configured rates to ``lr_decay_to`` times them at the end of the budget."""
        used = self.budget_used()
        if self.dist is not None:
            used = self.dist.broadcast(used)  # the processes' clocks differ: rank 0's decides, so the replicas agree
        end = self.cfg.train.lr_decay_to
        factor = end + (1 - end) * 0.5 * (1 + math.cos(math.pi * used))
        for g, base in zip(self.optimizer.param_groups, self._base_lrs):
            g["lr"] = base * factor

    def _spent(self) -> bool:
        """Whether this process's step counter or clocks have reached the budget."""
        t = self.cfg.train
        if t.steps is not None and self.step >= t.steps:
            return True
        out_of_time = t.minutes is not None and self.clock.wall >= 60 * t.minutes
        return out_of_time or (t.cpu_minutes is not None and self.clock.cpu >= 60 * t.cpu_minutes)

    def _done(self) -> bool:
        t = self.cfg.train
        if t.steps is not None and self.step >= t.steps:
            return True
        if self.dist is not None and (t.minutes is not None or t.cpu_minutes is not None):
            return self.dist.agree(self._spent())  # the processes' clocks differ: rank 0's decides for all
        return self._spent()

    def _eval_due(self) -> bool:
        """Every ``eval_every`` steps, or each time the CPU clock passes a multiple of ``eval_cpu_seconds``."""
        t = self.cfg.train
        if t.eval_cpu_seconds is None:
            return self.step % t.eval_every == 0
        due = self.clock.cpu >= self._next_eval_cpu
        if due:
            self._next_eval_cpu = (math.floor(self.clock.cpu / t.eval_cpu_seconds) + 1) * t.eval_cpu_seconds
        return due if self.dist is None else self.dist.agree(due)  # evaluation is collective: rank 0's clock decides

    def run(self) -> list[dict]:
        """Train until the step or time budget; returns the evaluations of this call (none for a finished run).

        The run folder's lock is released when it returns or raises.
        """
        try:
            if self.finished:
                self.log(f"{self.run_dir} has already finished: step {self.step}, {self._budget_text()}; nothing to do "
                         "(give a larger --steps, --minutes or --cpu-minutes to continue)")
                return []
            return self._train()
        finally:
            self.close()

    def _budget_text(self) -> str:
        t = self.cfg.train
        parts = [f"{v} {unit}" for v, unit in ((t.steps, "steps"), (t.minutes, "minutes"), (t.cpu_minutes, "CPU minutes")) if v is not None]
        return "budget " + (" or ".join(parts) if parts else "none")

    def _train(self) -> list[dict]:
        from tqdm.auto import tqdm

        t = self.cfg.train
        rows: list[dict] = []
        bar = tqdm(total=t.steps, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        last = {}
        elbo_avg = math.nan
        if t.eval_cpu_seconds is not None:
            self._next_eval_cpu = (math.floor(self.clock.cpu / t.eval_cpu_seconds) + 1) * t.eval_cpu_seconds
            if self.step == 0:
                last = self.evaluate()  # the untrained model: accuracy at time 0
                rows.append(last)
        try:
            while not self._done():
                elbo = self.train_step()
                elbo_avg = elbo if math.isnan(elbo_avg) else 0.9 * elbo_avg + 0.1 * elbo
                bar.update(1)
                if self._eval_due():
                    last = self.evaluate()
                    rows.append(last)
                if self.step % t.checkpoint_every == 0:
                    self.checkpoint()
                ips = self.step * t.batch_size / max(self.clock.wall, 1e-9)
                bar.set_postfix(elbo=f"{elbo_avg:.1f}", acc=f"{last.get('count_accuracy') or math.nan:.3f}", img_s=f"{ips:.0f}")
        except KeyboardInterrupt:
            if self.dist is not None:  # the other processes may be inside a collective: no final evaluation
                self.log("interrupted: resume from the last checkpoint")
                raise
            self.log("interrupted: saving a checkpoint")
        finally:
            bar.close()
        if not rows or rows[-1]["step"] != self.step:
            rows.append(self.evaluate())
        self.checkpoint()
        return rows
