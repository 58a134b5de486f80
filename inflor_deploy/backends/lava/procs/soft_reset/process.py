"""SoftResetLIF: a CUBA (current-based LIF) neuron whose spike subtracts a fixed amount.

Lava's stock LIF neurons reset the voltage to zero on a spike (hard reset)
and have one threshold per population. InfLoR's SRIF neuron subtracts
instead (``U[t] = H[t] - reset * O[t]``), SpikingJelly and snnTorch layers
may carry one threshold (and reset amount) per channel, and snnTorch's
``reset_mechanism="none"`` never resets; nothing in Lava 0.10.0 does these,
so this Process adds them: ``vth`` and ``reset_mant`` are per-neuron Vars,
and ``reset_mode`` picks what a spike does (``"subtract"``, the default;
``"zero"``, Lava's own hard reset, for per-channel thresholds; ``"none"``).
Its dynamics are Lava's ``LIF`` dynamics with the reset line changed, plus
the periodic state reset of ``LIFReset`` that lets many samples run back to
back:

Fixed point (``fixed_pt``, bit-accurate; integers, state 24 bit)::

    if time_step % reset_interval == reset_offset:  u = v = 0     # before integrating
    u = sign(u * (4096 - (du + 1))) * (|u * (4096 - (du + 1))| >> 12)
    u = wrap24(u + (a_in << 6))
    v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12)
    v = clip(v + u + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)
    s = v > (vth << 6)                           # vth per neuron
    v = v - (reset_mant << 6)   where s          # reset_mode "subtract" (stock LIF: v = 0 where s)
    v = 0                       where s          # reset_mode "zero"
                                                 # reset_mode "none": v kept

Floating point (``floating_pt``; du, dv are fractions in [0, 1])::

    u = u * (1 - du) + a_in
    v = v * (1 - dv) + u + bias_mant             # bias_exp ignored, as in Lava
    s = v > vth
    v = v - reset_mant          where s          # (zero: v = 0; none: kept)

``reset_mant`` counts in the same units as ``vth`` (weight units in fixed
point: one weight unit is 64 units of v).
"""

from __future__ import annotations

import typing as ty

import numpy as np

from inflor_deploy import lava_compat

lava_compat.apply()

from lava.magma.core.process.process import LogConfig  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.proc.lif.process import AbstractLIF  # noqa: E402

Values = ty.Union[float, list, np.ndarray]
#: What a spike does to v.
RESET_MODES = ("subtract", "zero", "none")


class SoftResetLIF(AbstractLIF):
    """CUBA neuron with subtractive reset and periodic state reset.

    Same state and parameters as Lava's ``LIFReset`` plus ``reset_mant``.
    Every argument is keyword-only, and an unknown one raises ``TypeError``
    instead of being silently ignored (Lava's own Processes accept and drop
    unknown keywords, so ``LIF(bias=...)`` does nothing).

    Args:
        shape: Shape of the neuron population.
        vth: Threshold, one for all neurons or an array of ``shape`` (fixed
            point: 17-bit mantissa, compared as ``vth << 6``).
        reset_mant: What a spike subtracts from v (fixed point: ``reset_mant << 6``); >= 0;
            one value or an array of ``shape``.
        reset_mode: ``"subtract"`` (default), ``"zero"`` or ``"none"``.
        u: Initial current.
        v: Initial voltage.
        du: Current decay (fixed point: 12-bit, 4095 makes u the current input).
        dv: Voltage decay (fixed point: 12-bit, 0 is no leak).
        bias_mant: Bias mantissa (fixed point: 13-bit signed).
        bias_exp: Bias exponent (fixed point only).
        reset_interval: u and v are zeroed every ``reset_interval`` steps, >= 1.
        reset_offset: ... at the steps with ``time_step % reset_interval == reset_offset``.
        name: Process name.
        log_config: Lava logging configuration.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        vth: Values,
        reset_mant: Values,
        reset_mode: str = "subtract",
        u: Values = 0,
        v: Values = 0,
        du: float = 0,
        dv: float = 0,
        bias_mant: Values = 0,
        bias_exp: Values = 0,
        reset_interval: int = 1,
        reset_offset: int = 0,
        name: str | None = None,
        log_config: LogConfig | None = None,
        **unknown: ty.Any,
    ) -> None:
        super().__init__(
            shape=shape,
            u=u,
            v=v,
            du=du,
            dv=dv,
            bias_mant=bias_mant,
            bias_exp=bias_exp,
            name=name,
            log_config=log_config,
        )
        # Checked after AbstractProcess.__init__: Lava's __del__ needs a fully built Process.
        if unknown:
            raise TypeError(
                f"SoftResetLIF got unknown keyword argument(s) {sorted(unknown)}; "
                "Lava's own neurons would silently ignore them"
            )
        if int(reset_interval) != reset_interval or reset_interval < 1:
            raise ValueError(f"SoftResetLIF: reset_interval must be an int >= 1, got {reset_interval!r}")
        if int(reset_offset) != reset_offset or reset_offset < 0:
            raise ValueError(f"SoftResetLIF: reset_offset must be an int >= 0, got {reset_offset!r}")
        if np.any(np.asarray(reset_mant) < 0):
            raise ValueError(f"SoftResetLIF: reset_mant must be >= 0 (it is subtracted), got {reset_mant!r}")
        if reset_mode not in RESET_MODES:
            raise ValueError(f"SoftResetLIF: reset_mode must be one of {RESET_MODES}, got {reset_mode!r}")
        # Per-neuron Vars (a scalar is broadcast), so that thresholds may differ per channel.
        self.vth = Var(shape=tuple(shape), init=np.broadcast_to(np.asarray(vth), tuple(shape)).copy())
        self.reset_mant = Var(shape=tuple(shape), init=np.broadcast_to(np.asarray(reset_mant), tuple(shape)).copy())
        self.proc_params["reset_mode"] = reset_mode
        self.proc_params["reset_interval"] = int(reset_interval)
        self.proc_params["reset_offset"] = int(reset_offset)
