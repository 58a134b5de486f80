"""SpikingJelly (spikingjelly 2.0.0, ``activation_based``): IF, LIF and parametric LIF neurons, both step modes.

Read from ``spikingjelly/_ops/if_/cpu.py``, ``_ops/lif/cpu.py`` and
``_ops/plif/cpu.py`` (``_forward_impl``: the CPU kernels that
``IFNode``/``LIFNode``/``ParametricLIFNode`` run through
``activation_based/functional/neuron.py`` ``if_multi_step``/``lif_multi_step``/
``plif_multi_step``; a single step is the same with T = 1; with a surrogate
the kernels do not know, the same functions take ``_ops/*/reference.py``,
whose arithmetic is the same with ``heaviside(h - v_threshold)``), and
``activation_based/neuron/base_node.py`` (the state ``v`` starts at
``v_reset``, or 0.0 when ``v_reset`` is None: ``register_memory``,
``materialize_states``). Per step, in float32, with ``vr0 = v_reset or 0.0``::

    IFNode:                       h = v + x
    LIFNode, decay_input=True:    h = v + (x - (v - vr0)) / tau
    LIFNode, decay_input=False:   h = v - (v - vr0) / tau + x
    ParametricLIFNode:            q = w.float().sigmoid()   (1 / tau, tau learned; frozen at export)
                                  h = v + (x - (v - vr0)) * q    |    h = v - (v - vr0) * q + x
    spike = (h >= v_threshold)                                         (NON-strict, like InfLoR)
    v = h - spike * v_threshold               v_reset is None: soft reset, subtracts Vth (not 1)
    v = spike * v_reset + (1 - spike) * h     otherwise: hard reset (v_reset=0.0 is the DEFAULT)

That is :class:`~inflor_deploy.ir.Neuron` with compare ``">="``, the reset at
the same step, and: ``IFNode`` charge ``"affine"`` (tau 1, gain 1);
``LIFNode`` ``"decay_divide_input"`` / ``"decay_divide"`` with ``decay =
tau``; ``ParametricLIFNode`` ``"decay_multiply_input"`` / ``"decay_multiply"``
with ``decay = q`` (built with :func:`~inflor_deploy.ir.nodes.decay_fields`,
so the IR's tau and gain are ``1 - 1/tau`` and ``1/tau`` or 1); soft reset
``"subtract"`` with ``reset_amount = v_threshold``, hard reset ``"zero"``
with ``v_reset`` (which is also where v starts and what the leak decays
toward). ``run_float`` computes each charge in these float32 operations, so
level 1 is bitwise; ``ShiftResetToZero`` and ``FoldInputGain`` then bring
v_reset to 0 and the input gain into the weights for Loihi.

Irrelevant at inference: ``detach_reset``, the surrogate's gradient and
``store_v_seq`` (which only keeps the post-reset voltages; the arithmetic is
the same). Refused with the reason: other neuron classes (by name), a
surrogate whose forward is not the Heaviside step (``spiking=False``,
``PoissonPass``, ``MultiLevelSpikeCount``, or not SpikingJelly's), neuron
precision settings (other dtypes, Triton only), a memory reset value other
than v_reset (``set_reset_value``), a non-scalar ``w``.

Step modes: ``step_mode="m"`` neurons take ``[T, B, ...]`` once per sample
batch (multi-step); ``"s"`` neurons are called once per step with the state
inside (single-step). State reset: ``functional.reset_net(model)``.

Stateless layers: the wrappers ``layer.Conv2d``, ``Linear``, ``BatchNorm1d/2d``,
``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten`` apply their
torch base class per step (``functional.seq_to_ann_forward``: ``[T, B, ...]``
flattened to ``[T*B, ...]``, in ``"m"``; as is in ``"s"``); ``layer.Dropout``
/ ``Dropout2d`` are the identity at inference; ``SeqToANNContainer`` and
``MultiStepContainer`` apply their children per step (a
``MultiStepContainer`` holding a neuron steps it through time itself and is
refused: give the neuron ``step_mode="m"``). Every other SpikingJelly module
is refused by name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from inflor_deploy.frontends.adapters.base import Adapter, AdapterError, PerStep, TimeMode, require_package
from inflor_deploy.ir import nodes as n

require_package("spikingjelly", "spikingjelly")
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate  # noqa: E402

#: SpikingJelly's own surrogates whose spiking forward is the Heaviside step ``(x >= 0)`` (read in
#: ``activation_based/surrogate.py``; tests check each). PoissonPass draws random spikes, MultiLevelSpikeCount counts.
HEAVISIDE_SURROGATES: tuple[type, ...] = tuple(
    getattr(surrogate, name)
    for name in ("ATan", "DeterministicPass", "Erf", "FakeNumericalGradient", "LeakyKReLU", "LogTailedReLU",
                 "NonzeroSignLogAbs", "PiecewiseExp", "PiecewiseLeakyReLU", "PiecewiseQuadratic", "QPseudoSpike",
                 "Rect", "S2NN", "Sigmoid", "SoftSign", "SquarewaveFourierSeries", "SuperSpike")  # fmt: skip
)

#: Neuron classes mapped (exact types: a subclass computes what its overrides say).
NEURONS: tuple[type, ...] = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)

#: Stateless wrappers -> the torch layer they apply per step (exact types: WSConv2d subclasses Conv2d and
#: standardizes its weights).
LAYERS: dict[type, type] = {
    layer.Conv2d: nn.Conv2d,
    layer.Linear: nn.Linear,
    layer.BatchNorm1d: nn.BatchNorm1d,
    layer.BatchNorm2d: nn.BatchNorm2d,
    layer.MaxPool2d: nn.MaxPool2d,
    layer.AvgPool2d: nn.AvgPool2d,
    layer.AdaptiveAvgPool2d: nn.AdaptiveAvgPool2d,
    layer.Flatten: nn.Flatten,
    layer.Dropout: nn.Identity,  # forward multiplies by a mask only while training
    layer.Dropout2d: nn.Identity,
}
CONTAINERS: tuple[type, ...] = (layer.SeqToANNContainer, layer.MultiStepContainer)

_SUPPORTED = ", ".join(c.__name__ for c in NEURONS) + "; layer." + ", layer.".join(
    c.__name__ for c in (*LAYERS, *CONTAINERS)
)


def _is_spikingjelly(module: nn.Module) -> bool:
    return type(module).__module__.startswith("spikingjelly.")


def _scalar(path: str, what: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AdapterError(f"SpikingJelly neuron {path!r} has a {what} of shape {tuple(value.shape)}; "
                               "only one value per layer maps")  # fmt: skip
        return float(value.detach().to(torch.float32).reshape(()))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdapterError(f"SpikingJelly neuron {path!r} has {what} {value!r}; a number was expected")
    return float(value)


class SpikingJellyAdapter(Adapter):
    """Adapter for SpikingJelly's ``activation_based`` package (see the module docstring for the exact update)."""

    name = "spikingjelly"

    def is_neuron(self, module: nn.Module) -> bool:
        return isinstance(module, (neuron.BaseNode, neuron.SimpleBaseNode))

    def is_per_step_wrapper(self, module: nn.Module) -> bool:
        # Every other SpikingJelly module is a leaf too, so that per_step refuses the unsupported ones by name
        # (a surrogate is part of its neuron, which is never traced).
        return _is_spikingjelly(module) and not self.is_neuron(module) and not isinstance(
            module, surrogate.SurrogateFunctionBase
        )

    def check(self, path: str, module: nn.Module) -> None:
        # Before the example run: SpikingJelly itself fails on CPU for some settings (precision, PoissonPass).
        if self.is_neuron(module):
            self._neuron_type(path, module)
            self._check(path, module)
        elif type(module) in CONTAINERS:
            self.per_step(path, module)

    def time_mode(self, module: nn.Module) -> TimeMode | None:
        if not self.is_neuron(module):
            return None
        return {"m": "multi", "s": "single"}.get(module.step_mode)

    def per_step(self, path: str, module: nn.Module) -> PerStep:
        kind = type(module)
        if kind in LAYERS:
            return PerStep(module, as_type=LAYERS[kind])
        if kind in CONTAINERS:
            stateful = [(name, m) for name, m in module.named_modules() if self.is_neuron(m) or (isinstance(
                m, base.MemoryModule) and not isinstance(m, (layer.Dropout, layer.Dropout2d)))]  # fmt: skip
            if stateful:
                name, inner = stateful[0]
                raise AdapterError(
                    f"{kind.__name__} {path!r} steps the stateful {type(inner).__name__} {path}.{name} through time "
                    "itself; give the neuron step_mode='m' and put it outside the container"
                )
            # The container's children, applied per step; their IR names are the container's path + theirs.
            return PerStep(nn.Sequential(OrderedDict(module.named_children())), as_type=None)
        raise AdapterError(f"SpikingJelly {kind.__name__} {path!r} has no IR mapping; supported: {_SUPPORTED}")

    def neuron(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Neuron:
        kind = self._neuron_type(path, module)
        self._check(path, module)
        vth = _scalar(path, "v_threshold", module.v_threshold)
        soft = module.v_reset is None
        v_reset = 0.0 if soft else _scalar(path, "v_reset", module.v_reset)
        if kind is neuron.IFNode:
            charge = {"charge": "affine", "decay": None, "tau": 1.0, "gain": 1.0}
        elif kind is neuron.LIFNode:
            charge = n.decay_fields("decay_divide_input" if module.decay_input else "decay_divide",
                                    _scalar(path, "tau", module.tau))  # fmt: skip
        else:
            # As _ops/plif/cpu.py computes it: q = w.float().sigmoid(), a float32 scalar.
            q = _scalar(path, "w", module.w.detach().float().sigmoid())
            charge = n.decay_fields("decay_multiply_input" if module.decay_input else "decay_multiply", q)
        return n.Neuron(
            name=path,
            sources=sources,
            vth=vth,
            reset="subtract" if soft else "zero",
            reset_amount=vth if soft else None,  # SpikingJelly's soft reset subtracts Vth, not the spike value
            mpr=False,
            spike_value=1.0,
            compare=">=",
            reset_timing="same_step",
            v_reset=v_reset,
            **charge,
        )

    def _neuron_type(self, path: str, module: nn.Module) -> type:
        kind = type(module)
        if kind not in NEURONS:
            raise AdapterError(f"SpikingJelly {kind.__name__} {path!r} has no IR mapping; the neurons that map are "
                               f"{', '.join(c.__name__ for c in NEURONS)}")  # fmt: skip
        return kind

    def _check(self, path: str, module: nn.Module) -> None:
        cls = type(module).__name__
        if module.step_mode not in ("s", "m"):
            raise AdapterError(f"SpikingJelly {cls} {path!r} has step_mode {module.step_mode!r}; 's' or 'm'")
        function = module.surrogate_function
        if type(function) not in HEAVISIDE_SURROGATES or not getattr(function, "spiking", False):
            raise AdapterError(
                f"SpikingJelly {cls} {path!r} fires through {function!r}, whose forward is not the Heaviside step "
                "(h >= v_threshold); use one of spikingjelly's surrogates ("
                + ", ".join(c.__name__ for c in HEAVISIDE_SURROGATES) + ") with spiking=True"
            )
        if getattr(module, "_neuron_precision", None) is not None:
            raise AdapterError(f"SpikingJelly {cls} {path!r} has a neuron precision setting "
                               f"{module._neuron_precision!r} (other dtypes, Triton kernels); deploy it in float32")  # fmt: skip
        start = module._memories_rv.get("v")
        expected = 0.0 if module.v_reset is None else module.v_reset
        if isinstance(start, torch.Tensor) or start != expected or set(module._memories_rv) != {"v"}:
            raise AdapterError(
                f"SpikingJelly {cls} {path!r}: its state resets to {dict(module._memories_rv)!r}, not v = {expected} "
                "(v_reset, or 0 for a soft reset), which the IR's neuron starts from; do not change its reset values"
            )

    def reset_state(self, model: nn.Module) -> None:
        functional.reset_net(model)


ADAPTER = SpikingJellyAdapter()
"""The adapter instance the front end uses."""
