"""Event (sequence) input end to end: a new frame at every step, through every backend.

A small ``inflor_deploy.nn`` network (the digits CNN on 2 polarity channels)
is trained for a few seconds on a synthetic event dataset made here: each
class is a blob of events moving in its own direction over T steps. Then:
float IR == the torch model on the same events (level 1), integer reference
== simulator (level 2), simulator == Lava (level 3), both ONNX runners feed
frame t at step t, and the report counts events as synops.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inflor_deploy.backends.onnx.fixed_model import fixed_graph_to_onnx, run_fixed_onnx
from inflor_deploy.backends.onnx.float_model import graph_to_onnx
from inflor_deploy.backends.onnx.runtime import run_onnx
from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.backends.sim.int_reference import run_aligned, run_pipelined
from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import Dataset
from inflor_deploy.ir.graph import IRError
from inflor_deploy.nn import ModelConfig
from inflor_deploy.train import TrainConfig, train
from inflor_deploy.verify import level1_torch_vs_float_ir, level2_reference_vs_simulator, level3_simulator_vs_lava

T, CLASSES = 4, 4
DIRECTIONS = [(0, 1), (1, 0), (0, -1), (-1, 0)]


def synthetic_events(count: int, seed: int) -> Dataset:
    """``[N, T, 2, 8, 8]`` binary events: class k is a 2x2 blob moving along direction k, on polarity k % 2."""
    rng = np.random.default_rng(seed)
    x = (rng.random((count, T, 2, 8, 8)) < 0.03).astype(np.float32)  # background noise events
    y = rng.integers(0, CLASSES, size=count)
    for i, label in enumerate(y):
        dy, dx = DIRECTIONS[label]
        r, c = rng.integers(2, 5, size=2)
        for t in range(T):
            rr, cc = int(np.clip(r + dy * t, 0, 6)), int(np.clip(c + dx * t, 0, 6))
            x[i, t, label % 2, rr : rr + 2, cc : cc + 2] = 1.0
    return Dataset(f"events(seed {seed})", x, y.astype(np.int64), CLASSES)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(checkpoint model, CompileResult) of a briefly trained event network, compiled for sequence input."""
    config = ModelConfig(arch="digits_cnn", num_classes=CLASSES, in_channels=2, image_size=8, timesteps=T)
    result = train(config, synthetic_events(240, seed=0), synthetic_events(60, seed=1),
                   TrainConfig(epochs=4, seed=0), progress=False)  # fmt: skip
    path = tmp_path_factory.mktemp("events") / "events.pt"
    save_checkpoint(path, result.model, {"dataset": "synthetic events", "input_encoding": "sequence"})
    compile_result = compile_checkpoint(path, "loihi2-sim", probe_samples=4)  # encoding from the metadata
    return result.model, compile_result


def test_the_network_learned_the_motion(compiled):
    model, _ = compiled
    from inflor_deploy.train import evaluate

    accuracy, _ = evaluate(model, synthetic_events(80, seed=2))
    assert accuracy > 0.6  # chance is 0.25: the direction is only visible across frames


def test_compiled_for_events(compiled):
    _, result = compiled
    source = result.fixed_graph.input
    assert (source.encoding, source.value_range, source.pixel_levels, source.grade_scale) == ("sequence", (0.0, 1.0), 1, 1.0)
    assert result.probe.shape == (4, T, 2, 8, 8) and set(np.unique(result.probe)) <= {0.0, 1.0}
    assert all(c.ok for c in result.contracts)


def test_level1_float_ir_equals_the_torch_model_on_the_same_events(compiled):
    model, result = compiled
    data = synthetic_events(40, seed=3)
    level = level1_torch_vs_float_ir(model, result.graph_after("import"), data)
    assert level.ok and level.metrics["spikes"] > 0, level.summary
    # Free-running too: the scores of the float IR are the model's, bit for bit.
    with torch.no_grad():
        scores = model.eval()(torch.from_numpy(data.images).transpose(0, 1).contiguous()).numpy()
    assert np.array_equal(run_float(result.graph_after("import"), data.images).scores, scores)


def test_levels_2_and_3_are_bit_exact(compiled):
    _, result = compiled
    data = synthetic_events(6, seed=4)
    level2 = level2_reference_vs_simulator(result.fixed_graph, data.images, pipelined_samples=3)
    assert level2.ok, level2.summary
    level3 = level3_simulator_vs_lava(result.fixed_graph, data.images[:2], result.float_graph)
    assert level3.ok, level3.summary


