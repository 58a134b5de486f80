"""The NetX writer: what the file holds, what lava-dl builds from it, and every refusal (no Lava run here)."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

from inflor_deploy.backends.netx import writer as nw
from inflor_deploy.backends.netx.export import export_netx
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from tests.backends.netx.graphs import compile_graph, conv_lif_graph, mlp_graph, residual_graph


@pytest.fixture(scope="module")
def conv_lif():
    return compile_graph(conv_lif_graph())


def _netx():
    from inflor_deploy import lava_compat

    lava_compat.apply()
    from lava.lib.dl.netx import hdf5, utils

    return hdf5, utils


# --------------------------------------------------------------------------- the dense weight rule


def _lava_delivers(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What netx's Dense block delivers for input columns x: netx's optimizer, then Lava's bit-accurate Dense.

    The composition is the one ``netx.blocks.process.Dense`` and
    ``PyDenseModelBitAcc.run_spk`` perform, with the libraries' own functions.
    """
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    _, utils = _netx()
    shifted, bits, exponent, _ = utils.optimize_weight_bits(weight.copy())
    mode = determine_sign_mode(shifted)  # netx passes no sign mode; Lava guesses it
    w = truncate_weights(clip_weights(shifted, mode, num_bits=8), mode, bits)
    total = w.astype(np.int64) @ x
    return total << exponent if exponent > 0 else total >> -exponent


