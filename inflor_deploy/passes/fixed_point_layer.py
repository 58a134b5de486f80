"""How one layer's float parameters become Loihi integers: the scale, exponents and mantissas.

:func:`quantize_layer` is a pure function from a :class:`LayerSpec` (the
float weights of every synapse into one neuron layer, its bias, threshold,
reset and leak) to a :class:`LayerQuantization` (one scale, every integer
the chip holds, and why). ``QuantizeFixedPoint`` calls it for each layer;
a training loop can call it too, to put a layer on the integer grid the
compiler will choose (quantization-aware fine-tuning).

The identities it relies on (units: one *weight unit* (wu) is one integer
step of a synaptic current; v counts 64 per wu because ``u = a << 6``):

* **Scale invariance.** Multiplying a layer's incoming weights, bias,
  threshold, reset amount and membrane by one s > 0 changes no spike, so a
  layer's scale s (wu per float unit) is free; the only errors are the
  roundings of ``s * parameter`` to the integers below.
* **Exponents.** Synapse i delivers ``(W_i x) << k_i``; its float weights w
  become ``W_i = round(s w / (step_i 2^k_i)) * step_i`` with ``step_i`` the
  spacing of its weight grid (:meth:`~inflor_deploy.targets.Numerics.weight_grid`).
  ``k_i`` is the smallest exponent whose mantissas fit the grid, so every
  synapse keeps between half and all of its grid's levels whatever the
  ratio of its weights to the other synapses' (a residual block's identity
  shortcut, weight 1 per spike, beside a conv whose weights are 0.05).
  The scale is set by the synapse with the smallest weights filling its
  grid at exponent 0: ``s_fill = max_i fill * M_i / max|w_i|`` (``M_i`` the
  grid's largest magnitude, ``fill`` = ``weight_fill``).
* **Negative exponents.** When a cap (usually the u headroom of a layer
  with a large fan-in, e.g. a conv with an average pool folded into it)
  holds s below ``s_fill``, exponent 0 would leave the weights a fraction
  of their grid. ``k_i`` may then be negative (down to the target's
  ``weight_exp_min``): Lava delivers ``floor((W_i x) / 2^-k_i)``, the
  mantissas keep half to all of the grid, and the price is the floor: each
  step's current is at most one wu low (never high), against a current
  whose worst case is ~2^17 wu and a threshold of ``s vth`` wu. The bounds
  below take the floor into account exactly (it is monotone).
* **Exact identity shortcuts.** An identity shortcut's weight ``s *
  spike_value`` lands exactly on its grid when s is lowered (by at most one
  mantissa step, < 1/64 relative) to ``j * step * 2^k / spike_value``.
* **Biases.** ``bias_mant << bias_exp`` in v units, ``bias_exp`` = the
  target's preferred exponent (6: one mantissa step per wu, so v stays a
  multiple of 64 in a non-leaky layer), or the largest one (7) when the
  bias needs the range. A bias beyond that is carried by a *bias source*:
  a one-neuron layer that fires at every step (no input, ``bias_mant << 6
  = 64 > vth << 6 = 0``, reset to zero) through a dense synapse of weights
  ``c_o << k_b``; the neuron's own ``bias_mant`` holds the remainder
  ``s b_o - c_o 2^k_b`` (at most ``step 2^(k_b - 1)``). Both reach v every
  step, exactly as the float bias does (the synapse's current goes through
  u, so the u headroom below counts it).
* **Headroom** (``|a| <= 2^17 - 1`` so that ``u = a << 6`` never leaves 24
  bits): per output, ``hi = sum_k max(W x_hi, W x_lo)`` and ``lo`` likewise
  over the source's range widened to include 0 (spikes [0, 1]; the graded
  input's declared range), plus the bias source's current. Widening makes
  every bound a non-decreasing function of s for fixed exponents, which
  makes the search below exact.
* **Thresholds.** v moves on a grid of ``g`` v units: ``g = 64`` in a
  non-leaky layer (every current, bias and reset is a multiple of 64),
  ``g = 1`` with a leak (the decay truncates). The hardware fires on
  ``v > vth_hw << 6``, i.e. on ``v >= 64 vth_hw + g``. The float layer fires
  on ``v >= 64 s vth`` (``>=``) or ``v > 64 s vth`` (``>``). So ``>`` uses
  ``vth_hw = round(s vth)``, and ``>=`` the nearest representable boundary:
  ``vth_hw = round(s vth) - 1`` when g = 64 (exactly ``v >= 64 theta``, theta =
  round(s vth)), ``vth_hw = round(s vth - g / 64)`` otherwise. Either way the
  boundary is within 32 v units (half a wu) of ``64 s vth``, above or below:
  the leaky layer is not biased toward firing early.

The search (why it terminates with the best scale). Let ``s0`` be the
smallest of ``s_fill`` and the caps (u and v headroom, threshold, reset and
bias ranges, the exponent cap ``weight_exp_max``), computed from the float
parameters. The exponents (weights, bias source) and the bias exponent are
fixed at ``s0``. With them fixed, every integer constraint (u headroom after
rounding, mantissa ranges) is non-decreasing in s (each ``|round(s w / q)|``
is), so the feasible scales form an interval ``(0, s*]``: bisection between
a feasible and an infeasible scale, a fixed number of times, ends at s*
to float precision. The v-saturation bound (``headroom="uv"``) adds a
non-monotone term (a bias of the opposite sign); the bisection still ends
at a scale that is verified feasible.

The probe guard (``headroom="probe"``, the default). The worst-case window
bound of ``"uv"`` assumes every input at its extreme for T steps, which real
activity never approaches; enforcing it costs precision everywhere. Under
``"probe"`` the cap comes from what the float layer did on the compile
probe: ``spec.v_needed`` is a membrane range that changes none of its spikes
when H is clamped to it (``float_ir.spike_preserving_range``; a membrane
driven far below zero by steady inhibition reaches a large |H| but never
needs it), and the scale keeps ``s * v_needed`` (v in weight units: the
dynamics are scale-invariant) below ``V_LIMIT_WEIGHT_UNITS / PROBE_V_MARGIN``.
The margin covers inputs that drive the membrane harder than the probe did
(on the digits test split the peak |H| exceeded a 16-image probe's by at
most 1.2x); what still saturates is counted by the simulators. The term is
``s * v_needed``, increasing in s, so the search above stays monotone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inflor_deploy.errors import InflorError

#: |a| must stay below this so that ``a << 6`` cannot wrap u (24-bit signed).
A_LIMIT = 2**17 - 1
#: v saturates at 2^23 - 1, i.e. this many weight units.
V_LIMIT_WEIGHT_UNITS = (2**23 - 1) >> 6
#: One weight unit in v units (``a << 6``).
V_PER_WEIGHT_UNIT = 64
#: Under ``headroom="probe"``: the factor by which v may exceed its probe peak before it saturates
#: (module docstring: the probe guard; one bit of v's range).
PROBE_V_MARGIN = 2.0
#: Bisection steps of the headroom search: the interval shrinks below a float's resolution.
SEARCH_STEPS = 64


class LayerQuantizationError(InflorError):
    """A layer cannot be put on the target's integer grid; the message names the layer and the fix."""


