"""The Lava backend: a scheduled fixed-point graph as Lava Processes, run on Lava's Loihi 2 simulator.

    build_network(graph, images)      -> LavaNetwork   (Processes, connected, not compiled)
    run_lava(graph, images)           -> LavaRun       (accumulator per sample; traces on request)
    compare_with_simulator(graph, x)  -> LavaParity    (parity level 3: bit-exact vs int_reference)
    compare_floating_pt(graph, x)     -> FloatAgreement (Lava floating_pt models: statistical)

How each IR node maps (facts read in lava-nc 0.10.0 and pinned by tests/backends/lava):

* ``Input`` -> ``lava.proc.io.source.RingBuffer`` holding every sample's
  integer frames back to back (sample k, step t in column ``k*R + t``: the
  same frame for every t with direct encoding, frame t of a sequence
  Input; zero columns pad ``t = T..R-1`` and the tail). It sends int32:
  graded values beyond 32 bits are refused before. Lava sends column ``g - 1`` at
  step ``g`` (``time_step`` counts from 1). The frames travel as graded
  spikes: connections from the input get ``num_message_bits > 0``, so
  Dense/Sparse compute ``W @ x`` and Conv convolves the payload instead of
  casting it to bool.
* ``FixedPointSynapse`` ``"dense"`` -> ``Dense`` (``DelayDense`` when the
  schedule gave it a delay; ``DelaySparse`` for a delayed graded input,
  because DelayDense multiplies in int32 and a graded product could
  overflow before the sum: :func:`~inflor_deploy.backends.sim.lava_arith.lava_process`
  decides, for the simulators too). Lava's fixed_pt Dense clips and truncates the
  weights on its first step according to a *sign mode*, which it guesses
  from the matrix unless told: all >= 0 -> EXCITATORY, clipped to [0, 255];
  all <= 0 -> INHIBITORY, clipped to [-255, 0]; else MIXED, clipped to
  [-256, 255] with the lowest bit floored. An all-non-positive matrix
  holding -256 would silently become -255, and odd mixed weights lose their
  lowest bit, so :func:`encode_dense_weights` picks the sign mode and
  Lava's ``weight_exp`` explicitly such that Lava delivers exactly
  ``(W @ x) << weight_exp`` (the IR synapse's exponent), with
  ``num_weight_bits`` the synapse's ``weight_bits``, or refuses. A
  ``sparse`` (pruned) synapse becomes ``Sparse`` (``DelaySparse`` with a
  delay) holding only its kept connections.
* ``"conv"`` -> ``Conv`` (no clipping, no sign mode, ``weight_exp``
  ignored; so a conv with ``weight_exp > 0`` or ``sparse`` runs as its
  exact sparse matrix in ``Sparse``/``DelaySparse``, like a delayed one;
  a true convolution on ``(W, H, C)`` arrays, summed in float64
  by scipy, exact below 2^53, then wrapped to 24 bits, which the
  quantizer's ``|a| < 2^17`` never reaches and the simulators model:
  :mod:`~inflor_deploy.backends.sim.lava_arith`), with the kernel
  flipped and transposed: ``w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)``,
  padding and stride given as ``(x, y) = (w, h)``. Conv has no delayed
  variant, so a conv with a delay (a residual shortcut) becomes its exact
  sparse matrix in a ``DelaySparse`` with the same weight encoding as Dense.
* Layout: every 3-D layer lives in Lava as ``(W, H, C)``; the IR's dense
  weights read a ``(C, H, W)``-flattened input, so their columns are
  permuted to Lava's flattening and the source port is reshaped to 1-D.
* ``FixedPointNeuron`` ``"zero"`` with one threshold -> Lava's stock
  ``LIFReset`` (kept as an independent check against stock Lava); every
  other layer -> :class:`SoftResetLIF` (``soft_reset="process"``), which
  holds ``vth`` and ``reset_mant`` per neuron (per-channel values laid out
  like the layer) and whose ``reset_mode`` is the layer's ``"subtract"``,
  ``"zero"`` (a per-channel-threshold hard reset, which stock ``LIFReset``
  cannot express) or ``"none"``. Both reset u and v at the steps
  ``time_step % R == reset_offset`` before integrating, exactly the
  schedule's rule.
* ``FixedPointAccumulator`` -> a ``LIFReset`` with ``du = 4095``, its ``dv``
  and ``vth = 2^17`` (:data:`ACCUMULATOR_VTH`, never fires). Its integer
  readout: v read once per sample by a ``lava.proc.io.sink.Read`` at step
  ``k*R + T + depth`` — before the accumulator's own reset at
  ``(k+1)*R + depth + 1`` (mean current, spike count); for a mean-membrane
  readout one ``Read`` samples v at every step and the host sums the T
  steps ``k*R + t + 1 + depth`` of each sample's window.

The stock-CUBA soft-reset route (``soft_reset="recurrent"``)
------------------------------------------------------------
The idea: run a subtractive layer on Lava's stock ``LIFReset`` and let a
self-synapse of weight ``-reset_mant`` (one step late, like every
connection) do the subtraction in u, with u holding the membrane. It is
*never* bit-exact in lava-nc 0.10.0, so it is refused unless
``allow_inexact=True`` (tests/backends/lava pin each reason):

1. u decays by ``4096 - (du + 1)`` over 4096 (``ds_offset = 1``, from
   Loihi 1): ``du = 0`` still multiplies u by 4095/4096 and truncates
   toward zero, losing ``ceil(|u| / 4096) >= 1`` units of v every step
   while u != 0; no du gives the factor 4096.
2. v must copy u, but ``dv = 4095`` leaves ``trunc(v / 4096)`` behind and
   ``dv = 0`` integrates u a second time; a spike still zeroes v.
3. A bias enters v, not u, so u never integrates it (biased layers are refused).
4. The self-inhibition of a window's last step arrives after the periodic
   reset, inside the next sample's window.
5. u wraps at +-2^23 where the SRIF membrane (v in the process route) saturates.

What is exact: Lava computes exactly those stock dynamics (tests/backends/lava
reproduces them step by step). Spikes, unlike the state, still agree with
SRIF at a step whenever ``-63 <= carry - drift <= 0`` there (``drift``:
what the truncations took from u; ``carry``: ``trunc(v / 4096)``), because v
is compared with a multiple of 64; that holds only while the membrane
stays below 64 weight units and for fewer than ~64 steps, so it is a
measured property (``compare_with_simulator(..., soft_reset="recurrent",
allow_inexact=True).layers``), not a guarantee. Dense layers without bias,
leak or current decay only.

Running and stopping
--------------------
Lava's blocking ``run`` deadlocks when a ProcessModel raises (the failing
worker exits; its neighbours wait forever for its spikes), so runs are
started non-blocking and watched (:func:`_run_watched`). Every run stops
the Lava runtime when it ends, also on Ctrl-C, SIGTERM and SIGHUP (raised
as :class:`~inflor_deploy.interrupts.Interrupted` while it runs): worker
processes are killed and the shared memory released when a graceful stop
is impossible (:mod:`.teardown`). The workers ignore those signals
themselves and die with the process that started them
(:func:`~inflor_deploy.interrupts.quiet_children`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from inflor_deploy import interrupts
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.backends.sim.compare import Divergence, first_divergence
from inflor_deploy.backends.lava.teardown import create_runtime, guarded_run
from inflor_deploy.backends.sim.int_reference import check_inputs, quantize_input, readout_scores, run_pipelined
from inflor_deploy.backends.sim.lava_arith import LavaArithmeticError, lava_process
from inflor_deploy.backends.sim.lava_arith import encode_dense_weights as _encode_dense_weights

__all__ = [
    "ACCUMULATOR_VTH",
    "FloatAgreement",
    "LavaBackendError",
    "LavaNetwork",
    "LavaParity",
    "LavaRunError",
    "LavaRun",
    "build_network",
    "compare_floating_pt",
    "compare_runs",
    "compare_with_simulator",
    "encode_dense_weights",
    "run_lava",
]

Tag = Literal["fixed_pt", "floating_pt"]
SoftResetRoute = Literal["process", "recurrent"]
TAGS = ("fixed_pt", "floating_pt")
SOFT_RESET_ROUTES = ("process", "recurrent")

#: Threshold of the never-firing accumulator. ``vth << 6 = 2^23`` exceeds the
#: largest v (``2^23 - 1``, v saturates), so it never fires. This is one above
#: the 17-bit hardware field: Lava's simulation does not enforce the width,
#: and with the largest legal value (2^17 - 1) a v within 64 of saturation
#: would fire and be zeroed, which the integer reference never does.
ACCUMULATOR_VTH = 2**17
#: Largest synaptic delay Lava's bit-accurate DelayDense/DelaySparse accept (6 bits; they raise above).
MAX_DELAY = 63
_V_UNITS = 64  # one weight unit in v (a_in << 6)


class LavaBackendError(InflorError):
    """The graph (or a requested option) cannot be mapped onto Lava exactly; the message says why."""


# --------------------------------------------------------------------------- Lava imports


_LAVA: types.SimpleNamespace | None = None


def _lava() -> types.SimpleNamespace:
    """Lava's classes, imported on first use through the shims (importing Lava also sets multiprocessing to fork)."""
    global _LAVA
    if _LAVA is None:
        from inflor_deploy import lava_compat

        lava_compat.apply()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.io.sink import Read
        from lava.proc.io.sink import RingBuffer as SpikeSink
        from lava.proc.io.source import RingBuffer as FrameSource
        from lava.proc.lif.process import LIFReset
        from lava.proc.sparse.process import DelaySparse, Sparse
        from lava.utils.weightutils import SignMode

        from inflor_deploy.backends.lava.procs.soft_reset import SoftResetLIF

        _LAVA = types.SimpleNamespace(**{k: v for k, v in locals().items() if k != "lava_compat"})
    return _LAVA


