"""The integer reference: the quantized IR's semantics written for clarity, not speed.

Every value is an int64 numpy array and every step follows Lava's
``PyLifModelBitAcc`` (lava-nc 0.10.0, ``proc/lif/models.py``) literally,
with its int32 arithmetic written out (``wrap_32``)::

    a = wrap_32(sum of the synapses' currents)
    u = sign(u * (4096 - (du + 1))) * (|u * (4096 - (du + 1))| >> 12)
    u = wrap_32(u + wrap_32(a << 6));  u -= 2^24 where u > 2^23;  u += 2^24 where u <= -2^23
    v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12)
    v = clip(wrap_32(wrap_32(v + u) + (bias_mant << bias_exp)), -(2^23 - 1), 2^23 - 1)
    s = v > (vth << 6);  v -= reset_mant << 6 (subtract) or v = 0 (zero) where s, v kept (none)

(vth and reset_mant per channel where the layer has them). The accumulator
is a never-firing neuron with ``dv`` from its readout's leak; its integer
readout per sample is ``v[T-1]`` (mean current, spike count) or
``sum_{t<T} v[t]`` (mean membrane), see :class:`~inflor_deploy.ir.FixedPointAccumulator`.

(the 24-bit wrap is applied once, exactly as Lava does). A synapse's
current is the exact integer sum (convolutions by im2col + int64 matmul)
passed through the wrap of the Lava Process that runs it
(:mod:`~inflor_deploy.backends.sim.lava_arith`: Conv 24 bits, Dense and
Sparse 32). The fast simulator is checked against this module bit for bit
(parity level 2).

Inputs: :func:`quantize_input` refuses values outside the Input's declared
``value_range`` and graded values beyond the 32-bit payload; a sequence
Input (:class:`~inflor_deploy.ir.nodes.Input`) takes ``[B, T, *shape]`` and
shows frame t at step t.

Two views of one run:

* **aligned** — every layer at the same timestep t = 0..T-1, like PyTorch;
* **pipelined** — as Lava runs it: global steps g = 1, 2, ... (Lava's
  ``time_step``), a connection adds one step plus its delay, sample k's
  frame occupies input columns ``k * R + t`` (``R = reset_interval``,
  zero frames pad ``t = T..R-1``), and a layer at depth d resets its state
  at the start of every step g with ``g % R == (d + 1) % R`` (the input
  column c is emitted at step c + 1 and reaches depth d at step c + 1 + d).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inflor_deploy.backends.sim.lava_arith import check_sum_bound, lava_current, synapse_arithmetic, weight_reach, wrap
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, infer_shapes

U_LIMIT = 2**23  # u wraps into (-2^23, 2^23]
V_LIMIT = 2**23 - 1  # v saturates at +-(2^23 - 1)
DECAY_UNIT = 4096
ACT_SHIFT = 6
VTH_SHIFT = 6


@dataclass
class IntRun:
    """Result of an integer run.

    Attributes:
        accumulator: ``[B, classes]`` int64 integer readout of each sample
            window: the accumulator's v after step T-1 (mean current, spike
            count) or its sum over the window's T steps (mean membrane);
            units: 64 per weight unit.
        spikes: Neuron name -> ``[T, B, ...]`` uint8 (when recorded).
        voltages: Neuron/accumulator name -> ``[T, B, ...]`` int64 v after the
            step's reset (when recorded).
        currents: Neuron/accumulator name -> ``[T, B, ...]`` int64 u (when recorded).
        u_wraps: Layer name -> count of u wrap events.
        v_saturations: Layer name -> count of v clip events.
    """

    accumulator: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    voltages: dict[str, np.ndarray] = field(default_factory=dict)
    currents: dict[str, np.ndarray] = field(default_factory=dict)
    u_wraps: dict[str, int] = field(default_factory=dict)
    v_saturations: dict[str, int] = field(default_factory=dict)

    def scores(self, graph: Graph) -> np.ndarray:
        """Float class scores, comparable with the float model's: ``R / (64 * scale * T)``, or ``/ (64 * scale)`` for a count."""
        return readout_scores(graph, self.accumulator)


