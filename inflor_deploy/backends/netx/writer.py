"""A scheduled fixed-point graph as a lava-dl NetX HDF5 network: the file a physical Loihi 2 loads.

    plan_netx(graph)             -> NetxPlan   (the blocks; NetxRefusal names why a graph cannot be written)
    write_netx_file(plan, path)  -> None       (the HDF5 file; callers publish it atomically)
    read_netx_metadata(path)     -> dict       (what this module recorded beside the layers)

What lava-dl 0.6.0 reads (``lava/lib/dl/netx/hdf5.py``, ``blocks/process.py``,
``utils.py``; each fact pinned by ``tests/backends/netx``)
------------------------------------------------------------------------
``Network(net_config=path)`` reads only the group ``layer``: entries ``"0"``,
``"1"``, ... in order, each with a string dataset ``type`` (read as
``value[0].decode("ascii")``). It builds a feed-forward chain: every block is
one synapse Process plus one neuron Process, connected to the block before
it. Extra groups and attributes are ignored, so this module records what a
user needs beside the layers in the group ``inflor`` (one JSON attribute,
:func:`read_netx_metadata`) and ``simulation`` (``Ts``, ``tSample``).

* ``input`` with ``shape`` (C, H, W) and no ``neuron``: sets the input shape
  only; the stimulus goes to ``Network.inp``, the first block's synapse.
  The first synapse reads graded payloads when the *caller* passes
  ``input_message_bits > 0`` to ``Network`` (else Dense and Conv cast the
  input to bool). It is a load argument, not part of the file.
* ``conv``: ``shape`` (C, H, W) (reversed to Lava's (W, H, C)); ``weight``
  in PyTorch's ``[O, C/g, kh, kw]``, which netx flips and transposes to
  Lava's kernel (``w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)``, as our Lava
  backend does); ``stride``, ``padding``, ``dilation`` as (h, w) (reversed to
  (x, y)); ``groups``. Lava's ``Conv`` gets no ``weight_exp``, no sign mode
  and no clipping: the integers are used as written.
* ``flatten`` then ``dense``: the previous block's (W, H, C) spikes are
  transposed to (C, H, W) and flattened, i.e. the IR's C-major order, so the
  ``weight`` ``[O, I]`` is written as the IR holds it.
* ``dense`` weights pass through netx's ``optimize_weight_bits``, which
  shifts the matrix left by ``s`` bits and sets ``weight_exp = -s`` and
  ``num_weight_bits``, and then through Lava's ``Dense``, which guesses a sign
  mode from the shifted matrix, clips, truncates and shifts the sum right by
  ``s``. :func:`dense_weights_problem` states exactly when that returns the
  written integers (the test checks the rule against both libraries' code).
* ``neuron``: ``type`` ``"CUBA"`` builds Lava's stock ``LIFReset`` (``LIF``
  without ``reset_interval``) with ``vth = vThMant``, ``du = iDecay - 1``
  (so ``iDecay = du + 1``: 4096 for a current that lasts one step),
  ``dv = vDecay``, ``bias_exp = 6`` and ``bias_mant`` = the layer's ``bias``
  (per channel ``(C,)``, or per neuron in (W, H, C)). ``refDelay`` is not read.
  ``reset_interval`` and ``reset_offset`` are load arguments: block i (from 0)
  resets when ``time_step % R == (reset_offset + 1 + i) % R``.

The mapping
-----------
A layer at depth d of our schedule resets at ``g % R == (d + 1) % R``; block
i of a chain sits at depth ``i + 1``, so loading with ``reset_offset=1``
gives each block exactly our schedule, and since every block adds one step
(its synapse), the NetX network runs our pipelined view step for step.
Loading arguments: ``Network(net_config=path, reset_interval=R,
reset_offset=1, input_message_bits=B)``, recorded in the metadata.

* hard-reset layer (``FixedPointNeuron`` ``reset="zero"``, one threshold):
  a block with ``CUBA`` ``vThMant = vth``, ``iDecay = du + 1``, ``vDecay = dv``
  — exactly the stock ``PyLifResetModelBitAcc`` our simulator reproduces.
* the readout (``FixedPointAccumulator``): a last block whose ``CUBA``
  neuron never fires: ``vThMant = 2^17 - 1`` (the largest 17-bit value, so
  the file is legal on the chip). It fires only above ``v = 2^23 - 64``;
  :func:`plan_netx` bounds the readout's v over a window and warns when that
  bound reaches the threshold (the check then shows whether it happened).
  The host reads its ``v`` (``net.layers[-1].neuron.v``) at global step
  ``k*R + T + latency`` for sample k (every step of the window for a
  mean-membrane readout, summed); the class score is ``R_v / (64 * scale * T)``
  (``/ (64 * scale)`` for a spike count).

Refused, each with a named reason (:class:`NetxRefusal` ``.reason``):

* ``soft_reset``: stock CUBA only zeroes v on a spike; a subtractive reset
  has no exact stock form (docs/lava_findings.md). ``allow_inexact`` writes
  the layer as a hard-reset CUBA layer instead and marks it inexact.
* ``reset_none``: a layer that never resets; stock CUBA always does.
* ``per_channel_threshold``: LIF's ``vth`` is one Var for the population.
  (Per-channel values that are all equal are written as the one value.)
* ``not_a_chain``: a layer with several synapses (residual shortcut, join),
  a layer feeding several synapses, or a synaptic delay: netx's ``Network``
  connects each block to the previous one only.
* ``dense_weights``: a dense matrix that netx and Lava would not deliver
  exactly (see :func:`dense_weights_problem`).
* ``bias_exponent``: a bias that cannot be restated with netx's fixed
  ``bias_exp = 6`` in a 13-bit mantissa.
* ``bias_source``: an always-firing bias source neuron (compile with
  ``--plain-layers``).
* ``weight_exponent``: a synapse with a nonzero ``weight_exp`` (the
  quantizer's per-synapse exponent): the integer weights alone would
  deliver a different current.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "REASONS",
    "READOUT_VTH",
    "NetxBlock",
    "NetxPlan",
    "NetxRefusal",
    "dense_weights_problem",
    "plan_netx",
    "read_netx_metadata",
    "write_netx_file",
]

FORMAT = "inflor-deploy-netx"
FORMAT_VERSION = 1
#: The names a refusal carries in :attr:`NetxRefusal.reason`.
REASONS = (
    "not_fixed_point", "soft_reset", "reset_none", "per_channel_threshold", "not_a_chain", "dense_weights",
    "bias_exponent", "layer_shape",
)  # fmt: skip
#: The readout neuron's threshold mantissa: the largest unsigned 17-bit value (it fires only above 2^23 - 64).
READOUT_VTH = 2**17 - 1
#: ``reset_offset`` to pass to ``netx.hdf5.Network``: block i then resets at ``(i + 2) % R``, our ``(depth + 1) % R``.
LOAD_RESET_OFFSET = 1
#: The bias exponent netx gives every CUBA neuron (hdf5.py ``'bias_exp': 6``).
NETX_BIAS_EXP = 6
_BIAS_MANT_LIMIT = 2**12  # 13-bit signed mantissa: -4096..4095
_V_MAX = 2**23 - 1


class NetxRefusal(InflorError):
    """A graph (or a layer) cannot be written as NetX stock CUBA blocks exactly.

    Attributes:
        reason: One of :data:`REASONS`.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NetxBlock:
    """One NetX block: a synapse and the CUBA layer it feeds.

    Attributes:
        synapse: The IR synapse.
        layer: The IR neuron layer or the accumulator it feeds.
        in_shape: Per-sample shape of the synapse's source (IR layout).
        shape: The layer's shape (IR layout).
        flatten: A ``flatten`` entry precedes the block (dense on a (C, H, W) source).
        vth: The threshold mantissa written (``READOUT_VTH`` for the readout).
        bias: The bias mantissas written (in netx's ``bias_exp = 6``), None when all zero.
        inexact: Why the block differs from the IR layer (``allow_inexact``), or None.
    """

    synapse: n.FixedPointSynapse
    layer: n.FixedPointNeuron | n.FixedPointAccumulator
    in_shape: tuple[int, ...]
    shape: tuple[int, ...]
    flatten: bool
    vth: int
    bias: np.ndarray | None
    inexact: str | None = None

    @property
    def is_readout(self) -> bool:
        return isinstance(self.layer, n.FixedPointAccumulator)