def test_every_frame_counts_from_its_own_step(compiled):
    _, result = compiled
    fixed = result.fixed_graph
    events = synthetic_events(8, seed=5).images
    edited = events.copy()
    edited[:, 2] = 0.0  # remove the events of step 2 only
    a, b = simulate(fixed, events, record=True), simulate(fixed, edited, record=True)
    first = fixed.nodes[2].name  # the first neuron layer
    assert np.array_equal(a.spikes[first][:2], b.spikes[first][:2])
    assert not np.array_equal(a.voltages[first][2], b.voltages[first][2])
    with pytest.raises(IRError, match=r"sequence input \[B, T, 2, 8, 8\]"):
        simulate(fixed, events[:, 0])


def test_onnx_runners_feed_frame_t(compiled):
    _, result = compiled
    events = synthetic_events(5, seed=6).images
    reference = run_aligned(result.fixed_graph, events, record=True)
    fixed_run = run_fixed_onnx(fixed_graph_to_onnx(result.fixed_graph), events)
    assert np.array_equal(fixed_run.accumulator, reference.accumulator)
    for name, trace in reference.spikes.items():
        assert np.array_equal(fixed_run.spikes[name], trace), name
    float_run = run_onnx(graph_to_onnx(result.graph_after("import")), events)
    np.testing.assert_allclose(float_run.scores, run_float(result.graph_after("import"), events).scores, atol=1e-5)


def test_report_counts_events_as_synops(compiled):
    from inflor_deploy.report import report_from_graph

    _, result = compiled
    events = synthetic_events(10, seed=7).images
    report = report_from_graph(result.fixed_graph, events, result.target).to_dict()["activity"]
    first = next(s for s in report["synapses"] if s["source"] == result.fixed_graph.input.name)
    assert not first["from_input"] and first["events"] == int(np.count_nonzero(events))
    assert report["first_layer"]["macs_per_sample"] == 0
    layer_synops = next(x for x in report["layers"] if x["name"] == first["target"])["synops"]
    assert layer_synops == first["synops"] > 0
    assert report["totals"]["synops"] >= first["synops"]


# --------------------------------------------------------------------------- readouts and padding steps


def _event_graph(readout: str, timesteps: int, target: str = "loihi2-sim"):
    """tests.neuron_cases' variant network on sequence input (binary events), compiled with every contract."""
    import dataclasses

    from tests.neuron_cases import IN, compile_graph, variant_graph

    float_graph = variant_graph(dict(vth=0.5, reset_amount=0.5, tau=0.875, compare=">"), readout=readout,
                                readout_tau=0.75 if readout == "mean_membrane" else 1.0, timesteps=timesteps)  # fmt: skip
    events = dataclasses.replace(float_graph.input, encoding="sequence", value_range=(0.0, 1.0), pixel_levels=1)
    float_graph = float_graph.replace_nodes(events if x is float_graph.input else x for x in float_graph)
    rng = np.random.default_rng(11)
    probe = (rng.random((8, timesteps, IN)) < 0.4).astype(np.float32)
    result, _ = compile_graph(float_graph, probe, target)
    return float_graph, result.graph, (rng.random((6, timesteps, IN)) < 0.4).astype(np.float32)


@pytest.mark.parametrize("readout", ["mean_current", "mean_membrane", "spike_count"])
def test_each_readout_reads_sequence_input_bit_exactly(readout):
    """The mean-membrane sum, the count and the last v all follow frame t at step t, in every integer backend."""
    float_graph, fixed, events = _event_graph(readout, timesteps=5)
    assert fixed.input.encoding == "sequence" and fixed.output.readout == readout
    reference = run_aligned(fixed, events, record=True)
    fast = simulate(fixed, events, view="aligned", record=True)
    assert np.array_equal(fast.accumulator, reference.accumulator)
    for name, trace in reference.spikes.items():
        assert np.array_equal(fast.spikes[name], trace) and trace.any(), name
    assert np.array_equal(run_fixed_onnx(fixed_graph_to_onnx(fixed), events).accumulator, reference.accumulator)
    piped, _ = run_pipelined(fixed, events)
    assert np.array_equal(simulate(fixed, events, view="pipelined").accumulator, piped.accumulator)
    assert np.array_equal(piped.accumulator, reference.accumulator)  # the schedule changes nothing
    # Reordering the frames changes the readout: each step reads its own frame.
    shuffled = run_aligned(fixed, events[:, ::-1])
    assert not np.array_equal(shuffled.accumulator, reference.accumulator)
    # The float IR and its ONNX export agree on the same events.
    floats = run_float(float_graph, events)
    np.testing.assert_allclose(run_onnx(graph_to_onnx(float_graph), events).scores, floats.scores, atol=1e-5)


