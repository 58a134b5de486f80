"""The quantized IR as a per-timestep ONNX graph that onnxruntime runs bit-exactly.

:mod:`inflor_deploy.backends.onnx.float_model` writes the FLOAT graph; this module
writes the fixed-point graph (after ``QuantizeFixedPoint``) so that any
ONNX runtime reproduces :func:`inflor_deploy.backends.sim.int_reference.run_aligned`
(Lava's ``PyLifModelBitAcc``) integer for integer. One graph computes ONE
timestep of the aligned view (every layer at the same t; synaptic delays
only matter in the pipelined view and are ignored, as ``run_aligned`` does)::

    inputs : image [batch, C, H, W]   float32, the frame of step t (the same frame at
                                      every step for direct encoding; frame t of a
                                      sequence Input: ``inflor.input_encoding``)
             <layer>.u, <layer>.v     int64 [batch, *shape], u and v of every neuron
                                      layer and of the accumulator after step t-1
    outputs: <neuron>.spikes          uint8, the step's spikes
             <layer>.u_next, <layer>.v_next    int64, the state after step t
                                      (the accumulator's <layer>.v_next is the score)

Operators, and why each is exact:

* Input quantization, ``round(image * grade_scale)`` half to even:
  ``Cast(double) -> Mul(grade_scale) -> Round``. The product is taken in
  float64 as the reference takes it (``np.rint(float64(image) * scale)``),
  and ONNX ``Round`` rounds half to even like ``np.rint`` (checked by a test).
* ``FixedPointSynapse``: ``Conv`` (conv) or ``Flatten(axis=1) + Gemm(transB=1)``
  (dense) on the integer weights shifted by the synapse's exponent,
  ``W << weight_exp``, stored as float initializers ``<synapse>.weight``
  (a power of two times an integer: exact), then ``Cast(int64)`` -> tensor
  ``<synapse>``. Every
  partial sum of ``sum_k w_k x_k``, in whatever order and grouping a kernel
  adds the terms (FMA included), is an integer of magnitude at most
  ``B = max_o sum_k |w_ok| * max|x|``; float32 holds every integer with
  magnitude <= 2^24, so the float32 result is exact when ``B < 2^24``. ``B``
  is computed per synapse at export time from the weights and the input
  bound (spikes: 1; graded input: ``round(input_bound * grade_scale)``) and
  stored in the node's ``metadata_props`` (``inflor.sum_bound``). A dense
  synapse with ``B >= 2^24`` is written in float64 (exact while ``B < 2^53``);
  onnxruntime has no float64 ``Conv`` kernel, so such a conv synapse raises
  :class:`ExportError`.
* Currents into a layer are summed in int64 (``Add``, ``<layer>.current``).
* ``FixedPointNeuron``: one node ``inflor.LoihiNeuron(A, U, V, B, VTH, RESET) -> (S, U_next, V_next)``
  with attributes ``reset`` ("subtract"/"zero"/"none"), ``du``, ``dv``,
  ``bias_exp``; the bias mantissas as input ``B`` (initializer
  ``<neuron>.bias_mant``, int64, layer shape), the threshold and reset
  mantissas as inputs ``VTH`` and ``RESET`` (initializers ``<neuron>.vth``,
  ``<neuron>.reset_mant``, int64, shape ``[]`` or per channel ``[C, 1, 1]`` /
  ``[C]``). Its FunctionProto body is int64 ONNX, step for step the reference::

      a = wrap_32(a)                                 (Lava's int32 arithmetic)
      u = sign(u*(4095-du)) * (|u*(4095-du)| // 4096)
      u = wrap_32(u + wrap_32(a*64)) ;  u' = Where(u > 2^23, u - 2^24, u) ;  u = Where(u' <= -2^23, u + 2^24, u')
      v = sign(v*(4096-dv)) * (|v*(4096-dv)| // 4096)
      v = Clip(wrap_32(wrap_32(v + u) + eb), -(2^23-1), 2^23-1)   eb = b * 2^e  or  floor(b / 2^-e)
      s = v > vth*64 ;  v = v - Where(s, reset_mant*64, 0)  |  Where(s, 0, v)  |  v (none)

  ``x << 6`` is written ``x * 64`` (the same integer for either sign; ONNX
  ``BitShift`` is defined for unsigned types only). Every ``Div`` divides a
  non-negative integer by a positive one, where truncation and floor agree:
  onnxruntime's int64 ``Div`` truncates toward zero (``-7 / 2 = -3``) while
  numpy's ``//`` floors, so a ``Div`` of a negative operand would be a
  runtime-dependent trap. The right shift of a negative bias by ``-e`` is
  built as ``-ceil(|b| / 2^-e)`` for the same reason.
* ``FixedPointAccumulator``: ``inflor.LoihiAccumulator(A, U, V, B) -> (U_next, V_next)``
  with attributes ``du`` (4095), ``dv`` (its leak; 0 but for a mean-membrane
  readout), ``bias_exp``: the same update without spike and reset. The
  node's ``metadata_props`` ``inflor.readout`` names the readout;
  :func:`run_fixed_onnx` forms the integer readout from the states (v after
  the last step, or the sum of v over the T steps).

The model's ``metadata_props`` hold ``inflor.timesteps``, ``inflor.model_name``,
``inflor.input_node``, ``inflor.grade_scale``, ``inflor.input_bound`` (the
largest ``|image|`` the exactness proof covers; by default the larger end of
the Input's declared range), ``inflor.input_range`` (that range:
:func:`run_fixed_onnx` refuses inputs outside it), ``inflor.input_encoding``
and ``inflor.semantics``.
:func:`run_fixed_onnx` steps the model with onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inflor_deploy.backends.onnx.float_model import (
    DOMAIN,
    DOMAIN_VERSION,
    IR_VERSION,
    OPSET,
    OnnxFormatError,
    check_unique_names,
    save_onnx,
)
from inflor_deploy.errors import ExportError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.backends.sim.int_reference import ACT_SHIFT, DECAY_UNIT, GRADED_LIMIT, U_LIMIT, V_LIMIT, VTH_SHIFT
from inflor_deploy.backends.sim.lava_arith import INT32_LIMIT, INT32_MIN, synapse_arithmetic

__all__ = [
    "ACCUMULATOR_OP",
    "FLOAT32_EXACT_LIMIT",
    "FLOAT64_EXACT_LIMIT",
    "FixedOnnxRun",
    "NEURON_OP",
    "SEMANTICS",
    "fixed_graph_to_onnx",
    "loihi_accumulator_function",
    "loihi_neuron_function",
    "run_fixed_onnx",
    "save_fixed_onnx",
    "synapse_sum_bound",
]

NEURON_OP = "LoihiNeuron"
ACCUMULATOR_OP = "LoihiAccumulator"
SEMANTICS = "Lava PyLifModelBitAcc (lava-nc 0.10.0)"
#: A synapse is evaluated in float32 when its sum bound is below this (every
#: integer of magnitude <= 2^24 is a float32; the strict bound is conservative by one).
FLOAT32_EXACT_LIMIT = 2**24
#: The same for float64 (dense synapses only; onnxruntime has no float64 Conv).
FLOAT64_EXACT_LIMIT = 2**53

_NEURON_ATTRIBUTES = ("reset", "du", "dv", "bias_exp")
_ACCUMULATOR_ATTRIBUTES = ("du", "dv", "bias_exp")

_META_TIMESTEPS = "inflor.timesteps"
_META_NAME = "inflor.model_name"
_META_INPUT = "inflor.input_node"
_META_SEMANTICS = "inflor.semantics"
_META_GRADE_SCALE = "inflor.grade_scale"
_META_INPUT_BOUND = "inflor.input_bound"
_META_INPUT_RANGE = "inflor.input_range"
_META_INPUT_ENCODING = "inflor.input_encoding"


# =========================================================================== functions


def _int_constant(output: str, value: int) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], value=helper.make_tensor(output, TensorProto.INT64, [], [value]))


def _attribute_constant(output: str, attribute: str, kind: str = "value_int") -> onnx.NodeProto:
    """``Constant`` holding the calling node's attribute (an int64 or string scalar)."""
    node = helper.make_node("Constant", [], [output])
    ref = onnx.AttributeProto()
    ref.name = kind
    ref.ref_attr_name = attribute
    ref.type = onnx.AttributeProto.INT if kind == "value_int" else onnx.AttributeProto.STRING
    node.attribute.append(ref)
    return node


