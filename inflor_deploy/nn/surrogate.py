"""Heaviside spike function with a surrogate gradient.

The forward pass is the exact spike decision used everywhere else in the
project (the paper fires on ``>=``)::

    O = Theta(x) = 1 if x >= 0 else 0          x = phi(H) - vth  (or H - vth)

Theta has zero derivative almost everywhere, so training replaces dTheta/dx
by a smooth or boxed surrogate ``g(x)``. All three surrogates offered here
have peak height ``1 / width`` at ``x = 0`` and unit area, so ``width`` means
the same thing for each of them (the range of membranes that receive
gradient) and switching kind does not rescale the learning signal:

* rectangular: ``g(x) = 1/width`` if ``|x| < width/2`` else ``0``
  (the STBP / tdBN box).
* sigmoid: ``g(x) = k * s(kx) * (1 - s(kx))`` with ``s`` the logistic
  sigmoid and ``k = 4/width``, i.e. the derivative of ``s(4x/width)``.
* arctan: ``g(x) = (1/width) / (1 + (pi * x / width)^2)``, i.e. the
  derivative of ``1/2 + arctan(pi * x / width) / pi`` (SpikingJelly's ATan
  with ``alpha = 2/width``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["Surrogate", "SURROGATE_KINDS", "spike_fn", "surrogate_gradient"]

SURROGATE_KINDS: tuple[str, ...] = ("rectangular", "sigmoid", "arctan")


@dataclass(frozen=True)
class Surrogate:
    """Which surrogate derivative replaces dTheta/dx during training.

    Attributes:
        kind: ``"rectangular"``, ``"sigmoid"`` or ``"arctan"`` (equations in
            the module docstring).
        width: Width of the surrogate window, > 0; the peak gradient is
            ``1 / width`` for every kind.
    """

    kind: Literal["rectangular", "sigmoid", "arctan"] = "rectangular"
    width: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SURROGATE_KINDS:
            raise ValueError(
                f"Surrogate kind must be one of {', '.join(SURROGATE_KINDS)}; got {self.kind!r}"
            )
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)):
            raise ValueError(f"Surrogate width must be a positive number; got {self.width!r}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"Surrogate width must be finite and > 0; got {self.width!r}")


def surrogate_gradient(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """The surrogate derivative ``g(x)`` that stands in for dTheta/dx.

    Args:
        x: Distance of the (rectified) membrane from the threshold.
        surrogate: Which ``g`` to use (see the module docstring).

    Returns:
        ``g(x)``, same shape and dtype as ``x``.
    """
    w = float(surrogate.width)
    if surrogate.kind == "rectangular":
        return (x.abs() < w / 2.0).to(x.dtype) / w
    if surrogate.kind == "sigmoid":
        k = 4.0 / w
        # s(kx) * s(-kx) equals s(kx) * (1 - s(kx)) but avoids the
        # cancellation in 1 - s for large x, so g stays accurate and symmetric.
        return k * torch.sigmoid(k * x) * torch.sigmoid(-k * x)
    # arctan (the dataclass guarantees the kind is one of the three)
    return (1.0 / w) / (1.0 + (math.pi * x / w) ** 2)


class _SpikeFunction(torch.autograd.Function):
    """Theta(x) forward, ``grad * g(x)`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_output * surrogate_gradient(x, ctx.surrogate), None


def spike_fn(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Heaviside spike ``Theta(x) = (x >= 0)`` with surrogate gradient ``g(x)``.

    When no gradient is needed (``torch.no_grad``, or ``x`` does not require
    grad) the plain comparison is returned instead of the autograd Function:
    the values are identical, and tracers/exporters then see an ordinary
    ``>=`` and cast rather than an opaque Python Function.

    Args:
        x: Distance of the (rectified) membrane from the threshold,
            ``phi(H) - vth`` or ``H - vth``.
        surrogate: Surrogate derivative used in the backward pass.

    Returns:
        Spikes in {0, 1}, same shape and dtype as ``x``.
    """
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a Surrogate, got {type(surrogate).__name__}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _SpikeFunction.apply(x, surrogate)
    return (x >= 0).to(x.dtype)