@dataclass(frozen=True)
class NetxPlan:
    """What :func:`write_netx_file` writes, and how the file must be loaded and read.

    Attributes:
        graph: The scheduled fixed-point graph planned.
        blocks: The chain, input side first; the last is the readout.
        input_shape: The Input's shape (IR layout).
        input_range: ``(lo, hi)`` of the integer input grades (pixels in [0, 1]).
        input_message_bits: ``Network(input_message_bits=...)``: 0 when the
            input grades are binary (fed as spikes), else the payload bits.
        warnings: Things a user must know (the readout may fire, R not a power of two, ...).
    """

    graph: Graph
    blocks: tuple[NetxBlock, ...]
    input_shape: tuple[int, ...]
    input_range: tuple[int, int]
    input_message_bits: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exact(self) -> bool:
        return all(block.inexact is None for block in self.blocks)

    @property
    def input_encoding(self) -> str:
        return "spikes" if self.input_message_bits == 0 else "graded"

    @property
    def load_arguments(self) -> dict[str, int]:
        """Keyword arguments of ``lava.lib.dl.netx.hdf5.Network`` besides ``net_config``."""
        return {
            "reset_interval": self.graph.schedule.reset_interval,
            "reset_offset": LOAD_RESET_OFFSET,
            "input_message_bits": self.input_message_bits,
        }

    def metadata(self, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON recorded in the file's ``inflor`` group (see docs/netx.md)."""
        graph, s = self.graph, self.graph.schedule
        out = graph.output
        first = self.blocks[0]
        port = (
            "(N,): the C-major flattened frame"
            if first.synapse.kind == "dense" else "(W, H, C): frame.transpose(2, 1, 0) of a (C, H, W) frame"
        )  # fmt: skip
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": graph.name,
            "timesteps": graph.timesteps,
            "exact": self.exact,
            "load": self.load_arguments,
            "input": {
                "shape": list(self.input_shape),
                "encoding": self.input_encoding,
                "grade_scale": graph.input.grade_scale,
                "grades": list(self.input_range),
                "network_inp": port,
                "frames": f"round(x * grade_scale) at window steps t = 0..{graph.timesteps - 1}"
                + (
                    f", zero frames at t = {graph.timesteps}..{s.reset_interval - 1}"
                    if s.reset_interval > graph.timesteps else ""
                )
                + f" (R = {s.reset_interval}); sample k's step t is sent at global step k*R + t + 1",
            },
            "blocks": [
                {
                    "netx_layer": index,
                    "synapse": block.synapse.name,
                    "layer": block.layer.name,
                    "kind": block.synapse.kind,
                    "role": "readout" if block.is_readout else "neuron",
                    "flatten_before": block.flatten,
                    "vThMant": block.vth,
                    "depth": s.depth[block.layer.name],
                    "inexact": block.inexact,
                }
                for index, block in enumerate(self.blocks)
            ],
            "readout": {
                "layer": out.name,
                "block": len(self.blocks) - 1,
                "kind": out.readout,
                "scale": out.scale,
                "divisor": n.readout_divisor(out, graph.timesteps),
                "read": (
                    f"v of net.layers[-1].neuron at every global step k*R + t + 1 + {s.latency} "
                    f"(t = 0..{graph.timesteps - 1}), summed per sample"
                    if out.readout == "mean_membrane"
                    else f"v of net.layers[-1].neuron after global step k*R + {graph.timesteps + s.latency} "
                    "(a lava.proc.io.sink.Read with interval R)"
                ),
                "score": "readout_v / (64 * scale * divisor)",
            },
            "schedule": {"reset_interval": s.reset_interval, "latency": s.latency, "depth": dict(s.depth)},
            "warnings": list(self.warnings),
            "source": source or {},
        }


