"""Every framework neuron and readout compiles, and the integer reference == the simulator, bit for bit.

Each case of tests/neuron_cases.py goes through the whole compile pipeline
(every contract checked), then parity level 2: ``int_reference`` against
the fast simulator in the aligned and the pipelined view, every spike, u, v
and readout, plus the simulator's int64 kernels as a second implementation.
"""

import numpy as np
import pytest

from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.backends.sim.int_reference import run_aligned
from inflor_deploy.ir import nodes as n
from inflor_deploy.verify import level2_reference_vs_simulator
from tests.neuron_cases import CASES, compile_graph, conv_images, conv_per_channel_graph, images, variant_graph


def _level2(fixed, x):
    result = level2_reference_vs_simulator(fixed, x, pipelined_samples=3)
    assert result.ok, result.summary
    ref = run_aligned(fixed, x, record=True)
    slow = simulate(fixed, x, record=True, precision="int64")
    for kind in ("spikes", "voltages", "currents"):
        for name, trace in getattr(ref, kind).items():
            np.testing.assert_array_equal(getattr(slow, kind)[name], trace, err_msg=f"{kind} {name}")
    np.testing.assert_array_equal(slow.accumulator, ref.accumulator)
    return ref


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_neuron_compiles_and_the_reference_equals_the_simulator(case):
    result, float_graph = compile_graph(variant_graph(case.neuron, timesteps=6), images(8))
    assert all(r.ok for r in result.results)
    neuron = float_graph.node("n")
    # What the quantizer sees is the Loihi form: H = tau U + X, same step, v_reset 0.
    assert (neuron.charge, neuron.gain, neuron.reset_timing, neuron.v_reset, neuron.mpr) == (
        "affine", 1.0, "same_step", 0.0, False
    )  # fmt: skip
    fixed = result.graph
    layer = fixed.node("n")
    assert layer.reset == case.neuron.get("reset", "subtract")
    assert np.ndim(layer.vth) == np.ndim(case.neuron.get("vth", 0.5))
    ref = _level2(fixed, images(6))
    assert 0 < ref.spikes["n"].mean() < 1


@pytest.mark.parametrize("readout", ["mean_current", "mean_membrane", "spike_count"])
def test_per_channel_layers_and_each_readout(readout):
    result, _ = compile_graph(conv_per_channel_graph(readout), conv_images(6))
    fixed = result.graph
    hard_pc, snn_pc, none = fixed.node("hard_pc"), fixed.node("snn_pc"), fixed.node("none")
    assert hard_pc.reset == "zero" and hard_pc.vth.shape == (4,) and hard_pc.vth.dtype == np.int64
    assert snn_pc.vth.shape == snn_pc.reset_mant.shape == (6,) and none.reset == "none" and none.reset_mant == 0
    out = fixed.output
    assert out.readout == readout and (out.dv > 0) == (readout == "mean_membrane")
    x = conv_images(5)
    ref = _level2(fixed, x)
    assert all(0 < ref.spikes[k].mean() < 1 for k in ("hard_pc", "snn_pc", "none", "hard"))
    if readout == "mean_membrane":  # R = sum over the window of v
        np.testing.assert_array_equal(ref.accumulator, ref.voltages["out"].sum(0))
    else:
        np.testing.assert_array_equal(ref.accumulator, ref.voltages["out"][-1])
    if readout == "spike_count":  # the count itself: 64 v units per weight unit, weight scale * 1 per spike
        counts = ref.spikes["hard"].sum(0)
        np.testing.assert_array_equal(ref.scores(fixed), counts)
    divisor = 1 if readout == "spike_count" else fixed.timesteps
    np.testing.assert_allclose(ref.scores(fixed), ref.accumulator / (64 * out.scale * divisor))
