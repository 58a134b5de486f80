"""The float IR as a per-timestep ONNX graph, and back.

The ONNX file is the exchange format of the pipeline (DESIGN.md section 2):
one graph that computes ONE timestep, with every piece of state as an
explicit input/output pair, so any ONNX runtime can step it::

    inputs : image [batch, C, H, W]            the frame of step t (direct encoding: the same
                                               frame every step; sequence: frame t)
             <neuron>.u [batch, *shape]        U[t-1] of every neuron layer
             <readout>.acc [batch, *shape]     A[t-1] of the accumulator
    outputs: <neuron>.spikes, <neuron>.u_next  O[t], U[t]
             <readout>.acc_next                A[t]; the score per the readout (A[T-1] / T for InfLoR)

Operators: Conv (a per-position bias map is a following ``Add`` of a
``[O, OH, OW]`` constant, tagged ``inflor.bias_map``), Gemm (transB=1;
preceded by Flatten(axis=1) when its input is not a vector),
BatchNormalization, AveragePool, Flatten(axis=1), ``Sub`` then ``Div`` by
per-channel constants (an IR ``Normalize``; the Sub is tagged
``inflor.normalize``), Add (``<neuron>.current``: a neuron's sources are
summed in source order), Sum and Concat(axis=1) (the IR's ``Add`` and
``Concat`` joins), and
two operators of the ``inflor`` domain (version 2), each carried as an ONNX
FunctionProto whose body is standard ONNX so onnxruntime executes it
unchanged:

* ``inflor.Neuron(X, U, VTH, A) -> (O, U_next)``: the IR
  :class:`~inflor_deploy.ir.Neuron`, every variant, in the float operation
  order :func:`~inflor_deploy.backends.sim.float_ir.run_float` uses. ``VTH``
  and ``A`` are float64 initializers ``<neuron>.vth`` and
  ``<neuron>.reset_amount`` (shape ``[]``, or ``[C, 1, 1]`` / ``[C]`` per
  channel; float64 so the IR's values travel exactly, cast to float32 in the
  body as torch rounds a Python float); ``A`` is the spike value when the IR
  says None, flagged by ``reset_is_spike_value = 1``. Attributes ``tau``,
  ``gain``, ``v_reset``, ``decay`` (1.0 when the IR has None), ``spike_value``
  (floats), ``reset`` ("subtract"/"zero"/"none"), ``compare`` (">="/">"),
  ``reset_timing`` ("same_step"/"next_step"), ``charge`` (the IR's charge
  forms), ``mpr`` and ``reset_is_spike_value`` (ints)::

      fires(a) = a >= vth  (compare ">=")  |  a > vth  (">")
      R      = Cast(fires(U))                           next_step only (snnTorch: from the previous membrane)
      U_in   = (1 - R) * U   next_step zero;   U  otherwise
      H      = charge(U_in, X)                          (affine: tau * U + gain * X;
                                                         decay_divide_input: U + (X - (U - v_reset)) / decay; ...)
      H      = H - R * A     next_step subtract
      Hh     = phi(H) if mpr else H                     (phi: Where/Min/Max/Pow/Tanh)
      O1     = Cast(fires(Hh))
      U_next = H                                        next_step, or reset "none"
             = H - A * O1                               subtract
             = H * (1 - O1)                             zero, v_reset = 0
             = O1 * v_reset + (1 - O1) * H              zero, v_reset != 0 (SpikingJelly)
      O      = O1 * spike_value

  The state ``U`` starts at ``v_reset`` (:func:`~inflor_deploy.backends.onnx.runtime.run_onnx`
  reads the attribute).

* ``inflor.Accumulator(X, A) -> A_next = tau * A + X``, attributes ``tau``
  and ``readout`` (the IR :class:`~inflor_deploy.ir.Accumulator`'s; the runner
  turns the states into the readout's score).

Exactness: ONNX float attributes are float32. The IR's floats are Python
floats (e.g. BatchNorm ``eps = 1e-5``), so every float attribute's exact
value is also stored as ``repr`` in the node's ``metadata_props`` under
``inflor.exact.<attribute>``; the importer uses it when it rounds to the
attribute (an edited attribute wins). The model's ``metadata_props`` hold
``inflor.timesteps``, ``inflor.model_name``, ``inflor.input_node`` and the
Input's declaration: ``inflor.input_encoding``, ``inflor.input_range``
(``repr`` of low and high), ``inflor.pixel_levels`` (an int or ``none``)
and, once quantized, ``inflor.grade_scale``.
A Flatten that the writer inserts before a Gemm carries
``inflor.implicit = "flatten"`` and is not turned back into an IR node
(IR ``Linear`` flattens its input itself). So
``onnx_to_graph(graph_to_onnx(g))`` reproduces ``g`` exactly: node types,
names, order, arrays and attributes (the Schedule is not stored).

The importer accepts what the writer emits plus common equivalents: Gemm
with ``transB`` 0 or 1, MatMul followed by Add of a constant bias, Conv
followed by Add of a constant bias map, GlobalAveragePool, Identity and
Constant. A model without the Input metadata imports as direct encoding of
pixels in [0, 1].
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
#: Custom domain of the Neuron and Accumulator operators, and its version (2: the
#: neurons of issue 10, with VTH and A as inputs; version 1 had vth, reset_amount attributes).
DOMAIN = "inflor"
DOMAIN_VERSION = 2
#: IR version 10 is the first with per-node ``metadata_props``.
IR_VERSION = 10

_META_TIMESTEPS = "inflor.timesteps"
_META_NAME = "inflor.model_name"
_META_INPUT = "inflor.input_node"
_META_EXACT = "inflor.exact."
_META_IMPLICIT = "inflor.implicit"
_META_ENCODING = "inflor.input_encoding"
_META_RANGE = "inflor.input_range"
_META_PIXEL_LEVELS = "inflor.pixel_levels"
_META_GRADE_SCALE = "inflor.grade_scale"
_META_NORMALIZE = "inflor.normalize"
_META_BIAS_MAP = "inflor.bias_map"

_NEURON_ATTRIBUTES = (
    "tau", "gain", "reset", "reset_is_spike_value", "reset_timing", "compare", "v_reset", "charge", "decay",
    "mpr", "spike_value",
)  # fmt: skip
_NEURON_FLOAT_ATTRIBUTES = ("tau", "gain", "v_reset", "decay", "spike_value")
_ACCUMULATOR_ATTRIBUTES = ("tau", "readout")

#: Operators the importer understands (``domain.op``; the default domain is unprefixed).
SUPPORTED_OPS: tuple[str, ...] = (
    "Conv",
    "Gemm",
    "MatMul(+Add bias)",
    "Conv+Add (bias map)",
    "Sub+Div (per-channel normalization)",
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


def _string(output: str, value: str) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [output], value=helper.make_tensor(output, TensorProto.STRING, [], [value.encode()])
    )


def _select(mode: str, cases: list[tuple[str, str]], default: str, out: str) -> list[onnx.NodeProto]:
    """``out = case value where the string attribute constant `mode` equals the case name``, else default."""
    make = helper.make_node
    body, current = [], default
    for i, (name, value) in enumerate(cases):
        flag, picked = f"{out}_is_{i}", f"{out}_{i}" if i < len(cases) - 1 else out
        body += [
            _string(f"{flag}_name", name),
            make("Equal", [mode, f"{flag}_name"], [flag]),
            make("Where", [flag, value, current], [picked]),
        ]
        current = picked
    return body


def _charge(u: str, out: str) -> list[onnx.NodeProto]:
    """H from the state ``u`` and X, each IR charge form operation by operation, selected by ``charge``."""
    make = helper.make_node
    p = f"{out}_"
    return [
        # affine: tau * U + gain * X (a factor 1 multiplies exactly, so skipping it changes nothing)
        make("Mul", ["tau", u], [p + "tau_u"]),
        make("Mul", ["gain", "X"], [p + "gain_x"]),
        make("Add", [p + "tau_u", p + "gain_x"], [p + "affine"]),
        # SpikingJelly: U + (X - (U - v_reset)) / k, U - (U - v_reset) / k + X, and the * q forms
        make("Sub", [u, "v_reset"], [p + "rest"]),
        make("Sub", ["X", p + "rest"], [p + "drive"]),
        make("Div", [p + "drive", "decay"], [p + "drive_div"]),
        make("Add", [u, p + "drive_div"], [p + "decay_divide_input"]),
        make("Mul", [p + "drive", "decay"], [p + "drive_mul"]),
        make("Add", [u, p + "drive_mul"], [p + "decay_multiply_input"]),
        make("Div", [p + "rest", "decay"], [p + "leak_div"]),
        make("Sub", [u, p + "leak_div"], [p + "leaked_div"]),
        make("Add", [p + "leaked_div", "X"], [p + "decay_divide"]),
        make("Mul", [p + "rest", "decay"], [p + "leak_mul"]),
        make("Sub", [u, p + "leak_mul"], [p + "leaked_mul"]),
        make("Add", [p + "leaked_mul", "X"], [p + "decay_multiply"]),
        *_select(
            "charge_mode",
            [(name, p + name) for name in n.CHARGES[1:]],  # every decay_* form; "affine" is the default
            p + "affine",
            out,
        ),
    ]


def neuron_function() -> onnx.FunctionProto:
    """``inflor.Neuron(X, U, VTH, A) -> (O, U_next)`` in standard ONNX ops (see the module docstring).

    phi is written exactly as :func:`inflor_deploy.nn.mpr.phi` computes it:
    each branch on an input clamped into its own domain, then selected.
    Every variant is computed and the IR's is selected with ``Where``, so
    each output is the selected variant's own float operations.
    """
    make = helper.make_node
    body = [
        *(_constant_from_attribute(name, "value_float", name) for name in _NEURON_FLOAT_ATTRIBUTES),
        _constant_from_attribute("mpr_int", "value_int", "mpr"),
        _constant_from_attribute("reset_mode", "value_string", "reset"),
        _constant_from_attribute("compare_mode", "value_string", "compare"),
        _constant_from_attribute("timing_mode", "value_string", "reset_timing"),
        _constant_from_attribute("charge_mode", "value_string", "charge"),
        _scalar("zero", 0.0),
        _scalar("one", 1.0),
        _scalar("half", 0.5),
        _scalar("two", 2.0),
        _scalar("three", 3.0),
        _scalar("three_halves", 1.5),
        _scalar("third", 1.0 / 3.0),
        make("Cast", ["VTH"], ["vth"], to=TensorProto.FLOAT),
        make("Cast", ["A"], ["reset_amount"], to=TensorProto.FLOAT),
        _string("ge", ">="),
        make("Equal", ["compare_mode", "ge"], ["is_ge"]),
        _string("next_step", "next_step"),
        make("Equal", ["timing_mode", "next_step"], ["is_delayed"]),
        _string("subtract", "subtract"),
        make("Equal", ["reset_mode", "subtract"], ["is_soft"]),
        _string("zero_mode", "zero"),
        make("Equal", ["reset_mode", "zero_mode"], ["is_hard"]),
        # snnTorch's delayed reset: R from the previous (pre-reset) membrane U
        # (onnxruntime has no boolean Where: the comparisons are cast to 0/1 floats first)
        make("GreaterOrEqual", ["U", "vth"], ["r_ge"]),
        make("Greater", ["U", "vth"], ["r_gt"]),
        make("Cast", ["r_ge"], ["r_ge_float"], to=TensorProto.FLOAT),
        make("Cast", ["r_gt"], ["r_gt_float"], to=TensorProto.FLOAT),
        make("Where", ["is_ge", "r_ge_float", "r_gt_float"], ["R"]),
        make("Sub", ["one", "R"], ["r_kept"]),
        make("Mul", ["r_kept", "U"], ["u_zeroed"]),
        make("And", ["is_delayed", "is_hard"], ["delayed_zero"]),
        make("Where", ["delayed_zero", "u_zeroed", "U"], ["U_in"]),
        *_charge("U_in", "H_charged"),
        make("Mul", ["R", "reset_amount"], ["r_removed"]),
        make("Sub", ["H_charged", "r_removed"], ["h_delayed_soft"]),
        make("And", ["is_delayed", "is_soft"], ["delayed_soft"]),
        make("Where", ["delayed_soft", "h_delayed_soft", "H_charged"], ["H"]),
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
        # O1 = fires(Hh)
        make("GreaterOrEqual", ["H_compared", "vth"], ["fires_ge"]),
        make("Greater", ["H_compared", "vth"], ["fires_gt"]),
        make("Cast", ["fires_ge"], ["o_ge"], to=TensorProto.FLOAT),
        make("Cast", ["fires_gt"], ["o_gt"], to=TensorProto.FLOAT),
        make("Where", ["is_ge", "o_ge", "o_gt"], ["O1"]),
        # U_next: soft H - A * O1; hard H * (1 - O1) or O1 * v_reset + (1 - O1) * H; none / delayed: H
        make("Mul", ["reset_amount", "O1"], ["removed"]),
        make("Sub", ["H", "removed"], ["u_soft"]),
        make("Sub", ["one", "O1"], ["kept"]),
        make("Mul", ["H", "kept"], ["u_hard_zero"]),
        make("Mul", ["O1", "v_reset"], ["reset_part"]),
        make("Mul", ["kept", "H"], ["kept_part"]),
        make("Add", ["reset_part", "kept_part"], ["u_hard_to"]),
        make("Equal", ["v_reset", "zero"], ["resets_to_zero"]),
        make("Where", ["resets_to_zero", "u_hard_zero", "u_hard_to"], ["u_hard"]),
        make("Where", ["is_hard", "u_hard", "H"], ["u_hard_or_none"]),
        make("Where", ["is_soft", "u_soft", "u_hard_or_none"], ["u_same_step"]),
        make("Where", ["is_delayed", "H", "u_same_step"], ["U_next"]),
        make("Mul", ["O1", "spike_value"], ["O"]),
    ]
    return helper.make_function(
        DOMAIN,
        "Neuron",
        ["X", "U", "VTH", "A"],
        ["O", "U_next"],
        body,
        [helper.make_opsetid("", OPSET)],
        attributes=list(_NEURON_ATTRIBUTES),
        doc_string="Spiking neuron layer, one timestep (inflor_deploy.ir.nodes.Neuron); "
        "see inflor_deploy.backends.onnx.float_model.",
    )


def accumulator_function() -> onnx.FunctionProto:
    """``inflor.Accumulator(X, A) -> A_next = tau * A + X`` (tau = 1 except for the mean-membrane readout)."""
    make = helper.make_node
    return helper.make_function(
        DOMAIN,
        "Accumulator",
        ["X", "A"],
        ["A_next"],
        [
            _constant_from_attribute("tau", "value_float", "tau"),
            make("Mul", ["tau", "A"], ["tau_a"]),
            make("Add", ["tau_a", "X"], ["A_next"]),
        ],
        [helper.make_opsetid("", OPSET)],
        attributes=list(_ACCUMULATOR_ATTRIBUTES),
        doc_string="Non-spiking readout, one timestep: A[t] = tau * A[t-1] + X[t]; the score per its readout.",
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
            bias_map = node.bias is not None and node.bias.ndim == 3
            if node.bias is not None and not bias_map:
                inputs.append(self.initializer(name, "bias", node.bias))
            emit(
                helper.make_node(
                    "Conv", inputs, [f"{name}.conv" if bias_map else name], name=name,
                    kernel_shape=list(node.weight.shape[2:]), strides=list(node.stride),
                    pads=[node.padding[0], node.padding[1], node.padding[0], node.padding[1]],
                    dilations=[1, 1], group=int(node.groups),
                )
            )  # fmt: skip
            if bias_map:  # one bias per output position: Conv, then Add of the [O, OH, OW] map
                proto = helper.make_node(
                    "Add", [f"{name}.conv", self.initializer(name, "bias", node.bias)], [name], name=f"{name}.bias_add"
                )
                entry = proto.metadata_props.add()
                entry.key, entry.value = _META_BIAS_MAP, name
                emit(proto)
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
        elif isinstance(node, n.Normalize):
            # (x - mean) / std per channel; constants shaped [C, 1, 1] to broadcast over [batch, C, H, W].
            view = (-1,) + (1,) * (len(self.shapes[node.sources[0]]) - 1)
            mean = self.initializer(name, "mean", np.asarray(node.mean).reshape(view))
            std = self.initializer(name, "std", np.asarray(node.std).reshape(view))
            proto = helper.make_node("Sub", [x, mean], [f"{name}.centered"], name=f"{name}.subtract")
            entry = proto.metadata_props.add()
            entry.key, entry.value = _META_NORMALIZE, name
            emit(proto)
            emit(helper.make_node("Div", [f"{name}.centered", std], [name], name=name))
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
            ndim = len(shape)
            vth_name, amount_name = f"{name}.vth", f"{name}.reset_amount"
            for tensor, value in ((vth_name, node.vth), (amount_name, reset_amount)):
                array = np.asarray(n.per_channel(np.asarray(value, dtype=np.float64), ndim), dtype=np.float64)
                self.initializers.append(numpy_helper.from_array(array, tensor))
            decay = 1.0 if node.decay is None else float(node.decay)
            proto = helper.make_node(
                "Neuron", [x, state, vth_name, amount_name], [spikes, state_next], name=name, domain=DOMAIN,
                tau=float(node.tau), gain=float(node.gain), reset=str(node.reset),
                reset_is_spike_value=int(is_spike_value), reset_timing=str(node.reset_timing),
                compare=str(node.compare), v_reset=float(node.v_reset), charge=str(node.charge), decay=decay,
                mpr=int(bool(node.mpr)), spike_value=float(node.spike_value),
            )  # fmt: skip
            for attribute, value in (
                ("tau", node.tau), ("gain", node.gain), ("v_reset", node.v_reset), ("decay", decay),
                ("spike_value", node.spike_value),
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
            proto = helper.make_node(
                "Accumulator", [x, state], [state_next], name=name, domain=DOMAIN,
                tau=float(node.tau), readout=str(node.readout),
            )  # fmt: skip
            _set_exact(proto, "tau", node.tau)
            emit(proto)
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
    source = graph.input
    props = {
        _META_TIMESTEPS: str(graph.timesteps),
        _META_NAME: graph.name,
        _META_INPUT: source.name,
        _META_ENCODING: source.encoding,
        _META_RANGE: ",".join(repr(float(v)) for v in source.value_range),
        _META_PIXEL_LEVELS: "none" if source.pixel_levels is None else str(int(source.pixel_levels)),
    }
    if source.grade_scale is not None:
        props[_META_GRADE_SCALE] = repr(float(source.grade_scale))
    helper.set_model_props(model, props)
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
            if proto.domain == DOMAIN and proto.op_type in ("Neuron", "Accumulator") and len(proto.input) >= 2:
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

    def input_node(self, value: onnx.ValueInfoProto, name: str, meta: dict[str, str]) -> n.Input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2 or any(not d.HasField("dim_value") for d in dims[1:]):
            raise OnnxFormatError(
                f"image input {value.name!r} needs a shape [batch, C, H, W] with known C, H, W; "
                f"got {[d.dim_param or d.dim_value for d in dims]}"
            )
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise OnnxFormatError(f"image input {value.name!r} must be float32")
        try:
            low, high = (float(v) for v in meta.get(_META_RANGE, "0.0,1.0").split(","))
            levels = meta.get(_META_PIXEL_LEVELS, "255")
            pixel_levels = None if levels == "none" else int(levels)
            grade = meta.get(_META_GRADE_SCALE)
            grade_scale = None if grade is None else float(grade)
        except ValueError as err:
            raise OnnxFormatError(
                f"malformed input metadata ({_META_RANGE}, {_META_PIXEL_LEVELS}, {_META_GRADE_SCALE}): {err}"
            ) from None
        return n.Input(
            name=name, sources=(), shape=tuple(int(d.dim_value) for d in dims[1:]),
            encoding=meta.get(_META_ENCODING, "direct"), value_range=(low, high),
            pixel_levels=pixel_levels, grade_scale=grade_scale,
        )  # fmt: skip

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
        self.emit(self.input_node(image, meta.get(_META_INPUT, image.name), meta), image.name)
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
        bias = None if bias is None else bias.reshape(-1)
        output = proto.output[0]
        consumers = self.consumers.get(output, [])
        if len(consumers) == 1 and consumers[0].op_type == "Add" and consumers[0].domain in ("", "ai.onnx"):
            add = consumers[0]
            other = [t for t in add.input if t != output]
            if len(other) == 1 and other[0] in self.constants:
                # A per-position bias map [O, OH, OW] (or [1, O, OH, OW]) added after the Conv.
                bias_map = _float32(self.constants[other[0]], f"ONNX node {self.label(add)!r} bias map")
                bias_map = bias_map.reshape(bias_map.shape[-3:]) if bias_map.ndim >= 3 else bias_map
                if bias_map.ndim == 3:
                    bias = bias_map if bias is None else (bias_map + bias[:, None, None]).astype(np.float32)
                    self.absorbed.add(id(add))
                    output = add.output[0]
        self.emit(
            n.Conv2d(
                name=self.label(proto),
                sources=(self.source(proto, proto.input[0]),),
                weight=weight,
                bias=bias,
                stride=tuple(int(s) for s in attrs.get("strides", [1, 1])),
                padding=(int(pads[0]), int(pads[1])),
                groups=int(attrs.get("group", 1)),
            ),
            output,
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

    def subtract(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        """``Sub(x, mean)`` whose only consumer is ``Div(., std)``, both per-channel constants: a Normalize."""
        consumers = self.consumers.get(proto.output[0], [])
        div = consumers[0] if len(consumers) == 1 else None
        if (
            len(proto.input) != 2 or proto.input[1] not in self.constants or div is None
            or div.op_type != "Div" or div.domain not in ("", "ai.onnx")
            or len(div.input) != 2 or div.input[0] != proto.output[0] or div.input[1] not in self.constants
        ):  # fmt: skip
            raise self.unsupported(proto, "only Sub(x, mean) followed by Div(., std) (a per-channel normalization)")
        source = self.source(proto, proto.input[0])
        channels = self.shape_of(source)[0]
        mean = self.constant(proto, 1, "mean").reshape(-1)
        std = self.constant(div, 1, "std").reshape(-1)
        if mean.size == 1:
            mean = np.full(channels, mean[0], np.float32)
        if std.size == 1:
            std = np.full(channels, std[0], np.float32)
        self.absorbed.add(id(div))
        self.emit(n.Normalize(name=self.label(div), sources=(source,), mean=mean, std=std), div.output[0])

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

    def _parameter(self, proto: onnx.NodeProto, index: int, what: str) -> float | np.ndarray:
        """A neuron's VTH or A input: a float (shape []) or a float64 per-channel array."""
        tensor = proto.input[index]
        if tensor not in self.constants:
            raise OnnxFormatError(f"inflor.Neuron {self.label(proto)!r}: its {what} {tensor!r} must be an initializer")
        array = np.asarray(self.constants[tensor])
        if array.dtype.kind != "f":
            raise OnnxFormatError(f"inflor.Neuron {self.label(proto)!r}: {what} {tensor!r} has dtype {array.dtype}")
        if array.ndim == 0:
            return float(array)
        return np.ascontiguousarray(array.astype(np.float64).reshape(-1))

    def neuron(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        missing = [a for a in _NEURON_ATTRIBUTES if a not in attrs]
        if missing or len(proto.input) != 4 or len(proto.output) != 2:
            raise OnnxFormatError(
                f"inflor.Neuron {self.label(proto)!r} needs inputs (X, U, VTH, A), outputs (O, U_next) and the "
                f"attributes {', '.join(_NEURON_ATTRIBUTES)} (inflor domain version {DOMAIN_VERSION}); "
                f"missing attributes: {missing}"
            )
        text = {k: (attrs[k].decode() if isinstance(attrs[k], bytes) else attrs[k])
                for k in ("reset", "reset_timing", "compare", "charge")}  # fmt: skip
        floats = {k: _exact_float(proto, k, attrs[k]) for k in _NEURON_FLOAT_ATTRIBUTES}
        reset_amount = None if attrs["reset_is_spike_value"] else self._parameter(proto, 3, "reset amount A")
        self.emit(
            n.Neuron(
                name=self.label(proto),
                sources=self.sources(proto, proto.input[0]),
                vth=self._parameter(proto, 2, "threshold VTH"),
                tau=floats["tau"],
                reset=text["reset"],
                reset_amount=reset_amount,
                mpr=bool(attrs["mpr"]),
                spike_value=floats["spike_value"],
                gain=floats["gain"],
                compare=text["compare"],
                reset_timing=text["reset_timing"],
                v_reset=floats["v_reset"],
                charge=text["charge"],
                decay=None if text["charge"] == "affine" else floats["decay"],
            ),
            proto.output[0],
        )

    def accumulator(self, proto: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        if len(proto.input) != 2 or len(proto.output) != 1 or any(a not in attrs for a in _ACCUMULATOR_ATTRIBUTES):
            raise OnnxFormatError(
                f"inflor.Accumulator {self.label(proto)!r} needs inputs (X, A), one output and the attributes "
                f"{', '.join(_ACCUMULATOR_ATTRIBUTES)}"
            )
        readout = attrs["readout"].decode() if isinstance(attrs["readout"], bytes) else attrs["readout"]
        self.emit(
            n.Accumulator(
                name=self.label(proto), sources=self.sources(proto, proto.input[0]),
                readout=readout, tau=_exact_float(proto, "tau", attrs["tau"]),
            ),
            proto.output[0],
        )  # fmt: skip


_HANDLERS: dict[tuple[str, str], Callable[[_Reader, onnx.NodeProto, dict[str, Any]], None]] = {
    ("", "Conv"): _Reader.conv,
    ("", "Gemm"): _Reader.gemm,
    ("", "MatMul"): _Reader.matmul,
    ("", "Add"): _Reader.add,
    ("", "Sub"): _Reader.subtract,
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
