"""The Lava backend: parity level 3 (Lava fixed_pt == the fixed-point simulator, bit for bit), weight mapping, teardown.

Graphs are tiny and built three ways: the bundled digits model through the
compile passes, float graphs quantized by ``QuantizeFixedPoint`` (residual
blocks, IF/LIF/SRIF variants), and fixed-point graphs written by hand where
a test needs exact control of the weights.
"""

import dataclasses
import multiprocessing
import os
import time

import numpy as np
import pytest

from inflor_deploy.backends.lava import network as lb
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.pipeline import FLOAT_PIPELINE
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.backends.sim.int_reference import quantize_input, run_pipelined
from inflor_deploy.targets import load_target

DIGITS = "inflor_deploy/pretrained/digits_srif_t4.pt"


# --------------------------------------------------------------------------- graphs


def _schedule(fixed: Graph, target: str = "loihi2-sim") -> Graph:
    ctx = PassContext(target=load_target(target), probe=np.zeros((1, *fixed.input.shape), np.float32))
    scheduled = ScheduleTimesteps.run(fixed, ctx)
    validate(scheduled)
    return scheduled


def _compile(float_graph: Graph, target: str = "loihi2-sim", edit=None) -> Graph:
    """Quantize and schedule a float graph (passes only, contracts not run: they are tested elsewhere)."""
    ctx = PassContext(target=load_target(target), probe=np.zeros((1, *float_graph.input.shape), np.float32))
    fixed = QuantizeFixedPoint.run(float_graph, ctx)
    if edit:
        fixed = fixed.replace_nodes([edit(node) for node in fixed])
    return _schedule(fixed, target)


@pytest.fixture(scope="module")
def digits():
    """(scheduled fixed-point graph, float graph, test images) of the bundled digits model."""
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data import load_digits
    from inflor_deploy.frontends.fx import trace

    graph = trace(load_checkpoint(DIGITS).model)
    images = load_digits("test").images[:3]
    ctx = PassContext(target=load_target("loihi2-sim"), probe=images)
    for p in FLOAT_PIPELINE:
        graph = p.run(graph, ctx)
    return _compile(graph), graph, images


