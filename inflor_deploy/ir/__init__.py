"""The intermediate representation: frozen node dataclasses and the graph that orders them."""

from inflor_deploy.ir.graph import Graph, IRError, Schedule, infer_shapes, validate
from inflor_deploy.ir.nodes import (
    FIXED_POINT_NODES,
    FLOAT_NODES,
    STATEFUL_NODES,
    Accumulator,
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    FixedPointAccumulator,
    FixedPointNeuron,
    FixedPointSynapse,
    Flatten,
    Input,
    Linear,
    Neuron,
    Node,
    Normalize,
)

__all__ = [
    "Accumulator", "Add", "AvgPool2d", "BatchNorm", "Concat", "Conv2d", "FIXED_POINT_NODES", "FLOAT_NODES",
    "FixedPointAccumulator", "FixedPointNeuron", "FixedPointSynapse", "Flatten", "Graph",
    "IRError", "Input", "Linear", "Neuron", "Node", "Normalize", "STATEFUL_NODES", "Schedule",
    "infer_shapes", "validate",
]  # fmt: skip
