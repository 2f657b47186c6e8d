"""SuPAIR: attend-infer-repeat with SPN appearance and background models.

An LSTM looks at the image ``N`` times and proposes, per step, a presence
probability and a box (``z_where``). Each box's glimpse is scored by the object
SPN, with the pixels hidden by earlier objects marginalized; the background SPN
scores the image with every pixel covered by a present object marginalized. The
ELBO sums over the object count ``n = 0..N`` in closed form, so only
``z_where`` is sampled (reparameterised).

Shapes: ``B`` images, ``N`` steps, ``C`` channels, ``S`` scene side, ``G``
glimpse side.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import spnkit

from .config import ModelConfig, SPNConfig
from .inference import Inference, InferenceNet, check_images, count_posterior
from .transform import box_coverage, cut_glimpses, paste_glimpses

__all__ = ["Supair", "build_spn"]


def build_spn(cfg: SPNConfig, height: int, width: int, channels: int, seed: int, variance_scale: float = 1.0) -> spnkit.SPN:
    """An spnkit circuit over an image with ``(row, col, channel)`` variable order, its leaf variances scaled by ``variance_scale``."""
    if cfg.structure == "random":
        rg = spnkit.RegionGraph.random(height * width * channels, depth=cfg.depth, repetitions=cfg.repetitions, seed=seed)
    else:
        rg = spnkit.RegionGraph.poon_domingos(height, width, delta=cfg.delta, channels=channels)
    init_var = None if cfg.init_var is None else (cfg.init_var[0] * variance_scale, cfg.init_var[1] * variance_scale)
    leaf = spnkit.Normal(min_var=cfg.min_var * variance_scale, max_var=cfg.max_var * variance_scale, loc_range=cfg.init_loc,
                         init_var=init_var)
    return spnkit.SPN(rg, leaf=leaf, num_sums=cfg.num_sums, num_leaves=cfg.num_leaves, validate_args=False)


class Supair(nn.Module):
    """The SuPAIR model: inference network, object SPN and background SPN (or a fixed background).

    Args:
        cfg: the model configuration.
        seed: seed of the random region graphs.
    """

    updates: Tensor

    def __init__(self, cfg: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        cfg.assert_valid()
        self.cfg = cfg
        self.inference = InferenceNet(cfg)
        G, S, C = cfg.glimpse_size, cfg.scene_size, cfg.channels
        scale = 1.0 if cfg.variance_scale is None else float(cfg.variance_scale)
        self.object_spn = build_spn(cfg.object_spn, G, G, C, seed, scale)
        self.background_spn = build_spn(cfg.background_spn, S, S, C, seed + 1, scale) if cfg.background_model else None
        self.fixed_background_var = cfg.fixed_background_var * scale  # of the ablation's fixed Normal background
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # training steps taken, for the count prior's ramp

    # ------------------------------------------------------------ inference
    def infer(self, images: Tensor, sample: bool = True, fill: Tensor | None = None,
              first_offset: Tensor | None = None, steps: int | None = None) -> Inference:
        """Run the attention network; ``sample=False`` takes the posterior means.

        ``fill``: :meth:`residual_fill` of ``images`` if already computed (it is
        computed here otherwise). ``first_offset``: ``(B, 2)`` pixels by which
        the first box's corner is moved (see :meth:`detect`). ``steps``: the
        number of attention steps (None: ``max_steps``).
        """
        fill = self.residual_fill(images) if fill is None else fill
        logits, loc, std, z = self.inference(images, sample, fill, first_offset, steps)
        return Inference(logits, loc, std, z, self.inference.to_pixels(z))

    @torch.no_grad()
    def residual_fill(self, images: Tensor) -> Tensor | None:
        """What the attention network sees where earlier boxes were, ``(B, C, S, S)`` or None (zeros).

        With ``inference.fill == "background"`` and a background SPN: the SPN's most
        probable background, leaf modes of its best induced tree with nothing
        observed (it does not depend on the images: one MPE pass, broadcast over
        the batch). On a textured background (grid lines, noise) a blanked box is a
        hole that the network never saw at its first step, and it learned to answer
        "no object" next to one; a background-coloured fill keeps later steps'
        inputs like the first step's. With ``inference.fill == "conditional"``: each
        image's own most probable background, the leaf means of the background
        SPN's best induced tree given the whole image (one MPE pass per batch): on
        backgrounds that vary from image to image (gradients, blobs) a shared fill
        would leave a step at every box's edge. No gradient flows through it.
        """
        cfg = self.cfg
        if cfg.inference.input != "residual" or cfg.inference.fill == "zero" or self.background_spn is None:
            return None
        B, C, S, _ = images.shape
        if cfg.inference.fill == "conditional":  # each image's own most probable background
            recon = self.background_spn.mpe(images.permute(0, 2, 3, 1).reshape(B, S * S * C), keep_observed=False)
            return recon.view(B, S, S, C).permute(0, 3, 1, 2).clamp(0, 1)
        recon = self.background_spn.mpe(images.new_zeros(1, S * S * C), keep_observed=False)  # every entry unobserved
        return recon.view(1, S, S, C).permute(0, 3, 1, 2).clamp(0, 1).expand(B, C, S, S)

    # ---------------------------------------------------------------- model
    def visibility(self, where: Tensor) -> Tensor:
        """Image-space visibility before each object, ``(B, N+1, S, S)``.

        Entry ``n`` is the running product of ``1 - coverage`` of objects
        ``0..n-1``: 1 where no earlier object covers the pixel.
        """
        B, S = where.shape[0], self.cfg.scene_size
        free = 1 - box_coverage(where, S)  # (B, N, S, S)
        # one product per object step, not torch.cumprod: its backward takes a slow path when an entry is
        # exactly 0 (every pixel wholly inside a box), 21.6 against 2.3 ms fwd+bwd at B = 64, one thread
        rows = [where.new_ones(B, S, S), free[:, 0]]  # 1 * free_0 is free_0 exactly: no product for it
        for n in range(1, free.shape[1]):  # the N object steps (not pixels)
            rows.append(rows[-1] * free[:, n])
        return torch.stack(rows, 1)  # (B, N+1, S, S)

    def log_joint(self, images: Tensor, inf: Inference) -> dict[str, Tensor]:
        """``log p(x, z, n)`` for each count alternative, and its parts.

        Returns:
            dict with ``log_joint`` ``(B, N+1)``, ``objects`` ``(B, N)`` (scaled
            object log-likelihoods), ``background`` ``(B, N+1)``, ``overlap``
            ``(B, N)`` (occluded fraction of each glimpse), and the soft masks
            given to the SPNs: ``object_mask`` ``(B, N, G*G*C)`` and
            ``background_mask`` ``(B, N+1, C*S*S)`` (1 = marginalized).
        """
        cfg = self.cfg
        check_images(images, cfg, values=False)
        B, C, S, _ = images.shape
        N, G = inf.where.shape[1], cfg.glimpse_size
        where = inf.where  # (B, N, 4)
        flat_where = where.reshape(B * N, 4)
        vis = self.visibility(where)  # (B, N+1, S, S)
        # objects: glimpses and their visibility, in glimpse space
        rep = images.unsqueeze(1).expand(B, N, C, S, S).reshape(B * N, C, S, S)
        glimpses = cut_glimpses(rep, flat_where, G)  # (B*N, C, G, G)
        g_vis = cut_glimpses(vis[:, :N].reshape(B * N, 1, S, S), flat_where, G)  # (B*N, 1, G, G)
        hidden = (1 - g_vis).clamp(0, 1)  # (B*N, 1, G, G)
        obj_x = glimpses.permute(0, 2, 3, 1).reshape(B * N, G * G * C)  # (B*N, G*G*C), (row, col, channel)
        obj_m = hidden.permute(0, 2, 3, 1).expand(-1, -1, -1, C).reshape(B * N, G * G * C)
        area = (where[..., 0] * where[..., 1]) / (G * G)  # (B, N): image pixels per glimpse pixel
        objects = self.object_spn.log_prob(obj_x, marginalized=obj_m).view(B, N) * area  # (B, N)
        overlap = hidden.mean((1, 2, 3)).view(B, N)  # (B, N)
        # background, once per count alternative
        bg_m = (1 - vis).unsqueeze(2).expand(B, N + 1, C, S, S)  # (B, N+1, C, S, S); in [0, 1] as vis is (no clamp needed)
        bg_x = images.unsqueeze(1).expand(B, N + 1, C, S, S)
        background = self._background_log_prob(
            bg_x.permute(0, 1, 3, 4, 2).reshape(B * (N + 1), S * S * C),
            bg_m.permute(0, 1, 3, 4, 2).reshape(B * (N + 1), S * S * C),
        ).view(B, N + 1)
        prior = cfg.prior
        overlap_rate = torch.as_tensor(self.prior_rate("overlap_rate"), dtype=images.dtype, device=images.device)
        counts = torch.arange(N + 1, device=images.device, dtype=images.dtype)
        log_joint = (
            F.pad(torch.cumsum(objects, 1), (1, 0))
            + background
            + (prior.count_log_p0 - self.prior_rate("count_rate") * counts)
            + F.pad(torch.cumsum(torch.log(overlap_rate) - overlap_rate * overlap, 1), (1, 0))
        )
        return {
            "log_joint": log_joint, "objects": objects, "background": background, "overlap": overlap,
            "object_mask": obj_m.view(B, N, G * G * C), "background_mask": bg_m.reshape(B, N + 1, C * S * S),
        }

    def prior_rate(self, name: str) -> Tensor | float:
        """``prior.<name>`` (``count_rate`` or ``overlap_rate``) now: on its linear ramp from ``<name>_start`` if set."""
        p = self.cfg.prior
        end, start = getattr(p, name), getattr(p, f"{name}_start")
        begin, steps = 0, p.anneal_steps
        if name == "overlap_rate":
            begin = p.overlap_anneal_begin
            steps = p.anneal_steps if p.overlap_anneal_steps is None else p.overlap_anneal_steps
        if start is None or steps <= 0:
            return end
        frac = ((self.updates - begin) / steps).clamp(0.0, 1.0)  # a tensor: no host sync in the step
        return start + (end - start) * frac

    def upgrade_state(self, state: dict) -> None:
        """Rewrite, in place, parameter-keyed entries saved by an older layout of this model (see :meth:`InferenceNet.upgrade_state`)."""
        self.inference.upgrade_state(state, "inference.")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "updates", torch.zeros((), dtype=torch.long))  # checkpoints from before the counter
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _background_log_prob(self, x: Tensor, m: Tensor) -> Tensor:
        if self.background_spn is not None:
            return self.background_spn.log_prob(x, marginalized=m)
        cfg = self.cfg
        var = self.fixed_background_var
        ll = -0.5 * (x - cfg.fixed_background_mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
        return ((1 - m) * ll).sum(-1)

    def elbo(self, images: Tensor, inf: Inference | None = None) -> tuple[Tensor, Inference]:
        """The evidence lower bound per image ``(B,)``, summed over counts in closed form.

        ``ELBO = sum_n q(n) [log p(x, z, n) - log q(n)] - sum_i log q(z_where_i)``.
        """
        inf = self.infer(images) if inf is None else inf
        return self.count_elbo(images, inf) - inf.log_q_where().sum(1), inf

    def forward(self, images: Tensor) -> Tensor:
        """Mean negative ELBO per image (the training loss)."""
        return -self.elbo(images)[0].mean()

    @torch.no_grad()
    def log_marginal(self, images: Tensor, num_samples: int = 10) -> Tensor:
        """Importance-weighted estimate of ``log p(x)`` with ``num_samples`` draws of ``z_where``, ``(B,)``.

        Each weight sums over counts exactly: ``sum_n p(x, z_{<n}, n) / q(z_{<n})``
        (boxes after the n-th are drawn from q and integrate to one).
        """
        logs = []
        fill = self.residual_fill(images)  # the same for every draw
        for _ in range(num_samples):  # draws, not pixels
            inf = self.infer(images, fill=fill)
            lj = self.log_joint(images, inf)["log_joint"]  # (B, N+1)
            lq = F.pad(torch.cumsum(inf.log_q_where(), 1), (1, 0))  # (B, N+1)
            logs.append(torch.logsumexp(lj - lq, 1))
        return torch.logsumexp(torch.stack(logs), 0) - math.log(num_samples)

    # ------------------------------------------------------- harness interface
    def loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss (mean negative ELBO per image) and the ELBO tensor for logging."""
        elbo, _ = self.elbo(images)
        if self.training and torch.is_grad_enabled():
            self.updates += 1
        loss = -elbo.mean()
        return loss, {"elbo": -loss.detach()}

    @torch.no_grad()
    def detect(self, images: Tensor, search: bool = True) -> Inference:
        """Deterministic detections for ``images`` ``(B, C, S, S)``: posterior means, refined by a search.

        With ``inference.search_radius > 0`` (and ``search``), the first box's
        corner is also tried at every offset of a ``search_grid`` x
        ``search_grid`` grid within +-``search_radius`` pixels; the later boxes
        and the presence probabilities follow from the network given that box,
        and each image keeps the hypothesis with the highest :meth:`count_elbo`.
        Where two objects are close, the network's first box can land between
        them and two more boxes mop up the halves, an over-count whose joint
        density is far below the true explanation's; the model's tractable
        likelihood lets the search find the better hypothesis. The network's
        own boxes are always a candidate, so the score never falls.
        """
        return self.detect_with_network(images, search)[0]

    @torch.no_grad()
    def detect_with_network(self, images: Tensor, search: bool = True) -> tuple[Inference, Inference]:
        """:meth:`detect`'s detections and the attention network's own (the search's starting point), in one pass."""
        check_images(images, self.cfg)
        fill = self.residual_fill(images)
        steps = self.detect_steps
        network = best = self.infer(images, sample=False, fill=fill, steps=steps)
        offsets = self.search_offsets() if search else images.new_zeros(0, 2)
        if not len(offsets):
            return best, network
        score = self.count_elbo(images, best)
        for offset in offsets.to(images):  # alternative first boxes, each batched over the images
            inf = self.infer(images, sample=False, fill=fill, first_offset=offset.expand(len(images), 2), steps=steps)
            new = self.count_elbo(images, inf)
            better = new > score
            best, score = best.choose(better, inf), torch.where(better, new, score)
        return best, network

    @property
    def detect_steps(self) -> int:
        """Attention steps when detecting: ``inference.detect_steps``, else ``max_steps``."""
        return self.cfg.inference.detect_steps or self.cfg.max_steps

    def search_offsets(self) -> Tensor:
        """The detection search's corner offsets in pixels, ``(K, 2)``, the zero offset left out (``K = 0``: no search)."""
        icfg = self.cfg.inference
        if icfg.search_radius <= 0 or icfg.search_grid < 2:
            return torch.zeros(0, 2)
        axis = torch.linspace(-icfg.search_radius, icfg.search_radius, icfg.search_grid)
        grid = torch.cartesian_prod(axis, axis)  # (grid^2, 2)
        return grid[grid.abs().sum(1) > 0]

    def count_elbo(self, images: Tensor, inf: Inference) -> Tensor:
        """``sum_n q(n) [log p(x, z, n) - log q(n)]`` at the boxes of ``inf`` (the ELBO without the box entropy), ``(B,)``."""
        log_joint = self.log_joint(images, inf)["log_joint"]  # (B, N+1)
        log_qn = count_posterior(inf.pres_logits)
        return (log_qn.exp() * (log_joint - log_qn)).sum(1)

    @torch.no_grad()
    def explain(self, images: Tensor) -> dict[str, Any]:
        """What the model sees in ``images`` ``(B, C, S, S)``, for figures.

        Returns:
            ``inference`` (:class:`Inference`, posterior means), ``count`` ``(B,)``,
            ``glimpses`` ``(B, N, C, G, G)``, ``hidden`` ``(B, N, 1, G, G)`` (the
            part of each glimpse occluded by earlier objects), ``completions``
            ``(B, N, C, G, G)`` (each glimpse with its hidden part filled by the
            object SPN's MPE: amodal completion) and ``reconstruction`` ``(B, C,
            S, S)`` (the background SPN's MPE reconstruction with every present
            object's MPE reconstruction pasted at its box, front object on top).
        """
        cfg = self.cfg
        check_images(images, cfg)
        B, C, S, _ = images.shape
        inf = self.detect(images)
        N, G = inf.where.shape[1], cfg.glimpse_size
        count = inf.count()
        where = inf.where.reshape(B * N, 4)
        vis = self.visibility(inf.where)  # (B, N+1, S, S)
        rep = images.unsqueeze(1).expand(B, N, C, S, S).reshape(B * N, C, S, S)
        glimpses = cut_glimpses(rep, where, G)  # (B*N, C, G, G)
        hidden = (1 - cut_glimpses(vis[:, :N].reshape(B * N, 1, S, S), where, G)).clamp(0, 1)  # (B*N, 1, G, G)
        flat = lambda t: t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)  # (B', C, h, w) -> (B', h*w*C)
        unflat = lambda t, h: t.view(-1, h, h, C).permute(0, 3, 1, 2)
        occluded = (hidden > 0.5).expand(-1, C, -1, -1)
        completions = unflat(self.object_spn.mpe(flat(glimpses), marginalized=flat(occluded)), G)
        recon_obj = unflat(self.object_spn.mpe(flat(glimpses), marginalized=flat(occluded), keep_observed=False), G)
        covered = (1 - vis[torch.arange(B), count]).unsqueeze(1).expand(B, C, S, S)  # (B, C, S, S)
        if self.background_spn is not None:
            bg = unflat(self.background_spn.mpe(flat(images), marginalized=flat(covered > 0.5), keep_observed=False), S)
        else:
            bg = torch.full_like(images, cfg.fixed_background_mean)
        canvas = bg
        cover = box_coverage(inf.where, S).unsqueeze(2)  # (B, N, 1, S, S)
        pasted = paste_glimpses(recon_obj, where, S).view(B, N, C, S, S)
        for i in reversed(range(N)):  # back to front over the N steps
            on = (count > i).view(B, 1, 1, 1).to(images.dtype)
            canvas = canvas * (1 - on * cover[:, i]) + on * pasted[:, i]
        return {
            "inference": inf,
            "count": count,
            "glimpses": glimpses.view(B, N, C, G, G),
            "hidden": hidden.view(B, N, 1, G, G),
            "completions": completions.view(B, N, C, G, G),
            "reconstruction": canvas.clamp(0, 1),
        }