# --------------------------------------------------------------------------- weights and layouts


def encode_dense_weights(weight: np.ndarray, weight_exp: int = 0, num_weight_bits: int = 8) -> tuple[np.ndarray, str, int]:
    """Weights, sign mode and Lava ``weight_exp`` with which Lava's fixed_pt Dense/Sparse delivers ``(W @ x) << weight_exp``.

    See :func:`inflor_deploy.backends.sim.lava_arith.encode_dense_weights`
    (shared with the simulators, whose wrap depends on the Lava exponent).

    Raises:
        LavaBackendError: No encoding is exact.
    """
    try:
        return _encode_dense_weights(weight, weight_exp, num_weight_bits)
    except LavaArithmeticError as err:
        raise LavaBackendError(str(err)) from err


def _lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava keeps images as (W, H, C) (lava.proc.conv); vectors as they are."""
    if len(shape) == 3:
        return tuple(reversed(shape))
    if len(shape) == 1:
        return tuple(shape)
    raise LavaBackendError(f"layer shape {shape} is neither (C, H, W) nor (N,)")


def _to_lava(x: np.ndarray, layer_ndim: int) -> np.ndarray:
    """``[..., C, H, W] -> [..., W, H, C]`` (vectors unchanged)."""
    return np.swapaxes(x, -1, -3) if layer_ndim == 3 else x


def _from_lava(x: np.ndarray, layer_ndim: int) -> np.ndarray:
    """``[..., W, H, C] -> [..., C, H, W]`` (vectors unchanged)."""
    return np.swapaxes(x, -1, -3) if layer_ndim == 3 else x


def _dense_for_lava(weight: np.ndarray, source_shape: tuple[int, ...], target_shape: tuple[int, ...] = ()) -> np.ndarray:
    """Permute dense columns (and rows, for a ``(C, H, W)`` target) from the IR's (C, H, W) flattening to Lava's (W, H, C)."""
    weight = np.asarray(weight)
    if len(source_shape) == 3:
        c, h, w = source_shape
        weight = weight.reshape(-1, c, h, w).transpose(0, 3, 2, 1).reshape(weight.shape[0], -1)
    if len(target_shape) == 3:  # a dense current into a conv-shaped layer (a bias source's synapse)
        c, h, w = target_shape
        weight = weight.reshape(c, h, w, -1).transpose(2, 1, 0, 3).reshape(c * h * w, -1)
    return weight


def _conv_kernel_for_lava(weight: np.ndarray) -> np.ndarray:
    """Torch cross-correlation kernel [O, C/g, kh, kw] -> Lava convolution kernel [O, kw, kh, C/g]."""
    return np.ascontiguousarray(np.asarray(weight)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def _conv_matrix(node: n.FixedPointSynapse, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """The conv as a sparse matrix from Lava-flattened input (W, H, C) to Lava-flattened output."""
    from scipy.sparse import coo_matrix

    c_in, h, w = in_shape
    c_out, oh, ow = out_shape
    weight = np.asarray(node.weight, dtype=np.int64)
    _, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw) = node.stride, node.padding
    per_group = c_out // node.groups
    o, i, j, c, a, b = np.meshgrid(
        np.arange(c_out), np.arange(oh), np.arange(ow), np.arange(cg), np.arange(kh), np.arange(kw), indexing="ij"
    )
    y, x = sh * i + a - ph, sw * j + b - pw
    channel = (o // per_group) * cg + c
    valid = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    rows = ((j * oh + i) * c_out + o)[valid]  # Lava output index of (x=j, y=i, o)
    cols = ((x * h + y) * c_in + channel)[valid]  # Lava input index of (x, y, channel)
    vals = weight[o, c, a, b][valid]
    matrix = coo_matrix((vals, (rows, cols)), shape=(c_out * oh * ow, c_in * h * w)).tocsr()
    matrix.eliminate_zeros()
    return matrix


# --------------------------------------------------------------------------- the network


@dataclass
class LavaNetwork:
    """A graph as connected Lava Processes, ready to run (not yet compiled).

    Attributes:
        graph: The scheduled fixed-point graph it implements.
        tag: ``"fixed_pt"`` or ``"floating_pt"``: the models it was built for.
        soft_reset: How subtractive-reset layers are realised.
        samples: Samples in the input buffer.
        steps: Steps a run needs (through the last readout, or the full trace window when recording).
        source: The input ``RingBuffer``.
        layers: Layer name -> its neuron Process.
        connections: Synapse name -> its connection Process (recurrent ones as ``"<layer>.recurrent"``).
        readout: The ``Read`` sampling the accumulator's v once per sample window (every
            step for a mean-membrane readout).
        readout_skip: Reads the readout makes before sample 0's (discarded).
        spike_sinks: Layer name -> sink recording its spikes at every step (when recording).
        voltage_reads: Layer name -> ``Read`` of its v at every step (when recording).
    """

    graph: Graph
    tag: str
    soft_reset: str
    samples: int
    steps: int
    source: Any
    layers: dict[str, Any]
    connections: dict[str, Any]
    readout: Any
    readout_skip: int
    spike_sinks: dict[str, Any] = field(default_factory=dict)
    voltage_reads: dict[str, Any] = field(default_factory=dict)

    @property
    def process_count(self) -> int:
        """Lava Processes in the network (each runs as one OS process)."""
        return 2 + len(self.layers) + len(self.connections) + len(self.spike_sinks) + len(self.voltage_reads)


def _check_graph(graph: Graph) -> dict[str, tuple[int, ...]]:
    if not graph.is_fixed_point:
        raise LavaBackendError("the Lava backend runs quantized graphs: run QuantizeFixedPoint first")
    if graph.schedule is None:
        raise LavaBackendError("the Lava backend needs a scheduled graph: run ScheduleTimesteps first")
    shapes = infer_shapes(graph)
    for name, shape in shapes.items():
        _lava_shape(shape)  # raises on unsupported ranks
    return shapes


def _trace_steps(graph: Graph, samples: int) -> int:
    """Steps of ``run_pipelined``'s raw traces: ``samples * R + latency + 1``."""
    return samples * graph.schedule.reset_interval + graph.schedule.latency + 1


