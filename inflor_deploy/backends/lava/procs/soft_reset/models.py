"""ProcessModels of :class:`SoftResetLIF`: ``floating_pt`` and bit-accurate ``fixed_pt``.

Both subclass Lava's abstract LIF models (``lava.proc.lif.models``), so the
sub-threshold dynamics (decays, the 24-bit wrap of u, the clip of v, the
``<< 6`` alignment of input and threshold, ``bias_mant << bias_exp``) are
Lava's own code, not a copy. What the subclasses add:

* the periodic reset of ``LIFReset`` (u = v = 0 at the start of every step
  with ``time_step % reset_interval == reset_offset``; Lava counts
  ``time_step`` from 1);
* the subtractive reset ``v -= reset_mant << 6`` (float: ``v -= reset_mant``)
  in place of ``v = 0`` (``reset_mode="subtract"``; ``"zero"`` keeps Lava's
  ``v = 0``, ``"none"`` leaves v), with ``vth`` and ``reset_mant`` per neuron;
* the threshold is read at every step. Lava's ``PyLifModelBitAcc`` caches
  ``vth << 6`` on the first step, so a later ``vth.set()`` is ignored; here it
  is not. The per-neuron arrays are cast to int64 before the shift because
  ``Var.set`` may store floats (DESIGN.md §3).

This file is executed by Lava's model discovery as a stand-alone module
(``spec_from_file_location("models", ...)``): imports must be absolute.
"""

from __future__ import annotations

import numpy as np

from inflor_deploy import lava_compat

lava_compat.apply()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat  # noqa: E402

from inflor_deploy.backends.lava.procs.soft_reset.process import SoftResetLIF  # noqa: E402


class _PeriodicReset:
    """Mixin: zero u and v at the start of the steps ``time_step % interval == offset``; the reset mode."""

    def _init_periodic_reset(self, proc_params) -> None:
        self.reset_interval = int(proc_params["reset_interval"])
        self.reset_offset = int(proc_params["reset_offset"]) % self.reset_interval
        self.reset_mode = proc_params.get("reset_mode", "subtract")

    def _periodic_reset(self) -> None:
        if self.time_step % self.reset_interval == self.reset_offset:
            self.u[:] = 0
            self.v[:] = 0


@implements(proc=SoftResetLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySoftResetLifModelFloat(_PeriodicReset, AbstractPyLifModelFloat):
    """Float SoftResetLIF: ``s = v > vth``; ``v -= reset_mant`` where s (per neuron; or zero, or none)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    reset_mant: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._init_periodic_reset(proc_params)

    def spiking_activation(self) -> np.ndarray:
        return self.v > self.vth

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        if self.reset_mode == "subtract":
            self.v[spike_vector] -= self.reset_mant[spike_vector]
        elif self.reset_mode == "zero":
            self.v[spike_vector] = 0

    def run_spk(self) -> None:
        self._periodic_reset()
        super().run_spk()


@implements(proc=SoftResetLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PySoftResetLifModelBitAcc(_PeriodicReset, AbstractPyLifModelFixed):
    """Bit-accurate SoftResetLIF: ``s = v > vth << 6``; ``v -= reset_mant << 6`` where s (per neuron; or zero, or none).

    Precisions (as Lava's ``PyLifModelBitAcc``): u, v signed 24 bit; du, dv
    unsigned 12 bit; bias_mant signed 13 bit; bias_exp 3 bit; vth unsigned
    17 bit per neuron; reset_mant unsigned 17 bit per neuron (same field width as vth). After a
    spike ``v > vth << 6 >= 0``, so ``v - (reset_mant << 6) > -2^23``: the
    subtraction cannot leave v's 24-bit range.
    """

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    reset_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._init_periodic_reset(proc_params)

    def scale_threshold(self) -> None:
        # Nothing to cache: spiking_activation reads vth at every step.
        self.isthrscaled = True

    def spiking_activation(self) -> np.ndarray:
        # int64: Var.set stores floats, and vth << 6 needs 23 bits.
        return self.v > (np.asarray(self.vth).astype(np.int64) << self.vth_shift)

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        if self.reset_mode == "subtract":
            amount = np.asarray(self.reset_mant).astype(np.int64) << self.act_shift
            self.v[spike_vector] -= amount[spike_vector]
        elif self.reset_mode == "zero":
            self.v[spike_vector] = 0

    def run_spk(self) -> None:
        self._periodic_reset()
        super().run_spk()
