"""The float IR as a per-timestep ONNX graph, and back.

The ONNX file is the exchange format of the pipeline (DESIGN.md section 2):
one graph that computes ONE timestep, with every piece of state as an
explicit input/output pair, so any ONNX runtime can step it::

    inputs : image [batch, C, H, W]            the static frame (direct encoding)
             <neuron>.u [batch, *shape]        U[t-1] of every neuron layer
             <readout>.acc [batch, *shape]     A[t-1] of the accumulator
    outputs: <neuron>.spikes, <neuron>.u_next  O[t], U[t]
             <readout>.acc_next                A[t]; the score is A[T-1] / T

Operators: Conv, Gemm (transB=1; preceded by Flatten(axis=1) when its input
is not a vector), BatchNormalization, AveragePool, Flatten(axis=1), Add
(``<neuron>.current``: a neuron's sources are summed in source order), Sum
and Concat(axis=1) (the IR's ``Add`` and ``Concat`` joins), and
two operators of the ``inflor`` domain (version 1), each carried as an ONNX
FunctionProto whose body is standard ONNX so onnxruntime executes it
unchanged:

* ``inflor.Neuron(X, U) -> (O, U_next)``, attributes ``vth``, ``tau``,
  ``reset`` ("subtract"/"zero"), ``reset_amount`` (resolved: the spike value
  when the IR says None, flagged by ``reset_is_spike_value = 1``), ``mpr``,
  ``spike_value``::

      H      = tau * U + X
      Hh     = phi(H) if mpr else H                  (phi: Where/Min/Max/Pow/Tanh)
      O1     = Cast(Hh >= vth)
      U_next = H - reset_amount * O1                 reset == "subtract"
             = H * (1 - O1)                          reset == "zero"
      O      = O1 * spike_value

* ``inflor.Accumulator(X, A) -> A_next = A + X``.

Exactness: ONNX float attributes are float32. The IR's floats are Python
floats (e.g. BatchNorm ``eps = 1e-5``), so every float attribute's exact
value is also stored as ``repr`` in the node's ``metadata_props`` under
``inflor.exact.<attribute>``; the importer uses it when it rounds to the
attribute (an edited attribute wins). The model's ``metadata_props`` hold
``inflor.timesteps``, ``inflor.model_name`` and ``inflor.input_node``.
A Flatten that the writer inserts before a Gemm carries
``inflor.implicit = "flatten"`` and is not turned back into an IR node
(IR ``Linear`` flattens its input itself). So
``onnx_to_graph(graph_to_onnx(g))`` reproduces ``g`` exactly: node types,
names, order, arrays and attributes (the Schedule is not stored).

The importer accepts what the writer emits plus common equivalents: Gemm
with ``transB`` 0 or 1, MatMul followed by Add of a constant bias,
GlobalAveragePool, Identity and Constant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.errors import ExportError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes, validate

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "IR_VERSION",
    "OPSET",
    "OnnxFormatError",
    "SUPPORTED_OPS",
    "UnsupportedOperatorError",
    "graph_to_onnx",
    "onnx_to_graph",
    "save_onnx",
]

#: Default-domain opset: 19 is the first whose Equal accepts strings (the
#: Neuron function compares its ``reset`` attribute).
OPSET = 19
#: Custom domain of the Neuron and Accumulator operators, and its version.
DOMAIN = "inflor"
DOMAIN_VERSION = 1
#: IR version 10 is the first with per-node ``metadata_props``.
IR_VERSION = 10

_META_TIMESTEPS = "inflor.timesteps"
_META_NAME = "inflor.model_name"
_META_INPUT = "inflor.input_node"
_META_EXACT = "inflor.exact."
_META_IMPLICIT = "inflor.implicit"

_NEURON_ATTRIBUTES = ("vth", "tau", "reset", "reset_amount", "reset_is_spike_value", "mpr", "spike_value")

#: Operators the importer understands (``domain.op``; the default domain is unprefixed).
SUPPORTED_OPS: tuple[str, ...] = (
    "Conv",
    "Gemm",
    "MatMul(+Add bias)",
    "BatchNormalization",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Add",
    "Sum",
    "Concat(axis=1)",
    "Identity",
    "Constant",
    f"{DOMAIN}.Neuron",
    f"{DOMAIN}.Accumulator",
)


class UnsupportedOperatorError(ExportError):
    """An ONNX node the importer cannot translate; the message names its op type and node."""


class OnnxFormatError(ExportError):
    """An ONNX model is malformed for this importer (missing tensors, attributes, metadata)."""


# =========================================================================== writer


def _float32(array: np.ndarray, what: str) -> np.ndarray:
    """The array as float32, refusing a change of value (the ONNX graph computes in float32)."""
    array = np.asarray(array)
    as32 = array.astype(np.float32)
    if not np.array_equal(as32, array):
        raise ExportError(f"{what}: values are not exactly representable in float32, the ONNX graph's type")
    return as32


def _set_exact(proto: onnx.NodeProto, name: str, value: float) -> None:
    entry = proto.metadata_props.add()
    entry.key = _META_EXACT + name
    entry.value = repr(float(value))


def _value_info(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def _constant_from_attribute(output: str, kind: str, attribute: str) -> onnx.NodeProto:
    """``Constant`` whose value is the calling node's attribute (a function-body reference)."""
    node = helper.make_node("Constant", [], [output])
    ref = onnx.AttributeProto()
    ref.name = kind
    ref.ref_attr_name = attribute
    ref.type = {
        "value_float": onnx.AttributeProto.FLOAT,
        "value_int": onnx.AttributeProto.INT,
        "value_string": onnx.AttributeProto.STRING,
    }[kind]
    node.attribute.append(ref)
    return node