def _decay(x: str, factor: str, out: str) -> list[onnx.NodeProto]:
    """``out = sign(x*factor) * (|x*factor| // 4096)``: truncation toward zero.

    The Div sees a non-negative dividend, so it is exact whether the runtime's
    integer Div truncates or floors.
    """
    make = helper.make_node
    return [
        make("Mul", [x, factor], [f"{out}_product"]),
        make("Sign", [f"{out}_product"], [f"{out}_sign"]),
        make("Abs", [f"{out}_product"], [f"{out}_abs"]),
        make("Div", [f"{out}_abs", "decay_unit"], [f"{out}_magnitude"]),
        make("Mul", [f"{out}_sign", f"{out}_magnitude"], [out]),
    ]


def _wrap_nodes(x: str, out: str, bits: int, prefix: str | None = None) -> list[onnx.NodeProto]:
    """``out = Mod(x + 2^(bits-1), 2^bits) - 2^(bits-1)``: Lava's two's complement wrap, in int64.

    Inside a function body the constants are local tensors; in the main
    graph (``prefix`` given) they are named after the node that wraps.
    """
    make = helper.make_node
    p = prefix or out
    half, period = f"{p}_half{bits}", f"{p}_period{bits}"
    return [
        _int_constant(half, 1 << (bits - 1)),
        _int_constant(period, 1 << bits),
        make("Add", [x, half], [f"{p}_shifted"]),
        make("Mod", [f"{p}_shifted", period], [f"{p}_mod"], fmod=0),  # floors: in [0, 2^bits)
        make("Sub", [f"{p}_mod", half], [out]),
    ]


