"""Tests for the IR <-> ONNX writer and importer: checker, layout, exact round trip, errors."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inflor_deploy.backends.onnx.float_model import (
    DOMAIN,
    OnnxFormatError,
    UnsupportedOperatorError,
    accumulator_function,
    graph_to_onnx,
    neuron_function,
    onnx_to_graph,
    save_onnx,
)
from inflor_deploy.frontends.fx import trace
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import ModelConfig, build_model

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


def assert_same_graph(a: Graph, b: Graph) -> None:
    """Identical node types, names, order, arrays (exactly, same dtype) and attributes."""
    assert (a.timesteps, a.name) == (b.timesteps, b.name)
    assert [(type(x).__name__, x.name) for x in a] == [(type(y).__name__, y.name) for y in b]
    for x, y in zip(a, b):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
                assert isinstance(u, np.ndarray) and isinstance(v, np.ndarray), (x.name, f.name)
                assert u.dtype == v.dtype and np.array_equal(u, v), (x.name, f.name)
            else:
                assert u == v and type(u) is type(v), (x.name, f.name, u, v)


def hand_built_graph() -> Graph:
    """Every node kind and every attribute off its default, including floats float32 cannot hold."""
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    nodes = [
        n.Input("pixels", (), shape=(2, 6, 6)),
        n.Conv2d("c1", ("pixels",), weight=f32(4, 1, 3, 3), bias=f32(4), stride=(2, 1), padding=(1, 0), groups=2),
        n.BatchNorm("bn1", ("c1",), gamma=f32(4), beta=f32(4), mean=f32(4), var=np.abs(f32(4)) + 0.5, eps=1e-5),
        n.Neuron("lif", ("bn1",), vth=0.3, tau=0.9, reset="zero", reset_amount=None, mpr=True),
        n.Conv2d("c2", ("lif",), weight=f32(4, 4, 1, 1)),
        n.Conv2d("c3", ("lif",), weight=f32(4, 4, 1, 1)),
        # Three currents summed: (c2 + c3) + lif.
        n.Neuron("sum3", ("c2", "c3", "lif"), vth=0.5, reset="subtract", reset_amount=0.7),
        n.AvgPool2d("pool", ("sum3",), kernel=(3, 2), stride=(1, 2)),
        n.Linear("fc1", ("pool",), weight=f32(5, 4 * 1 * 2), bias=None),  # implicit flatten
        n.BatchNorm("bn2", ("fc1",), gamma=f32(5), beta=f32(5), mean=f32(5), var=np.ones(5, np.float32), eps=1e-3),
        n.Neuron("big", ("bn2",), vth=0.1, spike_value=2.0, mpr=False),
        n.Flatten("flat", ("big",)),
        n.Linear("fc2", ("flat",), weight=f32(3, 5), bias=f32(3)),
        n.Linear("fc3", ("big",), weight=f32(3, 5), bias=f32(3)),
        n.Accumulator("out", ("fc2", "fc3")),
    ]
    return Graph(tuple(nodes), timesteps=3, name="hand_built")


def test_digits_onnx_layout_and_checker():
    graph = trace(build_model(DIGITS).eval())
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    ops = [(p.domain, p.op_type) for p in model.graph.node]
    assert ops == [
        ("", "Conv"), ("", "BatchNormalization"), (DOMAIN, "Neuron"),
        ("", "Conv"), ("", "BatchNormalization"), (DOMAIN, "Neuron"),
        ("", "AveragePool"), ("", "Flatten"), ("", "Gemm"), (DOMAIN, "Neuron"),
        ("", "Gemm"), (DOMAIN, "Accumulator"),
    ]  # fmt: skip
    inputs = [v.name for v in model.graph.input]
    assert inputs == ["image", "unit1.neuron.u", "unit2.neuron.u", "neuron_fc1.u", "readout.acc"]
    image = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in image] == ["batch", 1, 8, 8]
    state = model.graph.input[2].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in state] == ["batch", 32, 8, 8]
    assert [v.name for v in model.graph.output] == [
        "unit1.neuron.spikes", "unit1.neuron.u_next", "unit2.neuron.spikes", "unit2.neuron.u_next",
        "neuron_fc1.spikes", "neuron_fc1.u_next", "readout.acc_next",
    ]  # fmt: skip
    assert sorted(t.name for t in model.graph.initializer)[:4] == [
        "fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"
    ]
    neuron = next(p for p in model.graph.node if p.name == "unit1.neuron")
    attrs = {a.name: helper.get_attribute_value(a) for a in neuron.attribute}
    assert attrs == {"tau": 1.0, "gain": 1.0, "reset": b"subtract", "reset_is_spike_value": 1,
                     "reset_timing": b"same_step", "compare": b">=", "v_reset": 0.0, "charge": b"affine",
                     "decay": 1.0, "mpr": 1, "spike_value": 1.0}  # fmt: skip
    # Threshold and reset amount are float64 initializers (one value, or one per channel).
    assert list(neuron.input) == ["unit1.bn", "unit1.neuron.u", "unit1.neuron.vth", "unit1.neuron.reset_amount"]
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert values["unit1.neuron.vth"].dtype == np.float64 and values["unit1.neuron.vth"].shape == ()
    assert float(values["unit1.neuron.vth"]) == 0.5 and float(values["unit1.neuron.reset_amount"]) == 1.0
    assert list(neuron.output) == ["unit1.neuron.spikes", "unit1.neuron.u_next"]
    assert {(f.domain, f.name) for f in model.functions} == {(DOMAIN, "Neuron"), (DOMAIN, "Accumulator")}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["inflor.timesteps"] == "4" and meta["inflor.model_name"] == "digits_cnn"
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[DOMAIN] == 2 and opsets[""] >= 17


def test_neuron_function_body_is_standard_onnx_with_attribute_references():
    fn = neuron_function()
    assert {node.domain for node in fn.node} == {""}
    refs = {a.ref_attr_name for node in fn.node for a in node.attribute if a.ref_attr_name}
    assert refs == {"tau", "gain", "reset", "reset_timing", "compare", "v_reset", "charge", "decay", "mpr",
                    "spike_value"}  # fmt: skip
    assert list(fn.input) == ["X", "U", "VTH", "A"]
    assert [node.op_type for node in accumulator_function().node] == ["Constant", "Mul", "Add"]


def test_residual_sum_is_an_add_named_after_the_neuron():
    graph = trace(build_model(ModelConfig(arch="resnet20", timesteps=2)).eval())
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    add = next(p for p in model.graph.node if p.name == "layer2.0.neuron2.current")
    assert add.op_type == "Add" and list(add.input) == ["layer2.0.bn2", "layer2.0.shortcut.bn"]
    neuron = next(p for p in model.graph.node if p.name == "layer2.0.neuron2")
    assert neuron.input[0] == "layer2.0.neuron2.current"
    identity = next(p for p in model.graph.node if p.name == "layer1.1.neuron2.current")
    assert list(identity.input) == ["layer1.1.bn2", "layer1.0.neuron2.spikes"]
    pool = next(p for p in model.graph.node if p.name == "pool")
    assert pool.op_type == "AveragePool"
    assert helper.get_attribute_value(next(a for a in pool.attribute if a.name == "kernel_shape")) == [8, 8]


@pytest.mark.parametrize(
    "config",
    [
        DIGITS,
        ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, neuron="lif", mpr=False, vth=0.3),
        ModelConfig(arch="resnet20", timesteps=2),
    ],
    ids=["digits", "digits_lif", "resnet20"],
)
def test_round_trip_of_exported_models_is_exact(config):
    graph = trace(build_model(config).eval())
    assert_same_graph(graph, onnx_to_graph(graph_to_onnx(graph)))


def test_round_trip_of_every_node_kind_and_attribute():
    graph = hand_built_graph()
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    # The writer flattens before Gemm when the source is not a vector; the reader drops it again.
    assert [p.op_type for p in model.graph.node].count("Flatten") == 2
    adds = [p.name for p in model.graph.node if p.op_type == "Add"]
    assert adds == ["sum3.current_1", "sum3.current", "out.current"]
    # 0.3 and 1e-5 are not float32 values: the exact ones travel in node metadata.
    back = onnx_to_graph(model)
    assert_same_graph(graph, back)
    assert back.node("lif").vth == 0.3 and back.node("bn1").eps == 1e-5


def test_edited_float_attribute_wins_over_stale_exact_value():
    model = graph_to_onnx(hand_built_graph())
    neuron = next(p for p in model.graph.node if p.name == "lif")
    for a in neuron.attribute:
        if a.name == "tau":
            a.f = 0.75
    assert onnx_to_graph(model).node("lif").tau == 0.75


def test_save_onnx_writes_atomically(tmp_path):
    torch_model = build_model(DIGITS).eval()
    path = save_onnx(graph_to_onnx(trace(torch_model)), tmp_path / "out" / "digits.onnx")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["digits.onnx"]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert_same_graph(trace(torch_model), onnx_to_graph(model))


# --------------------------------------------------------------------------- importer equivalents


def _neuron_node(x, name, **overrides):
    attrs = dict(tau=1.0, gain=1.0, reset="subtract", reset_is_spike_value=1, reset_timing="same_step", compare=">=",
                 v_reset=0.0, charge="affine", decay=1.0, mpr=0, spike_value=1.0)  # fmt: skip
    attrs.update(overrides)
    outputs = [f"{name}_out", f"{name}_next"]
    inputs = [x, f"{name}_state", f"{name}_vth", f"{name}_amount"]
    return helper.make_node("Neuron", inputs, outputs, name=name, domain=DOMAIN, **attrs)


def _neuron_parameters(name, vth=0.5, amount=1.0):
    return [numpy_helper.from_array(np.array(vth, np.float64), f"{name}_vth"),
            numpy_helper.from_array(np.array(amount, np.float64), f"{name}_amount")]  # fmt: skip


def _foreign_model(extra_node=None):
    """A model written by hand the way other tools write it: Gemm transB=0, MatMul+Add, GAP, Identity."""
    rng = np.random.default_rng(3)
    w_conv = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    w_mm = rng.standard_normal((3, 4)).astype(np.float32)  # [I, O]
    b_mm = rng.standard_normal(4).astype(np.float32)
    w_gemm = rng.standard_normal((4, 2)).astype(np.float32)  # [I, O], transB = 0
    b_gemm = rng.standard_normal(2).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["pixels", "w_conv"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        _neuron_node("conv_out", "n1"),
        helper.make_node("GlobalAveragePool", ["n1_out"], ["gap_out"], name="gap"),
        helper.make_node("Identity", ["gap_out"], ["id_out"], name="id"),
        helper.make_node("Flatten", ["id_out"], ["flat_out"], name="flat"),
        helper.make_node("MatMul", ["flat_out", "w_mm"], ["mm_out"], name="mm"),
        helper.make_node("Add", ["mm_out", "b_mm"], ["mm_biased"], name="mm_bias"),
        _neuron_node("mm_biased", "n2"),
        helper.make_node("Gemm", ["n2_out", "w_gemm", "b_gemm"], ["gemm_out"], name="gemm", transB=0),
        helper.make_node("Accumulator", ["gemm_out", "acc_state"], ["acc_next"], name="acc", domain=DOMAIN,
                         tau=1.0, readout="mean_current"),
    ]
    if extra_node is not None:
        nodes.insert(2, extra_node)
        nodes[3] = helper.make_node("GlobalAveragePool", [extra_node.output[0]], ["gap_out"], name="gap")
    vi = lambda name, *shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])  # noqa: E731
    graph = helper.make_graph(
        nodes, "foreign",
        [vi("pixels", 1, 5, 5), vi("n1_state", 3, 5, 5), vi("n2_state", 4), vi("acc_state", 2)],
        [vi("n1_next", 3, 5, 5), vi("n2_next", 4), vi("acc_next", 2)],
        initializer=[numpy_helper.from_array(a, k) for k, a in
                     dict(w_conv=w_conv, w_mm=w_mm, b_mm=b_mm, w_gemm=w_gemm, b_gemm=b_gemm).items()]
        + _neuron_parameters("n1") + _neuron_parameters("n2", vth=0.25),
    )  # fmt: skip
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid(DOMAIN, 2)],
        functions=[neuron_function(), accumulator_function()],
        ir_version=10,
    )
    return model, dict(w_conv=w_conv, w_mm=w_mm, b_mm=b_mm, w_gemm=w_gemm, b_gemm=b_gemm)


def test_importer_accepts_common_equivalents():
    model, w = _foreign_model()
    onnx.checker.check_model(model, full_check=True)
    graph = onnx_to_graph(model, timesteps=3)
    assert [(type(x).__name__, x.name, x.sources) for x in graph] == [
        ("Input", "pixels", ()),
        ("Conv2d", "conv", ("pixels",)),
        ("Neuron", "n1", ("conv",)),
        ("AvgPool2d", "gap", ("n1",)),
        ("Flatten", "flat", ("gap",)),
        ("Linear", "mm", ("flat",)),
        ("Neuron", "n2", ("mm",)),
        ("Linear", "gemm", ("n2",)),
        ("Accumulator", "acc", ("gemm",)),
    ]
    assert graph.timesteps == 3 and graph.input.shape == (1, 5, 5)
    assert graph.node("conv").padding == (1, 1) and graph.node("conv").bias is None
    assert graph.node("gap").kernel == (5, 5)
    assert np.array_equal(graph.node("mm").weight, w["w_mm"].T) and np.array_equal(graph.node("mm").bias, w["b_mm"])
    assert np.array_equal(graph.node("gemm").weight, w["w_gemm"].T)
    assert graph.node("n2").vth == 0.25 and graph.node("n2").reset_amount is None


def test_timesteps_must_be_known():
    model, _ = _foreign_model()
    with pytest.raises(OnnxFormatError, match="timesteps"):
        onnx_to_graph(model)


@pytest.mark.parametrize(
    "node, op",
    [
        (helper.make_node("Relu", ["n1_out"], ["relu_out"], name="my_relu"), "Relu"),
        (helper.make_node("MaxPool", ["n1_out"], ["relu_out"], name="my_relu", kernel_shape=[1, 1]), "MaxPool"),
    ],
)
def test_unsupported_operator_names_op_and_node(node, op):
    model, _ = _foreign_model(extra_node=node)
    with pytest.raises(UnsupportedOperatorError, match=rf"'my_relu' \(op {op}\).*Supported ops: Conv, Gemm"):
        onnx_to_graph(model, timesteps=2)


def test_unsupported_settings_of_a_known_operator():
    model, _ = _foreign_model()
    conv = model.graph.node[0]
    conv.attribute.append(helper.make_attribute("dilations", [2, 2]))
    with pytest.raises(UnsupportedOperatorError, match=r"'conv' \(op Conv\).*dilations"):
        onnx_to_graph(model, timesteps=2)


def test_round_trip_of_the_joins():
    from tests.passes.test_distribute_joins import _graph

    graph = _graph()
    model = graph_to_onnx(graph)
    ops = {p.name: p.op_type for p in model.graph.node}
    assert ops["add"] == "Sum" and ops["cat"] == "Concat" and ops["vec"] == "Concat"
    assert_same_graph(graph, onnx_to_graph(model))


def declared_input_graph(encoding: str = "direct") -> Graph:
    """A declared input (signed range, no pixel levels, an encoding), a Normalize and a conv bias map."""
    rng = np.random.default_rng(4)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    nodes = [
        n.Input("frames", (), shape=(2, 4, 3), encoding=encoding, value_range=(-1.5, 1.0 / 3.0), pixel_levels=None),
        n.Normalize("norm", ("frames",), mean=f32(2), std=np.abs(f32(2)) + 0.1),
        n.Conv2d("c1", ("norm",), weight=f32(3, 2, 3, 3), bias=f32(3, 4, 3), padding=(1, 1)),
        n.Neuron("n1", ("c1",), vth=0.5, reset_amount=1.0),
        n.Conv2d("c2", ("n1",), weight=f32(2, 3, 1, 1), bias=f32(2)),
        n.Neuron("n2", ("c2",), vth=0.5, reset_amount=1.0),
        n.Linear("fc", ("n2",), weight=f32(2, 24), bias=f32(2)),
        n.Accumulator("out", ("fc",)),
    ]
    return Graph(tuple(nodes), timesteps=3, name="declared")


@pytest.mark.parametrize("encoding", ["direct", "sequence"])
def test_round_trip_of_the_declared_input_normalize_and_bias_map(encoding, tmp_path):
    from inflor_deploy.ir.serialize import load_graph, save_graph

    graph = declared_input_graph(encoding)
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    ops = [p.op_type for p in model.graph.node]
    assert ops[:2] == ["Sub", "Div"] and ops.count("Add") == 1  # the normalization; c1's bias map
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["inflor.input_encoding"] == encoding and meta["inflor.pixel_levels"] == "none"
    assert_same_graph(graph, onnx_to_graph(model))
    assert_same_graph(graph, load_graph(save_graph(graph, tmp_path / "declared.npz")))
    quantized_input = dataclasses.replace(graph.input, grade_scale=127.5)
    back = onnx_to_graph(graph_to_onnx(graph.replace_nodes([quantized_input, *graph.nodes[1:]])))
    assert back.input.grade_scale == 127.5


def test_onnx_runner_feeds_frame_t_of_a_sequence():
    from inflor_deploy.backends.onnx.runtime import run_onnx
    from inflor_deploy.backends.sim.float_ir import run_float

    graph = declared_input_graph("sequence")
    frames = np.random.default_rng(1).uniform(-1.5, 1 / 3, size=(4, 3, 2, 4, 3)).astype(np.float32)
    reference = run_float(graph, frames, record=True)
    onnx_run = run_onnx(graph_to_onnx(graph), frames)
    np.testing.assert_allclose(onnx_run.scores, reference.scores, rtol=1e-5, atol=1e-5)
    # Changing only the last frame changes only the last step's spikes.
    edited = frames.copy()
    edited[:, -1] = 0.0
    again = run_float(graph, edited, record=True)
    assert np.array_equal(again.spikes["n1"][:-1], reference.spikes["n1"][:-1])
    assert not np.array_equal(again.spikes["n1"][-1], reference.spikes["n1"][-1])


@pytest.mark.parametrize("encoding", ["direct", "sequence"])
def test_declared_input_and_framework_neurons_round_trip_together(encoding, tmp_path):
    """Normalize + signed range + encoding (the Input's fields) beside per-channel thresholds, a delayed reset,
    v_reset, gain and a leaky mean-membrane readout (the neuron's): one ONNX file, one npz, both exact."""
    from inflor_deploy.backends.onnx.runtime import run_onnx
    from inflor_deploy.backends.sim.float_ir import run_float
    from inflor_deploy.ir.serialize import load_graph, save_graph
    from tests.neuron_cases import declared_inputs, declared_neuron_graph

    graph = declared_neuron_graph(encoding)
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    assert_same_graph(graph, onnx_to_graph(model))
    assert_same_graph(graph, load_graph(save_graph(graph, tmp_path / "g.npz")))
    x = declared_inputs(graph)
    reference = run_float(graph, x, record=True)
    ort = run_onnx(model, x)
    for name in ("snn_pc", "sj_hard"):
        assert reference.spikes[name].any(), name
        np.testing.assert_array_equal(ort.spikes[name], reference.spikes[name], err_msg=name)
    np.testing.assert_allclose(ort.scores, reference.scores, rtol=1e-6, atol=1e-6)
