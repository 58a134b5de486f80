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

ResetMode = Literal["subtract", "zero"]

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
    """The analog input frame, re-applied at every timestep (direct encoding).

    ``X[t] = image`` for t = 0..T-1.

    Attributes:
        shape: ``(C, H, W)``.
        grade_scale: Set by quantization: the input reaches the chip as integer
            graded spikes ``round(image * grade_scale)``; None while float.
    """

    shape: tuple[int, ...] = ()
    grade_scale: float | None = None


@dataclass(frozen=True, eq=False)
class Conv2d(Node):
    """2-D cross-correlation (PyTorch's ``Conv2d``).

    ``Y[o, i, j] = bias[o] + sum_{c, a, b} W[o, c, a, b] * X[g(o)*C/G + c, s*i + a - p, s*j + b - p]``

    Attributes:
        weight: float32 ``[O, C/groups, kh, kw]``.
        bias: float32 ``[O]`` or None.
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

    Per timestep, with ``X[t] = sum(sources)`` and ``U[-1] = 0``::

        H[t] = tau * U[t-1] + X[t]
        O[t] = 1 if phi(H[t]) >= vth else 0        (phi = MPR if mpr, else identity)
        U[t] = H[t] - reset_amount * O[t]          (reset = "subtract", soft reset)
        U[t] = H[t] * (1 - O[t])                   (reset = "zero", hard reset)

    Attributes:
        vth: Threshold, > 0, in the same units as H.
        tau: Leak factor in (0, 1]; 1 is IF (no leak).
        reset: ``"subtract"`` (SRIF) or ``"zero"`` (IF/LIF baselines).
        reset_amount: What a subtractive reset removes. None means "the spike
            value" (the paper's soft reset subtracts the spike, 1, not Vth);
            ``SoftResetToSubtractive`` makes it explicit. Ignored for "zero".
        mpr: Whether the Membrane Potential Rectifier phi precedes the
            comparison; ``FoldRectifierIntoThreshold`` removes it.
        spike_value: Magnitude of an emitted spike (1 in the paper).
    """

    vth: float = 0.5
    tau: float = 1.0
    reset: ResetMode = "subtract"
    reset_amount: float | None = None
    mpr: bool = False
    spike_value: float = 1.0


@dataclass(frozen=True, eq=False)
class Accumulator(Node):
    """The non-spiking output layer: it sums its input over time.

    ``A[t] = A[t-1] + sum(sources)[t]``, ``A[-1] = 0``; class score ``A[T-1] / T``.
    """


# --------------------------------------------------------------------------- fixed-point nodes


@dataclass(frozen=True, eq=False)
class FixedPointSynapse(Node):
    """An integer connection into one fixed-point neuron layer (Lava Dense or Conv).

    The current it delivers at step t is the integer
    ``a[t] = W_q * x[t - delay]`` (dense: matrix product on the flattened
    C-major source; conv: the cross-correlation of :class:`Conv2d`), where x
    is the source's output: binary spikes, or graded input values.
    Activations carry no bias; biases live in the target neuron.

    Attributes:
        kind: ``"dense"`` or ``"conv"``.
        weight: int32; dense ``[O, I]``, conv ``[O, C/groups, kh, kw]``.
        stride, padding, groups: As :class:`Conv2d` (conv only).
        delay: Extra timesteps before delivery (aligns residual shortcuts).
    """

    kind: SynapseKind = "dense"
    weight: np.ndarray = field(default=None)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    delay: int = 0


@dataclass(frozen=True, eq=False)
class FixedPointNeuron(Node):
    """A Loihi CUBA neuron layer in integer arithmetic (Lava ``PyLifModelBitAcc`` semantics).

    Per timestep, all integers, ``a[t] = sum of the source synapses' currents``::

        u = sign(u * (4096 - (du + 1))) * (|u * (4096 - (du + 1))| >> 12)
        u = wrap24(u + (a << 6))                       # (-2^23, 2^23], one wrap
        v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12)
        v = clip(v + u + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)
        s = v > (vth << 6)                             # strict, as the hardware
        v = v - (reset_mant << 6) where s              # reset = "subtract"
        v = 0 where s                                  # reset = "zero"

    The float layer it implements is recovered with ``scale``: one weight
    unit is ``1 / scale`` of the float current, one v unit ``1 / (64 * scale)``.

    Attributes:
        shape: The layer's shape (per sample).
        vth: Hardware threshold mantissa (compare against ``vth << 6``).
        reset: ``"subtract"`` or ``"zero"``.
        reset_mant: Subtracted on a spike, in weight units (subtract only).
        du: Current decay, 12 bit; 4095 makes u the current step's input.
        dv: Voltage decay, 12 bit; 0 is IF (no leak).
        bias_mant: int32 ``shape``-sized bias mantissas (13-bit signed).
        bias_exp: Bias exponent (6 puts the mantissa in weight units).
        scale: Weight units per float unit of this layer's current.
    """

    shape: tuple[int, ...] = ()
    vth: int = 0
    reset: ResetMode = "subtract"
    reset_mant: int = 0
    du: int = 4095
    dv: int = 0
    bias_mant: np.ndarray = field(default=None)
    bias_exp: int = 6
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class FixedPointAccumulator(Node):
    """The output accumulator as a never-firing Loihi neuron.

    ``v += (a << 6) + (bias_mant << bias_exp)`` each step (du = 4095, dv = 0,
    saturating at +-(2^23 - 1)); the class score is ``v / (64 * scale * T)``.
    """

    shape: tuple[int, ...] = ()
    bias_mant: np.ndarray = field(default=None)
    bias_exp: int = 6
    scale: float = 1.0


FLOAT_NODES = (Input, Conv2d, Linear, BatchNorm, AvgPool2d, Flatten, Add, Concat, Neuron, Accumulator)
FIXED_POINT_NODES = (Input, FixedPointSynapse, FixedPointNeuron, FixedPointAccumulator)
STATEFUL_NODES = (Neuron, Accumulator, FixedPointNeuron, FixedPointAccumulator)