# --------------------------------------------------------------------------- weights


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def dense_weights_problem(weight: np.ndarray) -> str | None:
    """Why netx + Lava would not deliver exactly ``weight @ x`` for this dense matrix, or None.

    netx's ``optimize_weight_bits`` (lava-dl ``netx/utils.py``) picks a sign
    mode from the signs of max and min, scales the matrix by ``2^s`` so its
    extreme lands near the top of 8 bits, sets ``weight_exp = -s`` and
    ``num_weight_bits = 8 - s - n`` (``n``: trailing zero bits, one fewer when
    mixed); Lava's ``Dense`` then re-guesses the sign mode (``min >= 0``
    excitatory, ``max <= 0`` inhibitory), clips (inhibitory: to
    ``[-255, 0]``), drops ``8 - num_weight_bits (+1 if mixed)`` low bits and
    shifts the sum right by ``s``. The shifted matrix keeps ``s + n`` (mixed:
    ``s + n + 1``) trailing zeros, so truncation is always lossless; only the
    clips can change a weight. With ``M = max``, ``m = min``:

    * mixed signs (``M > 0 > m``): ``M * 2^s <= 254`` and ``|m| * 2^s <= 256``
      are in range, but netx itself clips to [-256, 254] first: exact iff
      ``M <= 254`` and ``m >= -256``;
    * non-negative (``m >= 0 < M``): ``M * 2^s <= 255``: exact iff ``M <= 255``;
    * non-positive (``M <= 0 > m``): the scaled minimum ``|m| * 2^s`` lies in
      (128, 256] and is 256 exactly when ``|m|`` is a power of two, which
      Lava's inhibitory clip turns into 255: exact iff ``|m| <= 255`` and
      ``|m|`` is not a power of two;
    * ``M = 0`` besides: netx calls the matrix mixed (``max < 0`` is its
      inhibitory test) and Lava inhibitory, so Lava truncates one bit fewer
      than netx planned, ``s + n - 1``; with ``s = 0`` (``|m| > 128``) and an
      odd weight that is a shift by -1, which destroys the weights;
    * all zero: netx divides by the zero maximum and fails.

    tests/backends/netx pins this rule against both libraries' own functions.
    """
    w = np.asarray(weight, dtype=np.int64)
    if w.size == 0 or not w.any():
        return "all its weights are 0 (netx's optimize_weight_bits divides by the largest weight)"
    hi, lo = int(w.max()), int(w.min())
    if hi > 0 and lo < 0:
        if hi > 254 or lo < -256:
            return f"mixed-sign weights in [{lo}, {hi}] fall outside [-256, 254], which netx clips to"
        return None
    if lo >= 0:
        return None if hi <= 255 else f"weights up to {hi} exceed 255, the excitatory 8-bit range"
    if -lo > 255:
        return f"non-positive weights down to {lo} exceed the inhibitory range [-255, 0]"
    if _is_power_of_two(-lo):
        return (
            f"all weights are <= 0 and the most negative, {lo}, is a power of two: netx scales it to -256, "
            "which Lava's inhibitory Dense clips to -255"
        )
    if hi == 0 and -lo > 128 and np.any(w % 2):
        return (
            f"weights in [{lo}, 0] with odd values: netx plans them as mixed-sign 9-bit weights, Lava's inhibitory "
            "Dense then truncates by -1 bits"
        )
    return None