@dataclass(frozen=True)
class SynapseSpec:
    """One synapse into a layer, as the layer sees it.

    Attributes:
        name: The synapse's name (the fixed-point synapse keeps it).
        source: The node it reads (the Input, a neuron, or a bias source).
        kind: ``"dense"`` or ``"conv"``.
        effective: float64 weights per unit of the integer input value (graded
            input: per grade; spikes: times the spike value; times the layer's gain).
        input_min, input_max: The integer input's range (spikes: 0 and 1).
        stride, padding, groups: Conv geometry.
        identity: An identity shortcut (weights ``spike_value * I``): its scale
            is snapped so that the integer weight is exact.
        weight_bits: The mantissa width of its weight grid.
        sparse: Stored as its nonzero connections (pruned).
    """

    name: str
    source: str
    kind: str
    effective: np.ndarray
    input_min: float = 0.0
    input_max: float = 1.0
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    identity: bool = False
    weight_bits: int = 8
    sparse: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """Everything that fixes one layer's integers.

    Attributes:
        name: The layer.
        shape: Its per-sample shape.
        synapses: Its incoming synapses.
        bias: float64 bias per neuron (the layer's shape; zeros for none).
        timesteps: T (the v-saturation window).
        vth: Threshold (float or per channel ``(C,)``); None for a readout.
        compare: ``">="`` or ``">"``.
        reset: ``"subtract"``, ``"zero"`` or ``"none"``.
        reset_amount: What a subtractive reset removes (float or per channel).
        dv: The leak's 12-bit decay (0: IF, v moves on the 64-grid).
        v_needed: A membrane range (float units) that changes none of the
            layer's spikes on the compile probe when H is clamped to it
            (module docstring: the probe guard); 0 when not measured, which
            leaves the guard off.
    """

    name: str
    shape: tuple[int, ...]
    synapses: tuple[SynapseSpec, ...]
    bias: np.ndarray
    timesteps: int
    vth: float | np.ndarray | None = None
    compare: str = ">="
    reset: str = "subtract"
    reset_amount: float | np.ndarray | None = None
    dv: int = 0
    v_needed: float = 0.0


