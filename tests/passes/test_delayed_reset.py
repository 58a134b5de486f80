"""DelayedResetToSameStep: snnTorch's next-step reset -> same step (subtract a -> a / tau), spike-exact."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Graph, validate
from inflor_deploy.ir import nodes as n
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.delayed_reset import DelayedResetToSameStep
from inflor_deploy.targets import load_target
from tests.neuron_cases import BETA, CASES_BY_NAME, PER_CHANNEL_VTH, images, snntorch_leaky, variant_graph


def _ctx(probe):
    return PassContext(target=load_target("loihi2-sim"), probe=probe)


def test_subtract_amount_becomes_amount_over_tau_and_spikes_agree():
    before = variant_graph(CASES_BY_NAME["snn_leaky_subtract"].neuron)
    after = DelayedResetToSameStep.run(before, _ctx(images()))
    validate(after)
    node = after.node("n")
    assert (node.reset_timing, node.reset, node.compare) == ("same_step", "subtract", ">")
    assert node.reset_amount == 0.8 / BETA and node.tau == BETA
    assert all(a is b for a, b in zip(before, after) if a.name != "n")  # only the neuron changes
    result = DelayedResetToSameStep.check(before, after, _ctx(images(32)))
    assert result.ok and result.kind == "spike-exact", result.summary
    assert result.metrics["unexplained"] == 0 and result.metrics["moved"]["n"]["reset"] == "subtract"
    # Free-running, the same-step graph fires like snnTorch itself (up to counted near-ties: none here).
    assert np.array_equal(run_float(after, images(32)).scores, run_float(before, images(32)).scores)


def test_per_channel_amounts_move_per_channel():
    before = variant_graph(CASES_BY_NAME["snn_leaky_subtract_per_channel"].neuron)
    after = DelayedResetToSameStep.run(before, _ctx(images()))
    np.testing.assert_array_equal(after.node("n").reset_amount, PER_CHANNEL_VTH / BETA)
    assert DelayedResetToSameStep.check(before, after, _ctx(images(32))).ok


@pytest.mark.parametrize("reset", ["zero", "none"])
def test_zero_and_none_only_change_the_timing_and_stay_bit_exact(reset):
    before = variant_graph(CASES_BY_NAME[f"snn_leaky_{reset}"].neuron)
    after = DelayedResetToSameStep.run(before, _ctx(images()))
    assert after.node("n").reset_timing == "same_step" and after.node("n").reset_amount is None
    result = DelayedResetToSameStep.check(before, after, _ctx(images(32)))
    assert result.ok and result.metrics["max_membrane_diff"]["n"] == 0.0 and "n" in result.metrics["exact_layers"]


def test_boundary_inputs_at_threshold():
    """Currents at thr - ulp, thr, thr + ulp: '>' fires only above; the delayed subtraction lands next step."""
    thr = np.float32(0.75)
    x = np.array([[np.nextafter(thr, np.float32(0)), thr, np.nextafter(thr, np.float32(1))]], np.float32)
    before = Graph(
        (
            n.Input("image", (), shape=(3,)),
            n.Linear("fc", ("image",), weight=np.eye(3, dtype=np.float32)),
            n.Neuron("n", ("fc",), vth=float(thr), tau=0.5, compare=">", reset="subtract", reset_amount=float(thr),
                     reset_timing="next_step"),  # fmt: skip
            n.Accumulator("out", ("n",), readout="spike_count"),
        ),
        timesteps=3,
    )
    after = DelayedResetToSameStep.run(before, _ctx(x))
    ref, out = run_float(before, x, record=True), run_float(after, x, record=True)
    expected, mems = snntorch_leaky(np.broadcast_to(x, (3, *x.shape)), beta=0.5, threshold=thr, reset_mechanism="subtract")
    assert ref.spikes["n"][0, 0].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(ref.spikes["n"], expected.astype(np.uint8))
    np.testing.assert_array_equal(ref.membranes["n"], mems)
    np.testing.assert_array_equal(out.spikes["n"], ref.spikes["n"])
    # t = 1 after a spike at t = 0: 0.5 * H0 + x - thr either way (a / tau = 1.5 subtracted before the leak).
    np.testing.assert_allclose(out.membranes["n"], ref.membranes["n"], rtol=0, atol=float(np.spacing(thr)) * 2)
    assert DelayedResetToSameStep.check(before, after, _ctx(x)).ok


def test_contract_catches_an_undivided_amount():
    before = variant_graph(CASES_BY_NAME["snn_leaky_subtract"].neuron)
    wrong = before.replace_nodes(
        dataclasses.replace(x, reset_timing="same_step") if x.name == "n" else x for x in before
    )  # a, not a / tau: the leak then shrinks the subtraction
    result = DelayedResetToSameStep.check(before, wrong, _ctx(images(32)))
    assert not result.ok and result.first_divergence["layer"] == "n"


def test_tau_zero_subtract_is_refused_with_the_reason():
    graph = variant_graph(dict(vth=0.8, tau=0.0, compare=">", reset="subtract", reset_amount=0.8, reset_timing="next_step"))
    with pytest.raises(PassError, match=r"tau = 0 .*beta = 0.*no same-step equivalent"):
        DelayedResetToSameStep.run(graph, _ctx(images()))


def test_nothing_to_move_leaves_the_graph_and_says_so():
    graph = variant_graph(dict(vth=0.5, reset_amount=1.0))
    after = DelayedResetToSameStep.run(graph, _ctx(images()))
    result = DelayedResetToSameStep.check(graph, after, _ctx(images()))
    assert result.ok and result.metrics == {"rewritten": 0}
    assert all(a is b for a, b in zip(graph, after))
