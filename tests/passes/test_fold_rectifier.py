"""FoldRectifierIntoThreshold: vth -> phi^-1(vth), spike-exact contract up to float32 near-ties."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import Accumulator, Conv2d, Graph, Input, Linear, Neuron, validate
from inflor_deploy.nn.mpr import phi_inverse_scalar
from inflor_deploy.passes.base import ContractViolation, PassContext, PassError
from inflor_deploy.passes.fold_rectifier import FoldRectifierIntoThreshold, tie_band
from inflor_deploy.passes.pipeline import run_pipeline
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.targets import load_target

UNIT = 1 / 64


def _ctx(graph, probe=None):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph) if probe is None else probe)


def _currents_graph(currents, vth, timesteps=1):
    """With an all-ones (1, 1, n) image, neuron i's membrane is exactly currents[i] at t = 0."""
    k = len(currents)
    return Graph(
        (
            Input("image", (), shape=(1, 1, k)),
            Linear("fc1", ("image",), weight=np.diag(currents).astype(np.float32)),
            Neuron("neuron", ("fc1",), vth=vth, mpr=True),
            Linear("fc2", ("neuron",), weight=np.ones((2, k), np.float32)),
            Accumulator("readout", ("fc2",)),
        ),
        timesteps=timesteps,
    )


