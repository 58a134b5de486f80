"""The quantized ONNX export: onnxruntime reproduces the integer reference bit for bit.

Parity is integer equality (``np.array_equal``) of every spike, every v and
the accumulator against :func:`inflor_deploy.backends.sim.int_reference.run_aligned`,
on the bundled digits model and on a hand-built graph whose reference run
is checked to exercise each corner of the Loihi update (u wrap, v
saturation, truncating leak of a negative v, current decay, hard and soft
reset, bias exponents 6, 7 and -2, a residual with a delayed shortcut).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inflor_deploy.backends.onnx.fixed_model import (
    ACCUMULATOR_OP,
    FLOAT32_EXACT_LIMIT,
    NEURON_OP,
    SEMANTICS,
    fixed_graph_to_onnx,
    run_fixed_onnx,
    save_fixed_onnx,
)
from inflor_deploy.backends.onnx.float_model import DOMAIN, OnnxFormatError
from inflor_deploy.errors import ExportError
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.backends.sim.compare import first_divergence
from inflor_deploy.backends.sim.int_reference import IntRun, run_aligned

BUNDLED = "inflor_deploy/pretrained/digits_srif_t4.pt"


# --------------------------------------------------------------------------- helpers


def _rng_weights(rng, shape, limit):
    return rng.integers(-limit, limit + 1, size=shape).astype(np.int32)


def neuron(name, sources, shape, **kw):
    fields = dict(vth=50, reset="subtract", reset_mant=100, du=4095, dv=0, bias_exp=6, scale=1.0)
    fields.update(kw)
    fields.setdefault("bias_mant", np.zeros(shape, np.int32))
    return n.FixedPointNeuron(name=name, sources=tuple(sources), shape=shape, **fields)


def readout(name, sources, shape, bias_mant, bias_exp=6):
    return n.FixedPointAccumulator(
        name=name, sources=tuple(sources), shape=shape, bias_mant=bias_mant, bias_exp=bias_exp, scale=1.0
    )


def corner_graph() -> Graph:
    """Every corner of the Loihi update in four layers (see the module docstring)."""
    rng = np.random.default_rng(7)
    s1, s2 = (4, 4, 4), (4, 4, 4)
    return Graph(
        (
            n.Input(name="image", sources=(), shape=(1, 4, 4), grade_scale=1000.0, value_range=(-1.0, 1.0)),
            # a reaches ~3.6e5 > 2^17: a << 6 exceeds 2^23 and u wraps
            n.FixedPointSynapse(name="c1", sources=("image",), kind="conv", weight=_rng_weights(rng, (4, 1, 3, 3), 40),
                                padding=(1, 1)),
            neuron("n1", ["c1"], s1, vth=30000, reset="zero", du=3000, dv=500,
                   bias_mant=_rng_weights(rng, s1, 2000), bias_exp=7),
            n.FixedPointSynapse(name="c2", sources=("n1",), kind="conv", weight=_rng_weights(rng, (4, 4, 3, 3), 100),
                                padding=(1, 1)),
            n.FixedPointSynapse(name="skip", sources=("n1",), kind="conv", weight=_rng_weights(rng, (4, 4, 1, 1), 100),
                                delay=1),
            neuron("n2", ["c2", "skip"], s2, vth=50, reset="subtract", reset_mant=90,
                   bias_mant=_rng_weights(rng, s2, 30), bias_exp=6),
            n.FixedPointSynapse(name="fc", sources=("n2",), kind="dense", weight=_rng_weights(rng, (6, 64), 254)),
            neuron("n3", ["fc"], (6,), vth=200, reset="subtract", reset_mant=300, du=2000, dv=100,
                   bias_mant=_rng_weights(rng, (6,), 50), bias_exp=-2),
            n.FixedPointSynapse(name="out", sources=("n3",), kind="dense", weight=_rng_weights(rng, (3, 6), 100)),
            readout("readout", ["out"], (3,), _rng_weights(rng, (3,), 20)),
        ),
        timesteps=8,
        name="corners",
    )  # fmt: skip


def corner_images() -> np.ndarray:
    return np.random.default_rng(3).uniform(-1, 1, size=(8, 1, 4, 4)).astype(np.float32)


def assert_bit_exact(reference: IntRun, candidate, graph: Graph) -> None:
    accumulator, spikes, voltages = candidate
    layers = [x.name for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    neurons = layers[:-1]
    assert list(spikes) == neurons and list(voltages) == layers
    for kind, ref, cand, order in (("spikes", reference.spikes, spikes, neurons),
                                   ("v", reference.voltages, voltages, layers)):  # fmt: skip
        for layer in order:
            assert cand[layer].dtype == ref[layer].dtype and cand[layer].shape == ref[layer].shape, (kind, layer)
        divergence = first_divergence(ref, cand, order)
        assert divergence is None, f"{kind}: {divergence}"
        assert all(np.array_equal(ref[k], cand[k]) for k in order)
    assert accumulator.dtype == np.int64 and np.array_equal(accumulator, reference.accumulator)


@pytest.fixture(scope="module")
def digits():
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.data import load_digits

    graph = compile_checkpoint(BUNDLED).fixed_graph
    images = load_digits("test").images[:32]
    return graph, fixed_graph_to_onnx(graph), images, run_aligned(graph, images, record=True)


# --------------------------------------------------------------------------- the runtime's integer semantics


def _run_one(node, inputs, output_type, feeds):
    graph = helper.make_graph(
        [node], "probe", [helper.make_tensor_value_info(k, t, list(feeds[k].shape)) for k, t in inputs],
        [helper.make_tensor_value_info(node.output[0], output_type, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_onnxruntime_int64_div_truncates_toward_zero():
    """Why the neuron body divides only non-negative numbers: ORT's Div truncates, numpy's // floors."""
    a = np.array([-7, 7, -8, -1, -4097], np.int64)
    b = np.array([2, 2, 3, 4096, 4096], np.int64)
    div = helper.make_node("Div", ["a", "b"], ["y"])
    got = _run_one(div, [("a", TensorProto.INT64), ("b", TensorProto.INT64)], TensorProto.INT64, {"a": a, "b": b})
    assert got.tolist() == [-3, 3, -2, 0, -1]  # truncation toward zero
    assert (a // b).tolist() == [-4, 3, -3, -1, -2]  # floor: differs wherever a < 0 and b does not divide a


def test_onnx_round_is_half_to_even_like_np_rint():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 254.5, 127.49999999], np.float64)
    got = _run_one(helper.make_node("Round", ["x"], ["y"]), [("x", TensorProto.DOUBLE)], TensorProto.DOUBLE, {"x": x})
    assert np.array_equal(got, np.rint(x))


