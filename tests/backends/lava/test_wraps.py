"""Every Lava wrap, against Lava: simulator == integer reference == integer ONNX == Lava fixed_pt, bit for bit.

Hand-built fixed-point graphs are driven past 2^23 and past the int32
range. Where a test needs to *see* a wrap, the inputs are chosen so that
the exact sum is huge but the wrapped current is small: then v does not
saturate and every v trace shows the wrapped value (a backend that skipped
the wrap would saturate instead). The table of what Lava computes is in
:mod:`inflor_deploy.backends.sim.lava_arith`. Of the wraps, the Conv's
24-bit wrap and int32 cast, the int32 wrap of ``a << 6`` and the single
wrap of u change v; the 31/32-bit wraps of Dense currents and of the
InPort's sum cannot (u only sees ``a mod 2^26``), so for them the tests
check the values the backends agree on, not a difference Lava could show.
"""

from __future__ import annotations

import numpy as np
import pytest

from inflor_deploy.backends.lava.network import build_network, compare_with_simulator
from inflor_deploy.backends.onnx.fixed_model import fixed_graph_to_onnx, run_fixed_onnx
from inflor_deploy.backends.sim.fixed_point import plan, simulate
from inflor_deploy.backends.sim.int_reference import run_aligned, run_pipelined
from inflor_deploy.backends.sim.lava_arith import conv_current, wrap
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, validate
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.targets import load_target

#: Observer layers never fire below saturation: v shows the sum of its wrapped currents.
QUIET = dict(vth=2**17 - 1, reset="zero", du=4095, dv=0, bias_exp=6)


def _syn(name, source, weight, kind="dense"):
    return n.FixedPointSynapse(name, (source,), kind=kind, weight=np.asarray(weight, np.int32))


def _layer(name, sources, shape, **params):
    return n.FixedPointNeuron(name, tuple(sources), shape=shape, bias_mant=np.zeros(shape, np.int32),
                              **{**QUIET, **params})  # fmt: skip


def _scheduled(nodes, timesteps: int, value_range) -> Graph:
    nodes = [n.Input("x", (), shape=(1, 2, 2), grade_scale=1.0, value_range=value_range), *nodes]
    graph = Graph(tuple(nodes), timesteps=timesteps, name="wraps")
    validate(graph)
    ctx = PassContext(target=load_target("loihi2-sim"), probe=np.zeros((1, 1, 2, 2), np.float32))
    graph = ScheduleTimesteps.run(graph, ctx)
    validate(graph)
    return graph


def structured_graph() -> Graph:
    """x (1, 2, 2) = [x0, x1, x2, x3] into one observer layer per Lava Process and wrap.

    * ``conv`` (2, 2, 2): 1x1 Conv, weights (1, -3): ``wrap_24(c32(S))``;
    * ``dense31`` (2,): Dense, odd mixed weights (``weight_exp = -1``): ``wrap_31(S)``;
    * ``dense32`` (2,): Dense, even weights: ``wrap_32(S)``;
    * ``three`` (1,): three Dense synapses, each exact: the InPort's int32 sum wraps;
    * ``late_dense`` (2,), ``late_conv`` (2, 2, 2), depth 2: the same graded synapses delayed by one
      step (DelaySparse, ``wrap_31``) beside the spikes of depth 1 (Dense, Conv);
    * ``acc``: reads every layer (DelayDense for the depth-1 ones).
    """
    nodes = [
        _syn("c", "x", [[[[1]]], [[[-3]]]], "conv"),
        _layer("conv", ["c"], (2, 2, 2)),
        _syn("d31", "x", [[1, 1, 0, 0], [0, 0, -1, 3]]),
        _layer("dense31", ["d31"], (2,)),
        _syn("d32", "x", [[2, 2, 0, 0], [0, 0, 2, -6]]),
        _layer("dense32", ["d32"], (2,)),
        _syn("s1", "x", [[1, 0, 0, 0]]),
        _syn("s2", "x", [[0, 1, 0, 0]]),
        _syn("s3", "x", [[0, 0, 1, 0]]),
        _layer("three", ["s1", "s2", "s3"], (1,)),
        _syn("late_spikes", "dense31", [[1, 0], [0, 1]]),
        _syn("late_graded", "x", [[1, 1, 0, 0], [0, 0, -1, 3]]),
        _layer("late_dense", ["late_spikes", "late_graded"], (2,)),
        _syn("late_conv_spikes", "conv", [[[[1]], [[0]]], [[[0]], [[1]]]], "conv"),
        _syn("late_conv_graded", "x", [[[[1]]], [[[-3]]]], "conv"),
        _layer("late_conv", ["late_conv_spikes", "late_conv_graded"], (2, 2, 2)),
        _syn("o1", "late_dense", [[1, 0], [0, 1]]),
        _syn("o2", "dense32", [[1, 0], [0, 1]]),
        _syn("o3", "three", [[1], [-1]]),
        _syn("o4", "late_conv", np.ones((2, 8)).astype(np.int32)),
        n.FixedPointAccumulator("acc", ("o1", "o2", "o3", "o4"), shape=(2,), bias_mant=np.zeros(2, np.int32)),
    ]
    return _scheduled(nodes, timesteps=2, value_range=(-(2.0**31) + 1, 2.0**31 - 1))