def _cuba_body(v_out: str) -> list[onnx.NodeProto]:
    """Nodes from (A, U, V, B) and attributes du, dv, bias_exp to ``U_next`` and the clipped v."""
    make = helper.make_node
    return [
        _attribute_constant("du", "du"),
        _attribute_constant("dv", "dv"),
        _attribute_constant("bias_exp", "bias_exp"),
        _int_constant("zero", 0),
        _int_constant("one", 1),
        _int_constant("act_unit", 2**ACT_SHIFT),
        _int_constant("decay_unit", DECAY_UNIT),
        _int_constant("decay_max", DECAY_UNIT - 1),
        _int_constant("u_limit", U_LIMIT),
        _int_constant("u_neg_limit", -U_LIMIT),
        _int_constant("u_period", 2 * U_LIMIT),
        _int_constant("v_max", V_LIMIT),
        _int_constant("v_min", -V_LIMIT),
        # eb = B << e (e >= 0) or B >> -e (arithmetic: floor), with p = 2^|e| via an unsigned shift.
        make("Abs", ["bias_exp"], ["exp_abs"]),
        make("Cast", ["exp_abs"], ["exp_abs_u"], to=TensorProto.UINT64),
        make("Cast", ["one"], ["one_u"], to=TensorProto.UINT64),
        make("BitShift", ["one_u", "exp_abs_u"], ["pow_u"], direction="LEFT"),
        make("Cast", ["pow_u"], ["pow"], to=TensorProto.INT64),
        make("Mul", ["B", "pow"], ["bias_left"]),
        make("Abs", ["B"], ["bias_abs"]),
        make("Div", ["bias_abs", "pow"], ["bias_floor_pos"]),  # |B| // p, B >= 0
        make("Sub", ["pow", "one"], ["pow_minus_one"]),
        make("Add", ["bias_abs", "pow_minus_one"], ["bias_ceil_num"]),
        make("Div", ["bias_ceil_num", "pow"], ["bias_ceil"]),  # ceil(|B| / p)
        make("Neg", ["bias_ceil"], ["bias_floor_neg"]),  # floor(B / p) = -ceil(|B| / p), B < 0
        make("GreaterOrEqual", ["B", "zero"], ["bias_nonneg"]),
        make("Where", ["bias_nonneg", "bias_floor_pos", "bias_floor_neg"], ["bias_right"]),
        make("GreaterOrEqual", ["bias_exp", "zero"], ["exp_nonneg"]),
        make("Where", ["exp_nonneg", "bias_left", "bias_right"], ["eb"]),
        # u = wrap_32(decay(u, 4096 - (du + 1)) + wrap_32(wrap_32(a) << 6)), then wrapped once
        # into (-2^23, 2^23] (Lava's int32 arithmetic, then its single 24-bit wrap)
        *_wrap_nodes("A", "a_int32", 32),
        make("Sub", ["decay_max", "du"], ["u_factor"]),
        *_decay("U", "u_factor", "u_decayed"),
        make("Mul", ["a_int32", "act_unit"], ["a_times_64"]),
        *_wrap_nodes("a_times_64", "a_shifted", 32),
        make("Add", ["u_decayed", "a_shifted"], ["u_sum"]),
        *_wrap_nodes("u_sum", "u_raw", 32),
        make("Greater", ["u_raw", "u_limit"], ["u_over"]),
        make("Sub", ["u_raw", "u_period"], ["u_down"]),
        make("Where", ["u_over", "u_down", "u_raw"], ["u_once"]),
        make("LessOrEqual", ["u_once", "u_neg_limit"], ["u_under"]),
        make("Add", ["u_raw", "u_period"], ["u_up"]),  # from the unwrapped u, as Lava does
        make("Where", ["u_under", "u_up", "u_once"], ["U_next"]),
        # v = clip(wrap_32(wrap_32(decay(v, 4096 - dv) + u) + eb))
        make("Sub", ["decay_unit", "dv"], ["v_factor"]),
        *_decay("V", "v_factor", "v_decayed"),
        make("Add", ["v_decayed", "U_next"], ["v_plus_u_sum"]),
        *_wrap_nodes("v_plus_u_sum", "v_plus_u", 32),
        make("Add", ["v_plus_u", "eb"], ["v_sum"]),
        *_wrap_nodes("v_sum", "v_raw", 32),
        make("Clip", ["v_raw", "v_min", "v_max"], [v_out]),
    ]


def loihi_neuron_function() -> onnx.FunctionProto:
    """``inflor.LoihiNeuron(A, U, V, B) -> (S, U_next, V_next)`` in int64 ONNX (module docstring)."""
    make = helper.make_node
    body = _cuba_body("v_clipped") + [
        _attribute_constant("reset_mode", "reset", kind="value_string"),
        make("Constant", [], ["subtract"], value=helper.make_tensor("subtract", TensorProto.STRING, [], [b"subtract"])),
        make("Constant", [], ["zero_mode"], value=helper.make_tensor("zero_mode", TensorProto.STRING, [], [b"zero"])),
        _int_constant("vth_unit", 2**VTH_SHIFT),
        make("Mul", ["VTH", "vth_unit"], ["threshold"]),
        make("Greater", ["v_clipped", "threshold"], ["fired"]),  # strict, as the hardware
        make("Cast", ["fired"], ["S"], to=TensorProto.UINT8),
        make("Mul", ["RESET", "act_unit"], ["reset_amount"]),
        make("Where", ["fired", "reset_amount", "zero"], ["removed"]),
        make("Sub", ["v_clipped", "removed"], ["v_soft"]),
        make("Where", ["fired", "zero", "v_clipped"], ["v_hard"]),
        make("Equal", ["reset_mode", "subtract"], ["is_soft"]),
        make("Equal", ["reset_mode", "zero_mode"], ["is_hard"]),
        make("Where", ["is_hard", "v_hard", "v_clipped"], ["v_hard_or_none"]),
        make("Where", ["is_soft", "v_soft", "v_hard_or_none"], ["V_next"]),
    ]
    return helper.make_function(
        DOMAIN,
        NEURON_OP,
        ["A", "U", "V", "B", "VTH", "RESET"],
        ["S", "U_next", "V_next"],
        body,
        [helper.make_opsetid("", OPSET)],
        attributes=list(_NEURON_ATTRIBUTES),
        doc_string=(
            f"Loihi CUBA neuron layer, one timestep, integer-exact ({SEMANTICS}); "
            "see inflor_deploy.ir.nodes.FixedPointNeuron and inflor_deploy.backends.onnx.fixed_model."
        ),
    )