# --------------------------------------------------------------------------- structure


def test_structure_checker_and_metadata():
    graph = corner_graph()
    model = fixed_graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["inflor.semantics"] == SEMANTICS == "Lava PyLifModelBitAcc (lava-nc 0.10.0)"
    assert meta["inflor.timesteps"] == "8" and meta["inflor.model_name"] == "corners"
    assert float(meta["inflor.grade_scale"]) == 1000.0

    layers = {p.name: p for p in model.graph.node if p.domain == DOMAIN}
    assert {k: p.op_type for k, p in layers.items()} == {
        "n1": NEURON_OP, "n2": NEURON_OP, "n3": NEURON_OP, "readout": ACCUMULATOR_OP,
    }  # fmt: skip
    attrs = {a.name: helper.get_attribute_value(a) for a in layers["n1"].attribute}
    assert attrs == {"reset": b"zero", "du": 3000, "dv": 500, "bias_exp": 7}
    # Threshold and reset mantissas are int64 initializer inputs: one value, or one per channel.
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert values["n1.vth"].dtype == np.int64 and values["n1.vth"].shape == () and int(values["n1.vth"]) == 30000
    assert int(values["n1.reset_mant"]) == 100
    assert list(layers["n2"].input) == ["n2.current", "n2.u", "n2.v", "n2.bias_mant", "n2.vth", "n2.reset_mant"]
    assert list(layers["n2"].output) == ["n2.spikes", "n2.u_next", "n2.v_next"]
    assert list(layers["readout"].output) == ["readout.u_next", "readout.v_next"]
    assert {a.name: helper.get_attribute_value(a) for a in layers["readout"].attribute} == {
        "du": 4095, "dv": 0, "bias_exp": 6,
    }  # fmt: skip

    inputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    assert inputs["image"] == TensorProto.FLOAT
    assert all(inputs[f"{k}.{s}"] == TensorProto.INT64 for k in layers for s in ("u", "v"))
    outputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    assert outputs["n1.spikes"] == TensorProto.UINT8 and outputs["readout.v_next"] == TensorProto.INT64

    # Integer weights as float32 initializers, each synapse's sum bound proven below 2^24.
    inits = {t.name: t for t in model.graph.initializer}
    for syn in graph.of_type(n.FixedPointSynapse):
        assert inits[f"{syn.name}.weight"].data_type == TensorProto.FLOAT
        proto = next(p for p in model.graph.node if p.name == syn.name)
        meta = {e.key: e.value for e in proto.metadata_props}
        assert meta["inflor.compute_type"] == "float32" and int(meta["inflor.sum_bound"]) < FLOAT32_EXACT_LIMIT
    assert inits["n1.bias_mant"].data_type == TensorProto.INT64

    # Every integer Div in the bodies divides a non-negative dividend (truncation == floor there).
    for function in model.functions:
        producers = {out: node for node in function.node for out in node.output}
        for node in function.node:
            if node.op_type == "Div":
                dividend = producers[node.input[0]]
                assert dividend.op_type == "Abs" or node.input[0] == "bias_ceil_num", node.input


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("optimize", [False, True], ids=["as-written", "ort-optimized"])
def test_bundled_digits_model_bit_exact(digits, optimize):
    graph, model, images, reference = digits
    onnx.checker.check_model(model, full_check=True)
    neurons = graph.of_type(n.FixedPointNeuron)
    assert sum(p.op_type == NEURON_OP and p.domain == DOMAIN for p in model.graph.node) == len(neurons)
    assert_bit_exact(reference, run_fixed_onnx(model, images, optimize=optimize), graph)
    # The model's neurons spike sometimes; a bias source (no synapses, added by quantization) always does.
    rates = [float(reference.spikes[x.name].mean()) for x in neurons if x.sources]
    assert all(reference.spikes[x.name].all() for x in neurons if not x.sources)
    assert 0 < min(rates) and max(rates) < 1, rates


