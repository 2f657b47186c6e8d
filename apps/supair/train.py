"""Training harness shared by SuPAIR and AIR: data, loop, evaluation, checkpoints, resume.

A run folder holds ``config.json``, ``checkpoint.pt`` (written atomically) and
``metrics.jsonl`` (one JSON object per evaluation). A run killed at any moment
loses at most the steps since its last checkpoint; ``resume`` continues with
optimizer state, step counter, clocks and metrics log intact.

Under torchrun the Trainer gets a :class:`~apps.supair.distributed.DataParallel`
(``dist``): each process trains on its shard of every global batch through DDP,
evaluates a shard of the test set, and rank 0 alone writes the run folder. The
files are the same as a single process writes, so runs resume either way.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from spnkit.io import atomic_write
from spnkit.system import keep_freed_memory

from .config import SupairConfig
from .data import SceneSet, load_dataset, load_user_images
from .metrics import count_accuracy, matched_iou

if TYPE_CHECKING:
    from .distributed import DataParallel

__all__ = ["build_model", "load_data", "Trainer", "save_checkpoint", "load_checkpoint", "load_model", "evaluate", "summarize"]

CHECKPOINT_FORMAT = 1
DATA_SEED = 0  # built-in data sets are the same for every training seed


def build_model(cfg: SupairConfig) -> nn.Module:
    """The model named by ``cfg.model_type``, with its seeded structure."""
    if cfg.model_type == "air":
        from .air import Air

        return Air(cfg.model)
    from .model import Supair

    return Supair(cfg.model, seed=cfg.train.seed)


def load_data(cfg: SupairConfig, log: Callable[[str], None] = print) -> tuple[SceneSet, SceneSet | None]:
    """Training and held-out scenes for ``cfg`` (built-in data set or the user's images)."""
    m, t = cfg.model, cfg.train
    if t.data_path is not None:
        train, test = load_user_images(t.data_path, scene_size=m.scene_size, channels=m.channels, seed=DATA_SEED, log=log)
        if test is not None:
            test = test.subset(slice(0, t.test_images))
        return train, test
    common = dict(scene_size=m.scene_size, colour=m.channels == 3, seed=DATA_SEED)
    train = load_dataset(t.dataset, "train", num_images=t.train_images, **common)
    test = load_dataset(t.dataset, "test", num_images=t.test_images, **common)
    return train, test


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (tensors and plain values only; no pickled code).

    Raises:
        ValueError: if the file is missing, truncated, or not a checkpoint of this harness.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise many types
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "config" not in ckpt:
        raise ValueError(f"{path} is not a SuPAIR/AIR checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, SupairConfig]:
    """The trained model and its config from a checkpoint file or run folder."""
    ckpt = load_checkpoint(path)
    cfg = SupairConfig.from_dict(ckpt["config"])
    model = build_model(cfg)
    _load_state(model, ckpt["model"], path)
    return model.to(device).eval(), cfg


def _load_state(model: nn.Module, state: dict, path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the model built from its config: {str(err).splitlines()[0]}") from None


def upgrade_optimizer_state(model: nn.Module, saved_model: dict, saved_optimizer: dict) -> dict:
    """The optimizer state of a checkpoint saved by an older parameter layout of ``model``, fitted to the current one.

    Optimizer state is keyed by parameter position; the checkpoint's parameter
    names (its model state without the persistent buffers) say which parameter
    each position was. Each per-parameter field (Adam's moments) is rewritten by
    ``model.upgrade_state`` as the parameters themselves were, then re-keyed by
    the current positions. Unchanged layouts are returned as they are.
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = set(model.state_dict()) - set(names)
    old_names = [k for k in saved_model if k not in buffers]
    upgrade = getattr(model, "upgrade_state", None)
    if old_names == names or upgrade is None:
        return saved_optimizer
    saved = {old_names[int(i)]: s for i, s in saved_optimizer["state"].items()}  # by parameter name
    by_field: dict[str, dict] = {}  # field -> {name: tensor}, the shape model.upgrade_state rewrites
    for name, s in saved.items():
        for field, value in s.items():
            by_field.setdefault(field, {})[name] = value
    for tensors in by_field.values():
        upgrade(tensors)
    state = {}
    for j, name in enumerate(names):
        entry = {field: tensors[name] for field, tensors in by_field.items() if name in tensors}
        if entry:
            state[j] = entry
    position = {name: j for j, name in enumerate(names)}
    groups = [dict(g, params=[position[old_names[i]] for i in g["params"] if old_names[i] in position])
              for g in saved_optimizer["param_groups"]]
    return {"state": state, "param_groups": groups}


def searches(model: nn.Module) -> bool:
    """Whether ``model.detect`` refines the attention network's detections (SuPAIR's detection search)."""
    return hasattr(model, "detect_with_network") and len(model.search_offsets()) > 0


def detections(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Counts ``(B,)`` and boxes ``(B, N, 4)`` of ``model.detect``, and the attention network's own counts where a
    detection search refines them (SuPAIR with ``inference.search_radius > 0``; else None)."""
    if searches(model):
        inf, network = model.detect_with_network(x)
        return inf.count(), inf.boxes(), network.count()
    inf = model.detect(x)
    return inf.count(), inf.boxes(), None


@torch.no_grad()
def evaluate(model: nn.Module, test: SceneSet, batch_size: int = 500, elbo_images: int = 500, device: str = "cpu") -> dict[str, float]:
    """Count accuracy and box IoU on ``test``, and the mean ELBO on its first ``elbo_images``."""
    model.eval()
    counts, boxes, elbos, network = [], [], [], []
    for start in range(0, len(test), batch_size):  # batches of the held-out set
        x = test.float_batch(slice(start, start + batch_size)).to(device)
        count, box, net = detections(model, x)
        counts.append(count.cpu())
        boxes.append(box.cpu())
        if net is not None:
            network.append(net.cpu())
        if start < elbo_images:
            elbos.append(model.loss(x[: elbo_images - start])[1]["elbo"].cpu() * min(len(x), elbo_images - start))
    model.train()
    return summarize(torch.cat(counts), torch.cat(boxes), float(sum(elbos)), test, elbo_images,
                     torch.cat(network) if network else None)


def summarize(count: torch.Tensor, box: torch.Tensor, elbo_sum: float, test: SceneSet, elbo_images: int = 500,
              network_count: torch.Tensor | None = None) -> dict[str, float | None]:
    """The metrics of :func:`evaluate` from per-image detections of all of ``test`` (also used by the data-parallel evaluation).

    Args:
        count: ``(len(test),)`` predicted counts.
        box: ``(len(test), N, 4)`` predicted boxes ``(x0, y0, x1, y1)``.
        elbo_sum: the summed ELBO of the first ``elbo_images`` images.
        network_count: ``(len(test),)`` the attention network's counts before a detection search, or None.
    """
    out = {"elbo": elbo_sum / min(len(test), elbo_images)}
    # None (JSON null) where the data set cannot tell: no true counts or boxes, or no image counted right
    out["count_accuracy"] = count_accuracy(count, test.counts) if test.counts is not None else None
    iou = matched_iou(box, count, test.boxes, test.counts) if test.counts is not None and test.boxes is not None else math.nan
    out["iou"] = None if math.isnan(iou) else iou
    out["mean_count"] = float(count.float().mean())
    if network_count is not None and test.counts is not None:  # the attention network's count, before the detection search
        out["count_accuracy_network"] = count_accuracy(network_count, test.counts)
    return out


@dataclass
class _Clock:
    """Training time: wall seconds and process CPU seconds spent in training steps only."""

    wall: float = 0.0
    cpu: float = 0.0


class Trainer:
    """Trains one run; evaluation time is excluded from the training clocks.

    Args:
        cfg: the run's configuration.
        run_dir: the run folder (created if missing).
        device: torch device string.
        resume: continue the run in ``run_dir`` from its checkpoint.
        progress: show a tqdm progress bar.
        log: where one-line messages go.
        dist: the process group under torchrun (None: a single process).
    """

    def __init__(self, cfg: SupairConfig, run_dir: str | Path, device: str = "cpu", resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print, dist: DataParallel | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.device = device
        self.dist = dist
        self.is_main = dist is None or dist.is_main  # the process that writes files
        self.progress = progress and self.is_main
        self.log = log
        ckpt = None
        if resume:
            ckpt = load_checkpoint(self.run_dir / "checkpoint.pt")
            saved = SupairConfig.from_dict(ckpt["config"])
            if saved.model.with_detection(cfg.model) != cfg.model or saved.model_type != cfg.model_type:
                raise ValueError(f"{self.run_dir} was trained with another model config; resume without model options "
                                 "(the detection search's may change) or start a new run")
            cfg = SupairConfig(model=saved.model.with_detection(cfg.model), train=cfg.train, model_type=saved.model_type)
        self.cfg = cfg.assert_valid()
        if dist is not None:
            dist.per_process_batch(cfg.train.batch_size)  # ValueError unless it divides
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if torch.device(device).type == "cpu":
            keep_freed_memory()  # a step's temporaries reuse mapped pages: 0.95x SuPAIR's step, 0.94x AIR's (benchmarks/step_time.py)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg).to(device)
        groups = getattr(self.model, "param_groups", None)  # a model may set per-group rates (AIR's baseline)
        params = groups(cfg.train.learning_rate) if callable(groups) else self.model.parameters()
        # fused: one kernel over all parameters (2.3 against 6.0 ms a step for SuPAIR's 3.2M parameters, one thread)
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.learning_rate, fused=torch.device(device).type in ("cpu", "cuda"))
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.batch_gen = torch.Generator().manual_seed(cfg.train.seed)
        self.step = 0
        self.clock = _Clock()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            _load_state(self.model, ckpt["model"], self.run_dir)
            self.optimizer.load_state_dict(upgrade_optimizer_state(self.model, ckpt["model"], ckpt["optimizer"]))
            for g, base in zip(self.optimizer.param_groups, self._base_lrs):
                g["lr"] = base  # the schedule below sets each step's rate from the budget used
            self.step = int(ckpt["step"])
            self.clock = _Clock(float(ckpt["train_seconds"]), float(ckpt["cpu_seconds"]))
            self.batch_gen.set_state(ckpt["batch_rng"])
            torch.set_rng_state(ckpt["torch_rng"])
            if self.is_main:
                self._truncate_metrics(self.step)
            self.log(f"resumed {self.run_dir} at step {self.step}")
        if self.is_main:  # on resume too: a new budget or detection search is recorded
            atomic_write(self.run_dir / "config.json", cfg.to_json().encode())
        if dist is None:
            self.train_set, self.test_set = load_data(cfg, log=self.log)
        else:  # rank 0 builds the data cache, then the others read it
            self.train_set, self.test_set = dist.main_first(lambda: load_data(cfg, log=self.log))
        self._check_data(self.train_set)
        # the loss: model.loss, or under torchrun this process's shard of it through DDP
        self._loss = self.model.loss if dist is None else dist.wrap(self.model)

    def _check_data(self, data: SceneSet) -> None:
        m = self.cfg.model
        shape = tuple(data.images.shape[1:])
        if shape != (m.channels, m.scene_size, m.scene_size):
            raise ValueError(f"data has images of shape {shape}; the model expects {(m.channels, m.scene_size, m.scene_size)}")

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric rows written after the checkpoint (a run killed between evaluation and checkpoint)."""
        if not self.metrics_path.exists():
            return
        rows = [line for line in self.metrics_path.read_text().splitlines() if line.strip()]
        keep = []
        for line in rows:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill
        atomic_write(self.metrics_path, "".join(r + "\n" for r in keep).encode())

    def checkpoint(self) -> None:
        if not self.is_main:
            return
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "format": CHECKPOINT_FORMAT,
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

    def _done(self) -> bool:
        t = self.cfg.train
        if t.steps is not None and self.step >= t.steps:
            return True
        out_of_time = t.minutes is not None and self.clock.wall >= 60 * t.minutes
        out_of_time = out_of_time or (t.cpu_minutes is not None and self.clock.cpu >= 60 * t.cpu_minutes)
        if self.dist is not None and (t.minutes is not None or t.cpu_minutes is not None):
            return self.dist.agree(out_of_time)  # the processes' clocks differ: rank 0's decides for all
        return out_of_time

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
        """Train until the step or time budget; returns the evaluations of this call."""
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