# --------------------------------------------------------------------------- planning


def _chain(graph: Graph) -> list[tuple[n.FixedPointSynapse, n.Node]]:
    """``(synapse, layer)`` from the input to the readout, or NetxRefusal("not_a_chain")."""

    def refuse(why: str) -> NetxRefusal:
        return NetxRefusal(
            "not_a_chain",
            f"{why}; lava-dl's netx.hdf5.Network is a feed-forward chain (each block is one synapse and one "
            "neuron layer, fed by the block before it), so residual shortcuts, joins and fan-out cannot be "
            "written. Export a plain chain (conv/dense layers one after another), or run this artifact with "
            "`inflor-deploy run --backend lava`",
        )

    layers = graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)
    by_name = {node.name: node for node in graph}
    # Bias sources (QuantizeFixedPoint: an always-firing neuron feeding one layer) are left out of the
    # chain here; plan_netx refuses them by name once every layer's own checks have run.
    bias_sources = {x.name for x in layers if not x.sources}
    chain, previous = [], graph.input.name
    for layer in layers:
        if layer.name in bias_sources:
            continue
        own = tuple(s for s in layer.sources if by_name[s].sources[0] not in bias_sources)
        if len(own) != 1:
            raise refuse(f"layer {layer.name!r} sums {len(own)} synapses ({', '.join(own)})")
        synapse = by_name[own[0]]
        if synapse.sources[0] != previous:
            raise refuse(
                f"layer {layer.name!r} is fed by {synapse.sources[0]!r}, not by the layer before it ({previous!r})"
            )
        if synapse.delay:
            raise refuse(f"synapse {synapse.name!r} has a delay of {synapse.delay} steps (a shortcut alignment)")
        chain.append((synapse, layer))
        previous = layer.name
    for node in graph:
        readers = graph.consumers(node.name)
        if len(readers) > 1:
            raise refuse(f"{node.name!r} feeds {len(readers)} synapses ({', '.join(r.name for r in readers)})")
    if previous != graph.output.name:
        raise refuse(f"the readout {graph.output.name!r} is not the end of the chain")
    return chain