def _weight_cases():
    rng = np.random.default_rng(0)
    cases = [np.array([[lo, hi]]) for lo, hi in [(-256, 254), (-256, 255), (-257, 2), (0, 255), (0, 256), (0, 1)]]
    # max 0: netx calls it mixed, Lava inhibitory.
    cases += [np.array([[-v, 0]]) for v in (1, 2, 3, 64, 100, 127, 128, 129, 130, 255, 256)]
    cases += [np.array([[-v, -1]]) for v in (2, 3, 64, 96, 128, 200, 255, 256)]  # all negative
    for _ in range(60):
        lo, hi = sorted(int(v) for v in rng.integers(-300, 300, 2))
        step = int(rng.choice([1, 2, 4, 16]))
        cases.append((rng.integers(lo, hi + 1, (5, 7)) // step) * step)
    return cases


def test_dense_weight_rule_is_exactly_when_netx_and_lava_deliver_the_weights():
    checked = {True: 0, False: 0}
    rng = np.random.default_rng(1)
    for weight in _weight_cases():
        weight = weight.astype(np.int64)
        if not weight.any():
            continue
        x = np.concatenate([np.eye(weight.shape[1], dtype=np.int64), rng.integers(0, 256, (weight.shape[1], 8))], 1)
        exact = bool(np.array_equal(_lava_delivers(weight, x), weight @ x))
        problem = nw.dense_weights_problem(weight)
        assert (problem is None) == exact, (weight.tolist(), problem)
        checked[exact] += 1
    assert checked[True] > 20 and checked[False] > 8


def test_dense_weight_rule_names_each_failure():
    assert "all its weights are 0" in nw.dense_weights_problem(np.zeros((2, 2), np.int64))
    assert "outside [-256, 254]" in nw.dense_weights_problem(np.array([[-3, 255]]))
    assert "exceed 255" in nw.dense_weights_problem(np.array([[0, 256]]))
    assert "power of two" in nw.dense_weights_problem(np.array([[-128, -5]]))
    assert "truncates by -1 bits" in nw.dense_weights_problem(np.array([[-129, 0]]))
    assert nw.dense_weights_problem(np.array([[-130, 0]])) is None
    assert nw.dense_weights_problem(np.array([[-127, 0]])) is None
    assert nw.dense_weights_problem(np.array([[-256, 254]])) is None


# --------------------------------------------------------------------------- the file


def test_file_holds_the_layers_as_netx_reads_them(tmp_path, conv_lif):
    hdf5, utils = _netx()
    plan = nw.plan_netx(conv_lif)
    path = tmp_path / "m.net"
    nw.write_netx_file(plan, path, source={"artifact": "x"})
    layers = utils.NetDict(str(path))["layer"]
    types = [layers[i]["type"] for i in range(len(layers))]
    assert types == ["input", "conv", "conv", "flatten", "dense", "dense"]
    assert list(layers[0]["shape"]) == [2, 5, 7]
    c1, lif1 = conv_lif.node("c1"), conv_lif.node("lif1")
    assert np.array_equal(layers[1]["weight"], c1.weight)
    assert list(layers[1]["stride"]) == [1, 2] and list(layers[1]["padding"]) == [1, 1] and layers[1]["groups"] == 2
    neuron = layers[1]["neuron"]
    assert (neuron["type"], neuron["iDecay"], neuron["vDecay"], neuron["vThMant"]) == ("CUBA", 4096, lif1.dv, lif1.vth)
    # A channel-uniform bias is written per channel.
    assert np.array_equal(layers[1]["bias"], lif1.bias_mant[:, 0, 0])
    assert "bias" not in layers[2].keys()  # c2 has no bias: nothing written
    assert list(layers[3]["shape"]) == [60]
    assert np.array_equal(layers[4]["weight"], conv_lif.node("fc1").weight)
    out = conv_lif.node("out")
    assert (layers[5]["neuron"]["vThMant"], layers[5]["neuron"]["vDecay"]) == (nw.READOUT_VTH, out.dv)
    meta = nw.read_netx_metadata(path)
    assert meta["load"] == {"reset_interval": 3, "reset_offset": 1, "input_message_bits": 8}
    assert [b["layer"] for b in meta["blocks"]] == ["lif1", "if2", "lif3", "out"]
    assert meta["readout"]["kind"] == "mean_membrane" and meta["source"] == {"artifact": "x"}


def test_netx_builds_stock_lif_reset_blocks_with_our_parameters(tmp_path, conv_lif):
    """What lava-dl's Network makes of the file (Processes only; nothing runs)."""
    from inflor_deploy.backends.lava.network import _conv_kernel_for_lava
    from inflor_deploy.backends.netx.run import load_network
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIFReset

    path = tmp_path / "m.net"
    nw.write_netx_file(nw.plan_netx(conv_lif), path)
    net = load_network(path)
    try:
        assert len(net.layers) == 4
        names = ["lif1", "if2", "lif3", "out"]
        for block, name in zip(net.layers, names):
            layer = conv_lif.node(name)
            neuron = block.neuron
            assert isinstance(neuron, LIFReset)
            assert int(neuron.du.init) == 4095 and int(neuron.dv.init) == layer.dv
            assert int(neuron.vth.init) == (nw.READOUT_VTH if name == "out" else layer.vth)
            assert neuron.proc_params["reset_interval"] == 3
        # Block i resets at (reset_offset + 1 + i) % R: our (depth + 1) % R.
        offsets = [block.neuron.proc_params["reset_offset"] % 3 for block in net.layers]
        assert offsets == [conv_lif.schedule.reset_offset[name] for name in names]
        assert isinstance(net.layers[0].synapse, Conv) and isinstance(net.layers[2].synapse, Dense)
        kernel = net.layers[0].synapse.weight.init
        assert np.array_equal(kernel, _conv_kernel_for_lava(conv_lif.node("c1").weight))
        lif1 = conv_lif.node("lif1")
        assert np.array_equal(net.layers[0].neuron.bias_mant.init, lif1.bias_mant.transpose(2, 1, 0))
        assert net.inp.shape == (7, 5, 2)
    finally:
        net.net_config.f.close()


def test_per_neuron_bias_is_written_in_lava_layout(tmp_path, conv_lif):
    lif1 = conv_lif.node("lif1")
    bias = np.arange(np.prod(lif1.shape), dtype=np.int32).reshape(lif1.shape) - 40
    graph = conv_lif.replace_nodes(
        dataclasses.replace(node, bias_mant=bias) if node.name == "lif1" else node for node in conv_lif
    )
    path = tmp_path / "m.net"
    nw.write_netx_file(nw.plan_netx(graph), path)
    with h5py.File(path) as f:
        assert np.array_equal(f["layer/1/bias"][()], bias.transpose(2, 1, 0))


def test_input_message_bits_follow_the_input_grades():
    assert nw.plan_netx(compile_graph(mlp_graph())).input_message_bits == 8  # grades 0..255
    spikes = nw.plan_netx(compile_graph(mlp_graph(), grade_scale=1.0))
    assert spikes.input_message_bits == 0 and spikes.input_encoding == "spikes"


def test_bias_with_another_exponent_is_restated_exactly_or_refused(conv_lif):
    def with_bias(exponent, mant):
        return conv_lif.replace_nodes(
            dataclasses.replace(node, bias_exp=exponent, bias_mant=np.full(node.shape, mant, np.int32))
            if node.name == "lif3" else node
            for node in conv_lif
        )  # fmt: skip

    assert np.array_equal(nw.plan_netx(with_bias(7, 5)).blocks[2].bias, np.full(8, 10))
    assert np.array_equal(nw.plan_netx(with_bias(4, 8)).blocks[2].bias, np.full(8, 2))
    with pytest.raises(nw.NetxRefusal) as odd:
        nw.plan_netx(with_bias(4, 6))  # 6 << 4 is not a whole number of 2^6 units
    assert odd.value.reason == "bias_exponent"
    with pytest.raises(nw.NetxRefusal) as wide:
        nw.plan_netx(with_bias(7, 4000))  # 8000 does not fit 13 bits
    assert wide.value.reason == "bias_exponent"


def test_per_channel_thresholds_that_agree_are_one_threshold(conv_lif):
    graph = conv_lif.replace_nodes(
        dataclasses.replace(node, vth=np.full(4, node.vth, np.int64)) if node.name == "lif1" else node
        for node in conv_lif
    )
    assert nw.plan_netx(graph).blocks[0].vth == conv_lif.node("lif1").vth


def test_warnings_name_a_reset_interval_the_chip_cannot_use_and_a_readout_that_can_fire(conv_lif):
    warnings = nw.plan_netx(conv_lif).warnings
    assert any("R = 3 is not a power of two" in w for w in warnings)
    assert not any("readout" in w for w in warnings)
    # Worst case per step: (254 * 8 inputs + bias 4095) << 6 = 392,128; over 32 steps that passes 2^23 - 64.
    loud = conv_lif.replace_nodes(
        dataclasses.replace(node, bias_mant=np.full(node.shape, 4095, np.int32)) if node.name == "out"
        else dataclasses.replace(node, weight=np.full((3, 8), 254, np.int32)) if node.name == "fc2" else node
        for node in conv_lif
    )  # fmt: skip
    assert not any("readout" in w for w in nw.plan_netx(loud).warnings)  # 3 steps: 1,176,384
    long_window = dataclasses.replace(loud, schedule=dataclasses.replace(loud.schedule, reset_interval=32))
    assert any("the readout 'out' can reach v = 8388607" in w for w in nw.plan_netx(long_window).warnings)
    assert nw.plan_netx(compile_graph(conv_lif_graph(), target="loihi2")).warnings == ()


# --------------------------------------------------------------------------- refusals


def _edit(graph, name, **changes):
    return graph.replace_nodes(dataclasses.replace(node, **changes) if node.name == name else node for node in graph)


def _refusals(conv_lif):
    mlp = compile_graph(mlp_graph(readout="mean_current"))
    inhibitory = np.full(mlp.node("fc2").weight.shape, -6, np.int32)
    inhibitory[0, 0] = -128  # all <= 0 and the minimum a power of two: netx scales it to -256, Lava clips to -255
    return {
        "soft_reset": _edit(conv_lif, "if2", reset="subtract", reset_mant=300),
        "reset_none": _edit(conv_lif, "if2", reset="none"),
        "per_channel_threshold": _edit(conv_lif, "lif1", vth=np.array([100, 101, 100, 100])),
        "not_a_chain": compile_graph(residual_graph()),
        "dense_weights": _edit(mlp, "fc2", weight=inhibitory),
        "bias_exponent": _edit(conv_lif, "lif3", bias_exp=3, bias_mant=np.full(8, 3, np.int32)),
        "weight_exponent": _edit(mlp, "fc2", weight_exp=-2),
        "not_fixed_point": conv_lif_graph(),
    }  # fmt: skip


@pytest.mark.parametrize(
    "reason, words",
    [
        ("soft_reset", ["layer 'if2' has a soft (subtractive) reset", "docs/lava_findings.md", "--allow-inexact"]),
        ("reset_none", ["layer 'if2' never resets", "stock CUBA"]),
        ("per_channel_threshold", ["per-channel thresholds (100..101)", "one threshold for the whole layer"]),
        ("not_a_chain", ["layer 'n2' sums 2 synapses", "feed-forward chain"]),
        ("dense_weights", ["dense synapse 'fc2'", "-128, is a power of two", "Re-quantize"]),
        ("bias_exponent", ["layer 'lif3'", "bias_exp = 6"]),
        ("weight_exponent", ["synapse 'fc2' has weight_exp -2", "--backend lava"]),
        ("not_fixed_point", ["scheduled fixed-point graph"]),
    ],
)
def test_each_refusal_names_its_reason_and_writes_nothing(tmp_path, conv_lif, reason, words):
    graph = _refusals(conv_lif)[reason]
    path = tmp_path / "out.net"
    with pytest.raises(nw.NetxRefusal) as refused:
        export_netx(graph, path)
    assert refused.value.reason == reason
    for word in words:
        assert word in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_fan_out_and_delays_are_not_a_chain(conv_lif):
    residual = compile_graph(residual_graph())
    assert residual.node("n2.shortcut").delay >= 0
    fan_out = conv_lif.replace_nodes(
        [*conv_lif.nodes[:-1], n.FixedPointSynapse("extra", ("lif3",), kind="dense", weight=np.ones((2, 8), np.int32))]
        + [conv_lif.nodes[-1]]
    )
    with pytest.raises(nw.NetxRefusal, match="'lif3' feeds 2 synapses"):
        nw.plan_netx(fan_out)
    delayed = _edit(conv_lif, "c2", delay=1)
    with pytest.raises(nw.NetxRefusal, match="synapse 'c2' has a delay of 1"):
        nw.plan_netx(delayed)


def test_allow_inexact_plans_soft_reset_as_hard_reset(conv_lif):
    graph = _refusals(conv_lif)["soft_reset"]
    plan = nw.plan_netx(graph, allow_inexact=True)
    assert not plan.exact
    assert [b.inexact is not None for b in plan.blocks] == [False, True, False, False]
    assert "v -= 300 << 6" in plan.blocks[1].inexact
    assert plan.metadata()["exact"] is False


def test_export_refuses_an_existing_file_or_a_directory(tmp_path, conv_lif):
    path = tmp_path / "m.net"
    path.write_text("keep")
    with pytest.raises(InflorError, match="already exists"):
        export_netx(conv_lif, path)
    assert path.read_text() == "keep"
    export_netx(conv_lif, path, force=True)
    assert nw.read_netx_metadata(path)["model"] == "conv_lif"
    with pytest.raises(InflorError, match="is a directory"):
        export_netx(conv_lif, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.net"]


def test_metadata_of_a_foreign_file_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.net", "w") as f:
        f.create_group("layer")
    with pytest.raises(InflorError, match="no 'inflor' metadata"):
        nw.read_netx_metadata(tmp_path / "other.net")
    (tmp_path / "text.net").write_text("not hdf5")
    with pytest.raises(InflorError, match="not a readable HDF5 file"):
        nw.read_netx_metadata(tmp_path / "text.net")
    with h5py.File(tmp_path / "future.net", "w") as f:
        f.create_group("inflor").attrs["metadata"] = json.dumps({"format": nw.FORMAT, "format_version": 99})
    with pytest.raises(InflorError, match="v99"):
        nw.read_netx_metadata(tmp_path / "future.net")


def test_a_bias_source_is_refused_by_name_and_plain_layers_compile_a_chain(tmp_path):
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.passes.base import QuantizationOptions
    from inflor_deploy.pretrained import DEFAULT_MODEL

    graph = compile_checkpoint(DEFAULT_MODEL, "loihi2-sim", probe_samples=2, stop_after="ScheduleTimesteps").graph
    with pytest.raises(nw.NetxRefusal) as refused:  # soft reset allowed: the bias source is what remains
        export_netx(graph, tmp_path / "out.net", allow_inexact=True)
    assert refused.value.reason == "bias_source" and "--plain-layers" in str(refused.value)
    chain = compile_checkpoint(DEFAULT_MODEL, "loihi2-sim", probe_samples=2, stop_after="ScheduleTimesteps",
                               quantization=QuantizationOptions(plain_layers=True)).graph  # fmt: skip
    assert all(x.sources for x in chain.of_type(n.FixedPointNeuron))
    assert all(s.weight_exp == 0 for s in chain.of_type(n.FixedPointSynapse))
    nw.plan_netx(chain, allow_inexact=True)  # soft reset written as hard: planned, not refused
