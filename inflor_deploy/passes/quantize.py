"""QuantizeFixedPoint: float IR -> Loihi 2 fixed-point IR, one scale per neuron layer.

Rewrites every synapse (Conv2d / Linear, plus identity shortcuts between
neurons) into a :class:`FixedPointSynapse` with integer weights, every
Neuron into a :class:`FixedPointNeuron`, the Accumulator into a
:class:`FixedPointAccumulator`, and gives the Input a ``grade_scale``.

Invariant (why a per-layer scale is free): SRIF dynamics are
scale-invariant. Multiplying a layer's incoming weights, bias, threshold,
reset amount and membrane by the same s > 0 changes no spike, because
``H >= vth  <=>  s*H >= s*vth`` and the reset subtracts ``s*reset``.
So each layer gets its own s, and the only errors are the roundings of
``s*W``, ``s*b``, ``s*vth`` and ``s*reset`` to integers, reported per layer.

How s is chosen for a layer (all its incoming synapses share it, because
their currents add into one membrane):

1. Fill: the largest |effective weight| maps to the top of the target's
   range (dense: even values in [-256, 254], Lava's mixed-sign Dense
   handling; conv: [-128, 127], exponent 0).
2. Headroom against the 24-bit wrap of u (always enforced): the current of
   one step enters u as ``a << 6``, so the worst-case ``|a|`` (every input
   at the end of the Input's declared ``value_range`` that raises it) must
   stay below ``2^17``. Below that no Lava wrap can happen for inputs in the
   declared range (the Conv's 24 bits, Dense's 32, u's 24; the report's
   ``wrap_possible`` says so per layer); inputs outside it are refused at
   run time.
3. Headroom against saturation of v (``headroom="uv"``): over one sample
   window v can move by at most ``T * max|a + bias|``, which must stay below
   ``(2^23 - 1) >> 6``. Under the default ``headroom="u"`` this bound is only
   reported: a layer that *could* saturate is flagged (and refused with
   ``overflow="error"``); the simulators count real saturation events.
4. The bias mantissa must fit 13 signed bits (``bias_exp = 6``: weight units)
   and the threshold mantissa 17 unsigned bits.

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

Threshold: the hardware fires on ``v > vth_hw << 6``, with integer threshold
``theta = round(s * vth)`` (per channel when vth is; the scale stays per layer):

* ``compare=">"`` (snnTorch): ``vth_hw = theta``, exact for any v;
* ``compare=">="`` (InfLoR, SpikingJelly): with v a multiple of 64 (no leak;
  weights, bias and reset all enter shifted by 6),
  ``v >= theta << 6  <=>  v > (theta - 1) << 6``, so ``vth_hw = theta - 1``.
  A leaky layer's v is not a multiple of 64, so there ``>= theta`` also fires
  for v in ``(64 (theta - 1), 64 theta)``: kept as is and reported per layer
  (``threshold_exact: false``).

Reset: ``"subtract"`` -> ``reset_mant = round(s * reset_amount)`` (per channel
when the amount is), ``"zero"`` -> v = 0, ``"none"`` -> no reset
(``reset_mant = 0``). Input gain (kept on a neuron whose shortcut could not
absorb it, see ``FoldInputGain``) scales every incoming synapse and bias.
Leak ``tau -> dv = round((1 - tau) * 4096)``. The readout
(:class:`~inflor_deploy.ir.FixedPointAccumulator`) keeps its kind; a
mean-membrane readout's tau becomes its dv.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError

#: |a| must stay below this so that ``a << 6`` cannot wrap u (24-bit signed).
A_LIMIT = 2**17 - 1
#: v saturates at 2^23 - 1, i.e. this many weight units.
V_LIMIT_WEIGHT_UNITS = (2**23 - 1) >> 6
#: Default integer grades per unit of input for images in [0, 1] (8-bit pixels).
DEFAULT_INPUT_GRADES = 255.0
#: A graded input value travels as a 32-bit payload.
GRADED_LIMIT = 2**31
#: Largest relative rounding error of a threshold or reset amount accepted without a warning
#: (module docstring: the relative resolution of the largest 8-bit weight, 1/127, rounded up).
MAX_THRESHOLD_ROUNDING = 0.01


@dataclass(frozen=True)
class _Incoming:
    """One synapse into a layer, with its weights as the layer sees them."""

    name: str
    source: str
    kind: str  # "dense" | "conv"
    effective: np.ndarray  # float64 weights per unit of the integer input value
    bias: np.ndarray | None
    input_max: float  # largest integer input value (1 for spikes, round(hi * grades) for the image)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    input_min: float = 0.0  # smallest integer input value (0 for spikes, round(lo * grades) for the image)


def default_grade_scale(node: n.Input) -> float:
    """The input's grade scale when none is given (module docstring): pixel levels, else 255 / max |range|."""
    if node.pixel_levels is not None:
        return float(node.pixel_levels)
    return DEFAULT_INPUT_GRADES / max(abs(float(v)) for v in node.value_range)