def _threshold(layer: n.FixedPointNeuron) -> int:
    vth = np.asarray(layer.vth)
    if vth.ndim:
        if not np.all(vth == vth.flat[0]):
            raise NetxRefusal(
                "per_channel_threshold",
                f"layer {layer.name!r} has per-channel thresholds ({int(vth.min())}..{int(vth.max())}); stock CUBA "
                "(Lava's LIF) holds one threshold for the whole layer (vth is a single Var), so NetX cannot express "
                "them. Compile a model with one threshold per layer, or run this artifact with "
                "`inflor-deploy run --backend lava` (our SoftResetLIF process holds them per neuron)",
            )
        vth = vth.flat[0]
    return int(vth)


def _bias(layer, shape: tuple[int, ...]) -> np.ndarray | None:
    """The bias mantissas restated for netx's ``bias_exp = 6``.

    ``(C,)`` when every channel is uniform, else one per neuron in Lava's (W, H, C).
    """
    mant = np.broadcast_to(np.asarray(layer.bias_mant, dtype=np.int64), shape)
    exponent = int(layer.bias_exp)
    if exponent >= NETX_BIAS_EXP:
        restated = mant << (exponent - NETX_BIAS_EXP)
    else:
        step = 1 << (NETX_BIAS_EXP - exponent)
        restated = mant // step
        if np.any(mant % step):
            restated = None
    if restated is None or np.any(restated >= _BIAS_MANT_LIMIT) or np.any(restated < -_BIAS_MANT_LIMIT):
        raise NetxRefusal(
            "bias_exponent",
            f"layer {layer.name!r}: its bias (mantissas {int(mant.min())}..{int(mant.max())} << {exponent}) has no "
            f"13-bit mantissa under netx's fixed bias_exp = {NETX_BIAS_EXP}; recompile the model (the compiler "
            f"uses bias_exp = {NETX_BIAS_EXP})",
        )
    if not restated.any():
        return None
    if len(shape) == 1:
        return restated.astype(np.int32)
    per_channel = restated.reshape(shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return per_channel[:, 0].astype(np.int32)
    return np.ascontiguousarray(restated.transpose(2, 1, 0)).astype(np.int32)  # (W, H, C), netx's per-neuron form


def _readout_bound(graph: Graph, synapse: n.FixedPointSynapse, layer, in_range: tuple[int, int]) -> int:
    """An upper bound on the readout's ``|v|`` over one reset window (R steps), in v units.

    Each step adds ``(a << 6) + (bias << bias_exp)`` with ``|a|`` at most the
    synapse's worst case over its input range; the leak only shrinks ``|v|``
    (it truncates toward zero), and v saturates at ``2^23 - 1``.
    """
    from inflor_deploy.backends.sim.fixed_point import _current_range

    lo, hi = _current_range(synapse, *in_range)
    worst_a = max(max(int(x) for x in hi), max(-int(x) for x in lo), 0)
    bias = int(np.abs(np.asarray(layer.bias_mant, dtype=np.int64)).max(initial=0)) << int(layer.bias_exp)
    return min(_V_MAX, graph.schedule.reset_interval * ((worst_a << 6) + bias))


def plan_netx(graph: Graph, *, allow_inexact: bool = False) -> NetxPlan:
    """Check that ``graph`` can be written as NetX stock CUBA blocks and plan them.

    Args:
        graph: A scheduled fixed-point graph (an artifact's ``fixed_graph``).
        allow_inexact: Write soft-reset layers as hard-reset CUBA layers
            (marked inexact; measure them with the check) instead of refusing.

    Raises:
        NetxRefusal: With one of :data:`REASONS` and a message naming the layer and the fix.
    """
    from inflor_deploy.backends.sim.fixed_point import input_range

    if not graph.is_fixed_point or graph.schedule is None:
        raise NetxRefusal(
            "not_fixed_point",
            "NetX export needs a scheduled fixed-point graph; compile the model to the end "
            "(`inflor-deploy compile` without --stop-after)",
        )
    shapes = infer_shapes(graph)
    for name, shape in shapes.items():
        if len(shape) not in (1, 3):
            raise NetxRefusal("layer_shape", f"{name!r} has shape {shape}; NetX layers are (C, H, W) or (N,)")
    in_range = input_range(graph)
    blocks = []
    warnings = []
    for synapse, layer in _chain(graph):
        in_shape, shape = shapes[synapse.sources[0]], shapes[layer.name]
        if synapse.weight_exp:
            raise NetxRefusal(
                "weight_exponent",
                f"synapse {synapse.name!r} has weight_exp {synapse.weight_exp} (the quantizer's per-synapse "
                "exponent, docs/quantization.md); this writer stores the integer weights alone, and netx's Conv "
                "ignores an exponent. Recompile with --plain-layers, or run this artifact with `inflor-deploy run --backend lava`",
            )
        if synapse.kind == "dense":
            problem = dense_weights_problem(synapse.weight)
            if problem:
                raise NetxRefusal(
                    "dense_weights",
                    f"dense synapse {synapse.name!r}: {problem}; netx's weight optimizer and Lava's Dense would "
                    "change it. Re-quantize the layer (the compiler's dense weights are even values in "
                    "[-256, 254] with both signs)",
                )
        inexact = None
        if isinstance(layer, n.FixedPointAccumulator):
            vth = READOUT_VTH
            source_range = in_range if synapse.sources[0] == graph.input.name else (0, 1)
            bound = _readout_bound(graph, synapse, layer, source_range)
            if bound > READOUT_VTH << 6:
                warnings.append(
                    f"the readout {layer.name!r} can reach v = {bound} in the worst case, above its threshold "
                    f"{READOUT_VTH} << 6 = {READOUT_VTH << 6} (the largest on the chip): there it would fire and "
                    "reset; the check shows whether that happens on real inputs"
                )
        else:
            vth = _threshold(layer)
            if layer.reset == "subtract":
                if not allow_inexact:
                    raise NetxRefusal(
                        "soft_reset",
                        f"layer {layer.name!r} has a soft (subtractive) reset; NetX builds stock CUBA neurons, "
                        "which only zero v on a spike, and no stock route subtracts exactly (docs/lava_findings.md: "
                        "Lava's current decay is 4096 - (du + 1), so a self-inhibitory synapse always loses part of "
                        "the membrane). Train with a hard-reset neuron (`inflor-deploy train --neuron if|lif`), run "
                        "this artifact exactly with `inflor-deploy run --backend lava` (our SoftResetLIF process), "
                        "or pass --allow-inexact to write it as hard reset and measure the agreement",
                    )
                inexact = (
                    f"soft reset (v -= {n.plain(layer.reset_mant)} << 6) written as a stock CUBA hard reset (v = 0)"
                )
            elif layer.reset == "none":
                raise NetxRefusal(
                    "reset_none",
                    f"layer {layer.name!r} never resets (reset 'none'); stock CUBA neurons always zero v on a "
                    "spike, so NetX cannot express it. Use a model whose layers reset (snnTorch "
                    "reset_mechanism='zero'), or run it with `inflor-deploy run --backend lava`",
                )
        blocks.append(
            NetxBlock(
                synapse=synapse, layer=layer, in_shape=in_shape, shape=shape,
                flatten=synapse.kind == "dense" and len(in_shape) == 3, vth=vth, bias=_bias(layer, shape),
                inexact=inexact,
            )
        )  # fmt: skip
    R = graph.schedule.reset_interval
    if not _is_power_of_two(R):
        warnings.append(
            f"the reset interval R = {R} is not a power of two; Loihi 2 hardware needs one "
            "(compile with --target loihi2); Lava's simulator runs any R"
        )
    sources = [x.name for x in graph.of_type(n.FixedPointNeuron) if not x.sources]
    if sources:
        raise NetxRefusal(
            "bias_source",
            f"{sources[0]!r} is a bias source (a bias beyond its layer's 13-bit bias field, carried by an "
            "always-firing neuron), which a netx chain cannot hold. Recompile with --plain-layers "
            "(the bias range then caps that layer's scale), or run this artifact with "
            "`inflor-deploy run --backend lava`",
        )
    lo, hi = in_range
    bits = 0 if lo >= 0 and hi <= 1 else max(abs(lo), abs(hi)).bit_length() + int(lo < 0)
    return NetxPlan(
        graph=graph, blocks=tuple(blocks), input_shape=tuple(graph.input.shape), input_range=in_range,
        input_message_bits=bits, warnings=tuple(warnings),
    )  # fmt: skip


# --------------------------------------------------------------------------- writing


def _text(group, key: str, value: str) -> None:
    """A string as netx reads it: a 1-element fixed-length ASCII dataset (``value[0].decode('ascii')``)."""
    data = value.encode("ascii")
    group.create_dataset(key, (1,), f"S{len(data)}", data)


def _ints(group, key: str, values) -> None:
    group.create_dataset(key, data=np.asarray(values, dtype=np.int64))


def _neuron(group, block: NetxBlock) -> None:
    """The CUBA compartment: netx builds ``LIFReset(vth=vThMant, du=iDecay - 1, dv=vDecay, bias_exp=6)``."""
    layer = block.layer
    neuron = group.create_group("neuron")
    _text(neuron, "type", "CUBA")
    du = 4095 if block.is_readout else int(layer.du)
    _ints(neuron, "iDecay", du + 1)
    _ints(neuron, "vDecay", int(layer.dv))
    _ints(neuron, "vThMant", block.vth)
    _ints(neuron, "refDelay", 1)  # no refractory period (netx does not read it; the chip's compartment does)


def _block(group, block: NetxBlock) -> None:
    syn = block.synapse
    weight = np.asarray(syn.weight, dtype=np.int32)
    _ints(group, "shape", block.shape)
    if syn.kind == "conv":
        _text(group, "type", "conv")
        _ints(group, "inChannels", block.in_shape[0])
        _ints(group, "outChannels", block.shape[0])
        _ints(group, "kernelSize", weight.shape[2:])
        _ints(group, "stride", syn.stride)
        _ints(group, "padding", syn.padding)
        _ints(group, "dilation", (1, 1))
        _ints(group, "groups", syn.groups)
    else:
        _text(group, "type", "dense")
        _ints(group, "inFeatures", weight.shape[1])
        _ints(group, "outFeatures", weight.shape[0])
    group.create_dataset("weight", data=weight)
    if block.bias is not None:
        group.create_dataset("bias", data=block.bias)
    _neuron(group, block)


def write_netx_file(plan: NetxPlan, path: str | Path, source: dict[str, Any] | None = None) -> None:
    """Write ``plan`` as a NetX HDF5 file at ``path`` (no atomicity: see ``export.export_netx``).

    Args:
        plan: From :func:`plan_netx`.
        path: The file to create (overwritten).
        source: Provenance recorded in the metadata (artifact, sha256, target).
    """
    import h5py

    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        index = 0

        def entry():
            nonlocal index
            group = layers.create_group(str(index))
            index += 1
            return group

        first = entry()
        _text(first, "type", "input")
        _ints(first, "shape", plan.input_shape)
        for block in plan.blocks:
            if block.flatten:
                group = entry()
                _text(group, "type", "flatten")
                _ints(group, "shape", (math.prod(block.in_shape),))
            _block(entry(), block)
        simulation = f.create_group("simulation")
        _ints(simulation, "Ts", 1)
        _ints(simulation, "tSample", plan.graph.schedule.reset_interval)
        f.create_group("inflor").attrs["metadata"] = json.dumps(plan.metadata(source), default=_json)


def _json(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def read_netx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata this module wrote into a NetX file (``inflor`` group).

    Raises:
        InflorError: The file is not HDF5 or was not written by inflor-deploy.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f["inflor"].attrs["metadata"] if "inflor" in f else None
    except OSError as err:
        raise InflorError(f"{path}: not a readable HDF5 file ({err}); export it with `inflor-deploy export`") from err
    if raw is None:
        raise InflorError(f"{path}: no 'inflor' metadata; it was not written by `inflor-deploy export --format netx`")
    data = json.loads(raw)
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise InflorError(
            f"{path}: NetX metadata format {data.get('format')!r} v{data.get('format_version')!r}; this inflor-deploy "
            f"reads {FORMAT!r} v{FORMAT_VERSION}. Export the artifact again"
        )
    return data
