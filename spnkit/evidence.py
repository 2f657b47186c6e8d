"""Validated inputs of a circuit, and what an upward pass returns.

:meth:`spnkit.SPN.prepare` checks values and a marginalization mask once and
returns an :class:`Evidence`; :meth:`spnkit.SPN.upward` runs the layers on it
(optionally with parameters of the caller's, :class:`CircuitParams`) and
returns a :class:`Trace`. Training loops validate their data once and slice the
evidence per mini-batch.

Mask polarity, everywhere in spnkit: True (or 1.0) = unobserved, integrated out;
a float ``m`` in (0, 1) is soft evidence (each factor's log-density weighted by
``1 - m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .leaves import LeafFamily

__all__ = ["Evidence", "Trace", "CircuitParams", "validate", "root_choice"]


@dataclass(frozen=True)
class Evidence:
    """Values and mask of a batch, validated for one circuit.

    Attributes:
        values: ``(B, D)`` in the circuit's dtype. Under a float mask, entries
            with ``m >= 1`` are 0; under a bool mask unobserved entries hold
            whatever was given (NaN included).
        marginalized: None (all observed), bool ``(B, D)`` (True = unobserved)
            or float ``(B, D)`` in [0, 1] in the circuit's dtype.
        finite: every entry of ``values`` is known finite (validated).
    """

    values: Tensor
    marginalized: Tensor | None
    finite: bool = False

    @property
    def num_samples(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, rows: Tensor | slice) -> "Evidence":
        """The evidence of some samples (an index tensor or a slice of rows)."""
        m = None if self.marginalized is None else self.marginalized[rows]
        return Evidence(self.values[rows], m, self.finite)

    def leaf_input(self) -> tuple[Tensor, Tensor | None]:
        """Values and evidence weights for the leaf layer: ``w`` None (all observed), bool observed entries, or float ``1 - m``."""
        m = self.marginalized
        if m is None:
            return self.values, None
        return self.values, (~m if m.dtype == torch.bool else 1 - m)

    def float_input(self) -> tuple[Tensor, Tensor]:
        """Values zeroed where fully unobserved, and the mask as float ``(B, D)`` (zeros when None): the form sampling and MPE work on."""
        x, m = self.values, self.marginalized
        if m is None:
            return x, torch.zeros_like(x)
        if m.dtype != torch.bool:
            return x, m
        mf = m.to(x.dtype)
        # x - x m: the same zeros in one arithmetic pass where every value is finite (a bool masked_fill took 3x as long)
        return (torch.addcmul(x, x, mf, value=-1.0) if self.finite else x.masked_fill(m, 0.0)), mf


@dataclass(frozen=True)
class CircuitParams:
    """Parameters to run a circuit with instead of its own (EM reads expected counts as their gradients).

    Attributes:
        leaf_natural: natural parameters of the leaf layer in the layer's own
            structure (:meth:`spnkit.layers.LeafLayerBase.natural`: a tensor
            ``(R, n, K, S)`` for factorized leaves, a tuple of tensors for
            multivariate and mixed ones), or None for the layer's own.
        log_weights: normalized log-weights of every sum layer, in the order of
            :attr:`spnkit.SPN.sum_layers` (each ``(A, I, K)``), or None for their own.
    """

    leaf_natural: Tensor | tuple[Tensor, ...] | None = None
    log_weights: tuple[Tensor, ...] | None = None


@dataclass(frozen=True)
class Trace:
    """Values of one upward pass.

    Attributes:
        blocks: batch-fastest ``(rows, K_max, B)`` blocks: the leaf layer's rows,
            then each height's region vectors (see :mod:`spnkit.layers`).
        parts: per height, the partition outputs ``(P, B, K_out)``.
        root: ``(B, num_classes)`` log-values of the root sums.
        leaf: ``(R0, B, K)`` the leaf layer's output. Run with
            ``upward(..., leaf_grad=True)`` it is a tensor that requires grad,
            and the gradient of the summed root log-likelihood with respect to
            it is, per sample, the probability that each leaf component lies in
            the induced tree (the posterior of the circuit's latent choices).
    """

    blocks: tuple[Tensor, ...]
    parts: tuple[Tensor, ...]
    root: Tensor
    leaf: Tensor | None = None

    @property
    def buf(self) -> Tensor:
        """``(rows, B, K_max)``: every region vector in the blocks, by global row."""
        return torch.cat(self.blocks).transpose(1, 2)


def validate(x: object, marginalized: object, *, num_vars: int, dtype: torch.dtype, device: torch.device, leaf: "LeafFamily",
             check_values: bool, name: str = "x") -> Evidence:
    """The :class:`Evidence` of ``x`` and a mask for a circuit over ``num_vars`` variables of ``dtype`` on ``device``.

    Shapes, devices and dtypes are always checked. With ``check_values`` (the
    circuit's ``validate_args``) also: NaN or inf at observed entries, values
    outside the leaf family's support (checked on ``x`` as given, before the
    cast to the circuit's dtype) and float masks outside [0, 1]; these checks
    synchronize with the device.

    Raises:
        ValueError: one line saying what was expected.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (batch, {num_vars}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != num_vars:
        raise ValueError(f"{name} must have shape (batch, {num_vars}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no samples (shape {tuple(x.shape)}); pass at least one row")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the SPN is on {device}; move one of them")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be a real float or integer tensor, got {x.dtype}")
    msg = leaf.dtype_error(dtype)
    if msg is not None:
        raise ValueError(msg)
    m: Tensor | None = None
    if marginalized is not None:
        if not isinstance(marginalized, Tensor):
            raise ValueError(f"marginalized must be a torch.Tensor (bool, or float in [0, 1]), got {type(marginalized).__name__}")
        if marginalized.shape != x.shape:
            raise ValueError(f"marginalized must have the shape of {name}, {tuple(x.shape)}; got {tuple(marginalized.shape)} (no broadcasting)")
        if marginalized.device != x.device:
            raise ValueError(f"marginalized is on {marginalized.device} but {name} is on {x.device}")
        if marginalized.dtype == torch.bool:
            m = marginalized
        elif marginalized.is_floating_point():
            if check_values and bool(((marginalized < 0) | (marginalized > 1) | torch.isnan(marginalized)).any()):
                raise ValueError("a float mask must lie in [0, 1] (1 = unobserved); got values outside or NaN")
            m = marginalized.to(dtype)
            if not leaf.soft_evidence and bool(((m > 0) & (m < 1)).any()):
                raise ValueError(f"{type(leaf).__name__} leaves take hard evidence only: a bool mask, or a float mask of 0s "
                                 "and 1s (soft evidence 0 < m < 1 has no meaning for a joint factor)")
        else:
            raise ValueError(f"marginalized must be bool or float in [0, 1], got dtype {marginalized.dtype}")
    given = x
    x = x.to(dtype)
    finite = check_values and _check_values(x, given, m, leaf, name)
    if m is not None and m.dtype != torch.bool:  # unobserved values never enter the arithmetic
        x = x.masked_fill(m >= 1, 0.0)
    return Evidence(x, m, finite)


def root_choice(which: object, batch: int, num_classes: int, device: torch.device) -> Tensor | None:
    """A root sum given per sample as ``(batch,)`` long, validated; None stays None (the posterior is to choose).

    Raises:
        ValueError: unless ``which`` is None, an int or an integer tensor of shape ``()`` or ``(batch,)`` in ``[0, num_classes)``.
    """
    if which is None:
        return None
    ok = hasattr(type(which), "__index__") and not isinstance(which, (bool, Tensor))  # int, numpy int
    if isinstance(which, Tensor):
        ok = not (which.is_floating_point() or which.is_complex() or which.dtype == torch.bool) and which.shape in ((), (batch,))
    if not ok:
        raise ValueError(f"root must be None, an int or an integer tensor of shape () or ({batch},), got {which!r}")
    out = torch.as_tensor(which, device=device, dtype=torch.long).expand(batch)
    if bool(((out < 0) | (out >= num_classes)).any()):
        raise ValueError(f"root must index one of the {num_classes} root sums")
    return out


def _check_values(x: Tensor, given: Tensor, m: Tensor | None, leaf: "LeafFamily", name: str) -> bool:
    """Raise on NaN/inf (in the circuit's dtype ``x``) or out-of-support values (in ``given``, as passed) at observed entries.

    Returns whether every entry of ``x`` is finite.
    """
    # one reduction in the common case: a sum is finite only if every entry is (NaN and inf
    # propagate; a finite sum that overflows takes the exact check)
    all_finite = bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
    observed = None if m is None else m < 1  # bool m: True (unobserved) < 1 is False
    if not all_finite:
        bad = ~torch.isfinite(x) if observed is None else observed & ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(f"{name} has NaN or inf at {int(bad.sum())} observed entries; mark missing entries in `marginalized` instead")
    if leaf.restricted_support:
        msg = leaf.support_error(given if given.is_floating_point() else given.to(torch.float64), observed)
        if msg is not None:
            raise ValueError(msg)
    return all_finite
