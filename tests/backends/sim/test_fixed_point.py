"""The fast fixed-point simulator: hand-computed traces, and bit-exact parity with the integer reference.

Parity level 2 (DESIGN.md section 2): every spike, every u and v, every
counter and the readout equal the reference's, in the aligned and the
pipelined views, for SRIF / IF / LIF models, residual nets, and a reset
interval padded to a power of two. The plan's exactness proof is checked
where it decides something (float32 vs float64 vs int64).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inflor_deploy.checkpoint import load_checkpoint
from inflor_deploy.data import load_digits
from inflor_deploy.frontends.fx import trace
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError
from inflor_deploy.nn import ModelConfig
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.pipeline import COMPILE_PIPELINE
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.backends.sim import fixed_point
from inflor_deploy.backends.sim.compare import first_divergence
from inflor_deploy.backends.sim.fixed_point import FLOAT32_EXACT, SimRun, input_range, plan, simulate
from inflor_deploy.backends.sim.int_reference import run_aligned, run_pipelined
from inflor_deploy.targets import load_target
from tests.frontends.zoo_models import images_for, randomized_model
from tests.passes.test_schedule import residual_graph
from tests.backends.sim.test_int_reference import HAND_CASES, HandCase, check_hand_case, hand_graph


def compile_graph(graph: Graph, probe: np.ndarray, target: str = "loihi2-sim") -> Graph:
    """The compile pipeline's passes, without their contracts (they are tested elsewhere)."""
    ctx = PassContext(target=load_target(target), probe=probe)
    for p in COMPILE_PIPELINE:
        graph = p.run(graph, ctx)
    return graph


def layer_order(graph: Graph) -> list[str]:
    return [x.name for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]


def assert_bit_exact(reference, sim: SimRun, graph: Graph) -> None:
    """Every recorded trace, the readout and the counters equal; a failure names the first divergence."""
    order = layer_order(graph)
    neurons = order[:-1]
    for kind, layers in (("spikes", neurons), ("voltages", order), ("currents", order)):
        ref = getattr(reference, kind)
        if ref:  # run_pipelined records no currents
            divergence = first_divergence(ref, getattr(sim, kind), layers)
            assert divergence is None, f"{kind}: {divergence}"
            assert all(getattr(sim, kind)[k].dtype == ref[k].dtype for k in layers)
    np.testing.assert_array_equal(sim.accumulator, reference.accumulator)
    assert sim.accumulator.dtype == np.int64
    assert sim.u_wraps == reference.u_wraps and sim.v_saturations == reference.v_saturations
    for name in neurons:  # the counts always collected agree with the recorded spikes
        spikes = reference.spikes[name]
        assert sim.spike_counts[name] == int(spikes.sum())
        np.testing.assert_array_equal(sim.spikes_per_sample[name], spikes.sum(axis=(0, *range(2, spikes.ndim))))


def assert_pipelined_bit_exact(graph: Graph, images: np.ndarray, precision: str = "auto") -> SimRun:
    """The pipelined simulator against run_pipelined: de-skewed traces, counters and the raw global traces."""
    reference, raw = run_pipelined(graph, images, record=True)
    sim = simulate(graph, images, view="pipelined", record=True, precision=precision)
    assert_bit_exact(reference, sim, graph)
    G = len(images) * graph.schedule.reset_interval + graph.schedule.latency + 1
    for kind in ("spikes", "voltages"):
        assert set(sim.raw[kind]) == set(raw[kind])
        for name, trace in raw[kind].items():
            assert trace.shape[0] == G
            np.testing.assert_array_equal(sim.raw[kind][name], trace, err_msg=f"raw {kind} of {name!r}")
    assert sim.pipeline_spike_counts == {k: int(v.sum()) for k, v in raw["spikes"].items()}
    assert set(sim.raw["currents"]) == set(raw["voltages"])
    return sim


# --------------------------------------------------------------------------- hand-computed traces


@pytest.mark.parametrize("precision", ["auto", "int64"])
@pytest.mark.parametrize("case", HAND_CASES, ids=lambda c: c.name)
def test_hand_computed_traces(case: HandCase, precision):
    sim = simulate(case.graph, case.images, record=True, precision=precision)
    check_hand_case(case, sim)
    assert sim.spike_counts["n"] == int(np.sum(case.spikes))


