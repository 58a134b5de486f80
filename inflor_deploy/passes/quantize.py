"""QuantizeFixedPoint: float IR -> Loihi 2 fixed-point IR, one scale per neuron layer.

Rewrites every synapse (Conv2d / Linear, plus identity shortcuts between
neurons) into a :class:`FixedPointSynapse` with integer mantissas and a
shared exponent, every Neuron into a :class:`FixedPointNeuron`, the
Accumulator into a :class:`FixedPointAccumulator`, and gives the Input a
``grade_scale``. A layer whose bias is beyond its neuron's bias field also
gets a *bias source* (a one-neuron layer firing at every step, and its
synapse). The choice of each layer's scale and integers is
:func:`~inflor_deploy.passes.fixed_point_layer.quantize_layer`, a pure
function (its module docstring states the identities and the search); this
module walks the graph, builds the nodes and the report.

Invariant (why a per-layer scale is free): SRIF dynamics are
scale-invariant. Multiplying a layer's incoming weights, bias, threshold,
reset amount and membrane by the same s > 0 changes no spike, because
``H >= vth  <=>  s*H >= s*vth`` and the reset subtracts ``s*reset``.
So each layer gets its own s, and the only errors are the roundings of
``s*W``, ``s*b``, ``s*vth`` and ``s*reset`` to integers, reported per layer.

How s is chosen for a layer (all its incoming synapses share it, because
their currents add into one membrane):

1. Fill: the synapse with the smallest weights fills its weight grid
   (dense: even values in [-256, 254], Lava's mixed-sign Dense handling;
   conv: [-128, 127]; fewer levels with ``weight_bits``) at exponent 0; every
   other synapse takes the smallest ``weight_exp`` that fits its grid
   (``a = (W x) << weight_exp``), so each keeps at least half its grid's
   levels. Where a cap below (usually the u headroom of a wide fan-in)
   holds s under the fill scale, the exponent goes negative
   (``a = floor((W x) / 2^-weight_exp)``, Lava's right shift, at most one
   wu per step low) so the weights keep their grid all the same. An
   identity shortcut is made exact by lowering s by less than one of its
   mantissa steps.
2. Headroom against the 24-bit wrap of u (always enforced): the current of
   one step enters u as ``a << 6``, so the worst-case ``|a|`` (every input
   at the end of the Input's declared ``value_range`` that raises it, the
   range widened to include 0) must stay below ``2^17``. Below that no Lava
   wrap can happen for inputs in the declared range (the Conv's 24 bits,
   Dense's 32, u's 24; the report's ``wrap_possible`` says so per layer);
   inputs outside it are refused at run time.
3. Headroom against saturation of v. The default ``headroom="probe"`` runs
   the float graph on the compile probe, finds for each layer a membrane
   range that changes none of its spikes when v is clamped to it, and keeps
   that range below half of v's, ``(2^23 - 1) >> 7`` weight units
   (``fixed_point_layer``: the probe guard): saturation that would change a
   spike on typical inputs is prevented, harmless saturation (a membrane far
   below zero under steady inhibition) does not cost precision. ``headroom="uv"``
   guarantees it for every input: over one sample window v can move by at
   most ``T * max|a + bias|``, which must stay below ``(2^23 - 1) >> 6``.
   Under ``"u"`` and ``"probe"`` that worst case is only reported: a layer
   that *could* saturate is flagged (and refused with ``overflow="error"``);
   the simulators count real saturation events.
4. Ranges: the threshold and reset mantissas fit 17 unsigned bits; the bias
   mantissa 13 signed bits at ``bias_exp`` 6 (weight units), or 7 when it
   needs the range; a larger bias goes through a bias source (its synapse's
   exponent at most the target's ``weight_exp_max``).

Rounding can push an integer bound past its limit; the scale is then the
largest one that respects every bound after rounding, found by a bisection
that provably terminates (``fixed_point_layer``: with the exponents fixed,
the bounds are non-decreasing in s).

A recorded scale (``QuantizationOptions.layer_scales``: the grid a
fine-tuned checkpoint was trained against, :mod:`inflor_deploy.grid`)
replaces steps 1-3: it is used as given, and refused (PassError) when a
weight would be clipped, the bias would not fit, or the u headroom fails.

Input: the chip receives ``round(x * grade_scale)``: the given scale, else
the Input's ``pixel_levels`` (255 for pixels in [0, 1], 1 for raw 0..255
pixels: the chip gets the 8-bit pixels), else ``255 / max(|lo|, |hi|)`` of
the declared range (8 bits of magnitude plus a sign). Signed ranges are
planned for by their extremes: a weight's worst current takes the input end
that raises (or lowers) it most.

Threshold: the hardware fires on ``v > vth_hw << 6``; v moves on a grid of
g v units (64 without leak: weights, bias and reset all enter shifted by 6;
1 with a leak, whose decay truncates), so it fires on ``v >= 64 vth_hw + g``.
With ``theta = round(s * vth)`` (per channel when vth is; the scale stays per layer):

* ``compare=">"`` (snnTorch): ``vth_hw = theta``, exact for any v;
* ``compare=">="`` (InfLoR, SpikingJelly) without leak:
  ``v >= theta << 6  <=>  v > (theta - 1) << 6``, so ``vth_hw = theta - 1``, exact;
* ``compare=">="`` with a leak: no ``vth_hw`` gives ``v >= 64 theta`` (v is not a
  multiple of 64), so ``vth_hw = round(s * vth - 1/64)``: the representable
  boundary ``64 vth_hw + 1`` nearest to ``64 s vth``. It differs from
  ``64 s vth`` by at most 32 v units (half a weight unit) either way, like
  the rounding of theta itself, and is not biased toward firing early.
  Reported per layer (``threshold_exact: false``, ``threshold_offset_v``).

Reset: ``"subtract"`` -> ``reset_mant = round(s * reset_amount)`` (per channel
when the amount is), ``"zero"`` -> v = 0, ``"none"`` -> no reset
(``reset_mant = 0``). Input gain (kept on a neuron whose shortcut could not
absorb it, see ``FoldInputGain``) scales every incoming synapse and bias.
Leak ``tau -> dv = round((1 - tau) * 4096)``. The readout
(:class:`~inflor_deploy.ir.FixedPointAccumulator`) keeps its kind; a
mean-membrane readout's tau becomes its dv.

Compression (``QuantizationOptions``): ``weight_bits`` b < 8 puts every
synapse on a b-bit mantissa grid (Lava ``num_weight_bits``); ``prune`` f
removes the fraction f of each synapse's connections with the smallest
|weight| (per synapse, before the scale is chosen; identity shortcuts and
bias sources are kept whole) and marks the synapse ``sparse``: Lava runs
it as Sparse/DelaySparse holding only the kept connections, and the
resource and synop reports count only those.

Rounding bound of the threshold and the reset amount
(:data:`MAX_THRESHOLD_ROUNDING` = 1 %): ``|theta / s - vth| / vth`` and
``|reset_mant / s - reset| / reset`` above it get a warning in the
quantization report and the compile output (``overflow="error"`` refuses
the compile). Why 1 %: the scale makes a layer's largest weight fill the
8-bit range, where one rounding step is 1/127 = 0.79 % of it (conv; dense:
2/254, the same). A threshold rounded more coarsely than that is the
layer's largest relative error, so the bound is that resolution rounded
up; ``theta >= 50`` always meets it (0.5 / 50). ``theta = 1`` from
``s * vth = 0.86`` errs by 16 %: a neuron then fires on 86 % of the input
it was trained to need.

Preconditions (PassError naming the pass to run): no MPR, explicit reset
amounts, same-step resets, ``v_reset = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.fixed_point_layer import (
    A_LIMIT, V_LIMIT_WEIGHT_UNITS, LayerQuantization, LayerQuantizationError, LayerSpec, QuantizedSynapse,
    SynapseSpec, quantize_layer,
)  # fmt: skip

__all__ = [
    "A_LIMIT", "DEFAULT_INPUT_GRADES", "MAX_THRESHOLD_ROUNDING", "QuantizeFixedPoint", "V_LIMIT_WEIGHT_UNITS",
    "default_grade_scale", "layer_specs", "prune_smallest", "quantize_fixed_point", "quantize_with_report",
]  # fmt: skip

#: Default integer grades per unit of input for images in [0, 1] (8-bit pixels).
DEFAULT_INPUT_GRADES = 255.0
#: A graded input value travels as a 32-bit payload.
GRADED_LIMIT = 2**31
#: Largest relative rounding error of a threshold or reset amount accepted without a warning
#: (module docstring: the relative resolution of the largest 8-bit weight, 1/127, rounded up).
MAX_THRESHOLD_ROUNDING = 0.01


def default_grade_scale(node: n.Input) -> float:
    """The input's grade scale when none is given (module docstring): pixel levels, else 255 / max |range|."""
    if node.pixel_levels is not None:
        return float(node.pixel_levels)
    return DEFAULT_INPUT_GRADES / max(abs(float(v)) for v in node.value_range)


