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

Connections (``S`` is the exact integer ``sum_k W[o, k] * x[k] * 2^k_w`` of
the IR weights and the synapse's ``weight_exp`` k_w >= 0; k_w < 0: below;
``wrap_b(z) = (z + 2^(b-1)) mod 2^b - 2^(b-1)``)
---------------------------------------------------------------------------
Dense-like processes (Dense, DelayDense, Sparse, DelaySparse) hold an 8-bit
encoding ``m * 2^e = W * 2^k_w`` of the weights that
:func:`encode_dense_weights` picks (Lava's ``weight_exp`` e; ``e = k_w - 1``
stores ``m = 2W`` for odd mixed-sign weights; fewer ``num_weight_bits``
store ``W`` shifted left onto Lava's truncation grid, with e lowered to
match). Lava's Conv ignores ``weight_exp``, so a conv synapse with
``weight_exp > 0``, or a sparse (pruned) one, runs as the exact sparse
matrix of the convolution (Sparse, or DelaySparse with a delay).

=============  ===========  ==========================================  ============
process        input        Lava computes                               current
=============  ===========  ==========================================  ============
Conv           any          float64 sum (scipy ``convolve2d``, exact    ``wrap_24(c32(S))``
                            below 2^53), ``astype(int32)``, then        (k_w = 0 only)
                            ``signed_clamp(x, 24)``
Dense          graded       ``weights.dot(x)`` in int32 (numpy sums in  ``wrap_32(S)``;
Sparse                      int64, stores int32; scipy sums in int32),  ``wrap_(32+e)(S)``
                            shift by e in int32                         if e < 0
Dense, Sparse  spikes       ``weights[:, s].sum(1)``: int64; shift in   ``wrap_32(S)``
                            int64; the int32 channel cuts it
DelayDense     spikes       int32 products (0/1 inputs: no overflow),   ``wrap_32(S)``
                            int64 sum and shift, ``+=`` into int32
DelaySparse    any          scipy int32 ``csr.dot`` (int32 sums),       ``wrap_32(S)``;
                            shift in int32, ``+=`` into int32           ``wrap_(32+e)(S)`` if e < 0
=============  ===========  ==========================================  ============

A left shift by ``e >= 0`` of an int32 sum wraps like the sum of the
shifted products (``wrap_32(wrap_32(z) * 2^e) = wrap_32(z * 2^e)``); a
right shift by ``-e`` of a multiple of ``2^-e`` wraps at ``32 + e`` bits
(``wrap_32(z * 2^-e) >> -e = wrap_(32+e)(z)``).

