"""snnTorch (snntorch 1.0.0): ``Leaky`` neurons, single-step with the state inside the module.

Read from ``snntorch/_neurons/leaky.py`` (``Leaky.forward``, ``_base_state_function``,
``_base_sub``, ``_base_zero``, ``_base_int``, ``reset_mem``) and
``snntorch/_neurons/neurons.py`` (``SpikingNeuron.fire``, ``mem_reset``,
``_surrogate_bypass``). Every surrogate of ``snntorch/surrogate.py`` computes
``(x > 0).float()`` in its forward. One call is one step t; ``mem`` is a
buffer of zeros until the input's shape is known (``_init_mem``; a shape
change re-creates it as zeros, ``reset_mem()`` zeroes it)::

    reset = spike_grad(mem - threshold)                         # R[t] = (U[t-1] - thr > 0), the PREVIOUS step
    subtract: mem = beta.clamp(0, 1) * mem + input_ - reset * threshold
    zero:     mem = (1 - reset) * mem;  mem = beta.clamp(0, 1) * mem + input_
    none:     mem = beta.clamp(0, 1) * mem + input_
    spk = spike_grad(mem - threshold) * graded_spikes_factor    # S[t] = (U[t] - thr > 0): STRICT
    returns spk (init_hidden=True), or (spk, mem) (output=True, or init_hidden=False)

with ``reset_delay=True`` (the default): the reset of a spike at step t-1
lands at step t, undecayed, and ``mem`` is the pre-reset membrane. That is
:class:`~inflor_deploy.ir.Neuron` with charge ``"affine"``, ``tau =
clamp(beta, 0, 1)``, gain 1, compare ``">"``, ``reset_timing="next_step"``,
the reset as computed (``state_function``), ``reset_amount = threshold``
(snnTorch subtracts Vth, not the spike value 1; per channel when the
threshold is) and ``v_reset = 0``, in the same float32 operations
(``run_float`` computes ``tau * U + X - R * thr`` left to right), so level 1
is bitwise. ``DelayedResetToSameStep`` then moves the reset to the step of
the spike (subtract ``thr / beta``), as Loihi resets.

``reset_delay=False`` adds, after the spike::

    do_reset = spk / graded_spikes_factor - reset
    subtract: mem = mem - do_reset * threshold;   zero: mem = mem - do_reset * mem

* zero: ``mem`` after a spike is 0 and otherwise at most ``thr``, so the next
  ``reset`` is 0 (and ``R[0] = 0``: mem starts at 0 < thr): by induction R is
  always 0, and the update is a same-step reset to zero, ``U = H - S * H``
  (``H - H = 0`` exactly). Mapped with ``reset_timing="same_step"``.
* subtract: after a membrane above ``2 * thr`` the stored ``mem`` stays above
  thr, the next step's comparison sees ``H - thr`` and ``do_reset`` can be
  -1 (threshold added back): that is not the IR neuron, so it is refused.
* none: no reset either way; the same as ``reset_delay=True``.

Parameters are frozen at export (``learn_beta``/``learn_threshold`` read as
values). ``beta`` must be one value per layer (the IR's leak is per layer);
``threshold`` may be a scalar or vary along the first per-sample axis
(channels, or the neurons of a linear layer). Refused with the reason:
other snnTorch neurons (Synaptic, Alpha, RLeaky, ...: a second state or a
recurrence), ``inhibition``, ``state_quant``, graded spikes
(``graded_spikes_factor != 1``), a spike function that is not snnTorch's own
(its forward is unknown), and a Leaky called with ``mem`` (its state must
live inside it: ``init_hidden=True``, or call it without ``mem``).

State reset: ``snntorch.utils.reset(net)`` resets only a model's top-level
children and, for ``init_hidden`` neurons, every Leaky of every model in the
process (``Leaky.reset_hidden`` walks ``SpikingNeuron.instances``), so this
adapter calls ``reset_mem()`` on each Leaky of the model itself.

Readouts: the output Leaky's spikes (the spike count over T, snnTorch's
rate readout), or its ``mem`` when it never resets (``reset_mechanism="none"``:
the mean membrane over T).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from inflor_deploy.frontends.adapters.base import Adapter, AdapterError, Capture, TimeMode, require_package
from inflor_deploy.ir import nodes as n

snntorch = require_package("snntorch", "snntorch")
from snntorch._neurons.leaky import Leaky  # noqa: E402 - after the package check
from snntorch._neurons.neurons import SpikingNeuron  # noqa: E402

#: Leaky's state functions -> the IR reset mode (``Leaky.__init__`` picks one from reset_mechanism).
_RESETS = {Leaky._base_sub: "subtract", Leaky._base_zero: "zero", Leaky._base_int: "none"}
_MECHANISMS = {0: "subtract", 1: "zero", 2: "none"}  # SpikingNeuron.reset_dict, inverted

#: Methods whose snnTorch definitions the mapping above was read from; a subclass overriding one computes otherwise.
_READ_METHODS = ("forward", "_base_state_function", "_base_sub", "_base_zero", "_base_int", "fire", "mem_reset",
                 "reset_mem")  # fmt: skip


def _known_spike_function(function) -> bool:
    """snnTorch's own spike functions: every forward in ``snntorch/surrogate.py`` is ``(x > 0).float()``."""
    if function is SpikingNeuron._surrogate_bypass:  # surrogate_disable=True: (x > 0).float()
        return True
    return getattr(function, "__module__", None) == "snntorch.surrogate"


