"""QuantizeFixedPoint on tiny hand-built graphs: structure, boundaries, headroom, preconditions."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.passes.base import PassContext, PassError, QuantizationOptions
from inflor_deploy.passes.quantize import A_LIMIT, V_LIMIT_WEIGHT_UNITS, QuantizeFixedPoint, quantize_with_report
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.backends.sim.int_reference import run_aligned
from inflor_deploy.targets import load_target

TARGET = load_target("loihi2-sim")


def _ctx(probe, **options):
    return PassContext(target=TARGET, probe=probe, quantization=QuantizationOptions(**options))


def single_neuron(bias: float, vth: float = 0.5, timesteps: int = 1) -> Graph:
    """image (1 value) -> Linear w=0.5, bias -> SRIF(vth, reset 1) -> Linear 1.0 -> accumulator."""
    return Graph(
        nodes=(
            n.Input("image", (), shape=(1, 1, 1)),
            n.Linear("fc1", ("image",), weight=np.array([[0.5]], np.float32), bias=np.array([bias], np.float32)),
            n.Neuron("n1", ("fc1",), vth=vth, reset="subtract", reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.array([[1.0]], np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=timesteps,
        name="single",
    )


@pytest.mark.parametrize("bias_units, fires", [(-1, False), (0, True), (1, True)])
def test_threshold_boundary_in_integer_units(bias_units, fires):
    # Scale: the weight 0.5 fills the dense range, s = 254 / 0.5 = 508, so the
    # threshold 0.5 is theta = 254 weight units and one bias unit is 1/508.
    # With input 1 the membrane is 254 + bias_units: theta-1, theta, theta+1.
    graph = single_neuron(bias=bias_units / 508)
    image = np.ones((1, 1, 1, 1), np.float32)
    fixed, report = quantize_with_report(graph, _ctx(image, input_grade_scale=1.0))
    validate(fixed)
    neuron = fixed.node("n1")
    assert report[0]["scale"] == pytest.approx(508) and report[0]["scale_limited_by"] == "fill"
    assert neuron.vth == 253 and neuron.reset_mant == 508  # hardware compares v > 253 << 6
    assert int(neuron.bias_mant[0]) == bias_units and neuron.bias_exp == 6
    assert fixed.node("fc1").weight.tolist() == [[254]]
    run = run_aligned(fixed, image, record=True)
    assert bool(run.spikes["n1"][0, 0, 0]) is fires
    expected_v = (254 + bias_units - (508 if fires else 0)) * 64  # v after the soft reset
    assert int(run.voltages["n1"][0, 0, 0]) == expected_v
    assert bool(run_float(graph, image, record=True).spikes["n1"][0, 0, 0]) is fires


def test_structure_weight_representation_and_input_grades():
    rng = np.random.default_rng(0)
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(2, 4, 4)),
            n.Conv2d("conv", ("image",), weight=rng.normal(0, 0.3, (3, 2, 3, 3)).astype(np.float32),
                     bias=rng.normal(0, 0.1, 3).astype(np.float32), padding=(1, 1)),
            n.Neuron("n1", ("conv",), vth=0.5, reset_amount=1.0),
            n.Linear("fc", ("n1",), weight=rng.normal(0, 0.2, (5, 48)).astype(np.float32), bias=None),
            n.Neuron("n2", ("fc",), vth=0.5, reset="zero", tau=0.75),
            n.Linear("out_fc", ("n2",), weight=rng.normal(0, 0.5, (4, 5)).astype(np.float32), bias=None),
            n.Accumulator("out", ("out_fc",)),
        ),
        timesteps=3,
    )
    fixed, report = quantize_with_report(graph, _ctx(rng.random((4, 2, 4, 4))))
    validate(fixed)
    assert fixed.input.grade_scale == 255.0
    conv, fc = fixed.node("conv"), fixed.node("fc")
    assert conv.kind == "conv" and conv.weight.dtype == np.int32 and conv.padding == (1, 1)
    assert conv.weight.min() >= -128 and conv.weight.max() <= 127
    # The largest weight lands where the layer's scale puts it (input grades: 1/255 per unit).
    scale = report[0]["scale"]
    assert np.abs(conv.weight).max() == round(scale * float(np.abs(graph.node("conv").weight).max()) / 255)
    assert fc.kind == "dense" and np.all(fc.weight % 2 == 0) and fc.weight.min() >= -256 and fc.weight.max() <= 254
    n2 = fixed.node("n2")
    assert n2.reset == "zero" and n2.dv == 1024  # tau 0.75 = (4096 - 1024) / 4096
    assert [type(x).__name__ for x in fixed] == [
        "Input", "FixedPointSynapse", "FixedPointNeuron", "FixedPointSynapse", "FixedPointNeuron",
        "FixedPointSynapse", "FixedPointAccumulator",
    ]  # fmt: skip
    result = QuantizeFixedPoint.check(graph, fixed, _ctx(rng.random((4, 2, 4, 4))))
    assert result.ok and result.kind == "statistical" and set(result.metrics["spike_agreement"]) == {"n1", "n2"}


def test_headroom_limits_the_scale_so_u_cannot_wrap():
    fan_in = 2000  # at fill scale 508 the worst case is 2000 * 254 = 508000 > 2^17
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(fan_in,)),
            n.Linear("fc1", ("image",), weight=np.full((1, fan_in), 0.5, np.float32), bias=None),
            n.Neuron("n1", ("fc1",), vth=400.0, reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 1), np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=2,
    )
    worst = np.ones((1, fan_in), np.float32)
    fixed, report = quantize_with_report(graph, _ctx(worst, input_grade_scale=1.0))
    assert report[0]["scale_limited_by"] == "u_wrap" and report[0]["u_bound"] <= A_LIMIT
    run = run_aligned(fixed, worst)
    assert run.u_wraps["n1"] == 0


def test_v_saturation_is_flagged_refused_or_avoided():
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(600,)),
            n.Linear("fc1", ("image",), weight=np.full((1, 600), 0.5, np.float32), bias=None),
            n.Neuron("n1", ("fc1",), vth=1000.0, reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 1), np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=8,
    )
    probe = np.ones((1, 600), np.float32)
    _, report = quantize_with_report(graph, _ctx(probe, input_grade_scale=1.0))
    assert report[0]["can_saturate_v"]
    with pytest.raises(PassError, match="'n1': v can saturate"):
        quantize_with_report(graph, _ctx(probe, input_grade_scale=1.0, overflow="error"))
    fixed, report = quantize_with_report(graph, _ctx(probe, input_grade_scale=1.0, headroom="uv"))
    assert not report[0]["can_saturate_v"] and report[0]["scale_limited_by"] == "v_saturation"
    assert run_aligned(fixed, probe).v_saturations["n1"] == 0


def _inhibited_then_excited(timesteps: int = 6) -> Graph:
    """A sequence input -> Linear 1.0 -> IF (vth 0.5): the membrane is pushed far below zero, then recovers."""
    return Graph(
        nodes=(
            n.Input("events", (), shape=(1,), encoding="sequence", value_range=(-1000.0, 1000.0), pixel_levels=None),
            n.Linear("fc1", ("events",), weight=np.ones((1, 1), np.float32), bias=None),
            n.Neuron("n1", ("fc1",), vth=0.5, reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 1), np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=timesteps,
    )


def test_the_probe_guard_prevents_a_saturation_that_changes_a_spike():
    # Three steps of -1000 take H to -3000; three of +1000 bring it back to 0: no spike. Clamped at the
    # hardware's limit (about -2000 float units at the fill scale), H recovers early and fires at step 6.
    graph = _inhibited_then_excited()
    events = np.array([[-1000] * 3 + [1000] * 3], np.float32).reshape(1, 6, 1)
    float_spikes = run_float(graph, events, record=True).spikes["n1"]
    assert not float_spikes.any()
    unguarded, report_u = quantize_with_report(graph, _ctx(events, headroom="u"))
    run_u = run_aligned(unguarded, events, record=True)
    assert run_u.v_saturations["n1"] > 0 and run_u.spikes["n1"].any()  # the saturation made a spike
    guarded, report = quantize_with_report(graph, _ctx(events))  # headroom="probe", the default
    assert report[0]["scale_limited_by"] == "v_probe" and report[0]["scale"] < report_u[0]["scale"]
    # The range the spikes need is the whole excursion (clamping anywhere below 3000 changes the spike).
    assert 2 * report[0]["v_needed"] <= V_LIMIT_WEIGHT_UNITS and report[0]["v_needed"] >= 2999 * report[0]["scale"]
    run = run_aligned(guarded, events, record=True)
    assert run.v_saturations["n1"] == 0
    np.testing.assert_array_equal(run.spikes["n1"], float_spikes)


def test_the_probe_guard_leaves_a_harmless_saturation_at_the_fill_scale():
    # Steady inhibition: H falls to -6000 and saturates, but a neuron below zero never fires either way.
    graph = _inhibited_then_excited()
    events = np.full((1, 6, 1), -1000, np.float32)
    _, report_u = quantize_with_report(graph, _ctx(events, headroom="u"))
    guarded, report = quantize_with_report(graph, _ctx(events))
    assert report[0]["scale"] == report_u[0]["scale"] and report[0]["scale_limited_by"] != "v_probe"
    assert report[0]["v_needed"] < 0.01 * 6000 * report[0]["scale"]  # far below the peak |H|
    run = run_aligned(guarded, events, record=True)
    assert run.v_saturations["n1"] > 0 and not run.spikes["n1"].any()


def test_preconditions_name_the_missing_pass():
    graph = single_neuron(0.0)
    probe = np.ones((1, 1, 1, 1), np.float32)
    mpr = graph.replace_nodes([dataclasses.replace(x, mpr=True) if x.name == "n1" else x for x in graph])
    with pytest.raises(PassError, match="FoldRectifierIntoThreshold"):
        QuantizeFixedPoint.run(mpr, _ctx(probe))
    unresolved = graph.replace_nodes([dataclasses.replace(x, reset_amount=None) if x.name == "n1" else x for x in graph])
    with pytest.raises(PassError, match="SoftResetToSubtractive"):
        QuantizeFixedPoint.run(unresolved, _ctx(probe))
    tiny = single_neuron(0.0, vth=1e-4)
    with pytest.raises(PassError, match="threshold 0.0001 rounds to 0"):
        QuantizeFixedPoint.run(tiny, _ctx(probe, input_grade_scale=1.0))
    with_bn = Graph(
        nodes=(
            n.Input("image", (), shape=(1, 1, 1)),
            n.Linear("fc1", ("image",), weight=np.array([[0.5]], np.float32)),
            n.BatchNorm("bn", ("fc1",), gamma=np.ones(1, np.float32), beta=np.zeros(1, np.float32),
                        mean=np.zeros(1, np.float32), var=np.ones(1, np.float32)),
            n.Neuron("n1", ("bn",), reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 1), np.float32)),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=1,
    )
    with pytest.raises(PassError, match="FoldBatchNorm"):
        QuantizeFixedPoint.run(with_bn, _ctx(probe))


def test_signed_input_ranges_are_planned_for_by_their_extremes():
    # Mixed-sign weights on inputs in [-2, 0.5]: the worst current takes each weight at the end of the
    # range that pushes it furthest. The old planning (inputs >= 0) would miss the negative end by 4x.
    weight = np.array([[1.0, -1.0, 0.5, -0.25]], np.float32)
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(4,), value_range=(-2.0, 0.5), pixel_levels=None),
            n.Linear("fc1", ("image",), weight=np.repeat(weight, 3, axis=0), bias=None),
            n.Neuron("n1", ("fc1",), vth=0.5, reset_amount=1.0),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 3), np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=2,
    )
    fixed, report = quantize_with_report(graph, _ctx(np.zeros((1, 4), np.float32), headroom="uv"))
    # Default grade scale for a non-pixel range: 255 / max(|lo|, |hi|) = 127.5; ends -255 and 64.
    assert fixed.input.grade_scale == 127.5
    w = fixed.node("fc1").weight[0].astype(np.int64)
    x_lo, x_hi = -255, 64  # round(-2 * 127.5), round(0.5 * 127.5) (63.75 -> 64)
    brute = [int(w @ np.array(x)) for x in np.array(np.meshgrid(*[[x_lo, x_hi]] * 4)).reshape(4, -1).T]
    assert report[0]["u_bound"] == max(max(brute), -min(brute)) and not report[0]["wrap_possible"]
    # The worst inputs of either sign run without a wrap or a saturation.
    worst = np.array([[0.5, -2.0, 0.5, -2.0], [-2.0, 0.5, -2.0, 0.5]], np.float32)
    run = run_aligned(fixed, worst)
    assert run.u_wraps["n1"] == 0 and run.v_saturations["n1"] == 0


def test_default_grade_scale_follows_the_declared_input():
    from inflor_deploy.passes.quantize import default_grade_scale

    assert default_grade_scale(n.Input("x", (), shape=(1,))) == 255.0  # pixels in [0, 1]
    assert default_grade_scale(n.Input("x", (), shape=(1,), value_range=(0.0, 255.0), pixel_levels=1)) == 1.0
    assert default_grade_scale(n.Input("x", (), shape=(1,), value_range=(-4.0, 2.0), pixel_levels=None)) == 255 / 4


def test_an_input_range_beyond_the_graded_payload_is_refused():
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(1,), value_range=(0.0, 2.0**40), pixel_levels=None),
            n.Linear("fc", ("image",), weight=np.ones((1, 1), np.float32)),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=1,
    )
    with pytest.raises(PassError, match="32-bit graded payload"):
        quantize_with_report(graph, _ctx(np.zeros((1, 1), np.float32), input_grade_scale=1.0))


def test_the_graded_payload_is_the_targets(tmp_path):
    """A target whose graded spikes carry 16 bits refuses what a 32-bit one takes (targets are data)."""
    from inflor_deploy.targets import load_target

    text = TARGET.path.read_text().replace("graded_spike_bits = 32", "graded_spike_bits = 16")
    (tmp_path / "narrow.toml").write_text(text.replace('name = "loihi2-sim"', 'name = "narrow"'))
    narrow = load_target(tmp_path / "narrow.toml")
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(1,), value_range=(0.0, 255.0), pixel_levels=1),
            n.Linear("fc", ("image",), weight=np.ones((1, 1), np.float32)),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=1,
    )
    probe = np.zeros((1, 1), np.float32)
    for grades, fits in ((128.0, True), (129.0, False)):  # 255 * 128 = 32 640 < 2^15 <= 255 * 129 = 32 895
        ctx = PassContext(target=narrow, probe=probe, quantization=QuantizationOptions(input_grade_scale=grades))
        if fits:
            QuantizeFixedPoint.run(graph, ctx)
        else:
            with pytest.raises(PassError, match=r"reaches 32895, beyond the 16-bit graded payload"):
                QuantizeFixedPoint.run(graph, ctx)


def test_threshold_rounding_beyond_the_bound_warns_or_is_refused():
    from inflor_deploy.passes.quantize import MAX_THRESHOLD_ROUNDING

    image = np.ones((1, 1, 1, 1), np.float32)
    # Scale 508 (the weight 0.5 fills the dense range): vth * 508 = 0.86 rounds to theta = 1, 16 % off.
    graph = single_neuron(bias=0.0, vth=0.86 / 508)
    fixed, report = quantize_with_report(graph, _ctx(image, input_grade_scale=1.0))
    row = report[0]
    assert fixed.node("n1").vth == 0 and row["threshold"] == 1  # theta = 1, compared as v > 0
    assert row["threshold_error"] == pytest.approx(0.14 / 0.86) and row["rounding_bound"] == MAX_THRESHOLD_ROUNDING
    assert len(row["rounding_warnings"]) == 1 and "rounds to 1 (16.3 % error, bound 1 %)" in row["rounding_warnings"][0]
    with pytest.raises(PassError, match=r"layer 'n1': threshold .* rounds to 1 \(16.3 % error.*overflow='error'"):
        quantize_with_report(graph, _ctx(image, input_grade_scale=1.0, overflow="error"))
    # A reset amount rounded as coarsely is named too.
    coarse_reset = graph.replace_nodes(
        [dataclasses.replace(x, vth=0.5, reset_amount=2.6 / 508) if x.name == "n1" else x for x in graph])
    _, report = quantize_with_report(coarse_reset, _ctx(image, input_grade_scale=1.0))
    assert [w.split(" x ")[0] for w in report[0]["rounding_warnings"]] == [f"reset amount {2.6 / 508:.6g}"]
    # Within the bound (theta = 254 exactly, reset 508): no warning, and overflow='error' compiles.
    _, report = quantize_with_report(single_neuron(bias=0.0), _ctx(image, input_grade_scale=1.0, overflow="error"))
    assert report[0]["rounding_warnings"] == [] and report[0]["threshold_error"] == 0


# --------------------------------------------------------------------------- framework neurons


@pytest.mark.parametrize("bias_units, fires_ge, fires_gt", [(-1, False, False), (0, True, False), (1, True, True)])
def test_strict_comparison_maps_to_theta_itself(bias_units, fires_ge, fires_gt):
    """'>' (snnTorch) is the hardware's own compare: vth_hw = theta; '>=' keeps theta - 1. Membrane theta-1, theta, theta+1."""
    image = np.ones((1, 1, 1, 1), np.float32)
    for compare, fires in ((">=", fires_ge), (">", fires_gt)):
        graph = single_neuron(bias=bias_units / 508)
        graph = graph.replace_nodes(dataclasses.replace(x, compare=compare) if x.name == "n1" else x for x in graph)
        fixed, report = quantize_with_report(graph, _ctx(image, input_grade_scale=1.0))
        assert fixed.node("n1").vth == (253 if compare == ">=" else 254)
        assert report[0]["compare"] == compare and report[0]["threshold"] == 254 and report[0]["threshold_exact"]
        assert bool(run_aligned(fixed, image, record=True).spikes["n1"][0, 0, 0]) is fires
        assert bool(run_float(graph, image, record=True).spikes["n1"][0, 0, 0]) is fires