@dataclass(frozen=True)
class QuantizedSynapse:
    """A synapse's integers: ``a = (weight x) << weight_exp``."""

    name: str
    source: str
    kind: str
    weight: np.ndarray
    weight_exp: int
    weight_bits: int
    sparse: bool = False
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1


@dataclass(frozen=True)
class LayerQuantization:
    """The integers of one layer and the choices behind them.

    Attributes:
        scale: Weight units per float unit of the layer's current.
        scale_limited_by: Which limit set the scale (``fill``, ``u_wrap``, ...).
        scale_limits: Every limit, as the float scale it allows.
        synapses: The quantized incoming synapses, in the spec's order.
        bias_mant, bias_exp: The neuron's own bias, ``bias_mant << bias_exp`` v units.
        bias_source: The bias source's synapse into this layer (weights ``[N, 1]``), or None.
        vth_hw: Hardware threshold mantissa(s) (None for a readout).
        reset_mant: Reset mantissa(s) (0 unless ``"subtract"``).
        v_granularity: g: v is always a multiple of it (64 without leak, 1 with).
        threshold: The effective boundary in weight units: fires on ``v >= 64 * threshold``
            (``>=``) or ``v > 64 * threshold`` (``>``), per channel where vth is.
        u_bound: Largest ``|a|`` over the declared input range (wu).
        v_window_bound: Largest move of v over a window of T steps (wu).
    """

    scale: float
    scale_limited_by: str
    scale_limits: dict[str, float]
    synapses: tuple[QuantizedSynapse, ...]
    bias_mant: np.ndarray
    bias_exp: int
    bias_source: QuantizedSynapse | None
    vth_hw: np.ndarray | None
    reset_mant: np.ndarray
    v_granularity: int
    threshold: np.ndarray | None
    u_bound: int
    v_window_bound: int
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _grid(numerics, syn: SynapseSpec) -> tuple[int, int, int, int]:
    """``(lowest, highest, step, M)``: the synapse's weight grid and the magnitude both signs reach."""
    lo, hi, step = numerics.weight_grid(syn.kind, syn.weight_bits)
    return lo, hi, step, min(-lo, hi)


def _wide_range(syn: SynapseSpec) -> tuple[float, float]:
    """The input range widened to include 0 (makes every bound monotone in s)."""
    return min(float(syn.input_min), 0.0), max(float(syn.input_max), 0.0)