@pytest.mark.parametrize("case", HAND_CASES, ids=lambda c: c.name)
def test_hand_computed_traces_pipelined(case: HandCase):
    # Three copies of the sample back to back: each window, de-skewed, is the hand-computed trace.
    sim = assert_pipelined_bit_exact(case.graph, np.repeat(case.images, 3, axis=0))
    for k in range(3):
        np.testing.assert_array_equal(sim.spikes["n"][:, k], np.array(case.spikes, dtype=np.uint8))
        np.testing.assert_array_equal(sim.voltages["n"][:, k], np.array(case.voltages))
        np.testing.assert_array_equal(sim.currents["n"][:, k], np.array(case.currents))
        np.testing.assert_array_equal(sim.accumulator[k], np.array(case.accumulator))


def test_pipelined_global_trace_by_hand():
    # As tests/backends/sim/test_int_reference.py: the neuron's bias integrates before its first window (g = 1)
    # and in the tail window (g = 8, 9) as well.
    case = next(c for c in HAND_CASES if c.name == "bias_exp_6")
    sim = simulate(case.graph, case.images, view="pipelined", record=True)
    np.testing.assert_array_equal(sim.raw["voltages"]["n"][:, 0], [192, 192, 384, 576, 128, 320, 512, 192, 384])
    np.testing.assert_array_equal(sim.raw["voltages"]["acc"][:, 0], [0, 0, 0, 0, 0, 64, 64, 64, 0])
    assert sim.spike_counts == {"n": 1} and sim.pipeline_spike_counts == {"n": 1}


def test_prefix_and_tail_spikes_count_on_the_global_timeline():
    # bias_exp_3 fires from bias alone: at g = 1 (before sample 0 arrives) and in the tail window.
    # Neuron spikes per window of 6 steps: 1 1 0 1 1 0 -> 4 per sample; G = 2 * 6 + 3 = 15 steps:
    # g = 1 (prefix, t = 5 of window -1: its first step, so v = 40 -> spike), g = 2..13 (two samples),
    # g = 14, 15 (tail window, t = 0, 1: two spikes).
    case = next(c for c in HAND_CASES if c.name == "bias_exp_3")
    sim = assert_pipelined_bit_exact(case.graph, np.repeat(case.images, 2, axis=0))
    assert sim.spike_counts == {"n": 8}
    assert sim.pipeline_spike_counts == {"n": 1 + 8 + 2}


# --------------------------------------------------------------------------- the plan


def test_plan_proves_float32_for_the_bundled_model(digits_fixed, digits_images):
    p = plan(digits_fixed, digits_images)
    assert {s.dtype for s in p.synapses.values()} == {"float32"}
    assert {x.kernel for x in p.layers.values()} == {"float32"}
    assert all(s.bound <= FLOAT32_EXACT and s.prescaled for s in p.synapses.values())
    # The input synapse reads grades in [0, 255]: its worst partial sum takes every positive
    # (or every negative) weight of one output at 255.
    first = p.synapses["unit1.conv"]
    w = digits_fixed.node("unit1.conv").weight.reshape(16, -1).astype(np.int64)
    assert (first.input_min, first.input_max) == (0, 255) == p.input_range
    positive, negative = np.clip(w, 0, None).sum(1) * 255, -np.clip(w, None, 0).sum(1) * 255
    assert first.bound == max(positive.max(), negative.max())
    assert not p.layers["unit2.neuron"].can_saturate and p.layers["neuron_fc1"].can_saturate
    assert "float32" in p.summary() and p.to_dict()["layers"]["readout"]["kernel"] == "float32"