def readout_scores(graph: Graph, readout: np.ndarray) -> np.ndarray:
    """Class scores from the integer readouts ``R`` (v units) of the graph's accumulator (see FixedPointAccumulator)."""
    out = graph.output
    return readout / (2**ACT_SHIFT * out.scale * n.readout_divisor(out, graph.timesteps))


#: A graded input value travels as int32 (Lava's RingBuffer; the Loihi 2 graded payload is 32 bits).
GRADED_LIMIT = 2**31


def check_inputs(node: n.Input, images: np.ndarray) -> np.ndarray:
    """``images`` as an array, or :class:`IRError` if they do not fit the Input.

    Checks the shape (``[B, *shape]`` direct, ``[B, T, *shape]`` sequence,
    with T the graph's timesteps when given) and that every value is finite
    and inside the declared ``value_range``: a backend never runs inputs the
    network was not compiled for.
    """
    images = np.asarray(images)
    shape = tuple(node.shape)
    sequence = node.encoding == "sequence"
    expected = ("[B, T, " if sequence else "[B, ") + ", ".join(map(str, shape)) + "]"
    lead = 2 if sequence else 1
    if images.ndim != len(shape) + lead or tuple(images.shape[lead:]) != shape:
        raise IRError(f"inputs of shape {tuple(images.shape)} do not fit the graph's {node.encoding} input {expected}")
    if images.size:
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise IRError("the inputs contain NaN or infinite values")
        low, high = node.value_range
        # A bound is also met by its float32 rounding (float32 data cannot hold e.g. 0.1 exactly).
        if lo < min(low, float(np.float32(low))) or hi > max(high, float(np.float32(high))):
            raise _outside(lo, hi, node)
    return images


def _outside(lo: float, hi: float, node: n.Input) -> IRError:
    low, high = node.value_range
    return IRError(
        f"inputs span [{lo:g}, {hi:g}], outside the range [{low:g}, {high:g}] the network was compiled "
        "for; convert the data to that range, or compile with --input-range covering it"
    )


def quantize_input(graph: Graph, images: np.ndarray) -> np.ndarray:
    """Integer graded input ``round(image * grade_scale)`` (half to even), int64.

    Raises:
        IRError: No grade scale yet, inputs that do not fit the Input
            (:func:`check_inputs`), or graded values beyond 32 bits.
    """
    scale = graph.input.grade_scale
    if scale is None:
        raise IRError("the graph's Input has no grade_scale: quantize the graph first")
    images = check_inputs(graph.input, images)
    graded = np.rint(np.asarray(images, dtype=np.float64) * scale)
    # The quantizer planned for exactly these integers: the graded ends of the declared range.
    g_low, g_high = (float(np.rint(np.float64(v) * scale)) for v in graph.input.value_range)
    if graded.size and (float(graded.min()) < g_low or float(graded.max()) > g_high):
        raise _outside(float(np.min(images)), float(np.max(images)), graph.input)
    if graded.size and float(np.abs(graded).max()) >= GRADED_LIMIT:
        raise IRError(
            f"graded inputs reach {float(np.abs(graded).max()):.0f}, beyond the 32-bit graded payload "
            f"(|round(x * {scale:g})| < 2^31); reduce the input range or the grade scale"
        )
    return graded.astype(np.int64)


def frame(graph: Graph, x: np.ndarray, t: int) -> np.ndarray:
    """The input frame of step t: ``x`` itself (direct encoding) or ``x[:, t]`` (sequence)."""
    return x[:, t] if graph.input.encoding == "sequence" else x


def _decay(x: np.ndarray, factor: int) -> np.ndarray:
    """``sign(x * factor) * (|x * factor| >> 12)``: rounds toward zero."""
    product = x * factor
    return np.sign(product) * (np.abs(product) >> 12)


