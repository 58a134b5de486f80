"""ShiftResetToZero: V' = V - v_reset (threshold shifts, resets go to 0), spike-exact in float32."""

import dataclasses

import numpy as np

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Graph, validate
from inflor_deploy.ir import nodes as n
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.shift_reset import ShiftResetToZero
from inflor_deploy.targets import load_target
from tests.neuron_cases import CASES_BY_NAME, images, spikingjelly, variant_graph


def _ctx(probe):
    return PassContext(target=load_target("loihi2-sim"), probe=probe)


def test_threshold_shifts_and_the_reset_goes_to_zero():
    for name, vth in (("sj_if_hard_v_reset", 0.5), ("sj_if_hard_negative_v_reset", 0.7),
                      ("sj_lif_decay_input_hard_v_reset", 0.6 - 0.2), ("sj_plif_no_decay_input_hard", 0.9 - 0.25)):  # fmt: skip
        before = variant_graph(CASES_BY_NAME[name].neuron)
        after = ShiftResetToZero.run(before, _ctx(images()))
        validate(after)
        node = after.node("n")
        assert node.v_reset == 0.0 and node.vth == vth and node.charge == before.node("n").charge, name
        result = ShiftResetToZero.check(before, after, _ctx(images(32)))
        assert result.ok and result.kind == "spike-exact", (name, result.summary)
        assert result.metrics["unexplained"] == 0 and result.metrics["shifted"]["n"]["v_reset"] == before.node("n").v_reset


def test_boundary_inputs_at_threshold_and_a_counted_near_tie():
    """SpikingJelly IF, v_threshold 1.0, v_reset 0.5: H = 0.5 + x against 1.0; shifted, H' = x against 0.5.

    At x = 0.5 - 2^-25 SpikingJelly's float32 sum 0.5 + x rounds (to even) up to 1.0 and
    fires; the shifted neuron compares x itself and does not. The contract counts that
    as a near-tie: exact arithmetic says no spike, float32 rounding decided it.
    """
    half = np.float32(0.5)
    x = np.array([[np.nextafter(half, np.float32(0)), half, np.nextafter(half, np.float32(1))]], np.float32)
    before = Graph(
        (
            n.Input("image", (), shape=(3,)),
            n.Linear("fc", ("image",), weight=np.eye(3, dtype=np.float32)),
            n.Neuron("n", ("fc",), vth=1.0, reset="zero", v_reset=0.5),
            n.Accumulator("out", ("n",), readout="spike_count"),
        ),
        timesteps=1,
    )
    after = ShiftResetToZero.run(before, _ctx(x))
    ref, out = run_float(before, x, record=True), run_float(after, x, record=True)
    spikes, charged = spikingjelly(np.broadcast_to(x, (1, *x.shape)), v_threshold=1.0, v_reset=0.5)
    np.testing.assert_array_equal(ref.spikes["n"], spikes.astype(np.uint8))
    np.testing.assert_array_equal(ref.membranes["n"], charged)
    assert ref.spikes["n"][0, 0].tolist() == [1, 1, 1] and ref.membranes["n"][0, 0, 0] == 1.0
    assert out.spikes["n"][0, 0].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(out.membranes["n"][0, 0], x[0])
    result = ShiftResetToZero.check(before, after, _ctx(x))
    assert result.ok and result.metrics["spike_mismatches"] == 1 and result.metrics["near_ties"] == 1


def test_contract_catches_a_threshold_left_unshifted():
    before = variant_graph(CASES_BY_NAME["sj_if_hard_v_reset"].neuron)
    wrong = before.replace_nodes(dataclasses.replace(x, v_reset=0.0) if x.name == "n" else x for x in before)
    result = ShiftResetToZero.check(before, wrong, _ctx(images(32)))
    assert not result.ok and result.first_divergence["layer"] == "n"