def test_a_leaky_non_strict_threshold_is_reported_inexact():
    graph = single_neuron(bias=0.0)
    leaky = graph.replace_nodes(dataclasses.replace(x, tau=0.75) if x.name == "n1" else x for x in graph)
    _, report = quantize_with_report(leaky, _ctx(np.ones((1, 1, 1, 1), np.float32)))
    assert report[0]["dv"] == 1024 and report[0]["threshold_exact"] is False
    strict = leaky.replace_nodes(dataclasses.replace(x, compare=">") if x.name == "n1" else x for x in leaky)
    assert quantize_with_report(strict, _ctx(np.ones((1, 1, 1, 1), np.float32)))[1][0]["threshold_exact"] is True


def test_per_channel_thresholds_and_amounts_round_per_channel_at_one_scale():
    from tests.neuron_cases import conv_images, conv_per_channel_graph
    from inflor_deploy.passes.pipeline import FLOAT_PIPELINE, run_pipeline

    ctx = _ctx(conv_images(4))
    float_graph = run_pipeline(conv_per_channel_graph(), FLOAT_PIPELINE, ctx).graph
    fixed, report = quantize_with_report(float_graph, ctx)
    rows = {r["layer"]: r for r in report}
    for name in ("hard_pc", "snn_pc"):
        node, source = fixed.node(name), float_graph.node(name)
        theta = np.rint(source.vth * node.scale).astype(np.int64)
        expected_hw = theta if source.compare == ">" else theta - 1
        np.testing.assert_array_equal(node.vth, expected_hw)
        assert rows[name]["threshold"] == theta.tolist()
    snn = fixed.node("snn_pc")
    np.testing.assert_array_equal(snn.reset_mant, np.rint(float_graph.node("snn_pc").reset_amount * snn.scale))
    assert fixed.node("none").reset == "none" and fixed.node("none").reset_mant == 0
    assert rows["none"]["reset"] == "none" and fixed.node("hard").vth == rows["hard"]["threshold"] - 1