@pytest.mark.lava
def test_a_mean_membrane_readout_of_sequence_input_is_bit_exact_on_lava():
    """Lava reads v at every step of the window while the RingBuffer sends frame t, padding included (T=5, R=8)."""
    from inflor_deploy.backends.lava.network import compare_with_simulator, run_lava

    _, fixed, events = _event_graph("mean_membrane", timesteps=5, target="loihi2")
    assert fixed.schedule.reset_interval == 8
    parity = compare_with_simulator(fixed, events[:2])
    assert parity.ok and parity.readout_equal, parity.summary()
    reference, _ = run_pipelined(fixed, events[:2])
    np.testing.assert_array_equal(run_lava(fixed, events[:2]).accumulator, reference.accumulator)


def test_reports_count_padding_steps_of_sequence_input():
    """T = 5 events in windows of R = 8: the input sends no event at steps 5..7, the neurons still fire there."""
    from inflor_deploy.backends.sim.int_reference import quantize_input
    from inflor_deploy.report import report_from_graph
    from inflor_deploy.targets import load_target

    _, fixed, events = _event_graph("mean_current", timesteps=5, target="loihi2")
    R, T = fixed.schedule.reset_interval, fixed.timesteps
    assert (R, T) == (8, 5)
    activity = report_from_graph(fixed, events, load_target("loihi2")).activity
    assert activity.window == R
    first = next(s for s in activity.synapses if s.source == fixed.input.name)
    per_step_events = np.count_nonzero(quantize_input(fixed, events), axis=(0, 2))  # [T]
    fanout = fixed.node(first.name).weight.shape[0]  # dense: every event reaches every output
    assert first.synops_per_step == [int(e) * fanout for e in per_step_events] + [0] * (R - T)
    assert first.events == int(per_step_events.sum()) and not first.from_input
    # The padding spikes are the chip's: the integer reference's pipelined windows, steps T..R-1.
    _, raw = run_pipelined(fixed, events, record=True)
    for layer in activity.spiking_layers:
        d = fixed.schedule.depth[layer.name]
        windows = raw["spikes"][layer.name][d : d + len(events) * R].reshape(len(events), R, -1)
        assert layer.spikes_per_step == windows.sum(axis=(0, 2)).tolist(), layer.name
        assert layer.padding_spikes == int(windows[:, T:].sum())
    assert sum(layer.padding_spikes for layer in activity.spiking_layers) > 0  # leaky membranes still fire


@pytest.mark.parametrize("encoding", ["direct", "sequence"])
def test_declared_input_and_framework_neurons_are_bit_exact_in_every_integer_backend(encoding):
    """A folded normalization (bias map), per-channel thresholds, the moved delayed reset, the shifted hard
    reset and a leaky mean-membrane readout: reference == simulator (aligned and pipelined) == integer ONNX."""
    from tests.neuron_cases import compile_graph, declared_inputs, declared_neuron_graph

    graph = declared_neuron_graph(encoding)
    result, _ = compile_graph(graph, declared_inputs(graph, 8, seed=1))
    fixed, x = result.graph, declared_inputs(graph)
    assert np.ndim(fixed.node("snn_pc").vth) == 1 and fixed.node("sj_hard").reset == "zero" and fixed.output.dv > 0
    reference = run_aligned(fixed, x, record=True)
    fast = simulate(fixed, x, view="aligned", record=True)
    onnx_run = run_fixed_onnx(fixed_graph_to_onnx(fixed), x)
    for run in (fast, onnx_run):
        assert np.array_equal(run.accumulator, reference.accumulator)
        for name, trace in reference.spikes.items():
            assert trace.any() and np.array_equal(run.spikes[name], trace), name
            assert np.array_equal(run.voltages[name], reference.voltages[name]), name
    piped, _ = run_pipelined(fixed, x)
    assert np.array_equal(simulate(fixed, x, view="pipelined").accumulator, piped.accumulator)
    assert np.array_equal(piped.accumulator, reference.accumulator)


@pytest.mark.lava
def test_declared_sequence_input_and_framework_neurons_are_bit_exact_on_lava():
    from inflor_deploy.backends.lava.network import compare_with_simulator
    from tests.neuron_cases import compile_graph, declared_inputs, declared_neuron_graph

    graph = declared_neuron_graph("sequence")
    result, _ = compile_graph(graph, declared_inputs(graph, 8, seed=1))
    parity = compare_with_simulator(result.graph, declared_inputs(graph, 2))
    assert parity.ok and parity.readout_equal, parity.summary()
