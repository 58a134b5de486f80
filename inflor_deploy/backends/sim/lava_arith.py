"""Lava's integer arithmetic where values get large: every wrap, as pure numpy functions.

Read in lava-nc 0.10.0 and pinned by ``tests/backends/lava/test_wraps.py``
(hand-built graphs driven past 2^23 and past the int32 range, compared with
Lava bit for bit). The integer reference, the fast simulator and the integer
ONNX all compute a synapse's current and a neuron's input with these rules,
so they agree with Lava for any input Lava can receive.

What travels (dtypes of the ports, ``magma/core/model/py/ports.py``)
--------------------------------------------------------------------
* The input ``RingBuffer`` (``proc/io/source.py``, fixed_pt) sends int32:
  a graded input value must fit 32 bits (the Loihi 2 graded payload).
* A connection's ``a_out`` is int32; ``send`` copies into the int32 channel
  (``self._array[idx][:] = data``): an int64 value is cut to 32 bits.
* ``PyInPortVectorDense.recv`` adds all connected channels onto
  ``np.zeros(shape, port dtype)``; LIF's ``a_in`` is int16, so the sum is
  int32 and wraps modulo 2^32.

Connections (``S`` is the exact integer ``sum_k W[o, k] * x[k]`` of the IR
weights; ``wrap_b(z) = (z + 2^(b-1)) mod 2^b - 2^(b-1)``)
---------------------------------------------------------------------------
Dense-like processes hold the 8-bit encoding ``m * 2^e`` of the weights that
:func:`encode_dense_weights` picks (``e = -1`` stores ``m = 2W`` for odd
mixed-sign weights).

=============  ===========  ==========================================  ============
process        input        Lava computes                               current
=============  ===========  ==========================================  ============
Conv           any          float64 sum (scipy ``convolve2d``, exact    ``wrap_24(c32(S))``
                            below 2^53), ``astype(int32)``, then
                            ``signed_clamp(x, 24)``
Dense          graded       ``weights.dot(x)`` in int32 (numpy sums in  ``wrap_32(S)``;
                            int64, stores int32), shift by e in int32   ``wrap_31(S)`` if e=-1
Dense          spikes       ``weights[:, s].sum(1)``: int64; shift in   ``wrap_32(S)``
                            int64; the int32 channel cuts it
DelayDense     spikes       int32 products (0/1 inputs: no overflow),   ``wrap_32(S)``
                            int64 sum and shift, ``+=`` into int32
DelaySparse    any          scipy int32 ``csr.dot`` (int32 sums),       ``wrap_32(S)``;
                            shift in int32, ``+=`` into int32           ``wrap_31(S)`` if e=-1
=============  ===========  ==========================================  ============

``c32`` is numpy's float64 -> int32 cast: exact below 2^31; beyond, x86's
conversion gives ``-2^31`` ("integer indefinite"), which ``wrap_24`` maps
to 0. The Lava backend never builds a DelayDense for graded input (its
int32 *products* would overflow before the sum); it uses DelaySparse there.

The neuron (``proc/lif/models.py``, ``AbstractPyLifModelFixed.subthr_dynamics``)
-------------------------------------------------------------------------------
With ``a`` the summed input (int32) and ``u, v`` int32 state::

    a  = wrap_32(sum of the currents)                   # the InPort's int32 sum
    u' = wrap_32(decay(u) + wrap_32(a << 6))            # np.left_shift and += on int32
    u  = u' - 2^24 if u' > 2^23;  u' + 2^24 if u' <= -2^23;  else u'   # ONE wrap, not modular
    v  = clip(wrap_32(wrap_32(decay(v) + u) + bias), -(2^23 - 1), 2^23 - 1)

The single wrap leaves ``|u| <= 2^31 - 2^24`` (u can stay outside 24 bits
when ``|u'| > 3 * 2^23``), and ``|decay(v)| <= 2^23``, ``|bias| <= 2^19``,
so the two int32 additions of v never actually wrap; they are written out
anyway so that the reference is a literal transcription.

Which wraps can be seen: ``wrap_32(a << 6)`` depends on ``a mod 2^26``
only, so the 31- and 32-bit wraps of Dense/Sparse currents and of the
InPort's sum never change u (they are modelled anyway, literally). What
changes spikes and v is the Conv's 24-bit wrap and its int32 cast, the
int32 wrap of ``a << 6`` (``|a| >= 2^25``) and of ``decay(u) + (a << 6)``,
and the single 24-bit wrap of u (``tests/backends/lava/test_wraps.py``
shows each against Lava).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n

__all__ = [
    "CONV_WRAP_BITS",
    "FLOAT64_EXACT",
    "INT32_MIN",
    "INT32_LIMIT",
    "LavaProcess",
    "SynapseArithmetic",
    "conv_current",
    "encode_dense_weights",
    "lava_current",
    "synapse_arithmetic",
    "weight_reach",
    "wrap",
]

LavaProcess = Literal["Conv", "Dense", "DelayDense", "DelaySparse"]

#: Lava's fixed_pt Conv wraps its output to 24 signed bits (``PyConvModelFixed.clamp_precision``).
CONV_WRAP_BITS = 24
#: Magnitude from which the float64 -> int32 cast of a Conv output is out of range.
INT32_LIMIT = 2**31
#: What numpy's float64 -> int32 cast gives out of range on x86-64.
INT32_MIN = -(2**31)
#: Lava's Conv sums in float64: exact while every partial sum stays below this.
FLOAT64_EXACT = 2**53


class LavaArithmeticError(InflorError):
    """A value no integer backend can reproduce Lava on (the message names the synapse and the fix)."""


def wrap(x, bits: int):
    """Two's complement wrap into ``[-2^(bits-1), 2^(bits-1))``: ``(x + 2^(b-1)) mod 2^b - 2^(b-1)``.

    Works on int64 numpy arrays and torch tensors (both floor the modulo).
    """
    half = 1 << (bits - 1)
    return (x + half) % (2 * half) - half


def conv_current(exact_sum):
    """What Lava's fixed_pt Conv delivers for the exact sum: ``wrap_24(c32(S))`` (module docstring)."""
    if isinstance(exact_sum, np.ndarray):
        cast = np.where(np.abs(exact_sum) >= INT32_LIMIT, INT32_MIN, exact_sum)
    else:  # torch
        import torch

        cast = torch.where(exact_sum.abs() >= INT32_LIMIT, torch.full_like(exact_sum, INT32_MIN), exact_sum)
    return wrap(cast, CONV_WRAP_BITS)


