"""The exact integer forward: a differentiable network that computes what the compiled chip computes.

:class:`ExactIntegerNetwork` runs a compiled network in torch, in integer
units (float64 tensors holding integers, exact below 2^53), with trainable
float weights and biases. Every integer field comes from the compiled
fixed-point nodes (thresholds, reset amounts, du/dv, bias exponents, the
synapse's Lava process and its wrap); only the weight and bias mantissas
are recomputed from the trainable parameters, on the grid the compiler
uses. Per timestep, for a layer of scale ``s`` (weight units per float
unit) fed by synapses with float weights ``W`` reading inputs worth
``unit`` float units per integer (``1 / grade_scale`` for the image,
``1 / (kh kw)`` behind a folded average pool, ``spike_value`` for spikes)::

    W_int = clip(step * round(W * unit * s / (step * 2^weight_exp)))  # the quantizer's rounding, on the
                                                          # synapse's grid (its weight_bits)
    x     = round(image * grade_scale)                    # the chip's graded input
    a     = sum over synapses of lava_current(W_int @ x) * 2^weight_exp
                                                          # wrap_24 / wrap_32 as Lava (lava_arith);
                                                          # an identity shortcut is a synapse with
                                                          # its compiled (fixed) W_int

    a     = wrap_32(a)
    u     = wrap_u(wrap_32(decay(u, du) + wrap_32(a << 6)))   # one 24-bit wrap
    v     = clip(decay(v, dv) + u + (b_int << bias_exp), +-(2^23 - 1))
    o     = v > vth << 6                                  # Loihi's strict compare
    v     = v - (reset_mant << 6) o   | v (1 - o)   | v   # subtract | zero | none
    b_int = clip(round(b * s * 64 / 2^bias_exp))          # 13-bit signed mantissa; b the sum of
                                                          # the layer's synapse biases

and the accumulator (the readout) sums ``a << 6`` the same way, its score
``R / (64 s T)`` (``R / (64 s)`` for a spike count). A folded average pool
is a sum pool here: the fixed-point synapse reads the un-pooled spikes with
the expanded weights ``W_int`` on every tap of a pool window, which is the
same integer as ``W_int`` times the window's spike count.

Why it is exact: every quantity is an integer computed with the integer
reference's operations (:mod:`inflor_deploy.backends.sim.int_reference`),
so the forward equals the fixed-point simulator bit for bit (spikes, u, v,
readout) whenever the weights it rounds are the compiled ones; the test
``tests/test_qat.py`` holds it to that on random inputs, before and after
training steps.

Gradients (straight-through): rounding, the decays' floor shifts, the wraps
and the saturations pass the gradient unchanged (``x + (f(x) - x).detach()``);
the weight and bias clips pass none outside their range; the strict compare
uses the model's surrogate derivative on ``(v - 64 vth - 32) / (64 s)``, the
membrane's distance from the threshold in float units (the ``- 32`` centres
it between the last silent and the first firing multiple of 64).

Supported networks: Conv2d, Linear, non-overlapping AvgPool2d and Flatten
between neuron layers, and layers that sum several synapses and identity
shortcuts (residual blocks: the zoo's ``resnet8``/``resnet19``/``resnet20``
as well as the chains ``digits_cnn`` and ``vgg16``). An identity shortcut's
weights are the compiled integers and stay fixed; a layer's bias is the sum
of its synapses' biases, in the quantizer's order. Anything else (an input
gain, delays, per-position biases, bias sources) is refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inflor_deploy.backends.sim.lava_arith import lava_current, synapse_arithmetic, wrap
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn.surrogate import Surrogate, surrogate_gradient
from inflor_deploy.passes.quantize import A_LIMIT

#: v units per weight unit (Lava's ``a << 6``).
ACT_SHIFT = 6
DECAY_UNIT = 4096
#: u wraps once into 24 bits (int_reference._wrap_u); v saturates at +-(2^23 - 1).
U_LIMIT = 2**23
V_LIMIT = 2**23 - 1

#: Fields of the fixed-point nodes this forward implements; any other field with a non-default value is refused.
IMPLEMENTED_FIELDS: dict[type, frozenset[str]] = {
    n.FixedPointSynapse: frozenset({"name", "sources", "kind", "weight", "stride", "padding", "groups", "delay",
                                    "weight_exp", "weight_bits"}),
    n.FixedPointNeuron: frozenset({"name", "sources", "shape", "vth", "reset", "reset_mant", "du", "dv", "bias_mant",
                                   "bias_exp", "scale"}),
    n.FixedPointAccumulator: frozenset({"name", "sources", "shape", "bias_mant", "bias_exp", "scale", "readout", "dv"}),
    n.Input: frozenset({"name", "sources", "shape", "grade_scale", "encoding", "value_range", "pixel_levels"}),
}  # fmt: skip


class UnsupportedForFinetune(InflorError):
    """The network has a node or field the exact integer forward does not implement (named in the message)."""


def _straight_through(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact``'s value with the gradient of ``x`` (the identity)."""
    return x + (exact - x).detach()