def _wrap_u(u: np.ndarray) -> tuple[np.ndarray, int]:
    """Lava's single 24-bit wrap of u (``subthr_dynamics``), and how many values it changed."""
    wrapped = np.where(u > U_LIMIT, u - 2 * U_LIMIT, u)
    wrapped = np.where(wrapped <= -U_LIMIT, u + 2 * U_LIMIT, wrapped)
    return wrapped, int(np.count_nonzero(wrapped != u))


def _conv_int(x: np.ndarray, node: n.FixedPointSynapse) -> np.ndarray:
    """Exact integer cross-correlation of x [B, C, H, W] (im2col + int64 matmul)."""
    w = node.weight.astype(np.int64)
    out_c, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), groups = node.stride, node.padding, node.groups
    b, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    # cols[b, c, a, bb, i, j] = xp[b, c, sh*i + a, sw*j + bb]
    cols = np.empty((b, c, kh, kw, oh, ow), dtype=np.int64)
    for a in range(kh):
        for bb in range(kw):
            cols[:, :, a, bb] = xp[:, :, a : a + sh * oh : sh, bb : bb + sw * ow : sw]
    out = np.empty((b, out_c, oh, ow), dtype=np.int64)
    per_group = out_c // groups
    for g in range(groups):
        xs = cols[:, g * cg : (g + 1) * cg].reshape(b, cg * kh * kw, oh * ow)
        ws = w[g * per_group : (g + 1) * per_group].reshape(per_group, cg * kh * kw)
        out[:, g * per_group : (g + 1) * per_group] = np.einsum("ok,bkp->bop", ws, xs).reshape(b, per_group, oh, ow)
    return out


def synapse_current(node: n.FixedPointSynapse, x: np.ndarray, graded: bool = False) -> np.ndarray:
    """The integer current Lava delivers for source output x [B, ...]: the exact sum, then its wrap.

    Args:
        node: The synapse.
        x: ``[B, ...]`` int64 spikes (0/1) or graded input values.
        graded: x is the graded Input (else spikes); picks the Lava Process
            (:func:`~inflor_deploy.backends.sim.lava_arith.synapse_arithmetic`).
    """
    arith = synapse_arithmetic(node, graded)
    reach = int(np.abs(x).max(initial=0)) if graded else 1
    check_sum_bound(node, arith, weight_reach(node) * reach)
    if node.kind == "conv":
        exact = _conv_int(x, node)
    else:
        exact = x.reshape(x.shape[0], -1) @ node.weight.astype(np.int64).T
    return lava_current(arith, exact)


class _LayerState:
    """u and v of one neuron layer (or the accumulator) for a batch."""

    def __init__(self, node, batch: int, shape: tuple[int, ...]):
        self.node = node
        self.u = np.zeros((batch, *shape), dtype=np.int64)
        self.v = np.zeros((batch, *shape), dtype=np.int64)
        bias = np.broadcast_to(node.bias_mant.astype(np.int64), shape)
        e = node.bias_exp
        self.bias = bias << e if e >= 0 else bias >> -e
        if isinstance(node, n.FixedPointNeuron):
            # One threshold / reset amount per layer, or per channel (broadcast over [B, C, ...]).
            self.threshold = n.per_channel(np.asarray(node.vth, dtype=np.int64), len(shape)) << VTH_SHIFT
            self.reset_amount = n.per_channel(np.asarray(node.reset_mant, dtype=np.int64), len(shape)) << ACT_SHIFT
        self.wraps = 0
        self.saturations = 0

    def reset(self) -> None:
        self.u[:] = 0
        self.v[:] = 0

    def step(self, a: np.ndarray) -> np.ndarray | None:
        node = self.node
        du = node.du if isinstance(node, n.FixedPointNeuron) else DECAY_UNIT - 1
        dv = node.dv
        a = wrap(a, 32)  # the InPort adds the int32 channels in int32
        u = wrap(_decay(self.u, DECAY_UNIT - (du + 1)) + wrap(a << ACT_SHIFT, 32), 32)
        self.u, wraps = _wrap_u(u)
        self.wraps += wraps
        v = wrap(wrap(_decay(self.v, DECAY_UNIT - dv) + self.u, 32) + self.bias, 32)
        self.saturations += int(np.count_nonzero((v > V_LIMIT) | (v < -V_LIMIT)))
        self.v = np.clip(v, -V_LIMIT, V_LIMIT)
        if isinstance(node, n.FixedPointAccumulator):
            return None
        fired = self.v > self.threshold
        if node.reset == "subtract":
            self.v = self.v - np.where(fired, self.reset_amount, 0)
        elif node.reset == "zero":
            self.v = np.where(fired, 0, self.v)
        return fired.astype(np.int64)


