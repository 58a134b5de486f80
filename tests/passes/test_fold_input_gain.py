"""FoldInputGain: the input gain folds into the synapses (float-tolerance); every neuron leaves affine."""

import numpy as np
import pytest

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Graph, validate
from inflor_deploy.ir import nodes as n
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.fold_input_gain import FoldInputGain
from inflor_deploy.targets import load_target
from tests.neuron_cases import CASES_BY_NAME, dyadic, images, variant_graph


def _ctx(probe):
    return PassContext(target=load_target("loihi2-sim"), probe=probe)


def test_gain_folds_into_weights_and_bias():
    before = variant_graph(CASES_BY_NAME["sj_lif_decay_input_soft"].neuron)
    after = FoldInputGain.run(before, _ctx(images()))
    validate(after)
    node, fc2 = after.node("n"), before.node("fc2")
    assert (node.charge, node.decay, node.gain, node.tau) == ("affine", None, 1.0, 1 - 1 / 2.7)
    np.testing.assert_array_equal(after.node("fc2").weight, (fc2.weight.astype(np.float64) / 2.7).astype(np.float32))
    np.testing.assert_array_equal(after.node("fc2").bias, (fc2.bias.astype(np.float64) / 2.7).astype(np.float32))
    result = FoldInputGain.check(before, after, _ctx(images(32)))
    assert result.ok and result.kind == "float-tolerance", result.summary
    assert result.metrics["folded"] == {"n": 1 / 2.7} and result.metrics["kept_on_neuron"] == {}


def test_decay_charge_without_gain_just_becomes_affine():
    before = variant_graph(CASES_BY_NAME["sj_lif_no_decay_input_soft"].neuron)
    after = FoldInputGain.run(before, _ctx(images()))
    assert after.node("n").charge == "affine" and after.node("fc2") is before.node("fc2")
    assert FoldInputGain.check(before, after, _ctx(images(32))).ok


def test_an_identity_shortcut_keeps_the_gain_on_the_neuron():
    rng = np.random.default_rng(2)
    before = Graph(
        (
            n.Input("image", (), shape=(16,)),
            n.Linear("fc1", ("image",), weight=dyadic(rng, (8, 16), -0.5, 0.6)),
            n.Neuron("pre", ("fc1",), vth=0.5, reset_amount=1.0),
            n.Linear("fc2", ("pre",), weight=dyadic(rng, (8, 8), -0.5, 0.8)),
            # Residual: the spikes of `pre` add unweighted; no weight can take 1/k.
            n.Neuron("n", ("fc2", "pre"), vth=0.4, reset="subtract", reset_amount=0.4,
                     **n.decay_fields("decay_divide_input", 2.0)),  # fmt: skip
            n.Linear("fc3", ("n",), weight=dyadic(rng, (3, 8), -1, 1)),
            n.Accumulator("out", ("fc3",)),
        ),
        timesteps=6,
    )
    after = FoldInputGain.run(before, _ctx(images()))
    node = after.node("n")
    assert (node.charge, node.gain) == ("affine", 0.5) and after.node("fc2") is before.node("fc2")
    result = FoldInputGain.check(before, after, _ctx(images(32)))
    assert result.ok and result.metrics["kept_on_neuron"] == {"n": 0.5}


def test_boundary_inputs_at_threshold():
    """decay_input: H = (x - 0) / 2 against vth 0.25: x = 0.5 - ulp, 0.5, 0.5 + ulp; folded: W/2 @ x."""
    half = np.float32(0.5)
    x = np.array([[np.nextafter(half, np.float32(0)), half, np.nextafter(half, np.float32(1))]], np.float32)
    before = Graph(
        (
            n.Input("image", (), shape=(3,)),
            n.Linear("fc", ("image",), weight=np.eye(3, dtype=np.float32)),
            n.Neuron("n", ("fc",), vth=0.25, reset="zero", **n.decay_fields("decay_divide_input", 2.0)),
            n.Accumulator("out", ("n",), readout="spike_count"),
        ),
        timesteps=1,
    )
    after = FoldInputGain.run(before, _ctx(x))
    ref, out = run_float(before, x, record=True), run_float(after, x, record=True)
    assert ref.spikes["n"][0, 0].tolist() == out.spikes["n"][0, 0].tolist() == [0, 1, 1]
    assert FoldInputGain.check(before, after, _ctx(x)).ok


def test_a_decay_charge_with_v_reset_needs_the_shift_first():
    graph = variant_graph(CASES_BY_NAME["sj_lif_decay_input_hard_v_reset"].neuron)
    with pytest.raises(PassError, match="run ShiftResetToZero before FoldInputGain"):
        FoldInputGain.run(graph, _ctx(images()))