def prune_smallest(weight: np.ndarray, fraction: float) -> np.ndarray:
    """``weight`` with its ``floor(fraction * size)`` smallest-magnitude entries set to 0 (ties: lower index first)."""
    count = int(math.floor(fraction * weight.size))
    if count <= 0:
        return weight
    flat = weight.reshape(-1).copy()
    flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0.0
    return flat.reshape(weight.shape)


def _synapse_specs(graph: Graph, layer: n.Node, shapes, grades: float, opts) -> list[SynapseSpec]:
    gain = float(getattr(layer, "gain", 1.0))  # H = tau U + g X: the gain scales every incoming current
    bits = opts.weight_bits
    found = []
    for source_name in layer.sources:
        src = graph.node(source_name)
        if isinstance(src, n.Neuron):
            # Identity shortcut: the spikes of `src` add straight into this layer,
            # as a 1x1 convolution with an identity kernel (or a diagonal dense).
            shape = shapes[src.name]
            channels = shape[0]
            value = src.spike_value * gain
            if len(shape) == 3:
                eye = np.eye(channels).reshape(channels, channels, 1, 1) * value
                found.append(SynapseSpec(f"{layer.name}.shortcut", src.name, "conv", eye, identity=True,
                                         weight_bits=bits))  # fmt: skip
            else:
                found.append(SynapseSpec(f"{layer.name}.shortcut", src.name, "dense", np.eye(channels) * value,
                                         identity=True, weight_bits=bits))  # fmt: skip
            continue
        if not isinstance(src, (n.Conv2d, n.Linear)):
            raise PassError(
                f"layer {layer.name!r}: source {src.name!r} is a {type(src).__name__}; after "
                "FoldBatchNorm and FoldAveragePool every layer input must be a Conv2d, a Linear "
                "or a neuron (identity shortcut)"
            )
        feeder = graph.node(src.sources[0])
        if isinstance(feeder, n.Input):
            per_unit = 1.0 / grades  # integer grade x_q stands for x_q / grades
            input_min, input_max = (float(np.rint(v * grades)) for v in feeder.value_range)
        elif isinstance(feeder, n.Neuron):
            per_unit, input_min, input_max = feeder.spike_value, 0.0, 1.0
        else:
            raise PassError(
                f"synapse {src.name!r} reads {type(feeder).__name__} {feeder.name!r}; on Loihi a "
                "synapse reads spikes of a neuron layer or the graded input"
            )
        weight = np.asarray(src.weight, dtype=np.float64) * per_unit * gain
        if opts.prune > 0:
            weight = prune_smallest(weight, opts.prune)
        common = dict(input_min=input_min, input_max=input_max, weight_bits=bits, sparse=opts.prune > 0)
        if isinstance(src, n.Conv2d):
            found.append(SynapseSpec(src.name, feeder.name, "conv", weight, stride=src.stride, padding=src.padding,
                                     groups=src.groups, **common))  # fmt: skip
        else:
            found.append(SynapseSpec(src.name, feeder.name, "dense", weight, **common))
    return found