def _check(graph: Graph) -> dict[str, tuple[int, ...]]:
    if not graph.is_fixed_point:
        raise IRError("the integer reference runs quantized graphs (after QuantizeFixedPoint)")
    return infer_shapes(graph)


def run_aligned(graph: Graph, images: np.ndarray, record: bool | str = False,
                forced_spikes: dict[str, np.ndarray] | None = None) -> IntRun:  # fmt: skip
    """Every layer at the same timestep, samples in parallel (synaptic delays ignored).

    Args:
        graph: A fixed-point graph.
        images: ``[B, *input_shape]`` (``[B, T, ...]`` for a sequence Input).
        record: True keeps every spike, v and u trace; ``"spikes"`` only the spikes.
        forced_spikes: Layer -> ``[T, B, ...]`` 0/1 spikes sent downstream instead of the
            layer's own (which are still recorded): teacher forcing, so that each layer's
            differences from a reference run are its own arithmetic's
            (``compare`` module docstring).
    """
    shapes = _check(graph)
    x = quantize_input(graph, images)
    batch, T = x.shape[0], graph.timesteps
    states = {node.name: _LayerState(node, batch, shapes[node.name])
              for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)}  # fmt: skip
    traces: dict[str, dict[str, list]] = {"spikes": {}, "voltages": {}, "currents": {}}
    out = graph.output
    readout = np.zeros((batch, *shapes[out.name]), dtype=np.int64)
    for t in range(T):
        value: dict[str, np.ndarray] = {graph.input.name: frame(graph, x, t)}
        for node in graph:
            if isinstance(node, n.FixedPointSynapse):
                value[node.name] = synapse_current(node, value[node.sources[0]], node.sources[0] == graph.input.name)
            elif isinstance(node, (n.FixedPointNeuron, n.FixedPointAccumulator)):
                # A dense current (B, N) into a (C, H, W) layer is its C-major reshape.
                a = sum(value[s].reshape(batch, *shapes[node.name]) for s in node.sources)
                state = states[node.name]
                fired = state.step(a)
                value[node.name] = fired
                if fired is not None and forced_spikes is not None and node.name in forced_spikes:
                    value[node.name] = np.asarray(forced_spikes[node.name][t], dtype=fired.dtype).reshape(fired.shape)
                if record:
                    if fired is not None:
                        traces["spikes"].setdefault(node.name, []).append(fired.astype(np.uint8))
                    if record != "spikes":
                        traces["voltages"].setdefault(node.name, []).append(state.v.copy())
                        traces["currents"].setdefault(node.name, []).append(state.u.copy())
        if out.readout == "mean_membrane":
            readout += states[out.name].v
    if out.readout != "mean_membrane":
        readout = states[out.name].v.copy()
    return _result(graph, states, traces, readout)


def _result(graph: Graph, states, traces, readout: np.ndarray) -> IntRun:
    run = IntRun(
        accumulator=readout,
        u_wraps={k: s.wraps for k, s in states.items()},
        v_saturations={k: s.saturations for k, s in states.items()},
    )
    for kind, per_layer in traces.items():
        getattr(run, kind).update({k: np.stack(v) for k, v in per_layer.items()})
    return run