def test_plan_falls_back_where_float32_is_not_proven():
    lif = plan(next(c for c in HAND_CASES if c.name == "lif_leak_rounds_toward_zero").graph)
    assert lif.layers["n"].kernel == "int64" and "dv=1000" in lif.layers["n"].reason
    wrap = next(c for c in HAND_CASES if c.name == "u_wrap_and_v_saturation")
    p = plan(wrap.graph, wrap.images)
    assert p.input_range == (140000, 140000)
    assert p.layers["n"].kernel == "int64" and p.layers["n"].can_wrap
    assert p.synapses["w_in"].dtype == "float32" and p.synapses["w_in"].bound == 3 * 140000
    # Sums beyond 2^24 / 2^53 push the synapse to float64 / int64 (graded inputs stay within 32 bits).
    big = hand_graph([3, -1], timesteps=2, vth=5, reset="zero", grade_scale=2.0**30)
    assert plan(big, np.ones((1, 1))).synapses["w_in"].dtype == "float64"
    huge = hand_graph([2**24, -1], timesteps=2, vth=5, reset="zero", grade_scale=2.0**30)
    assert plan(huge, np.ones((1, 1))).synapses["w_in"].dtype == "int64"
    assert plan(huge, np.ones((1, 1)), precision="int64").layers["acc"].kernel == "int64"


@pytest.mark.parametrize("weights", [[3, -1, 0], [2**24, -(2**23) + 1, 0], [2**30, -(2**29), 5]])
def test_float64_and_int64_synapses_match_the_reference(weights):
    # u wraps every step and v saturates: the int64 kernel, fed by float64 sums (bound 3 * 2^30) or
    # int64 sums (bound 2^54 and 2^60); Lava's 32-bit wrap of the Dense output and its int32 a << 6
    # wrap them alike in both implementations.
    graph = hand_graph(weights, timesteps=3, vth=100, reset="subtract", reset_mant=7, grade_scale=2.0**30,
                       value_range=(-1.0, 1.0))  # fmt: skip
    images = np.array([[1.0], [0.5], [-0.25]])
    assert_bit_exact(run_aligned(graph, images, record=True), simulate(graph, images, record=True), graph)


def test_a_convolution_backend_off_the_allow_list_sums_in_int64(digits_fixed, digits_images, monkeypatch):
    # The float32 proof holds only for backends that add products; any other one (e.g. Winograd)
    # makes the convolution sum in int64 instead, still bit-exact.
    calls = []
    original = fixed_point._Synapse._int64
    monkeypatch.setattr(fixed_point, "SUMMING_CONV_BACKENDS", frozenset())
    monkeypatch.setattr(fixed_point._Synapse, "_int64", lambda self, x: calls.append(self.name) or original(self, x))
    sim = simulate(digits_fixed, digits_images, record=True)
    assert {"unit1.conv", "unit2.conv"} <= set(calls) and "fc1" not in calls
    assert_bit_exact(run_aligned(digits_fixed, digits_images, record=True), sim, digits_fixed)


def test_input_range_without_images_is_the_declared_range(digits_fixed):
    assert digits_fixed.input.value_range == (0.0, 1.0)
    assert input_range(digits_fixed) == (0, 255)
    assert input_range(digits_fixed, np.full((1, 1, 8, 8), 0.5)) == (128, 128)  # 127.5 -> 128 (half to even)
    with pytest.raises(IRError, match=r"outside the range \[0, 1\]"):
        input_range(digits_fixed, np.full((1, 1, 8, 8), -0.5))


# --------------------------------------------------------------------------- parity with the reference


@pytest.fixture(scope="module")
def digits_images():
    return load_digits("test").images[:16]


@pytest.fixture(scope="module")
def digits_fixed(digits_images):
    return compile_graph(trace(load_checkpoint(DEFAULT_MODEL).model), digits_images[:4])


@pytest.mark.parametrize("precision", ["auto", "int64"])
def test_bundled_model_aligned(digits_fixed, digits_images, precision):
    reference = run_aligned(digits_fixed, digits_images, record=True)
    sim = simulate(digits_fixed, digits_images, record=True, precision=precision)
    assert_bit_exact(reference, sim, digits_fixed)
    np.testing.assert_array_equal(sim.scores(digits_fixed), reference.scores(digits_fixed))
    assert sum(sim.spike_counts.values()) > 0


def test_bundled_model_pipelined(digits_fixed, digits_images):
    assert_pipelined_bit_exact(digits_fixed, digits_images[:3])