def _readout_steps(graph: Graph, samples: int) -> int:
    """Global step of the last readout: ``(S - 1) * R + T + latency``."""
    s = graph.schedule
    return (samples - 1) * s.reset_interval + graph.timesteps + s.latency


def _recurrent_route_problem(node: n.FixedPointNeuron, shape: tuple[int, ...]) -> str | None:
    """Why the stock-CUBA route cannot even approximate this layer, or None."""
    if np.ndim(node.vth) or np.ndim(node.reset_mant):
        return "it has per-channel thresholds or reset amounts (stock LIF has one threshold per population)"
    if len(shape) != 1:
        return "it is a conv layer (the route needs a dense layer: one self-synapse per neuron)"
    if node.dv != 0:
        return f"it leaks (dv={node.dv}); the route spends dv on copying u into v"
    if np.any(np.asarray(node.bias_mant) != 0):
        return "it has a bias; the bias enters v, not u, so u (the membrane) would never integrate it"
    if node.du != 4095:
        return f"its current decays (du={node.du}); the route spends u on holding the membrane"
    try:
        encode_dense_weights(np.array([[-node.reset_mant]]))
    except LavaBackendError:
        return f"reset_mant={node.reset_mant} has no exact 8-bit x 2^e encoding as a synaptic weight"
    return None