def loihi_accumulator_function() -> onnx.FunctionProto:
    """``inflor.LoihiAccumulator(A, U, V, B) -> (U_next, V_next)``: the neuron without spike or reset."""
    return helper.make_function(
        DOMAIN,
        ACCUMULATOR_OP,
        ["A", "U", "V", "B"],
        ["U_next", "V_next"],
        _cuba_body("V_next"),
        [helper.make_opsetid("", OPSET)],
        attributes=list(_ACCUMULATOR_ATTRIBUTES),
        doc_string=(
            f"Never-firing Loihi neuron (the readout), one timestep ({SEMANTICS}); "
            "see inflor_deploy.ir.nodes.FixedPointAccumulator."
        ),
    )


# =========================================================================== writer


def synapse_sum_bound(node: n.FixedPointSynapse, input_max: int) -> int:
    """``max_o sum_k |w_ok| * 2^max(weight_exp, 0) * input_max``: no partial sum of the synapse exceeds it in magnitude."""
    w = np.abs(np.asarray(node.weight, dtype=np.int64)).reshape(node.weight.shape[0], -1)
    return (int(w.sum(axis=1).max(initial=0)) << max(int(node.weight_exp), 0)) * int(input_max)


def _shifted_weight(node: n.FixedPointSynapse) -> np.ndarray:
    """``W << weight_exp`` as int64 (``W`` for a negative exponent, which floors the sum afterwards)."""
    return np.asarray(node.weight, dtype=np.int64) << max(int(node.weight_exp), 0)


def _set_meta(proto: onnx.NodeProto, key: str, value: object) -> None:
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, str(value)


def _value_info(name: str, dtype: int, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, ["batch", *shape])


