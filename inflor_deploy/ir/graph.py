"""The IR graph: an ordered tuple of nodes plus the run's timestep count and schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n


class IRError(InflorError):
    """An IR graph breaks an invariant; the message names the node."""


@dataclass(frozen=True)
class Schedule:
    """Where each layer sits in time when the network runs pipelined (Lava / Loihi).

    Every connection adds one timestep (plus its delay); neurons add none.
    A layer at depth d sees the input frame of sample k, step t at global
    step ``k * reset_interval + t + d``; its state is reset at every global
    step ``s`` with ``s % reset_interval == reset_offset``.

    Attributes:
        depth: Layer name -> timesteps from the input to that layer.
        reset_offset: Layer name -> reset phase (``depth % reset_interval``).
        reset_interval: Steps per sample window (>= T; a power of two on hardware).
        latency: Depth of the output accumulator.
    """

    depth: dict[str, int]
    reset_offset: dict[str, int]
    reset_interval: int
    latency: int


@dataclass(frozen=True)
class Graph:
    """A network: nodes in topological order (every source precedes its consumers).

    Attributes:
        nodes: The nodes; exactly one :class:`Input` and one accumulator.
        timesteps: T, the timesteps per sample.
        name: Model name (architecture), for reports.
        schedule: Set by ``ScheduleTimesteps``; None before.
    """

    nodes: tuple[n.Node, ...]
    timesteps: int
    name: str = "model"
    schedule: Schedule | None = None

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        for node in self.nodes:
            for f in dataclasses.fields(node):
                value = getattr(node, f.name)
                if isinstance(value, np.ndarray):
                    # Passes are pure: they copy arrays to change them, never write in place.
                    value.setflags(write=False)

    def __iter__(self) -> Iterator[n.Node]:
        return iter(self.nodes)

    def node(self, name: str) -> n.Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise IRError(f"graph {self.name!r} has no node {name!r}")

    def consumers(self, name: str) -> list[n.Node]:
        return [node for node in self.nodes if name in node.sources]

    @property
    def input(self) -> n.Input:
        return next(node for node in self.nodes if isinstance(node, n.Input))

    @property
    def output(self) -> n.Node:
        return next(node for node in self.nodes if isinstance(node, (n.Accumulator, n.FixedPointAccumulator)))

    def of_type(self, *types: type) -> list[n.Node]:
        return [node for node in self.nodes if isinstance(node, types)]

    def replace_nodes(self, nodes) -> "Graph":
        return dataclasses.replace(self, nodes=tuple(nodes))

    def fold_away(self, folded_type: type, replaced: dict[str, n.Node], renamed: dict[str, str]) -> "Graph":
        """Drop every ``folded_type`` node, swap in ``replaced`` nodes by name, and point
        consumers of a dropped node at ``renamed[dropped]`` (what a folding pass leaves)."""
        nodes = []
        for node in self.nodes:
            if isinstance(node, folded_type):
                continue
            node = replaced.get(node.name, node)
            if any(s in renamed for s in node.sources):
                node = dataclasses.replace(node, sources=tuple(renamed.get(s, s) for s in node.sources))
            nodes.append(node)
        return self.replace_nodes(nodes)

    @property
    def is_fixed_point(self) -> bool:
        return any(isinstance(node, n.FixedPointNeuron) for node in self.nodes)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def infer_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every node; raises IRError on an inconsistency."""
    shapes: dict[str, tuple[int, ...]] = {}
    for node in graph:
        ins = []
        for source in node.sources:
            if source not in shapes:
                raise IRError(
                    f"node {node.name!r}: source {source!r} is not defined before it "
                    "(nodes must be in topological order)"
                )
            ins.append(shapes[source])
        shapes[node.name] = _node_shape(node, ins)
    return shapes


