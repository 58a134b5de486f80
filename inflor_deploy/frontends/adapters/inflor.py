"""The project's own layers (:mod:`inflor_deploy.nn`): SRIF + MPR, IF, LIF, tdBN, TimeDistributed.

Read from ``inflor_deploy/nn/neurons.py`` (``Neuron._integrate``, ``_fire``,
``_reset``), per timestep t with ``U[-1] = 0`` and input ``X: [T, B, ...]``::

    H[t]  = U[t-1] + X[t]                  tau == 1 (the multiply is skipped)
    H[t]  = tau * U[t-1] + X[t]            tau < 1
    O[t]  = 1 if phi(H[t]) - vth >= 0 else 0   (phi = MPR when mpr, else identity; spike_fn)
    U[t]  = H[t] - reset_amount * O[t]     reset == "subtract"  (SRIF: reset_amount = 1, the spike value)
    U[t]  = H[t] * (1 - O[t])              reset == "zero"

which is :class:`inflor_deploy.ir.Neuron` with every field of the general
neuron set explicitly: charge ``"affine"`` (``tau * U + gain * X``, gain 1,
in the same float32 operation order: ``run_float`` skips the multiply for
tau == 1 as well), compare ``">="`` (``h - vth >= 0`` and ``h >= vth``
agree in IEEE float32, which has gradual underflow), reset at the same
step, ``v_reset = 0``; a soft reset subtracts ``reset_amount = None``, the
spike value 1 (the paper's soft reset, not Vth; an amount other than 1 is
given explicitly), a hard reset (IF, LIF) is ``"zero"``. So level 1 is
bitwise except for MPR near-ties, and the framework-neuron passes
(``DelayedResetToSameStep``, ``ShiftResetToZero``, ``FoldInputGain``) have
nothing to rewrite.

Time convention: every neuron is multi-step (one call on ``[T, B, ...]``).
Stateless layers reach the time-first tensors through
:class:`~inflor_deploy.nn.TimeDistributed` (a per-step wrapper); tdBN
(``nn/tdbn.py``) normalizes the time-first tensor itself with weight
``lambda * (alpha * vth)``; :class:`~inflor_deploy.nn.OutputAccumulator` is
the readout (mean over T). ``SpikingNetwork`` encodes its input inside its
``forward`` (:func:`~inflor_deploy.nn.models.direct_encoding`: the frame at
every step), with ``T`` as a keyword argument.

A subclass that overrides ``forward`` computes something else: it is
refused rather than mapped as its base class.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from inflor_deploy.frontends.adapters.base import Adapter, AdapterError, Capture, PerStep, TimeMode
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.models import SpikingNetwork, direct_encoding
from inflor_deploy.nn.neurons import Neuron, OutputAccumulator
from inflor_deploy.nn.tdbn import TdBatchNorm


def _array(tensor: torch.Tensor):
    """A float32 numpy copy (the IR owns its arrays; the model may change later)."""
    return tensor.detach().to(torch.float32).cpu().numpy().copy()


def _own_forward(path: str, module: nn.Module, base: type) -> None:
    if type(module).forward is not base.forward:
        raise AdapterError(
            f"module {path!r} ({type(module).__name__}) overrides {base.__name__}.forward, so what it "
            f"computes is unknown; use {base.__name__} itself or move the extra computation out of it"
        )


class InflorAdapter(Adapter):
    """Adapter for :mod:`inflor_deploy.nn` (see the module docstring for the exact update)."""

    name = "inflor"

    def is_neuron(self, module: nn.Module) -> bool:
        return isinstance(module, Neuron)

    def is_per_step_wrapper(self, module: nn.Module) -> bool:
        return isinstance(module, TimeDistributed)

    def per_step(self, path: str, module: nn.Module) -> PerStep:
        _own_forward(path, module, TimeDistributed)  # forward: module(x.flatten(0, 1)).unflatten(0, (T, B))
        return PerStep(module.module)

    def is_time_first_normalization(self, module: nn.Module) -> bool:
        return isinstance(module, TdBatchNorm)

    def is_readout(self, module: nn.Module) -> bool:
        return isinstance(module, OutputAccumulator)

    def encoding(self, function: Callable):
        return "direct" if function is direct_encoding else None

    def timesteps_argument(self, model: nn.Module) -> str | None:
        # SpikingNetwork.forward(image, T=None): T sets the number of steps of its direct encoding.
        return "T" if isinstance(model, SpikingNetwork) else None

    def declared_input(self, model: nn.Module):
        if not isinstance(model, SpikingNetwork):
            return None
        config = model.config  # ModelConfig: the zoo architectures know their input and T
        return (config.in_channels, config.image_size, config.image_size), config.timesteps, config.arch

    def time_mode(self, module: nn.Module) -> TimeMode | None:
        return "multi" if isinstance(module, Neuron) else None

    def neuron(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Neuron:
        _own_forward(path, module, Neuron)
        spike_value = 1.0  # the torch neurons emit {0, 1}
        if module.reset not in ("subtract", "zero"):
            raise AdapterError(f"neuron {path!r} has reset {module.reset!r}; inflor_deploy.nn neurons reset by "
                               "'subtract' or 'zero'")  # fmt: skip
        subtract = module.reset == "subtract"
        return n.Neuron(
            name=path,
            sources=sources,
            vth=float(module.vth),
            tau=float(module.tau),
            reset=module.reset,
            # None = "subtract the spike value", the paper's soft reset; explicit otherwise (ignored by "zero").
            reset_amount=None if not subtract or float(module.reset_amount) == spike_value else float(module.reset_amount),
            mpr=bool(module.mpr),
            spike_value=spike_value,
            gain=1.0,
            compare=">=",
            reset_timing="same_step",
            v_reset=0.0,  # a hard reset goes to 0, where U starts
            charge="affine",
            decay=None,
        )

    def normalization(self, path: str, module: nn.Module, source: str) -> n.BatchNorm:
        _own_forward(path, module, TdBatchNorm)
        with torch.no_grad():
            # Exactly the weight TdBatchNorm.forward hands to F.batch_norm, in the same dtype and order.
            gamma = module.lambda_ * (module.alpha * module.vth)
        return n.BatchNorm(
            name=path,
            sources=(source,),
            gamma=_array(gamma),
            beta=_array(module.beta),
            mean=_array(module.running_mean),
            var=_array(module.running_var),
            eps=float(module.eps),
        )

    def readout(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Accumulator:
        _own_forward(path, module, OutputAccumulator)
        return n.Accumulator(name=path, sources=sources)

    @contextlib.contextmanager
    def recording(self, module: nn.Module) -> Iterator[None]:
        saved = module.record_membrane
        module.record_membrane = True
        try:
            yield
        finally:
            module.record_membrane = saved
            module.last_membrane = None

    def capture(self, module: nn.Module, output) -> Capture:
        # Neuron.forward stores the stacked pre-reset membrane H before returning (record_membrane).
        return Capture(spikes=output, membrane=module.last_membrane)


ADAPTER = InflorAdapter()
"""The adapter instance the front end uses."""