def encode_dense_weights(weight: np.ndarray) -> tuple[np.ndarray, str, int]:
    """Weights, sign mode and ``weight_exp`` with which Lava's fixed_pt Dense/Sparse delivers ``W @ x`` exactly.

    Lava's bit-accurate Dense (and Sparse) clips and truncates its weights
    on the first step (``clip_weights(w, mode, 8)`` then
    ``truncate_weights(w, mode, 8)``) and shifts the accumulated current by
    ``weight_exp``. The encodings tried, first fit wins, with ``m = W >> e``
    required exact for ``e = 0..7``:

    * EXCITATORY, ``0 <= m <= 255``: kept as is;
    * INHIBITORY, ``-255 <= m <= 0``: kept as is (note: -256 is not);
    * MIXED, ``m`` even in ``[-256, 254]``: kept as is (the floored bit is 0);
    * MIXED with ``2W`` and ``weight_exp = -1`` for any ``W`` in [-128, 127]:
      ``(2W @ x) >> 1 == W @ x`` because the sum is even.

    Returns:
        ``(weights, sign mode name, weight_exp)``.

    Raises:
        LavaArithmeticError: No encoding is exact (e.g. an odd weight of 201 in a mixed-sign matrix).
    """
    w = np.asarray(weight, dtype=np.int64)
    for e in range(8):
        if e and np.any(w % (1 << e)):
            break
        m = w >> e
        lo, hi = int(m.min(initial=0)), int(m.max(initial=0))
        if lo >= 0 and hi <= 255:
            return m, "EXCITATORY", e
        if hi <= 0 and lo >= -255:
            return m, "INHIBITORY", e
        if lo >= -256 and hi <= 254 and not np.any(m % 2):
            return m, "MIXED", e
        if e == 0 and lo >= -128 and hi <= 127:
            return 2 * m, "MIXED", -1
    raise LavaArithmeticError(
        f"weights in [{int(w.min())}, {int(w.max())}] have no exact Lava Dense encoding "
        "(8-bit mantissa, sign mode, weight_exp 0..7); re-quantize the layer"
    )


