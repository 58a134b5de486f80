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
            raise IRError(f"{type(node).__name__} {node.name!r} has no input")
        if any(s != ins[0] for s in ins):
            raise IRError(f"{type(node).__name__} {node.name!r}: its sources' shapes differ: {ins}")
        declared = getattr(node, "shape", None)
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
        if isinstance(node, n.Neuron):
            if not node.vth > 0:
                raise IRError(f"neuron {node.name!r}: threshold {node.vth} must be > 0")
            if not 0 < node.tau <= 1:
                raise IRError(f"neuron {node.name!r}: tau {node.tau} must be in (0, 1]")
            if node.reset not in ("subtract", "zero"):
                raise IRError(f"neuron {node.name!r}: reset {node.reset!r} must be 'subtract' or 'zero'")
            if node.reset_amount is not None and not node.reset_amount > 0:
                raise IRError(f"neuron {node.name!r}: reset amount {node.reset_amount} must be > 0")
        if isinstance(node, n.FixedPointNeuron):
            if not (0 <= node.du <= 4095 and 0 <= node.dv <= 4095):
                raise IRError(f"neuron {node.name!r}: du={node.du}, dv={node.dv} must be 12-bit (0..4095)")
    shapes = infer_shapes(graph)
    consumed = {s for node in graph for s in node.sources}
    if outputs[0].name in consumed:
        raise IRError(f"the accumulator {outputs[0].name!r} must not feed other nodes")
    dangling = [node.name for node in graph if node.name not in consumed and node is not outputs[0]]
    if dangling:
        raise IRError(f"nodes whose output is never used: {dangling}")
    return shapes