def _one_value(path: str, what: str, tensor: torch.Tensor, why: str) -> float:
    values = tensor.detach().to(torch.float32).cpu().flatten()
    if values.numel() == 0 or not bool((values == values[0]).all()):
        raise AdapterError(f"snnTorch Leaky {path!r} has a per-neuron {what} {tuple(tensor.shape)} with different values; "
                           f"{why}")  # fmt: skip
    return float(values[0])


def _threshold(path: str, threshold: torch.Tensor, shape: tuple[int, ...]):
    """The threshold as the IR's vth: a float, or float64 ``(C,)`` when it varies along the first per-sample axis."""
    t = threshold.detach().to(torch.float32).cpu()
    if t.numel() == 1:
        return float(t.reshape(()))
    while t.dim() > len(shape) and t.shape[0] == 1:  # leading batch-like axes of size 1
        t = t[0]
    try:
        full = torch.broadcast_to(t, shape)
    except RuntimeError:
        raise AdapterError(
            f"snnTorch Leaky {path!r}: its threshold of shape {tuple(threshold.shape)} does not broadcast over the layer's "
            f"per-sample shape {list(shape)}"
        ) from None
    flat = full.reshape(shape[0], -1)
    if not bool((flat == flat[:, :1]).all()):
        per_channel = tuple([shape[0]] + [1] * (len(shape) - 1))
        raise AdapterError(
            f"snnTorch Leaky {path!r}: its threshold of shape {tuple(threshold.shape)} varies within a channel of the "
            f"{list(shape)} layer; the IR's threshold is one value per layer or per channel (the first axis): give it "
            f"shape {per_channel}"
        )
    column = flat[:, 0]
    if bool((column == column[0]).all()):
        return float(column[0])
    return column.numpy().astype(np.float64)