def _scalar(output: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], value=helper.make_tensor(output, TensorProto.FLOAT, [], [value]))


def neuron_function() -> onnx.FunctionProto:
    """``inflor.Neuron(X, U) -> (O, U_next)`` in standard ONNX ops (see the module docstring).

    phi is written exactly as :func:`inflor_deploy.nn.mpr.phi` computes it:
    each branch on an input clamped into its own domain, then selected.
    """
    make = helper.make_node
    body = [
        _constant_from_attribute("tau", "value_float", "tau"),
        _constant_from_attribute("vth", "value_float", "vth"),
        _constant_from_attribute("reset_amount", "value_float", "reset_amount"),
        _constant_from_attribute("spike_value", "value_float", "spike_value"),
        _constant_from_attribute("mpr_int", "value_int", "mpr"),
        _constant_from_attribute("reset_mode", "value_string", "reset"),
        make("Constant", [], ["subtract"], value=helper.make_tensor("subtract", TensorProto.STRING, [], [b"subtract"])),
        _scalar("zero", 0.0),
        _scalar("one", 1.0),
        _scalar("half", 0.5),
        _scalar("two", 2.0),
        _scalar("three", 3.0),
        _scalar("three_halves", 1.5),
        _scalar("third", 1.0 / 3.0),
        # H = tau * U + X
        make("Mul", ["tau", "U"], ["tau_u"]),
        make("Add", ["tau_u", "X"], ["H"]),
        # phi(H): 1 - (1 - u)^(1/3) for u <= 0, u^(1/3) for u >= 1, tanh branch between.
        make("Min", ["H", "zero"], ["u_neg"]),
        make("Clip", ["H", "zero", "one"], ["u_mid"]),
        make("Max", ["H", "one"], ["u_pos"]),
        make("Sub", ["one", "u_neg"], ["one_minus_u"]),
        make("Pow", ["one_minus_u", "third"], ["low_root"]),
        make("Sub", ["one", "low_root"], ["low"]),
        make("Tanh", ["three_halves"], ["tanh_3_2"]),
        make("Mul", ["two", "tanh_3_2"], ["mid_denominator"]),
        make("Sub", ["u_mid", "half"], ["mid_centered"]),
        make("Mul", ["three", "mid_centered"], ["mid_scaled"]),
        make("Tanh", ["mid_scaled"], ["mid_tanh"]),
        make("Div", ["mid_tanh", "mid_denominator"], ["mid_ratio"]),
        make("Add", ["mid_ratio", "half"], ["mid"]),
        make("Pow", ["u_pos", "third"], ["high"]),
        make("LessOrEqual", ["H", "zero"], ["is_low"]),
        make("GreaterOrEqual", ["H", "one"], ["is_high"]),
        make("Where", ["is_high", "high", "mid"], ["upper"]),
        make("Where", ["is_low", "low", "upper"], ["phi"]),
        make("Cast", ["mpr_int"], ["mpr"], to=TensorProto.BOOL),
        make("Where", ["mpr", "phi", "H"], ["H_compared"]),
        # O1 = (Hh >= vth)
        make("GreaterOrEqual", ["H_compared", "vth"], ["fires"]),
        make("Cast", ["fires"], ["O1"], to=TensorProto.FLOAT),
        # U_next: soft reset H - reset_amount * O1, hard reset H * (1 - O1)
        make("Mul", ["reset_amount", "O1"], ["removed"]),
        make("Sub", ["H", "removed"], ["u_soft"]),
        make("Sub", ["one", "O1"], ["kept"]),
        make("Mul", ["H", "kept"], ["u_hard"]),
        make("Equal", ["reset_mode", "subtract"], ["is_soft"]),
        make("Where", ["is_soft", "u_soft", "u_hard"], ["U_next"]),
        make("Mul", ["O1", "spike_value"], ["O"]),
    ]
    return helper.make_function(
        DOMAIN,
        "Neuron",
        ["X", "U"],
        ["O", "U_next"],
        body,
        [helper.make_opsetid("", OPSET)],
        attributes=list(_NEURON_ATTRIBUTES),
        doc_string="Spiking neuron layer, one timestep (DESIGN.md section 1); see inflor_deploy.backends.onnx.float_model.",
    )


