"""run_float executes every framework neuron of the IR exactly as the framework computes it.

For each neuron (tests/neuron_cases.py: SpikingJelly IF/LIF/ParametricLIF
soft and hard, nonzero v_reset, decay_input both ways; snnTorch Leaky
subtract/zero/none with its delayed reset, per-channel thresholds, graded
spikes; InfLoR SRIF with and without MPR, IF, LIF) a numpy transcription of
the framework's float32 update, fed the same exact currents, must give the
same spikes and the same membranes H, bit for bit. Each case also has a
wrong twin (same step instead of the delayed reset, v_reset 0, the other
decay_input form, ...) whose spikes must differ on the same data: the data
tells the variants apart.
"""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from tests.neuron_cases import CASES, OUT, current_into, images, variant_graph


def _with(graph: Graph, name: str, **changes) -> Graph:
    return graph.replace_nodes(dataclasses.replace(x, **changes) if x.name == name else x for x in graph)


@pytest.mark.parametrize("first", [False, True], ids=["spiking_input", "analog_input"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_run_float_is_the_framework_update_bit_for_bit(case, first):
    graph = variant_graph(case.neuron, first=first)
    x = images(16)
    run = run_float(graph, x, record=True)
    current = current_into(graph, run.spikes, x)
    spikes, membranes = case.reference(current)
    np.testing.assert_array_equal(run.spikes["n"], spikes.astype(np.uint8))
    np.testing.assert_array_equal(run.membranes["n"], membranes)
    rate = float(spikes.mean())
    assert 0.02 < rate < 0.98, f"the data must make the layer both fire and stay silent (rate {rate:.3f})"
    twin = run_float(_with(graph, "n", **case.twin), x, record=True)
    assert not np.array_equal(twin.spikes["n"], run.spikes["n"]), f"the wrong twin {case.twin} fires identically"


def test_boundary_inputs_at_threshold_for_each_comparison():
    """H = vth - ulp, vth, vth + ulp: '>=' fires at vth, '>' does not; the reset amount is what is subtracted."""
    vth = 0.75
    below, above = np.nextafter(np.float32(vth), np.float32(0)), np.nextafter(np.float32(vth), np.float32(1))
    for compare, expected in ((">=", [0, 1, 1]), (">", [0, 0, 1])):
        graph = Graph(
            (
                n.Input("image", (), shape=(3,)),
                n.Linear("fc", ("image",), weight=np.eye(3, dtype=np.float32)),
                n.Neuron("n", ("fc",), vth=vth, compare=compare, reset="subtract", reset_amount=0.25),
                n.Accumulator("out", ("n",), readout="spike_count"),
            ),
            timesteps=2,
        )
        run = run_float(graph, np.array([[below, vth, above]], np.float32), record=True)
        assert run.spikes["n"][0, 0].tolist() == expected
        # After a spike at t = 0 the next charge starts from H - 0.25.
        fired = np.array(expected, bool)
        h0 = np.array([below, vth, above], np.float32)
        assert np.array_equal(run.membranes["n"][1, 0], np.where(fired, h0 - np.float32(0.25), h0) + h0)


def _readout_reference(graph: Graph, run, x):
    """numpy float32 scores of each readout from the exact currents into the accumulator."""
    out = graph.output
    T = graph.timesteps
    if out.readout == "spike_count":
        return run.spikes["n"].astype(np.float32).sum(0)
    current = current_into(graph, run.spikes, x, layer="out")
    if out.readout == "mean_current":
        return current.mean(0)
    m, total = np.zeros_like(current[0]), np.zeros_like(current[0])
    for x_t in current:
        m = np.float32(out.tau) * m + x_t if out.tau != 1 else m + x_t
        total = total + m
    return total / np.float32(T)


@pytest.mark.parametrize(
    "readout, tau", [("mean_current", 1.0), ("mean_membrane", 1.0), ("mean_membrane", 0.875), ("spike_count", 1.0)]
)
def test_each_readout_scores_as_defined(readout, tau):
    graph = variant_graph(dict(vth=0.5, reset_amount=1.0), readout=readout, readout_tau=tau)
    x = images(16)
    run = run_float(graph, x, record=True)
    expected = _readout_reference(graph, run, x)
    assert run.scores.shape == (16, OUT if readout != "spike_count" else 24)
    np.testing.assert_array_equal(run.scores, expected)
    if readout == "spike_count":
        assert run.scores.max() > 0 and np.array_equal(run.scores, np.round(run.scores))