def _extremes(w: np.ndarray, x_lo: float, x_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output: the largest and smallest ``sum_k w[o, k] x_k`` for inputs in ``[x_lo, x_hi]`` (x_lo <= 0 <= x_hi).

    A positive weight raises the sum most at ``x_hi`` and lowers it most at
    ``x_lo``, a negative one the other way round. A conv's interior output
    sees its full kernel; borders see less.
    """
    w = w.reshape(w.shape[0], -1)
    pos, neg = np.clip(w, 0, None).sum(1), np.clip(w, None, 0).sum(1)
    return pos * x_hi + neg * x_lo, pos * x_lo + neg * x_hi


def _per_channel(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-output-channel vector viewed to broadcast against the layer's shape."""
    return np.asarray(x).reshape((-1,) + (1,) * (len(shape) - 1))


def _smallest_exponent(magnitude: float, step: int, usable: float, limit: int, lowest: int = 0) -> int:
    """The smallest k in ``lowest..limit`` with ``round(magnitude / (step 2^k)) * step <= usable`` (``limit + 1`` if none)."""
    for k in range(lowest, limit + 1):
        if np.rint(magnitude / (step * 2**k)) * step <= usable:
            return k
    return limit + 1


def _round_to_grid(x: np.ndarray, step: int, exp: int, lo: int, hi: int) -> np.ndarray:
    """``round(x / (step 2^exp)) * step``, clipped to the grid (the exponents keep it inside)."""
    return np.clip(np.rint(x / (step * 2.0**exp)) * step, lo, hi).astype(np.int64)


# --------------------------------------------------------------------------- the plan at a scale


@dataclass(frozen=True)
class _Fixed:
    """What is fixed before the search: exponents, the bias exponent, and the bias source's exponent."""

    weight_exps: tuple[int, ...]
    bias_exp: int
    bias_source_exp: int | None  # None: the neuron's bias_mant carries the whole bias


def _integers(spec: LayerSpec, numerics, fixed: _Fixed, scale: float) -> dict[str, Any]:
    """Every integer of the layer at ``scale`` with the exponents fixed (no range checks)."""
    weights = []
    for syn, k in zip(spec.synapses, fixed.weight_exps):
        lo, hi, step, _ = _grid(numerics, syn)
        weights.append(_round_to_grid(syn.effective * scale, step, k, lo, hi))
    bias_wu = spec.bias * scale
    coarse = None
    if fixed.bias_source_exp is not None:
        lo, hi, step = numerics.weight_grid("dense", _bias_source_bits(spec, numerics))
        coarse = np.clip(np.rint(bias_wu / (step * 2.0**fixed.bias_source_exp)) * step, lo, hi).astype(np.int64)
        bias_wu = bias_wu - coarse * 2.0**fixed.bias_source_exp
    shift = fixed.bias_exp - 6  # v units per mantissa step: 2^bias_exp = 64 * 2^shift
    bias_mant = np.rint(bias_wu / 2.0**shift).astype(np.int64)
    return {"weights": weights, "coarse": coarse, "bias_mant": bias_mant}


def _bias_source_bits(spec: LayerSpec, numerics) -> int:
    """The bias source's synapse uses the layer's weight width (the first synapse's)."""
    return spec.synapses[0].weight_bits if spec.synapses else numerics.weight_bits


def _current_bounds(spec: LayerSpec, fixed: _Fixed, ints: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: the largest and smallest integer current ``a`` of one step (wu), bias source included."""
    shape = spec.shape
    hi = np.zeros(shape)
    lo = np.zeros(shape)
    for syn, k, w in zip(spec.synapses, fixed.weight_exps, ints["weights"]):
        x_lo, x_hi = _wide_range(syn)
        top, bottom = _extremes(w.astype(np.float64) * 2.0**k, x_lo, x_hi)
        if k < 0:  # Lava floors (W x) / 2^-k: at most one wu lower, never higher
            bottom = np.floor(bottom)
            top = np.floor(top)
        hi = hi + _per_channel(top, shape)
        lo = lo + _per_channel(bottom, shape)
    if ints["coarse"] is not None:
        current = ints["coarse"].astype(np.float64) * 2.0**fixed.bias_source_exp  # one spike per step (or none)
        hi = hi + np.maximum(current, 0)
        lo = lo + np.minimum(current, 0)
    return hi, lo


def _bias_total_wu(fixed: _Fixed, ints: dict[str, Any]) -> np.ndarray:
    """The whole integer bias per neuron in wu (bias source current + the neuron's own)."""
    own = ints["bias_mant"] * 2.0 ** (fixed.bias_exp - 6)
    if ints["coarse"] is None:
        return own
    return own + ints["coarse"] * 2.0**fixed.bias_source_exp


def _thresholds(spec: LayerSpec, scale: float, granularity: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(vth_hw, effective threshold in wu)`` (module docstring: thresholds)."""
    if spec.vth is None:
        return None, None
    exact = np.asarray(spec.vth, dtype=np.float64) * scale
    if spec.compare == ">":
        vth_hw = np.rint(exact).astype(np.int64)
        return vth_hw, vth_hw.astype(np.float64)
    if granularity == V_PER_WEIGHT_UNIT:
        theta = np.rint(exact).astype(np.int64)
        return theta - 1, theta.astype(np.float64)
    vth_hw = np.rint(exact - granularity / V_PER_WEIGHT_UNIT).astype(np.int64)
    return vth_hw, vth_hw + granularity / V_PER_WEIGHT_UNIT


def _reset_mant(spec: LayerSpec, scale: float) -> np.ndarray:
    if spec.reset != "subtract" or spec.vth is None:
        return np.zeros((), dtype=np.int64)
    return np.rint(np.asarray(spec.reset_amount, dtype=np.float64) * scale).astype(np.int64)


def _violations(spec: LayerSpec, numerics, fixed: _Fixed, scale: float, headroom: str) -> list[str]:
    """The integer constraints the layer breaks at ``scale`` (empty: feasible)."""
    ints = _integers(spec, numerics, fixed, scale)
    broken = []
    hi, lo = _current_bounds(spec, fixed, ints)
    if max(float(hi.max(initial=0)), -float(lo.min(initial=0))) > A_LIMIT:
        broken.append("u_wrap")
    if headroom == "uv":
        bias = _bias_total_wu(fixed, ints)
        window = spec.timesteps * max(float((hi + bias).max(initial=0)), -float((lo + bias).min(initial=0)))
        if window > V_LIMIT_WEIGHT_UNITS:
            broken.append("v_saturation")
    if headroom == "probe" and scale * PROBE_V_MARGIN * spec.v_needed > V_LIMIT_WEIGHT_UNITS:
        broken.append("v_probe")
    mant = numerics.bias_mant_range
    if ints["bias_mant"].size and (ints["bias_mant"].min() < mant.start or ints["bias_mant"].max() > mant.stop - 1):
        broken.append("bias_range")
    vth_hw, _ = _thresholds(spec, scale, _granularity(spec))
    if vth_hw is not None and int(np.max(vth_hw)) > numerics.vth_mant_max:
        broken.append("threshold_range")
    if int(np.max(_reset_mant(spec, scale))) > numerics.vth_mant_max:
        broken.append("reset_range")
    return broken


def _granularity(spec: LayerSpec) -> int:
    """v's grid: 64 v units in a non-leaky layer (currents, biases at bias_exp >= 6, resets: all << 6), else 1."""
    return V_PER_WEIGHT_UNIT if spec.dv == 0 else 1


# --------------------------------------------------------------------------- the choice


def quantize_layer(spec: LayerSpec, numerics, *, weight_fill: float = 1.0, headroom: str = "u",
                   plain: bool = False, recorded_scale: float | None = None) -> LayerQuantization:  # fmt: skip
    """Choose the layer's scale and every integer (module docstring: the identities and the search).

    Args:
        spec: The layer's float parameters.
        numerics: The target's :class:`~inflor_deploy.targets.Numerics`.
        weight_fill: Fraction of each weight grid the largest weight may use.
        headroom: ``"u"`` (u never wraps), ``"probe"`` (also ``spec.v_needed`` fits in
            half of v's range) or ``"uv"`` (v never saturates).
        plain: A plain Loihi layer: no bias source, the target's preferred ``bias_exp``,
            no negative weight exponent (``QuantizationOptions.plain_layers``).
        recorded_scale: The scale a fine-tuned checkpoint was trained at
            (``QuantizationOptions.layer_scales``, :mod:`inflor_deploy.grid`): used
            as given, with the plain layout the fine-tuning forward computes
            (weight exponent 0, the preferred ``bias_exp``, no bias source).

    Raises:
        LayerQuantizationError: Every weight is zero, or a recorded scale no
            longer fits the target (a weight would be clipped, the bias or a
            threshold is out of range, or the headroom fails).
    """
    synapses = spec.synapses
    magnitudes = [float(np.abs(s.effective).max(initial=0)) for s in synapses]
    if not any(magnitudes) and not np.any(spec.bias):
        raise LayerQuantizationError(f"layer {spec.name!r}: every incoming weight is zero; nothing to quantize")
    grids = [_grid(numerics, s) for s in synapses]
    usable = [weight_fill * g[3] for g in grids]
    exp_max = numerics.weight_exp_max
    limits: dict[str, float] = {}

    fills = [u / m for u, m in zip(usable, magnitudes) if m > 0]
    if fills:
        limits["fill"] = max(fills)
        # The synapse with the largest weights needs the largest exponent: at most weight_exp_max.
        limits["weight_exp"] = min(u * 2**exp_max / m for u, m in zip(usable, magnitudes) if m > 0)

    # Float bounds per unit of scale (a current of scale s is s times these).
    hi = np.zeros(spec.shape)
    lo = np.zeros(spec.shape)
    for syn in synapses:
        top, bottom = _extremes(syn.effective, *_wide_range(syn))
        hi, lo = hi + _per_channel(top, spec.shape), lo + _per_channel(bottom, spec.shape)
    bias = np.asarray(spec.bias, dtype=np.float64)
    bias_max = float(np.abs(bias).max(initial=0))
    mant = numerics.bias_mant_range
    mant_max = min(-mant.start, mant.stop - 1)
    # Without bias sources the bias stays at the preferred exponent: a plain chain of layers (NetX's fixed bias_exp).
    largest_bias_exp = (1 << numerics.bias_exp_bits) - 1 if not plain else numerics.bias_exp
    own_bias_reach = mant_max * 2.0 ** (largest_bias_exp - 6)  # wu the neuron's bias alone can hold

    def headroom_limits(with_bias_source: bool) -> dict[str, float]:
        out = {}
        top = hi + (np.maximum(bias, 0) if with_bias_source else 0)
        bottom = lo + (np.minimum(bias, 0) if with_bias_source else 0)
        bound = max(float(top.max(initial=0)), -float(bottom.min(initial=0)))
        if bound > 0:
            out["u_wrap"] = A_LIMIT / bound
        window = spec.timesteps * max(float((hi + bias).max(initial=0)), -float((lo + bias).min(initial=0)))
        if headroom == "uv" and window > 0:
            out["v_saturation"] = V_LIMIT_WEIGHT_UNITS / window
        if headroom == "probe" and spec.v_needed > 0:
            out["v_probe"] = V_LIMIT_WEIGHT_UNITS / (PROBE_V_MARGIN * spec.v_needed)
        return out

    if spec.vth is not None:
        limits["threshold_range"] = (numerics.vth_mant_max + 0.49) / float(np.max(spec.vth))
        if spec.reset == "subtract":
            limits["reset_range"] = (numerics.vth_mant_max + 0.49) / float(np.max(spec.reset_amount))
    plain_limits = {**limits, **headroom_limits(False)}
    if bias_max > 0:
        plain_limits["bias_range"] = (own_bias_reach + 0.49) / bias_max
    use_source = False
    if not plain and bias_max > 0 and min(plain_limits, key=plain_limits.get) == "bias_range":
        # The neuron's bias alone caps the scale: carry the coarse part through a bias source instead.
        lo_b, hi_b, step_b = numerics.weight_grid("dense", _bias_source_bits(spec, numerics))
        reach = min(-lo_b, hi_b) * 2.0**exp_max + own_bias_reach
        with_source = {**limits, **headroom_limits(True), "bias_range": reach / bias_max}
        if min(with_source.values()) > plain_limits["bias_range"]:
            use_source, limits = True, with_source
    if not use_source:
        limits = plain_limits
    binding = min(limits, key=limits.get)
    s0 = limits[binding]
    if recorded_scale is not None:
        # A recorded grid is what the fine-tuned forward computed, saturations included: only the
        # hard bounds apply, not the probe guard (measured on the model before fine-tuning).
        return _recorded(spec, numerics, float(recorded_scale), "u" if headroom == "probe" else headroom, limits)

    # Exponents, fixed at s0 (module docstring: the search).
    # A headroom cap below s_fill leaves the weights coarse at exponent 0: a negative exponent (Lava's
    # truncating right shift) gives their mantissas the grid back (module docstring: exponents).
    weight_exps = tuple(
        min(_smallest_exponent(s0 * m, g[2], u, exp_max, 0 if plain else numerics.weight_exp_min), exp_max) if m > 0 else 0
        for m, g, u in zip(magnitudes, grids, usable)
    )
    bias_source_exp = None
    if use_source:
        lo_b, hi_b, step_b = numerics.weight_grid("dense", _bias_source_bits(spec, numerics))
        bias_source_exp = min(_smallest_exponent(s0 * bias_max, step_b, min(-lo_b, hi_b), exp_max), exp_max)
    residual_max = bias_max * s0 if bias_source_exp is None else step_b * 2.0**bias_source_exp
    bias_exp = numerics.bias_exp
    if residual_max > mant_max * 2.0 ** (bias_exp - 6):
        bias_exp = largest_bias_exp
    fixed = _Fixed(weight_exps, bias_exp, bias_source_exp)

    scale = _snap_identities(spec, numerics, fixed, s0)
    broken = _violations(spec, numerics, fixed, scale, headroom)
    if broken:
        # Rounding pushed an integer bound past its limit: the largest scale that respects them all.
        scale = _snap_identities(spec, numerics, fixed, _largest_feasible(spec, numerics, fixed, scale, headroom))
        binding = broken[0]
    return _finish(spec, numerics, fixed, scale, binding, limits)


def _recorded(spec: LayerSpec, numerics, scale: float, headroom: str, limits: dict[str, float]) -> LayerQuantization:
    """The integers at a recorded scale in the plain layout, refused (never shrunk) when they do not fit.

    Each synapse takes the smallest exponent >= 0 at which its mantissas fit
    its grid (0 for a chain's synapses; a residual block's identity shortcut,
    worth ``s`` wu per spike, needs ``log2(s) - 6`` for s above 127). Weights
    on the grid of exponent k are multiples of ``2^k`` wu, so a smaller
    exponent that also fits delivers the same currents.
    """
    exps = []
    for syn in spec.synapses:
        lo, hi, step, top = _grid(numerics, syn)
        magnitude = float(np.abs(syn.effective).max(initial=0)) * scale
        exps.append(min(_smallest_exponent(magnitude, step, top, numerics.weight_exp_max), numerics.weight_exp_max))
    fixed = _Fixed(tuple(exps), numerics.bias_exp, None)
    for syn, k in zip(spec.synapses, exps):
        lo, hi, step, _ = _grid(numerics, syn)
        exact = syn.effective * scale / 2.0**k
        if exact.size and (exact.min() < lo - step / 2 or exact.max() > hi + step / 2):
            raise LayerQuantizationError(
                f"layer {spec.name!r}: at the recorded scale {scale:g} the weights of {syn.name!r} reach "
                f"[{exact.min():.1f}, {exact.max():.1f}] at weight exponent {k}, beyond the target's [{lo}, {hi}]; the checkpoint was "
                "fine-tuned for another grid: fine-tune again for this target"
            )
    broken = _violations(spec, numerics, fixed, scale, headroom)
    if broken:
        raise LayerQuantizationError(
            f"layer {spec.name!r}: the recorded scale {scale:g} no longer fits the target ({', '.join(broken)}); "
            "fine-tune again from the original checkpoint (inflor-deploy finetune) for this target"
        )
    return _finish(spec, numerics, fixed, scale, "recorded", limits)


def _snap_identities(spec: LayerSpec, numerics, fixed: _Fixed, scale: float) -> float:
    """The largest scale <= ``scale`` at which the first identity shortcut's weight is exactly on its grid."""
    for syn, k in zip(spec.synapses, fixed.weight_exps):
        if not syn.identity:
            continue
        _, _, step, _ = _grid(numerics, syn)
        value = float(np.abs(syn.effective).max())  # spike_value (times a gain): the diagonal
        unit = step * 2.0**k
        steps = math.floor(scale * value / unit * (1 + 1e-12))
        if steps < 1:
            return scale
        return steps * unit / value
    return scale


def _largest_feasible(spec: LayerSpec, numerics, fixed: _Fixed, scale: float, headroom: str) -> float:
    """Bisection for the largest feasible scale below the infeasible ``scale`` (module docstring: the search).

    Invariant: ``low`` is feasible (0 is: every integer is 0), ``high`` is not.
    At most :data:`SEARCH_STEPS` halvings; it stops early once the interval is
    below a float's relative resolution, where nothing is left to find.
    """
    low, high = 0.0, scale
    # A first guess just below the rounding slack usually lands feasible, so few halvings remain.
    guess = scale * (1 - 1e-3)
    if not _violations(spec, numerics, fixed, guess, headroom):
        low = guess
    for _ in range(SEARCH_STEPS):
        if high - low <= high * 1e-15:
            break
        middle = 0.5 * (low + high)
        if _violations(spec, numerics, fixed, middle, headroom):
            high = middle
        else:
            low = middle
    return low


def _finish(spec: LayerSpec, numerics, fixed: _Fixed, scale: float, binding: str,
            limits: dict[str, float]) -> LayerQuantization:  # fmt: skip
    """The integers at the chosen scale, and their bounds."""
    ints = _integers(spec, numerics, fixed, scale)
    synapses = tuple(
        QuantizedSynapse(
            name=s.name, source=s.source, kind=s.kind, weight=w.astype(np.int32), weight_exp=k,
            weight_bits=s.weight_bits, sparse=s.sparse, stride=s.stride, padding=s.padding, groups=s.groups,
        )  # fmt: skip
        for s, k, w in zip(spec.synapses, fixed.weight_exps, ints["weights"])
    )
    bias_source = None
    if ints["coarse"] is not None:
        bias_source = QuantizedSynapse(
            name=f"{spec.name}.bias_current", source=f"{spec.name}.bias_source", kind="dense",
            weight=ints["coarse"].reshape(-1, 1).astype(np.int32), weight_exp=fixed.bias_source_exp,
            weight_bits=_bias_source_bits(spec, numerics),
        )  # fmt: skip
    hi, lo = _current_bounds(spec, fixed, ints)
    bias = _bias_total_wu(fixed, ints)
    granularity = _granularity(spec)
    vth_hw, threshold = _thresholds(spec, scale, granularity)
    return LayerQuantization(
        scale=float(scale),
        scale_limited_by=binding,
        scale_limits={k: float(v) for k, v in limits.items()},
        synapses=synapses,
        bias_mant=ints["bias_mant"].astype(np.int32),
        bias_exp=fixed.bias_exp,
        bias_source=bias_source,
        vth_hw=vth_hw,
        reset_mant=_reset_mant(spec, scale),
        v_granularity=granularity,
        threshold=threshold,
        u_bound=int(max(hi.max(initial=0), -lo.min(initial=0))),
        v_window_bound=int(spec.timesteps * max(float((hi + bias).max(initial=0)), -float((lo + bias).min(initial=0)))),
    )
