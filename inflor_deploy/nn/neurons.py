"""Spiking neurons of InfLoR-SNN (SRIF + MPR) and their IF/LIF baselines.

All neurons share one update (DESIGN.md section 1). Inputs are time-first,
``X: [T, B, ...]``; per timestep ``t`` with ``U[-1] = 0``::

    H[t]  = tau * U[t-1] + X[t]               pre-reset membrane
    H^[t] = phi(H[t]) if mpr else H[t]        MPR only feeds the comparison
    O[t]  = Theta(H^[t] - vth)                fires on >=
    U[t]  = H[t] - reset_amount * O[t]        reset = "subtract"  (soft)
    U[t]  = H[t] * (1 - O[t])                 reset = "zero"      (hard, V_reset = 0)

The named kinds are points in that space:

* ``SRIF``: tau = 1, subtract, reset_amount = 1 (the spike value, NOT vth).
* ``IFNeuron``: tau = 1, zero (hard-reset IF baseline).
* ``LIFNeuron``: tau < 1, zero (hard-reset LIF baseline).

Every parameter is a plain Python attribute so that exporters read them
directly; none of them is learned.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn

from inflor_deploy.nn.mpr import phi
from inflor_deploy.nn.surrogate import Surrogate, spike_fn

__all__ = ["RESET_MODES", "Neuron", "SRIF", "IFNeuron", "LIFNeuron", "OutputAccumulator"]

RESET_MODES: tuple[str, ...] = ("subtract", "zero")


def _check_number(name: str, value: object) -> float:
    """Return ``value`` as float, or raise if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