A negative IR exponent ``k_w < 0`` (a layer whose u headroom caps its
scale below its weights' grid) truncates: Lava's ``right_shift`` floors, so
the current is ``floor(S' / 2^-k_w)`` with ``S' = sum_k W[o, k] x[k]``
(no exponent). With the encoding ``m = W * 2^j`` (``j = k_w - e >= 0``), an
int32 sum wraps ``2^j S'`` at 32 bits, i.e. ``S'`` at ``32 - j``, and the
shift follows: ``floor(wrap_(32-j)(S') / 2^-k_w)``; an int64 sum shifted
and then cut to int32 gives ``wrap_32(floor(S' / 2^-k_w)) =
floor(wrap_(32-k_w)(S') / 2^-k_w)``. Either way: a wrap of ``S'``, then the
floor (:func:`lava_current`).

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
    "floor_shift",
    "lava_current",
    "synapse_arithmetic",
    "weight_reach",
    "wrap",
]

LavaProcess = Literal["Conv", "Dense", "DelayDense", "Sparse", "DelaySparse"]

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


def encode_dense_weights(weight: np.ndarray, weight_exp: int = 0, num_weight_bits: int = 8) -> tuple[np.ndarray, str, int]:
    """Weights, sign mode and Lava ``weight_exp`` with which Lava's fixed_pt Dense/Sparse delivers ``(W @ x) << weight_exp``.

    Lava's bit-accurate Dense (and Sparse, DelayDense, DelaySparse) clips
    its weights on the first step (``clip_weights(w, mode, 8)``: EXCITATORY
    [0, 255], INHIBITORY [-255, 0], MIXED [-256, 255]), truncates them to
    ``num_weight_bits`` (``truncate_weights``: drops the lowest
    ``8 - num_weight_bits`` bits, one more for MIXED) and shifts the
    accumulated current by its ``weight_exp`` e. An encoding ``m * 2^e`` is
    exact when ``m = W * 2^(weight_exp - e)`` is an integer that survives the
    clip and the truncation unchanged. Tried in this order, first fit wins:
    ``e = weight_exp .. weight_exp + 7`` (``W`` divided by a power of two),
    then ``e = weight_exp - 1, weight_exp - 2, ...`` (``W`` shifted left onto
    the truncation grid, e.g. ``2W`` for odd mixed-sign weights); for each
    e the sign modes EXCITATORY, INHIBITORY, MIXED.

    Args:
        weight: The IR's integer weights ``W``.
        weight_exp: The IR synapse's exponent: the current is ``(W @ x) * 2^weight_exp``
            (``floor((W @ x) / 2^-weight_exp)`` when negative: then ``e <= 0``).
        num_weight_bits: Lava's ``num_weight_bits`` (1..8): the stored mantissa width.

    Returns:
        ``(weights m, sign mode name, Lava weight_exp e)``.

    Raises:
        LavaArithmeticError: No encoding is exact (e.g. an odd weight of 201 in a mixed-sign matrix).
    """
    w = np.asarray(weight, dtype=np.int64)
    bits = int(num_weight_bits)
    if not 1 <= bits <= 8:
        raise LavaArithmeticError(f"num_weight_bits must be in 1..8, got {bits}")
    for e in [weight_exp + j for j in range(8)] + [weight_exp - j for j in range(1, 10)]:
        if weight_exp < 0 < e:
            continue  # a truncating exponent stays a right shift (lava_current's wraps assume it)
        shift = weight_exp - e  # m = W * 2^shift
        if shift >= 0:
            m = w << shift
        elif np.any(w % (1 << -shift)):
            continue
        else:
            m = w >> -shift
        lo, hi = int(m.min(initial=0)), int(m.max(initial=0))
        for mode, low, high, mixed in (("EXCITATORY", 0, 255, 0), ("INHIBITORY", -255, 0, 0), ("MIXED", -256, 255, 1)):
            grid = 1 << (8 - bits + mixed)  # truncate_weights drops these low bits (of |m| when inhibitory)
            if low <= lo and hi <= high and not np.any(m % grid):
                return m, mode, e
    raise LavaArithmeticError(
        f"weights in [{int(w.min())}, {int(w.max())}] have no exact Lava Dense encoding "
        f"({bits}-bit mantissa, sign mode, a weight_exp near {weight_exp}); re-quantize the layer"
    )


def lava_process(node: n.FixedPointSynapse, graded: bool) -> LavaProcess:
    """The Lava Process a synapse runs on (the Lava backend builds exactly this one).

    Conv without delay, exponent or pruning -> ``Conv``; a conv with a delay
    (Conv has no delays), a ``weight_exp > 0`` (Lava's Conv ignores it) or
    ``sparse`` -> its exact sparse matrix in ``Sparse`` (``DelaySparse`` with a
    delay); dense -> ``Dense`` (``Sparse`` when ``sparse``), or with a delay
    ``DelayDense`` for spikes and ``DelaySparse`` for graded input (DelayDense
    multiplies in int32, so graded products could overflow) or a sparse synapse.
    """
    sparse = bool(node.sparse) or (node.kind == "conv" and node.weight_exp != 0)
    if node.delay:
        return "DelayDense" if node.kind == "dense" and not graded and not sparse else "DelaySparse"
    if node.kind == "conv" and not sparse:
        return "Conv"
    return "Sparse" if sparse else "Dense"


@dataclass(frozen=True)
class SynapseArithmetic:
    """How Lava turns a synapse's exact sum into the current it delivers.

    Attributes:
        process: The Lava Process (:func:`lava_process`).
        graded: Whether its input is the graded Input (else binary spikes).
        weight_exp: The Dense encoding's Lava exponent (None for Conv, or when
            no encoding exists: Lava refuses such a synapse, the simulators use
            the IR's exponent).
        wrap_bits: The current is ``wrap_<wrap_bits>(S * 2^shift)`` (Conv: of ``c32(S)``);
            for ``shift < 0`` it is ``floor(wrap_<wrap_bits>(S) / 2^-shift)``.
        shift: The IR synapse's ``weight_exp``: the exact current is ``S * 2^shift``
            (``floor(S / 2^-shift)`` when negative).
    """

    process: LavaProcess
    graded: bool
    weight_exp: int | None
    wrap_bits: int
    shift: int = 0

    @property
    def limit(self) -> int:
        """The current equals the exact (shifted) sum whenever ``-limit <= S * 2^max(shift, 0) < limit``."""
        return 1 << (self.wrap_bits - 1)

    def can_wrap(self, bound: int) -> bool:
        """Whether a shifted sum of magnitude up to ``bound`` can be changed by the wrap."""
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
    """``max_o sum_k |W[o, k]| * 2^max(weight_exp, 0)``: the sum Lava wraps is at most this times ``max |x|``.

    A negative exponent shifts after the wrap (:func:`lava_current`), so its
    reach is that of ``S`` itself.
    """

    def compute() -> int:
        w = np.abs(np.asarray(node.weight, dtype=np.int64)).reshape(node.weight.shape[0], -1)
        return max((int(v) for v in w.sum(axis=1)), default=0) << max(int(node.weight_exp), 0)

    return _cached(node, "reach", compute)


def synapse_arithmetic(node: n.FixedPointSynapse, graded: bool) -> SynapseArithmetic:
    """The :class:`SynapseArithmetic` of one synapse (the table of the module docstring)."""
    return _cached(node, ("arithmetic", graded), lambda: _synapse_arithmetic(node, graded))


def _synapse_arithmetic(node: n.FixedPointSynapse, graded: bool) -> SynapseArithmetic:
    process = lava_process(node, graded)
    shift = int(node.weight_exp)
    if process == "Conv":
        return SynapseArithmetic(process, graded, None, CONV_WRAP_BITS, shift)
    try:
        _, _, exp = encode_dense_weights(node.weight, shift, node.weight_bits)
    except LavaArithmeticError:
        exp = None
    # Processes that sum in int32 and then shift right by -e wrap at 32 + e bits (module docstring).
    int32_sum = process == "DelaySparse" or (process in ("Dense", "Sparse") and graded)
    if shift < 0:
        # floor(wrap_b(S) / 2^-shift): an int32 sum of the encoding m = W 2^j (j = shift - e) wraps 2^j S
        # at 32 bits, i.e. S at 32 - j; an int64 sum cut to int32 after the shift wraps S at 32 - shift.
        encoded = shift - exp if exp is not None else 0
        return SynapseArithmetic(process, graded, exp, 32 - encoded if int32_sum else 32 - shift, shift)
    narrowed = -exp if exp is not None and exp < 0 and int32_sum else 0
    return SynapseArithmetic(process, graded, exp, 32 - narrowed, shift)


def lava_current(arith: SynapseArithmetic, exact_sum):
    """The current Lava delivers for the exact int64 sum ``S`` (numpy array or torch tensor).

    ``wrap(S * 2^shift)`` for ``shift >= 0``; ``floor(wrap(S) / 2^-shift)``
    (Lava's arithmetic right shift) for ``shift < 0``.
    """
    if arith.process == "Conv":
        return conv_current(exact_sum)
    if arith.shift < 0:
        return floor_shift(wrap(exact_sum, arith.wrap_bits), -arith.shift)
    shifted = exact_sum * (1 << arith.shift) if arith.shift else exact_sum
    return wrap(shifted, arith.wrap_bits)


def floor_shift(x, bits: int):
    """``floor(x / 2^bits)``: numpy's and torch's ``>>`` on integers; exact division and floor on floats.

    A float ``x`` must hold an integer (the simulator's exact sums): dividing by
    a power of two and flooring then round nothing.
    """
    if bits == 0:
        return x
    if isinstance(x, np.ndarray):
        return x >> bits if x.dtype.kind in "iu" else np.floor(x / float(1 << bits))
    import torch

    return x >> bits if not x.is_floating_point() else torch.floor(x / float(1 << bits))


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