def test_plain_mode_equals_record_mode_in_any_batches(digits_fixed, digits_images):
    recorded = simulate(digits_fixed, digits_images, record=True)
    for view in ("aligned", "pipelined"):
        plain = simulate(digits_fixed, digits_images, view=view, batch_size=5)
        assert not plain.spikes and not plain.voltages and plain.timing.batch_size == 5
        np.testing.assert_array_equal(plain.accumulator, recorded.accumulator)
        assert plain.spike_counts == recorded.spike_counts
        for name, counts in recorded.spikes_per_sample.items():
            np.testing.assert_array_equal(plain.spikes_per_sample[name], counts)
    assert plain.raw is None and recorded.pipeline_spike_counts is None


@pytest.fixture(scope="module")
def residual_fixed():
    """A small residual net (identity shortcut delayed by one step), T = 3."""
    probe = np.random.default_rng(2).random((3, 2, 5, 5)).astype(np.float32)
    return compile_graph(residual_graph(3), probe), probe


def test_residual_net_both_views(residual_fixed):
    graph, images = residual_fixed
    assert any(s.delay for s in graph.of_type(n.FixedPointSynapse))
    assert_bit_exact(run_aligned(graph, images, record=True), simulate(graph, images, record=True), graph)
    assert_pipelined_bit_exact(graph, images)
    assert_pipelined_bit_exact(graph, images[:2], precision="int64")


@pytest.fixture(scope="module")
def resnet20_fixed():
    """ResNet20 (identity and projection shortcuts, diagonal 1x1 synapses) at 8x8, T = 2, firing."""
    config = ModelConfig(arch="resnet20", in_channels=3, image_size=8, timesteps=2)
    images = images_for(config, 2)
    return compile_graph(trace(randomized_model(config, images)), images), images


def test_resnet20_both_views(resnet20_fixed):
    graph, images = resnet20_fixed
    p = plan(graph, images)
    assert any(s.op == "diagonal" for s in p.synapses.values())
    reference = run_aligned(graph, images, record=True)
    sim = simulate(graph, images, record=True)
    assert_bit_exact(reference, sim, graph)
    assert all(sim.spike_counts[name] > 0 for name in layer_order(graph)[:-1])  # every layer fires
    assert_pipelined_bit_exact(graph, images[:1])


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_if_and_lif_models(neuron):
    config = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4, neuron=neuron, mpr=False)
    images = images_for(config, 6)
    graph = compile_graph(trace(randomized_model(config, images)), images)
    layers = [x for x in graph.of_type(n.FixedPointNeuron) if x.sources]  # the model's (no bias source)
    assert all(x.reset == "zero" for x in layers) and all((x.dv > 0) == (neuron == "lif") for x in layers)
    sim = simulate(graph, images, record=True)
    assert_bit_exact(run_aligned(graph, images, record=True), sim, graph)
    kernels = {sim.plan.layers[x.name].kernel for x in layers}
    assert kernels == {"float32" if neuron == "if" else "int64"}
    assert all(count > 0 for count in sim.spike_counts.values())
    assert_pipelined_bit_exact(graph, images[:2])


def test_reset_interval_padded_to_a_power_of_two(digits_images):
    # T = 3 on the loihi2 target: R = 4, one empty step per sample window; the padding steps'
    # spikes, the prefix and the tail appear in the raw traces and the counters.
    exported = trace(load_checkpoint(DEFAULT_MODEL).model)
    graph = compile_graph(Graph(exported.nodes, 3, exported.name), digits_images[:4], target="loihi2")
    assert (graph.timesteps, graph.schedule.reset_interval) == (3, 4)
    sim = assert_pipelined_bit_exact(graph, digits_images[:3])
    aligned = simulate(graph, digits_images[:3], record=True)
    np.testing.assert_array_equal(sim.accumulator, aligned.accumulator)
    assert sim.spike_counts == aligned.spike_counts
    assert sum(sim.pipeline_spike_counts.values()) > sum(sim.spike_counts.values())  # padding steps fire too