def test_a_gain_left_on_a_neuron_scales_its_identity_shortcut_too():
    """H = g (W x + s): the shortcut's identity weights carry g, in the same scale as W."""
    rng = np.random.default_rng(0)
    graph = Graph(
        (
            n.Input("image", (), shape=(4,)),
            n.Linear("fc1", ("image",), weight=rng.uniform(0.2, 1, (4, 4)).astype(np.float32)),
            n.Neuron("pre", ("fc1",), vth=0.5, reset_amount=1.0),
            n.Linear("fc2", ("pre",), weight=np.full((4, 4), 0.5, np.float32)),
            n.Neuron("n", ("fc2", "pre"), vth=0.5, reset_amount=0.5, gain=0.5),
            n.Linear("fc3", ("n",), weight=np.ones((2, 4), np.float32)),
            n.Accumulator("out", ("fc3",)),
        ),
        timesteps=3,
    )
    fixed, report = quantize_with_report(graph, _ctx(np.ones((1, 4), np.float32)))
    scale = fixed.node("n").scale
    # Effective weights: fc2 0.5 * g = 0.25 (the smallest: it fills 254 at exponent 0), shortcut 1 * g = 0.5,
    # which lands exactly on 508 = 254 << 1.
    assert scale == pytest.approx(254 / 0.25) and fixed.node("fc2").weight.max() == 254
    shortcut = fixed.node("n.shortcut")
    assert shortcut.weight.tolist() == (np.eye(4, dtype=int) * 254).tolist() and shortcut.weight_exp == 1
    assert {r["layer"]: r["input_gain"] for r in report if "input_gain" in r}["n"] == 0.5