def _incoming(graph: Graph, layer: n.Node, shapes, grades: float) -> list[_Incoming]:
    found = []
    for source_name in layer.sources:
        src = graph.node(source_name)
        if isinstance(src, n.Neuron):
            # Identity shortcut: the spikes of `src` add straight into this layer,
            # as a 1x1 convolution with an identity kernel (or a diagonal dense).
            shape = shapes[src.name]
            channels = shape[0]
            if len(shape) == 3:
                eye = np.eye(channels).reshape(channels, channels, 1, 1) * src.spike_value
                found.append(_Incoming(f"{layer.name}.shortcut", src.name, "conv", eye, None, 1.0))
            else:
                found.append(_Incoming(f"{layer.name}.shortcut", src.name, "dense", np.eye(channels) * src.spike_value, None, 1.0))
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
        weight = np.asarray(src.weight, dtype=np.float64) * per_unit
        bias = None if src.bias is None else np.asarray(src.bias, dtype=np.float64)
        if isinstance(src, n.Conv2d):
            found.append(_Incoming(src.name, feeder.name, "conv", weight, bias, input_max, src.stride, src.padding,
                                   src.groups, input_min))  # fmt: skip
        else:
            found.append(_Incoming(src.name, feeder.name, "dense", weight, bias, input_max, input_min=input_min))
    return found