def accumulator_function() -> onnx.FunctionProto:
    """``inflor.Accumulator(X, A) -> A_next = A + X``."""
    return helper.make_function(
        DOMAIN,
        "Accumulator",
        ["X", "A"],
        ["A_next"],
        [helper.make_node("Add", ["A", "X"], ["A_next"])],
        [helper.make_opsetid("", OPSET)],
        doc_string="Non-spiking readout, one timestep: A[t] = A[t-1] + X[t].",
    )


def check_unique_names(nodes, initializers, inputs) -> None:
    """Derived names (<node>.weight, <node>.u, <node>.current, ...) must not collide with node names."""
    tensors = [t for p in nodes for t in p.output] + [t.name for t in initializers]
    tensors += [v.name for v in inputs]
    for label, values in (("node", [p.name for p in nodes]), ("tensor", tensors)):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise ExportError(
                    f"ONNX {label} name {value!r} would be used twice; rename the IR node whose name "
                    "collides with a derived name (<node>.weight, <node>.u, <node>.current, ...)"
                )
            seen.add(value)


class _Writer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.shapes = validate(graph)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.tensor: dict[str, str] = {}  # IR node name -> ONNX tensor holding its output

    def initializer(self, owner: str, field: str, array: np.ndarray) -> str:
        name = f"{owner}.{field}"
        self.initializers.append(numpy_helper.from_array(_float32(array, f"node {owner!r} {field}"), name))
        return name

    def current(self, node: n.Node) -> str:
        """The tensor of the summed sources, ``(s0 + s1) + s2 ...`` as the float IR adds them."""
        total = self.tensor[node.sources[0]]
        last = len(node.sources) - 1
        for i, source in enumerate(node.sources[1:], start=1):
            name = f"{node.name}.current" if i == last else f"{node.name}.current_{i}"
            self.nodes.append(helper.make_node("Add", [total, self.tensor[source]], [name], name=name))
            total = name
        return total

    def add(self, node: n.Node) -> None:
        emit = self.nodes.append
        name = node.name
        if isinstance(node, n.Input):
            self.inputs.append(_value_info(n.INPUT_NAME, tuple(node.shape)))
            self.tensor[name] = n.INPUT_NAME
            return
        if isinstance(node, (n.Neuron, n.Accumulator)):
            x = self.current(node)
        else:
            x = self.tensor[node.sources[0]]
        if isinstance(node, n.Conv2d):
            inputs = [x, self.initializer(name, "weight", node.weight)]
            if node.bias is not None:
                inputs.append(self.initializer(name, "bias", node.bias))
            emit(
                helper.make_node(
                    "Conv", inputs, [name], name=name,
                    kernel_shape=list(node.weight.shape[2:]), strides=list(node.stride),
                    pads=[node.padding[0], node.padding[1], node.padding[0], node.padding[1]],
                    dilations=[1, 1], group=int(node.groups),
                )
            )  # fmt: skip
        elif isinstance(node, n.Linear):
            if len(self.shapes[node.sources[0]]) != 1:
                flat = f"{name}.flatten"
                proto = helper.make_node("Flatten", [x], [flat], name=flat, axis=1)
                entry = proto.metadata_props.add()
                entry.key, entry.value = _META_IMPLICIT, "flatten"
                emit(proto)
                x = flat
            inputs = [x, self.initializer(name, "weight", node.weight)]
            if node.bias is not None:
                inputs.append(self.initializer(name, "bias", node.bias))
            emit(helper.make_node("Gemm", inputs, [name], name=name, transB=1))
        elif isinstance(node, n.BatchNorm):
            inputs = [x] + [self.initializer(name, f, getattr(node, f)) for f in ("gamma", "beta", "mean", "var")]
            proto = helper.make_node("BatchNormalization", inputs, [name], name=name, epsilon=float(node.eps))
            _set_exact(proto, "epsilon", node.eps)
            emit(proto)
        elif isinstance(node, n.AvgPool2d):
            emit(
                helper.make_node(
                    "AveragePool", [x], [name], name=name,
                    kernel_shape=list(node.kernel), strides=list(node.stride), pads=[0, 0, 0, 0],
                )
            )  # fmt: skip
        elif isinstance(node, n.Flatten):
            emit(helper.make_node("Flatten", [x], [name], name=name, axis=1))
        elif isinstance(node, n.Add):
            emit(helper.make_node("Sum", [self.tensor[s] for s in node.sources], [name], name=name))
        elif isinstance(node, n.Concat):
            emit(helper.make_node("Concat", [self.tensor[s] for s in node.sources], [name], name=name, axis=1))
        elif isinstance(node, n.Neuron):
            shape = self.shapes[name]
            state, spikes, state_next = f"{name}.u", f"{name}.spikes", f"{name}.u_next"
            is_spike_value = node.reset_amount is None
            reset_amount = node.spike_value if is_spike_value else node.reset_amount
            proto = helper.make_node(
                "Neuron", [x, state], [spikes, state_next], name=name, domain=DOMAIN,
                vth=float(node.vth), tau=float(node.tau), reset=str(node.reset),
                reset_amount=float(reset_amount), reset_is_spike_value=int(is_spike_value),
                mpr=int(bool(node.mpr)), spike_value=float(node.spike_value),
            )  # fmt: skip
            for attribute, value in (
                ("vth", node.vth), ("tau", node.tau), ("reset_amount", reset_amount), ("spike_value", node.spike_value)
            ):  # fmt: skip
                _set_exact(proto, attribute, value)
            emit(proto)
            self.inputs.append(_value_info(state, shape))
            self.outputs += [_value_info(spikes, shape), _value_info(state_next, shape)]
            self.tensor[name] = spikes
            return
        elif isinstance(node, n.Accumulator):
            shape = self.shapes[name]
            state, state_next = f"{name}.acc", f"{name}.acc_next"
            emit(helper.make_node("Accumulator", [x, state], [state_next], name=name, domain=DOMAIN))
            self.inputs.append(_value_info(state, shape))
            self.outputs.append(_value_info(state_next, shape))
            self.tensor[name] = state_next
            return
        else:
            raise ExportError(
                f"graph_to_onnx writes float graphs; node {name!r} is a {type(node).__name__}. "
                "Export before QuantizeFixedPoint."
            )
        self.tensor[name] = name

    def check_unique_names(self) -> None:
        check_unique_names(self.nodes, self.initializers, self.inputs)


