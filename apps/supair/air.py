"""AIR (Eslami et al., NIPS 2016), the baseline SuPAIR is measured against, in the same harness.

The generative model draws up to ``N`` objects. At step ``t``
``z_pres_t ~ Bernoulli(rho * z_pres_{t-1})``; a present object has a box
``z_where_t = (s, x, y) ~ N([3, 0, 0], [0.2, 1, 1])`` and an appearance code
``z_what_t ~ N(0, I)`` decoded by an MLP into a ``G x G`` window that the
spatial transformer adds onto the canvas; ``x ~ N(canvas, 0.3^2)`` per pixel.
Once a step is off, every later term is masked out.

The guide is an LSTM that reads the flattened image and the previous step's
``(z_where, z_what, z_pres)``; an MLP head gives ``z_pres``'s probability and
``z_where``'s Normal (loc offset by the prior mean, scale times the prior sd);
the glimpse at ``z_where`` is encoded by an MLP into ``z_what``'s Normal.

Gradients: ``z_where`` and ``z_what`` are reparameterised; ``z_pres`` gets
score-function (REINFORCE) gradients whose learning signal for step ``t`` is
the cost downstream of it only (the likelihood and the ELBO terms of steps
``>= t``), centred by an input-dependent baseline network (its own LSTM + MLP
on detached inputs, trained by squared error) as in NVIL (Mnih & Gregor,
2014); optionally also centred and scaled by running averages.

Defaults follow pyro's ``examples/air`` with the flags of its tutorial,
``python main.py -n 200000 -blr 0.1 --z-pres-prior 0.01 --scale-prior-sd 0.2
--predict-net 200 --bl-predict-net 200 --decoder-output-use-sigmoid
--decoder-output-bias -2 --seed 287710`` (pyro-ppl/pyro examples/air/main.py and
the AIR tutorial): LSTM 256 units, encoder and decoder MLPs of 200 units,
``z_what`` 50-d, window 28x28, likelihood sd 0.3, Adam 1e-4 with 0.1 for the
baseline networks, batch 64. The box convention is pyro's
(examples/air/air.py ``z_where_inv``): the window is ``1/s`` of the image wide
and centred at ``(-x/s, -y/s)`` in [-1, 1] image coordinates.

Shapes: ``B`` images, ``N`` steps, ``C`` channels, ``S`` scene side, ``G``
glimpse side, ``D`` = ``z_what`` size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import ModelConfig
from .inference import Inference, check_images
from .transform import cut_glimpses, paste_glimpses

__all__ = ["Air", "air_boxes"]

_LOG_2PI = math.log(2 * math.pi)


def air_boxes(z_where: Tensor, canvas: int, min_scale: float = 0.1) -> Tensor:
    """AIR's ``(s, x, y)`` to boxes ``(width, height, x0, y0)`` in pixels: ``(..., 3) -> (..., 4)``.

    The window is ``canvas / s`` pixels wide and centred at ``-x / s``
    (``-y / s``) in [-1, 1] image coordinates, as pyro's ``z_where_inv``.
    ``s`` is floored at ``min_scale`` so that a stray sample cannot make an
    infinite box.
    """
    s = z_where[..., 0].clamp_min(min_scale)
    x, y = z_where[..., 1], z_where[..., 2]
    w = canvas / s
    x0 = 0.5 * canvas * (1 - (x + 1) / s)
    y0 = 0.5 * canvas * (1 - (y + 1) / s)
    return torch.stack([w, w, x0, y0], -1)


def _normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Diagonal Normal log-density summed over the last dimension."""
    return (-0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * _LOG_2PI).sum(-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Lstm(nn.Module):
    """An LSTM cell whose input is the image (projected once) plus a small per-step vector.

    Mathematically ``nn.LSTMCell`` over ``cat(image, extra)`` with the same
    initialisation (uniform in +-1/sqrt(units)); the image's projection into the
    gates is computed once per batch instead of once per step.
    """

    def __init__(self, image_features: int, extra: int, units: int) -> None:
        super().__init__()
        self.image = nn.Linear(image_features, 4 * units)
        self.extra = nn.Linear(extra, 4 * units, bias=False)
        self.hidden = nn.Linear(units, 4 * units)
        bound = 1 / math.sqrt(units)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        self.units = units

    def step(self, image_gates: Tensor, extra: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (image_gates + self.extra(extra) + self.hidden(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Air(nn.Module):
    """Attend-Infer-Repeat with a learned NVIL baseline for ``z_pres``.

    Args:
        cfg: the model configuration; ``cfg.air`` holds AIR's own settings,
            ``cfg.inference.lstm_units`` the LSTM size, ``cfg.glimpse_size`` the
            window side, ``cfg.max_steps`` the most objects.
    """

    where_prior_loc: Tensor
    where_prior_sd: Tensor
    updates: Tensor
    signal_mean: Tensor
    signal_var: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.assert_valid()
        self.cfg = cfg
        a = cfg.air
        C, S, G, D = cfg.channels, cfg.scene_size, cfg.glimpse_size, a.z_what_size
        U = cfg.inference.lstm_units
        extra = 3 + D + 1  # previous z_where, z_what, z_pres
        self.rnn = _Lstm(C * S * S, extra, U)
        self.predict = _mlp([U, a.predict_units, 1 + 3 + 3])  # z_pres logit, z_where loc and scale
        self.encode = _mlp([C * G * G, a.encoder_units, 2 * D])
        self.decode = _mlp([D, a.decoder_units, C * G * G])
        self.bl_rnn = _Lstm(C * S * S, extra, U)
        self.bl_predict = _mlp([U, a.baseline_units, 1])
        self.h_init = nn.Parameter(torch.zeros(1, U))
        self.c_init = nn.Parameter(torch.zeros(1, U))
        self.z_where_init = nn.Parameter(torch.zeros(1, 3))
        self.z_what_init = nn.Parameter(torch.zeros(1, D))
        self.register_buffer("where_prior_loc", torch.tensor([a.scale_prior_mean, a.pos_prior_mean, a.pos_prior_mean]))
        self.register_buffer("where_prior_sd", torch.tensor([a.scale_prior_sd, a.pos_prior_sd, a.pos_prior_sd]))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # training steps taken, for the prior's annealing
        self.register_buffer("signal_mean", torch.zeros(()))  # running moments of the centred signal (nvil_normalize)
        self.register_buffer("signal_var", torch.ones(()))

    # ------------------------------------------------------------- options
    def baseline_parameters(self) -> list[nn.Parameter]:
        """The baseline network's parameters (trained by its own squared error only)."""
        return list(self.bl_rnn.parameters()) + list(self.bl_predict.parameters())

    def param_groups(self, lr: float) -> list[dict]:
        """Adam groups: model and guide at ``lr``, the baseline at ``cfg.air.baseline_lr``."""
        bl = {id(p) for p in self.baseline_parameters()}
        main = [p for p in self.parameters() if id(p) not in bl]
        return [{"params": main, "lr": lr}, {"params": self.baseline_parameters(), "lr": self.cfg.air.baseline_lr}]

    def pres_prior(self) -> float:
        """The prior's ``rho`` now: ``cfg.air.pres_prior``, or annealed to it geometrically from ``pres_prior_start``."""
        a = self.cfg.air
        if a.pres_prior_start is None or a.pres_prior_anneal_steps <= 0:
            return a.pres_prior
        frac = min(1.0, float(self.updates) / a.pres_prior_anneal_steps)
        return math.exp((1 - frac) * math.log(a.pres_prior_start) + frac * math.log(a.pres_prior))

    # ------------------------------------------------------------- the guide
    def _guide(self, images: Tensor, sample: bool, steps: int | None = None) -> dict[str, Tensor]:
        """Run the guide (and the baseline) for ``N`` steps (``steps``, default ``max_steps``).

        With ``sample=False`` it is deterministic: posterior means, and every
        step is fed ``z_pres_{t-1} = 1`` (presence is then the cumulative product
        of the probabilities, as in :class:`Inference`).

        Returns:
            dict of ``(B, N)`` ``logits`` (clamped), ``pres`` (the z_pres draw),
            ``prev`` (z_pres of the step before), ``baseline``; ``(B, N, 3)``
            ``where_loc``, ``where_scale``, ``where``; ``(B, N, D)``
            ``what_loc``, ``what_scale``, ``what``; ``(B, N, C, G, G)``
            ``glimpses``.
        """
        cfg, a = self.cfg, self.cfg.air
        B, C, S, _ = images.shape
        G, N = cfg.glimpse_size, cfg.max_steps if steps is None else steps
        flat = images.reshape(B, C * S * S)
        gates = self.rnn.image(flat)  # (B, 4U), shared by the N steps
        bl_gates = self.bl_rnn.image(flat) if sample else None
        h, c = self.h_init.expand(B, -1), self.c_init.expand(B, -1)
        bl_h, bl_c = images.new_zeros(B, self.bl_rnn.units), images.new_zeros(B, self.bl_rnn.units)
        z_where, z_what = self.z_where_init.expand(B, -1), self.z_what_init.expand(B, -1)
        z_pres = images.new_ones(B, 1)
        out: dict[str, list[Tensor]] = {k: [] for k in ("logits", "pres", "prev", "baseline", "where_loc", "where_scale",
                                                         "where", "what_loc", "what_scale", "what", "glimpses")}
        for _ in range(N):  # the N attention steps
            extra = torch.cat([z_where, z_what, z_pres], 1)  # (B, 3 + D + 1)
            h, c = self.rnn.step(gates, extra, h, c)
            p = self.predict(h)  # (B, 7)
            logit = p[:, 0].clamp(-a.pres_logit_clamp, a.pres_logit_clamp)
            where_loc = p[:, 1:4] + self.where_prior_loc
            where_scale = F.softplus(p[:, 4:7]) * self.where_prior_sd
            z_where = where_loc + where_scale * torch.randn_like(where_scale) if sample else where_loc
            glimpse = cut_glimpses(images, air_boxes(z_where, S), G)  # (B, C, G, G)
            e = self.encode(glimpse.reshape(B, C * G * G))
            what_loc, what_scale = e[:, : a.z_what_size], F.softplus(e[:, a.z_what_size :])
            z_what = what_loc + what_scale * torch.randn_like(what_scale) if sample else what_loc
            if bl_gates is not None:  # sampling
                # the baseline sees the same inputs, detached: its loss must not reach the guide
                bl_h, bl_c = self.bl_rnn.step(bl_gates, extra.detach(), bl_h, bl_c)
                out["baseline"].append(self.bl_predict(bl_h)[:, 0] * z_pres[:, 0])
                new_pres = (torch.rand_like(logit) < torch.sigmoid(logit)).to(images.dtype) * z_pres[:, 0]
            else:
                new_pres = z_pres[:, 0]
            out["prev"].append(z_pres[:, 0])
            out["pres"].append(new_pres)
            z_pres = new_pres.unsqueeze(1)
            for k, v in (("logits", logit), ("where_loc", where_loc), ("where_scale", where_scale), ("where", z_where),
                         ("what_loc", what_loc), ("what_scale", what_scale), ("what", z_what), ("glimpses", glimpse)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items() if v}

    # ------------------------------------------------------------- the model
    def render(self, what: Tensor, where: Tensor, pres: Tensor) -> tuple[Tensor, Tensor]:
        """Decode objects and add the present ones onto an empty canvas.

        Args:
            what: ``(B, N, D)``; where: ``(B, N, 3)``; pres: ``(B, N)`` in {0, 1}.

        Returns:
            canvas ``(B, C, S, S)`` and the decoded windows ``(B, N, C, G, G)``.
        """
        cfg = self.cfg
        B, N = what.shape[:2]
        C, S, G = cfg.channels, cfg.scene_size, cfg.glimpse_size
        windows = torch.sigmoid(self.decode(what.reshape(B * N, -1)) + cfg.air.decoder_bias).view(B * N, C, G, G)
        pasted = paste_glimpses(windows, air_boxes(where.reshape(B * N, 3), S), S).view(B, N, C, S, S)
        canvas = (pasted * pres.view(B, N, 1, 1, 1)).sum(1)  # (B, C, S, S): objects add up
        return canvas, windows.view(B, N, C, G, G)

    def terms(self, images: Tensor, g: dict[str, Tensor]) -> dict[str, Tensor]:
        """The ELBO's terms for one draw of the guide ``g`` (from :meth:`_guide`).

        Returns:
            ``likelihood`` ``(B,)``: ``log p(x | z)``; ``local`` ``(B, N)``: per step
            ``log p(z_pres_t) - log q(z_pres_t)`` plus, for a present object,
            ``log p(z_where_t) - log q(z_where_t) + log p(z_what_t) - log q(z_what_t)``;
            ``log_q_pres`` ``(B, N)`` (0 for steps after the first off).
        """
        a = self.cfg.air
        B = images.shape[0]
        pres, prev, logits = g["pres"], g["prev"], g["logits"]
        log_q_pres = prev * (pres * F.logsigmoid(logits) + (1 - pres) * F.logsigmoid(-logits))  # (B, N)
        rho = self.pres_prior()
        log_p_pres = prev * (pres * math.log(rho) + (1 - pres) * math.log1p(-rho))  # (B, N)
        zeros, ones = torch.zeros_like(g["what"]), torch.ones_like(g["what"])
        where_kl = _normal_log_prob(g["where"], self.where_prior_loc, self.where_prior_sd) - _normal_log_prob(g["where"], g["where_loc"], g["where_scale"])
        what_kl = _normal_log_prob(g["what"], zeros, ones) - _normal_log_prob(g["what"], g["what_loc"], g["what_scale"])
        local = (log_p_pres - log_q_pres) + pres * (where_kl + what_kl)  # (B, N)
        canvas, _ = self.render(g["what"], g["where"], pres)
        sd = a.likelihood_sd
        likelihood = (-0.5 * ((images - canvas) / sd) ** 2 - math.log(sd) - 0.5 * _LOG_2PI).reshape(B, -1).sum(1)
        return {"likelihood": likelihood, "local": local, "log_q_pres": log_q_pres}

    # ------------------------------------------------------- harness interface
    def loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Surrogate loss whose gradient is the ELBO's (score function for ``z_pres``), plus the baseline's loss.

        Per image: ``-[ELBO + sum_t log q(z_pres_t) * stopgrad(A_t)] + sum_t (r_t - b_t)^2``
        with ``r_t = log p(x | z) + sum_{k >= t} local_k`` (the cost from step
        ``t`` on), ``b_t`` the baseline network's prediction and ``A_t = r_t - b_t``
        (optionally centred and scaled by running moments). ``log q(z_pres)``
        enters the ELBO term detached: its gradient comes through ``A_t`` only,
        as in pyro's TraceGraph_ELBO.

        Returns:
            the mean over the batch, and ``{"elbo": mean ELBO per image}`` (detached).
        """
        check_images(images, self.cfg, values=False)
        g = self._guide(images, sample=True)
        t = self.terms(images, g)
        local = t["local"] + t["log_q_pres"] - t["log_q_pres"].detach()  # value unchanged; no direct z_pres path
        elbo = t["likelihood"] + local.sum(1)  # (B,)
        downstream = (t["likelihood"].unsqueeze(1) + torch.flip(torch.cumsum(torch.flip(t["local"], [1]), 1), [1])).detach()  # (B, N): r_t
        baseline, prev = g["baseline"], g["prev"]
        advantage = (downstream - baseline).detach() * prev  # (B, N), 0 after the first off step
        if self.cfg.air.nvil_normalize:
            advantage = self._normalize(advantage, prev)
        surrogate = elbo + (t["log_q_pres"] * advantage).sum(1)
        baseline_loss = (prev * (downstream - baseline) ** 2).sum(1)  # (B,); only the baseline has a gradient here
        if self.training and torch.is_grad_enabled():
            self.updates += 1
        loss = (-surrogate + baseline_loss).mean()
        return loss, {"elbo": elbo.detach().mean(), "baseline_loss": baseline_loss.detach().mean()}

    def _normalize(self, advantage: Tensor, active: Tensor) -> Tensor:
        """NVIL's running centring and scaling of the learning signal (Mnih & Gregor, 2014, sec. 3.3)."""
        n = active.sum().clamp_min(1)
        if self.training and torch.is_grad_enabled():
            mean = (advantage * active).sum() / n
            var = (((advantage - mean) * active) ** 2).sum() / n
            decay = self.cfg.air.nvil_decay
            self.signal_mean.mul_(decay).add_((1 - decay) * mean)
            self.signal_var.mul_(decay).add_((1 - decay) * var)
        return (advantage - self.signal_mean) * active / self.signal_var.sqrt().clamp_min(1.0)

    def elbo(self, images: Tensor) -> Tensor:
        """One-sample ELBO estimate per image ``(B,)``."""
        check_images(images, self.cfg, values=False)
        g = self._guide(images, sample=True)
        t = self.terms(images, g)
        return t["likelihood"] + t["local"].sum(1)

    @torch.no_grad()
    def infer(self, images: Tensor) -> tuple[Inference, dict[str, Tensor]]:
        """Deterministic guide (posterior means) as an :class:`Inference`, and the guide's raw outputs."""
        check_images(images, self.cfg)
        g = self._guide(images, sample=False, steps=self.cfg.inference.detect_steps)
        boxes = air_boxes(g["where"], self.cfg.scene_size)
        return Inference(g["logits"], g["where_loc"], g["where_scale"], g["where"], boxes), g

    @torch.no_grad()
    def detect(self, images: Tensor) -> Inference:
        """Detections for ``images`` ``(B, C, S, S)``: posterior means, count from cumulative presence >= 0.5."""
        return self.infer(images)[0]

    @torch.no_grad()
    def explain(self, images: Tensor) -> dict[str, Any]:
        """What AIR sees in ``images``, with the keys of ``Supair.explain``.

        Returns:
            ``inference``, ``count`` ``(B,)``, ``glimpses`` ``(B, N, C, G, G)``,
            ``hidden`` ``(B, N, 1, G, G)`` (zeros: AIR adds objects, nothing is
            occluded), ``completions`` ``(B, N, C, G, G)`` (the decoded object
            appearances) and ``reconstruction`` ``(B, C, S, S)`` (the canvas of the
            counted objects, clamped to [0, 1]).
        """
        inf, g = self.infer(images)
        count = inf.count()
        N = inf.where.shape[1]
        on = (torch.arange(N, device=images.device).unsqueeze(0) < count.unsqueeze(1)).to(images.dtype)  # (B, N)
        canvas, windows = self.render(g["what"], g["where"], on)
        B, _, C, G, _ = windows.shape
        return {
            "inference": inf,
            "count": count,
            "glimpses": g["glimpses"],
            "hidden": images.new_zeros(B, N, 1, G, G),
            "completions": windows,
            "reconstruction": canvas.clamp(0, 1),
        }