def _node_shape(node: n.Node, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    def need(count: int):
        if len(ins) != count:
            raise IRError(f"{type(node).__name__} {node.name!r} needs {count} source(s), has {len(ins)}")

    if isinstance(node, n.Input):
        need(0)
        return tuple(node.shape)
    if isinstance(node, n.Conv2d) or (isinstance(node, n.FixedPointSynapse) and node.kind == "conv"):
        need(1)
        if len(ins[0]) != 3:
            raise IRError(f"conv {node.name!r} needs a (C, H, W) input, got {ins[0]}")
        c, h, w = ins[0]
        o, cg, kh, kw = node.weight.shape
        if cg * node.groups != c or o % node.groups:
            raise IRError(
                f"conv {node.name!r}: weight {node.weight.shape} with groups={node.groups} "
                f"does not fit {c} input channels"
            )
        out = (
            o,
            _conv_out(h, kh, node.stride[0], node.padding[0]),
            _conv_out(w, kw, node.stride[1], node.padding[1]),
        )
        if min(out) < 1:
            raise IRError(f"conv {node.name!r}: output shape {out} is empty")
        bias = getattr(node, "bias", None)
        if bias is not None and tuple(bias.shape) not in ((o,), out):
            raise IRError(f"conv {node.name!r}: bias of shape {tuple(bias.shape)} is neither ({o},) nor {out}")
        return out
    if isinstance(node, (n.Linear, n.FixedPointSynapse)):
        need(1)
        fan_in = math.prod(ins[0])
        if node.weight.ndim != 2 or node.weight.shape[1] != fan_in:
            raise IRError(
                f"linear {node.name!r}: weight {node.weight.shape} does not match the "
                f"flattened input size {fan_in}"
            )
        return (node.weight.shape[0],)
    if isinstance(node, n.BatchNorm):
        need(1)
        channels = ins[0][0]
        for name in ("gamma", "beta", "mean", "var"):
            if getattr(node, name).shape != (channels,):
                raise IRError(f"batchnorm {node.name!r}: {name} must have {channels} entries")
        return ins[0]
    if isinstance(node, n.Normalize):
        need(1)
        channels = ins[0][0] if ins[0] else 0
        for name in ("mean", "std"):
            if getattr(node, name) is None or getattr(node, name).shape != (channels,):
                raise IRError(f"normalize {node.name!r}: {name} must have {channels} entries (one per channel)")
        return ins[0]
    if isinstance(node, n.AvgPool2d):
        need(1)
        c, h, w = ins[0]
        out = (c, _conv_out(h, node.kernel[0], node.stride[0], 0), _conv_out(w, node.kernel[1], node.stride[1], 0))
        if min(out) < 1:
            raise IRError(f"avgpool {node.name!r}: kernel {node.kernel} larger than input {ins[0]}")
        return out
    if isinstance(node, n.Flatten):
        need(1)
        return (math.prod(ins[0]),)
    if isinstance(node, (n.Add, n.Concat)):
        if len(ins) < 2:
            raise IRError(f"{type(node).__name__} {node.name!r} joins at least 2 sources, has {len(ins)}")
        if isinstance(node, n.Add):
            if any(s != ins[0] for s in ins):
                raise IRError(f"add {node.name!r}: its sources' shapes differ: {ins}")
            return ins[0]
        if any(len(s) != len(ins[0]) or s[1:] != ins[0][1:] for s in ins):
            raise IRError(f"concat {node.name!r}: sources must agree on all but the channel dimension: {ins}")
        return (sum(s[0] for s in ins), *ins[0][1:])
    if isinstance(node, (n.Neuron, n.Accumulator, n.FixedPointNeuron, n.FixedPointAccumulator)):
        if not ins:
            # A fixed-point neuron without synapses (a bias source, driven by its own bias) has its declared shape.
            if isinstance(node, n.FixedPointNeuron) and node.shape:
                return tuple(node.shape)
            raise IRError(f"{type(node).__name__} {node.name!r} has no input")
        declared = getattr(node, "shape", None)
        if declared and isinstance(node, (n.FixedPointNeuron, n.FixedPointAccumulator)):
            # A dense synapse's current (N,) may feed a layer of any shape with N neurons (C-major),
            # e.g. a bias source's synapse into a conv layer.
            flat = (math.prod(declared),)
            if any(s != tuple(declared) and s != flat for s in ins):
                raise IRError(f"{node.name!r}: declared shape {tuple(declared)} does not fit its sources' shapes {ins}")
            return tuple(declared)
        if any(s != ins[0] for s in ins):
            raise IRError(f"{type(node).__name__} {node.name!r}: its sources' shapes differ: {ins}")
        if declared and tuple(declared) != ins[0]:
            raise IRError(f"{node.name!r}: declared shape {declared} but its input is {ins[0]}")
        return ins[0]
    raise IRError(f"unknown node type {type(node).__name__} ({node.name!r})")


def _check_finite(node: n.Node) -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise IRError(f"node {node.name!r}: {f.name} has NaN/inf values")
        if isinstance(value, float) and not math.isfinite(value):
            raise IRError(f"node {node.name!r}: {f.name} = {value} is not finite")


def _check_input(node: n.Input) -> None:
    if node.encoding not in n.INPUT_ENCODINGS:
        raise IRError(f"input {node.name!r}: encoding {node.encoding!r} must be one of {n.INPUT_ENCODINGS}")
    lo, hi = node.value_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise IRError(f"input {node.name!r}: value range [{lo}, {hi}] must be finite with low < high")
    if node.pixel_levels is not None and not (isinstance(node.pixel_levels, int) and node.pixel_levels >= 1):
        raise IRError(f"input {node.name!r}: pixel_levels {node.pixel_levels!r} must be an int >= 1 or None")
    if node.grade_scale is not None and not (math.isfinite(node.grade_scale) and node.grade_scale > 0):
        raise IRError(f"input {node.name!r}: grade_scale {node.grade_scale} must be finite and > 0")


def _values(value) -> np.ndarray:
    """A scalar or per-channel parameter as a float64 array (for range checks)."""
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def _per_channel_ok(node: n.Node, name: str, value) -> None:
    if isinstance(value, np.ndarray) and (value.ndim != 1 or value.size == 0):
        raise IRError(
            f"neuron {node.name!r}: {name} must be a scalar or a 1-D per-channel array, got shape {value.shape}"
        )


def _check_neuron(node: n.Neuron) -> None:
    """Every field of a float neuron in range; each message names the fix."""
    where = f"neuron {node.name!r}"
    for name, options in (("reset", n.RESET_MODES), ("compare", n.COMPARES),
                          ("reset_timing", n.RESET_TIMINGS), ("charge", n.CHARGES)):  # fmt: skip
        if getattr(node, name) not in options:
            raise IRError(f"{where}: {name} {getattr(node, name)!r} must be one of {', '.join(map(repr, options))}")
    _per_channel_ok(node, "vth", node.vth)
    _per_channel_ok(node, "reset_amount", node.reset_amount)
    if not (_values(node.vth) > node.v_reset).all():
        raise IRError(
            f"{where}: threshold {n.plain(node.vth)} must be > 0"
            + (f" and above v_reset = {node.v_reset}" if node.v_reset else "")
            + " (a neuron at rest must not fire); fix the exported threshold"
        )
    if not 0 <= node.tau <= 1:
        raise IRError(f"{where}: tau {node.tau} must be in [0, 1] (1 is no leak)")
    if not node.gain > 0:
        raise IRError(f"{where}: input gain {node.gain} must be > 0")
    if node.reset_amount is not None and not (_values(node.reset_amount) > 0).all():
        raise IRError(
            f"{where}: reset amount {n.plain(node.reset_amount)} must be > 0; a layer that never resets "
            "has reset 'none'"
        )
    if not node.spike_value > 0:
        raise IRError(f"{where}: spike value {node.spike_value} must be > 0")
    if node.charge == "affine":
        if node.decay is not None:
            raise IRError(
                f"{where}: decay {node.decay} is only read by the decay_* charges; leave it None for 'affine'"
            )
        if node.tau != 1 and node.v_reset != 0:
            raise IRError(
                f"{where}: the 'affine' charge leaks toward 0, but v_reset = {node.v_reset}; a layer that leaks "
                "toward v_reset needs a decay_* charge (SpikingJelly), or v_reset = 0"
            )
    else:
        divide = node.charge.startswith("decay_divide")
        if node.decay is None or not (node.decay >= 1 if divide else 0 < node.decay <= 1):
            raise IRError(
                f"{where}: charge {node.charge!r} needs decay "
                + ("(SpikingJelly's tau, the divisor) >= 1" if divide else "(the multiplier sigmoid(w)) in (0, 1]")
                + f", got {node.decay}"
            )
        tau, gain = n.decay_coefficients(node.charge, node.decay)
        if (node.tau, node.gain) != (tau, gain):
            raise IRError(
                f"{where}: charge {node.charge!r} with decay {node.decay} means tau = {tau!r}, gain = {gain!r}; "
                f"the node has tau = {node.tau!r}, gain = {node.gain!r}. Build it with "
                "ir.nodes.decay_fields(charge, decay)"
            )
    if node.reset_timing == "next_step":
        if node.charge != "affine" or node.v_reset != 0:
            raise IRError(
                f"{where}: the next-step reset (snnTorch's reset_delay) is defined for the 'affine' charge "
                f"with v_reset = 0; got charge {node.charge!r}, v_reset {node.v_reset}"
            )
        if node.mpr:
            raise IRError(f"{where}: MPR with a next-step reset is not a supported neuron; fold MPR or use same_step")


def _check_accumulator(node: n.Accumulator, graph: Graph) -> None:
    where = f"accumulator {node.name!r}"
    if node.readout not in n.READOUTS:
        raise IRError(f"{where}: readout {node.readout!r} must be one of {', '.join(map(repr, n.READOUTS))}")
    if node.readout == "mean_membrane":
        if not 0 < node.tau <= 1:
            raise IRError(f"{where}: the mean-membrane readout needs tau in (0, 1], got {node.tau}")
    elif node.tau != 1:
        raise IRError(f"{where}: tau {node.tau} only applies to readout 'mean_membrane'; use tau = 1")
    if node.readout == "spike_count":
        others = [s for s in node.sources if not isinstance(graph.node(s), n.Neuron)]
        if others:
            raise IRError(
                f"{where}: a spike-count readout adds the spikes of spiking layers (identity synapses); "
                f"source {others[0]!r} is a {type(graph.node(others[0])).__name__}. Read the last spiking "
                "layer, or use readout 'mean_current'"
            )


def _check_fixed_point_neuron(node: n.FixedPointNeuron) -> None:
    where = f"neuron {node.name!r}"
    if not (0 <= node.du <= 4095 and 0 <= node.dv <= 4095):
        raise IRError(f"{where}: du={node.du}, dv={node.dv} must be 12-bit (0..4095)")
    if node.reset not in n.RESET_MODES:
        raise IRError(f"{where}: reset {node.reset!r} must be one of {', '.join(map(repr, n.RESET_MODES))}")
    for name in ("vth", "reset_mant"):
        value = getattr(node, name)
        _per_channel_ok(node, name, value)
        array = np.atleast_1d(np.asarray(value))
        # Structure only: the bit widths are the target's (target_fit.check_fits_target).
        if array.dtype.kind not in "iu" or array.min() < 0:
            raise IRError(f"{where}: {name} {n.plain(value)} must be non-negative integers")


def validate(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Check every invariant of a graph; return the inferred shapes.

    Invariants: unique names; topological order; one Input, one accumulator,
    which is the last node and consumed by nothing; every node of one family
    (float or fixed point, the Input excepted); finite parameters; neuron
    parameters in range; shapes consistent.
    """
    if graph.timesteps < 1:
        raise IRError(f"timesteps must be >= 1, got {graph.timesteps}")
    names = [node.name for node in graph]
    if len(set(names)) != len(names):
        dupes = sorted({x for x in names if names.count(x) > 1})
        raise IRError(f"duplicate node names: {dupes}")
    inputs = graph.of_type(n.Input)
    outputs = graph.of_type(n.Accumulator, n.FixedPointAccumulator)
    if len(inputs) != 1 or len(outputs) != 1:
        raise IRError(f"a graph needs exactly one Input and one accumulator, has {len(inputs)} and {len(outputs)}")
    if graph.nodes[-1] is not outputs[0]:
        raise IRError(f"the accumulator {outputs[0].name!r} must be the last node")
    fixed = graph.of_type(n.FixedPointSynapse, n.FixedPointNeuron, n.FixedPointAccumulator)
    floats = [node for node in graph if isinstance(node, n.FLOAT_NODES) and not isinstance(node, n.Input)]
    if fixed and floats:
        raise IRError(
            f"graph mixes float nodes ({floats[0].name!r}) and fixed-point nodes ({fixed[0].name!r})"
        )
    for node in graph:
        _check_finite(node)
        if isinstance(node, n.Input):
            _check_input(node)
        if isinstance(node, n.Normalize) and not np.all(node.std > 0):
            raise IRError(f"normalize {node.name!r}: every std must be > 0, got {node.std.tolist()}")
        if isinstance(node, n.Neuron):
            _check_neuron(node)
        if isinstance(node, n.Accumulator):
            _check_accumulator(node, graph)
        if isinstance(node, n.FixedPointNeuron):
            _check_fixed_point_neuron(node)
        if isinstance(node, n.FixedPointAccumulator):
            if node.readout not in n.READOUTS:
                raise IRError(f"accumulator {node.name!r}: readout {node.readout!r} must be one of {n.READOUTS}")
            if not 0 <= node.dv <= 4095:
                raise IRError(f"accumulator {node.name!r}: dv={node.dv} must be 12-bit (0..4095)")
    shapes = infer_shapes(graph)
    for node in graph.of_type(n.Neuron, n.FixedPointNeuron):
        for name in ("vth", "reset_amount", "reset_mant"):
            value = getattr(node, name, None)
            channels = shapes[node.name][0]
            if isinstance(value, np.ndarray) and value.shape != (channels,):
                raise IRError(
                    f"neuron {node.name!r}: per-channel {name} has shape {value.shape}; it needs one value per "
                    f"channel, shape ({channels},) for the layer's shape {shapes[node.name]} (or one scalar)"
                )
    shapes = infer_shapes(graph)
    consumed = {s for node in graph for s in node.sources}
    if outputs[0].name in consumed:
        raise IRError(f"the accumulator {outputs[0].name!r} must not feed other nodes")
    dangling = [node.name for node in graph if node.name not in consumed and node is not outputs[0]]
    if dangling:
        raise IRError(f"nodes whose output is never used: {dangling}")
    return shapes
