"""Expectation-maximization for compiled circuits.

E-step: the expected counts of every sum weight and the expected sufficient
statistics of every leaf come from ONE backward pass. The upward pass is run on
detached copies of the normalized log-weights and of the leaf natural
parameters that require grad; the gradient of the summed root log-likelihood
``L`` gives

* ``dL/d(log w) = w * dL/dw``, the expected number of times each weight's edge
  lies in the induced tree (Peharz et al., "On the latent variable
  interpretation in SPNs", 2016), and
* ``dL/d(eta)``, the responsibility-weighted sufficient statistics of each leaf
  factor (marginalized entries contribute nothing: their factor integrates to 1
  whatever the parameters).

M-step: sum weights become the normalized counts and the leaf layer sets its
parameters from its statistics (:meth:`spnkit.layers.LeafLayerBase.m_step`:
``leaf.m_step`` per factor for factorized families; the closed-form mean and
covariance for multivariate Normal leaves; per family for mixed circuits). With a step size below 1 the update is the stochastic
(online) EM of EinsumNetworks (Peharz et al., ICML 2020): new and old estimates
are mixed in the mean-parameter space, ``w <- (1 - s) w + s n / sum(n)`` and
``E[T] <- (1 - s) E_old[T] + s E_new[T]``.

Example:
    >>> import torch, spnkit
    >>> from spnkit.learn import expected_counts, m_step
    >>> rg = spnkit.RegionGraph.random(num_vars=4, depth=1, repetitions=2, seed=0)
    >>> spn = spnkit.SPN(rg, spnkit.Bernoulli(), num_sums=2, num_leaves=2).double()
    >>> x = torch.randint(0, 2, (64, 4)).double()
    >>> before = spn.log_prob(x).sum()
    >>> m_step(spn, expected_counts(spn, x))
    >>> bool(spn.log_prob(x).sum() >= before)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..circuit import SPN
from ..evidence import CircuitParams, Evidence
from ..layers.leaf_base import Natural, flat, unflat

__all__ = ["Counts", "expected_counts", "e_step", "m_step", "check_labels", "root_log_likelihood"]

#: smallest sum weight written by the M-step (keeps log-weights finite)
WEIGHT_FLOOR = 1e-12


@dataclass
class Counts:
    """Expected counts of one or more batches; ``a + b`` accumulates two.

    Attributes:
        weights: expected counts of the weights of every sum layer, in the order
            of :attr:`spnkit.SPN.weighted_layers` (each ``(A, I, K)``, like the layer's logits).
        leaves: expected sufficient statistics of the leaf layer, in the
            structure of its natural parameters (:meth:`spnkit.SPN.params`): a
            tensor ``(R, n, K, S)`` for factorized leaves, a tuple of tensors for
            multivariate and mixed ones.
        log_likelihood: summed log-likelihood of the samples (0-dim, detached).
        num_samples: number of samples.
    """

    weights: list[Tensor]
    leaves: Natural
    log_likelihood: Tensor
    num_samples: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            [a + b for a, b in zip(self.weights, other.weights)],
            unflat(self.leaves, [a + b for a, b in zip(flat(self.leaves), flat(other.leaves))]),
            self.log_likelihood + other.log_likelihood,
            self.num_samples + other.num_samples,
        )

    @classmethod
    def zeros(cls, spn: SPN) -> "Counts":
        """The counts of no samples (what a process with an empty shard contributes)."""
        with torch.no_grad():
            params = spn.params()
        leaves = params.leaf_natural
        assert leaves is not None and params.log_weights is not None
        return cls([torch.zeros_like(w) for w in params.log_weights], unflat(leaves, [torch.zeros_like(t) for t in flat(leaves)]),
                   torch.zeros((), dtype=spn.dtype, device=spn.device), 0)


def root_log_likelihood(root: Tensor, labels: Tensor | None) -> Tensor:
    """The generative objective per sample ``(B,)`` from root values ``(B, C)``.

    ``log p(x | y)`` with labels; without them ``log p(x)`` (for ``C > 1`` the
    roots are mixed with a uniform class prior).
    """
    if labels is not None:
        return root.gather(1, labels.view(-1, 1)).squeeze(1)
    if root.shape[1] == 1:
        return root[:, 0]
    return torch.logsumexp(root, dim=1) - math.log(root.shape[1])


def expected_counts(spn: SPN, x: Tensor, marginalized: Tensor | None = None, labels: Tensor | None = None) -> Counts:
    """E-step: expected counts of every weight and statistics of every leaf.

    Args:
        spn: the circuit (its parameters are read, not changed).
        x: ``(B, D)`` data.
        marginalized: ``(B, D)`` mask, True / 1.0 = unobserved (missing values).
        labels: ``(B,)`` class indices when ``num_classes > 1``: counts of
            ``log p(x | y)`` under the labelled root.

    Returns:
        the :class:`Counts` of the batch.

    Raises:
        ValueError: on malformed inputs, or if a sample has zero likelihood.
    """
    evidence = spn.prepare(x, marginalized)
    return e_step(spn, evidence, check_labels(spn, labels, evidence.num_samples))[0]


def check_labels(spn: SPN, labels: Tensor | None, batch: int) -> Tensor | None:
    """Validate class labels: None or an integer tensor ``(batch,)`` in ``[0, num_classes)``."""
    if labels is None:
        return None
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer torch.Tensor of shape ({batch},), got {getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if spn.num_classes == 1:
        raise ValueError("labels need a circuit with num_classes > 1")
    if bool(((labels < 0) | (labels >= spn.num_classes)).any()):
        raise ValueError(f"labels must lie in 0..{spn.num_classes - 1}")
    return labels.to(device=spn.device, dtype=torch.long)


def e_step(spn: SPN, evidence: Evidence, labels: Tensor | None) -> tuple[Counts, Tensor]:
    """E-step on prepared evidence (and long labels or None); also returns the detached root values ``(B, C)``.

    The upward pass runs on detached copies of the current parameters that
    require grad; one backward pass of the summed log-likelihood gives the counts.
    """
    with torch.no_grad():
        current = spn.params()
    assert current.leaf_natural is not None and current.log_weights is not None
    eta = [t.detach().requires_grad_() for t in flat(current.leaf_natural)]
    log_w = [w.detach().requires_grad_() for w in current.log_weights]
    with torch.enable_grad():
        root = spn.upward(evidence, params=CircuitParams(unflat(current.leaf_natural, eta), tuple(log_w)), root_only=True).root  # (B, C)
        ll = root_log_likelihood(root, labels)  # (B,)
        if not bool(torch.isfinite(ll).all()):
            raise ValueError("a sample has zero likelihood (log-likelihood -inf or NaN); EM needs every sample to have positive density")
        total = ll.sum()
        inputs = [*eta, *log_w]
        grads = torch.autograd.grad(total, inputs, allow_unused=True)  # a layer without weights (empty) is unused
    counts = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    n = len(eta)
    return Counts(counts[n:], unflat(current.leaf_natural, counts[:n]), total.detach(), evidence.num_samples), root.detach()


@torch.no_grad()
def m_step(spn: SPN, counts: Counts, step_size: float = 1.0, *, weight_pseudocount: float = 0.0,
           leaf_pseudocount: float = 0.0) -> None:
    """M-step: set the parameters of ``spn`` from expected counts, in place.

    Args:
        spn: the circuit whose counts these are.
        counts: from :func:`expected_counts` (summed over batches for full-batch EM).
        step_size: 1 for the exact M-step; ``0 < s < 1`` mixes old and new
            estimates in mean-parameter space (stochastic EM).
        weight_pseudocount: a symmetric Dirichlet prior on every sum's weights:
            this many pseudo-counts in total, spread evenly over its inputs
            (0: maximum likelihood).
        leaf_pseudocount: the leaf family's prior strength per factor (see
            :meth:`spnkit.Leaf.m_step`: Dirichlet/Beta pseudo-counts for
            discrete families, pseudo-observations of the prior variance for
            Normal and multivariate Normal ones, of the count 1 for Poisson ones).

    Sum weights or leaf factors that received no count (and have no prior) keep their values.
    """
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must lie in (0, 1], got {step_size!r}")
    for name, value in (("weight_pseudocount", weight_pseudocount), ("leaf_pseudocount", leaf_pseudocount)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    layers = spn.weighted_layers
    if len(counts.weights) != len(layers) or any(c.shape != m.logits.shape for c, m in zip(counts.weights, layers)) \
            or not spn.leaf_layer.counts_match(counts.leaves):
        raise ValueError("these counts belong to a circuit of another structure")
    for layer, n in zip(layers, counts.weights):
        _update_weights(layer.logits, layer.log_weights(), n, step_size, float(weight_pseudocount))
    spn.leaf_layer.m_step(counts.leaves, step_size, float(leaf_pseudocount))


def _update_weights(logits: Tensor, log_w: Tensor, n: Tensor, step: float, pseudocount: float = 0.0) -> None:
    """Normalized counts (plus the prior's, mixed with the old weights) into ``logits``; normalization runs over dim 1.

    Args:
        logits: the layer's parameter ``(A, I, K)``, written in place.
        log_w: its current normalized log-weights ``(A, I, K)`` (``-inf`` on padding).
        n: expected counts ``(A, I, K)`` (zero on padding).
        pseudocount: the Dirichlet prior's total pseudo-counts per sum, spread over its valid inputs.
    """
    if pseudocount > 0:
        valid = torch.isfinite(log_w).to(n.dtype)  # (A, I, K)
        n = n + pseudocount * valid / valid.sum(1, keepdim=True).clamp_min(1.0)
    total = n.sum(1, keepdim=True)  # (A, 1, K)
    seen = total > 0
    new = n / torch.where(seen, total, torch.ones_like(total))
    if step < 1:
        new = (1 - step) * log_w.exp() + step * new
    logits.copy_(torch.where(seen, new.clamp_min(WEIGHT_FLOOR).log(), logits))