def test_corner_graph_reference_exercises_every_corner():
    """Guards the parity test below: the reference run really hits each case."""
    graph = corner_graph()
    ref = run_aligned(graph, corner_images(), record=True)
    assert ref.u_wraps["n1"] > 0
    assert ref.v_saturations["n1"] > 0
    for layer in ("n1", "n2", "n3"):  # hard reset (n1), soft reset (n2, n3): spikes and silence
        assert 0 < ref.spikes[layer].mean() < 1, layer
    # A leak (dv > 0) of a negative v where truncation and floor differ.
    for layer, dv in (("n1", 500), ("n3", 100)):
        prev = ref.voltages[layer][:-1]
        product = prev * (4096 - dv)
        assert np.any((prev < 0) & (product % 4096 != 0)), layer
    # A decaying current (du < 4095) that is negative, and a negative bias shifted right (bias_exp = -2).
    assert np.any(ref.currents["n3"] < 0) and np.any(graph.node("n3").bias_mant % 4 != 0)
    assert np.any(graph.node("n3").bias_mant < 0)


@pytest.mark.parametrize("optimize", [False, True], ids=["as-written", "ort-optimized"])
def test_corner_graph_bit_exact(optimize):
    graph = corner_graph()
    images = corner_images()
    reference = run_aligned(graph, images, record=True)
    assert_bit_exact(reference, run_fixed_onnx(fixed_graph_to_onnx(graph), images, optimize=optimize), graph)