def structured_inputs() -> np.ndarray:
    big = 1431655765  # 3 * big = 2^32 - 1
    rows = [
        [5, -7, 11, 2],  # nothing wraps
        [2**24 + 7, 2**30 + 100, -(2**29) + 9, 5],  # conv: wrap_24 leaves 7, 100, 9; -3 x1 passes 2^31 -> 0
        [2**30 + 3, 2**30 + 3, 2**30 + 1, 2**29 + 11],  # dense: wrap_31 -> 6, wrap_32 -> 12, a << 6 wraps
        [big, big, big + 6, -(2**30)],  # three exact currents whose int32 sum is 2^32 + 5 -> 5
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 1, 2, 2)


def test_the_structured_inputs_reach_every_wrap():
    x = structured_inputs().reshape(-1, 4).astype(np.int64)
    conv_ch1 = -3 * x  # the 1x1 conv's second channel
    assert np.any(np.abs(x) >= 2**24) and np.any(np.abs(conv_ch1) >= 2**31)  # wrap_24 and the int32 cast
    assert conv_current(np.array([2**24 + 7, -3 * (2**30 + 100), 3 * 2**29 - 27])).tolist() == [7, 0, -27]
    s31 = x[:, 0] + x[:, 1]
    assert s31[2] == 2**31 + 6 and wrap(s31, 31)[2] == 6 and wrap(s31, 32)[2] == -(2**31) + 6
    assert wrap(2 * s31, 32)[2] == 12
    assert wrap(x[3, :3].sum(), 32) == 5 and np.all(np.abs(x[3, :3]) < 2**31)
    a = -x[2, 2] + 3 * x[2, 3]
    assert a < 2**30 and wrap(a * 64, 32) == 2048  # a << 6 leaves int32: the neuron's own wrap


def test_structured_wraps_show_the_small_wrapped_values():
    graph = structured_graph()
    images = structured_inputs()
    reference = run_aligned(graph, images, record=True)
    v = reference.voltages
    # Step 0, v = 64 * current (no leak, no bias; T = 2 accumulates two steps).
    assert v["conv"][0, 1, 0].ravel().tolist() == [64 * 7, 64 * 100, 64 * 9, 64 * 5]
    assert v["conv"][0, 1, 1].ravel().tolist() == [64 * -21, 0, 64 * -27, 64 * -15]
    assert v["dense31"][0, 2].tolist() == [64 * 6, 2048]  # row 1: a = 2^29 + 32, a << 6 wraps to 2048
    assert v["dense32"][0, 2].tolist() == [64 * 12, -4096]  # row 1: a = -2^30 - 64, a << 6 wraps to -4096
    assert v["three"][0, 3].tolist() == [64 * 5]
    p = plan(graph, images)
    assert p.synapses["c"].can_wrap and p.synapses["c"].wrap_bits == 24
    assert p.synapses["d31"].wrap_bits == 31 and p.synapses["d32"].wrap_bits == 32
    assert p.synapses["late_graded"].lava_process == "DelaySparse" and p.synapses["late_graded"].wrap_bits == 31
    assert p.synapses["late_conv_graded"].lava_process == "DelaySparse"
    assert p.synapses["o2"].lava_process == "DelayDense"


def _assert_runs_equal(reference, candidate, graph):
    for kind in ("spikes", "voltages", "currents"):
        for name, trace in getattr(reference, kind).items():
            assert np.array_equal(trace, getattr(candidate, kind)[name]), f"{kind} of {name}"
    assert np.array_equal(reference.accumulator, candidate.accumulator)
    assert reference.u_wraps == dict(candidate.u_wraps) and reference.v_saturations == dict(candidate.v_saturations)


def _random_inputs(seed: int, count: int, low: float, high: float) -> np.ndarray:
    return np.rint(np.random.default_rng(seed).uniform(low, high, size=(count, 1, 2, 2)))


def test_simulator_reference_and_integer_onnx_agree_past_int32():
    graph = structured_graph()
    images = np.concatenate([structured_inputs(), _random_inputs(0, 6, -(2.0**31) + 1, 2.0**31 - 1)])
    reference = run_aligned(graph, images, record=True)
    assert sum(reference.u_wraps.values()) > 0 and sum(reference.v_saturations.values()) > 0
    _assert_runs_equal(reference, simulate(graph, images, record=True), graph)
    _assert_runs_equal(reference, simulate(graph, images, record=True, precision="int64"), graph)
    # The ONNX input is float32 (24 significant bits): compare on the float32 images.
    images32 = images.astype(np.float32)
    reference32 = run_aligned(graph, images32, record=True)
    assert sum(reference32.u_wraps.values()) > 0
    onnx_run = run_fixed_onnx(fixed_graph_to_onnx(graph), images32)
    for name, trace in reference32.voltages.items():
        assert np.array_equal(trace, onnx_run.voltages[name]), name
    assert np.array_equal(reference32.accumulator, onnx_run.accumulator)
    pipelined, raw = run_pipelined(graph, images[:4], record=True)
    sim = simulate(graph, images[:4], view="pipelined", record=True)
    for kind in ("spikes", "voltages"):
        for name, trace in raw[kind].items():
            assert np.array_equal(trace, sim.raw[kind][name]), f"{kind} of {name}"