def run_pipelined(graph: Graph, images: np.ndarray, record: bool = False) -> tuple[IntRun, dict]:
    """Run samples one after another through the pipelined network, as Lava does.

    Returns:
        The run, de-skewed into per-sample ``[T, B, ...]`` traces (layer at
        depth d, sample k, step t is read at global step ``k*R + t + 1 + d``)
        and the accumulator read at the end of each sample window, plus the
        raw global-step traces ``{"spikes": {name: [G, ...]}, "voltages": ...}``
        for comparison with Lava one to one.
    """
    shapes = _check(graph)
    schedule = graph.schedule
    if schedule is None:
        raise IRError("run_pipelined needs a scheduled graph (run ScheduleTimesteps)")
    x = quantize_input(graph, images)
    samples, T, R = x.shape[0], graph.timesteps, schedule.reset_interval
    total = samples * R + schedule.latency + 1
    states = {node.name: _LayerState(node, 1, shapes[node.name])
              for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)}  # fmt: skip
    # history[name][g] = output of node `name` at global step g (spikes or graded input).
    # history[name][g] = output of node `name` at global step g (spikes or graded input);
    # entries older than the longest delay are dropped.
    history: dict[str, dict[int, np.ndarray]] = {name: {} for name in [graph.input.name, *states]}
    zeros = {name: np.zeros((1, *shapes[name]), dtype=np.int64) for name in history}
    keep = 2 + max((s.delay for s in graph.of_type(n.FixedPointSynapse)), default=0)
    out = graph.output.name
    # Global step -> the sample whose readout reads v then: after its last step (k*R + T + depth),
    # or after each of its T steps (k*R + t + 1 + depth) for the mean membrane.
    steps_read = range(T) if graph.output.readout == "mean_membrane" else [T - 1]
    read_at = {k * R + t + 1 + schedule.depth[out]: k for k in range(samples) for t in steps_read}
    accumulator = np.zeros((samples, *shapes[out]), dtype=np.int64)
    raw: dict[str, dict[str, list]] = {"spikes": {}, "voltages": {}}
    for g in range(1, total + 1):
        k, t = divmod(g - 1, R)
        history[graph.input.name][g] = frame(graph, x[k : k + 1], t) if k < samples and t < T else zeros[graph.input.name]
        for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
            state = states[node.name]
            if g % R == schedule.reset_offset[node.name]:
                state.reset()
            a = np.zeros((1, *shapes[node.name]), dtype=np.int64)
            for syn_name in node.sources:
                syn = graph.node(syn_name)
                src = syn.sources[0]
                current = synapse_current(syn, history[src].get(g - 1 - syn.delay, zeros[src]), src == graph.input.name)
                a = a + current.reshape(a.shape)
            fired = state.step(a)
            if fired is not None:
                history[node.name][g] = fired
            if record:
                if fired is not None:
                    raw["spikes"].setdefault(node.name, []).append(fired[0].astype(np.uint8))
                raw["voltages"].setdefault(node.name, []).append(state.v[0].copy())
        if g in read_at:
            accumulator[read_at[g]] += states[out].v[0]
        for per_step in history.values():
            per_step.pop(g - keep, None)
    run = IntRun(
        accumulator=accumulator,
        u_wraps={k: s.wraps for k, s in states.items()},
        v_saturations={k: s.saturations for k, s in states.items()},
    )
    raw_stacked = {kind: {name: np.stack(v) for name, v in per.items()} for kind, per in raw.items()}
    for kind in ("spikes", "voltages"):
        for name, trace in raw_stacked[kind].items():
            d = schedule.depth[name]
            # Layer at depth d handles sample k, step t at g = k*R + t + 1 + d (index g - 1).
            idx = np.array([[k * R + t + d for k in range(samples)] for t in range(T)])
            getattr(run, kind)[name] = trace[idx]
    return run, raw_stacked