class _Writer:
    def __init__(self, graph: Graph, input_bound: float) -> None:  # noqa: D107
        self.graph = graph
        self.shapes = validate(graph)
        self.input_bound = input_bound
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        # IR node name -> (ONNX tensor with its output, element type, largest |value|)
        self.tensor: dict[str, tuple[str, int, int]] = {}
        self.casts: dict[tuple[str, int], str] = {}

    def as_type(self, source: str, dtype: int) -> str:
        """The source's output in ``dtype`` (one Cast per source and type, shared by its synapses)."""
        tensor, current, _ = self.tensor[source]
        if current == dtype:
            return tensor
        key = (source, dtype)
        if key not in self.casts:
            name = f"{source}.as_{helper.tensor_dtype_to_np_dtype(dtype).name}"
            self.nodes.append(helper.make_node("Cast", [tensor], [name], name=name, to=dtype))
            self.casts[key] = name
        return self.casts[key]

    def add_input(self, node: n.Input) -> None:
        scale = node.grade_scale
        if scale is None:
            raise ExportError(f"Input {node.name!r} has no grade_scale: quantize the graph (QuantizeFixedPoint) first")
        self.inputs.append(_value_info(n.INPUT_NAME, TensorProto.FLOAT, tuple(node.shape)))
        make = helper.make_node
        suffixes = ("grade_scale", "as_float64", "scaled", "graded")
        scale_name, wide, scaled, graded = (f"{node.name}.{s}" for s in suffixes)
        self.initializers.append(numpy_helper.from_array(np.array(scale, dtype=np.float64), scale_name))
        self.nodes += [
            make("Cast", [n.INPUT_NAME], [wide], name=wide, to=TensorProto.DOUBLE),
            make("Mul", [wide, scale_name], [scaled], name=scaled),
            make("Round", [scaled], [graded], name=graded),  # half to even, as np.rint
        ]
        # round() is monotone, so |image| <= input_bound gives |graded| <= rint(input_bound * scale).
        input_max = int(np.rint(np.float64(self.input_bound) * np.float64(scale)))
        if input_max >= GRADED_LIMIT:
            raise ExportError(
                f"input bound {self.input_bound:g} x grade scale {scale:g} exceeds the 32-bit graded payload; "
                "reduce the input range or the grade scale"
            )
        self.tensor[node.name] = (graded, TensorProto.DOUBLE, abs(input_max))

    def add_synapse(self, node: n.FixedPointSynapse) -> None:
        name, source = node.name, node.sources[0]
        if not isinstance(self.graph.node(source), (n.Input, n.FixedPointNeuron)):
            raise ExportError(f"synapse {name!r}: its source {source!r} is neither the Input nor a neuron layer")
        input_max = self.tensor[source][2]
        # The input itself must also survive the Cast (it does whenever some weight is nonzero).
        bound = max(synapse_sum_bound(node, input_max), input_max)
        if bound < FLOAT32_EXACT_LIMIT:
            exact, compute = self.sum_in_float(node, TensorProto.FLOAT), "float32"
        elif node.kind == "dense" and bound < FLOAT64_EXACT_LIMIT:
            exact, compute = self.sum_in_float(node, TensorProto.DOUBLE), "float64"
        else:
            exact, compute = self.sum_in_limbs(node, input_max), "float32 limbs"
        proto = self.nodes[-2] if compute != "float32 limbs" else None
        if proto is not None:
            _set_meta(proto, "inflor.sum_bound", bound)
            _set_meta(proto, "inflor.compute_type", compute)
            _set_meta(proto, "inflor.delay", node.delay)
        arith = synapse_arithmetic(node, isinstance(self.graph.node(source), n.Input))
        if arith.can_wrap(bound):
            make = helper.make_node
            wrapped_input = exact
            if arith.process == "Conv":  # Lava casts its float64 sum to int32: -2^31 out of range
                limit, low, big, cast = (f"{name}.{s}" for s in ("int32_limit", "int32_min", "out_of_int32", "as_int32"))
                self.initializers += [
                    numpy_helper.from_array(np.array(INT32_LIMIT, np.int64), limit),
                    numpy_helper.from_array(np.array(INT32_MIN, np.int64), low),
                ]
                self.nodes += [
                    make("Abs", [exact], [f"{name}.abs"], name=f"{name}.abs"),
                    make("GreaterOrEqual", [f"{name}.abs", limit], [big], name=big),
                    make("Where", [big, low, exact], [cast], name=cast),
                ]
                wrapped_input = cast
            wraps = _wrap_nodes(wrapped_input, name, arith.wrap_bits, prefix=f"{name}.wrap")
            for i, proto_ in enumerate(wraps):
                proto_.name = f"{name}.wrap_{i}"
            self.nodes += wraps
            _set_meta(self.nodes[-1], "inflor.lava_wrap_bits", arith.wrap_bits)
        else:
            self.nodes.append(helper.make_node("Identity", [exact], [name], name=name + ".current"))
        if node.weight_exp < 0:
            self.floor_shift(name, -int(node.weight_exp))
            bound = -(-bound >> -int(node.weight_exp))  # ceil(bound / 2^m) bounds |floor(S / 2^m)|
        self.tensor[name] = (name, TensorProto.INT64, bound)

    def floor_shift(self, name: str, bits: int) -> None:
        """Tensor ``name`` (int64) becomes ``floor(S / 2^bits)``, Lava's arithmetic right shift.

        ``S - Mod(S, 2^bits)`` (ONNX integer ``Mod`` with ``fmod=0`` takes the
        divisor's sign, so the remainder is in ``[0, 2^bits)``) is an exact
        multiple of ``2^bits``, and the integer ``Div`` of it is exact.
        """
        make = helper.make_node
        last = self.nodes[-1]  # the node that wrote `name`: it now writes the unshifted sum
        unshifted = f"{name}.unshifted"
        last.output[0] = unshifted
        divisor, rem, floored = f"{name}.shift_divisor", f"{name}.shift_remainder", f"{name}.shift_floored"
        self.initializers.append(numpy_helper.from_array(np.array(1 << bits, np.int64), divisor))
        self.nodes += [
            make("Mod", [unshifted, divisor], [rem], name=rem, fmod=0),
            make("Sub", [unshifted, rem], [floored], name=floored),
            make("Div", [floored, divisor], [name], name=f"{name}.right_shift"),
        ]
        _set_meta(self.nodes[-1], "inflor.right_shift", bits)

    def sum_in_float(self, node: n.FixedPointSynapse, dtype: int) -> str:
        """The exact sum, computed in float32/float64 (proven exact by the bound) and cast to int64."""
        name = node.name
        weight = _shifted_weight(node)  # a power of two times integers below the bound: exact in float
        weight_name = f"{name}.weight"
        np_type = np.float32 if dtype == TensorProto.FLOAT else np.float64
        self.initializers.append(numpy_helper.from_array(weight.astype(np_type), weight_name))
        total = self.emit_sum(node, self.as_type(node.sources[0], dtype), weight_name, f"{name}.sum", name)
        exact = f"{name}.exact"
        self.nodes.append(helper.make_node("Cast", [total], [exact], name=f"{name}.to_int64", to=TensorProto.INT64))
        return exact

    def emit_sum(self, node: n.FixedPointSynapse, x: str, weight_name: str, total: str, proto_name: str) -> str:
        """Conv or (Flatten +) Gemm of x with the weights into ``total``."""
        weight = np.asarray(node.weight)
        if node.kind == "conv":
            proto = helper.make_node(
                "Conv", [x, weight_name], [total], name=proto_name,
                kernel_shape=list(weight.shape[2:]), strides=list(node.stride),
                pads=[node.padding[0], node.padding[1], node.padding[0], node.padding[1]],
                dilations=[1, 1], group=int(node.groups),
            )  # fmt: skip
        else:
            if len(self.shapes[node.sources[0]]) != 1:
                flat = f"{total}.flatten"
                self.nodes.append(helper.make_node("Flatten", [x], [flat], name=flat, axis=1))
                x = flat
            proto = helper.make_node("Gemm", [x, weight_name], [total], name=proto_name, transB=1)
        self.nodes.append(proto)
        return total

    def sum_in_limbs(self, node: n.FixedPointSynapse, input_max: int) -> str:
        """The exact sum of a synapse too large for one float pass: limbs of k bits (module docstring)."""
        name = node.name
        reach = synapse_sum_bound(node, 1)
        k = 0
        while reach * ((1 << (k + 1)) - 1) < FLOAT32_EXACT_LIMIT:
            k += 1
        if k < 1:
            raise ExportError(
                f"synapse {name!r}: sum |w| = {reach} per output reaches 2^24, so not even one-bit limbs of its "
                "input sum exactly in float32; requantize with smaller weights"
            )
        limbs = max(1, -(-max(int(input_max), 1).bit_length() // k))
        make = helper.make_node
        weight_name = f"{name}.weight"
        self.initializers.append(numpy_helper.from_array(_shifted_weight(node).astype(np.float32), weight_name))
        x = self.as_type(node.sources[0], TensorProto.INT64)
        sign, magnitude, base = f"{name}.sign", f"{name}.magnitude", f"{name}.limb_base"
        self.initializers.append(numpy_helper.from_array(np.array(1 << k, np.int64), base))
        self.nodes += [make("Sign", [x], [sign], name=sign), make("Abs", [x], [magnitude], name=magnitude)]
        total = None
        for j in range(limbs):
            shift, digit, signed, as_float = (f"{name}.limb{j}_{s}" for s in ("shift", "digit", "signed", "float"))
            self.initializers.append(numpy_helper.from_array(np.array(1 << (j * k), np.int64), shift))
            quotient = f"{name}.limb{j}_quotient"
            self.nodes += [
                make("Div", [magnitude, shift], [quotient], name=quotient),  # non-negative: exact floor
                make("Mod", [quotient, base], [digit], name=digit, fmod=0),
                make("Mul", [sign, digit], [signed], name=signed),
                make("Cast", [signed], [as_float], name=as_float, to=TensorProto.FLOAT),
            ]
            part = self.emit_sum(node, as_float, weight_name, f"{name}.limb{j}_sum", f"{name}.limb{j}")
            _set_meta(self.nodes[-1], "inflor.compute_type", f"float32 limb {j} of {limbs} ({k} bits)")
            part_int, scaled = f"{name}.limb{j}_int", f"{name}.limb{j}_scaled"
            self.nodes += [
                make("Cast", [part], [part_int], name=part_int, to=TensorProto.INT64),
                make("Mul", [part_int, shift], [scaled], name=scaled),
            ]
            if total is None:
                total = scaled
            else:
                added = f"{name}.limb{j}_total"
                self.nodes.append(make("Add", [total, scaled], [added], name=added))
                total = added
        return total

    def current(self, node: n.Node) -> str:
        """The int64 sum of the source synapses' currents, in source order (a scalar 0 without synapses)."""
        if not node.sources:  # a bias source: driven by its own bias alone
            zero = f"{node.name}.no_current"
            self.initializers.append(numpy_helper.from_array(np.array(0, dtype=np.int64), zero))
            return zero
        total = self.in_layer_shape(node.sources[0], node.name)
        last = len(node.sources) - 1
        for i, source in enumerate(node.sources[1:], start=1):
            name = f"{node.name}.current" if i == last else f"{node.name}.current_{i}"
            self.nodes.append(helper.make_node("Add", [total, self.in_layer_shape(source, node.name)], [name], name=name))
            total = name
        return total

    def in_layer_shape(self, synapse: str, layer: str) -> str:
        """A synapse's current in its layer's shape: a dense ``[batch, N]`` into a ``(C, H, W)`` layer is reshaped (C-major)."""
        tensor = self.tensor[synapse][0]
        if self.shapes[synapse] == self.shapes[layer]:
            return tensor
        shape, reshaped = f"{synapse}.layer_shape", f"{synapse}.in_layer_shape"
        self.initializers.append(numpy_helper.from_array(np.array([-1, *self.shapes[layer]], np.int64), shape))
        self.nodes.append(helper.make_node("Reshape", [tensor, shape], [reshaped], name=reshaped))
        return reshaped

    def add_layer(self, node: n.FixedPointNeuron | n.FixedPointAccumulator) -> None:
        name = node.name
        for source in node.sources:
            if not isinstance(self.graph.node(source), n.FixedPointSynapse):
                raise ExportError(f"layer {name!r}: source {source!r} is not a FixedPointSynapse")
        shape = self.shapes[name]
        bias_name = f"{name}.bias_mant"
        bias = np.broadcast_to(np.asarray(node.bias_mant, dtype=np.int64), shape)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(bias), bias_name))
        u, v, u_next, v_next = f"{name}.u", f"{name}.v", f"{name}.u_next", f"{name}.v_next"
        inputs = [self.current(node), u, v, bias_name]
        if isinstance(node, n.FixedPointNeuron):
            if node.reset not in n.RESET_MODES:
                raise ExportError(f"neuron {name!r}: reset {node.reset!r} must be one of {n.RESET_MODES}")
            for field, value in (("vth", node.vth), ("reset_mant", node.reset_mant)):
                # One value, or one per channel shaped to broadcast over [batch, C, ...].
                array = np.asarray(n.per_channel(np.asarray(value, dtype=np.int64), len(shape)), dtype=np.int64)
                self.initializers.append(numpy_helper.from_array(array, f"{name}.{field}"))
                inputs.append(f"{name}.{field}")
            spikes = f"{name}.spikes"
            proto = helper.make_node(
                NEURON_OP, inputs, [spikes, u_next, v_next], name=name, domain=DOMAIN,
                reset=str(node.reset), du=int(node.du), dv=int(node.dv), bias_exp=int(node.bias_exp),
            )  # fmt: skip
            self.outputs.append(_value_info(spikes, TensorProto.UINT8, shape))
            self.tensor[name] = (spikes, TensorProto.UINT8, 1)
        else:
            proto = helper.make_node(
                ACCUMULATOR_OP, inputs, [u_next, v_next], name=name, domain=DOMAIN,
                du=DECAY_UNIT - 1, dv=int(node.dv), bias_exp=int(node.bias_exp),
            )  # fmt: skip
            _set_meta(proto, "inflor.readout", node.readout)
        _set_meta(proto, "inflor.scale", repr(float(node.scale)))
        self.nodes.append(proto)
        self.inputs += [_value_info(u, TensorProto.INT64, shape), _value_info(v, TensorProto.INT64, shape)]
        self.outputs += [_value_info(u_next, TensorProto.INT64, shape), _value_info(v_next, TensorProto.INT64, shape)]

    def add(self, node: n.Node) -> None:
        if isinstance(node, n.Input):
            self.add_input(node)
        elif isinstance(node, n.FixedPointSynapse):
            self.add_synapse(node)
        elif isinstance(node, (n.FixedPointNeuron, n.FixedPointAccumulator)):
            self.add_layer(node)
        else:
            raise ExportError(
                f"fixed_graph_to_onnx writes fixed-point graphs; node {node.name!r} is a {type(node).__name__}"
            )

    def check_unique_names(self) -> None:
        check_unique_names(self.nodes, self.initializers, self.inputs)


