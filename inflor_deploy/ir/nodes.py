"""IR nodes: small frozen dataclasses, one per operation, equations in docstrings.

Conventions shared by every node:

* Shapes are per sample, without batch or time: an image is ``(C, H, W)``,
  a vector ``(N,)``. Each node produces one tensor named like the node.
* ``sources`` names the nodes whose outputs feed this one. Synapse-like
  nodes have exactly one source; neurons and the accumulator sum the
  currents of all their sources (a residual block is a neuron with two).
* Time is implicit: every node runs once per timestep t = 0..T-1. Only
  :class:`Neuron`, :class:`Accumulator` and their fixed-point twins hold
  state across timesteps.

Float nodes come out of the ONNX importer; the passes rewrite them until
:class:`QuantizeFixedPoint <inflor_deploy.passes.quantize.QuantizeFixedPoint>`
replaces them with the ``FixedPoint*`` nodes, after which all arithmetic is
integer (see the fixed-point node docstrings for the exact update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ResetMode = Literal["subtract", "zero", "none"]
InputEncoding = Literal["direct", "sequence"]
INPUT_ENCODINGS = ("direct", "sequence")
#: How a neuron compares H with its threshold: ``>=`` (InfLoR, SpikingJelly) or ``>`` (snnTorch, Loihi).
Compare = Literal[">=", ">"]
#: When a spike's reset applies: at its own step, or at the next one (snnTorch's ``reset_delay=True``).
ResetTiming = Literal["same_step", "next_step"]
#: The float operation order of a neuron's charge H (see :class:`Neuron`).
Charge = Literal["affine", "decay_divide_input", "decay_divide", "decay_multiply_input", "decay_multiply"]
#: What the output layer reports as class scores (see :class:`Accumulator`).
Readout = Literal["mean_current", "mean_membrane", "spike_count"]

RESET_MODES: tuple[str, ...] = ("subtract", "zero", "none")
COMPARES: tuple[str, ...] = (">=", ">")
RESET_TIMINGS: tuple[str, ...] = ("same_step", "next_step")
CHARGES: tuple[str, ...] = ("affine", "decay_divide_input", "decay_divide", "decay_multiply_input", "decay_multiply")
READOUTS: tuple[str, ...] = ("mean_current", "mean_membrane", "spike_count")

#: Name of the Input node the front ends create; also the ONNX graph input's name.
INPUT_NAME = "image"
SynapseKind = Literal["dense", "conv"]


@dataclass(frozen=True, eq=False)
class Node:
    """Base of every IR node.

    Attributes:
        name: Unique name; also the name of the node's output tensor.
        sources: Names of the nodes feeding this one.
    """

    name: str
    sources: tuple[str, ...]


# --------------------------------------------------------------------------- float nodes


@dataclass(frozen=True, eq=False)
class Input(Node):
    """The network's input: one frame per timestep.

    ``encoding = "direct"`` (the paper's encoding of static images): the
    same analog frame ``x`` (shape ``shape``) at every step::

        X[t] = x                      t = 0..T-1

    ``encoding = "sequence"`` (event data, e.g. the paper's CIFAR10-DVS): a
    new frame at every step, ``x`` of shape ``[T, *shape]`` (binary events
    or small integer counts)::

        X[t] = x[t]                   t = 0..T-1

    Attributes:
        shape: ``(C, H, W)`` of one frame.
        encoding: ``"direct"`` or ``"sequence"``.
        value_range: ``(lo, hi)``: the declared range of every input value,
            in the units the graph computes with. The quantizer plans its
            worst cases (the u-wrap headroom) for it, and every backend
            refuses inputs outside it.
        pixel_levels: Raw 8-bit pixel steps per unit of input: 255 for
            pixels in [0, 1] (a pixel ``p`` of 0..255 is ``p / 255``), 1 for
            raw 0..255 pixels, None when the inputs are not pixels. uint8
            data is divided by it; without it uint8 data is refused.
        grade_scale: Set by quantization: the input reaches the chip as integer
            graded spikes ``round(x * grade_scale)`` (a 32-bit graded payload);
            None while float.
    """

    shape: tuple[int, ...] = ()
    grade_scale: float | None = None
    encoding: InputEncoding = "direct"
    value_range: tuple[float, float] = (0.0, 1.0)
    pixel_levels: int | None = 255


@dataclass(frozen=True, eq=False)
class Normalize(Node):
    """Per-channel input normalization, as torchvision's ``Normalize`` applies it before the model.

    ``Y[c, i, j] = (X[c, i, j] - mean[c]) / std[c]``

    A node rather than fields of :class:`Input`: it is arithmetic the
    trained model sees (the paper normalizes images to mean 0, variance 1
    per channel), so it runs in the float runner and in ONNX (``Sub``,
    ``Div``) like any other op, and ``FoldInputNormalization`` folds it
    exactly into the synapses that read it (a pass with a checked
    contract), after which the chip receives the raw pixels. The Input
    keeps describing only what arrives: its range and encoding.

    Attributes:
        mean: float32 ``[C]``.
        std: float32 ``[C]``, every entry > 0.
    """

    mean: np.ndarray = field(default=None)
    std: np.ndarray = field(default=None)


@dataclass(frozen=True, eq=False)
class Conv2d(Node):
    """2-D cross-correlation (PyTorch's ``Conv2d``).

    ``Y[o, i, j] = bias[o] (or bias[o, i, j]) + sum_{c, a, b} W[o, c, a, b] * X[g(o)*C/G + c, s*i + a - p, s*j + b - p]``

    Attributes:
        weight: float32 ``[O, C/groups, kh, kw]``.
        bias: float32 ``[O]``, or ``[O, OH, OW]`` (one value per output
            position: what folding an input normalization into a
            zero-padded conv gives, since border outputs see fewer taps),
            or None.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)``, zeros on both sides.
        groups: Channel groups.
    """

    weight: np.ndarray = field(default=None)
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1


@dataclass(frozen=True, eq=False)
class Linear(Node):
    """Fully connected layer on the flattened (C-major) input.

    ``Y[o] = bias[o] + sum_i W[o, i] * flatten(X)[i]``

    Attributes:
        weight: float32 ``[O, I]``.
        bias: float32 ``[O]`` or None.
    """

    weight: np.ndarray = field(default=None)
    bias: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class BatchNorm(Node):
    """Batch normalization at inference (also tdBN: gamma = lambda * alpha * Vth).

    ``Y[c] = gamma[c] * (X[c] - mean[c]) / sqrt(var[c] + eps) + beta[c]``
    """

    gamma: np.ndarray = field(default=None)
    beta: np.ndarray = field(default=None)
    mean: np.ndarray = field(default=None)
    var: np.ndarray = field(default=None)
    eps: float = 1e-5


@dataclass(frozen=True, eq=False)
class AvgPool2d(Node):
    """Average pooling without padding.

    ``Y[c, i, j] = mean_{a, b < k} X[c, s*i + a, s*j + b]``
    """

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)


@dataclass(frozen=True, eq=False)
class Flatten(Node):
    """``Y = reshape(X, (-1,))`` in C-major order (channel slowest)."""


@dataclass(frozen=True, eq=False)
class Add(Node):
    """Elementwise sum of spike trains (or graded inputs) that a synapse reads.

    ``Y = X_1 + X_2 + ... + X_k`` (left to right), all sources of one shape.
    A neuron sums its own sources, so an Add appears only where the sum feeds
    a synapse, a pooling or a Flatten (e.g. SEW-ResNet's ADD connection);
    ``DistributeJoins`` rewrites it into one synapse per source.
    """


@dataclass(frozen=True, eq=False)
class Concat(Node):
    """Concatenation along the channel axis (``torch.cat(dim=1)`` per sample).

    ``Y[c] = X_i[c - o_i]`` for ``o_i <= c < o_i + C_i``, ``o_i = C_1 + ... + C_{i-1}``;
    the sources agree on every dimension but the first. ``DistributeJoins``
    splits the synapse that reads it into one synapse per source.
    """


@dataclass(frozen=True, eq=False)
class Neuron(Node):
    """A spiking neuron layer; its input current is the sum of its sources.

    One node expresses the discrete update of every supported framework
    neuron exactly (the adapters only read parameters). Per timestep, with
    ``X[t] = sum(sources)[t]`` and ``U[-1] = v_reset``::

        H[t] = v_reset + tau * (U[t-1] - v_reset) + gain * X[t]       (charge; float order: ``charge``)
        O[t] = 1 if phi(H[t]) >= vth else 0      compare ">="  (InfLoR, SpikingJelly)
        O[t] = 1 if phi(H[t]) >  vth else 0      compare ">"   (snnTorch, Loihi)
                                                  (phi = MPR if mpr, else the identity)
      reset_timing "same_step" (InfLoR, SpikingJelly):
        U[t] = H[t] - reset_amount * O[t]        reset "subtract" (soft)
        U[t] = v_reset if O[t] else H[t]         reset "zero"     (hard, to v_reset)
        U[t] = H[t]                              reset "none"
      reset_timing "next_step" (snnTorch ``reset_delay=True``; charge "affine", v_reset = 0):
        R[t] = O[t-1]  (the comparison of U[t-1]; R[0] = 0)
        H[t] = tau * U[t-1] + gain * X[t] - R[t] * reset_amount     subtract (the amount is not decayed)
        H[t] = tau * ((1 - R[t]) * U[t-1]) + gain * X[t]            zero
        H[t] = tau * U[t-1] + gain * X[t]                           none
        U[t] = H[t]                              (the state is the pre-reset membrane, snnTorch's ``mem``)

    ``charge`` fixes the float operations that compute H, in the order the
    framework performs them (the math above is the same for all; float32
    rounding is not), so that the float IR reproduces a framework's spikes
    bit for bit:

    =======================  ==============================================  ===========================
    charge                   float32 operations                              tau, gain from ``decay``
    =======================  ==============================================  ===========================
    ``affine``               ``tau * U + gain * X`` (a factor 1 is skipped)  fields as given
    ``decay_divide_input``   ``U + (X - (U - v_reset)) / decay``             ``1 - 1/decay``, ``1/decay``
    ``decay_divide``         ``U - (U - v_reset) / decay + X``               ``1 - 1/decay``, 1
    ``decay_multiply_input`` ``U + (X - (U - v_reset)) * decay``             ``1 - decay``, ``decay``
    ``decay_multiply``       ``U - (U - v_reset) * decay + X``               ``1 - decay``, 1
    =======================  ==============================================  ===========================

    The ``decay_*`` forms are SpikingJelly's ``LIFNode`` (divide by its tau)
    and ``ParametricLIFNode`` (multiply by its frozen ``sigmoid(w)``), with
    ``decay_input`` True (``*_input``) or False; ``tau`` and ``gain`` must
    equal the values :func:`decay_coefficients` derives (build them with
    :func:`decay_fields`), so that passes and the quantizer read the math
    from ``tau`` and ``gain`` alone. Every other scalar (``tau``, ``gain``,
    ``vth``, ``v_reset``, amounts) enters float32 arithmetic rounded to
    float32, as torch rounds a Python scalar.

    How the frameworks map (DESIGN.md section 6; amounts are what a subtract removes):

    * InfLoR SRIF (MPR: ``mpr=True``): affine, tau 1, ``>=``, subtract the
      spike value 1 (NOT Vth); IF / LIF: affine, tau 1 / tau, ``>=``, zero.
    * SpikingJelly ``IFNode``: affine, tau 1, ``>=``; ``v_reset=None``:
      subtract Vth; ``v_reset=v``: zero, ``v_reset=v`` (also the initial state).
    * SpikingJelly ``LIFNode(tau=k)``: ``decay_divide_input`` (decay_input
      True) or ``decay_divide``, ``decay=k``, ``>=``, reset as ``IFNode``;
      ``ParametricLIFNode``: ``decay_multiply[_input]``, ``decay=sigmoid(w)``
      frozen at export.
    * snnTorch ``Leaky(beta=b, threshold=h)``: affine, tau b (clamped to
      [0, 1]), ``>``, next_step; "subtract" removes h (undecayed), "zero",
      "none"; ``spike_value`` = ``graded_spikes_factor``.

    Per-channel parameters: ``vth`` and ``reset_amount`` may be float64
    arrays of shape ``(C,)`` (C = the layer's first dimension: channels of
    a ``(C, H, W)`` layer, neurons of an ``(N,)`` one); :func:`per_channel`
    broadcasts them over a sample.

    The passes normalize every neuron for Loihi (``DelayedResetToSameStep``,
    ``ShiftResetToZero``, ``FoldInputGain``): afterwards H = tau * U + X,
    v_reset = 0, same-step reset.

    Attributes:
        vth: Threshold (float, or float64 ``(C,)``), above ``v_reset``.
        tau: Leak factor in [0, 1]; 1 is IF (no leak). U decays toward ``v_reset``.
        reset: ``"subtract"``, ``"zero"`` (hard reset to ``v_reset``) or ``"none"``.
        reset_amount: What a subtractive reset removes (float, or float64
            ``(C,)``, > 0). None means "the spike value" (InfLoR's soft reset
            subtracts the spike, 1, not Vth; SpikingJelly and snnTorch subtract
            Vth, which their adapters set here); ``SoftResetToSubtractive``
            makes it explicit. Ignored unless "subtract".
        mpr: Whether the Membrane Potential Rectifier phi precedes the
            comparison; ``FoldRectifierIntoThreshold`` removes it.
        spike_value: Magnitude of an emitted spike (1 in the paper; snnTorch's
            ``graded_spikes_factor``).
        gain: Input gain g in ``H = ... + g * X`` (SpikingJelly ``decay_input=True``: 1/tau).
        compare: ``">="`` or ``">"``.
        reset_timing: ``"same_step"`` or ``"next_step"`` (see above).
        v_reset: Reset target of a hard reset, initial membrane and the point
            the leak decays toward (SpikingJelly's ``v_reset``; 0 for a soft reset).
        charge: The float operation order of H (table above).
        decay: The ``decay_*`` forms' divisor (SpikingJelly tau, > 1) or
            multiplier (in (0, 1]); None for ``"affine"``.
    """

    vth: float | np.ndarray = 0.5
    tau: float = 1.0
    reset: ResetMode = "subtract"
    reset_amount: float | np.ndarray | None = None
    mpr: bool = False
    spike_value: float = 1.0
    gain: float = 1.0
    compare: Compare = ">="
    reset_timing: ResetTiming = "same_step"
    v_reset: float = 0.0
    charge: Charge = "affine"
    decay: float | None = None


def decay_coefficients(charge: str, decay: float) -> tuple[float, float]:
    """``(tau, gain)`` of a ``decay_*`` charge form (float64): the math its float operations compute.

    ``U + (X - (U - v_reset)) / k = v_reset + (1 - 1/k)(U - v_reset) + X/k``, and
    likewise for the other forms (see :class:`Neuron`).
    """
    if charge in ("decay_divide_input", "decay_divide"):
        rate = 1.0 / float(decay)
    elif charge in ("decay_multiply_input", "decay_multiply"):
        rate = float(decay)
    else:
        raise ValueError(f"charge {charge!r} has no decay coefficients; one of {CHARGES[1:]} has")
    return 1.0 - rate, (rate if charge.endswith("_input") else 1.0)


def decay_fields(charge: str, decay: float) -> dict[str, object]:
    """Keyword arguments ``charge, decay, tau, gain`` for a :class:`Neuron` with a ``decay_*`` charge.

    Example (SpikingJelly ``LIFNode(tau=2.0, decay_input=True)``)::

        Neuron("lif1", ("conv1",), vth=1.0, reset="zero", **decay_fields("decay_divide_input", 2.0))
    """
    tau, gain = decay_coefficients(charge, decay)
    return {"charge": charge, "decay": float(decay), "tau": tau, "gain": gain}


def per_channel(value, ndim: int):
    """A scalar as is; a per-channel ``(C,)`` array reshaped to ``(C, 1, ..., 1)``.

    The result broadcasts over one sample of an ``ndim``-dimensional layer
    (``(C, H, W)``: ndim 3; ``(N,)``: ndim 1), and over a leading batch axis.
    """
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.reshape((value.shape[0],) + (1,) * (ndim - 1))
    return value


def plain(value):
    """A node parameter as JSON: a number, or a list for a per-channel array."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True, eq=False)
class Accumulator(Node):
    """The non-spiking output layer; ``readout`` says what its class score is.

    With ``X[t] = sum(sources)[t]`` and ``A[-1] = 0``:

    * ``"mean_current"`` (InfLoR's output, the mean over T of a final linear
      layer): ``A[t] = A[t-1] + X[t]``; score ``A[T-1] / T``.
    * ``"mean_membrane"`` (the mean membrane of a non-spiking output layer,
      snnTorch's and SpikingJelly's non-spiking Leaky/LIF readout, IF when
      tau = 1): ``A[t] = tau * A[t-1] + X[t]`` (float32: ``tau * A + X``);
      score ``(1/T) * sum_t A[t]``.
    * ``"spike_count"`` (snnTorch's common readout): every source is a
      spiking layer, added through an identity synapse, so
      ``A[t] = A[t-1] + spike_value * O[t]``; score ``A[T-1]``, the count.

    Attributes:
        readout: ``"mean_current"``, ``"mean_membrane"`` or ``"spike_count"``.
        tau: Leak of ``"mean_membrane"`` in (0, 1]; 1 for the other readouts.
    """

    readout: Readout = "mean_current"
    tau: float = 1.0


# --------------------------------------------------------------------------- fixed-point nodes


@dataclass(frozen=True, eq=False)
class FixedPointSynapse(Node):
    """An integer connection into one fixed-point neuron layer (Lava Dense, Sparse or Conv).

    The current it delivers at step t is the integer
    ``a[t] = (W_q * x[t - delay]) << weight_exp`` (dense: matrix product on
    the flattened C-major source; conv: the cross-correlation of
    :class:`Conv2d`), where x is the source's output: binary spikes, or
    graded input values. ``W_q`` are ``weight_bits``-bit mantissas and
    ``weight_exp >= 0`` their shared exponent (Lava's ``weight_exp``; it lets a
    layer's synapses of very different magnitudes share one scale, e.g. an
    identity shortcut beside a conv). Activations carry no bias; biases live
    in the target neuron.

    Lava delivers the exact sum ``S = (W_q * x) << weight_exp`` wrapped
    (``wrap_b(z) = (z + 2^(b-1)) mod 2^b - 2^(b-1)``; read in lava-nc 0.10.0,
    table in :mod:`inflor_deploy.backends.sim.lava_arith`)::

        conv (Lava Conv):          a = wrap_24(S)        (|S| >= 2^31: the int32 cast gives
                                                          -2^31, so a = 0; weight_exp = 0)
        dense, sparse, delayed,    a = wrap_32(S)        (wrap_(32+e)(S) when the Lava
        exponent or pruned conv                          encoding's exponent e < 0 and
                                                          Lava sums in int32: graded Dense
                                                          or Sparse, DelaySparse)

    The quantizer's u headroom keeps ``|S| < 2^17``, where every wrap is
    the identity; the integer backends model the wraps for any input.

    Weight grids (``weight_bits`` = b; 8 is Lava's default): dense weights
    are multiples of ``2^(9-b)`` in ``[-256, 255]`` (Lava's mixed-sign Dense
    truncation: even values in [-256, 254] for b = 8), conv weights integers
    in ``[-2^(b-1), 2^(b-1) - 1]``.

    Attributes:
        kind: ``"dense"`` or ``"conv"``.
        weight: int32; dense ``[O, I]``, conv ``[O, C/groups, kh, kw]``.
        stride, padding, groups: As :class:`Conv2d` (conv only).
        delay: Extra timesteps before delivery (aligns residual shortcuts).
        weight_exp: Shared exponent: the current is ``(W_q * x) << weight_exp`` (>= 0).
        weight_bits: Mantissa width b of the weights (the target's
            ``weight_bits`` or fewer: compression).
        sparse: Stored as its nonzero connections only (magnitude pruning):
            Lava Sparse/DelaySparse, and the resource and synop counts charge
            only the kept connections. The arithmetic is the same.
    """

    kind: SynapseKind = "dense"
    weight: np.ndarray = field(default=None)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    delay: int = 0
    weight_exp: int = 0
    weight_bits: int = 8
    sparse: bool = False


@dataclass(frozen=True, eq=False)
class FixedPointNeuron(Node):
    """A Loihi CUBA neuron layer in integer arithmetic (Lava ``PyLifModelBitAcc`` semantics).

    Per timestep, all integers, ``a[t] = sum of the source synapses' currents``::

        a = wrap_32(a)                                 # Lava's InPort sums in int32
        u = sign(u * (4096 - (du + 1))) * (|u * (4096 - (du + 1))| >> 12)
        u = wrap_32(u + wrap_32(a << 6))               # int32 arithmetic
        u = u - 2^24 if u > 2^23; u + 2^24 if u <= -2^23   # ONE wrap (a u beyond 3 * 2^23
                                                       # stays outside 24 bits, as in Lava)
        v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12)
        v = clip(v + u + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)
        s = v > (vth << 6)                             # strict, as the hardware
        v = v - (reset_mant << 6) where s              # reset = "subtract"
        v = 0 where s                                  # reset = "zero"
        (v unchanged)                                  # reset = "none"

    ``vth`` and ``reset_mant`` are one integer for the layer or one per
    channel (int64 ``(C,)``, broadcast with :func:`per_channel`); the scale is
    always per layer. The float layer it implements is recovered with
    ``scale``: one weight unit is ``1 / scale`` of the float current, one v
    unit ``1 / (64 * scale)``.

    Attributes:
        shape: The layer's shape (per sample).
        vth: Hardware threshold mantissa(s), 17-bit unsigned (compare against ``vth << 6``).
        reset: ``"subtract"``, ``"zero"`` or ``"none"``.
        reset_mant: Subtracted on a spike, in weight units (subtract only), 17-bit unsigned.
        du: Current decay, 12 bit; 4095 makes u the current step's input.
        dv: Voltage decay, 12 bit; 0 is IF (no leak).
        bias_mant: int32 ``shape``-sized bias mantissas (13-bit signed).
        bias_exp: Bias exponent (6 puts the mantissa in weight units).
        scale: Weight units per float unit of this layer's current.
    """

    shape: tuple[int, ...] = ()
    vth: int | np.ndarray = 0
    reset: ResetMode = "subtract"
    reset_mant: int | np.ndarray = 0
    du: int = 4095
    dv: int = 0
    bias_mant: np.ndarray = field(default=None)
    bias_exp: int = 6
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class FixedPointAccumulator(Node):
    """The output layer as a never-firing Loihi neuron, and its integer readout.

    Each step (du = 4095, so u is the step's input)::

        v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12)
        v = clip(v + (a << 6) + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)

    The integer readout ``R`` of a sample (int64; every backend must agree on
    it bit for bit) and the class score it stands for (``readout`` as the
    float :class:`Accumulator`'s):

    * ``"mean_current"``: ``R = v[T-1]``; score ``R / (64 * scale * T)``;
    * ``"mean_membrane"``: ``R = sum_{t<T} v[t]`` (the host reads v at every
      step of the sample's window); score ``R / (64 * scale * T)``;
    * ``"spike_count"``: ``R = v[T-1]``; score ``R / (64 * scale)``.

    Why: with the synapse's integers ``a[t] ~ scale * X[t]`` (bias in weight
    units), ``v[t] = 64 * scale * M[t]`` exactly when the leak factor
    ``(4096 - dv) / 4096`` equals tau and no decay truncates (IF: dv = 0);
    otherwise each step's decay truncates toward zero by less than one v
    unit, ``1 / (64 * scale)`` of a float unit. So ``sum_t v[t] / (64 * scale)``
    is ``sum_t M[t]``, and the mean divides by T. A count readout's identity
    synapse has weight ``scale * spike_value`` per spike, an integer.
    The wraps of a large ``a`` and ``u`` are the :class:`FixedPointNeuron`'s
    (``u`` is the step's ``a << 6`` after them).

    Attributes:
        shape: The layer's shape (per sample).
        bias_mant: int32 ``shape``-sized bias mantissas.
        bias_exp: Bias exponent (6: weight units).
        scale: Weight units per float unit of the layer's current.
        readout: ``"mean_current"``, ``"mean_membrane"`` or ``"spike_count"``.
        dv: Voltage decay, 12 bit (``"mean_membrane"`` with tau < 1; else 0).
    """

    shape: tuple[int, ...] = ()
    bias_mant: np.ndarray = field(default=None)
    bias_exp: int = 6
    scale: float = 1.0
    readout: Readout = "mean_current"
    dv: int = 0


def readout_divisor(node: "Accumulator | FixedPointAccumulator", timesteps: int) -> int:
    """What the readout's sum is divided by to give the class score: T, or 1 for a spike count."""
    return 1 if node.readout == "spike_count" else int(timesteps)


FLOAT_NODES = (Input, Normalize, Conv2d, Linear, BatchNorm, AvgPool2d, Flatten, Add, Concat, Neuron, Accumulator)
FIXED_POINT_NODES = (Input, FixedPointSynapse, FixedPointNeuron, FixedPointAccumulator)
STATEFUL_NODES = (Neuron, Accumulator, FixedPointNeuron, FixedPointAccumulator)