def test_readouts_keep_their_kind_and_leak():
    from tests.neuron_cases import images, variant_graph

    for readout, tau, dv in (("mean_current", 1.0, 0), ("mean_membrane", 0.875, 512), ("spike_count", 1.0, 0)):
        graph = variant_graph(dict(vth=0.5, reset_amount=1.0), readout=readout, readout_tau=tau)
        fixed, report = quantize_with_report(graph, _ctx(images(4)))
        assert (fixed.output.readout, fixed.output.dv) == (readout, dv) and report[-1]["readout"] == readout
    # A count's identity synapse: one weight unit of the scale per spike, an integer.
    out = fixed.output
    weights = fixed.node("out.shortcut").weight
    assert np.array_equal(weights, np.eye(24, dtype=np.int32) * int(round(out.scale)))


def test_delayed_resets_and_v_reset_must_be_normalized_first():
    graph = single_neuron(bias=0.0)
    for changes, message in (
        (dict(reset_timing="next_step", compare=">"), "run DelayedResetToSameStep before QuantizeFixedPoint"),
        (dict(v_reset=0.25, reset="zero"), "run ShiftResetToZero before QuantizeFixedPoint"),
    ):
        bad = graph.replace_nodes(dataclasses.replace(x, **changes) if x.name == "n1" else x for x in graph)
        with pytest.raises(PassError, match=message):
            QuantizeFixedPoint.run(bad, _ctx(np.ones((1, 1, 1, 1), np.float32)))