#: Why ``soft_reset="recurrent"`` is never bit-exact in lava-nc 0.10.0 (verified in tests/backends/lava).
RECURRENT_ROUTE_INEXACT = (
    "the stock-CUBA soft-reset route (self-inhibitory synapse -reset_mant, du=0) is not bit-exact "
    "in Lava's bit-accurate LIF: (1) the current decay factor is 4096 - (du + 1), so du=0 still "
    "multiplies u by 4095/4096 and truncates, losing ceil(|u|/4096) >= 1 units of the membrane "
    "every step (no du gives factor 4096); (2) v must copy u (dv=4095 leaves v >> 12 behind, "
    "dv=0 integrates u twice); (3) the self-inhibition of a window's last step arrives after the "
    "periodic reset, in the next sample. Use soft_reset='process' (SoftResetLIF, exact), or pass "
    "allow_inexact=True to measure the route anyway"
)


def input_frames(graph: Graph, images: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
    """The input ``RingBuffer``'s data for ``images`` and the message bits the frames need.

    Samples run back to back: column ``k*R + t`` holds sample k's integer frame
    of step t (t < T) in Lava's layout (:func:`_to_lava`): the same frame at
    every step (direct encoding) or frame t of the sequence. The other
    columns are zero.

    Returns:
        ``(frames [*lava_shape, steps] int64, num_message_bits)``.
    """
    R, T = graph.schedule.reset_interval, graph.timesteps
    sequence = graph.input.encoding == "sequence"
    x = _to_lava(quantize_input(graph, images), len(graph.input.shape))
    frames = np.zeros((*x.shape[2 if sequence else 1 :], steps), dtype=np.int64)
    for k in range(x.shape[0]):
        for t in range(T):
            if k * R + t < steps:
                frames[..., k * R + t] = x[k, t] if sequence else x[k]
    input_bits = max(1, int(np.abs(x).max(initial=0)).bit_length() + int(np.any(x < 0)))
    return frames, input_bits


def readout_reader(L, graph: Graph, steps: int, samples: int):
    """``(Read process, reads to skip)`` sampling the accumulator's v as its readout needs.

    Mean current and spike count: one read per sample, after global step
    ``g = k*R + T + depth`` (``Read`` samples after step g when
    ``(g - 1) % interval == offset``); mean membrane: v at every step, summed by
    the host (:func:`readout_values`). Connect it with ``connect_var(<accumulator>.v)``.
    """
    s, T = graph.schedule, graph.timesteps
    if graph.output.readout == "mean_membrane":
        # v at every step g (buffer index g - 1); the host sums each sample's T steps.
        return L.Read(buffer=steps, interval=1, offset=0), 0
    first_read = T + s.depth[graph.output.name]
    offset = (first_read - 1) % s.reset_interval
    skip = (first_read - 1 - offset) // s.reset_interval
    # One spare slot: with T = 1 a recorded run reaches one read past the last sample.
    return L.Read(buffer=skip + samples + 1, interval=s.reset_interval, offset=offset), skip


def readout_values(graph: Graph, data: np.ndarray, samples: int, skip: int) -> np.ndarray:
    """``[B, *shape]`` readouts (IR layout) from the ``[*lava_shape, reads]`` data of :func:`readout_reader`'s Read."""
    out = graph.output
    if out.readout == "mean_membrane":
        R, d = graph.schedule.reset_interval, graph.schedule.depth[out.name]
        # Sample k, step t is global step k*R + t + 1 + d: buffer index k*R + t + d.
        index = np.array([[k * R + t + d for t in range(graph.timesteps)] for k in range(samples)])
        acc = np.moveaxis(data[..., index].sum(axis=-1), -1, 0)  # exact: float64 sums of integers
    else:
        acc = np.moveaxis(data[..., skip : skip + samples], -1, 0)
    return _from_lava(acc, len(infer_shapes(graph)[out.name]))


def build_network(
    graph: Graph,
    images: np.ndarray,
    *,
    tag: Tag = "fixed_pt",
    soft_reset: SoftResetRoute = "process",
    record: bool = False,
    allow_inexact: bool = False,
) -> LavaNetwork:
    """Build the Lava Processes that run ``images`` through a scheduled fixed-point graph.

    Args:
        graph: A scheduled fixed-point graph (``QuantizeFixedPoint`` then ``ScheduleTimesteps``).
        images: ``[B, C, H, W]`` (or ``[B, N]``; ``[B, T, ...]`` for a sequence Input) float inputs inside the
            Input's declared range; quantized with its grade scale.
        tag: ``"fixed_pt"`` (bit-accurate models; integer parameters as in the IR) or
            ``"floating_pt"`` (Lava's float models with the same parameters as
            reals: ``du -> (du + 1)/4096``, ``dv -> dv/4096``, bias in weight units).
        soft_reset: ``"process"``: subtractive layers run on :class:`SoftResetLIF`
            (bit-exact). ``"recurrent"``: on stock ``LIFReset`` with a
            self-inhibitory synapse (dense layers only; never bit-exact, see
            :data:`RECURRENT_ROUTE_INEXACT`; needs ``allow_inexact=True``).
        record: Also record every layer's spikes and v at every step.
        allow_inexact: Accept the inexact stock-CUBA route.

    Raises:
        LavaBackendError: The graph is not scheduled fixed point, a weight
            matrix has no exact Lava encoding, or the soft-reset route is refused.
    """
    if tag not in TAGS:
        raise LavaBackendError(f"tag must be one of {TAGS}, got {tag!r}")
    if soft_reset not in SOFT_RESET_ROUTES:
        raise LavaBackendError(f"soft_reset must be one of {SOFT_RESET_ROUTES}, got {soft_reset!r}")
    shapes = _check_graph(graph)
    images = np.asarray(images)
    sequence = graph.input.encoding == "sequence"
    frame_shape = (graph.timesteps, *graph.input.shape) if sequence else tuple(graph.input.shape)
    if images.ndim < 2 or images.shape[0] < 1 or tuple(images.shape[1:]) != frame_shape:
        raise LavaBackendError(
            f"images must be [B, {', '.join(map(str, frame_shape))}] with B >= 1"
            f"{' (a sequence: T frames per sample)' if sequence else ''}, got {images.shape}"
        )
    check_inputs(graph.input, images)  # finite and inside the declared range
    recurrent_layers = []
    if soft_reset == "recurrent":
        for node in graph.of_type(n.FixedPointNeuron):
            if node.reset != "subtract":
                continue
            problem = _recurrent_route_problem(node, shapes[node.name])
            if problem:
                raise LavaBackendError(f"layer {node.name!r} cannot use the stock-CUBA soft-reset route: {problem}")
            recurrent_layers.append(node.name)
        if recurrent_layers and not allow_inexact:
            raise LavaBackendError(RECURRENT_ROUTE_INEXACT)

    L = _lava()
    fixed = tag == "fixed_pt"
    schedule, samples = graph.schedule, images.shape[0]
    steps = _trace_steps(graph, samples) if record else _readout_steps(graph, samples)

    frames, input_bits = input_frames(graph, images, steps)
    source = L.FrameSource(data=frames.astype(np.int32) if fixed else frames.astype(np.float64))

    layers: dict[str, Any] = {}
    for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        layers[node.name] = _neuron(L, node, shapes[node.name], schedule, fixed, node.name in recurrent_layers)

    def out_port(name: str):
        return source.s_out if name == graph.input.name else layers[name].s_out

    target_of = {syn: name for name in layers for syn in graph.node(name).sources}  # synapse -> the layer it feeds
    connections: dict[str, Any] = {}
    for syn in graph.of_type(n.FixedPointSynapse):
        src = syn.sources[0]
        bits = input_bits if src == graph.input.name else 0
        proc, in_port, out = _connection(L, syn, shapes[src], shapes[target_of[syn.name]], bits, fixed)
        port = out_port(src)
        if in_port.shape != port.shape:
            port = port.reshape(in_port.shape)
        port.connect(in_port)
        target_in = layers[target_of[syn.name]].a_in
        (out if out.shape == target_in.shape else out.reshape(target_in.shape)).connect(target_in)
        connections[syn.name] = proc

    for name in recurrent_layers:
        node = graph.node(name)
        self_inhibition = -int(node.reset_mant) * np.eye(math.prod(shapes[name]), dtype=np.int64)
        proc = _dense_process(L, self_inhibition, 0, 0, fixed)
        layers[name].s_out.connect(proc.s_in)
        proc.a_out.connect(layers[name].a_in)
        connections[f"{name}.recurrent"] = proc

    readout, skip = readout_reader(L, graph, steps, samples)
    readout.connect_var(layers[graph.output.name].v)

    spike_sinks, voltage_reads = {}, {}
    if record:
        for name, proc in layers.items():
            if isinstance(graph.node(name), n.FixedPointNeuron):
                sink = L.SpikeSink(shape=proc.s_out.shape, buffer=steps)
                proc.s_out.connect(sink.a_in)
                spike_sinks[name] = sink
            read = L.Read(buffer=steps, interval=1, offset=0)
            read.connect_var(proc.v)
            voltage_reads[name] = read
    return LavaNetwork(
        graph=graph,
        tag=tag,
        soft_reset=soft_reset,
        samples=samples,
        steps=steps,
        source=source,
        layers=layers,
        connections=connections,
        readout=readout,
        readout_skip=skip,
        spike_sinks=spike_sinks,
        voltage_reads=voltage_reads,
    )


def _per_neuron(value, shape: tuple[int, ...]) -> np.ndarray:
    """A layer's scalar or per-channel integer as one value per neuron, in Lava's (W, H, C) layout."""
    array = np.asarray(n.per_channel(np.asarray(value, dtype=np.int64), len(shape)), dtype=np.int64)
    return np.ascontiguousarray(_to_lava(np.broadcast_to(array, shape), len(shape)))


def _uses_stock_lif(node: n.Node) -> bool:
    """Whether a layer runs on Lava's stock ``LIFReset``: the accumulator, and hard-reset layers with one threshold."""
    if isinstance(node, n.FixedPointAccumulator):
        return True
    return node.reset == "zero" and np.ndim(node.vth) == 0


def _neuron(L, node, shape, schedule, fixed: bool, recurrent: bool):
    """The Lava neuron Process of one layer (or the accumulator)."""
    lava_shape = _lava_shape(shape)
    bias = _to_lava(np.broadcast_to(np.asarray(node.bias_mant, dtype=np.int64), shape), len(shape))
    common = dict(
        shape=lava_shape, reset_interval=schedule.reset_interval, reset_offset=schedule.reset_offset[node.name]
    )
    accumulator = isinstance(node, n.FixedPointAccumulator)
    du = 4095 if accumulator else int(node.du)
    dv = int(node.dv)
    stock = _uses_stock_lif(node) or recurrent
    if accumulator:
        vth = ACCUMULATOR_VTH
    elif stock:
        vth = int(node.vth)
    else:
        vth = _per_neuron(node.vth, shape)
    if recurrent:
        # Stock-CUBA route: u holds the membrane (du = 0), v copies u (dv = 4095).
        du, dv = 0, 4095
    if fixed:
        params = dict(du=du, dv=dv, vth=vth, bias_mant=bias.astype(np.int32), bias_exp=int(node.bias_exp), **common)
    else:
        # Lava's float LIF: u *= 1 - du; v *= 1 - dv; bias_mant used as is (bias_exp ignored).
        params = dict(
            du=(du + 1) / 4096,
            dv=dv / 4096,
            vth=float(np.inf) if accumulator else (float(vth) if stock else vth.astype(np.float64)),
            bias_mant=bias * 2.0 ** (int(node.bias_exp) - 6),
            bias_exp=0,
            **common,
        )
    if stock:
        return L.LIFReset(name=node.name, **params)
    reset = _per_neuron(node.reset_mant, shape)
    return L.SoftResetLIF(
        reset_mant=reset if fixed else reset.astype(np.float64), reset_mode=node.reset, name=node.name, **params
    )


def _dense_process(L, weight, delay: int, bits: int, fixed: bool, sparse: bool = False, weight_exp: int = 0,
                   num_weight_bits: int = 8):  # fmt: skip
    """Dense / DelayDense / Sparse / DelaySparse delivering exactly ``(weight @ x) << weight_exp``.

    ``sparse``: ``weight`` is a scipy CSR matrix of the kept connections
    (Sparse without delay, DelaySparse with one).
    """
    values = weight.data if sparse else weight  # a scipy CSR matrix stores its nonzeros in .data
    if fixed:
        encoded, mode, exp = encode_dense_weights(values, weight_exp, num_weight_bits)
        kwargs = dict(sign_mode=getattr(L.SignMode, mode), weight_exp=exp, num_weight_bits=int(num_weight_bits))
        if sparse:
            weight = weight.copy()
            weight.data = encoded.astype(np.int64)
        else:
            weight = encoded.astype(np.int64)
    else:
        # Lava's float models multiply by the weights as given: carry the exponent in them.
        kwargs = {}
        if sparse:
            weight = weight.astype(np.float64)
            weight.data *= 2.0**weight_exp
        else:
            weight = weight.astype(np.float64) * 2.0**weight_exp
    if sparse:
        if not delay:
            return L.Sparse(weights=weight, num_message_bits=bits, **kwargs)
        delays = weight.copy().astype(np.int64)
        delays.data[:] = delay
        return L.DelaySparse(weights=weight, delays=delays, num_message_bits=bits, **kwargs)
    if delay:
        return L.DelayDense(weights=weight, delays=int(delay), num_message_bits=bits, **kwargs)
    return L.Dense(weights=weight, num_message_bits=bits, **kwargs)


def _connection(L, syn: n.FixedPointSynapse, in_shape, out_shape, bits: int, fixed: bool):
    """``(process, its input port, its output port)`` for one synapse."""
    if syn.delay > MAX_DELAY:
        raise LavaBackendError(
            f"synapse {syn.name!r} has a delay of {syn.delay} steps; Lava's DelayDense/DelaySparse "
            f"allow at most {MAX_DELAY} (6-bit delays)"
        )
    process = lava_process(syn, graded=bits > 0)
    exp, weight_bits = int(syn.weight_exp), int(syn.weight_bits)
    if process in ("Dense", "DelayDense"):
        proc = _dense_process(L, _dense_for_lava(syn.weight, in_shape, out_shape), syn.delay, bits, fixed,
                              weight_exp=exp, num_weight_bits=weight_bits)  # fmt: skip
        return proc, proc.s_in, proc.a_out
    if process in ("Sparse", "DelaySparse"):
        from scipy.sparse import csr_matrix

        if syn.kind == "conv":
            matrix = _conv_matrix(syn, in_shape, out_shape)
        else:
            matrix = csr_matrix(np.asarray(_dense_for_lava(syn.weight, in_shape, out_shape), dtype=np.int64))
            matrix.eliminate_zeros()
        proc = _dense_process(L, matrix, syn.delay, bits, fixed, sparse=True, weight_exp=exp,
                              num_weight_bits=weight_bits)  # fmt: skip
        return proc, proc.s_in, proc.a_out
    kernel = _conv_kernel_for_lava(syn.weight)
    proc = L.Conv(
        weight=kernel.astype(np.int32) if fixed else kernel.astype(np.float64),
        input_shape=_lava_shape(in_shape),
        padding=(int(syn.padding[1]), int(syn.padding[0])),
        stride=(int(syn.stride[1]), int(syn.stride[0])),
        groups=int(syn.groups),
        num_message_bits=bits,
        name=syn.name,
    )
    return proc, proc.s_in, proc.a_out


# --------------------------------------------------------------------------- running


@dataclass
class LavaRun:
    """Result of :func:`run_lava`.

    Attributes:
        accumulator: ``[B, classes]`` integer readout of each sample window
            (v after its last step, or the sum of v over its T steps for a
            mean-membrane readout): int64 in v units (64 per weight unit) for
            fixed_pt, float64 in weight units for floating_pt.
        spikes: Neuron layer -> ``[G, ...]`` uint8 spikes at global steps
            ``g = 1..G`` (index ``g - 1``), per-sample shape in the IR's
            ``(C, H, W)`` order: the layout of ``run_pipelined``'s raw traces.
        voltages: Layer (and accumulator) -> ``[G, ...]`` v after each step.
        seconds: Wall time of the whole call (build, compile, run, read back).
        compile_seconds: Compiling and starting Lava's workers.
        run_seconds: The ``RunSteps`` run alone.
        steps: Steps run.
        samples: Samples run.
        tag: Lava model tag.
        soft_reset: Soft-reset route.
        processes: Lava Processes in the network.
    """

    accumulator: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    voltages: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    steps: int = 0
    samples: int = 0
    tag: str = "fixed_pt"
    soft_reset: str = "process"
    processes: int = 0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.run_seconds if self.run_seconds else math.inf

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.run_seconds if self.run_seconds else math.inf


def run_lava(
    graph: Graph,
    images: np.ndarray,
    *,
    record_layers: bool = False,
    tag: Tag = "fixed_pt",
    soft_reset: SoftResetRoute = "process",
    allow_inexact: bool = False,
) -> LavaRun:
    """Run every sample through the network in one Lava run (``Loihi2SimCfg(select_tag=tag)``, ``RunSteps``).

    The runtime is always stopped, also when the run fails or is
    interrupted; see :func:`build_network` for the arguments.
    """
    start = time.perf_counter()
    net = build_network(
        graph, images, tag=tag, soft_reset=soft_reset, record=record_layers, allow_inexact=allow_inexact
    )
    L = _lava()
    shapes = infer_shapes(graph)
    anchor = net.source
    with guarded_run(anchor):
        t0 = time.perf_counter()
        create_runtime(anchor, L.Loihi2SimCfg(select_tag=tag))
        t1 = time.perf_counter()
        _run_watched(anchor, L.RunSteps(num_steps=net.steps, blocking=False))
        t2 = time.perf_counter()
        acc = readout_values(graph, np.asarray(net.readout.data.get()), net.samples, net.readout_skip)
        spikes = {
            name: _from_lava(np.moveaxis(np.asarray(sink.data.get()), -1, 0), len(shapes[name])).astype(np.uint8)
            for name, sink in net.spike_sinks.items()
        }
        voltages = {
            name: _from_lava(np.moveaxis(np.asarray(read.data.get()), -1, 0), len(shapes[name]))
            for name, read in net.voltage_reads.items()
        }
    if tag == "fixed_pt":
        acc = np.rint(acc).astype(np.int64)
        voltages = {k: np.rint(v).astype(np.int64) for k, v in voltages.items()}
    return LavaRun(
        accumulator=acc,
        spikes=spikes,
        voltages=voltages,
        seconds=time.perf_counter() - start,
        compile_seconds=t1 - t0,
        run_seconds=t2 - t1,
        steps=net.steps,
        samples=net.samples,
        tag=tag,
        soft_reset=soft_reset,
        processes=net.process_count,
    )


class LavaRunError(RuntimeError):
    """A Lava worker process failed during a run; the message carries its traceback."""


def _run_watched(anchor, condition) -> None:
    """Run non-blocking and wait for the end, failing fast if a worker dies.

    Lava's blocking run deadlocks when a ProcessModel raises: the failing
    worker reports the error and exits, but its neighbours wait forever for
    its spikes, so the runtime service never collects every reply and the
    runtime never hears of the error. So the run is started non-blocking and
    watched here: every worker must stay alive until all runtime services
    have answered, and every answer must be DONE.
    """
    from lava.magma.runtime.mgmt_token_enums import MGMT_RESPONSE, enum_equal

    anchor.run(condition=condition)
    runtime = anchor.runtime
    replies = list(runtime.service_to_runtime)
    actors = list(runtime._messaging_infrastructure.actors)
    while not all(port.probe() for port in replies):
        interrupts.check()
        dead = [actor for actor in actors if actor.exitcode is not None]
        if dead:
            reports = [actor.exception for actor in dead]
            tracebacks = [tb for (_, tb) in (r for r in reports if r)]
            details = "\n".join(tracebacks) or f"exit codes {[a.exitcode for a in dead]}"
            raise LavaRunError(f"{len(dead)} Lava worker process(es) stopped during the run:\n{details}")
        time.sleep(0.001)
    for port in replies:
        reply = port.peek()
        if not enum_equal(reply, MGMT_RESPONSE.DONE):
            raise LavaRunError(f"Lava's runtime service answered {reply} instead of DONE")
    runtime.wait()  # consumes the DONE replies


# --------------------------------------------------------------------------- parity


def _deskew(graph: Graph, raw: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    """Raw ``[G, ...]`` traces -> ``[T, B, ...]``: layer at depth d, sample k, step t is at index ``k*R + t + d``."""
    s = graph.schedule
    out = {}
    for name, trace in raw.items():
        d = s.depth[name]
        idx = np.array([[k * s.reset_interval + t + d for k in range(samples)] for t in range(graph.timesteps)])
        out[name] = trace[idx]
    return out


@dataclass
class LavaParity:
    """Parity level 3: Lava fixed_pt against the fixed-point simulator (pipelined view), bit for bit.

    Attributes:
        ok: Every spike, every v and every readout equal.
        first_divergence: The earliest differing value (timestep = step within
            the sample window, sample = window index; see ``global_step``), or None.
        global_step: Lava time step (from 1) of the first divergence, or None.
        readout_equal: The per-sample accumulator readouts are equal.
        layers: Layer -> ``{"spikes_equal": bool | None, "voltages_equal": bool}``.
        samples, steps: Run size.
        lava_seconds, reference_seconds: Wall times.
        soft_reset: Route compared.
    """

    ok: bool
    first_divergence: Divergence | None
    global_step: int | None
    readout_equal: bool
    layers: dict[str, dict[str, bool | None]]
    samples: int
    steps: int
    lava_seconds: float
    reference_seconds: float
    soft_reset: str = "process"

    def summary(self) -> str:
        if self.ok:
            return (
                f"Lava fixed_pt == fixed-point simulator (pipelined) on {self.samples} samples, {self.steps} steps: "
                f"every spike, every v of {len(self.layers)} layers, and the readout"
            )
        where = (
            f"first divergence at Lava step {self.global_step}: {self.first_divergence}"
            if self.first_divergence
            else "readout differs"
        )
        return f"Lava fixed_pt diverges from the fixed-point simulator (pipelined): {where}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["first_divergence"] = self.first_divergence.to_dict() if self.first_divergence else None
        out["summary"] = self.summary()
        return out


def compare_with_simulator(
    graph: Graph,
    images: np.ndarray,
    *,
    soft_reset: SoftResetRoute = "process",
    allow_inexact: bool = False,
) -> LavaParity:
    """Run Lava fixed_pt and the fast simulator's pipelined view on the same samples; compare bit for bit.

    Compares, per global step, every layer's spikes and v (in data-flow
    order), then the accumulator readout of every sample; names the first
    divergence (smallest step, then the earliest layer). The simulator is
    itself checked against ``int_reference.run_pipelined`` (parity level 2).
    """
    from inflor_deploy.backends.sim.fixed_point import simulate

    t0 = time.perf_counter()
    reference = simulate(graph, images, view="pipelined", record=True)
    reference_seconds = time.perf_counter() - t0
    lava = run_lava(
        graph, images, record_layers=True, tag="fixed_pt", soft_reset=soft_reset, allow_inexact=allow_inexact
    )
    return compare_runs(graph, reference, lava, reference_seconds=reference_seconds)


def compare_runs(graph: Graph, reference, lava: LavaRun, *, reference_seconds: float = 0.0) -> LavaParity:
    """Parity of a recorded fixed_pt Lava run with the simulator's recorded pipelined run of the same samples.

    Args:
        graph: The scheduled fixed-point graph both ran.
        reference: ``simulate(graph, images, view="pipelined", record=True)``.
        lava: A :class:`LavaRun` with every layer's spikes and v recorded
            (``[G, ...]`` at global steps 1..G, the IR's layout) and the readout.
        reference_seconds: Wall time of the reference run, reported.
    """
    raw = reference.raw
    order = [node.name for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    # One "batch" of the whole pipelined run: [G, 1, ...].
    ref = {kind: {k: v[:, None] for k, v in raw[kind].items()} for kind in ("spikes", "voltages")}
    cand = {kind: {k: v[:, None] for k, v in getattr(lava, kind).items()} for kind in ("spikes", "voltages")}
    found = []
    for kind in ("spikes", "voltages"):
        names = [name for name in order if name in ref[kind]]
        div = first_divergence(ref[kind], cand[kind], names)
        if div is not None:
            found.append((div.timestep, names.index(div.layer), kind, div))
    layers = {
        name: {
            "spikes_equal": (
                bool(np.array_equal(raw["spikes"][name], lava.spikes[name])) if name in raw["spikes"] else None
            ),
            "voltages_equal": bool(np.array_equal(raw["voltages"][name], lava.voltages[name])),
        }
        for name in order
    }
    readout_equal = bool(np.array_equal(reference.accumulator, lava.accumulator))
    divergence, global_step = None, None
    if found:
        _, _, _, div = min(found, key=lambda f: f[:2])
        global_step = div.timestep + 1
        k, t = divmod(div.timestep - graph.schedule.depth[div.layer], graph.schedule.reset_interval)
        divergence = dataclasses.replace(div, timestep=t, sample=k)
    elif not readout_equal:
        out = graph.output.name
        div = first_divergence({out: reference.accumulator[None]}, {out: lava.accumulator[None]}, [out])
        divergence = dataclasses.replace(div, layer=f"{out} (readout)", timestep=graph.timesteps - 1)
    return LavaParity(
        ok=divergence is None,
        first_divergence=divergence,
        global_step=global_step,
        readout_equal=readout_equal,
        layers=layers,
        samples=lava.samples,
        steps=lava.steps,
        lava_seconds=lava.seconds,
        reference_seconds=reference_seconds,
        soft_reset=lava.soft_reset,
    )


@dataclass
class FloatAgreement:
    """Lava's floating_pt models against the integer reference (and the float graph): statistical.

    Attributes:
        spike_agreement: Layer -> fraction of equal spikes vs the integer
            reference (de-skewed ``[T, B, ...]``).
        class_agreement: Fraction of samples whose argmax class equals the integer reference's.
        float_graph_spike_agreement: Layer -> fraction equal vs ``run_float(float_graph)``, when given.
        float_graph_class_agreement: Argmax agreement vs the float graph, when given.
        max_score_error: Largest ``|score_lava_float - score_int|`` (class scores of the graph's readout).
        samples: Samples compared.
    """

    spike_agreement: dict[str, float]
    class_agreement: float
    float_graph_spike_agreement: dict[str, float] | None
    float_graph_class_agreement: float | None
    max_score_error: float
    samples: int

    def summary(self) -> str:
        worst = min(self.spike_agreement, key=self.spike_agreement.get) if self.spike_agreement else None
        line = (
            f"Lava floating_pt vs integer reference on {self.samples} samples: "
            f"class agreement {self.class_agreement:.3f}"
        )
        if worst:
            line += f", min spike agreement {self.spike_agreement[worst]:.4f} ({worst})"
        if self.float_graph_class_agreement is not None:
            line += f"; vs float graph: class agreement {self.float_graph_class_agreement:.3f}"
        return line


def compare_floating_pt(graph: Graph, images: np.ndarray, *, float_graph: Graph | None = None) -> FloatAgreement:
    """Run the network on Lava's floating_pt models and measure agreement (no exactness expected).

    The float models integrate the same parameters as reals (no truncating
    decays, no wrap or clip), so they differ from the integer reference
    only where a leak or decay rounds or a state overflows.
    """
    samples = np.asarray(images).shape[0]
    reference, _ = run_pipelined(graph, images, record=True)
    lava = run_lava(graph, images, record_layers=True, tag="floating_pt")
    spikes = _deskew(graph, lava.spikes, samples)
    agreement = {name: float(np.mean(spikes[name] == reference.spikes[name])) for name in spikes}
    # Fixed: v in 64ths of a weight unit; float: weight units.
    int_scores = readout_scores(graph, reference.accumulator)
    float_scores = readout_scores(graph, lava.accumulator * _V_UNITS)
    class_agreement = float(np.mean(int_scores.argmax(1) == float_scores.argmax(1)))
    fg_spikes = fg_class = None
    if float_graph is not None:
        from inflor_deploy.backends.sim.float_ir import run_float

        fl = run_float(float_graph, images, record=True)
        fg_spikes = {name: float(np.mean(spikes[name] == fl.spikes[name])) for name in spikes if name in fl.spikes}
        fg_class = float(np.mean(fl.scores.argmax(1) == float_scores.argmax(1)))
    return FloatAgreement(
        spike_agreement=agreement,
        class_agreement=class_agreement,
        float_graph_spike_agreement=fg_spikes,
        float_graph_class_agreement=fg_class,
        max_score_error=float(np.abs(float_scores - int_scores).max(initial=0)),
        samples=samples,
    )