def _extremes(w: np.ndarray, x_lo: float, x_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output: the largest and smallest ``sum_k w[o, k] x_k`` for inputs in ``[x_lo, x_hi]``.

    Each term is extreme at an end of the input range: a positive weight
    raises the sum most at ``x_hi`` and lowers it most at ``x_lo`` (a
    negative weight the other way round). A conv's interior output sees its
    full kernel; borders see less.
    """
    w = w.reshape(w.shape[0], -1)
    pos, neg = np.clip(w, 0, None).sum(1), np.clip(w, None, 0).sum(1)
    return pos * x_hi + neg * x_lo, pos * x_lo + neg * x_hi


def _per_output_extremes(inc: _Incoming) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel/unit: the largest and smallest current one step can bring."""
    return _extremes(inc.effective, inc.input_min, inc.input_max)


def _weight_max(kind: str, target) -> int:
    num = target.numerics
    return min(abs(num.dense_weight_min), num.dense_weight_max) if kind == "dense" else min(abs(num.conv_weight_min), num.conv_weight_max)


def _round_weights(x: np.ndarray, kind: str, target) -> np.ndarray:
    num = target.numerics
    if kind == "dense":
        step = num.dense_weight_step
        q = np.rint(x / step) * step
        return np.clip(q, num.dense_weight_min, num.dense_weight_max).astype(np.int32)
    return np.clip(np.rint(x), num.conv_weight_min, num.conv_weight_max).astype(np.int32)


def _channel_bias(layer_bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a per-channel bias to the layer's shape (a per-position bias map already has it)."""
    if layer_bias.shape == tuple(shape):
        return layer_bias
    if len(shape) == 3:
        return np.broadcast_to(layer_bias[:, None, None], shape)
    return layer_bias.reshape(shape)


def _per_channel(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-channel vector viewed to broadcast against the layer's shape."""
    return x.reshape((-1,) + (1,) * (len(shape) - 1))


def _quantize_layer(graph, layer, shapes, ctx: PassContext, grades: float):
    """Choose this layer's scale and quantize everything that feeds it."""
    target, opts = ctx.target, ctx.quantization
    incoming = _incoming(graph, layer, shapes, grades)
    gain = float(getattr(layer, "gain", 1.0))
    if gain != 1.0:
        # H = tau U + g X: the gain scales every incoming current, identity shortcuts included.
        incoming = [
            dataclasses.replace(inc, effective=inc.effective * gain, bias=None if inc.bias is None else inc.bias * gain)
            for inc in incoming
        ]
    shape = shapes[layer.name]
    bias = np.zeros(shape)  # per position: a folded input normalization gives conv borders their own bias
    for inc in incoming:
        if inc.bias is not None:
            bias = bias + _channel_bias(inc.bias, shape)
    hi = _per_channel(sum(_per_output_extremes(inc)[0] for inc in incoming), shape)
    lo = _per_channel(sum(_per_output_extremes(inc)[1] for inc in incoming), shape)
    bound_a = float(max(hi.max(initial=0), -lo.min(initial=0)))
    window = graph.timesteps * float(max((hi + bias).max(initial=0), -(lo + bias).min(initial=0)))

    limits = {}
    w_abs = [float(np.abs(inc.effective).max(initial=0)) for inc in incoming]
    fill = [opts.weight_fill * _weight_max(inc.kind, target) / m for inc, m in zip(incoming, w_abs) if m > 0]
    if not fill:
        raise PassError(f"layer {layer.name!r}: every incoming weight is zero; nothing to quantize")
    limits["fill"] = min(fill)
    if bound_a > 0:
        limits["u_wrap"] = A_LIMIT / bound_a
    if opts.headroom == "uv" and window > 0:
        limits["v_saturation"] = V_LIMIT_WEIGHT_UNITS / window
    bias_max = float(np.abs(bias).max(initial=0))
    bias_lo, bias_hi = target.numerics.bias_mant_range.start, target.numerics.bias_mant_range.stop - 1
    if bias_max > 0:
        limits["bias_range"] = (min(-bias_lo, bias_hi) + 0.49) / bias_max
    vth = getattr(layer, "vth", None)
    if vth is not None:
        # theta <= vth_mant_max for ">" (vth_hw = theta); ">=" writes theta - 1, so theta may reach one more.
        top = target.numerics.vth_mant_max + (1.49 if getattr(layer, "compare", ">") == ">=" else 0.49)
        limits["threshold_range"] = top / float(np.max(vth))
    binding = min(limits, key=limits.get)
    scale = limits[binding]
    recorded = (opts.layer_scales or {}).get(layer.name)
    if recorded is not None:
        # A fine-tuned checkpoint's grid (inflor_deploy.grid): used as trained, never shrunk; refused below if it
        # no longer fits the target.
        scale, binding = float(recorded), "recorded"
        _check_recorded_scale(layer.name, incoming, scale, target)

    # Rounding can push the integer bounds past their limits: shrink until they hold.
    for _ in range(20):
        weights = [_round_weights(inc.effective * scale, inc.kind, target) for inc in incoming]
        hi_q = _per_channel(sum(_extremes(w, inc.input_min, inc.input_max)[0] for w, inc in zip(weights, incoming)), shape)
        lo_q = _per_channel(sum(_extremes(w, inc.input_min, inc.input_max)[1] for w, inc in zip(weights, incoming)), shape)
        bound_q = int(max(hi_q.max(initial=0), -lo_q.min(initial=0)))
        bias_q = np.rint(bias * scale).astype(np.int64)
        window_q = graph.timesteps * int(max((hi_q + bias_q).max(initial=0), -(lo_q + bias_q).min(initial=0)))
        shrink = 1.0
        if bound_q > A_LIMIT:
            shrink, binding = min(shrink, A_LIMIT / bound_q), "u_wrap"
        if opts.headroom == "uv" and window_q > V_LIMIT_WEIGHT_UNITS:
            shrink, binding = min(shrink, V_LIMIT_WEIGHT_UNITS / window_q), "v_saturation"
        if shrink == 1.0:
            break
        if recorded is not None:
            raise PassError(
                f"layer {layer.name!r}: the recorded scale {scale:g} no longer fits the target's headroom "
                f"({binding}: worst-case current {bound_q} weight units, limit {A_LIMIT}); fine-tune again "
                "from the original checkpoint (inflor-deploy finetune) for this target"
            )
        scale *= shrink * 0.999
    else:  # pragma: no cover - the loop converges in one or two steps
        raise PassError(f"layer {layer.name!r}: could not find a scale that respects the headroom bounds")

    if bias_q.size and (bias_q.min() < bias_lo or bias_q.max() > bias_hi):
        raise PassError(f"layer {layer.name!r}: bias does not fit the 13-bit mantissa at scale {scale:.4g}")
    can_saturate = window_q > V_LIMIT_WEIGHT_UNITS

    synapses = []
    for inc, w in zip(incoming, weights):
        synapses.append(
            n.FixedPointSynapse(
                name=inc.name, sources=(inc.source,), kind=inc.kind, weight=w,
                stride=inc.stride, padding=inc.padding, groups=inc.groups,
            )  # fmt: skip
        )
    common = dict(name=layer.name, sources=tuple(s.name for s in synapses), shape=shape,
                  bias_mant=np.ascontiguousarray(bias_q, dtype=np.int32), bias_exp=target.numerics.bias_exp,
                  scale=scale)  # fmt: skip
    report: dict[str, Any] = {
        "layer": layer.name,
        "scale": scale,
        "scale_limited_by": binding,
        "scale_limits": {k: float(v) for k, v in limits.items()},
        "weight_rounding": _weight_errors(incoming, weights, scale),
        "bias_max_abs_error": float(np.abs(bias_q / scale - bias).max(initial=0)),
        "u_bound": bound_q,
        "u_headroom": A_LIMIT / bound_q if bound_q else math.inf,
        # |a| <= A_LIMIT < 2^17 for every input in the declared range: no Lava wrap (Conv 24 bits,
        # u 24 bits after << 6) can happen there; inputs outside it are refused at run time.
        "wrap_possible": bool(bound_q > A_LIMIT),
        "v_window_bound": window_q,
        "v_headroom": V_LIMIT_WEIGHT_UNITS / window_q if window_q else math.inf,
        "can_saturate_v": bool(can_saturate),
    }
    if isinstance(layer, n.Accumulator):
        dv = _decay_mantissa(layer.tau)
        report.update(readout=layer.readout, dv=dv, tau_realized=(4096 - dv) / 4096)
        return synapses, n.FixedPointAccumulator(readout=layer.readout, dv=dv, **common), report

    if layer.mpr:
        raise PassError(f"layer {layer.name!r}: run FoldRectifierIntoThreshold before QuantizeFixedPoint")
    vth_float = np.asarray(layer.vth, dtype=np.float64)
    theta = np.rint(vth_float * scale).astype(np.int64)
    if theta.min() < 1:
        raise PassError(
            f"layer {layer.name!r}: threshold {n.plain(layer.vth)} rounds to {n.plain(theta)} at scale {scale:.4g}; "
            "the layer's weights are too large relative to its threshold to quantize"
        )
    reset_mant = np.zeros((), dtype=np.int64)
    reset_error = 0.0
    if layer.reset == "subtract":
        if layer.reset_amount is None:
            raise PassError(f"layer {layer.name!r}: run SoftResetToSubtractive before QuantizeFixedPoint")
        amount = np.asarray(layer.reset_amount, dtype=np.float64)
        reset_mant = np.rint(amount * scale).astype(np.int64)
        if reset_mant.min() < 1:
            raise PassError(f"layer {layer.name!r}: reset amount rounds to 0 at scale {scale:.4g}")
        reset_error = float(np.max(np.abs(reset_mant / scale - amount) / amount))
    dv = _decay_mantissa(layer.tau)
    # ">" is the hardware's own comparison; ">=" becomes "> theta - 1", exact while v is a multiple of 64.
    vth_hw = theta if layer.compare == ">" else theta - 1
    report.update(
        threshold=n.plain(theta if theta.ndim else int(theta)),
        threshold_error=float(np.max(np.abs(theta / scale - vth_float) / vth_float)),
        compare=layer.compare,
        threshold_exact=bool(layer.compare == ">" or dv == 0),
        reset=layer.reset,
        reset_mant=n.plain(reset_mant if reset_mant.ndim else int(reset_mant)),
        reset_error=reset_error,
        input_gain=gain,
        rounding_bound=MAX_THRESHOLD_ROUNDING,
        rounding_warnings=_rounding_warnings(layer, scale, vth_float, theta, reset_mant),
        dv=dv,
        tau_realized=(4096 - dv) / 4096,
    )
    neuron = n.FixedPointNeuron(
        vth=_scalar_or_channels(vth_hw), reset=layer.reset, reset_mant=_scalar_or_channels(reset_mant),
        du=4095, dv=dv, **common,
    )  # fmt: skip
    return synapses, neuron, report


def _check_recorded_scale(layer_name: str, incoming: list[_Incoming], scale: float, target) -> None:
    """Refuse a recorded scale at which some weight would be clipped (it no longer fits the target's range)."""
    num = target.numerics
    for inc in incoming:
        exact = inc.effective * scale
        lo, hi = (num.dense_weight_min, num.dense_weight_max) if inc.kind == "dense" else (num.conv_weight_min, num.conv_weight_max)
        step = num.dense_weight_step if inc.kind == "dense" else 1
        if exact.size and (exact.min() < lo - step / 2 or exact.max() > hi + step / 2):
            raise PassError(
                f"layer {layer_name!r}: at the recorded scale {scale:g} the weights of {inc.name!r} reach "
                f"[{exact.min():.1f}, {exact.max():.1f}], beyond the target's [{lo}, {hi}]; the checkpoint was "
                "fine-tuned for another grid: fine-tune again for this target"
            )


def _rounding_warnings(layer, scale: float, vth: np.ndarray, theta: np.ndarray, reset_mant: np.ndarray) -> list[str]:
    """One message per rounded quantity whose relative error exceeds MAX_THRESHOLD_ROUNDING (worst channel)."""
    warnings = []
    bound = f"{100 * MAX_THRESHOLD_ROUNDING:g} %"
    threshold_errors = np.atleast_1d(np.abs(theta / scale - vth) / vth)
    worst = int(np.argmax(threshold_errors))
    if threshold_errors[worst] > MAX_THRESHOLD_ROUNDING:
        v, q = float(np.atleast_1d(vth)[worst]), int(np.atleast_1d(theta)[worst])
        where = f" (channel {worst})" if np.ndim(vth) else ""
        warnings.append(
            f"threshold {v:.6g}{where} x scale {scale:.4g} = {v * scale:.4g} rounds to {q} "
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


def _weight_errors(incoming, weights, scale) -> dict[str, float]:
    errors = {}
    for inc, w in zip(incoming, weights):
        exact = inc.effective * scale
        span = float(np.abs(exact).max(initial=0)) or 1.0
        errors[inc.name] = {
            "max_abs_error_weight_units": float(np.abs(w - exact).max(initial=0)),
            "rms_relative_error": float(np.sqrt(np.mean((w - exact) ** 2)) / span),
            "levels_used": int(np.unique(w).size),
        }
    return errors


def quantize_fixed_point(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite a float graph into fixed point; the per-layer report rides on ``last_report``.

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
    shapes = infer_shapes(graph)
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
    for layer in layers:
        synapses, quantized, report = _quantize_layer(graph, layer, shapes, ctx, grades)
        nodes.extend(synapses)
        nodes.append(quantized)
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
