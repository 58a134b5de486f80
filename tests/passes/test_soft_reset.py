"""SoftResetToSubtractive: reset_amount = spike_value (1, not vth), bit-exact in float32."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import Accumulator, Conv2d, Graph, Input, Linear, Neuron, validate
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.passes.soft_reset import SoftResetToSubtractive
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.targets import load_target

UNIT = 1 / 8


def _ctx(graph, probe=None):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph) if probe is None else probe)


def _currents_graph(currents, vth=0.5, timesteps=2):
    """With an all-ones (1, 1, n) image, neuron i receives exactly currents[i] every step."""
    k = len(currents)
    return Graph(
        (
            Input("image", (), shape=(1, 1, k)),
            Linear("fc1", ("image",), weight=np.diag(currents).astype(np.float32)),
            Neuron("neuron", ("fc1",), vth=vth),
            Linear("fc2", ("neuron",), weight=np.ones((2, k), np.float32)),
            Accumulator("readout", ("fc2",)),
        ),
        timesteps=timesteps,
    )


def _mixed_graph():
    rng = np.random.default_rng(0)
    return Graph(
        (
            Input("image", (), shape=(1, 4, 4)),
            Conv2d("conv", ("image",), weight=rng.normal(0.3, 0.5, (4, 1, 3, 3)).astype(np.float32), padding=(1, 1)),
            Neuron("srif", ("conv",), vth=0.5),
            Linear("fc1", ("srif",), weight=rng.normal(0, 0.3, (16, 64)).astype(np.float32)),
            Neuron("hard", ("fc1",), vth=0.5, reset="zero"),
            Linear("fc2", ("hard",), weight=rng.normal(0, 0.5, (8, 16)).astype(np.float32)),
            Neuron("explicit", ("fc2",), vth=0.5, reset_amount=0.75),
            Linear("fc3", ("explicit",), weight=rng.normal(0, 0.5, (6, 8)).astype(np.float32)),
            Neuron("graded", ("fc3",), vth=0.5, spike_value=2.0),
            Linear("fc4", ("graded",), weight=np.ones((2, 6), np.float32)),
            Accumulator("readout", ("fc4",)),
        ),
        timesteps=4,
    )  # fmt: skip


def test_reset_amount_becomes_the_spike_value():
    before = _mixed_graph()
    after = SoftResetToSubtractive.run(before, _ctx(before))
    validate(after)
    assert after.node("srif").reset_amount == 1.0  # the spike value, not vth = 0.5
    assert after.node("graded").reset_amount == 2.0
    assert after.node("hard") is before.node("hard")  # hard reset: untouched
    assert after.node("explicit") is before.node("explicit")  # already explicit
    assert before.node("srif").reset_amount is None  # pure
    assert not [x for x in after.of_type(Neuron) if x.reset == "subtract" and x.reset_amount is None]


def test_contract_is_bit_exact():
    before = _mixed_graph()
    ctx = _ctx(before)
    result = SoftResetToSubtractive.check(before, SoftResetToSubtractive.run(before, ctx), ctx)
    assert result.ok, result.summary
    assert result.kind == "bit-exact"
    assert result.metrics["layers_identical"] == result.metrics["layers"] == 4
    assert result.metrics["scores_identical"]


def test_threshold_boundaries_and_the_reset_subtracts_one_not_vth():
    vth = 0.5
    currents = [vth - UNIT, vth, vth + UNIT]
    before = _currents_graph(currents, vth=vth)
    ones = np.ones((1, 1, 1, 3), np.float32)
    after = SoftResetToSubtractive.run(before, _ctx(before, ones))
    for graph in (before, after):
        run = run_float(graph, ones, record=True)
        h, spikes = run.membranes["neuron"][:, 0], run.spikes["neuron"][:, 0]
        np.testing.assert_array_equal(h[0], np.float32(currents))
        np.testing.assert_array_equal(spikes[0], [0, 1, 1])  # fires at H >= vth
        # t = 1: H = H[0] - 1 * O[0] + x. Subtracting vth instead would give 0.5 and 0.75 (both spikes).
        np.testing.assert_array_equal(h[1], np.float32([2 * currents[0], currents[1] * 2 - 1, currents[2] * 2 - 1]))
        np.testing.assert_array_equal(spikes[1], [1, 0, 0])
    assert SoftResetToSubtractive.check(before, after, _ctx(before, ones)).ok


def test_contract_catches_a_reset_by_vth():
    before = _currents_graph([0.25, 0.625, 0.875])
    ones = np.ones((1, 1, 1, 3), np.float32)
    wrong = before.replace_nodes(
        dataclasses.replace(x, reset_amount=x.vth) if isinstance(x, Neuron) else x for x in before
    )
    result = SoftResetToSubtractive.check(before, wrong, _ctx(before, ones))
    assert not result.ok
    divergence = result.first_divergence
    assert divergence["layer"] == "neuron" and divergence["timestep"] == 1
    assert divergence["neuron"] == [1] and divergence["expected"] == 0 and divergence["actual"] == 1


@pytest.mark.parametrize("spike_value", [1.0, 0.5])
def test_contract_checks_membranes_not_only_spikes(spike_value):
    # A reset amount that changes membranes but, here, no spike must still fail.
    before = _currents_graph([0.875], vth=0.5, timesteps=1)
    before = before.replace_nodes(
        dataclasses.replace(x, spike_value=spike_value) if isinstance(x, Neuron) else x for x in before
    )
    ones = np.ones((1, 1, 1, 1), np.float32)
    ctx = _ctx(before, ones)
    assert SoftResetToSubtractive.check(before, SoftResetToSubtractive.run(before, ctx), ctx).ok
    two_steps = dataclasses.replace(before, timesteps=2)
    wrong = two_steps.replace_nodes(
        dataclasses.replace(x, reset_amount=spike_value + 1 / 64) if isinstance(x, Neuron) else x for x in two_steps
    )
    result = SoftResetToSubtractive.check(two_steps, wrong, ctx)
    assert not result.ok
    assert result.first_divergence["reason"] == "membrane values differ"
    assert result.first_divergence["timestep"] == 1
