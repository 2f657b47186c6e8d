"""The leaf layer of multivariate Normal leaves: one full-covariance Gaussian per leaf region and component.

Leaf regions are grouped by their number of variables ``d`` (a random region
graph has one or two sizes); each group holds its parameters as ``loc (R_d,
K, d)`` and ``factor (R_d, K, d, d)`` (see :mod:`spnkit.leaves.mvn`), and the
layer's output rows are gathered back into the leaf layer's order. The only
loops run over the groups and over blocks of samples that bound memory.

Masks marginalize exactly, per sample: the log-density of the observed
sub-vector ``o`` of a region, with hidden entries ``h``, is computed from the
natural parameters ``(P, l, c)`` (precision, ``P loc``, constant) as

    ``log p(x_o) = c - x_o' P_oo x_o / 2 + l_o' x_o + |h| log(2 pi) / 2 - log det P_hh / 2 + b' P_hh^-1 b / 2``

with ``b = l_h - P_ho x_o``: a Gaussian integral over ``x_h``. Batched over
samples and components by one ``d x d`` Cholesky factorization each of
``P~ = P * (h h') + diag(o)``, which equals ``P_hh`` on the hidden entries and
the identity on the observed ones. Written in the natural parameters, its
gradient with respect to them is EM's expected statistics, the conditional
moments of the hidden entries included. The conditional of ``x_h`` given
``x_o`` is Gaussian with precision ``P_hh`` and mean ``P_hh^-1 b``: sampling,
MPE (max-product keeps ``b' P_hh^-1 b / 2``, the maximum over ``x_h``) and
conditional expectations read it from the same factorization.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..leaves.mvn import MultivariateNormal
from .leaf_base import LeafLayerBase, Natural

__all__ = ["MVNLeafLayer"]

_LOG_2PI = math.log(2 * math.pi)
_BLOCK_BYTES = 32 * 2**20  # temporaries of the masked path, per block of samples


def _sample_blocks(batch: int, per_sample_bytes: int) -> list[slice]:
    """Slices of the batch whose masked-path temporaries stay under :data:`_BLOCK_BYTES`."""
    step = max(1, _BLOCK_BYTES // max(1, per_sample_bytes))
    return [slice(i, min(i + step, batch)) for i in range(0, batch, step)]


def _symmetric(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _condition(x: Tensor, hidden: Tensor, prec: Tensor, lin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pieces of the Gaussian integral over hidden entries (shapes broadcast; ``x, hidden (..., d)``, ``prec (..., d, d)``).

    Returns:
        ``x_o`` (zero where hidden), ``P x_o``, ``b = hidden * (l - P x_o)`` (each ``(..., d)``)
        and the Cholesky factor of ``P~ = P * (h h') + diag(o)`` ``(..., d, d)``.
    """
    obs = ~hidden
    xo = torch.where(obs, x, x.new_zeros(()))
    px = (prec @ xo.unsqueeze(-1)).squeeze(-1)
    hf = hidden.to(x.dtype)
    b = hf * (lin - px)
    tilde = prec * (hf.unsqueeze(-1) * hf.unsqueeze(-2)) + torch.diag_embed(obs.to(x.dtype))
    return xo, px, b, torch.linalg.cholesky(tilde)