def test_corner_graph_one_step_from_reference_state_gives_reference_u_and_v():
    """Teacher-forced: from the reference's (u, v) at t-1 the model produces its (spikes, u, v) at t."""
    graph = corner_graph()
    images = corner_images()
    ref = run_aligned(graph, images, record=True)
    model = fixed_graph_to_onnx(graph)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    layers = [x.name for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    for t in range(graph.timesteps):
        feeds = {"image": images}
        for layer in layers:
            feeds[f"{layer}.u"] = ref.currents[layer][t - 1] if t else np.zeros_like(ref.currents[layer][0])
            feeds[f"{layer}.v"] = ref.voltages[layer][t - 1] if t else np.zeros_like(ref.voltages[layer][0])
        out = dict(zip(names, session.run(names, feeds)))
        for layer in layers:
            assert np.array_equal(out[f"{layer}.u_next"], ref.currents[layer][t]), (layer, t)
            assert np.array_equal(out[f"{layer}.v_next"], ref.voltages[layer][t]), (layer, t)
            if layer in ref.spikes:
                assert np.array_equal(out[f"{layer}.spikes"], ref.spikes[layer][t]), (layer, t)


def test_strict_threshold_at_minus_one_equal_plus_one():
    """v = vth<<6 - 1, vth<<6, vth<<6 + 1 after step 0: only the last fires (hardware '>')."""
    graph = Graph(
        (
            n.Input(name="image", sources=(), shape=(1, 1, 1), grade_scale=1.0, value_range=(0.0, 2.0)),
            n.FixedPointSynapse(name="d", sources=("image",), kind="dense", weight=np.ones((3, 1), np.int32)),
            neuron("n", ["d"], (3,), vth=2, reset="zero", bias_mant=np.array([-1, 0, 1], np.int32), bias_exp=0),
            n.FixedPointSynapse(name="o", sources=("n",), kind="dense", weight=np.eye(3, dtype=np.int32)),
            readout("readout", ["o"], (3,), np.zeros(3, np.int32)),
        ),
        timesteps=2,
        name="threshold",
    )  # fmt: skip
    images = np.full((1, 1, 1, 1), 2.0, np.float32)  # a = 2, v = 128 + bias
    reference = run_aligned(graph, images, record=True)
    candidate = run_fixed_onnx(fixed_graph_to_onnx(graph, input_bound=2.0), images)
    assert candidate.voltages["n"][0, 0].tolist() == [127, 128, 0]  # only 129 fired (hard reset to 0)
    assert candidate.spikes["n"][0, 0].tolist() == [0, 0, 1]
    assert_bit_exact(reference, candidate, graph)


def test_dense_synapse_beyond_float32_runs_in_float64_exactly():
    rng = np.random.default_rng(11)
    graph = Graph(
        (
            n.Input(name="image", sources=(), shape=(1, 2, 2), grade_scale=float(2**22), value_range=(-1.0, 1.0)),
            n.FixedPointSynapse(name="d", sources=("image",), kind="dense", weight=_rng_weights(rng, (3, 4), 200)),
            neuron("n", ["d"], (3,), vth=2**16, reset="zero", du=1000, dv=300),
            n.FixedPointSynapse(name="o", sources=("n",), kind="dense", weight=_rng_weights(rng, (2, 3), 50)),
            readout("readout", ["o"], (2,), np.zeros(2, np.int32)),
        ),
        timesteps=4,
        name="wide",
    )  # fmt: skip
    model = fixed_graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    weight = next(t for t in model.graph.initializer if t.name == "d.weight")
    assert weight.data_type == TensorProto.DOUBLE
    images = np.random.default_rng(5).uniform(-1, 1, size=(6, 1, 2, 2)).astype(np.float32)
    reference = run_aligned(graph, images, record=True)
    assert reference.u_wraps["n"] > 0  # a << 6 is far beyond 2^24: one wrap leaves u out of range, as Lava
    assert_bit_exact(reference, run_fixed_onnx(model, images), graph)


# --------------------------------------------------------------------------- errors and files


def test_conv_synapse_beyond_float32_sums_in_limbs_and_wraps_as_lava():
    # Graded inputs up to 2^22 * 2^8 = 2^30: the conv's sums pass 2^24 (no float64 Conv in onnxruntime),
    # so the export splits the input into limbs that sum exactly in float32, then applies Lava's
    # Conv semantics: the int32 cast (-2^31 beyond it) and the 24-bit wrap.
    graph = corner_graph()
    nodes = [
        n.Input(name="image", sources=(), shape=(1, 4, 4), grade_scale=float(2**22), value_range=(-256.0, 256.0)),
        *graph.nodes[1:],
    ]
    graph = graph.replace_nodes(nodes)
    model = fixed_graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    limbs = [p for p in model.graph.node if p.op_type == "Conv" and p.name.startswith("c1.limb")]
    assert len(limbs) >= 2
    assert any(m.key == "inflor.lava_wrap_bits" and m.value == "24" for p in model.graph.node for m in p.metadata_props)
    images = np.random.default_rng(8).uniform(-256, 256, size=(6, 1, 4, 4)).astype(np.float32)
    images[0] = 1.0  # small sums: exact, no wrap
    reference = run_aligned(graph, images, record=True)
    assert sum(reference.u_wraps.values()) > 0
    assert_bit_exact(reference, run_fixed_onnx(model, images), graph)


def test_float_graph_and_unquantized_input_are_refused():
    graph = corner_graph()
    float_graph = Graph(
        (
            n.Input(name="image", sources=(), shape=(1, 2, 2)),
            n.Linear(name="fc", sources=("image",), weight=np.ones((2, 4), np.float32)),
            n.Accumulator(name="readout", sources=("fc",)),
        ),
        timesteps=2,
    )
    with pytest.raises(ExportError, match="QuantizeFixedPoint"):
        fixed_graph_to_onnx(float_graph)
    unquantized = graph.replace_nodes([n.Input(name="image", sources=(), shape=(1, 4, 4)), *graph.nodes[1:]])
    with pytest.raises(ExportError, match="grade_scale"):
        fixed_graph_to_onnx(unquantized)


def test_runner_refuses_images_the_proof_does_not_cover():
    model = fixed_graph_to_onnx(corner_graph())
    with pytest.raises(OnnxFormatError, match="input bound"):
        run_fixed_onnx(model, np.full((1, 1, 4, 4), 1.5, np.float32))
    with pytest.raises(OnnxFormatError, match="float32"):
        run_fixed_onnx(model, np.full((1, 1, 4, 4), 0.1, np.float64))


def test_save_fixed_onnx_is_atomic_and_loads_back(tmp_path):
    graph = corner_graph()
    path = save_fixed_onnx(graph, tmp_path / "sub" / "corners.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["corners.onnx"]  # no temporary left behind
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.SerializeToString() == fixed_graph_to_onnx(graph).SerializeToString()