def graph_to_onnx(graph: Graph) -> onnx.ModelProto:
    """Write a float IR graph as a per-timestep ONNX model (module docstring for the layout).

    Args:
        graph: A valid float graph (before quantization).

    Returns:
        The model, passing ``onnx.checker.check_model(model, full_check=True)``.

    Raises:
        IRError: The graph is invalid.
        ExportError: The graph holds fixed-point nodes, an array that float32
            cannot hold exactly, or names that collide once suffixed.
    """
    if graph.is_fixed_point:
        raise ExportError("graph_to_onnx writes float graphs; export before QuantizeFixedPoint")
    writer = _Writer(graph)
    for node in graph:
        writer.add(node)
    writer.check_unique_names()
    onnx_graph = helper.make_graph(
        writer.nodes, graph.name, writer.inputs, writer.outputs, initializer=writer.initializers,
        doc_string=f"One timestep of {graph.name!r} (T = {graph.timesteps}); feed the state outputs back.",
    )  # fmt: skip
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        functions=[neuron_function(), accumulator_function()],
        producer_name="inflor-deploy",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(
        model,
        {_META_TIMESTEPS: str(graph.timesteps), _META_NAME: graph.name, _META_INPUT: graph.input.name},
    )
    return model


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write an ONNX model atomically: a temporary file next to ``path``, then a rename."""
    return write_file_atomically(path, lambda tmp: onnx.save(model, tmp))


# =========================================================================== reader


def _attributes(proto: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in proto.attribute}


def _meta(proto: onnx.NodeProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in proto.metadata_props}


def _exact_float(proto: onnx.NodeProto, attribute: str, value: float) -> float:
    """The exact value stored beside a float32 attribute, if it still rounds to the attribute."""
    stored = _meta(proto).get(_META_EXACT + attribute)
    if stored is not None:
        try:
            exact = float(stored)
        except ValueError:
            exact = math.nan
        if np.float32(exact) == np.float32(value):
            return exact
    return float(value)


class _Reader:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        # ONNX tensor -> the IR node names whose outputs sum to it (one, or several after an Add).
        self.produced: dict[str, tuple[str, ...]] = {}
        self.nodes: list[n.Node] = []
        self.absorbed: set[int] = set()  # ids of Add nodes folded into a MatMul's bias
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for proto in self.graph.node:
            for tensor in proto.input:
                self.consumers.setdefault(tensor, []).append(proto)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def label(proto: onnx.NodeProto) -> str:
        return proto.name or (proto.output[0] if proto.output else "<unnamed>")

    def unsupported(self, proto: onnx.NodeProto, why: str = "") -> UnsupportedOperatorError:
        domain = f"{proto.domain}." if proto.domain not in ("", "ai.onnx") else ""
        reason = f": {why}" if why else ""
        return UnsupportedOperatorError(
            f"ONNX node {self.label(proto)!r} (op {domain}{proto.op_type}) cannot be imported{reason}. "
            f"Supported ops: {', '.join(SUPPORTED_OPS)}"
        )

    def sources(self, proto: onnx.NodeProto, tensor: str) -> tuple[str, ...]:
        if tensor not in self.produced:
            known = "a constant" if tensor in self.constants else "not produced by any earlier node"
            raise OnnxFormatError(
                f"ONNX node {self.label(proto)!r} reads {tensor!r}, which is {known}; an activation "
                "input is expected (nodes must be in topological order)"
            )
        return self.produced[tensor]

    def source(self, proto: onnx.NodeProto, tensor: str) -> str:
        found = self.sources(proto, tensor)
        if len(found) != 1:
            raise self.unsupported(
                proto,
                f"its input {tensor!r} is a sum (Add) of activations; such sums may only feed a Neuron or Accumulator",
            )
        return found[0]

    def constant(self, proto: onnx.NodeProto, index: int, what: str, optional: bool = False) -> np.ndarray | None:
        if index >= len(proto.input) or proto.input[index] == "":
            if optional:
                return None
            raise OnnxFormatError(f"ONNX node {self.label(proto)!r} ({proto.op_type}) has no {what} input")
        tensor = proto.input[index]
        if tensor not in self.constants:
            raise self.unsupported(proto, f"its {what} {tensor!r} must be an initializer or Constant")
        array = self.constants[tensor]
        if array.dtype.kind != "f":
            raise self.unsupported(proto, f"its {what} {tensor!r} has dtype {array.dtype}, not float")
        return np.ascontiguousarray(_float32(array, f"ONNX node {self.label(proto)!r} {what} {tensor!r}"))

    def emit(self, node: n.Node, output: str) -> None:
        self.nodes.append(node)
        self.produced[output] = (node.name,)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return infer_shapes(Graph(tuple(self.nodes), timesteps=1))[name]

    # ------------------------------------------------------------------ the graph

    def state_inputs(self) -> set[str]:
        states = set()
        for proto in self.graph.node:
            if proto.domain == DOMAIN and proto.op_type in ("Neuron", "Accumulator") and len(proto.input) == 2:
                states.add(proto.input[1])
        return states

    def image_input(self, states: set[str]) -> onnx.ValueInfoProto:
        candidates = [v for v in self.graph.input if v.name not in self.constants and v.name not in states]
        if len(candidates) != 1:
            raise OnnxFormatError(
                f"expected exactly one image input besides the state inputs (<neuron>.u, <readout>.acc); "
                f"found {[v.name for v in candidates]}"
            )
        return candidates[0]

    def input_node(self, value: onnx.ValueInfoProto, name: str) -> n.Input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2 or any(not d.HasField("dim_value") for d in dims[1:]):
            raise OnnxFormatError(
                f"image input {value.name!r} needs a shape [batch, C, H, W] with known C, H, W; "
                f"got {[d.dim_param or d.dim_value for d in dims]}"
            )
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise OnnxFormatError(f"image input {value.name!r} must be float32")
        return n.Input(name=name, sources=(), shape=tuple(int(d.dim_value) for d in dims[1:]))

    def read(self, timesteps: int | None) -> Graph:
        meta = {p.key: p.value for p in self.model.metadata_props}
        if timesteps is None:
            if _META_TIMESTEPS not in meta:
                raise OnnxFormatError(
                    f"the ONNX model does not record its timesteps (metadata {_META_TIMESTEPS!r}); "
                    "pass timesteps=T"
                )
            try:
                timesteps = int(meta[_META_TIMESTEPS])
            except ValueError:
                raise OnnxFormatError(
                    f"metadata {_META_TIMESTEPS!r} = {meta[_META_TIMESTEPS]!r} is not an integer"
                ) from None
        image = self.image_input(self.state_inputs())
        self.emit(self.input_node(image, meta.get(_META_INPUT, image.name)), image.name)
        for proto in self.graph.node:
            if id(proto) in self.absorbed:
                continue
            domain = "" if proto.domain in ("", "ai.onnx") else proto.domain
            handler = _HANDLERS.get((domain, proto.op_type))
            if handler is None:
                raise self.unsupported(proto)
            handler(self, proto, _attributes(proto))
        name = meta.get(_META_NAME) or self.graph.name or "model"
        graph = Graph(tuple(self.nodes), timesteps=int(timesteps), name=name)
        validate(graph)
        return graph

    # ------------------------------------------------------------------ operators

    def conv(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        weight = self.constant(proto, 1, "weight")
        bias = self.constant(proto, 2, "bias", optional=True)
        if weight.ndim != 4:
            raise self.unsupported(proto, f"only 2-D convolutions; its weight has shape {weight.shape}")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            raise self.unsupported(proto, f"auto_pad={auto_pad}; give explicit pads")
        if list(attrs.get("dilations", [1, 1])) != [1, 1]:
            raise self.unsupported(proto, f"dilations={attrs['dilations']}; only 1")
        if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != list(weight.shape[2:]):
            raise OnnxFormatError(
                f"Conv {self.label(proto)!r}: kernel_shape {attrs['kernel_shape']} does not match weight {weight.shape}"
            )
        pads = [0, 0, 0, 0] if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise self.unsupported(proto, f"asymmetric pads {pads}")
        self.emit(
            n.Conv2d(
                name=self.label(proto),
                sources=(self.source(proto, proto.input[0]),),
                weight=weight,
                bias=None if bias is None else bias.reshape(-1),
                stride=tuple(int(s) for s in attrs.get("strides", [1, 1])),
                padding=(int(pads[0]), int(pads[1])),
                groups=int(attrs.get("group", 1)),
            ),
            proto.output[0],
        )

    def linear(self, proto: onnx.NodeProto, source: str, weight: np.ndarray, bias: np.ndarray | None) -> None:
        if bias is not None:
            if bias.size != weight.shape[0]:
                raise self.unsupported(proto, f"bias of shape {bias.shape} for {weight.shape[0]} outputs")
            bias = bias.reshape(-1)
        self.emit(n.Linear(name=self.label(proto), sources=(source,), weight=weight, bias=bias), proto.output[0])

    def gemm(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("transA", 0) != 0:
            raise self.unsupported(proto, "transA=1")
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise self.unsupported(proto, f"alpha={attrs.get('alpha', 1.0)}, beta={attrs.get('beta', 1.0)}; only 1")
        weight = self.constant(proto, 1, "weight")
        if weight.ndim != 2:
            raise self.unsupported(proto, f"weight of shape {weight.shape}")
        if attrs.get("transB", 0) == 0:
            weight = np.ascontiguousarray(weight.T)  # Y = A @ B: IR weight is [O, I]
        self.linear(proto, self.source(proto, proto.input[0]), weight, self.constant(proto, 2, "bias", optional=True))

    def matmul(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        weight = self.constant(proto, 1, "weight")
        if weight.ndim != 2:
            raise self.unsupported(proto, f"only a 2-D constant right operand; got shape {weight.shape}")
        source = self.source(proto, proto.input[0])
        bias = None
        consumers = self.consumers.get(proto.output[0], [])
        if len(consumers) == 1 and consumers[0].op_type == "Add" and consumers[0].domain in ("", "ai.onnx"):
            add = consumers[0]
            other = [t for t in add.input if t != proto.output[0]]
            if len(other) == 1 and other[0] in self.constants:
                bias = _float32(self.constants[other[0]], f"ONNX node {self.label(add)!r} bias")
                self.absorbed.add(id(add))
        self.linear(proto, source, np.ascontiguousarray(weight.T), bias)
        if bias is not None:
            self.produced[add.output[0]] = self.produced[proto.output[0]]

    def add(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if len(proto.input) != 2 or any(t in self.constants for t in proto.input):
            raise self.unsupported(proto, "only the sum of two activations (or a MatMul's bias) is supported")
        self.produced[proto.output[0]] = self.sources(proto, proto.input[0]) + self.sources(proto, proto.input[1])

    def batchnorm(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("training_mode", 0) != 0 or len([o for o in proto.output if o]) != 1:
            raise self.unsupported(proto, "training mode; export the model for inference")
        gamma, beta, mean, var = (
            self.constant(proto, i, what) for i, what in enumerate(("scale", "bias", "mean", "var"), start=1)
        )
        self.emit(
            n.BatchNorm(
                name=self.label(proto),
                sources=(self.source(proto, proto.input[0]),),
                gamma=gamma, beta=beta, mean=mean, var=var,
                eps=_exact_float(proto, "epsilon", attrs.get("epsilon", 1e-5)),
            ),
            proto.output[0],
        )  # fmt: skip

    def avgpool(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 2:
            raise self.unsupported(proto, f"only 2-D pooling; kernel_shape={kernel}")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID") or any(attrs.get("pads", [0, 0, 0, 0])):
            raise self.unsupported(proto, f"padding (auto_pad={auto_pad}, pads={attrs.get('pads')}); only none")
        if attrs.get("ceil_mode", 0) != 0:
            raise self.unsupported(proto, "ceil_mode=1")
        if list(attrs.get("dilations", [1, 1])) != [1, 1]:
            raise self.unsupported(proto, f"dilations={attrs['dilations']}")
        stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        self.emit(
            n.AvgPool2d(
                name=self.label(proto), sources=(self.source(proto, proto.input[0]),),
                kernel=(int(kernel[0]), int(kernel[1])), stride=stride,
            ),
            proto.output[0],
        )  # fmt: skip

    def global_avgpool(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        source = self.source(proto, proto.input[0])
        shape = self.shape_of(source)
        if len(shape) != 3:
            raise self.unsupported(proto, f"needs a [batch, C, H, W] input; its input is {shape}")
        kernel = (shape[1], shape[2])
        self.emit(n.AvgPool2d(name=self.label(proto), sources=(source,), kernel=kernel, stride=kernel), proto.output[0])

    def flatten(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if attrs.get("axis", 1) != 1:
            raise self.unsupported(proto, f"axis={attrs['axis']}; only 1 (keep the batch dimension)")
        source = self.source(proto, proto.input[0])
        if _meta(proto).get(_META_IMPLICIT) == "flatten":
            self.produced[proto.output[0]] = (source,)  # written before a Gemm; IR Linear flattens itself
            return
        self.emit(n.Flatten(name=self.label(proto), sources=(source,)), proto.output[0])

    def join(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        """``Sum`` -> IR Add, ``Concat(axis=1)`` -> IR Concat (joins of activations a synapse reads)."""
        if proto.op_type == "Concat" and attrs.get("axis") != 1:
            raise self.unsupported(proto, f"axis={attrs.get('axis')}; only 1 (the channel axis)")
        if len(proto.input) < 2 or any(t in self.constants for t in proto.input):
            raise self.unsupported(proto, "only a join of two or more activations is supported")
        sources = tuple(self.source(proto, t) for t in proto.input)
        node_type = n.Add if proto.op_type == "Sum" else n.Concat
        self.emit(node_type(name=self.label(proto), sources=sources), proto.output[0])

    def identity(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        tensor = proto.input[0]
        if tensor in self.constants:
            self.constants[proto.output[0]] = self.constants[tensor]
        else:
            self.produced[proto.output[0]] = self.sources(proto, tensor)

    def constant_node(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if set(attrs) != {"value"}:
            raise self.unsupported(proto, f"only Constant(value=tensor); got attributes {sorted(attrs)}")
        self.constants[proto.output[0]] = numpy_helper.to_array(attrs["value"])

    def neuron(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        missing = [a for a in _NEURON_ATTRIBUTES if a not in attrs]
        if missing or len(proto.input) != 2 or len(proto.output) != 2:
            raise OnnxFormatError(
                f"inflor.Neuron {self.label(proto)!r} needs inputs (X, U), outputs (O, U_next) and the "
                f"attributes {', '.join(_NEURON_ATTRIBUTES)}; missing attributes: {missing}"
            )
        reset = attrs["reset"].decode() if isinstance(attrs["reset"], bytes) else attrs["reset"]
        spike_value = _exact_float(proto, "spike_value", attrs["spike_value"])
        reset_amount = (
            None if attrs["reset_is_spike_value"] else _exact_float(proto, "reset_amount", attrs["reset_amount"])
        )
        self.emit(
            n.Neuron(
                name=self.label(proto),
                sources=self.sources(proto, proto.input[0]),
                vth=_exact_float(proto, "vth", attrs["vth"]),
                tau=_exact_float(proto, "tau", attrs["tau"]),
                reset=reset,
                reset_amount=reset_amount,
                mpr=bool(attrs["mpr"]),
                spike_value=spike_value,
            ),
            proto.output[0],
        )

    def accumulator(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if len(proto.input) != 2 or len(proto.output) != 1:
            raise OnnxFormatError(f"inflor.Accumulator {self.label(proto)!r} needs inputs (X, A) and one output")
        self.emit(n.Accumulator(name=self.label(proto), sources=self.sources(proto, proto.input[0])), proto.output[0])


_HANDLERS: dict[tuple[str, str], Callable[[_Reader, onnx.NodeProto, dict[str, Any]], None]] = {
    ("", "Conv"): _Reader.conv,
    ("", "Gemm"): _Reader.gemm,
    ("", "MatMul"): _Reader.matmul,
    ("", "Add"): _Reader.add,
    ("", "BatchNormalization"): _Reader.batchnorm,
    ("", "AveragePool"): _Reader.avgpool,
    ("", "GlobalAveragePool"): _Reader.global_avgpool,
    ("", "Flatten"): _Reader.flatten,
    ("", "Sum"): _Reader.join,
    ("", "Concat"): _Reader.join,
    ("", "Identity"): _Reader.identity,
    ("", "Constant"): _Reader.constant_node,
    (DOMAIN, "Neuron"): _Reader.neuron,
    (DOMAIN, "Accumulator"): _Reader.accumulator,
}


def onnx_to_graph(model: onnx.ModelProto, timesteps: int | None = None) -> Graph:
    """Read a per-timestep ONNX model (as :func:`graph_to_onnx` writes it) into a float IR graph.

    Args:
        model: The ONNX model.
        timesteps: T; default: the model's ``inflor.timesteps`` metadata.

    Returns:
        The validated graph. ONNX node names become IR node names; the
        image input becomes the Input node (named by ``inflor.input_node``).

    Raises:
        UnsupportedOperatorError: An op outside :data:`SUPPORTED_OPS`, or a
            supported op with unsupported settings; the message names the
            op type and the node.
        OnnxFormatError: Missing timesteps, inputs, initializers or attributes.
        IRError: The resulting graph breaks an IR invariant.
    """
    if not isinstance(model, onnx.ModelProto):
        raise OnnxFormatError(f"onnx_to_graph needs an onnx.ModelProto; got {type(model).__name__}")
    return _Reader(model).read(timesteps)