def test_lava_fixed_pt_wraps_exactly_as_the_simulator():
    graph = structured_graph()
    images = np.concatenate([structured_inputs(), _random_inputs(1, 2, -(2.0**31) + 1, 2.0**31 - 1)])
    parity = compare_with_simulator(graph, images)
    assert parity.ok, parity.summary()
    assert all(layer["voltages_equal"] for layer in parity.layers.values())


def conv_graph() -> Graph:
    """Graded 3x3 convs (stride 1 and 2) and a spike conv with weights past 8 bits (Lava's Conv does
    not clip): spikes alone push its sums past 2^23; a delayed graded dense joins the readout."""
    rng = np.random.default_rng(4)
    nodes = [
        n.Input("x", (), shape=(2, 5, 5), grade_scale=1.0, value_range=(-(2.0**28), 2.0**28)),
        n.FixedPointSynapse("c1", ("x",), kind="conv", weight=rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int32),
                            padding=(1, 1)),  # fmt: skip
        n.FixedPointNeuron("n1", ("c1",), shape=(3, 5, 5), vth=3000, reset="subtract", reset_mant=2000,
                           bias_mant=rng.integers(-50, 50, (3, 5, 5)).astype(np.int32)),  # fmt: skip
        n.FixedPointSynapse("c2", ("n1",), kind="conv", weight=rng.integers(-(2**21), 2**21, (4, 3, 3, 3)).astype(np.int32),
                            stride=(2, 2), padding=(1, 1)),  # fmt: skip
        n.FixedPointSynapse("c2x", ("x",), kind="conv", weight=rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int32),
                            stride=(2, 2), padding=(1, 1)),  # fmt: skip
        # A current decay and a leak: decay(u) + (a << 6) can leave int32 before the single wrap.
        n.FixedPointNeuron("n2", ("c2", "c2x"), shape=(4, 3, 3), vth=1000, reset="zero", du=1024, dv=300,
                           bias_mant=np.zeros((4, 3, 3), np.int32)),  # fmt: skip
        n.FixedPointSynapse("o1", ("n2",), kind="dense", weight=rng.integers(-128, 128, (3, 36)).astype(np.int32)),
        n.FixedPointSynapse("o2", ("n1",), kind="dense", weight=2 * rng.integers(-64, 64, (3, 75)).astype(np.int32)),
        n.FixedPointSynapse("o3", ("x",), kind="dense", weight=rng.integers(-128, 128, (3, 50)).astype(np.int32)),
        n.FixedPointAccumulator("acc", ("o1", "o2", "o3"), shape=(3,), bias_mant=np.zeros(3, np.int32)),
    ]
    graph = Graph(tuple(nodes), timesteps=3, name="conv_wraps")
    ctx = PassContext(target=load_target("loihi2-sim"), probe=np.zeros((1, 2, 5, 5), np.float32))
    graph = ScheduleTimesteps.run(graph, ctx)
    validate(graph)
    return graph


def test_conv_graph_past_2_23_graded_and_spikes():
    graph = conv_graph()
    images = np.concatenate([
        np.rint(np.random.default_rng(2).uniform(-(2.0**20), 2.0**20, (2, 2, 5, 5))),  # wrap_24 only
        np.rint(np.random.default_rng(3).uniform(-(2.0**28), 2.0**28, (2, 2, 5, 5))),  # past int32 too
    ])
    p = plan(graph, images)
    assert p.synapses["c1"].can_wrap and p.synapses["c2"].can_wrap and p.synapses["o3"].can_wrap
    assert p.synapses["c2x"].lava_process == "DelaySparse" and p.synapses["o3"].lava_process == "DelaySparse"
    reference = run_aligned(graph, images, record=True)
    assert reference.u_wraps["n1"] > 0 and reference.u_wraps["n2"] > 0
    assert 0 < reference.spikes["n1"].mean() < 1 and 0 < reference.spikes["n2"].mean() < 1
    _assert_runs_equal(reference, simulate(graph, images, record=True), graph)
    parity = compare_with_simulator(graph, images[1:3])
    assert parity.ok, parity.summary()


def test_inputs_outside_the_declared_range_never_reach_lava():
    graph = structured_graph()
    with pytest.raises(IRError, match="outside the range"):
        build_network(graph, np.full((1, 1, 2, 2), 2.0**31))
    with pytest.raises(IRError, match="outside the range"):
        simulate(graph, np.full((1, 1, 2, 2), -(2.0**31)))
