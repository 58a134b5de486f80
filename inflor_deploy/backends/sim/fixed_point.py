"""The fast fixed-point simulator: the oracle that verifies whole test sets.

It computes exactly what :mod:`inflor_deploy.backends.sim.int_reference` computes
(Lava's ``PyLifModelBitAcc``; the FixedPointNeuron docstring has the
update), bit for bit: every spike, every u and v, every counter (parity
level 2 of DESIGN.md section 2). It batches samples and uses torch kernels:

* synapses run as ``F.conv2d`` / ``F.linear`` in float32 where that is
  *proven* exact (below), in float64 or int64 otherwise; a 1x1 conv or a
  square dense whose weight matrix is diagonal (the identity shortcuts that
  ``QuantizeFixedPoint`` emits) runs as an elementwise product;
* layer state runs in float32 where proven exact, in int64 otherwise.

Usage::

    run = simulate(graph, images)                            # aligned view
    run = simulate(graph, images, view="pipelined", record=True)
    run.accumulator, run.scores(graph), run.spike_counts
    first_divergence(reference.spikes, run.spikes, order)   # IntRun's [T, B, ...] layout
    print(plan(graph, images).summary())                     # which op runs in which dtype, and why

Why float32 is exact (the plan's proof)
---------------------------------------
*Synapses.* A synapse computes ``a[o] = sum_j w[o, j] * x[j]`` with integer
weights and integer inputs ``x in [x_lo, x_hi]`` (spikes: [0, 1]; the input:
the range of ``round(image * grade_scale)`` over the images of the run).
Each term lies in ``[min(w x_lo, w x_hi), max(w x_lo, w x_hi)]``, so every
partial sum that *any* summation order forms (direct, blocked, GEMM,
split-K: any algorithm that only adds the products) is an integer in
``[lo[o], hi[o]]``, where ``hi`` sums the positive parts of the terms'
maxima and ``lo`` the negative parts of their minima. Let
``bound = max_o max(hi[o], -lo[o])``. float32 holds every integer of
magnitude <= 2^24 exactly and adds two of them exactly when the exact sum
is such an integer, so ``bound <= 2^24`` makes every addition exact and the
float32 result is the integer current (casting it to int64 is exact).
Likewise float64 up to 2^53; beyond, the synapse sums in int64 (exact
modulo 2^64, like the reference's int64 numpy). Weights multiplied by 64
(and by the synapse's ``2^weight_exp``, included in the bound) scale every
partial sum by a power of two, which rounds nothing, so the same bound lets
a synapse deliver ``a << 6`` directly. A negative ``weight_exp`` (Lava's
truncating right shift) is not folded into the weights: the synapse sums
``S`` exactly (the bound is that of ``S``), floors ``S / 2^-weight_exp``
(a division by a power of two and a floor of an exact integer round
nothing) and only then multiplies by 64. Several synapses
into one layer add up within the sums of their ``[lo, hi]``.

Algorithms that do not just add products (Winograd and FFT: NNPACK on the
CPU, some cuDNN algorithms) or that round operands (TF32) void the proof:
the simulator disables NNPACK, cuDNN and TF32 while it runs, and checks the
convolution backend torch selects against an allow-list of summing
backends; a convolution that would run elsewhere sums in int64 instead.

*Wraps.* Lava delivers a synapse's exact sum ``S`` (the products shifted by
the synapse's ``weight_exp``, a power of two that rounds nothing) wrapped to
24 bits (Conv) or 32 bits (Dense, Sparse; fewer for a negative Lava
exponent of the weight encoding), then adds the currents, shifts and
integrates in int32 before the single 24-bit wrap of u (:mod:`~inflor_deploy.backends.sim.lava_arith`).
Every such wrap is the identity while the values stay inside its range:
a synapse whose ``bound`` is below its wrap limit delivers ``S`` itself, and
a layer with ``64 A <= 2^23 - 1`` (below) never leaves 24 bits, so neither
``a``, nor ``a << 6``, nor ``u`` can overflow int32. A synapse whose bound
reaches its limit (``can_wrap``) computes ``S`` exactly as above and then
applies Lava's wrap in int64; its range becomes the whole wrapped range,
so its layer's ``A`` exceeds the float32 limit and the layer runs the
int64 kernel, which (when ``u`` can wrap) performs the int32 wraps of
``a``, ``a << 6`` and ``u + a << 6`` line by line as Lava does. The two
int32 additions of v cannot wrap (``|u| <= 2^31 - 2^24`` after the single
wrap, ``|v| <= 2^23``, ``|bias| <= 2^19``), so the kernel does not write them.

*Layers.* With ``A = max(hi_total, -lo_total)`` the bound on ``|a|`` of a
layer, a layer runs the float32 kernel when

* ``du = 4095`` and ``dv = 0`` (no decay to round: u is the step's input,
  v does not leak);
* ``64 A <= 2^23 - 1``: u = a << 6 stays inside (-2^23, 2^23), so the wrap
  is the identity and never counts;
* ``0 <= vth << 6 <= 2^24``, ``reset_mant << 6 <= 2^24`` (for every
  channel, when the layer has per-channel values: the bounds take the
  largest) and ``|bias << bias_exp| <= 2^22``.

Then v always holds an integer in ``(-2^24, 2^23)`` between steps (the
clip leaves ``|v| <= 2^23 - 1``; a subtract reset removes at most 2^24
from a v above ``vth << 6 >= 0``; a zero reset or none only keeps v in
range). The step computes ``v + u``
(``|u| < 2^23``) and then ``+ bias``: an addition whose exact result has
magnitude <= 2^24 is exact; one whose exact result exceeds 2^24 is off by
at most one unit and leaves a result beyond ``2^24 - 2^22 - 2 > 2^23 - 1``
whichever way the bias goes, so the clip maps it to the same
``+-(2^23 - 1)`` as the exact value and counts the same saturation. The
comparison with ``vth << 6`` and the reset are exact integer operations.
When ``n * (64 A + |bias|) + (n - 1) * (reset << 6)`` shows that v cannot
leave ``+-(2^23 - 1)`` in a window of n steps, the clip is the identity
and is skipped. Every other layer (LIF leaks, current decays, a u that can
wrap) runs the int64 kernel, a line-by-line transcription of the reference.

Views
-----
``view="aligned"``: every layer at the same timestep t = 0..T-1, samples in
parallel, synaptic delays ignored (``run_aligned``). With direct encoding the
input frame is the same at every step, so the synapses reading the Input run
once per batch, not once per step; a sequence Input (``[B, T, *shape]``)
shows frame t at step t, so they run at every step.

``view="pipelined"``: what ``run_pipelined`` (and Lava) compute on the
global timeline g = 1..G, ``G = S*R + latency + 1`` for S samples and reset
interval R. A layer at depth d resets at the start of every step with
``g % R == (d + 1) % R``, so its timeline splits into windows
``W_k = {k*R + t + 1 + d : t = 0..R-1}``; in window k at step t it reads its
synapse's source at global step ``g - 1 - delay = k*R + t + 1 + d_source``
(ScheduleTimesteps sets ``delay = d - 1 - d_source``): the *same window k,
the same t*. Windows never interact, so window k of every layer depends on
window k of the input stream alone:

* windows k = 0..S-1 are the samples: R steps from a zero state, the image
  (sequence: frame t) for t < T and zero frames for t = T..R-1 (equal to the aligned run for
  t < T); they run in parallel, like the aligned view;
* windows k < 0 (the *prefix*: steps before sample 0 reaches a layer) see
  zero frames but are cut at g = 1: a layer at depth d begins window k at
  step ``t = -k*R - d`` (if positive) from the run's zero initial state, and
  a source that has not begun yet emits nothing. The simulator runs these
  ``ceil(latency / R)`` windows with a liveness mask (state and spikes held
  at zero, nothing counted, before a layer begins);
* windows k >= S (the *tail*) are all-zero samples after a reset, cut at
  g = G: one is simulated and reused.

A bias source (a neuron without synapses, which fires at every step) feeding
the first layer sits at depth 0; it is simulated like any layer.

This needs the schedule ScheduleTimesteps produces: ``delay = depth - 1 -
depth(source)`` for every synapse, ``reset_offset = (depth + 1) % R`` and
``R >= T``; anything else raises :class:`IRError` (``run_pipelined`` runs
any schedule, one global step at a time). Spikes of the padding steps, the
prefix and the tail reach no accumulator reading, but the counters
(``u_wraps``, ``v_saturations``, ``pipeline_spike_counts``) include them,
as the reference's do.

Memory: plain mode keeps each layer's current v (and u for the int64
kernel), the spikes of the current step until their last reader has run,
and per-step counters; ``record=True`` keeps every trace.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, infer_shapes
from inflor_deploy.memory import batch_size_for
from inflor_deploy.backends.sim.int_reference import (
    ACT_SHIFT, DECAY_UNIT, U_LIMIT, V_LIMIT, VTH_SHIFT, IntRun, check_inputs, quantize_input,
)  # fmt: skip
from inflor_deploy.backends.sim.lava_arith import check_sum_bound, floor_shift, lava_current, synapse_arithmetic, wrap

__all__ = ["LayerPlan", "SimPlan", "SimRun", "SimTiming", "SynapsePlan", "plan", "simulate"]

View = Literal["aligned", "pipelined"]
Precision = Literal["auto", "int64"]

#: float32 holds every integer of magnitude <= 2^24 exactly (24-bit significand).
FLOAT32_EXACT = 2**24
#: float64 holds every integer of magnitude <= 2^53 exactly.
FLOAT64_EXACT = 2**53
#: Default batch size: keep the largest activation of a batch under this many elements.
DEFAULT_ELEMENTS_PER_BATCH = 2**24
#: torch convolution backends that compute a plain sum of products (exact under the bound).
SUMMING_CONV_BACKENDS = frozenset({"Mkldnn", "MkldnnEmpty", "Slow2d", "SlowDilated2d", "Empty", "CudaDepthwise2d"})
_SCALE = 1 << ACT_SHIFT  # one weight unit = 64 units of u and v
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SynapsePlan:
    """How one synapse is computed, and the bound that makes it exact.

    Attributes:
        name: The synapse.
        target: The layer it feeds.
        op: ``"conv"``, ``"dense"``, or ``"diagonal"`` (a 1x1 conv or a square
            dense whose weight matrix is diagonal: an elementwise product).
        dtype: ``"float32"``, ``"float64"`` or ``"int64"``: the arithmetic of its sums.
        input_min: Smallest source value (0 for spikes).
        input_max: Largest source value (1 for spikes).
        bound: No partial sum of its products exceeds this in magnitude.
        prescaled: The weights carry the factor 64 (the target layer runs the
            float32 kernel and receives ``u = a << 6`` directly).
        lava_process: The Lava Process that runs it (``Conv``, ``Dense``, ...).
        wrap_bits: Lava delivers the sum wrapped to this many bits.
        can_wrap: ``bound`` reaches the wrap's limit: the wrap is applied (int64).
    """

    name: str
    target: str
    op: str
    dtype: str
    input_min: int
    input_max: int
    bound: int
    prescaled: bool
    lava_process: str = "Dense"
    wrap_bits: int = 32
    can_wrap: bool = False


@dataclass(frozen=True)
class LayerPlan:
    """Which kernel updates one layer, and the bounds that prove it exact.

    Attributes:
        name: The layer (FixedPointNeuron or FixedPointAccumulator).
        kernel: ``"float32"`` or ``"int64"``.
        a_bound: Bound on ``|a|``, the summed synaptic current of one step.
        u_bound: Bound on ``|u|`` within a window, before any wrap.
        v_bound: Bound on ``|v|`` before the clip within a window, before any wrap.
        can_wrap: ``u_bound > 2^23 - 1``: u may wrap (never for the float32 kernel).
        can_saturate: ``v_bound > 2^23 - 1``: the clip and its counter run.
        reason: Why the layer runs in int64 ("" for float32).
    """

    name: str
    kernel: str
    a_bound: int
    u_bound: int
    v_bound: int
    can_wrap: bool
    can_saturate: bool
    reason: str


@dataclass(frozen=True)
class SimPlan:
    """The arithmetic of every synapse and layer of a run (module docstring: the proof).

    Attributes:
        view: ``"aligned"`` or ``"pipelined"``.
        window: Steps per window the bounds cover (T aligned, R pipelined).
        input_range: ``(min, max)`` of ``round(image * grade_scale)`` the bounds assume.
        synapses: Synapse name -> its :class:`SynapsePlan`, in graph order.
        layers: Layer name -> its :class:`LayerPlan`, in graph order.
    """

    view: str
    window: int
    input_range: tuple[int, int]
    synapses: dict[str, SynapsePlan]
    layers: dict[str, LayerPlan]

    def summary(self) -> str:
        """One line per synapse and per layer: its arithmetic and its bound."""
        lo, hi = self.input_range
        lines = [f"simulator plan ({self.view} view, windows of {self.window} steps, input in [{lo}, {hi}]):"]
        for s in self.synapses.values():
            lines.append(
                f"  synapse {s.name:<30} {s.op:<8} {s.dtype:<7} |partial sums| <= {s.bound}"
                f"{'  (weights x64)' if s.prescaled else ''}"
                f"{f'; Lava {s.lava_process} wraps it to {s.wrap_bits} bits' if s.can_wrap else ''}"
            )
        for layer in self.layers.values():
            flags = [f for f, on in (("u can wrap", layer.can_wrap), ("v can saturate", layer.can_saturate)) if on]
            lines.append(
                f"  layer   {layer.name:<30} {layer.kernel:<7} |a| <= {layer.a_bound}, |u| <= {layer.u_bound}, "
                f"|v| <= {layer.v_bound}" + "".join(f"; {f}" for f in flags)
                + (f" [int64: {layer.reason}]" if layer.reason else "")
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "view": self.view,
            "window": self.window,
            "input_range": list(self.input_range),
            "synapses": {k: asdict(v) for k, v in self.synapses.items()},
            "layers": {k: asdict(v) for k, v in self.layers.items()},
        }


def input_range(graph: Graph, images: np.ndarray | None = None) -> tuple[int, int]:
    """``(min, max)`` of ``round(image * grade_scale)`` over the images, without quantizing them all.

    ``quantize_input`` multiplies by a positive scale and rounds half to
    even; both are monotone, so the extremes of the quantized values are
    the quantized extremes. Without images, the Input's declared
    ``value_range`` is assumed; images outside it are refused.
    """
    scale = graph.input.grade_scale
    if scale is None:
        raise IRError("the graph's Input has no grade_scale: quantize the graph first")
    if images is None:
        lo, hi = graph.input.value_range
    else:
        images = check_inputs(graph.input, images)
        if images.size == 0:
            return 0, 0
        lo, hi = float(images.min()), float(images.max())
    q = np.rint(np.array([lo, hi], dtype=np.float64) * np.float64(scale))
    return int(q[0]), int(q[1])


def _diagonal(node: n.FixedPointSynapse) -> np.ndarray | None:
    """The diagonal of a synapse whose weight matrix is diagonal (an elementwise product), else None."""
    w = node.weight
    if node.kind == "conv":
        if w.shape[2:] != (1, 1) or node.groups != 1 or tuple(node.padding) != (0, 0) or w.shape[0] != w.shape[1]:
            return None
        w = w[:, :, 0, 0]
    elif w.shape[0] != w.shape[1]:
        return None
    d = np.diagonal(w)
    return d.copy() if np.count_nonzero(w) == np.count_nonzero(d) else None


def _current_range(node: n.FixedPointSynapse, x_lo: int, x_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output: ``(lo, hi)`` bracketing every partial sum of ``(w[o, :] << max(weight_exp, 0)) * x``, x in [x_lo, x_hi]."""
    w = node.weight.astype(np.int64).reshape(node.weight.shape[0], -1)
    # Python ints (object arrays): huge inputs must not overflow the bound itself.
    # A positive exponent scales every product by a power of two; a negative one floors the sum afterwards
    # (the plan shifts this range of the sum itself).
    unit = 1 << max(int(node.weight_exp), 0)
    pos = np.clip(w, 0, None).sum(axis=1).astype(object) * unit
    neg = -np.clip(w, None, 0).sum(axis=1).astype(object) * unit
    x_pos, x_neg = max(x_hi, 0), max(-x_lo, 0)  # the positive and negative reach of x
    return -(pos * x_neg + neg * x_pos), pos * x_pos + neg * x_neg