def fixed_graph_to_onnx(graph: Graph, input_bound: float | None = None) -> onnx.ModelProto:
    """Write a quantized IR graph as a per-timestep ONNX model, bit-exact with ``run_aligned``.

    Args:
        graph: A valid fixed-point graph (after ``QuantizeFixedPoint``; a
            schedule, if any, is not used: the ONNX graph is the aligned view).
        input_bound: The largest ``|image|`` value the exactness proof of the
            input synapses covers; None: the larger end of the Input's declared
            ``value_range``. :func:`run_fixed_onnx` refuses images beyond it
            and outside the declared range.

    Returns:
        The model (layout in the module docstring); it passes
        ``onnx.checker.check_model(model, full_check=True)``.

    Raises:
        IRError: The graph is invalid.
        ExportError: A float graph, an Input without grade_scale, a synapse
            whose sums no float type holds exactly (names the synapse and its
            bound), or names that collide once suffixed.
    """
    if not graph.is_fixed_point:
        raise ExportError("fixed_graph_to_onnx writes quantized graphs; run QuantizeFixedPoint first")
    if input_bound is None:
        input_bound = max(abs(float(v)) for v in graph.input.value_range)
    if not (math.isfinite(input_bound) and input_bound > 0):
        raise ExportError(f"input_bound must be a finite number > 0, got {input_bound}")
    writer = _Writer(graph, float(input_bound))
    for node in graph:
        writer.add(node)
    writer.check_unique_names()
    onnx_graph = helper.make_graph(
        writer.nodes, graph.name, writer.inputs, writer.outputs, initializer=writer.initializers,
        doc_string=(
            f"One timestep of the fixed-point {graph.name!r} (T = {graph.timesteps}, aligned view); "
            "feed <layer>.u_next / <layer>.v_next back as <layer>.u / <layer>.v."
        ),
    )  # fmt: skip
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        functions=[loihi_neuron_function(), loihi_accumulator_function()],
        producer_name="inflor-deploy",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(
        model,
        {
            _META_TIMESTEPS: str(graph.timesteps),
            _META_NAME: graph.name,
            _META_INPUT: graph.input.name,
            _META_SEMANTICS: SEMANTICS,
            _META_GRADE_SCALE: repr(float(graph.input.grade_scale)),
            _META_INPUT_BOUND: repr(float(input_bound)),
            _META_INPUT_RANGE: ",".join(repr(float(v)) for v in graph.input.value_range),
            _META_INPUT_ENCODING: graph.input.encoding,
        },
    )
    return model