class SnnTorchAdapter(Adapter):
    """Adapter for snnTorch's ``Leaky`` (see the module docstring for the exact update)."""

    name = "snntorch"

    def is_neuron(self, module: nn.Module) -> bool:
        # Every snnTorch neuron is a leaf, so that the unsupported ones are refused by name.
        return isinstance(module, SpikingNeuron)

    def time_mode(self, module: nn.Module) -> TimeMode | None:
        return "single" if isinstance(module, SpikingNeuron) else None  # one call per step, state inside

    def neuron_outputs(self, module: nn.Module) -> tuple[str, ...]:
        if isinstance(module, Leaky) and (module.output or not module.init_hidden):
            return ("spikes", "membrane")
        return ("spikes",)

    def neuron(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Neuron:
        raise AdapterError(f"the snntorch adapter maps {path!r} knowing its layer's shape (neuron_in_layer)")

    def check(self, path: str, module: nn.Module) -> None:
        if isinstance(module, SpikingNeuron):
            self._check(path, module)

    def neuron_in_layer(self, path: str, module: nn.Module, sources: tuple[str, ...], shape: tuple[int, ...]) -> n.Neuron:
        reset = self._check(path, module)
        tau = _one_value(path, "beta", module.beta.detach().clamp(0, 1),
                         "the IR's leak is one value per layer: give the layer one beta")  # fmt: skip
        vth = _threshold(path, module.threshold, shape)
        return n.Neuron(
            name=path,
            sources=sources,
            vth=vth,
            tau=tau,
            reset=reset,
            # snnTorch subtracts the threshold itself (undecayed, one step late), not the spike value.
            reset_amount=(vth.copy() if isinstance(vth, np.ndarray) else vth) if reset == "subtract" else None,
            mpr=False,
            spike_value=1.0,
            gain=1.0,
            compare=">",
            # reset_delay=False with "zero" is a same-step reset (module docstring); "none" never resets.
            reset_timing="next_step" if module.reset_delay else "same_step",
            v_reset=0.0,
            charge="affine",
            decay=None,
        )

    def _check(self, path: str, module: nn.Module) -> str:
        """Refuse what does not map; return the reset mode the module computes."""
        cls = type(module).__name__
        if not isinstance(module, Leaky):
            raise AdapterError(
                f"snnTorch {cls} {path!r} has no IR mapping: only Leaky maps onto the IR neuron (Synaptic, Alpha, "
                "Lapicque, RLeaky, RSynaptic, ... carry a second state or a recurrence); use snntorch.Leaky"
            )
        overridden = [m for m in _READ_METHODS if getattr(type(module), m) is not getattr(Leaky, m)]
        if overridden:
            raise AdapterError(f"{cls} {path!r} overrides Leaky.{', '.join(overridden)}, so what it computes is unknown; "
                               "use snntorch.Leaky itself")  # fmt: skip
        if module.inhibition:
            raise AdapterError(f"snnTorch Leaky {path!r} has inhibition=True (only the largest membrane of a sample "
                               "fires), which no IR neuron computes; train without inhibition")  # fmt: skip
        if module.state_quant:
            raise AdapterError(f"snnTorch Leaky {path!r} quantizes its state (state_quant); the IR runs the float "
                               "membrane and quantizes for Loihi itself: train with state_quant=False")  # fmt: skip
        if not _known_spike_function(module.spike_grad):
            raise AdapterError(
                f"snnTorch Leaky {path!r} fires through the spike function {module.spike_grad!r}, which is not one of "
                "snntorch.surrogate's (whose forward is (mem - threshold > 0)); use a snntorch.surrogate function or "
                "surrogate_disable=True"
            )
        factor = module.graded_spikes_factor.detach()
        if factor.numel() != 1 or float(factor) != 1.0:
            raise AdapterError(f"snnTorch Leaky {path!r} emits graded spikes (graded_spikes_factor "
                               f"{factor.flatten()[:4].tolist()}); Loihi layers here carry binary spikes: use 1.0")  # fmt: skip
        reset = _RESETS.get(getattr(module.state_function, "__func__", None))
        stored = _MECHANISMS.get(int(module.reset_mechanism_val))
        if reset is None or reset != stored:
            raise AdapterError(
                f"snnTorch Leaky {path!r} computes the {reset or 'unknown'} reset but its reset_mechanism_val buffer says "
                f"{stored!r} (weights saved from a Leaky with another reset_mechanism?); build it with the "
                "reset_mechanism it was trained with"
            )
        if not module.reset_delay and reset == "subtract":
            raise AdapterError(
                f"snnTorch Leaky {path!r} has reset_delay=False with reset_mechanism='subtract': after a membrane above "
                "2 * threshold its next comparison sees H - threshold and its reset can add the threshold back, which "
                "no IR neuron computes; use reset_delay=True (the default) or reset_mechanism='zero'"
            )
        return reset

    def capture(self, module: nn.Module, output) -> Capture:
        spikes = output[0] if isinstance(output, tuple) else output
        # With reset_delay=True mem is the pre-reset membrane H (the IR's); reset_delay=False zeroes it after a spike.
        pre_reset = module.reset_delay or _RESETS.get(getattr(module.state_function, "__func__", None)) == "none"
        return Capture(spikes=spikes, membrane=module.mem if pre_reset else None)

    def reset_state(self, model: nn.Module) -> None:
        # Each Leaky of this model directly: snntorch.utils.reset misses nested ones and resets other models'.
        for module in model.modules():
            if isinstance(module, Leaky):
                module.reset_mem()


ADAPTER = SnnTorchAdapter()
"""The adapter instance the front end uses."""
