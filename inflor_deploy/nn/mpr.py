"""The Membrane Potential Rectifier (MPR) of InfLoR-SNN and its exact inverse.

MPR maps the pre-reset membrane ``u`` to ``phi(u)`` before the threshold
comparison, pulling values towards the two spike levels 0 and 1 so that the
quantization error ``(phi(u) - o)^2`` is small (DESIGN.md section 1)::

    phi(u) = 1 - (1 - u)^(1/3)                              u < 0
           = tanh(3(u - 1/2)) / (2 tanh(3/2)) + 1/2         0 <= u <= 1
           = u^(1/3)                                        u > 1

phi is continuous, strictly increasing, and fixes 0, 1/2 and 1. Because it is
strictly increasing, the firing decision survives folding it into the
threshold::

    phi(h) >= vth   <=>   h >= phi^-1(vth)

so at inference MPR changes no spike: it only shapes the surrogate gradient
during training. ``phi_inverse_scalar`` computes that folded threshold.
"""

from __future__ import annotations

import math

import torch

__all__ = ["phi", "phi_inverse", "phi_inverse_scalar"]

# Slope parameter of the middle branch (the "3" in tanh(3(u - 1/2))).
_K = 3.0


def _tanh_half_range(reference: torch.Tensor) -> torch.Tensor:
    """tanh(3/2) computed by torch in ``reference``'s dtype and device.

    Computing the constant with the same kernel and dtype as the data (rather
    than ``math.tanh``) keeps the middle branch consistent with itself, e.g.
    ``tanh(3/2) / (2 tanh(3/2))`` is exactly 1/2 just inside the joins.
    """
    return torch.tanh(torch.full((), _K / 2.0, dtype=reference.dtype, device=reference.device))


def phi(u: torch.Tensor) -> torch.Tensor:
    """Membrane Potential Rectifier, elementwise.

    Equations::

        phi(u) = 1 - (1 - u)^(1/3)                              u < 0
               = tanh(3(u - 1/2)) / (2 tanh(3/2)) + 1/2         0 <= u <= 1
               = u^(1/3)                                        u > 1

    Each branch is evaluated on an input clamped into its own domain and the
    results are selected with ``torch.where``. Without the clamps the unused
    branches would see out-of-domain values (a cube root of a negative number
    is NaN in ``torch.pow``) and their NaN gradients would leak through
    ``where`` (0 * NaN = NaN).

    Args:
        u: Membrane potential, any shape, floating dtype.

    Returns:
        ``phi(u)``, same shape and dtype as ``u``.
    """
    if not torch.is_floating_point(u):
        raise TypeError(f"phi needs a floating-point tensor, got dtype {u.dtype}")
    t = _tanh_half_range(u)
    u_neg = torch.clamp(u, max=0.0)
    u_mid = torch.clamp(u, min=0.0, max=1.0)
    u_pos = torch.clamp(u, min=1.0)
    # 1 - u_neg >= 1 and u_pos >= 1, so both cube roots have positive bases.
    low = 1.0 - torch.pow(1.0 - u_neg, 1.0 / 3.0)
    mid = torch.tanh(_K * (u_mid - 0.5)) / (2.0 * t) + 0.5
    high = torch.pow(u_pos, 1.0 / 3.0)
    # At the joins u = 0 and u = 1 the branches agree mathematically; the
    # outer ones are used there because they are exact in any dtype
    # (1 - 1^(1/3) = 0, 1^(1/3) = 1), so phi fixes 0 and 1 exactly.
    return torch.where(u <= 0.0, low, torch.where(u >= 1.0, high, mid))


def phi_inverse(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`phi`, elementwise.

    Equations (phi maps u<0 to y<0, [0,1] onto [0,1] and u>1 to y>1)::

        phi^-1(y) = 1 - (1 - y)^3                               y < 0
                  = 1/2 + artanh((y - 1/2) * 2 tanh(3/2)) / 3   0 <= y <= 1
                  = y^3                                         y > 1

    On [0, 1] the artanh argument stays within [-tanh(3/2), tanh(3/2)], so it
    never reaches the poles at +-1. The middle branch is clamped for the same
    autograd reason as in :func:`phi`.

    Args:
        y: Rectified membrane values, any shape, floating dtype.

    Returns:
        ``u`` with ``phi(u) == y`` (up to rounding), same shape and dtype.
    """
    if not torch.is_floating_point(y):
        raise TypeError(f"phi_inverse needs a floating-point tensor, got dtype {y.dtype}")
    t = _tanh_half_range(y)
    y_mid = torch.clamp(y, min=0.0, max=1.0)
    low = 1.0 - torch.pow(1.0 - y, 3)
    mid = 0.5 + torch.atanh((y_mid - 0.5) * (2.0 * t)) / _K
    high = torch.pow(y, 3)
    # Outer branches own the joins, as in phi: exact 0 and 1 there.
    return torch.where(y <= 0.0, low, torch.where(y >= 1.0, high, mid))


def phi_inverse_scalar(vth: float) -> float:
    """Folded threshold ``phi^-1(vth)`` in float64 with Python's ``math``.

    Used to fold MPR into the threshold: ``phi(h) >= vth  <=>  h >= phi^-1(vth)``
    because phi is strictly increasing. Same branches as :func:`phi_inverse`.
    For ``vth == 0.5`` the result is exactly 0.5 (artanh(0) == 0), which is
    the paper's setting.

    Args:
        vth: Threshold applied to the rectified membrane; must be finite.

    Returns:
        The equivalent threshold on the raw membrane ``h``.

    Raises:
        ValueError: If ``vth`` is not finite.
    """
    vth = float(vth)
    if not math.isfinite(vth):
        raise ValueError(f"vth must be finite, got {vth}")
    if vth <= 0.0:
        return 1.0 - (1.0 - vth) ** 3
    if vth >= 1.0:
        return vth**3
    return 0.5 + math.atanh((vth - 0.5) * 2.0 * math.tanh(_K / 2.0)) / _K