class MVNLeafLayer(LeafLayerBase):
    """``K`` full-covariance Gaussians per leaf region, over the region's variables.

    Regions with no variables (possible inside a :class:`~spnkit.layers.MixedLeafLayer`)
    contribute log 1 = 0.

    Args:
        leaf: the family (bounds and initial means).
        scopes: the variables of each leaf region.
        num_vars: ``D``.
        num_leaves: ``K``.
    """

    group: Tensor
    local: Tensor
    order: Tensor

    def __init__(self, leaf: MultivariateNormal, scopes: list[tuple[int, ...]], num_vars: int, num_leaves: int) -> None:
        super().__init__()
        self.leaf = leaf
        self.num_vars, self.num_leaves = num_vars, num_leaves
        R = len(scopes)
        n_max = max(1, max(len(s) for s in scopes))
        index = torch.full((R, n_max), num_vars, dtype=torch.long)
        for r, scope in enumerate(scopes):  # structure compilation, not the forward pass
            index[r, : len(scope)] = torch.as_tensor(scope, dtype=torch.long)
        self.register_buffer("var_index", index, persistent=False)
        self.sizes = tuple(sorted({len(s) for s in scopes if s}))
        group = torch.full((R,), -1, dtype=torch.long)  # group of each row (-1: no variables)
        local = torch.zeros(R, dtype=torch.long)  # position within its group
        order = torch.full((R,), sum(1 for s in scopes if s), dtype=torch.long)  # row of the groups' concatenation
        params: dict[str, nn.Parameter] = {}
        start = 0
        for g, d in enumerate(self.sizes):
            rows = [r for r, s in enumerate(scopes) if len(s) == d]
            rows_t = torch.tensor(rows, dtype=torch.long)
            group[rows_t], local[rows_t] = g, torch.arange(len(rows))
            order[rows_t] = torch.arange(start, start + len(rows))
            start += len(rows)
            self.register_buffer(f"rows_{d}", rows_t, persistent=False)
            self.register_buffer(f"index_{d}", torch.tensor([scopes[r] for r in rows], dtype=torch.long), persistent=False)
            init = leaf.init_params((len(rows), num_leaves), d, torch.get_default_dtype())
            params[f"d{d}_loc"], params[f"d{d}_factor"] = nn.Parameter(init["loc"]), nn.Parameter(init["factor"])
        self.register_buffer("group", group, persistent=False)
        self.register_buffer("local", local, persistent=False)
        self.register_buffer("order", order, persistent=False)
        self.params = nn.ParameterDict(params)

    # ---------------------------------------------------------- parameters
    def group_params(self, d: int) -> dict[str, Tensor]:
        """``loc (R_d, K, d)`` and ``factor (R_d, K, d, d)`` of the regions with ``d`` variables."""
        return {"loc": self.params[f"d{d}_loc"], "factor": self.params[f"d{d}_factor"]}

    def group_index(self, d: int) -> tuple[Tensor, Tensor]:
        """The leaf-layer rows ``(R_d,)`` of the regions with ``d`` variables and their variables ``(R_d, d)``."""
        return getattr(self, f"rows_{d}"), getattr(self, f"index_{d}")

    def natural(self) -> tuple[Tensor, ...]:
        """Per size group, ``(prec (R_d, K, d, d), prec loc (R_d, K, d), c (R_d, K))``, concatenated."""
        return tuple(t for d in self.sizes for t in self.leaf.natural(self.group_params(d)))

    def _groups(self, eta: Natural | None) -> list[tuple[Tensor, Tensor, Tensor]]:
        flat = self.natural() if eta is None else eta
        if not isinstance(flat, tuple) or len(flat) != 3 * len(self.sizes):
            raise ValueError(f"natural parameters of a multivariate Normal layer are {3 * len(self.sizes)} tensors")
        return [(flat[3 * g], flat[3 * g + 1], flat[3 * g + 2]) for g in range(len(self.sizes))]

    def counts_match(self, counts: object) -> bool:
        if not isinstance(counts, tuple) or len(counts) != 3 * len(self.sizes):
            return False
        K = self.num_leaves
        for g, d in enumerate(self.sizes):
            r = self.group_index(d)[0].numel()
            shapes = [(r, K, d, d), (r, K, d), (r, K)]
            if any(not isinstance(c, Tensor) or tuple(c.shape) != s for c, s in zip(counts[3 * g : 3 * g + 3], shapes)):
                return False
        return True

    def effective_parameter_counts(self) -> Tensor:
        d = (self.var_index < self.num_vars).sum(1).long().cpu()
        return self.num_leaves * (d + d * (d + 1) // 2)

    # ------------------------------------------------------------- forward
    @staticmethod
    def _hidden(w: Tensor | None) -> Tensor | None:
        """Hidden entries ``(B, D)`` bool from evidence weights (None: all observed; float weights are 0 or 1 here)."""
        if w is None:
            return None
        return ~w if w.dtype == torch.bool else w <= 0

    def forward(self, x: Tensor, w: Tensor | None, eta: Natural | None = None, finite: bool = False) -> Tensor:
        return self._run(x, self._hidden(w), eta, peak=False)

    def forward_max(self, x: Tensor, w: Tensor | None) -> Tensor:
        return self._run(x, self._hidden(w), None, peak=True)

    def _run(self, x: Tensor, hidden: Tensor | None, eta: Natural | None, peak: bool) -> Tensor:
        """``(R, B, K)`` log-values (``peak``: maximized over hidden entries instead of integrated)."""
        B, K = x.shape[0], self.num_leaves
        parts = []
        for d, (prec, lin, const) in zip(self.sizes, self._groups(eta)):
            _, idx = self.group_index(d)
            xg = x[:, idx].permute(1, 0, 2)  # (R_d, B, d)
            hg = None if hidden is None else hidden[:, idx].permute(1, 0, 2)
            if hg is None or not bool(hg.any()):
                lp = self._observed(xg, prec, lin, const)
            elif not peak and bool(hg.all()):  # nothing observed: every density integrates to 1
                lp = (const * 0).unsqueeze(1).expand(-1, B, -1)  # zeros, still a function of the parameters
            else:
                ps = _symmetric(prec)  # the density reads P only through x' P x: any P gives its symmetric part's gradient
                step = _sample_blocks(B, 3 * prec.shape[0] * K * d * d * x.element_size())
                lp = torch.cat([self._masked(xg[:, s], hg[:, s], ps, lin, const, peak) for s in step], dim=1)
            parts.append(lp.transpose(1, 2))  # (R_d, K, B)
        parts.append(x.new_zeros(1, K, B))  # regions without variables
        return torch.cat(parts).index_select(0, self.order).transpose(1, 2)  # (R, B, K), batch-fastest

    @staticmethod
    def _observed(xg: Tensor, prec: Tensor, lin: Tensor, const: Tensor) -> Tensor:
        """Every entry observed: ``-x' P x / 2 + l' x + c``, ``(R_d, B, K)``."""
        px = torch.einsum("rbi,rkij->rbkj", xg, prec)
        quad = (px * xg.unsqueeze(2)).sum(-1)
        return torch.einsum("rbi,rki->rbk", xg, lin) - 0.5 * quad + const.unsqueeze(1)

    @staticmethod
    def _masked(xg: Tensor, hg: Tensor, prec: Tensor, lin: Tensor, const: Tensor, peak: bool) -> Tensor:
        """Some entries hidden: the Gaussian integral (or maximum) over them, ``(R_d, b, K)``."""
        xo, px, b, chol = _condition(xg.unsqueeze(2), hg.unsqueeze(2), prec.unsqueeze(1), lin.unsqueeze(1))  # (R, b, K, d[, d])
        observed = (lin.unsqueeze(1) * xo).sum(-1) - 0.5 * (px * xo).sum(-1) + const.unsqueeze(1)
        y = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False).squeeze(-1)
        out = observed + 0.5 * (y * y).sum(-1)
        if not peak:
            log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # log det P_hh / 2
            out = out - log_det + (0.5 * _LOG_2PI) * hg.sum(-1, keepdim=True).to(out.dtype)
        return out

    # ----------------------------------------------------------- downward
    def _pairs(self, region: Tensor, d: int, g: int) -> tuple[Tensor, Tensor]:
        """Positions ``(A_g,)`` of the pairs whose region lies in group ``g``, and those regions' positions in the group."""
        sel = torch.nonzero(self.group[region] == g).squeeze(1)
        return sel, self.local[region[sel]]

    @torch.no_grad()
    def fill(self, region: Tensor, choice: Tensor, sample: Tensor, x: Tensor, m: Tensor, greedy: bool,
             generator: torch.Generator | None, out: Tensor) -> None:
        """Hidden entries from the chosen component's conditional given the region's observed ones (mode: its mean).

        Observed entries get their value when sampling and the component's
        mean when ``greedy`` (a reconstruction, read with ``keep_observed=False``).
        """
        for g, (d, (prec, lin, _)) in enumerate(zip(self.sizes, self._groups(None))):
            sel, pos = self._pairs(region, d, g)
            if sel.numel() == 0:
                continue
            k, s = choice[sel], sample[sel]
            idx = self.group_index(d)[1][pos]  # (A_g, d)
            xv, hv = x[s.unsqueeze(1), idx], m[s.unsqueeze(1), idx] > 0
            _, _, b, chol = _condition(xv, hv, prec[pos, k], lin[pos, k])
            mean = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)  # 0 at observed entries
            if greedy:
                vals = torch.where(hv, mean, self.group_params(d)["loc"][pos, k])
            else:
                z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
                noise = torch.linalg.solve_triangular(chol.transpose(-1, -2), z.unsqueeze(-1), upper=True).squeeze(-1)
                vals = torch.where(hv, mean + noise, xv)
            out[s.unsqueeze(1), idx] = vals.to(out.dtype)

    @torch.no_grad()
    def moments(self, x: Tensor, hidden: Tensor, posterior: Tensor) -> tuple[Tensor, Tensor]:
        dt = posterior.dtype
        x = x.to(dt)
        B, D = x.shape
        groups = self._groups(self.natural_of(dt))
        # centre of each variable: its components' mean mean (index D collects nothing)
        slots, centre = x.new_zeros(D + 1), x.new_zeros(D + 1)
        for d in self.sizes:
            idx = self.group_index(d)[1].reshape(-1)
            slots.index_add_(0, idx, torch.ones_like(idx, dtype=dt))
            centre.index_add_(0, idx, self.group_params(d)["loc"].detach().to(dt).mean(1).reshape(-1))
        centre = centre / slots.clamp_min(1)
        first, second = x.new_zeros(B, D + 1), x.new_zeros(B, D + 1)
        for d, (prec, lin, _) in zip(self.sizes, groups):
            rows, idx = self.group_index(d)
            post = posterior[rows]  # (R_d, B, K)
            xg, hg = x[:, idx].permute(1, 0, 2), hidden[:, idx].permute(1, 0, 2)  # (R_d, B, d)
            c = centre[idx].unsqueeze(1).unsqueeze(1)  # (R_d, 1, 1, d)
            eye = torch.eye(d, dtype=dt, device=x.device)
            c1, c2 = [], []
            for s in _sample_blocks(B, 4 * prec.shape[0] * self.num_leaves * d * d * x.element_size()):
                h = hg[:, s].unsqueeze(2)  # (R_d, b, 1, d)
                _, _, b, chol = _condition(xg[:, s].unsqueeze(2), h, prec.unsqueeze(1), lin.unsqueeze(1))
                mean = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)  # (R_d, b, K, d): the hidden entries' conditional mean
                dev = torch.where(h, mean, xg[:, s].unsqueeze(2)) - c
                inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)  # L^-1
                var = (inv * inv).sum(-2) * h  # diag(P~^-1) on hidden entries: the conditional variances
                p = post[:, s].unsqueeze(-1)  # (R_d, b, K, 1)
                c1.append((p * dev).sum(2))
                c2.append((p * (var + dev * dev)).sum(2))
            flat_idx = idx.reshape(-1)
            first.index_add_(1, flat_idx, torch.cat(c1, 1).permute(1, 0, 2).reshape(B, -1))
            second.index_add_(1, flat_idx, torch.cat(c2, 1).permute(1, 0, 2).reshape(B, -1))
        first, second = first[:, :D], second[:, :D]
        return centre[:D] + first, (second - first * first).clamp_min(0)

    def natural_of(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """:meth:`natural` computed from the parameters cast to ``dtype``, without a graph."""
        with torch.no_grad():
            return tuple(t for d in self.sizes
                         for t in self.leaf.natural({k: v.detach().to(dtype) for k, v in self.group_params(d).items()}))

    # ------------------------------------------------------------------ EM
    @torch.no_grad()
    def init_from_data(self, x: Tensor, observed: Tensor, weights: Tensor, pseudocount: float) -> None:
        """Each component fitted to the rows where its region is fully observed, weighted by ``weights[k]``."""
        for d in self.sizes:
            _, idx = self.group_index(d)
            xg = x[:, idx]  # (N, R_d, d)
            full = observed[:, idx].prod(-1)  # (N, R_d): 1 where every variable of the region is observed
            wk = weights.unsqueeze(2) * full.unsqueeze(0)  # (K, N, R_d)
            count = wk.sum(1).t()  # (R_d, K)
            s1 = torch.einsum("knr,nri->rki", wk, xg)
            s2 = torch.einsum("knr,nri,nrj->rkij", wk, xg, xg)
            self.set_group_params(d, self.leaf.m_step((-0.5 * s2, s1, count), self.group_params(d), pseudocount))

    def set_group_params(self, d: int, new: dict[str, Tensor]) -> None:
        """Write ``loc`` and ``factor`` of the regions with ``d`` variables (in place)."""
        self.params[f"d{d}_loc"].copy_(new["loc"])
        self.params[f"d{d}_factor"].copy_(new["factor"])

    @torch.no_grad()
    def m_step(self, counts: Natural, step_size: float, pseudocount: float) -> None:
        leaf = self.leaf
        for d, stats in zip(self.sizes, self._groups(counts)):
            old = {k: v.detach() for k, v in self.group_params(d).items()}
            new = leaf.m_step(stats, old, pseudocount)
            if step_size < 1:  # stochastic EM: mix E[T] of the old and the new parameters, map back
                m0, m1, m2 = ((1 - step_size) * a + step_size * b
                              for a, b in zip(leaf.mean_statistics(old), leaf.mean_statistics(new)))
                back = leaf.m_step((m0, m1, m2), old)
                seen = stats[2] > 1e-12  # components without data keep their parameters exactly
                new = {"loc": torch.where(seen.unsqueeze(-1), back["loc"], old["loc"]),
                       "factor": torch.where(seen.unsqueeze(-1).unsqueeze(-1), back["factor"], old["factor"])}
            self.set_group_params(d, new)