def _round(x: torch.Tensor) -> torch.Tensor:
    """Round half to even (``np.rint``, the quantizer's rounding), straight-through."""
    return _straight_through(x, torch.round(x))


def _decay(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``sign(x f) (|x f| >> 12)`` (rounds toward zero), straight-through on ``x f / 4096``."""
    if factor == DECAY_UNIT:
        return x
    scaled = x * (factor / DECAY_UNIT)
    return _straight_through(scaled, torch.trunc((x * factor).detach() / DECAY_UNIT))


def _inside(x: torch.Tensor, limit: int) -> bool:
    """Whether every value lies in ``[-limit, limit)``, where a wrap is the identity (the common case: skip it)."""
    return x.numel() == 0 or (float(x.detach().max()) < limit and float(x.detach().min()) >= -limit)


def _wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    if _inside(x, 1 << (bits - 1)):
        return x
    return _straight_through(x, wrap(x.detach(), bits))


def _wrap_u(u: torch.Tensor) -> torch.Tensor:
    """Lava's single 24-bit wrap of u (not modular: see lava_arith), straight-through."""
    if u.numel() == 0 or (float(u.detach().max()) <= U_LIMIT and float(u.detach().min()) > -U_LIMIT):
        return u  # the wrap changes only u > 2^23 and u <= -2^23
    d = u.detach()
    exact = torch.where(d > U_LIMIT, d - 2 * U_LIMIT, d)
    exact = torch.where(exact <= -U_LIMIT, d + 2 * U_LIMIT, exact)
    return _straight_through(u, exact)


def _saturate(v: torch.Tensor) -> torch.Tensor:
    return _straight_through(v, v.detach().clamp(-V_LIMIT, V_LIMIT))


class _StrictSpike(torch.autograd.Function):
    """``v > threshold`` forward; backward ``grad * g((v - threshold - 32) / (64 s)) / (64 s)``."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, threshold: torch.Tensor, units: float, surrogate: Surrogate):
        ctx.save_for_backward(v, threshold)
        ctx.units, ctx.surrogate = units, surrogate
        return (v > threshold).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        v, threshold = ctx.saved_tensors
        z = (v - threshold - (1 << (ACT_SHIFT - 1))) / ctx.units
        return grad * surrogate_gradient(z, ctx.surrogate) / ctx.units, None, None, None


def check_implemented(node: n.Node) -> None:
    """Refuse a node kind, or a field with a non-default value, that the forward does not implement."""
    known = IMPLEMENTED_FIELDS.get(type(node))
    if known is None:
        raise UnsupportedForFinetune(
            f"finetune's exact integer forward does not implement {type(node).__name__} {node.name!r}"
        )
    for f in dataclasses.fields(node):
        if f.name in known:
            continue
        value = getattr(node, f.name)
        if value is not None and not (np.ndim(value) == 0 and value == f.default):
            raise UnsupportedForFinetune(
                f"finetune's exact integer forward does not implement {type(node).__name__}.{f.name} = {value!r} "
                f"(node {node.name!r}); it would not reproduce the compiled network"
            )


def check_supported(float_graph: Graph) -> None:
    """Refuse, by name, a float graph this forward does not implement (module docstring: supported networks).

    ``float_graph`` is the graph with BatchNorm folded (compile step ``DistributeJoins``).
    """
    for node in float_graph:
        if not isinstance(node, (n.Input, n.Conv2d, n.Linear, n.AvgPool2d, n.Flatten, n.Neuron, n.Accumulator)):
            raise UnsupportedForFinetune(
                f"finetune's exact integer forward does not implement {type(node).__name__} {node.name!r} "
                "(supported between neuron layers: Conv2d, Linear, AvgPool2d, Flatten; into a layer: synapses "
                "and identity shortcuts)"
            )
        if isinstance(node, (n.Neuron, n.Accumulator)):
            if float(getattr(node, "gain", 1.0)) != 1.0:
                raise UnsupportedForFinetune(
                    f"layer {node.name!r} has an input gain {node.gain:g} (FoldInputGain could not fold it); "
                    "finetune implements layers whose synapses carry the whole current"
                )
            for source in node.sources:
                if not isinstance(float_graph.node(source), (n.Conv2d, n.Linear, n.Neuron)):
                    raise UnsupportedForFinetune(
                        f"layer {node.name!r} reads {type(float_graph.node(source)).__name__} {source!r}; finetune "
                        "supports layers fed by Conv2d/Linear synapses and identity shortcuts"
                    )


@dataclass(frozen=True)
class _Synapse:
    """One trainable synapse: its float node, compiled node, target layer and the grid it rounds to."""

    name: str
    source: str
    fixed: n.FixedPointSynapse
    layer: str
    unit: float  # float units per integer of its input
    input_low: float  # smallest and largest integer input (graded ends, 0/1 spikes, 0..kh*kw pooled spikes)
    input_high: float
    low: int
    high: int
    step: int
    graded: bool


class ExactIntegerNetwork(nn.Module):
    """A compiled network as a differentiable torch module that computes its integers exactly.

    Args:
        float_graph: The float graph with BatchNorm folded and pools still
            in place (the compile step ``DistributeJoins``): the trainable
            weights and biases start from its synapses.
        fixed_graph: The same network compiled (after ``QuantizeFixedPoint``):
            every integer field but the weight and bias mantissas is read from it.
        target: The hardware target (weight ranges, bias mantissa range).
        weight_fill: Fraction of the weight range the weights may use
            (``QuantizationOptions.weight_fill``: a reduced precision).
        surrogate: The surrogate derivative of the strict compare.

    Raises:
        UnsupportedForFinetune: A node or field this forward does not implement.
    """

    def __init__(self, float_graph: Graph, fixed_graph: Graph, target, weight_fill: float = 1.0,
                 surrogate: Surrogate = Surrogate()) -> None:  # fmt: skip
        super().__init__()
        check_supported(float_graph)
        for node in fixed_graph:
            check_implemented(node)
        if fixed_graph.input.encoding != "direct":
            raise UnsupportedForFinetune("finetune supports direct-encoded inputs (static images); this input is a sequence")
        self.timesteps = fixed_graph.timesteps
        self.input_name = fixed_graph.input.name
        self.grade_scale = float(fixed_graph.input.grade_scale)
        self.value_range = tuple(float(v) for v in fixed_graph.input.value_range)
        self.surrogate = surrogate
        self.layers = {x.name: x for x in fixed_graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)}
        fixed_synapses = {x.name: x for x in fixed_graph.of_type(n.FixedPointSynapse)}
        self.order: list[n.Node] = []
        self.synapses: dict[str, _Synapse] = {}
        # Layer -> what its current sums, in the compiled layer's source order: a trainable synapse's key, or
        # an identity shortcut's compiled synapse (fixed integers).
        self.inputs: dict[str, list[str | n.FixedPointSynapse]] = {}
        # Layer -> the keys whose biases add into it, in the float graph's source order (the quantizer's sum).
        self.bias_keys: dict[str, list[str]] = {}
        # Shortcut synapse name -> its compiled integers as a float64 tensor (converted once, used every step).
        self.shortcut_weights: dict[str, torch.Tensor] = {}
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        unit_of: dict[str, float] = {float_graph.input.name: 1.0 / self.grade_scale}
        reach_of = {float_graph.input.name: tuple(float(np.rint(v * self.grade_scale)) for v in self.value_range)}
        num = target.numerics
        for node in float_graph:
            if isinstance(node, n.Input):
                continue
            if isinstance(node, (n.Conv2d, n.Linear)):
                unit = unit_of[node.sources[0]]
                self._add_synapse(node, fixed_synapses, unit, reach_of[node.sources[0]], num, weight_fill, float_graph)
            elif isinstance(node, n.AvgPool2d):
                if tuple(node.kernel) != tuple(node.stride):
                    raise UnsupportedForFinetune(f"AvgPool2d {node.name!r} overlaps (stride != kernel); it cannot fold")
                unit_of[node.name] = unit_of[node.sources[0]] / (node.kernel[0] * node.kernel[1])
                reach_of[node.name] = tuple(v * node.kernel[0] * node.kernel[1] for v in reach_of[node.sources[0]])
            elif isinstance(node, n.Flatten):
                unit_of[node.name] = unit_of[node.sources[0]]
                reach_of[node.name] = reach_of[node.sources[0]]
            elif isinstance(node, (n.Neuron, n.Accumulator)):
                self._add_layer(node, fixed_synapses, float_graph)
                unit_of[node.name] = float(getattr(node, "spike_value", 1.0))
                reach_of[node.name] = (0.0, 1.0)
            else:
                raise UnsupportedForFinetune(
                    f"finetune's exact integer forward does not implement {type(node).__name__} {node.name!r} "
                    "(supported between neuron layers: Conv2d, Linear, AvgPool2d, Flatten)"
                )
            self.order.append(node)
        self.bias_range = (num.bias_mant_range.start, num.bias_mant_range.stop - 1)

    def _add_layer(self, node, fixed_synapses, float_graph: Graph) -> None:
        """What the layer's current sums (trainable synapses, identity shortcuts) and whose biases it adds."""
        fixed_layer = self.layers.get(node.name)
        if fixed_layer is None:
            raise UnsupportedForFinetune(f"layer {node.name!r} has no compiled twin in the fixed-point graph")
        keys = {syn.name: key for key, syn in self.synapses.items()}
        inputs: list[str | n.FixedPointSynapse] = []
        for name in fixed_layer.sources:
            if name in keys:
                inputs.append(keys[name])
                continue
            fixed = fixed_synapses.get(name)
            # (A shortcut's delay is the pipelined schedule's; this forward is the aligned view, as the oracle's.)
            if fixed is None or not isinstance(float_graph.node(fixed.sources[0]), n.Neuron):
                raise UnsupportedForFinetune(
                    f"layer {node.name!r}: its compiled input {name!r} is neither a synapse of the float graph nor an "
                    "identity shortcut from a neuron layer (a bias source? compile with --plain-layers)"
                )
            inputs.append(fixed)
            self.shortcut_weights[fixed.name] = torch.from_numpy(np.asarray(fixed.weight, np.float64))
        trainable = [keys[s] for s in node.sources if s in keys]
        if len(trainable) + sum(isinstance(i, n.FixedPointSynapse) for i in inputs) != len(node.sources):
            raise UnsupportedForFinetune(f"layer {node.name!r}: its compiled inputs do not match its float sources")
        self.inputs[node.name] = inputs
        self.bias_keys[node.name] = trainable

    def _add_synapse(self, node, fixed_synapses, unit, reach, num, weight_fill, float_graph) -> None:
        consumers = float_graph.consumers(node.name)
        if len(consumers) != 1 or not isinstance(consumers[0], (n.Neuron, n.Accumulator)):
            raise UnsupportedForFinetune(f"synapse {node.name!r} must feed exactly one neuron layer")
        fixed = fixed_synapses.get(node.name)
        if fixed is None:
            raise UnsupportedForFinetune(f"synapse {node.name!r} has no compiled twin in the fixed-point graph")
        # A delay (a projection shortcut's) belongs to the pipelined schedule; this forward is the aligned view.
        # The synapse's own grid: fewer weight bits (--weight-bits) coarsen a dense step, narrow a conv range.
        low, high, step = num.weight_grid(fixed.kind, fixed.weight_bits)
        # A reduced weight precision (weight_fill < 1) keeps the weights within that fraction of the range (or
        # the compiled weights' reach, when the grid's rounding gives one more step: the start must be exact).
        limit = int(weight_fill * min(-low, high) // step) * step
        limit = max(limit, int(np.abs(fixed.weight).max(initial=0)))
        key = _key(node.name)
        self.synapses[key] = _Synapse(node.name, node.sources[0], fixed, consumers[0].name, unit, *reach, -limit, limit,
                                      step, graded=fixed.sources[0] == float_graph.input.name)  # fmt: skip
        self.weights[key] = nn.Parameter(torch.from_numpy(np.array(node.weight, dtype=np.float32)))
        bias = np.zeros(node.weight.shape[0], np.float32) if node.bias is None else np.array(node.bias, np.float32)
        if bias.ndim != 1:
            raise UnsupportedForFinetune(f"synapse {node.name!r} has a per-position bias; finetune supports per-channel biases")
        self.biases[key] = nn.Parameter(torch.from_numpy(bias), requires_grad=node.bias is not None)

    # ------------------------------------------------------------------ the grid

    def _scale(self, layer: str) -> float:
        return float(self.layers[layer].scale)

    def integer_weight(self, key: str) -> torch.Tensor:
        """The weight mantissas ``W_int`` of a synapse (float64 integers, straight-through)."""
        syn = self.synapses[key]
        exp = int(getattr(syn.fixed, "weight_exp", 0))
        x = self.weights[key].double() * syn.unit * self._scale(syn.layer) / (syn.step * 2.0**exp)
        return (_round(x) * syn.step).clamp(syn.low, syn.high)

    def _layer_bias(self, layer: str) -> torch.Tensor:
        """The float64 sum of the layer's synapse biases, in the quantizer's order (0 + b1 + b2 ...)."""
        total = None
        for key in self.bias_keys[layer]:
            b = self.biases[key].double()
            total = b if total is None else total + b
        return total if total is not None else torch.zeros(self.layers[layer].shape[0], dtype=torch.float64)

    def integer_bias(self, layer: str) -> torch.Tensor:
        """The bias mantissas (per channel) of a layer: its synapses' biases summed, then rounded."""
        x = self._layer_bias(layer) * self._scale(layer) * 2.0 ** (ACT_SHIFT - self.layers[layer].bias_exp)
        return _round(x).clamp(*self.bias_range)

    def grid_parameters(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Synapse name -> (weight, bias) in float32, on the grid: ``W_int 2^e / (unit s)``, ``b_int 2^bias_exp / (64 s)``.

        Every value is exact in float32 when the scales and units are powers
        of two (the finetune grid): rounding it again gives the integers back.
        A layer's whole bias goes to its first synapse that has one (the others
        get 0), so the float model's sum is that one value.
        """
        out = {}
        with torch.no_grad():
            carrier = {}
            for layer, keys in self.bias_keys.items():
                with_bias = [k for k in keys if self.biases[k].requires_grad]
                if with_bias:
                    carrier[with_bias[0]] = layer
            for key, syn in self.synapses.items():
                scale = self._scale(syn.layer)
                exp = int(getattr(syn.fixed, "weight_exp", 0))
                w = (self.integer_weight(key) * 2.0**exp / (syn.unit * scale)).numpy().astype(np.float32)
                if not self.biases[key].requires_grad:
                    b = None
                elif key in carrier:
                    layer = self.layers[syn.layer]
                    b = (self.integer_bias(syn.layer) * 2.0 ** (layer.bias_exp - ACT_SHIFT) / scale).numpy()
                    b = b.astype(np.float32)
                else:
                    b = np.zeros(self.biases[key].shape, np.float32)
                out[syn.name] = (w, b)
        return out

    @torch.no_grad()
    def enforce_headroom(self, limit: int = A_LIMIT) -> None:
        """Shrink the float weights into every layer output whose worst-case current could exceed ``limit`` wu.

        The quantizer's u headroom (``passes/quantize.py``): with every input
        at the end of its range that raises (lowers) the sum most, the sum
        over the layer's synapses and shortcuts of ``(W_int x) 2^weight_exp``
        stays within ``limit``, so ``a << 6`` cannot wrap u. A recorded scale
        is refused when it fails, so training keeps it, like a max-norm
        constraint: called after each optimizer step. Only trainable weights
        shrink; a shortcut's fixed integers count as they are.
        """
        def extremes(w: torch.Tensor, exp: int, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
            w = w.reshape(w.shape[0], -1) * 2.0**exp
            pos, neg = w.clamp(min=0).sum(1), w.clamp(max=0).sum(1)
            return pos * high + neg * low, pos * low + neg * high

        def bound(layer: str, exact: bool) -> torch.Tensor:
            top = bottom = 0.0
            for item in self.inputs[layer]:
                if isinstance(item, n.FixedPointSynapse):
                    t, b = extremes(self.shortcut_weights[item.name], item.weight_exp, 0.0, 1.0)
                else:
                    syn = self.synapses[item]
                    w = self.weights[item].double() * syn.unit * self._scale(layer) if exact else self.integer_weight(item)
                    t, b = extremes(w, 0 if exact else int(syn.fixed.weight_exp), syn.input_low, syn.input_high)
                top, bottom = top + t, bottom + b
            return torch.maximum(torch.as_tensor(top).abs(), torch.as_tensor(bottom).abs())

        for layer, inputs in self.inputs.items():
            trainable = [item for item in inputs if not isinstance(item, n.FixedPointSynapse)]
            for _ in range(8):
                worst = bound(layer, exact=False)
                over = worst > limit
                if not bool(over.any()) or not trainable:
                    break
                # The unclipped values bound it too (clipping only shrinks them): shrink by the larger excess.
                worst = torch.maximum(worst, bound(layer, exact=True))
                factor = torch.where(over, limit / worst * 0.999, torch.ones_like(worst))
                for key in trainable:
                    weight = self.weights[key]
                    weight.mul_(factor.to(weight.dtype).reshape((-1,) + (1,) * (weight.dim() - 1)))
            else:  # pragma: no cover - each round removes most of the excess
                raise InflorError(f"layer {layer!r}: could not bring its worst-case current under {limit}")

    # ------------------------------------------------------------------ the forward

    def _current(self, key: str, x: torch.Tensor, node: n.Node) -> torch.Tensor:
        # The float node's geometry: behind a folded pool, x is the pool's sum and W_int the unexpanded kernel.
        syn = self.synapses[key]
        return _synapse_current(syn.fixed, self.integer_weight(key), x, syn.graded, node)

    def quantize_input(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``round(image * grade_scale)`` as float64 integers, refused outside the declared range."""
        x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
        lo, hi = self.value_range
        if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
            raise InflorError(f"inputs in [{float(x.min()):g}, {float(x.max()):g}] are outside the declared range [{lo:g}, {hi:g}]")
        return torch.round(x * self.grade_scale)

    def forward(self, images, record: bool = False) -> "ExactRun":
        """Run T steps on images ``[B, C, H, W]`` (floats in the declared range).

        Returns:
            The :class:`ExactRun`: class scores (differentiable), the spikes of
            every neuron layer ``[T, B, ...]`` (differentiable), and with
            ``record`` the integer u and v traces.
        """
        x = self.quantize_input(images)
        batch = x.shape[0]
        state: dict[str, list[torch.Tensor]] = {}
        spikes: dict[str, list[torch.Tensor]] = {}
        traces: dict[str, dict[str, list[torch.Tensor]]] = {"u": {}, "v": {}}
        readout = None
        out_name = next(name for name, layer in self.layers.items() if isinstance(layer, n.FixedPointAccumulator))
        out = self.layers[out_name]
        keys = {syn.name: key for key, syn in self.synapses.items()}
        for _ in range(self.timesteps):
            value: dict[str, torch.Tensor] = {self.input_name: x}
            for node in self.order:
                if isinstance(node, (n.Conv2d, n.Linear)):
                    value[node.name] = self._current(keys[node.name], value[node.sources[0]], node)
                elif isinstance(node, n.AvgPool2d):
                    # The sum over each window: the expanded weights see every tap (module docstring).
                    value[node.name] = F.avg_pool2d(value[node.sources[0]], node.kernel, node.stride, divisor_override=1)
                elif isinstance(node, n.Flatten):
                    value[node.name] = value[node.sources[0]].reshape(batch, -1)
                else:
                    a = None
                    for item in self.inputs[node.name]:
                        if isinstance(item, n.FixedPointSynapse):  # an identity shortcut: its compiled integers
                            w = self.shortcut_weights[item.name]
                            part = _synapse_current(item, w, value[item.sources[0]], False, item)
                        else:
                            part = value[self.synapses[item].name]
                        # Integers below 2^53: the sum is exact in any order; Lava's int32 port sum wraps below.
                        a = part if a is None else a + part
                    u, v = state.get(node.name, (torch.zeros_like(a), torch.zeros_like(a)))
                    fired, u, v = self._layer_step(self.layers[node.name], a, u, v)
                    state[node.name] = (u, v)
                    if record:
                        traces["u"].setdefault(node.name, []).append(u.detach())
                        traces["v"].setdefault(node.name, []).append(v.detach())
                    if fired is not None:
                        spikes.setdefault(node.name, []).append(fired)
                        value[node.name] = fired
                    elif out.readout == "mean_membrane":
                        readout = v if readout is None else readout + v
        if out.readout != "mean_membrane":
            readout = state[out_name][1]
        scores = readout / (2**ACT_SHIFT * float(out.scale) * n.readout_divisor(out, self.timesteps))
        return ExactRun(
            scores=scores,
            readout=readout,
            spikes={k: torch.stack(v) for k, v in spikes.items()},
            currents={k: torch.stack(v) for k, v in traces["u"].items()},
            voltages={k: torch.stack(v) for k, v in traces["v"].items()},
        )

    def _layer_step(self, layer, a: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
        """One step of a neuron layer (or the accumulator): the integer reference's update, straight-through."""
        shape = tuple(layer.shape)
        du = layer.du if isinstance(layer, n.FixedPointNeuron) else DECAY_UNIT - 1
        bias = self.integer_bias(layer.name).reshape((-1,) + (1,) * (len(shape) - 1)) * 2.0**layer.bias_exp
        a = _wrap(a, 32)
        u = _wrap_u(_wrap(_decay(u, DECAY_UNIT - (du + 1)) + _wrap(a * 2**ACT_SHIFT, 32), 32))
        v = _saturate(_decay(v, DECAY_UNIT - layer.dv) + u + bias)
        if isinstance(layer, n.FixedPointAccumulator):
            return None, u, v
        threshold = torch.as_tensor(n.per_channel(np.asarray(layer.vth, np.float64), len(shape)) * 2**ACT_SHIFT)
        units = 2**ACT_SHIFT * float(layer.scale)
        fired = _StrictSpike.apply(v, threshold.to(v.dtype), units, self.surrogate)
        if layer.reset == "subtract":
            amount = torch.as_tensor(n.per_channel(np.asarray(layer.reset_mant, np.float64), len(shape)) * 2**ACT_SHIFT)
            v = v - amount.to(v.dtype) * fired
        elif layer.reset == "zero":
            v = v * (1.0 - fired)
        return fired, u, v


def _synapse_current(fixed: n.FixedPointSynapse, w: torch.Tensor, x: torch.Tensor, graded: bool,
                     geometry: n.Node) -> torch.Tensor:  # fmt: skip
    """``lava_current(W_int @ x) * 2^weight_exp``: what the compiled synapse delivers (straight-through wraps).

    ``geometry``: the node whose stride, padding and groups a convolution uses.
    """
    if fixed.kind == "conv":
        exact = F.conv2d(x, w, stride=tuple(geometry.stride), padding=tuple(geometry.padding), groups=geometry.groups)
    else:
        exact = x.reshape(x.shape[0], -1) @ w.T
    arith = synapse_arithmetic(fixed, graded)
    # Within [-limit, limit) Lava delivers the exact sum (lava_arith.SynapseArithmetic.limit).
    current = exact if _inside(exact, arith.limit) else _straight_through(exact, lava_current(arith, exact.detach()))
    return current * 2.0 ** int(fixed.weight_exp)


def _key(name: str) -> str:
    """A ParameterDict key for an IR name (dots are not allowed in module names)."""
    return name.replace(".", "__")


@dataclass
class ExactRun:
    """What one exact forward produced.

    Attributes:
        scores: ``[B, classes]`` float64 class scores (differentiable).
        readout: ``[B, classes]`` the integer readout ``R`` (v units).
        spikes: Neuron layer -> ``[T, B, ...]`` spikes in {0, 1} (differentiable).
        currents, voltages: Layer -> ``[T, B, ...]`` integer u and v (recorded runs only).
    """

    scores: torch.Tensor
    readout: torch.Tensor
    spikes: dict[str, torch.Tensor]
    currents: dict[str, torch.Tensor]
    voltages: dict[str, torch.Tensor]

    def spike_rate(self) -> torch.Tensor:
        """Mean spikes per neuron-step over every spiking layer (differentiable): the activity penalty."""
        total = sum(s.sum() for s in self.spikes.values())
        count = sum(s.numel() for s in self.spikes.values())
        return total / max(count, 1)