def save_fixed_onnx(graph: Graph, path: str | Path, input_bound: float | None = None) -> Path:
    """Export a quantized graph with :func:`fixed_graph_to_onnx` and write it atomically."""
    return save_onnx(fixed_graph_to_onnx(graph, input_bound), path)


# =========================================================================== runner


class FixedOnnxRun(NamedTuple):
    """What :func:`run_fixed_onnx` returns (unpacks as ``accumulator, spikes, voltages``).

    Attributes:
        accumulator: ``[B, classes]`` int64 integer readout (v after the last step; the sum
            of v over the T steps for a mean-membrane readout).
        spikes: Neuron name -> ``[T, B, ...]`` uint8.
        voltages: Neuron/accumulator name -> ``[T, B, ...]`` int64 v after the step's reset.
    """

    accumulator: np.ndarray
    spikes: dict[str, np.ndarray]
    voltages: dict[str, np.ndarray]


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def run_fixed_onnx(
    model: onnx.ModelProto,
    images: np.ndarray,
    timesteps: int | None = None,
    optimize: bool = False,
    threads: int = 2,
) -> FixedOnnxRun:
    """Run a model written by :func:`fixed_graph_to_onnx` for T steps with onnxruntime (CPU).

    Args:
        model: The fixed-point per-timestep model.
        images: ``[B, C, H, W]`` images (``[B, T, C, H, W]`` for a sequence
            Input: frame t is fed at step t); fed as float32, so their values
            must be float32 numbers (``run_aligned`` reads them as float64).
        timesteps: T; default: the model's ``inflor.timesteps`` metadata.
        optimize: Let onnxruntime rewrite the graph (ORT_ENABLE_ALL) instead
            of running it as written; the result is the same integers.
        threads: onnxruntime intra-op threads.

    Returns:
        ``(accumulator, spikes, voltages)`` as a :class:`FixedOnnxRun`; ``accumulator``
        is the integer readout (v after the last step, or the sum of v over the
        steps for a mean-membrane readout: node metadata ``inflor.readout``).

    Raises:
        OnnxFormatError: Not a fixed-point model, no timesteps, or images
            outside the model's ``inflor.input_bound`` or not float32 values.
    """
    # Imported here, so that importing the exporter does not load onnxruntime.
    from inflor_deploy.backends.onnx.runtime import cpu_session, model_timesteps

    meta = _metadata(model)
    if meta.get(_META_SEMANTICS) != SEMANTICS:
        raise OnnxFormatError("not a fixed-point model written by fixed_graph_to_onnx (no inflor.semantics)")
    timesteps = model_timesteps(model, timesteps)
    original = np.asarray(images)
    images = np.ascontiguousarray(original, dtype=np.float32)
    if not np.array_equal(images, original):
        raise OnnxFormatError("images hold values that float32 (the model's input type) cannot represent exactly")
    bound = float(meta.get(_META_INPUT_BOUND, "1.0"))
    if not np.isfinite(images).all() or (images.size and float(np.abs(images).max()) > bound):
        raise OnnxFormatError(
            f"images must be finite with |value| <= {bound}, the input bound the export proved exact; "
            "export with a larger input_bound"
        )
    low, high = (float(v) for v in meta.get(_META_INPUT_RANGE, f"{-bound},{bound}").split(","))
    if images.size and (float(images.min()) < low or float(images.max()) > high):
        raise OnnxFormatError(
            f"images span [{float(images.min()):g}, {float(images.max()):g}], outside the range [{low:g}, {high:g}] "
            "the network was compiled for"
        )
    sequence = meta.get(_META_INPUT_ENCODING, "direct") == "sequence"
    if sequence and (images.ndim < 2 or images.shape[1] != timesteps):
        raise OnnxFormatError(f"a sequence model takes [B, T = {timesteps}, ...] inputs; got shape {images.shape}")
    batch = images.shape[0]

    layers = [p for p in model.graph.node if p.domain == DOMAIN and p.op_type in (NEURON_OP, ACCUMULATOR_OP)]
    readouts = [p for p in layers if p.op_type == ACCUMULATOR_OP]
    if len(readouts) != 1:
        raise OnnxFormatError(f"expected one {DOMAIN}.{ACCUMULATOR_OP} node, found {len(readouts)}")
    # state input -> the output holding its next value; outputs are (S, U_next, V_next) or (U_next, V_next)
    feedback: dict[str, str] = {}
    v_next: dict[str, str] = {}
    for p in layers:
        u_out, v_out = p.output[-2], p.output[-1]
        feedback[p.input[1]], feedback[p.input[2]] = u_out, v_out
        v_next[p.name] = v_out
    neurons = [p for p in layers if p.op_type == NEURON_OP]
    graph_inputs = {v.name: v for v in model.graph.input}
    readout_kind = {p.key: p.value for p in readouts[0].metadata_props}.get("inflor.readout", "mean_current")
    state = {}
    for name in feedback:
        dims = graph_inputs[name].type.tensor_type.shape.dim[1:]
        state[name] = np.zeros((batch, *(int(d.dim_value) for d in dims)), dtype=np.int64)

    session = cpu_session(model, optimize, threads)

    fetch = [p.output[0] for p in neurons] + list(feedback.values())
    spikes: dict[str, list[np.ndarray]] = {p.name: [] for p in neurons}
    voltages: dict[str, list[np.ndarray]] = {p.name: [] for p in layers}
    readout = None
    for t in range(timesteps):
        frame = np.ascontiguousarray(images[:, t]) if sequence else images
        values = dict(zip(fetch, session.run(fetch, {n.INPUT_NAME: frame, **state})))
        for p in neurons:
            spikes[p.name].append(values[p.output[0]])
        for name, out in v_next.items():
            voltages[name].append(values[out])
        state = {name: values[out] for name, out in feedback.items()}
        v = state[readouts[0].input[2]]
        readout = v if readout is None or readout_kind != "mean_membrane" else readout + v
    return FixedOnnxRun(
        accumulator=readout,
        spikes={k: np.stack(v).astype(np.uint8) for k, v in spikes.items()},
        voltages={k: np.stack(v) for k, v in voltages.items()},
    )