def _channel_bias(layer_bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a per-channel bias to the layer's shape (a per-position bias map already has it)."""
    if layer_bias.shape == tuple(shape):
        return layer_bias
    if len(shape) == 3:
        return np.broadcast_to(layer_bias[:, None, None], shape)
    return layer_bias.reshape(shape)


def layer_specs(graph: Graph, ctx: PassContext, grades: float | None = None) -> list[LayerSpec]:
    """The :class:`LayerSpec` of every neuron layer and the accumulator of a float graph, in graph order.

    What :func:`~inflor_deploy.passes.fixed_point_layer.quantize_layer` needs
    for each layer (``QuantizeFixedPoint`` quantizes exactly these); a training
    loop can use it to see a layer as the compiler will.
    """
    shapes = infer_shapes(graph)
    opts = ctx.quantization
    if grades is None:
        grades = opts.input_grade_scale or default_grade_scale(graph.input)
    if opts.weight_bits is None:
        opts = dataclasses.replace(opts, weight_bits=ctx.target.numerics.weight_bits)
    ranges = _membrane_ranges(graph, ctx.probe) if opts.headroom == "probe" else {}
    specs = []
    for layer in graph.of_type(n.Neuron, n.Accumulator):
        shape = shapes[layer.name]
        gain = float(getattr(layer, "gain", 1.0))
        bias = np.zeros(shape)  # per position: a folded input normalization gives conv borders their own bias
        for source_name in layer.sources:
            src = graph.node(source_name)
            if isinstance(src, (n.Conv2d, n.Linear)) and src.bias is not None:
                bias = bias + _channel_bias(np.asarray(src.bias, dtype=np.float64), shape) * gain
        synapses = tuple(_synapse_specs(graph, layer, shapes, grades, opts))
        if isinstance(layer, n.Accumulator):
            specs.append(LayerSpec(layer.name, shape, synapses, bias, graph.timesteps, dv=_decay_mantissa(layer.tau)))
            continue
        if layer.mpr:
            raise PassError(f"layer {layer.name!r}: run FoldRectifierIntoThreshold before QuantizeFixedPoint")
        if layer.reset == "subtract" and layer.reset_amount is None:
            raise PassError(f"layer {layer.name!r}: run SoftResetToSubtractive before QuantizeFixedPoint")
        specs.append(LayerSpec(
            layer.name, shape, synapses, bias, graph.timesteps, vth=layer.vth, compare=layer.compare,
            reset=layer.reset, reset_amount=layer.reset_amount, dv=_decay_mantissa(layer.tau),
            v_needed=ranges.get(layer.name, (0.0, 0.0))[1],
        ))  # fmt: skip
    return specs


def _membrane_ranges(graph: Graph, probe: np.ndarray | None) -> dict[str, tuple[float, float]]:
    """Neuron name -> (peak |H|, spike-preserving range) on the probe (the probe guard's input); {} without a probe."""
    from inflor_deploy.backends.sim.float_ir import run_float, spike_preserving_range

    if probe is None or len(probe) == 0:
        return {}
    # The contract's own float run (float32, the same memory budget); the guard needs sizes, not last bits.
    run = run_float(graph, probe, record_currents=True)
    return {name: spike_preserving_range(graph.node(name), current) for name, current in run.currents.items()}


def _synapse_node(q: QuantizedSynapse) -> n.FixedPointSynapse:
    return n.FixedPointSynapse(
        name=q.name, sources=(q.source,), kind=q.kind, weight=q.weight, stride=q.stride, padding=q.padding,
        groups=q.groups, weight_exp=int(q.weight_exp), weight_bits=int(q.weight_bits), sparse=bool(q.sparse),
    )  # fmt: skip


def bias_source_node(name: str) -> n.FixedPointNeuron:
    """A one-neuron layer that fires at every step: no input, ``v = bias_mant << 6 = 64 > vth << 6 = 0``, reset to 0."""
    return n.FixedPointNeuron(
        name=name, sources=(), shape=(1,), vth=0, reset="zero", reset_mant=0, du=4095, dv=0,
        bias_mant=np.ones(1, dtype=np.int32), bias_exp=6, scale=1.0,
    )  # fmt: skip


def _layer_nodes(spec: LayerSpec, layer: n.Node, q: LayerQuantization) -> list[n.Node]:
    """The fixed-point nodes of one layer: bias source (if any), synapses, then the layer."""
    nodes: list[n.Node] = []
    synapses = [_synapse_node(s) for s in q.synapses]
    if q.bias_source is not None:
        nodes.append(bias_source_node(q.bias_source.source))
        synapses.append(_synapse_node(q.bias_source))
    nodes.extend(synapses)
    common = dict(name=layer.name, sources=tuple(s.name for s in synapses), shape=spec.shape,
                  bias_mant=np.ascontiguousarray(q.bias_mant, dtype=np.int32), bias_exp=int(q.bias_exp),
                  scale=q.scale)  # fmt: skip
    if isinstance(layer, n.Accumulator):
        nodes.append(n.FixedPointAccumulator(readout=layer.readout, dv=spec.dv, **common))
    else:
        nodes.append(n.FixedPointNeuron(
            vth=_scalar_or_channels(q.vth_hw), reset=layer.reset, reset_mant=_scalar_or_channels(q.reset_mant),
            du=4095, dv=spec.dv, **common,
        ))  # fmt: skip
    return nodes


def _report(spec: LayerSpec, layer: n.Node, q: LayerQuantization) -> dict[str, Any]:
    scale = q.scale
    bias_q = q.bias_mant.astype(np.float64) * 2.0 ** (q.bias_exp - 6)
    if q.bias_source is not None:
        bias_q = bias_q + q.bias_source.weight.reshape(spec.shape).astype(np.float64) * 2.0**q.bias_source.weight_exp
    window = q.v_window_bound
    report: dict[str, Any] = {
        "layer": layer.name,
        "scale": scale,
        "scale_limited_by": q.scale_limited_by,
        "scale_limits": dict(q.scale_limits),
        "weight_rounding": _weight_errors(spec, q),
        "bias_exp": int(q.bias_exp),
        "bias_source": None if q.bias_source is None else {
            "synapse": q.bias_source.name, "neuron": q.bias_source.source, "weight_exp": int(q.bias_source.weight_exp),
        },
        "bias_max_abs_error": float(np.abs(bias_q / scale - spec.bias).max(initial=0)),
        "u_bound": q.u_bound,
        "u_headroom": A_LIMIT / q.u_bound if q.u_bound else math.inf,
        # |a| <= A_LIMIT < 2^17 for every input in the declared range: no Lava wrap (Conv 24 bits,
        # u 24 bits after << 6) can happen there; inputs outside it are refused at run time.
        "wrap_possible": bool(q.u_bound > A_LIMIT),
        "v_window_bound": window,
        "v_headroom": V_LIMIT_WEIGHT_UNITS / window if window else math.inf,
        "can_saturate_v": bool(window > V_LIMIT_WEIGHT_UNITS),
        # The probe guard (headroom="probe"): the v range (wu) the probe's spikes need, and the room above it.
        "v_needed": spec.v_needed * scale if spec.v_needed else None,
        "v_needed_headroom": V_LIMIT_WEIGHT_UNITS / (spec.v_needed * scale) if spec.v_needed else None,
        "dv": spec.dv,
        "tau_realized": (4096 - spec.dv) / 4096,
    }
    if isinstance(layer, n.Accumulator):
        report.update(readout=layer.readout)
        return report
    vth = np.asarray(spec.vth, dtype=np.float64)
    theta = np.rint(vth * scale).astype(np.int64)
    if theta.min() < 1 or q.vth_hw.min() < 0:
        raise PassError(
            f"layer {layer.name!r}: threshold {n.plain(layer.vth)} rounds to {n.plain(theta)} at scale {scale:.4g}; "
            "the layer's weights are too large relative to its threshold to quantize"
        )
    reset_error = 0.0
    if layer.reset == "subtract":
        amount = np.asarray(layer.reset_amount, dtype=np.float64)
        if q.reset_mant.min() < 1:
            raise PassError(f"layer {layer.name!r}: reset amount rounds to 0 at scale {scale:.4g}")
        reset_error = float(np.max(np.abs(q.reset_mant / scale - amount) / amount))
    effective = q.threshold  # the boundary in wu: fires on v >= 64 * effective (>=) or v > 64 * effective (>)
    exact = layer.compare == ">" or q.v_granularity == 64
    report.update(
        threshold=n.plain(theta if theta.ndim else int(theta)),
        threshold_effective=n.plain(effective if effective.ndim else float(effective)),
        threshold_error=float(np.max(np.abs(effective / scale - vth) / vth)),
        # v units between the hardware's boundary and 64 * s * vth (|.| <= 32: half a weight unit).
        threshold_offset_v=float(np.max(np.abs(64 * (effective - vth * scale)))),
        v_granularity=q.v_granularity,
        compare=layer.compare,
        threshold_exact=bool(exact),
        reset=layer.reset,
        reset_mant=n.plain(q.reset_mant if q.reset_mant.ndim else int(q.reset_mant)),
        reset_error=reset_error,
        input_gain=float(getattr(layer, "gain", 1.0)),
        rounding_bound=MAX_THRESHOLD_ROUNDING,
        rounding_warnings=_rounding_warnings(layer, scale, vth, effective, q.reset_mant),
    )
    return report


def _rounding_warnings(layer, scale: float, vth: np.ndarray, theta: np.ndarray, reset_mant: np.ndarray) -> list[str]:
    """One message per rounded quantity whose relative error exceeds MAX_THRESHOLD_ROUNDING (worst channel).

    ``theta`` is the effective threshold in weight units (the hardware's boundary / 64).
    """
    warnings = []
    bound = f"{100 * MAX_THRESHOLD_ROUNDING:g} %"
    threshold_errors = np.atleast_1d(np.abs(theta / scale - vth) / vth)
    worst = int(np.argmax(threshold_errors))
    if threshold_errors[worst] > MAX_THRESHOLD_ROUNDING:
        v, q = float(np.atleast_1d(vth)[worst]), float(np.atleast_1d(theta)[worst])
        where = f" (channel {worst})" if np.ndim(vth) else ""
        warnings.append(
            f"threshold {v:.6g}{where} x scale {scale:.4g} = {v * scale:.4g} rounds to {q:g} "
            f"({100 * threshold_errors[worst]:.1f} % error, bound {bound}): the threshold is small against the layer's "
            "largest weight; retrain with smaller weights relative to vth (weight decay or clipping)"
        )
    if layer.reset == "subtract" and np.any(reset_mant):
        amount = np.asarray(layer.reset_amount, dtype=np.float64)
        reset_errors = np.atleast_1d(np.abs(reset_mant / scale - amount) / amount)
        worst = int(np.argmax(reset_errors))
        if reset_errors[worst] > MAX_THRESHOLD_ROUNDING:
            a, q = float(np.atleast_1d(amount)[worst]), int(np.atleast_1d(reset_mant)[worst])
            where = f" (channel {worst})" if np.ndim(amount) else ""
            warnings.append(
                f"reset amount {a:.6g}{where} x scale {scale:.4g} = {a * scale:.4g} rounds to {q} "
                f"({100 * reset_errors[worst]:.1f} % error, bound {bound}): the reset amount is small against the "
                "layer's largest weight; retrain with smaller weights"
            )
    return warnings


def _decay_mantissa(tau: float) -> int:
    """``dv`` with ``(4096 - dv) / 4096`` nearest tau; tau = 1 (IF) is dv = 0."""
    return int(np.clip(np.rint((1.0 - tau) * 4096), 0, 4095))


def _scalar_or_channels(values: np.ndarray) -> int | np.ndarray:
    """A 0-d integer array as an int; a per-channel one as int64 ``(C,)``."""
    return int(values) if values.ndim == 0 else values.astype(np.int64)


def _weight_errors(spec: LayerSpec, q: LayerQuantization) -> dict[str, dict[str, Any]]:
    """Per synapse: rounding errors (weight units), levels used and spanned, exponent, bits, kept connections."""
    errors = {}
    for syn, qs in zip(spec.synapses, q.synapses):
        exact = syn.effective * q.scale
        integer = qs.weight.astype(np.float64) * 2.0**qs.weight_exp
        span = float(np.abs(exact).max(initial=0)) or 1.0
        step = abs(int(np.diff(np.unique(qs.weight)).min(initial=0))) if syn.kind == "dense" else 1
        errors[syn.name] = {
            "max_abs_error_weight_units": float(np.abs(integer - exact).max(initial=0)),
            "rms_relative_error": float(np.sqrt(np.mean((integer - exact) ** 2)) / span),
            "levels_used": int(np.unique(qs.weight).size),
            # Grid values between -max|W| and max|W|: the resolution the synapse has (conv step 1, dense its grid).
            "levels_available": 2 * int(np.abs(qs.weight).max(initial=0)) // max(step, 1) + 1,
            "weight_exp": int(qs.weight_exp),
            "weight_bits": int(qs.weight_bits),
            "sparse": bool(qs.sparse),
            "connections": int(qs.weight.size),
            "nonzero": int(np.count_nonzero(qs.weight)),
            "identity": bool(syn.identity),
        }
    return errors


def quantize_fixed_point(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite a float graph into fixed point (:func:`quantize_with_report` also returns the per-layer report).

    Preconditions (PassError otherwise): no BatchNorm, AvgPool2d or Flatten
    left; no neuron with MPR or an unresolved reset amount; every synapse
    reads the Input or a neuron and feeds exactly one neuron layer.
    """
    graph, _ = quantize_with_report(graph, ctx)
    return graph


def quantize_with_report(graph: Graph, ctx: PassContext) -> tuple[Graph, list[dict[str, Any]]]:
    """As :func:`quantize_fixed_point`, also returning the per-layer report."""
    leftovers = graph.of_type(n.BatchNorm, n.AvgPool2d, n.Flatten)
    if leftovers:
        raise PassError(
            f"{type(leftovers[0]).__name__} {leftovers[0].name!r} is still in the graph; run FoldBatchNorm "
            "and FoldAveragePool before QuantizeFixedPoint"
        )
    for neuron in graph.of_type(n.Neuron):
        if neuron.reset_timing != "same_step":
            raise PassError(f"neuron {neuron.name!r}: run DelayedResetToSameStep before QuantizeFixedPoint")
        if neuron.v_reset != 0:
            raise PassError(f"neuron {neuron.name!r}: run ShiftResetToZero before QuantizeFixedPoint")
    for synapse in graph.of_type(n.Conv2d, n.Linear):
        users = graph.consumers(synapse.name)
        if len(users) != 1 or not isinstance(users[0], (n.Neuron, n.Accumulator)):
            raise PassError(f"synapse {synapse.name!r} must feed exactly one neuron layer, feeds {[u.name for u in users]}")
    grades = ctx.quantization.input_grade_scale or default_grade_scale(graph.input)
    reach = max(abs(float(np.rint(v * grades))) for v in graph.input.value_range)
    # Lava's RingBuffer sends int32; the target's graded spikes may be narrower (targets are data).
    payload_bits = min(32, ctx.target.numerics.graded_spike_bits)
    if reach >= min(GRADED_LIMIT, 1 << (payload_bits - 1)):
        raise PassError(
            f"the input range {list(graph.input.value_range)} at grade scale {grades:g} reaches {reach:.0f}, beyond "
            f"the {payload_bits}-bit graded payload; choose a smaller --input-scale"
        )
    layers = graph.of_type(n.Neuron, n.Accumulator)
    unknown = sorted(set(ctx.quantization.layer_scales or {}) - {layer.name for layer in layers})
    if unknown:
        raise PassError(
            f"recorded layer scales name layers this graph does not have: {unknown}; the checkpoint's grid "
            "belongs to another model: fine-tune this one (inflor-deploy finetune)"
        )
    nodes: list[n.Node] = [dataclasses.replace(graph.input, grade_scale=float(grades))]
    reports = []
    opts = ctx.quantization
    for spec, layer in zip(layer_specs(graph, ctx, grades), layers):
        try:
            quantized = quantize_layer(spec, ctx.target.numerics, weight_fill=opts.weight_fill, headroom=opts.headroom,
                                       plain=opts.plain_layers, recorded_scale=(opts.layer_scales or {}).get(layer.name))  # fmt: skip
        except LayerQuantizationError as err:
            raise PassError(str(err)) from err
        report = _report(spec, layer, quantized)
        nodes.extend(_layer_nodes(spec, layer, quantized))
        reports.append(report)
        if report.get("rounding_warnings") and ctx.quantization.overflow == "error":
            raise PassError(
                f"layer {layer.name!r}: {report['rounding_warnings'][0]}. Refused because overflow='error' "
                "(--overflow error); compile with --overflow warn to accept it"
            )
        if report["can_saturate_v"] and ctx.quantization.overflow == "error":
            raise PassError(
                f"layer {layer.name!r}: v can saturate within one sample window (worst case "
                f"{report['v_window_bound']} > {V_LIMIT_WEIGHT_UNITS} weight units). Compile with "
                "headroom='uv' (smaller scale, coarser weights) or overflow='warn' to accept it and "
                "count real saturation events in verification"
            )
    return graph.replace_nodes(nodes), reports


def check_quantize_fixed_point(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Statistical contract: spike agreement of the integer reference with the float graph."""
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.backends.sim.float_ir import run_float

    reference = run_float(before, ctx.probe, record=True)
    # The fast simulator, itself checked bit-exact against int_reference (parity level 2).
    fixed = simulate(after, ctx.probe, view="aligned", record=True)
    per_layer = {}
    for name, spikes in reference.spikes.items():
        per_layer[name] = float((fixed.spikes[name] == spikes).mean())
    argmax = float((fixed.scores(after).argmax(1) == reference.scores.argmax(1)).mean())
    worst = min(per_layer, key=per_layer.get) if per_layer else None
    return ContractResult(
        pass_name="QuantizeFixedPoint",
        kind="statistical",
        ok=True,
        summary=(
            f"spike agreement vs float: min {per_layer[worst]:.4f} ({worst}), "
            f"class agreement {argmax:.3f} on {len(ctx.probe)} probe samples; "
            f"u wraps {sum(fixed.u_wraps.values())}, v saturations {sum(fixed.v_saturations.values())}"
        ) if worst else "no spiking layers",
        metrics={
            "spike_agreement": per_layer,
            "class_agreement": argmax,
            "u_wraps": fixed.u_wraps,
            "v_saturations": fixed.v_saturations,
        },
    )


QuantizeFixedPoint = Pass(
    name="QuantizeFixedPoint",
    run=quantize_fixed_point,
    check=check_quantize_fixed_point,
    contract="statistical",
)
