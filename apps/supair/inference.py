"""SuPAIR's attention network: per step a presence logit and a box posterior (``z_where``).

Shapes: ``B`` images, ``N`` steps, ``C`` channels, ``S`` scene side.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import ModelConfig
from .spatial import SpatialAttention
from .transform import box_corners, box_coverage

__all__ = ["Inference", "InferenceNet", "count_posterior", "check_images", "scale_range"]


def check_images(images: Tensor, cfg: ModelConfig, values: bool = True) -> None:
    """Raise ValueError unless ``images`` is ``(B, C, S, S)`` float in [0, 1] for this model.

    ``values=False`` checks only shape and dtype (no device synchronisation).
    """
    want = (cfg.channels, cfg.scene_size, cfg.scene_size)
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != want or images.shape[0] < 1:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (batch, {want[0]}, {want[1]}, {want[2]}), got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype}")
    if values and bool((~torch.isfinite(images) | (images < 0) | (images > 1)).any()):
        raise ValueError("images must hold finite values in [0, 1] (found NaN, inf or values outside)")



@dataclass
class Inference:
    """Output of the attention network for a batch."""

    pres_logits: Tensor  # (B, N) logit of "another object" at step i
    where_loc: Tensor  # (B, N, 4) posterior mean of (scale_x, scale_y, x0, y0): scales relative to the glimpse, corner in pixels
    where_std: Tensor  # (B, N, 4) posterior std, same units
    where_sample: Tensor  # (B, N, 4) a draw (or the mean), same units
    where: Tensor  # (B, N, 4) boxes (width, height, x0, y0) in pixels

    def log_q_where(self) -> Tensor:
        """``log q(z_where)`` per step ``(B, N)``."""
        # torch.distributions.Normal's log_prob, written out: the distribution object checks its arguments and
        # the value at every step (a dozen small ops; host synchronisations on a GPU)
        loc, std, z = self.where_loc, self.where_std, self.where_sample
        return (-((z - loc) ** 2) / (2 * std**2) - std.log() - math.log(math.sqrt(2 * math.pi))).sum(-1)

    def presence(self) -> Tensor:
        """Probability that object ``i`` exists, ``prod_{j <= i} p_j``: ``(B, N)``."""
        return torch.exp(torch.cumsum(F.logsigmoid(self.pres_logits), dim=1))

    def count(self) -> Tensor:
        """Predicted count: objects whose presence probability is at least 0.5, ``(B,)``."""
        return (self.presence() >= 0.5).sum(1)

    def boxes(self) -> Tensor:
        """Boxes as corners ``(x0, y0, x1, y1)`` in pixels, ``(B, N, 4)``."""
        return box_corners(self.where)

    def choose(self, take_other: Tensor, other: "Inference") -> "Inference":
        """Per image, ``other``'s values where ``take_other`` ``(B,)`` is True and this inference's elsewhere."""
        pick = lambda a, b: torch.where(take_other.view(-1, *[1] * (a.dim() - 1)), b, a)
        return Inference(*(pick(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)))


def count_posterior(pres_logits: Tensor) -> Tensor:
    """``log q(n)`` for ``n = 0..N``: ``(B, N) -> (B, N + 1)``.

    ``q(n) = prod_{j < n} p_j * (1 - p_n)``, and ``q(N) = prod_j p_j``.
    """
    log_p, log_not = F.logsigmoid(pres_logits), F.logsigmoid(-pres_logits)  # (B, N)
    before = F.pad(torch.cumsum(log_p, 1), (1, 0))  # (B, N+1): sum_{j<n} log p_j
    stop = F.pad(log_not, (0, 1))  # (B, N+1): log(1 - p_n), 0 for n = N
    return before + stop


def scale_range(cfg: ModelConfig) -> tuple[float, float]:
    """The box width range relative to the glimpse size: ``inference.object_size / glimpse_size`` if set, else ``inference.scale_range``."""
    size = cfg.inference.object_size
    return cfg.inference.scale_range if size is None else (size[0] / cfg.glimpse_size, size[1] / cfg.glimpse_size)


class InferenceNet(nn.Module):
    """LSTM over ``N`` steps with an MLP head per step, proposing presence and a box.

    ``inference.input == "image"`` feeds the image at every step, as the
    original (its projection into the LSTM gates is then computed once).
    ``"residual"`` feeds the image with the boxes of the earlier steps blanked
    out, so every step faces the same task, "find an object in what is left",
    and the skill the first step learns carries over to the later ones.
    """

    max_std: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        icfg = cfg.inference
        self.cfg = cfg
        units = icfg.lstm_units
        self.units = units
        self.recurrent = icfg.recurrent
        self.spatial = SpatialAttention(cfg) if icfg.encoder == "spatial" else None
        if self.spatial is None:
            self._build_lstm(cfg)
        pos_std = icfg.max_std if icfg.position_max_std is None else icfg.position_max_std
        self.register_buffer("max_std", torch.tensor([icfg.max_std, icfg.max_std, pos_std, pos_std]), persistent=False)  # (4,)

    def _build_lstm(self, cfg: ModelConfig) -> None:
        """The image encoder, the LSTM cell and the MLP head (encoders "flat" and "cnn")."""
        icfg, units = cfg.inference, self.units
        if icfg.encoder == "flat":
            encoder: nn.Module = nn.Flatten()
        else:
            encoder = nn.Sequential(
                nn.Conv2d(cfg.channels, 16, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(),
            )
        # the image average-pooled by input_pool (ceil mode: a partial window at the edge is averaged over the pixels it holds)
        pool = icfg.input_pool
        self.encoder = encoder if pool == 1 else nn.Sequential(nn.AvgPool2d(pool, ceil_mode=True, count_include_pad=False), encoder)
        with torch.no_grad():
            features = self.encoder(torch.zeros(1, cfg.channels, cfg.scene_size, cfg.scene_size)).shape[1]
        # Without recurrence (the default) the state starts at zero at every step: the forget gate
        # multiplies a zero cell and the hidden projection a zero state, so neither is built (the
        # largest product of the step, features x gates, is 3/4 as large; same function and gradients).
        self.input_gates = nn.Linear(features, (4 if self.recurrent else 3) * units)  # gates i, f, g, o (i, g, o)
        self.hidden_gates = nn.Linear(units, 4 * units, bias=False) if self.recurrent else None
        hidden, out = nn.Linear(units, icfg.head_units), nn.Linear(icfg.head_units, 9)  # created in this order: the seeded init
        self.head = nn.Sequential(hidden, nn.ReLU(), out)
        with torch.no_grad():
            out.bias[0] = icfg.presence_bias

    def forward(self, images: Tensor, sample: bool = True, fill: Tensor | None = None,
                first_offset: Tensor | None = None, steps: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-step outputs for ``images`` ``(B, C, S, S)``.

        Args:
            sample: draw ``z_where`` (reparameterised); False takes the means.
            fill: ``(B, C, S, S)`` shown where earlier boxes were (residual input);
                None shows zeros there.
            first_offset: ``(B, 2)`` pixels added to the first box's mean corner
                (kept within the position range) before the later steps look:
                the detection search's alternative first boxes.
            steps: the number of steps ``N`` (None: ``max_steps``).

        Returns:
            presence logits ``(B, N)``, and z_where mean, std and draw, each ``(B, N, 4)``.
        """
        B, S = images.shape[0], self.cfg.scene_size
        residual = self.cfg.inference.input == "residual"
        x_gates = None if residual or self.spatial is not None else self.input_gates(self.encoder(images))  # (B, 4U or 3U), shared by every step
        h = c = images.new_zeros(B, self.units)
        visible = images.new_ones(B, 1, S, S)
        outs, locs, stds, draws = [], [], [], []
        for step in range(self.cfg.max_steps if steps is None else steps):  # the N steps of attention (not pixels or images)
            shown = images
            if residual:
                shown = images * visible if fill is None else images * visible + fill * (1 - visible)
            if self.spatial is not None:
                logit, loc, std_raw = self._spatial_step(shown, fill)
            else:
                if residual:
                    x_gates = self.input_gates(self.encoder(shown))
                assert x_gates is not None  # computed once above, or for this step
                if self.hidden_gates is not None:  # recurrent
                    i, f, g, o = (x_gates + self.hidden_gates(h)).chunk(4, dim=1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                else:
                    i, g, o = x_gates.chunk(3, dim=1)
                    c = torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out = self.head(h)  # (B, 9)
                logit, loc, std_raw = out[:, 0], self.box_mean(out[:, 1:5]), out[:, 5:]
            std = self.max_std * torch.sigmoid(std_raw)
            if step == 0 and first_offset is not None:
                lo, hi = (r * S for r in self.cfg.inference.position_range)
                loc = torch.cat([loc[:, :2], (loc[:, 2:] + first_offset).clamp(lo, hi)], 1)
            z = loc + std * torch.randn_like(std) if sample else loc
            if residual:
                visible = visible * (1 - box_coverage(self._grown(self.to_pixels(z)), S).unsqueeze(1))
            bound = self.cfg.inference.presence_bound
            outs.append(logit if bound is None else bound * torch.tanh(logit / bound))
            locs.append(loc)
            stds.append(std)
            draws.append(z)
        return torch.stack(outs, 1), torch.stack(locs, 1), torch.stack(stds, 1), torch.stack(draws, 1)

    def _grown(self, where: Tensor) -> Tensor:
        """Boxes ``(B, 4)`` grown by ``inference.residual_margin`` pixels on every side (what the later steps see filled)."""
        m = self.cfg.inference.residual_margin
        return where if m == 0 else where + where.new_tensor([2 * m, 2 * m, -m, -m])

    def _spatial_step(self, shown: Tensor, fill: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Presence logit ``(B,)``, box mean ``(B, 4)`` and raw stds ``(B, 4)`` of one step of the spatial attention."""
        assert self.spatial is not None
        logit, shape, centre, std_raw = self.spatial(shown, fill)
        icfg, S, G = self.cfg.inference, self.cfg.scene_size, self.cfg.glimpse_size
        u = torch.sigmoid(shape)  # (B, 2)
        (s_lo, s_hi), (r_lo, r_hi) = scale_range(self.cfg), icfg.ratio_range
        sx = s_lo + (s_hi - s_lo) * u[:, 0]
        sy = sx * (r_lo + (r_hi - r_lo) * u[:, 1])
        lo, hi = (r * S for r in icfg.position_range)
        corner = (centre - 0.5 * G * torch.stack([sx, sy], 1)).clamp(lo, hi)  # (B, 2): the box centred on the attended point
        return logit, torch.cat([torch.stack([sx, sy], 1), corner], 1), std_raw

    def upgrade_state(self, state: dict, prefix: str = "") -> None:
        """Rewrite, in place, entries of a checkpoint that holds the full LSTM cell for a non-recurrent one.

        Such checkpoints hold all four gates' input rows and the hidden
        projection; only the i, g and o rows are kept (the function computed is
        unchanged). Also applied to per-parameter optimizer state (Adam's moments).
        """
        if self.recurrent or self.spatial is not None:
            return
        U = self.units
        for name in ("weight", "bias"):
            key = f"{prefix}input_gates.{name}"
            old = state.get(key)
            if old is not None and old.dim() > 0 and old.shape[0] == 4 * U:
                state[key] = torch.cat([old[:U], old[2 * U:]])
        state.pop(prefix + "hidden_gates.weight", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.upgrade_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def box_mean(self, raw: Tensor) -> Tensor:
        """Squash ``(..., 4)`` into ``(scale_x, scale_y, x0, y0)`` within the configured ranges.

        ``scale_y = scale_x * ratio``; scales are relative to the glimpse size and
        the corner is in pixels.
        """
        icfg, S = self.cfg.inference, self.cfg.scene_size
        u = torch.sigmoid(raw)
        scale = scale_range(self.cfg)
        lo = raw.new_tensor([scale[0], icfg.ratio_range[0], icfg.position_range[0] * S, icfg.position_range[0] * S])
        hi = raw.new_tensor([scale[1], icfg.ratio_range[1], icfg.position_range[1] * S, icfg.position_range[1] * S])
        sx, ratio, x0, y0 = (lo + (hi - lo) * u).unbind(-1)
        return torch.stack([sx, sx * ratio, x0, y0], -1)

    def to_pixels(self, z: Tensor) -> Tensor:
        """``(scale_x, scale_y, x0, y0)`` to boxes ``(width, height, x0, y0)`` in pixels (scales floored at 0.05)."""
        G = self.cfg.glimpse_size
        scales = z[..., :2].clamp_min(0.05) * G
        return torch.cat([scales, z[..., 2:]], -1)