def test_padded_reset_interval_with_a_delayed_shortcut():
    probe = np.random.default_rng(3).random((3, 2, 5, 5)).astype(np.float32)
    graph = compile_graph(residual_graph(3), probe, target="loihi2")
    assert graph.schedule.reset_interval == 4 and max(s.delay for s in graph.of_type(n.FixedPointSynapse)) == 1
    assert_pipelined_bit_exact(graph, probe)


@pytest.mark.parametrize("which", ["digits", "residual"])
def test_aligned_and_pipelined_views_agree(which, digits_fixed, digits_images, residual_fixed):
    graph, images = (digits_fixed, digits_images) if which == "digits" else residual_fixed
    aligned = simulate(graph, images, record=True)
    pipelined = simulate(graph, images, view="pipelined", record=True)
    for kind in ("spikes", "voltages", "currents"):
        assert first_divergence(getattr(aligned, kind), getattr(pipelined, kind), list(getattr(aligned, kind))) is None
    np.testing.assert_array_equal(aligned.accumulator, pipelined.accumulator)
    assert aligned.spike_counts == pipelined.spike_counts
    assert (aligned.view, pipelined.view) == ("aligned", "pipelined")


def test_a_corrupted_weight_is_found_in_its_layer(digits_fixed, digits_images):
    node = digits_fixed.node("unit2.conv")
    weight = node.weight.copy()
    weight[3, 5, 1, 1] += 7
    corrupted = digits_fixed.replace_nodes(
        dataclasses.replace(x, weight=weight) if x is node else x for x in digits_fixed
    )
    reference = run_aligned(digits_fixed, digits_images, record=True)
    sim = simulate(corrupted, digits_images, record=True)
    divergence = first_divergence(reference.voltages, sim.voltages, layer_order(digits_fixed))
    assert divergence is not None and divergence.layer == "unit2.neuron"
    assert divergence.neuron[0] == 3  # the output channel whose weight changed


# --------------------------------------------------------------------------- errors and options


def test_bad_input_is_refused(digits_fixed, digits_images):
    with pytest.raises(IRError, match="do not fit"):
        simulate(digits_fixed, digits_images[:, :, :4])
    with pytest.raises(IRError, match="at least one image"):
        simulate(digits_fixed, digits_images[:0])
    with pytest.raises(IRError, match="batch_size"):
        simulate(digits_fixed, digits_images, batch_size=0)
    with pytest.raises(IRError, match="view"):
        simulate(digits_fixed, digits_images, view="skewed")
    with pytest.raises(IRError, match="NaN"):
        simulate(digits_fixed, np.full_like(digits_images, np.nan))
    unscheduled = Graph(digits_fixed.nodes, digits_fixed.timesteps, digits_fixed.name)
    with pytest.raises(IRError, match="scheduled graph"):
        simulate(unscheduled, digits_images, view="pipelined")
    float_graph = trace(load_checkpoint(DEFAULT_MODEL).model)
    with pytest.raises(IRError, match="quantized graphs"):
        simulate(float_graph, digits_images)


def test_an_inconsistent_schedule_is_refused(residual_fixed):
    graph, images = residual_fixed
    shortcut = next(s for s in graph.of_type(n.FixedPointSynapse) if s.delay)
    wrong = graph.replace_nodes(dataclasses.replace(x, delay=0) if x is shortcut else x for x in graph)
    with pytest.raises(IRError, match=f"synapse {shortcut.name!r}: delay 0 does not align"):
        simulate(wrong, images, view="pipelined")
    simulate(wrong, images)  # the aligned view ignores delays


def test_timing_and_progress(digits_fixed, digits_images, capsys):
    run = simulate(digits_fixed, digits_images, batch_size=8, progress=True)
    assert "16/16 samples" in capsys.readouterr().err
    assert run.timing.samples == 16 and run.timing.steps == 4 and run.timing.device == "cpu"
    assert run.timing.seconds >= run.timing.setup_seconds > 0 and run.timing.samples_per_second > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(digits_fixed, digits_images):  # pragma: no cover - needs a GPU
    cpu = simulate(digits_fixed, digits_images, record=True)
    gpu = simulate(digits_fixed, digits_images, record=True, device="cuda")
    assert_bit_exact(cpu, gpu, digits_fixed)