def lava_process(node: n.FixedPointSynapse, graded: bool) -> LavaProcess:
    """The Lava Process a synapse runs on (the Lava backend builds exactly this one).

    Conv without delay -> ``Conv``; a delayed conv -> ``DelaySparse`` (its
    exact sparse matrix; Conv has no delays); dense -> ``Dense``, or with a
    delay ``DelayDense`` for spikes and ``DelaySparse`` for graded input
    (DelayDense multiplies in int32, so graded products could overflow).
    """
    if node.delay:
        return "DelayDense" if node.kind == "dense" and not graded else "DelaySparse"
    return "Conv" if node.kind == "conv" else "Dense"


@dataclass(frozen=True)
class SynapseArithmetic:
    """How Lava turns a synapse's exact sum into the current it delivers.

    Attributes:
        process: The Lava Process (:func:`lava_process`).
        graded: Whether its input is the graded Input (else binary spikes).
        weight_exp: The Dense encoding's exponent (None for Conv, or when no
            encoding exists: Lava refuses such a synapse, the simulators use 0).
        wrap_bits: The current is ``wrap_<wrap_bits>(S)`` (Conv: of ``c32(S)``).
    """

    process: LavaProcess
    graded: bool
    weight_exp: int | None
    wrap_bits: int

    @property
    def limit(self) -> int:
        """The current equals the exact sum whenever ``-limit <= S < limit``."""
        return 1 << (self.wrap_bits - 1)

    def can_wrap(self, bound: int) -> bool:
        """Whether a sum of magnitude up to ``bound`` can be changed by the wrap."""
        return bound >= self.limit


# Per-node facts, computed once: IR nodes are immutable and hash by identity (eq=False); the cache
# holds them weakly, so it never keeps a graph's weights alive.
_FACTS: "weakref.WeakKeyDictionary[n.FixedPointSynapse, dict]" = weakref.WeakKeyDictionary()


def _cached(node: n.FixedPointSynapse, key, compute):
    facts = _FACTS.setdefault(node, {})
    if key not in facts:
        facts[key] = compute()
    return facts[key]


def weight_reach(node: n.FixedPointSynapse) -> int:
    """``max_o sum_k |W[o, k]|`` as a Python int: ``|S| <= weight_reach * max |x|``."""

    def compute() -> int:
        w = np.abs(np.asarray(node.weight, dtype=np.int64)).reshape(node.weight.shape[0], -1)
        return max((int(v) for v in w.sum(axis=1)), default=0)

    return _cached(node, "reach", compute)


def synapse_arithmetic(node: n.FixedPointSynapse, graded: bool) -> SynapseArithmetic:
    """The :class:`SynapseArithmetic` of one synapse (the table of the module docstring)."""
    return _cached(node, ("arithmetic", graded), lambda: _synapse_arithmetic(node, graded))


def _synapse_arithmetic(node: n.FixedPointSynapse, graded: bool) -> SynapseArithmetic:
    process = lava_process(node, graded)
    if process == "Conv":
        return SynapseArithmetic(process, graded, None, CONV_WRAP_BITS)
    try:
        _, _, exp = encode_dense_weights(node.weight)
    except LavaArithmeticError:
        exp = None
    halves = exp == -1 and (process == "DelaySparse" or (process == "Dense" and graded))
    return SynapseArithmetic(process, graded, exp, 31 if halves else 32)


def lava_current(arith: SynapseArithmetic, exact_sum):
    """The current Lava delivers for the exact int64 sum (numpy array or torch tensor)."""
    if arith.process == "Conv":
        return conv_current(exact_sum)
    return wrap(exact_sum, arith.wrap_bits)


def check_sum_bound(node: n.FixedPointSynapse, arith: SynapseArithmetic, bound: int) -> None:
    """Refuse sums that int64 cannot hold, or that Lava's float64 Conv would round."""
    if bound >= 2**62:
        raise LavaArithmeticError(
            f"synapse {node.name!r}: its sums can reach {bound}, beyond int64; reduce the input range or the weights"
        )
    if arith.process == "Conv" and bound >= FLOAT64_EXACT:
        raise LavaArithmeticError(
            f"synapse {node.name!r}: its sums can reach {bound}; Lava's Conv sums in float64, which rounds "
            "beyond 2^53, so no integer backend can reproduce it; reduce the input range or the weights"
        )