class Neuron(nn.Module):
    """Integrate-and-fire neuron with optional leak, soft/hard reset and MPR.

    Equations (``X: [T, B, ...]``, ``U[-1] = 0``)::

        H[t]  = tau * U[t-1] + X[t]
        H^[t] = phi(H[t]) if mpr else H[t]
        O[t]  = Theta(H^[t] - vth)                  (1 if H^[t] >= vth)
        U[t]  = H[t] - reset_amount * O[t]          reset == "subtract"
        U[t]  = H[t] * (1 - O[t])                   reset == "zero"

    The backward pass replaces dTheta/dx by ``surrogate``; with MPR the
    gradient also flows through phi, which is MPR's whole training effect.

    Attributes:
        vth: Threshold on ``H^`` (> 0).
        tau: Membrane decay in (0, 1]; 1 means no leak (IF).
        reset: ``"subtract"`` (soft) or ``"zero"`` (hard).
        reset_amount: Value subtracted on a spike in soft-reset mode (> 0);
            unused by hard reset.
        mpr: Whether phi is applied before the comparison.
        surrogate: Surrogate gradient of the spike function.
        record_membrane: When True, ``forward`` keeps the stacked pre-reset
            membrane ``H`` (``[T, B, ...]``, detached) in ``last_membrane``.
        last_membrane: The recorded ``H`` of the latest forward, or None.
    """

    def __init__(
        self,
        vth: float = 0.5,
        tau: float = 1.0,
        reset: Literal["subtract", "zero"] = "subtract",
        reset_amount: float = 1.0,
        mpr: bool = False,
        surrogate: Surrogate = Surrogate(),
    ) -> None:
        super().__init__()
        vth = _check_number("vth", vth)
        if vth <= 0:
            raise ValueError(f"vth must be > 0 (a finite positive threshold); got {vth!r}")
        tau = _check_number("tau", tau)
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1] (1 means no leak); got {tau!r}")
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {', '.join(RESET_MODES)}; got {reset!r}")
        reset_amount = _check_number("reset_amount", reset_amount)
        if reset_amount <= 0:
            raise ValueError(f"reset_amount must be > 0; got {reset_amount!r}")
        if not isinstance(mpr, bool):
            raise ValueError(f"mpr must be True or False; got {mpr!r}")
        if not isinstance(surrogate, Surrogate):
            raise ValueError(f"surrogate must be a Surrogate; got {type(surrogate).__name__}")
        self.vth: float = vth
        self.tau: float = tau
        self.reset: str = reset
        self.reset_amount: float = reset_amount
        self.mpr: bool = mpr
        self.surrogate: Surrogate = surrogate
        self.record_membrane: bool = False
        self.last_membrane: Optional[torch.Tensor] = None

    @property
    def kind(self) -> str:
        """Named kind derived from the dynamics.

        ``"srif"`` (tau = 1, subtract), ``"if"`` (tau = 1, zero), ``"lif"``
        (tau < 1, zero) or ``"soft_lif"`` (tau < 1, subtract), which has no
        named class but is a valid configuration.
        """
        if self.tau == 1.0:
            return "srif" if self.reset == "subtract" else "if"
        return "soft_lif" if self.reset == "subtract" else "lif"

    def step(self, x_t: torch.Tensor, u_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One timestep; a pure function of its tensors.

        Args:
            x_t: Input current ``X[t]``, ``[B, ...]``.
            u_prev: Post-reset membrane ``U[t-1]``, same shape (zeros at t=0).

        Returns:
            ``(O[t], U[t])``: spikes in {0, 1} and the post-reset membrane.
        """
        o, u, _ = self._step_with_membrane(x_t, u_prev)
        return o, u

    def _step_with_membrane(
        self, x_t: torch.Tensor, u_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``step`` that also returns the pre-reset membrane ``H[t]``."""
        h = self._integrate(x_t, u_prev)
        o = self._fire(h)
        return o, self._reset(h, o), h

    def _integrate(self, x_t: torch.Tensor, u_prev: torch.Tensor) -> torch.Tensor:
        # Skip the multiply for tau == 1 so IF graphs carry no no-op Mul node.
        return (u_prev if self.tau == 1.0 else self.tau * u_prev) + x_t

    def _fire(self, h: torch.Tensor) -> torch.Tensor:
        h_hat = phi(h) if self.mpr else h
        return spike_fn(h_hat - self.vth, self.surrogate)

    def _reset(self, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        if self.reset == "subtract":
            return h - self.reset_amount * o
        return h * (1.0 - o)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Run all timesteps.

        Args:
            x_seq: Input currents, time-first ``[T, B, ...]``.

        Returns:
            Spikes ``[T, B, ...]`` in {0, 1}, dtype of ``x_seq``.
        """
        if x_seq.dim() < 2:
            raise ValueError(
                f"Neuron input must be time-first [T, B, ...]; got shape {tuple(x_seq.shape)}"
            )
        u = torch.zeros_like(x_seq[0])
        spikes = []
        membranes = []
        for x_t in x_seq.unbind(0):
            o, u, h = self._step_with_membrane(x_t, u)
            spikes.append(o)
            if self.record_membrane:
                membranes.append(h.detach())
        if self.record_membrane:
            self.last_membrane = torch.stack(membranes)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return (
            f"vth={self.vth}, tau={self.tau}, reset={self.reset!r}, "
            f"reset_amount={self.reset_amount}, mpr={self.mpr}, "
            f"surrogate={self.surrogate.kind}(width={self.surrogate.width})"
        )


class SRIF(Neuron):
    """Soft-reset IF neuron of InfLoR-SNN (MPR on by default).

    ``tau = 1``, ``U[t] = H[t] - O[t]``: the reset subtracts the spike value
    1, not vth, so the residue above threshold carries over.
    """

    def __init__(self, vth: float = 0.5, mpr: bool = True, surrogate: Surrogate = Surrogate()) -> None:
        super().__init__(vth=vth, tau=1.0, reset="subtract", reset_amount=1.0, mpr=mpr, surrogate=surrogate)

    @property
    def kind(self) -> str:
        return "srif"


class IFNeuron(Neuron):
    """Hard-reset IF baseline: ``tau = 1``, ``U[t] = H[t] * (1 - O[t])``."""

    def __init__(self, vth: float = 0.5, mpr: bool = False, surrogate: Surrogate = Surrogate()) -> None:
        super().__init__(vth=vth, tau=1.0, reset="zero", reset_amount=1.0, mpr=mpr, surrogate=surrogate)

    @property
    def kind(self) -> str:
        return "if"


class LIFNeuron(Neuron):
    """Leaky baseline: ``H[t] = tau * U[t-1] + X[t]`` with ``tau`` in (0, 1].

    Hard reset by default (the paper's LIF baseline); ``reset="subtract"``
    gives a soft-reset LIF.
    """

    def __init__(
        self,
        vth: float = 0.5,
        tau: float = 0.5,
        reset: Literal["subtract", "zero"] = "zero",
        mpr: bool = False,
        surrogate: Surrogate = Surrogate(),
    ) -> None:
        super().__init__(vth=vth, tau=tau, reset=reset, reset_amount=1.0, mpr=mpr, surrogate=surrogate)

    @property
    def kind(self) -> str:
        return "lif"


class OutputAccumulator(nn.Module):
    """Non-spiking readout: accumulates its input, the score is the mean over T.

    Equations (``X: [T, B, C]``, ``A[-1] = 0``)::

        A[t]  = A[t-1] + X[t]
        score = A[T-1] / T

    ``forward`` computes the same thing as ``X.mean(0)``; ``step`` gives the
    per-timestep form for exporters.
    """

    def step(self, x_t: torch.Tensor, a_prev: torch.Tensor) -> torch.Tensor:
        """One timestep: ``A[t] = A[t-1] + X[t]``."""
        return a_prev + x_t

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Mean over time.

        Args:
            x_seq: Output currents ``[T, B, C]``.

        Returns:
            Class scores ``[B, C]``.
        """
        if x_seq.dim() < 2:
            raise ValueError(
                f"OutputAccumulator input must be time-first [T, B, ...]; got shape {tuple(x_seq.shape)}"
            )
        return x_seq.mean(dim=0)