# --------------------------------------------------------------------------- LIF thresholds (issue 12)


def _bias_scan_layer(vth_hw: int, dv: int, v_values: np.ndarray) -> Graph:
    """One neuron per v value: no input current, bias_mant = v at bias_exp 0, so v after step 0 is exactly v."""
    count = len(v_values)
    return Graph(
        nodes=(
            n.Input("image", (), shape=(1,), grade_scale=1.0),
            n.FixedPointSynapse("zero", ("image",), kind="dense", weight=np.zeros((count, 1), np.int32)),
            n.FixedPointNeuron("lif", ("zero",), shape=(count,), vth=vth_hw, reset="zero", du=4095, dv=dv,
                               bias_mant=v_values.astype(np.int32), bias_exp=0),
            n.FixedPointSynapse("read", ("lif",), kind="dense", weight=np.zeros((1, count), np.int32)),
            n.FixedPointAccumulator("out", ("read",), shape=(1,), bias_mant=np.zeros(1, np.int32)),
        ),
        timesteps=1,
    )


def test_a_leaky_threshold_is_the_nearest_representable_boundary_at_v_in_theta_minus_64_to_theta():
    """With a leak v is not a multiple of 64: the hardware fires on v >= 64 vth_hw + 1 for any vth_hw.

    The float neuron fires on v >= 64 theta (theta = s * vth = 254 here). The old mapping vth_hw = theta - 1
    fired on the 63 values v = 64 theta - 63 .. 64 theta - 1 too (early); the nearest boundary,
    vth_hw = theta, differs from it at v = 64 theta alone (one v unit late), and the report says so.
    """
    leaky = single_neuron(bias=0.0)
    leaky = leaky.replace_nodes(dataclasses.replace(x, tau=0.75) if x.name == "n1" else x for x in leaky)
    fixed, report = quantize_with_report(leaky, _ctx(np.ones((1, 1, 1, 1), np.float32), input_grade_scale=1.0))
    theta, node, row = 254, fixed.node("n1"), report[0]
    assert node.scale * 0.5 == theta and node.dv == 1024
    assert node.vth == theta and row["threshold_exact"] is False and row["v_granularity"] == 1
    assert row["threshold_effective"] == theta + 1 / 64 and row["threshold_offset_v"] == 1.0
    v = np.arange(64 * theta - 64, 64 * theta + 2)
    scan = _bias_scan_layer(node.vth, node.dv, v)
    fired = run_aligned(scan, np.zeros((1, 1), np.float32), record=True).spikes["lif"][0, 0].astype(bool)
    np.testing.assert_array_equal(fired, v >= 64 * theta + 1)
    assert list(v[fired != (v >= 64 * theta)]) == [64 * theta]  # the float rule v >= 64 theta, missed by one unit
    old = run_aligned(_bias_scan_layer(theta - 1, node.dv, v), np.zeros((1, 1), np.float32), record=True)
    assert int((old.spikes["lif"][0, 0].astype(bool) != (v >= 64 * theta)).sum()) == 63  # theta - 1 fired early


def test_a_non_leaky_threshold_is_exact_on_the_64_grid():
    """Without a leak v is a multiple of 64 and v > (theta - 1) << 6 is exactly v >= theta << 6."""
    image = np.ones((1, 1, 1, 1), np.float32)
    fixed, report = quantize_with_report(single_neuron(bias=0.0), _ctx(image, input_grade_scale=1.0))
    node, theta = fixed.node("n1"), 254
    assert node.vth == theta - 1 and report[0]["threshold_exact"] and report[0]["threshold_offset_v"] == 0
    v = np.arange(64 * theta - 64, 64 * theta + 65, 64)  # the values v can take
    fired = run_aligned(_bias_scan_layer(node.vth, 0, v), np.zeros((1, 1), np.float32), record=True)
    np.testing.assert_array_equal(fired.spikes["lif"][0, 0].astype(bool), v >= 64 * theta)