def _bias(layer, shape: tuple[int, ...]) -> np.ndarray:
    """``bias_mant << bias_exp`` (``>> -bias_exp`` when negative) over the layer's shape, int64, as the reference."""
    bias = np.broadcast_to(layer.bias_mant.astype(np.int64), shape)
    e = layer.bias_exp
    return bias << e if e >= 0 else bias >> -e


def plan(
    graph: Graph,
    images: np.ndarray | None = None,
    *,
    view: View = "aligned",
    precision: Precision = "auto",
) -> SimPlan:
    """Choose, and prove exact, the arithmetic of every synapse and layer.

    Args:
        graph: A quantized graph (also scheduled, for the pipelined view).
        images: The images that will run (their range bounds the input);
            None assumes the Input's declared ``value_range``.
        view: ``"aligned"`` (windows of T steps) or ``"pipelined"`` (R steps).
        precision: ``"auto"`` picks the fastest exact arithmetic; ``"int64"``
            runs every layer in the int64 kernel with float64 (or int64)
            synapses: a second, slower implementation, for tests.

    Returns:
        The :class:`SimPlan`.

    Raises:
        IRError: The graph is not quantized, or not consistently scheduled
            for the pipelined view.
    """
    shapes = _check_graph(graph)
    if view not in ("aligned", "pipelined"):
        raise IRError(f"view must be 'aligned' or 'pipelined', got {view!r}")
    if precision not in ("auto", "int64"):
        raise IRError(f"precision must be 'auto' or 'int64', got {precision!r}")
    window = graph.timesteps
    if view == "pipelined":
        _check_schedule(graph)
        window = graph.schedule.reset_interval
    x_lo, x_hi = input_range(graph, images)
    synapse_plans: dict[str, SynapsePlan] = {}
    layer_plans: dict[str, LayerPlan] = {}
    for layer in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        synapses = [graph.node(s) for s in layer.sources]
        ranges, ariths = {}, {}
        for syn in synapses:
            graded = isinstance(graph.node(syn.sources[0]), n.Input)
            src_lo, src_hi = (x_lo, x_hi) if graded else (0, 1)
            lo, hi = _current_range(syn, src_lo, src_hi)
            arith = ariths[syn.name] = synapse_arithmetic(syn, graded)
            bound = int(max(np.max(hi, initial=0), -np.min(lo, initial=0)))
            check_sum_bound(syn, arith, bound)
            if arith.can_wrap(bound):  # Lava's wrap can put the current anywhere in its range
                lo, hi = np.full(lo.shape, -arith.limit, dtype=object), np.full(hi.shape, arith.limit - 1, dtype=object)
            if syn.weight_exp < 0:  # the current is floor(S / 2^-e): floor is monotone, so it maps the range
                lo, hi = lo // (1 << -int(syn.weight_exp)), hi // (1 << -int(syn.weight_exp))
            ranges[syn.name] = (src_lo, src_hi, lo, hi, bound)
        # Per output channel (conv) or neuron (dense): where a dense current feeds a (C, H, W) layer
        # (a bias source), every range is taken per neuron, C-major.
        size = math.prod(shapes[layer.name])
        mixed = len({len(r[2]) for r in ranges.values()}) > 1

        def neurons(values: np.ndarray) -> np.ndarray:
            return np.repeat(values, size // len(values)) if mixed and len(values) != size else values

        lo_total = sum(neurons(r[2]) for r in ranges.values())
        hi_total = sum(neurons(r[3]) for r in ranges.values())
        a_bound = int(max(np.max(hi_total, initial=0), -np.min(lo_total, initial=0)))
        is_neuron = isinstance(layer, n.FixedPointNeuron)
        du = layer.du if is_neuron else DECAY_UNIT - 1
        dv = layer.dv
        # Per-channel thresholds and resets: the bounds take the extreme channel.
        vth64 = int(np.max(layer.vth)) << VTH_SHIFT if is_neuron else 0
        vth64_min = int(np.min(layer.vth)) << VTH_SHIFT if is_neuron else 0
        reset64 = int(np.max(layer.reset_mant)) << ACT_SHIFT if is_neuron and layer.reset == "subtract" else 0
        bias_max = int(np.abs(_bias(layer, shapes[layer.name])).max(initial=0))
        # |u_t| <= f |u_{t-1}| + 64 A with f = (4095 - du) / 4096 (the decay rounds toward zero),
        # so |u| <= 64 A * min(n, 1 / (1 - f)) = 64 A * min(n, 4096 / (du + 1)) from a zero state.
        growth = min(Fraction(window), Fraction(DECAY_UNIT, du + 1))
        u_bound = math.ceil(_SCALE * a_bound * growth)
        # |v_pre_t| <= |v_{t-1}| + |u| + |bias| (a leak only shrinks v); a reset moves v by <= reset64.
        v_bound = window * (u_bound + bias_max) + max(window - 1, 0) * abs(reset64)
        reasons = []
        if precision == "int64":
            reasons.append("precision='int64' requested")
        if du != DECAY_UNIT - 1:
            reasons.append(f"current decay du={du}")
        if dv != 0:
            reasons.append(f"voltage leak dv={dv}")
        if _SCALE * a_bound > U_LIMIT - 1:
            reasons.append(f"u = a << 6 can wrap (|a| <= {a_bound})")
        if not 0 <= vth64_min <= vth64 <= FLOAT32_EXACT or abs(reset64) > FLOAT32_EXACT:
            reasons.append("threshold or reset outside [0, 2^24] v units")
        if bias_max > 2**22:
            reasons.append("|bias| beyond 2^22 v units")
        kernel = "int64" if reasons else "float32"
        layer_plans[layer.name] = LayerPlan(
            name=layer.name, kernel=kernel, a_bound=a_bound, u_bound=u_bound, v_bound=v_bound,
            can_wrap=u_bound > U_LIMIT - 1, can_saturate=v_bound > V_LIMIT, reason="; ".join(reasons),
        )  # fmt: skip
        for syn in synapses:
            src_lo, src_hi, _, _, bound = ranges[syn.name]
            arith = ariths[syn.name]
            if bound <= FLOAT32_EXACT and (kernel == "float32" or precision == "auto"):
                dtype = "float32"  # a float32 kernel layer has bound <= a_bound < 2^17 unless the synapse floors
            elif bound <= FLOAT64_EXACT:
                dtype = "float64"
            else:
                dtype = "int64"
            synapse_plans[syn.name] = SynapsePlan(
                name=syn.name, target=layer.name, op="diagonal" if _diagonal(syn) is not None else syn.kind,
                dtype=dtype, input_min=src_lo, input_max=src_hi, bound=bound, prescaled=kernel == "float32",
                lava_process=arith.process, wrap_bits=arith.wrap_bits, can_wrap=arith.can_wrap(bound),
            )  # fmt: skip
    in_order = {s.name: synapse_plans[s.name] for s in graph.of_type(n.FixedPointSynapse)}
    return SimPlan(view=view, window=window, input_range=(x_lo, x_hi), synapses=in_order, layers=layer_plans)


def _check_graph(graph: Graph) -> dict[str, tuple[int, ...]]:
    if not graph.is_fixed_point:
        raise IRError("the fixed-point simulator runs quantized graphs (after QuantizeFixedPoint)")
    shapes = infer_shapes(graph)
    for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        for s in node.sources:
            if not isinstance(graph.node(s), n.FixedPointSynapse):
                raise IRError(f"layer {node.name!r}: source {s!r} is not a FixedPointSynapse")
    for node in graph.of_type(n.FixedPointSynapse):
        if not isinstance(graph.node(node.sources[0]), (n.Input, n.FixedPointNeuron)):
            raise IRError(f"synapse {node.name!r} must read the Input or a neuron layer, reads {node.sources[0]!r}")
    return shapes


def _check_schedule(graph: Graph) -> None:
    """The windowed pipelined simulation needs the schedule ScheduleTimesteps produces."""
    s = graph.schedule
    if s is None:
        raise IRError("the pipelined view needs a scheduled graph (run ScheduleTimesteps)")
    R = s.reset_interval
    if R < graph.timesteps:
        raise IRError(f"reset interval {R} is shorter than the {graph.timesteps} timesteps of a sample")
    depth = {graph.input.name: 0, **s.depth}
    for layer in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        if layer.name not in s.depth or layer.name not in s.reset_offset:
            raise IRError(f"the schedule has no depth or reset offset for layer {layer.name!r}")
        if s.reset_offset[layer.name] != (s.depth[layer.name] + 1) % R:
            raise IRError(
                f"layer {layer.name!r}: reset offset {s.reset_offset[layer.name]} is not (depth + 1) % R = "
                f"{(s.depth[layer.name] + 1) % R}; the simulator needs ScheduleTimesteps' schedule "
                "(run_pipelined simulates any schedule)"
            )
        for syn in (graph.node(name) for name in layer.sources):
            src = syn.sources[0]
            if depth[layer.name] - 1 - syn.delay != depth.get(src):
                raise IRError(
                    f"synapse {syn.name!r}: delay {syn.delay} does not align {src!r} (depth {depth.get(src)}) "
                    f"with {layer.name!r} (depth {depth[layer.name]}); the simulator needs "
                    "delay = depth - 1 - depth(source), as ScheduleTimesteps sets it"
                )
    if s.latency != s.depth[graph.output.name]:
        raise IRError(f"schedule latency {s.latency} is not the accumulator's depth {s.depth[graph.output.name]}")


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class SimTiming:
    """Where the time went.

    Attributes:
        seconds: Wall time of the whole call.
        setup_seconds: Planning and moving the weights to the device.
        samples: Samples simulated.
        steps: Steps per sample window (T aligned, R pipelined).
        batch_size: Samples per batch.
        device: The torch device.
        threads: ``torch.get_num_threads()`` during the run.
    """

    seconds: float
    setup_seconds: float
    samples: int
    steps: int
    batch_size: int
    device: str
    threads: int

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.inf


@dataclass
class SimRun(IntRun):
    """Result of :func:`simulate`: an :class:`~inflor_deploy.backends.sim.int_reference.IntRun` (same six fields, same `scores`) plus counts.

    Attributes:
        accumulator: ``[B, classes]`` int64 integer readout of each sample
            window: v after t = T - 1, or the sum of v over t < T (mean
            membrane); 64 units per weight unit.
        spikes: Neuron name -> ``[T, B, ...]`` uint8 (when recorded).
        voltages: Neuron/accumulator name -> ``[T, B, ...]`` int64 v after the reset (when recorded).
        currents: Neuron/accumulator name -> ``[T, B, ...]`` int64 u (when recorded).
        u_wraps: Layer name -> u wrap events (aligned: the samples' T steps;
            pipelined: the whole global timeline, as ``run_pipelined`` counts).
        v_saturations: Layer name -> v clip events (same scope as ``u_wraps``).
        spike_counts: Neuron name -> spikes in the samples' T steps (the same in both views).
        spikes_per_sample: Neuron name -> ``[B]`` int64: each sample's spikes in its T steps.
        pipeline_spike_counts: Pipelined view: neuron name -> every spike on the
            global timeline g = 1..G (padding steps, prefix and tail included:
            what the chip emits). None in the aligned view.
        raw: Pipelined view with ``record``: the global-step traces
            ``{"spikes" | "voltages" | "currents": {name: [G, *shape]}}``; index
            ``g - 1`` holds global step g (``G = S*R + latency + 1``), the
            layout ``run_pipelined`` returns (which has no "currents"). Else None.
        view: ``"aligned"`` or ``"pipelined"``.
        plan: The :class:`SimPlan` the run used.
        timing: The :class:`SimTiming`.
    """

    spike_counts: dict[str, int] = field(default_factory=dict)
    spikes_per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    pipeline_spike_counts: dict[str, int] | None = None
    raw: dict[str, dict[str, np.ndarray]] | None = None
    view: str = "aligned"
    plan: SimPlan | None = None
    timing: SimTiming | None = None



# --------------------------------------------------------------------------- synapses


class _Synapse:
    """One synapse on the device, summing in the dtype its plan proved exact."""

    def __init__(self, node: n.FixedPointSynapse, sp: SynapsePlan, device: torch.device, out_dtype: torch.dtype,
                 graded: bool = False, out_shape: tuple[int, ...] | None = None):  # fmt: skip
        self.name, self.source, self.node, self.plan = node.name, node.sources[0], node, sp
        # A dense current into a (C, H, W) layer is delivered in the layer's shape (C-major).
        self.out_shape = tuple(out_shape) if out_shape is not None and node.kind == "dense" and len(out_shape) > 1 else None
        self.device, self.out_dtype = device, out_dtype
        self.dtype = _DTYPES[sp.dtype]
        # Lava's wrap, applied to the exact int64 sum (only planned for int64-kernel layers: module docstring).
        self.arith = synapse_arithmetic(node, graded) if sp.can_wrap else None
        # The weights carry 64 (a prescaled float32 layer) and 2^weight_exp (a power of two: exact),
        # unless Lava's wrap applies: then lava_current shifts the exact sum itself. A negative exponent
        # floors the exact sum (right_shift bits), after which the current is scaled by 64 (after_shift).
        exp = int(node.weight_exp)
        self.right_shift = -exp if exp < 0 else 0
        self.after_shift = _SCALE if sp.prescaled and self.right_shift else 1
        self.factor = (_SCALE if sp.prescaled and not self.right_shift else 1) * (
            1 << exp if self.arith is None and exp > 0 else 1
        )
        if sp.op == "diagonal":
            d = torch.from_numpy(_diagonal(node).astype(np.int64) * self.factor).to(device=device, dtype=self.dtype)
            self.diag = d.view(1, -1, 1, 1) if node.kind == "conv" else d.view(1, -1)
        elif self.dtype != torch.int64:
            weight = torch.from_numpy(node.weight.astype(np.int64) * self.factor)
            self.weight = weight.to(device=device, dtype=self.dtype)
        self._int_weight: torch.Tensor | None = None
        self._summing: dict[tuple, bool] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The synapse's current for source output x ``[B, ...]``, in the target layer's dtype (wrapped as Lava wraps it)."""
        node = self.node
        if self.plan.op == "diagonal":
            y = self._select(x) * self.diag
        elif self.dtype == torch.int64 or (node.kind == "conv" and not self._sums_exactly(x)):
            y = self._int64(x.cpu().to(torch.int64)).to(self.device)
        elif node.kind == "conv":
            y = F.conv2d(x.to(self.dtype), self.weight, None, node.stride, node.padding, 1, node.groups)
        else:
            y = F.linear(x.to(self.dtype).reshape(x.shape[0], -1), self.weight)
        if self.right_shift and self.arith is None:
            y = floor_shift(y, self.right_shift)  # exact: y holds the integer sum (module docstring)
        y = y if y.dtype == self.out_dtype else y.to(self.out_dtype)
        if self.out_shape is not None:
            y = y.reshape(y.shape[0], *self.out_shape)
        if self.arith is not None:
            y = lava_current(self.arith, y)
        return y * self.after_shift if self.after_shift != 1 else y

    def add_into(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """``y += current(x)`` for a diagonal synapse, in place (y is a fresh tensor of the layer)."""
        if y.dtype == self.dtype and self.arith is None and not self.right_shift:
            y.addcmul_(self._select(x), self.diag)
        else:
            y.add_(self(x))

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.node.kind == "conv":
            sh, sw = self.node.stride
            return x[:, :, ::sh, ::sw]
        return x.reshape(x.shape[0], -1)

    def _int64(self, x: torch.Tensor) -> torch.Tensor:
        """Exact int64 sums on the CPU (modulo 2^64, like numpy's int64 in the reference)."""
        node = self.node
        if self._int_weight is None:  # made on first use: most runs never sum in int64
            self._int_weight = torch.from_numpy(node.weight.astype(np.int64) * self.factor)
        w = self._int_weight
        if node.kind == "dense":
            return x.reshape(x.shape[0], -1) @ w.T
        (sh, sw), (ph, pw), groups = node.stride, node.padding, node.groups
        b, _, h, wd = x.shape
        out_c, cg, kh, kw = w.shape
        xp = F.pad(x, (pw, pw, ph, ph))
        oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
        out = torch.zeros((b, out_c, oh, ow), dtype=torch.int64)
        per = out_c // groups
        for g in range(groups):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, g * cg : (g + 1) * cg, i : i + sh * oh : sh, j : j + sw * ow : sw]
                    w_ij = w[g * per : (g + 1) * per, :, i, j]
                    out[:, g * per : (g + 1) * per] += torch.einsum("oc,bchw->bohw", w_ij, patch)
        return out

    def _sums_exactly(self, x: torch.Tensor) -> bool:
        """Whether torch convolves x with a backend that only adds products (see the proof)."""
        key = (*x.shape, x.is_contiguous(memory_format=torch.channels_last))
        if key not in self._summing:
            select = getattr(torch._C, "_select_conv_backend", None)
            if select is None:  # private torch API gone: rely on the backend flags of _exact_backends
                self._summing[key] = True
            else:
                node = self.node
                backend = select(x.to(self.dtype), self.weight, None, list(node.stride), list(node.padding),
                                 [1, 1], False, [0, 0], node.groups, None)  # fmt: skip
                self._summing[key] = backend.name in SUMMING_CONV_BACKENDS
        return self._summing[key]


@contextlib.contextmanager
def _exact_backends(device: torch.device) -> Iterator[None]:
    """While simulating: no NNPACK (Winograd/FFT), no cuDNN (Winograd/FFT/TF32), no TF32 GEMMs."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.backends.nnpack.flags(enabled=False))
        if device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
            matmul = torch.backends.cuda.matmul
            knob = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
            previous = getattr(matmul, knob)
            setattr(matmul, knob, "ieee" if knob == "fp32_precision" else False)
            stack.callback(setattr, matmul, knob, previous)
        yield


# --------------------------------------------------------------------------- layer kernels


def _layer_constant(value, shift: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """``value << shift`` for a layer: a Python number when scalar, else a ``(1, C, 1, ..)`` tensor.

    Per-channel values are integers below 2^24 after the shift (the plan checks it),
    so float32 holds them exactly.
    """
    array = np.asarray(value, dtype=np.int64) << shift
    if array.ndim == 0:
        return float(array) if dtype.is_floating_point else int(array)
    per = n.per_channel(array, len(shape))
    return torch.from_numpy(np.ascontiguousarray(per[None])).to(device=device, dtype=dtype)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Nonzero entries per sample, ``[B]`` (int64 for bool masks; exact float sums for 0/1 floats)."""
    if mask.dim() == 1:
        return mask.to(torch.int64)
    dims = tuple(range(1, mask.dim()))
    if mask.dtype.is_floating_point and math.prod(mask.shape[1:]) > FLOAT32_EXACT:
        return mask.sum(dim=dims, dtype=torch.float64)
    return mask.sum(dim=dims)


def _dense_view(x: torch.Tensor) -> torch.Tensor:
    """x itself, or its NHWC view when x is channels-last: a contiguous view reductions read without a copy."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return x


class _Float32Layer:
    """The float32 kernel (du = 4095, dv = 0, u cannot wrap: module docstring).

    Its synapses deliver ``u = a << 6`` (weights x 64); v is float32 holding exact integers.
    """

    def __init__(self, node, lp: LayerPlan, shape: tuple[int, ...], device: torch.device):
        self.is_neuron = isinstance(node, n.FixedPointNeuron)
        bias = _bias(node, shape)
        self.bias = torch.from_numpy(bias.astype(np.float32)).to(device) if bias.any() else None
        self.vth = _layer_constant(node.vth, VTH_SHIFT, shape, torch.float32, device) if self.is_neuron else 0.0
        self.subtract = self.is_neuron and node.reset == "subtract"
        self.zero = self.is_neuron and node.reset == "zero"
        self.reset = _layer_constant(node.reset_mant, ACT_SHIFT, shape, torch.float32, device) if self.subtract else 0.0
        self.can_saturate = lp.can_saturate
        self.v = self.u = None

    def start(self, batch: int) -> None:
        self.v = self.u = None  # allocated at the first step, in the current's memory format

    def step(self, y: torch.Tensor, live: torch.Tensor | None, keep_u: bool, buffers: "_Buffers"):
        if self.v is None:
            self.v = torch.zeros_like(y)
        v = self.v
        v.add_(y)  # u = a << 6 (no decay, no wrap)
        if self.bias is not None:
            v.add_(self.bias)
        saturations = None
        if self.can_saturate:
            lo, hi = torch.aminmax(_dense_view(v))
            if hi.item() > V_LIMIT or lo.item() < -V_LIMIT:
                saturations = _count(v.abs() > V_LIMIT)
                v.clamp_(-V_LIMIT, V_LIMIT)
        spikes = None
        if self.is_neuron:
            spikes = torch.gt(v, self.vth, out=buffers.take(v))  # 1.0 where v > vth << 6, else 0.0
            if self.subtract:
                if isinstance(self.reset, torch.Tensor):
                    v.addcmul_(spikes, self.reset, value=-1.0)  # per channel: exact integer products
                else:
                    v.add_(spikes, alpha=-self.reset)
            elif self.zero:
                v.addcmul_(v, spikes, value=-1.0)  # v - v * s: zero where fired
        u = y if keep_u else None
        if live is not None:
            m = live.view(-1, *([1] * (v.dim() - 1))).to(v.dtype)
            v.mul_(m)
            if spikes is not None:
                spikes.mul_(m)
            u = u * m if u is not None else None
            saturations = saturations * live if saturations is not None else None
        self.u = u
        return spikes, None, saturations

    def voltage(self) -> torch.Tensor:
        return self.v.to(torch.int64)

    def current(self) -> torch.Tensor:
        return self.u.to(torch.int64)


class _Int64Layer:
    """The int64 kernel: the reference's ``_LayerState.step``, line by line, in torch."""

    def __init__(self, node, lp: LayerPlan, shape: tuple[int, ...], device: torch.device):
        self.is_neuron = isinstance(node, n.FixedPointNeuron)
        self.shape = shape
        self.device = device
        self.bias = torch.from_numpy(np.ascontiguousarray(_bias(node, shape))).to(device)
        self.du_factor = DECAY_UNIT - ((node.du if self.is_neuron else DECAY_UNIT - 1) + 1)
        self.dv_factor = DECAY_UNIT - node.dv
        self.vth = _layer_constant(node.vth, VTH_SHIFT, shape, torch.int64, device) if self.is_neuron else 0
        self.subtract = self.is_neuron and node.reset == "subtract"
        self.zero = self.is_neuron and node.reset == "zero"
        self.reset = _layer_constant(node.reset_mant, ACT_SHIFT, shape, torch.int64, device) if self.subtract else 0
        # Lava's int32 arithmetic of a, a << 6 and u + (a << 6) (module docstring); the identity unless u can wrap.
        self.int32 = lp.can_wrap

    def start(self, batch: int) -> None:
        self.u = torch.zeros((batch, *self.shape), dtype=torch.int64, device=self.device)
        self.v = torch.zeros_like(self.u)

    @staticmethod
    def _decay(x: torch.Tensor, factor: int) -> torch.Tensor:
        # sign(x * f) * (|x * f| >> 12) is x * f / 4096 rounded toward zero.
        return torch.div(x * factor, DECAY_UNIT, rounding_mode="trunc")

    def step(self, a: torch.Tensor, live: torch.Tensor | None, keep_u: bool, buffers: "_Buffers"):
        if self.int32:
            a_shifted = wrap(wrap(a, 32) * _SCALE, 32)
            u = a_shifted if self.du_factor == 0 else wrap(self._decay(self.u, self.du_factor) + a_shifted, 32)
        else:
            u = a * _SCALE if self.du_factor == 0 else self._decay(self.u, self.du_factor) + a * _SCALE
        # One wrap into (-2^23, 2^23]; the second test reads the first's result, as in Lava.
        wrapped = torch.where(u > U_LIMIT, u - 2 * U_LIMIT, u)
        wrapped = torch.where(wrapped <= -U_LIMIT, u + 2 * U_LIMIT, wrapped)
        wraps = _count(wrapped != u)
        u = wrapped
        v = self.v if self.dv_factor == DECAY_UNIT else self._decay(self.v, self.dv_factor)
        v = v + u + self.bias
        saturations = _count((v > V_LIMIT) | (v < -V_LIMIT))
        v = torch.clamp(v, -V_LIMIT, V_LIMIT)
        spikes = None
        if self.is_neuron:
            fired = v > self.vth
            if self.subtract:
                v = v - fired * self.reset
            elif self.zero:
                v = torch.where(fired, 0, v)
            spikes = fired.to(torch.float32)
        if live is not None:
            m = live.view(-1, *([1] * (v.dim() - 1)))
            u, v = u * m, v * m
            spikes = spikes * m if spikes is not None else None
            wraps, saturations = wraps * live, saturations * live
        self.u, self.v = u, v
        return spikes, wraps, saturations

    def voltage(self) -> torch.Tensor:
        return self.v

    def current(self) -> torch.Tensor:
        return self.u


# --------------------------------------------------------------------------- running windows


class _Network:
    """The graph on a device: layers in order, each with its kernel and synapses."""

    def __init__(self, graph: Graph, sim_plan: SimPlan, shapes: dict[str, tuple[int, ...]], device: torch.device):
        self.device = device
        self.input_name = graph.input.name
        self.sequence = graph.input.encoding == "sequence"
        self.output_name = graph.output.name
        self.readout = graph.output.readout
        self.shapes = shapes
        self.dtypes = {}  # layer name -> the dtype its kernel takes its current in
        self.layers = []
        for layer in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
            lp = sim_plan.layers[layer.name]
            kernel = (_Float32Layer if lp.kernel == "float32" else _Int64Layer)(layer, lp, shapes[layer.name], device)
            out_dtype = torch.float32 if lp.kernel == "float32" else torch.int64
            self.dtypes[layer.name] = out_dtype
            synapses = [
                _Synapse(graph.node(s), sim_plan.synapses[s], device, out_dtype,
                         graph.node(s).sources[0] == self.input_name, shapes[layer.name])
                for s in layer.sources
            ]
            # Conv/dense first: their fresh output can then take the diagonal ones in place.
            synapses.sort(key=lambda s: s.plan.op == "diagonal")
            self.layers.append((layer.name, kernel, synapses))
        self.neurons = [layer.name for layer in graph.of_type(n.FixedPointNeuron)]
        # Outputs a step no longer needs after layer i has run.
        last_read: dict[str, int] = {}
        for i, (_, _, synapses) in enumerate(self.layers):
            for syn in synapses:
                last_read[syn.source] = i
        self.release = [[s for s, last in last_read.items() if last == i] for i in range(len(self.layers))]


class _Buffers:
    """Spike tensors recycled once their last reader has run, so a step holds few of them at once."""

    def __init__(self):
        self.free: dict[tuple, list[torch.Tensor]] = {}

    def take(self, like: torch.Tensor) -> torch.Tensor:
        free = self.free.get((like.shape, like.stride(), like.dtype))
        return free.pop() if free else torch.empty_like(like)

    def give(self, x: torch.Tensor) -> None:
        self.free.setdefault((x.shape, x.stride(), x.dtype), []).append(x)


@dataclass
class _WindowResult:
    """What one batch of windows produced.

    Attributes:
        spikes, wraps, saturations: Layer name -> ``[steps, B]`` int64 counts per step and window.
        accumulator: ``[B, ...]`` the output layer's integer readout: v after step T - 1,
            or the sum of v over steps 0..T-1 (mean membrane).
        traces: ``{"spikes" | "voltages" | "currents": {name: [steps, B, ...]}}`` when recorded.
    """

    spikes: dict[str, np.ndarray]
    wraps: dict[str, np.ndarray]
    saturations: dict[str, np.ndarray]
    accumulator: np.ndarray
    traces: dict[str, dict[str, np.ndarray]]


def _run_windows(
    net: _Network,
    frames: np.ndarray,
    steps: int,
    frame_steps: int,
    record: bool,
    live: dict[str, np.ndarray] | None = None,
) -> _WindowResult:
    """Run a batch of windows from a zero state, every layer at the same step t.

    Args:
        net: The network.
        frames: ``[B, *input_shape]`` int64 quantized frames, shown at steps t < frame_steps
            (sequence Input: ``[B, T, *input_shape]``, frame t at step t).
        steps: Steps to run (T aligned, R pipelined).
        frame_steps: T; later steps see zero frames (the padding of a pipelined window).
        record: Keep spikes, voltages and currents of every step.
        live: Layer name -> ``[steps, B]`` bool; where False the layer has not
            begun yet: its state and spikes stay zero and nothing counts.
    """
    device, batch = net.device, frames.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    input_synapses = [syn for _, _, synapses in net.layers for syn in synapses if syn.source == net.input_name]

    def layout(frame: torch.Tensor) -> torch.Tensor:
        return frame.contiguous(memory_format=torch.channels_last) if frame.dim() == 4 else frame  # oneDNN's fastest

    if not net.sequence:
        # Direct encoding: the frame is the same at every step, so the synapses reading it run once.
        x = layout(x)
        from_input = {syn.name: syn(x) for syn in input_synapses}
    live_t = None if live is None else {k: torch.from_numpy(v).to(device) for k, v in live.items()}
    for _, kernel, _ in net.layers:
        kernel.start(batch)
    buffers = _Buffers()
    counts: dict[str, dict[str, list]] = {"spikes": {}, "wraps": {}, "saturations": {}}
    traces: dict[str, dict[str, list]] = {"spikes": {}, "voltages": {}, "currents": {}}
    accumulator = None
    for t in range(steps):
        if net.sequence and t < frame_steps:  # a new frame: its synapses run at every step
            frame = layout(x[:, t])
            from_input = {syn.name: syn(frame) for syn in input_synapses}
        outputs: dict[str, torch.Tensor] = {}
        for i, (name, kernel, synapses) in enumerate(net.layers):
            y, fresh = None, False  # fresh: y was made this step, so it may be added to in place
            for syn in synapses:
                if syn.source == net.input_name:
                    if t >= frame_steps:
                        continue  # a zero frame: no current
                    part, part_fresh = from_input[syn.name], net.sequence
                elif fresh and syn.plan.op == "diagonal":
                    syn.add_into(y, outputs[syn.source])
                    continue
                else:
                    part, part_fresh = syn(outputs[syn.source]), True
                if y is None:
                    y, fresh = part, part_fresh
                elif fresh:
                    y.add_(part)
                else:
                    y, fresh = y + part, True
            if y is None:  # only zero frames reach this layer now, or it has no synapses (a bias source)
                if synapses:
                    y = torch.zeros_like(from_input[synapses[0].name])
                else:
                    y = torch.zeros((batch, *net.shapes[name]), dtype=net.dtypes[name], device=device)
            spikes, wraps, saturations = kernel.step(y, None if live_t is None else live_t[name][t], record, buffers)
            for kind, value in (("wraps", wraps), ("saturations", saturations)):
                if value is not None:
                    counts[kind].setdefault(name, []).append((t, value))
            if spikes is not None:
                counts["spikes"].setdefault(name, []).append((t, _count(spikes)))
                outputs[name] = spikes
            if record:
                if spikes is not None:
                    traces["spikes"].setdefault(name, []).append(spikes.to(torch.uint8).cpu().numpy())
                traces["voltages"].setdefault(name, []).append(kernel.voltage().cpu().numpy())
                traces["currents"].setdefault(name, []).append(kernel.current().cpu().numpy())
            if name == net.output_name and t < frame_steps:
                if net.readout == "mean_membrane":  # R = sum of v over the sample's T steps
                    v = kernel.voltage().cpu().numpy()
                    accumulator = v.astype(np.int64) if accumulator is None else accumulator + v
                elif t == frame_steps - 1:  # R = v after the last step
                    accumulator = kernel.voltage().cpu().numpy().copy()
            for source in net.release[i]:
                if source in outputs:
                    buffers.give(outputs.pop(source))

    def per_step(entries: list) -> np.ndarray:
        out = np.zeros((steps, batch), dtype=np.int64)
        for t, value in entries:
            out[t] += value.cpu().numpy().astype(np.int64)
        return out

    return _WindowResult(
        spikes={name: per_step(counts["spikes"].get(name, [])) for name in net.neurons},
        wraps={name: per_step(counts["wraps"].get(name, [])) for name, _, _ in net.layers},
        saturations={name: per_step(counts["saturations"].get(name, [])) for name, _, _ in net.layers},
        accumulator=accumulator,
        traces={kind: {k: np.stack(v) for k, v in per.items()} for kind, per in traces.items()},
    )


# --------------------------------------------------------------------------- simulate


def simulate(
    graph: Graph,
    images: np.ndarray,
    *,
    view: View = "aligned",
    record: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
    precision: Precision = "auto",
) -> SimRun:
    """Simulate a quantized graph bit-exactly: the integer reference's semantics, fast.

    Args:
        graph: A fixed-point graph (after QuantizeFixedPoint; also after
            ScheduleTimesteps for the pipelined view).
        images: ``[B, *input_shape]`` images (``[B, T, *input_shape]`` for a
            sequence Input) inside the Input's declared range, quantized with
            :func:`~inflor_deploy.backends.sim.int_reference.quantize_input`.
        view: ``"aligned"`` (as ``run_aligned``) or ``"pipelined"`` (as ``run_pipelined``).
        record: Keep every spike, v and u as ``[T, B, ...]`` traces (and the
            raw global-step traces in the pipelined view). Without it only the
            current state is kept.
        device: A torch device (``"cpu"``, ``"cuda"``, ...); never required.
        batch_size: Samples per batch; None keeps each activation of a batch
            under 2^24 elements and the batch within half the available
            memory (:mod:`inflor_deploy.memory`; one sample that does not fit
            raises :class:`~inflor_deploy.memory.MemoryLimitError`).
        progress: Print a line per batch to stderr.
        precision: ``"auto"`` (the fastest exact plan) or ``"int64"`` (the
            int64 kernel everywhere: a second implementation, for tests).

    Returns:
        The :class:`SimRun`.

    Raises:
        IRError: The graph is not quantized (or not consistently scheduled,
            for the pipelined view), or the images do not fit its input.
    """
    started = time.perf_counter()
    shapes = _check_graph(graph)
    images = check_inputs(graph.input, images)
    if graph.input.encoding == "sequence" and images.shape[1] != graph.timesteps:
        raise IRError(f"sequence inputs have {images.shape[1]} frames; the graph runs T = {graph.timesteps} steps")
    if images.shape[0] < 1:
        raise IRError("simulate needs at least one image")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise IRError(f"batch_size must be a positive int, got {batch_size!r}")
    sim_plan = plan(graph, images, view=view, precision=precision)
    device = torch.device(device)
    samples = images.shape[0]
    if batch_size is None:
        largest = max(math.prod(s) for s in shapes.values())
        steps = graph.schedule.reset_interval if view == "pipelined" else graph.timesteps
        fits = batch_size_for(graph, "recorded" if record else "simulate", "simulating one sample", wanted=samples,
                              steps_per_sample=steps, lower="T (compile with a smaller -T)")  # fmt: skip
        batch_size = max(1, min(samples, DEFAULT_ELEMENTS_PER_BATCH // max(largest, 1), fits))
    with _exact_backends(device):
        net = _Network(graph, sim_plan, shapes, device)
        setup = time.perf_counter() - started
        batches = _batches(graph, images, batch_size, progress, started)
        if view == "aligned":
            run = _simulate_aligned(net, graph, batches, record)
        else:
            run = _simulate_pipelined(net, graph, batches, record, samples)
    run.view, run.plan = view, sim_plan
    run.timing = SimTiming(
        seconds=time.perf_counter() - started, setup_seconds=setup, samples=samples, steps=sim_plan.window,
        batch_size=batch_size, device=str(device), threads=torch.get_num_threads(),
    )  # fmt: skip
    return run


def _batches(graph: Graph, images: np.ndarray, batch_size: int, progress: bool, started: float):
    """Quantized batches, one at a time (the whole set is never quantized at once)."""
    samples = images.shape[0]
    for first in range(0, samples, batch_size):
        yield quantize_input(graph, images[first : first + batch_size])
        if progress:
            done = min(first + batch_size, samples)
            print(f"fixed-point simulator: {done}/{samples} samples, {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)  # fmt: skip


def _simulate_aligned(net: _Network, graph: Graph, batches, record: bool) -> SimRun:
    T = graph.timesteps
    parts = [_run_windows(net, frames, T, T, record) for frames in batches]
    run = SimRun(accumulator=np.concatenate([p.accumulator for p in parts]))
    for name, _, _ in net.layers:
        run.u_wraps[name] = int(sum(p.wraps[name].sum() for p in parts))
        run.v_saturations[name] = int(sum(p.saturations[name].sum() for p in parts))
    _sample_results(run, net, parts, T, record)
    return run


def _sample_results(run: SimRun, net: _Network, parts: list[_WindowResult], T: int, record: bool) -> None:
    """Spike counts and [T, B, ...] traces of the samples' own windows (steps t < T)."""
    for name in net.neurons:
        per_sample = np.concatenate([p.spikes[name][:T].sum(axis=0) for p in parts])
        run.spikes_per_sample[name] = per_sample
        run.spike_counts[name] = int(per_sample.sum())
    if record:
        for kind in ("spikes", "voltages", "currents"):
            for name in parts[0].traces[kind]:
                getattr(run, kind)[name] = np.concatenate([p.traces[kind][name][:T] for p in parts], axis=1)


def _simulate_pipelined(net: _Network, graph: Graph, batches, record: bool, samples: int) -> SimRun:
    schedule = graph.schedule
    T, R, latency, depth = graph.timesteps, schedule.reset_interval, schedule.latency, schedule.depth
    G = samples * R + latency + 1
    prefix = -(-latency // R)  # windows k = -prefix .. -1 hold some layer's steps g >= 1
    # Window S + j of a layer at depth d reaches g <= G while latency - d - j*R >= 0: j < ceil((latency + 1) / R)
    # (d = 0 is a bias source feeding the first layer; deeper layers need fewer tail windows).
    tail = -(-(latency + 1) // R)

    # The samples' windows k = 0 .. S-1: R steps each, zero frames for t >= T.
    parts = [_run_windows(net, frames, R, T, record) for frames in batches]

    # Rows 0 .. prefix-1: prefix windows k = row - prefix; last row: the all-zero tail window.
    live = {}
    for name, _, _ in net.layers:
        mask = np.ones((R, prefix + 1), dtype=bool)
        for row in range(prefix):
            begin = (prefix - row) * R - depth[name]  # first step t of window k with g >= 1
            mask[: min(max(begin, 0), R), row] = False
        live[name] = mask
    frame_shape = (T, *graph.input.shape) if net.sequence else tuple(graph.input.shape)
    edges = _run_windows(net, np.zeros((prefix + 1, *frame_shape), dtype=np.int64), R, T, record, live)

    def timeline(per_step: list[np.ndarray], edge: np.ndarray, d: int) -> int:
        """A counter over g = 1..G: samples' windows + live prefix steps + the tail's steps up to G."""
        total = sum(int(p.sum()) for p in per_step) + int(edge[:, :prefix].sum())
        for j in range(tail):  # window S + j of a layer at depth d reaches g = G at t = latency - d - j*R
            last = latency - d - j * R
            if last >= 0:
                total += int(edge[: min(R, last + 1), prefix].sum())
        return total

    run = SimRun(accumulator=np.concatenate([p.accumulator for p in parts]), pipeline_spike_counts={})
    for name, _, _ in net.layers:
        d = depth[name]
        run.u_wraps[name] = timeline([p.wraps[name] for p in parts], edges.wraps[name], d)
        run.v_saturations[name] = timeline([p.saturations[name] for p in parts], edges.saturations[name], d)
        if name in edges.spikes:
            run.pipeline_spike_counts[name] = timeline([p.spikes[name] for p in parts], edges.spikes[name], d)
    _sample_results(run, net, parts, T, record)
    if record:
        run.raw = {}
        for kind, per_layer in edges.traces.items():
            run.raw[kind] = {}
            for name, edge in per_layer.items():
                main = np.concatenate([p.traces[kind][name] for p in parts], axis=1)  # [R, S, ...]
                windows = [edge[:, row] for row in range(prefix)] + [main[:, k] for k in range(samples)]
                windows += [edge[:, prefix]] * tail
                flat = np.concatenate(windows)  # window k, step t at index (k + prefix) * R + t
                first = prefix * R - depth[name]  # g - 1 - d = k*R + t, so g = 1 sits here
                run.raw[kind][name] = flat[first : first + G]
    return run