def _conv(rng, name, src, cin, cout, k=3, stride=1, pad=1, groups=1, bias=True):
    weight = rng.normal(0, 0.5, (cout, cin // groups, k, k)).astype(np.float32)
    b = rng.normal(0.05, 0.05, cout).astype(np.float32) if bias else None
    return n.Conv2d(name, (src,), weight=weight, bias=b, stride=(stride, stride), padding=(pad, pad), groups=groups)


def _srif(name, *sources):
    return n.Neuron(name, tuple(sources), vth=0.5, reset_amount=1.0)


def conv_residual_graph(timesteps: int = 3) -> Graph:
    """Non-square conv net with a strided 3x3 projection shortcut and an identity shortcut (both delayed)."""
    rng = np.random.default_rng(3)
    return Graph(
        nodes=(
            n.Input("image", (), shape=(2, 5, 7)),
            _conv(rng, "c1", "image", 2, 4),
            _srif("n1", "c1"),
            _conv(rng, "c2", "n1", 4, 6, stride=2),  # (6, 3, 4)
            _srif("n2", "c2"),
            _conv(rng, "c3", "n2", 6, 6, groups=2),
            _conv(rng, "proj", "n1", 4, 6, stride=2, bias=False),  # shortcut: skips one connection
            _srif("n3", "c3", "proj"),
            _conv(rng, "c4", "n3", 6, 6),
            _srif("n4", "c4"),
            _conv(rng, "c5", "n4", 6, 6),
            _srif("n5", "c5", "n3"),  # identity shortcut
            n.Linear("fc", ("n5",), weight=rng.normal(0, 0.3, (3, 72)).astype(np.float32), bias=None),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=timesteps,
        name="conv_residual",
    )


def mlp_variants_graph(timesteps: int) -> Graph:
    """Graded (C, H, W) input into dense layers: soft reset with leak, hard-reset IF, hard-reset LIF, all biased."""
    rng = np.random.default_rng(5)

    def fc(name, src, o, i):
        return n.Linear(name, (src,), weight=rng.normal(0, 0.8, (o, i)).astype(np.float32),
                        bias=rng.normal(0.1, 0.1, o).astype(np.float32))  # fmt: skip

    return Graph(
        nodes=(
            n.Input("image", (), shape=(1, 3, 4)),
            fc("fc1", "image", 10, 12),
            n.Neuron("srif_leak", ("fc1",), vth=0.5, tau=0.8, reset="subtract", reset_amount=1.0),
            fc("fc2", "srif_leak", 8, 10),
            n.Neuron("if_hard", ("fc2",), vth=0.5, reset="zero"),
            fc("fc3", "if_hard", 8, 8),
            n.Neuron("lif_hard", ("fc3",), vth=0.5, tau=0.7, reset="zero"),
            fc("fc4", "lif_hard", 4, 8),
            n.Accumulator("out", ("fc4",)),
        ),
        timesteps=timesteps,
        name="mlp_variants",
    )


def _neuron(name, sources, shape, vth, reset_mant=0, bias=0, reset="subtract", dv=0):
    return n.FixedPointNeuron(name, tuple(sources), shape=shape, vth=vth, reset=reset, reset_mant=reset_mant, dv=dv,
                              bias_mant=np.full(shape, bias, np.int32), bias_exp=6, scale=1.0)  # fmt: skip


def dense_edge_weights_graph(timesteps: int = 4) -> Graph:
    """Hand-written weights at the edges of Lava's Dense handling, plus a delayed dense shortcut."""
    rng = np.random.default_rng(7)
    nonpositive = -2 * rng.integers(0, 21, (8, 6))  # even, <= 0 ...
    nonpositive[0, 0] = -256  # ... and -256, which INHIBITORY mode would clip to -255
    odd_mixed = rng.integers(-128, 128, (8, 8)) | 1  # odd, mixed signs: needs 2W with weight_exp -1
    coarse = 8 * rng.integers(-128, 128, (8, 8))  # multiples of 8 in [-1024, 1016]: needs weight_exp 2
    odd_positive = rng.integers(0, 128, (8, 8)) | 1  # all > 0, odd: EXCITATORY keeps them
    readout = 2 * rng.integers(-127, 128, (3, 8))

    def syn(name, src, w):
        return n.FixedPointSynapse(name, (src,), kind="dense", weight=w.astype(np.int32))

    return Graph(
        nodes=(
            n.Input("x", (), shape=(6,), grade_scale=255.0),
            syn("nonpositive", "x", nonpositive),
            _neuron("a", ("nonpositive",), (8,), vth=9_000, reset_mant=12_000, bias=8_000),
            syn("odd_mixed", "a", odd_mixed),
            _neuron("b", ("odd_mixed",), (8,), vth=60, reset_mant=120, bias=40),
            syn("coarse", "b", coarse),
            syn("skip", "a", odd_positive),  # a -> c skips b: delay 1 (DelayDense)
            _neuron("c", ("coarse", "skip"), (8,), vth=900, reset_mant=1500, bias=-30),
            syn("readout_w", "c", readout),
            n.FixedPointAccumulator("out", ("readout_w",), shape=(3,), bias_mant=np.zeros(3, np.int32), bias_exp=6, scale=1.0),
        ),
        timesteps=timesteps,
        name="dense_edges",
    )


def recurrent_route_graph(timesteps: int = 4, bias: int = 0) -> Graph:
    rng = np.random.default_rng(11)
    return Graph(
        nodes=(
            n.Input("x", (), shape=(5,), grade_scale=255.0),
            n.FixedPointSynapse("w_in", ("x",), kind="dense", weight=(2 * rng.integers(-20, 60, (6, 5))).astype(np.int32)),
            _neuron("h", ("w_in",), (6,), vth=3_000, reset_mant=200, bias=bias),
            n.FixedPointSynapse("w_out", ("h",), kind="dense", weight=(2 * rng.integers(-100, 100, (2, 6))).astype(np.int32)),
            n.FixedPointAccumulator("out", ("w_out",), shape=(2,), bias_mant=np.zeros(2, np.int32), bias_exp=6, scale=1.0),
        ),
        timesteps=timesteps,
        name="recurrent_route",
    )


def _images(graph: Graph, count: int, seed: int = 0, high: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).random((count, *graph.input.shape)) * high).astype(np.float32)


def _assert_bit_exact(graph: Graph, images: np.ndarray, min_spikes: int = 1) -> lb.LavaParity:
    parity = lb.compare_with_simulator(graph, images)
    assert parity.ok, parity.summary()
    assert parity.readout_equal and all(v["voltages_equal"] for v in parity.layers.values())
    reference, raw = run_pipelined(graph, images, record=True)
    # The test means something only if the layers actually spiked.
    for name, trace in raw["spikes"].items():
        assert trace.sum() >= min_spikes, f"layer {name} never spiked: the test graph is too quiet"
    return parity


# --------------------------------------------------------------------------- weights and layouts (no Lava run)


@pytest.mark.lava
@pytest.mark.parametrize(
    "weight, mode, exp",
    [
        (np.array([[2, -4], [254, -256]]), "MIXED", 0),  # the quantizer's range: kept as is
        (np.array([[0, -2], [-256, -254]]), "MIXED", 0),  # all <= 0 with -256: INHIBITORY would clip to -255
        (np.array([[0, -3], [-255, -1]]), "INHIBITORY", 0),
        (np.array([[0, 3], [255, 1]]), "EXCITATORY", 0),
        (np.array([[1, -3], [127, -128]]), "MIXED", -1),  # odd mixed: 2W, then >> 1
        (np.array([[512, -1024], [8, 0]]), "MIXED", 2),
        (np.zeros((2, 2), int), "EXCITATORY", 0),
    ],
)
def test_dense_encoding_survives_lavas_own_weight_handling(weight, mode, exp):
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights

    encoded, got_mode, got_exp = lb.encode_dense_weights(weight)
    assert (got_mode, got_exp) == (mode, exp)
    # What PyDenseModelBitAcc does on its first step, then per step with x:
    sign_mode = getattr(SignMode, got_mode)
    lava_w = truncate_weights(clip_weights(encoded, sign_mode, num_bits=8), sign_mode, 8)
    x = np.array([3, 7])
    acc = lava_w @ x
    delivered = acc << got_exp if got_exp > 0 else acc >> -got_exp
    np.testing.assert_array_equal(delivered, weight @ x)


@pytest.mark.lava
def test_dense_encoding_refuses_what_lava_cannot_deliver():
    with pytest.raises(lb.LavaBackendError, match="no exact Lava Dense encoding"):
        lb.encode_dense_weights(np.array([[201, -3]]))


@pytest.mark.lava
def test_build_network_refuses_unscheduled_graphs_and_wrong_images(digits):
    graph, _, images = digits
    with pytest.raises(lb.LavaBackendError, match="ScheduleTimesteps"):
        lb.build_network(dataclasses.replace(graph, schedule=None), images)
    with pytest.raises(lb.LavaBackendError, match=r"images must be \[B, 1, 8, 8\]"):
        lb.build_network(graph, images[:, :, :4])


# --------------------------------------------------------------------------- parity level 3


@pytest.mark.lava
def test_digits_model_is_bit_exact_and_reads_one_value_per_sample(digits):
    graph, _, images = digits
    parity = _assert_bit_exact(graph, images[:2])
    assert parity.samples == 2 and parity.steps == 2 * 4 + graph.schedule.latency + 1
    run = lb.run_lava(graph, images)  # no recording: stops at the last readout
    reference, _ = run_pipelined(graph, images)
    np.testing.assert_array_equal(run.accumulator, reference.accumulator)
    assert run.accumulator.dtype == np.int64 and run.steps == 2 * 4 + 4 + graph.schedule.latency
    assert not run.spikes and not run.voltages


@pytest.mark.lava
def test_residual_conv_net_with_delayed_shortcuts_is_bit_exact():
    graph = _compile(conv_residual_graph())
    delays = {s.name: s.delay for s in graph.of_type(n.FixedPointSynapse) if s.delay}
    assert delays == {"proj": 1, "n5.shortcut": 1}
    _assert_bit_exact(graph, _images(graph, 2))


@pytest.mark.lava
@pytest.mark.parametrize("target, timesteps, interval", [("loihi2-sim", 3, 3), ("loihi2", 3, 4), ("loihi2-sim", 1, 1)])
def test_if_lif_and_leaky_soft_reset_with_bias_are_bit_exact(target, timesteps, interval):
    # T = 3 on loihi2: the reset interval pads to the next power of two. T = 1: every step is a window.
    def decay_current(node):
        # A CUBA current decay as well, which the quantizer never emits (du = 4095).
        return dataclasses.replace(node, du=3000) if node.name == "srif_leak" else node

    graph = _compile(mlp_variants_graph(timesteps), target, edit=decay_current)
    assert graph.schedule.reset_interval == interval
    layers = {x.name: (x.reset, x.dv, x.du) for x in graph.of_type(n.FixedPointNeuron)}
    assert layers["srif_leak"][0] == "subtract" and layers["srif_leak"][1] > 0 and layers["srif_leak"][2] == 3000
    assert layers["if_hard"][:2] == ("zero", 0) and layers["lif_hard"][0] == "zero" and layers["lif_hard"][1] > 0
    assert all(np.any(x.bias_mant != 0) for x in graph.of_type(n.FixedPointNeuron))
    _assert_bit_exact(graph, _images(graph, 3))


@pytest.mark.lava
def test_dense_weights_at_the_edges_of_lavas_handling_are_bit_exact():
    graph = _schedule(dense_edge_weights_graph())
    validate(graph)
    assert graph.node("skip").delay == 1
    _assert_bit_exact(graph, _images(graph, 2, high=0.2))


# --------------------------------------------------------------------------- floating_pt (statistical)


@pytest.mark.lava
def test_floating_pt_models_agree_with_the_integer_reference(digits):
    graph, float_graph, images = digits
    agreement = lb.compare_floating_pt(graph, images[:2], float_graph=float_graph)
    # IF layers without leak: the float models see the same integers, so they only differ
    # where the integer v would saturate. Statistical by contract; near-perfect here.
    assert min(agreement.spike_agreement.values()) > 0.99, agreement.summary()
    assert agreement.class_agreement == 1.0 and agreement.float_graph_class_agreement is not None


# --------------------------------------------------------------------------- the stock-CUBA route


@pytest.mark.lava
def test_lavas_du_zero_still_decays_the_current():
    """The fact that rules out exact soft reset on stock CUBA: du = 0 multiplies u by 4095/4096."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import Read
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIFReset

    frames = np.zeros((1, 5), np.int32)
    frames[0, 0] = 100
    source = RingBuffer(data=frames)
    neuron = LIFReset(shape=(1,), du=0, dv=0, vth=10**5, reset_interval=100)
    source.s_out.connect(neuron.a_in)
    read = Read(buffer=5, interval=1, offset=0)
    read.connect_var(neuron.u)
    try:
        neuron.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        u = read.data.get()[0].astype(int).tolist()
    finally:
        neuron.stop()
    expected = [6400]
    for _ in range(4):
        expected.append((expected[-1] * 4095) >> 12)  # loses ceil(u / 4096) every step
    assert u == expected == [6400, 6398, 6396, 6394, 6392]


@pytest.mark.lava
def test_recurrent_route_is_refused_unless_inexactness_is_accepted():
    graph = _schedule(recurrent_route_graph())
    images = _images(graph, 1)
    with pytest.raises(lb.LavaBackendError, match="not bit-exact.*4095/4096"):
        lb.build_network(graph, images, soft_reset="recurrent")
    with pytest.raises(lb.LavaBackendError, match="bias enters v"):
        lb.build_network(_schedule(recurrent_route_graph(bias=5)), images, soft_reset="recurrent", allow_inexact=True)
    conv = _compile(conv_residual_graph())
    with pytest.raises(lb.LavaBackendError, match="conv layer"):
        lb.build_network(conv, _images(conv, 1), soft_reset="recurrent", allow_inexact=True)


@pytest.mark.lava
def test_recurrent_route_is_exactly_the_predicted_stock_cuba_dynamics_and_not_srif():
    graph = _schedule(recurrent_route_graph())
    images = _images(graph, 2, high=0.3)  # keeps u and v inside 24 bits (the model below has no wrap/clip)
    run = lb.run_lava(graph, images, record_layers=True, soft_reset="recurrent", allow_inexact=True)

    # What the route computes, step by step (layer "h" at depth 1): stock CUBA with du = 0,
    # dv = 4095, the self-synapse -reset_mant arriving one step after the spike, v = 0 on a spike.
    s, h = graph.schedule, graph.node("h")
    x = quantize_input(graph, images)
    w = graph.node("w_in").weight.astype(np.int64)
    u = v = 0
    spikes_prev = np.zeros(6, np.int64)
    expected_v, expected_s = [], []
    for g in range(1, run.steps + 1):
        if g % s.reset_interval == s.reset_offset["h"]:
            u = v = np.zeros(6, np.int64)
        k, t = divmod(g - 2, s.reset_interval)  # input column g - 2 reaches depth 1 at step g
        a = (w @ x[k]) if 0 <= k < len(x) and t < graph.timesteps and g >= 2 else np.zeros(6, np.int64)
        a = a - h.reset_mant * spikes_prev
        u = np.sign(u * 4095) * (np.abs(u * 4095) >> 12) + (a << 6)
        v = np.sign(v) * (np.abs(v) >> 12) + u
        fired = v > (h.vth << 6)
        v = np.where(fired, 0, v)
        spikes_prev = fired.astype(np.int64)
        expected_v.append(v)
        expected_s.append(fired)
    np.testing.assert_array_equal(run.voltages["h"], np.array(expected_v))
    np.testing.assert_array_equal(run.spikes["h"], np.array(expected_s, np.uint8))
    assert run.spikes["h"].sum() > 0

    parity = lb.compare_with_simulator(graph, images, soft_reset="recurrent", allow_inexact=True)
    assert not parity.ok and parity.first_divergence.layer == "h"
    assert "first divergence at Lava step" in parity.summary()


# --------------------------------------------------------------------------- teardown


@pytest.fixture
def shared_memory_names(monkeypatch):
    """Names of the shared-memory blocks Lava creates in this process during the test."""
    from lava.magma.runtime.message_infrastructure.shared_memory_manager import SharedMemoryManager

    names = []
    create = SharedMemoryManager.create_shared_memory

    def recording(self, size):
        handle = create(self, size)
        names.append(handle.name)
        return handle

    monkeypatch.setattr(SharedMemoryManager, "create_shared_memory", recording)
    return names


def _assert_nothing_left(names):
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []
    assert names, "the run created no shared memory: the fixture did not record"
    left = [name for name in names if os.path.exists(f"/dev/shm/{name.lstrip('/')}")]
    assert left == []


@pytest.mark.lava
def test_a_worker_failing_midway_raises_and_leaves_no_process_or_shared_memory(digits, monkeypatch, shared_memory_names):
    from inflor_deploy.backends.lava.procs.soft_reset import models

    run_spk = models.PySoftResetLifModelBitAcc.run_spk

    def failing(self):
        if self.time_step == 3:
            raise RuntimeError("injected failure at step 3")
        run_spk(self)

    # Lava forks its workers, so they inherit the patched model.
    monkeypatch.setattr(models.PySoftResetLifModelBitAcc, "run_spk", failing)
    graph, _, images = digits
    start = time.monotonic()
    with pytest.raises(lb.LavaRunError, match="injected failure at step 3"):
        lb.run_lava(graph, images[:2])
    assert time.monotonic() - start < 60  # Lava's own blocking run would hang here forever
    _assert_nothing_left(shared_memory_names)


@pytest.mark.lava
def test_an_interrupted_run_leaves_no_process_or_shared_memory(digits, monkeypatch, shared_memory_names):
    graph, _, images = digits

    def interrupted(anchor, condition):
        anchor.run(condition=condition)  # non-blocking: the workers are mid-run...
        time.sleep(0.3)
        raise KeyboardInterrupt  # ... when Ctrl-C arrives

    monkeypatch.setattr(lb, "_run_watched", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lb.run_lava(graph, np.repeat(images, 30, axis=0))
    _assert_nothing_left(shared_memory_names)


# --------------------------------------------------------------------------- framework neurons and readouts


@pytest.mark.lava
@pytest.mark.parametrize("readout", ["mean_current", "mean_membrane", "spike_count"])
def test_per_channel_hard_reset_delayed_subtract_none_and_each_readout_are_bit_exact(readout):
    """Per-channel thresholds (hard reset and snnTorch's subtract), no reset, a stock hard-reset layer, each readout."""
    from tests.neuron_cases import compile_graph, conv_images, conv_per_channel_graph

    result, _ = compile_graph(conv_per_channel_graph(readout), conv_images(6))
    graph = result.graph
    net = lb.build_network(graph, conv_images(1))
    kinds = {name: (type(p).__name__, p.proc_params.get("reset_mode")) for name, p in net.layers.items()}
    assert kinds == {
        "hard_pc": ("SoftResetLIF", "zero"), "snn_pc": ("SoftResetLIF", "subtract"),
        "none": ("SoftResetLIF", "none"), "hard": ("LIFReset", None), "out": ("LIFReset", None),
    }  # fmt: skip
    parity = _assert_bit_exact(graph, conv_images(2, seed=4))
    assert parity.samples == 2
    if readout == "mean_membrane":
        # Without recording, the run stops at the last readout; the host sums v over each sample's T steps.
        run = lb.run_lava(graph, conv_images(2, seed=4))
        reference, _ = run_pipelined(graph, conv_images(2, seed=4))
        assert run.steps == graph.schedule.reset_interval + graph.timesteps + graph.schedule.latency
        np.testing.assert_array_equal(run.accumulator, reference.accumulator)
