"""onnxruntime running the exported per-timestep graph reproduces the float IR.

onnxruntime sums convolutions in its own order and cannot be teacher-forced,
so spikes are compared free-running: they must be identical, or the first
divergence must be a near-tie (the float IR's membrane within a few float32
ulps of the threshold). Scores must agree to float32 rounding.
"""

import numpy as np
import pytest
from onnx import numpy_helper

from inflor_deploy.backends.onnx.float_model import graph_to_onnx
from inflor_deploy.backends.onnx.runtime import run_onnx
from inflor_deploy.frontends.fx import trace
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import LIFNeuron, ModelConfig, phi_inverse_scalar
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.backends.sim.compare import float_tie_tolerance, spike_mismatches
from inflor_deploy.backends.sim.float_ir import run_float
from tests.frontends.zoo_models import images_for, randomized_model

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


def check_ort_parity(graph: Graph, images: np.ndarray, record_property=None, **ort_options):
    """Run both; assert scores close and spikes identical up to near-ties; return the comparison."""
    reference = run_float(graph, images, record=True)
    candidate = run_onnx(graph_to_onnx(graph), images, **ort_options)
    neurons = graph.of_type(n.Neuron)
    # phi is increasing, so phi(H) >= vth <=> H >= phi^-1(vth): ties are measured on H.
    thresholds = {x.name: phi_inverse_scalar(x.vth) if x.mpr else x.vth for x in neurons}
    tolerance = {k: float_tie_tolerance(reference.membranes[k], t) for k, t in thresholds.items()}
    # run_onnx reports spike events (0/1); run_float records O * spike_value, so compare events.
    events = {k: (v != 0).astype(np.uint8) for k, v in reference.spikes.items()}
    result = spike_mismatches(events, candidate.spikes, reference.membranes, thresholds, tolerance)
    line = f"{graph.name}: {result.summary()}"
    print(line)
    if record_property is not None:
        record_property("ort_parity", result.to_dict() | {"graph": graph.name})
    assert list(candidate.spikes) == [x.name for x in neurons]
    if result.mismatches == 0:
        scale = float(np.abs(reference.scores).max())
        np.testing.assert_allclose(candidate.scores, reference.scores, rtol=1e-5, atol=1e-5 * scale)
    else:
        # Free-running, only the first divergence is the layer's own; it must be a near-tie.
        first = result.first_mismatch
        h = reference.membranes[first.layer][(first.timestep, first.sample, *first.neuron)]
        assert abs(h - thresholds[first.layer]) <= tolerance[first.layer], f"{line}; first mismatch: {first}"
    rates = [float(s.mean()) for s in events.values()]
    assert 0 < min(rates) and max(rates) < 1, rates  # the comparison must see both spikes and silence
    return result


@pytest.mark.parametrize(
    "config",
    [
        DIGITS,
        ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4, neuron="if", mpr=False),
        ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4, neuron="lif", mpr=True),
        ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4, vth=0.3),
    ],
    ids=["srif_mpr", "if", "lif_mpr", "srif_vth03"],
)
def test_digits_random_weights(config, record_property):
    images = images_for(config, 128)
    check_ort_parity(trace(randomized_model(config, images)), images, record_property)


def test_digits_mixed_neurons_and_ort_optimizations(record_property):
    images = images_for(DIGITS, 64)
    model = randomized_model(DIGITS, images)
    model.unit1.neuron = LIFNeuron(vth=0.3, tau=0.9, reset="subtract", mpr=True)
    model.unit2.neuron.reset_amount = 0.7  # explicit reset amount, not the spike value
    graph = trace(model)
    check_ort_parity(graph, images, record_property)
    # Conv+BatchNormalization fusion changes the rounding; spikes may only differ at ties.
    check_ort_parity(graph, images, None, optimize=True)


def test_resnet20_residual_sums(record_property):
    config = ModelConfig(arch="resnet20", timesteps=2)
    images = images_for(config, 4)
    check_ort_parity(trace(randomized_model(config, images)), images, record_property)


def test_three_sources_and_graded_spikes():
    rng = np.random.default_rng(5)
    w = lambda *s: (rng.standard_normal(s) * 0.7).astype(np.float32)  # noqa: E731
    graph = Graph(
        (
            n.Input("image", (), shape=(12,)),
            n.Linear("a", ("image",), weight=w(16, 12)),
            n.Linear("b", ("image",), weight=w(16, 12)),
            n.Linear("c", ("image",), weight=w(16, 12)),
            n.Neuron("n1", ("a", "b", "c"), vth=0.4, spike_value=2.0, reset_amount=1.5),
            n.Linear("fc", ("n1",), weight=w(3, 16), bias=w(3)),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=5,
        name="graded",
    )
    images = rng.random((64, 12), dtype=np.float32)
    result = check_ort_parity(graph, images)
    assert result.total_spikes > 0


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="bundled model not trained yet")
def test_bundled_digits_model_on_the_test_set(record_property):
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data.datasets import load_digits

    checkpoint = load_checkpoint(DEFAULT_MODEL)
    images = load_digits("test").images
    check_ort_parity(trace(checkpoint.model), images, record_property)


def test_a_changed_threshold_is_caught_and_named():
    images = images_for(DIGITS, 32)
    graph = trace(randomized_model(DIGITS, images))
    model = graph_to_onnx(graph)
    threshold = next(t for t in model.graph.initializer if t.name == "unit2.neuron.vth")
    threshold.CopyFrom(numpy_helper.from_array(np.array(0.45), threshold.name))
    reference = run_float(graph, images, record=True)
    candidate = run_onnx(model, images)
    result = spike_mismatches(
        reference.spikes, candidate.spikes, reference.membranes, {x: 0.5 for x in reference.spikes}, 1e-6
    )
    assert result.unexplained > 0 and result.per_layer["unit1.neuron"].mismatches == 0
    assert result.first_unexplained.layer == "unit2.neuron"
    assert str(result.first_unexplained).endswith("expected 0, got 1")


def test_joins_run_in_onnxruntime_like_the_float_ir():
    from tests.passes.test_distribute_joins import _graph

    graph = _graph()
    check_ort_parity(graph, np.random.default_rng(0).random((16, 2, 4, 4), dtype=np.float32))