def _random_graph(vth=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return Graph(
        (
            Input("image", (), shape=(1, 4, 4)),
            Conv2d("conv", ("image",), weight=rng.normal(0.3, 0.5, (4, 1, 3, 3)).astype(np.float32),
                   padding=(1, 1)),
            Neuron("n1", ("conv",), vth=vth, mpr=True),
            Linear("fc1", ("n1",), weight=rng.normal(0, 0.2, (16, 64)).astype(np.float32)),
            Neuron("n2", ("fc1",), vth=vth, mpr=True, reset="zero"),
            Linear("fc2", ("n2",), weight=rng.normal(size=(3, 16)).astype(np.float32)),
            Neuron("plain", ("fc2",), vth=0.3),  # no MPR: left alone
            Linear("fc3", ("plain",), weight=np.ones((2, 3), np.float32)),
            Accumulator("readout", ("fc3",)),
        ),
        timesteps=4,
    )  # fmt: skip


def test_thresholds_fold_and_mpr_is_removed():
    before = _random_graph(vth=0.3)
    after = FoldRectifierIntoThreshold.run(before, _ctx(before))
    validate(after)
    for name in ("n1", "n2"):
        neuron = after.node(name)
        assert neuron.mpr is False
        assert neuron.vth == phi_inverse_scalar(0.3)
        assert neuron.reset == before.node(name).reset
    assert after.node("plain") is before.node("plain")
    assert before.node("n1").mpr is True  # pure


def test_paper_threshold_folds_to_exactly_one_half():
    before = _currents_graph([0.25], vth=0.5)
    assert FoldRectifierIntoThreshold.run(before, _ctx(before)).node("neuron").vth == 0.5


def test_contract_is_spike_exact_on_probe():
    before = _random_graph(vth=0.3)
    ctx = _ctx(before, make_probe(before, count=16))
    result = FoldRectifierIntoThreshold.check(before, FoldRectifierIntoThreshold.run(before, ctx), ctx)
    assert result.ok, result.summary
    assert result.kind == "spike-exact"
    assert result.metrics["unexplained"] == 0
    assert result.metrics["folded_thresholds"]["n1"] == {"vth": 0.3, "folded": phi_inverse_scalar(0.3)}


@pytest.mark.parametrize("vth", [0.5, 1.0])  # phi^-1 is exact at both: 1/2 and 1
def test_threshold_boundaries_in_exact_units(vth):
    theta = phi_inverse_scalar(vth)
    currents = [theta - UNIT, theta, theta + UNIT]
    before = _currents_graph(currents, vth)
    ones = np.ones((1, 1, 1, 3), np.float32)
    after = FoldRectifierIntoThreshold.run(before, _ctx(before, ones))
    assert after.node("neuron").vth == theta
    for graph in (before, after):
        run = run_float(graph, ones, record=True)
        np.testing.assert_array_equal(run.membranes["neuron"][0, 0], np.float32(currents))
        np.testing.assert_array_equal(run.spikes["neuron"][0, 0], [0, 1, 1])  # fires at >= threshold
    result = FoldRectifierIntoThreshold.check(before, after, _ctx(before, ones))
    assert result.ok and result.metrics["spike_mismatches"] == 0


def test_a_float32_near_tie_is_counted_not_failed():
    # Just below h = 1, phi's middle branch is 1 - 0.3 * (1 - h): for h = 1 - 2^-23 that is
    # within half an ulp of 1 and rounds to 1.0 in float32, so MPR fires and h >= 1 does not.
    h = 1.0 - 2.0**-23
    before = _currents_graph([h, 0.75, 1.25], vth=1.0, timesteps=2)
    ones = np.ones((1, 1, 1, 3), np.float32)
    ctx = _ctx(before, ones)
    after = FoldRectifierIntoThreshold.run(before, ctx)
    fired = run_float(before, ones, record=True).spikes["neuron"][0, 0]
    assert list(fired) == [1, 0, 1], "phi(1 - 2^-23) no longer rounds to 1.0 in float32 here"
    assert abs(h - 1.0) <= tie_band(before.node("neuron"))
    result = FoldRectifierIntoThreshold.check(before, after, ctx)
    assert result.ok, result.summary
    assert result.metrics["near_ties"] == 1 and result.metrics["unexplained"] == 0
    # The tied train's next step differs too (its reset differed): excused, counted.
    assert result.metrics["spike_mismatches"] == 1 + result.metrics["after_first"]


@pytest.mark.parametrize("vth", [0.001, 0.01, 0.5, 2.0, 10.0])
def test_every_float32_mismatch_lies_inside_the_tie_band_for_small_and_large_thresholds(vth):
    import torch

    from inflor_deploy.nn.mpr import phi
    from inflor_deploy.passes.fold_rectifier import _slope

    theta = phi_inverse_scalar(vth)
    rng = np.random.default_rng(0)
    near = theta + rng.uniform(-1, 1, 100_000) * 2e-5 * max(theta, 1e-3)
    ulps = (np.float32(theta).view(np.int32) + np.arange(-4000, 4001, dtype=np.int32)).view(np.float32)
    h = np.concatenate([near.astype(np.float32), ulps])
    # The model's decision (phi in float32, vth cast to float32) against the folded one.
    mpr = (phi(torch.from_numpy(h)) - vth >= 0).numpy()
    folded = h >= np.float32(theta)
    distance = np.abs(h[mpr != folded].astype(np.float64) - theta)
    band = tie_band(Neuron("neuron", ("x",), vth=vth, mpr=True))
    assert distance.max(initial=0) <= band
    assert band <= 1e-5 * max(theta, 1.0), "the band must stay a rounding band, not a tolerance"
    if vth <= 0.01:
        # phi's float32 error (a few ulps of 1/2 in the middle branch) dominates: a band made of
        # ulp(theta) and ulp(vth) alone misses real ties.
        ulp_only = 4 * (np.spacing(np.float32(theta)) + np.spacing(np.float32(vth)) / _slope(theta))
        assert distance.max() > ulp_only


def _broken_run(graph, ctx):
    """A wrong fold: drops MPR but keeps vth (right only for vth = 1/2)."""
    return graph.replace_nodes(
        dataclasses.replace(x, mpr=False) if isinstance(x, Neuron) else x for x in graph
    )


def test_contract_catches_a_broken_fold():
    vth = 0.3  # phi^-1(0.3) ~ 0.373: currents in [0.3, 0.373) fire only without MPR
    before = _currents_graph([0.25, 0.34375, 0.5], vth=vth)
    ones = np.ones((1, 1, 1, 3), np.float32)
    ctx = _ctx(before, ones)
    result = FoldRectifierIntoThreshold.check(before, _broken_run(before, ctx), ctx)
    assert not result.ok
    divergence = result.first_divergence
    assert divergence["layer"] == "neuron" and divergence["timestep"] == 0
    assert divergence["neuron"] == [1] and divergence["expected"] == 0 and divergence["actual"] == 1
    assert divergence["threshold"] == phi_inverse_scalar(vth)


def test_pipeline_raises_on_a_broken_fold():
    before = _random_graph(vth=0.3)
    broken = dataclasses.replace(FoldRectifierIntoThreshold, run=_broken_run)
    message = r"FoldRectifierIntoThreshold broke its spike-exact.*first divergence: layer="
    with pytest.raises(ContractViolation, match=message):
        run_pipeline(before, [broken], _ctx(before, make_probe(before, count=16)))


def test_non_positive_threshold_raises():
    graph = _currents_graph([0.25], vth=0.5)
    bad = graph.replace_nodes(dataclasses.replace(x, vth=0.0) if isinstance(x, Neuron) else x for x in graph)
    with pytest.raises(PassError, match="neuron 'neuron': threshold 0.0 must be > 0"):
        FoldRectifierIntoThreshold.run(bad, _ctx(graph))


def test_per_channel_thresholds_fold_channel_by_channel():
    from tests.neuron_cases import images, variant_graph

    vth = np.linspace(0.2, 1.4, 24)
    before = variant_graph(dict(vth=vth, reset="subtract", mpr=True))
    after = FoldRectifierIntoThreshold.run(before, _ctx(before, images(16)))
    folded = after.node("n").vth
    assert folded.shape == (24,) and not after.node("n").mpr
    np.testing.assert_array_equal(folded, [phi_inverse_scalar(v) for v in vth])
    result = FoldRectifierIntoThreshold.check(before, after, _ctx(before, images(16)))
    assert result.ok and result.metrics["unexplained"] == 0
    assert result.metrics["folded_thresholds"]["n"]["vth"] == vth.tolist()
