"""The exact integer forward equals the fixed-point simulator (the oracle) bit for bit, before and after training."""

import dataclasses

import numpy as np
import pytest
import torch

from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.checkpoint import load_checkpoint
from inflor_deploy.compiler import compile_model
from inflor_deploy.finetuning import _write_back, choose_grid
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn.models import ModelConfig, build_model
from inflor_deploy.passes.base import QuantizationOptions
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.ir.graph import Graph
from inflor_deploy.qat import (
    IMPLEMENTED_FIELDS, ExactIntegerNetwork, UnsupportedForFinetune, check_implemented, check_supported,
)  # fmt: skip


def _compile(model, quantization=QuantizationOptions()):
    config = model.config
    return compile_model(model, input_shape=(1, 8, 8), timesteps=config.timesteps, name=config.arch,
                         quantization=quantization, probe_samples=2)  # fmt: skip


def _on_grid(model, weight_fill=1.0):
    """The model compiled on its power-of-two grid (as finetune does: from the plain layout's scales), and the options."""
    ptq = _compile(model, QuantizationOptions(weight_fill=weight_fill, plain_layers=True))
    grid = choose_grid({r["layer"]: r["scale"] for r in ptq.quantization_report}, ptq.fixed_graph.input.grade_scale,
                       "loihi2-sim")  # fmt: skip
    options = QuantizationOptions(input_grade_scale=grid["input_grade_scale"], layer_scales=grid["layer_scales"],
                                  weight_fill=weight_fill, plain_layers=True)  # fmt: skip
    return _compile(model, options), options


def _assert_bit_exact(net, fixed_graph, images):
    with torch.no_grad():
        run = net(images, record=True)
    sim = simulate(fixed_graph, images, view="aligned", record=True)
    assert set(run.spikes) == set(sim.spikes) and run.spikes
    for name in sim.spikes:
        assert np.array_equal(run.spikes[name].numpy().astype(np.int64), sim.spikes[name].astype(np.int64)), name
    for name in sim.voltages:
        assert np.array_equal(run.voltages[name].numpy().astype(np.int64), sim.voltages[name]), name
        assert np.array_equal(run.currents[name].numpy().astype(np.int64), sim.currents[name]), name
    assert np.array_equal(run.readout.numpy().astype(np.int64), sim.accumulator)
    assert np.array_equal(run.scores.numpy(), sim.scores(fixed_graph))
    return run


def _train_steps(net, images, labels, steps=3, lr=3e-2):
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        run = net(images)
        loss = torch.nn.functional.cross_entropy(run.scores, torch.from_numpy(labels)) + 0.5 * run.spike_rate()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.enforce_headroom()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("neuron", ["srif", "if", "lif"])
def test_exact_forward_equals_simulator_before_and_after_training(neuron):
    """Random inputs in [0, 1] (not on the input grid): spikes, u, v and the readout equal the oracle's."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4, neuron=neuron,
                                    mpr=neuron == "srif")).eval()  # fmt: skip
    compiled, options = _on_grid(model)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target)
    images = np.random.default_rng(1).uniform(0, 1, (12, 1, 8, 8)).astype(np.float32)
    run = _assert_bit_exact(net, compiled.fixed_graph, images)
    assert sum(int(s.sum()) for s in run.spikes.values()) > 0  # the comparison sees spikes
    _train_steps(net, images, np.arange(12) % 10)
    # The trained integers, written back on the grid and compiled again, are what the forward computes.
    _write_back(model, compiled.graph_after("import"), net.grid_parameters())
    recompiled = _compile(model, options)
    _assert_bit_exact(net, recompiled.fixed_graph, images)


def test_a_leaky_layer_fires_exactly_where_v_is_not_a_multiple_of_64():
    """LIF: v between (vth << 6) and ((vth + 1) << 6) exists and fires on the chip's strict compare, as here."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, neuron="lif", tau=0.5)).eval()
    compiled, _ = _on_grid(model)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target)
    images = np.random.default_rng(2).uniform(0, 1, (32, 1, 8, 8)).astype(np.float32)
    run = _assert_bit_exact(net, compiled.fixed_graph, images)
    assert any(int((v % 64 != 0).sum()) for v in run.voltages.values())


def test_gradients_flow_and_a_training_step_changes_the_loss():
    checkpoint = load_checkpoint(DEFAULT_MODEL)
    compiled, _ = _on_grid(checkpoint.model)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target,
                              surrogate=checkpoint.config.surrogate)  # fmt: skip
    images = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    run = net(images)
    loss = torch.nn.functional.cross_entropy(run.scores, torch.arange(16) % 10)
    loss.backward()
    for key, weight in net.weights.items():
        assert weight.grad is not None and float(weight.grad.abs().sum()) > 0, key
    losses = _train_steps(net, images, np.arange(16) % 10, steps=4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["resnet8", "resnet20"])
def test_residual_networks_are_exact_before_and_after_training(arch):
    """Identity and projection shortcuts: layers summing two synapses (one fixed), biases summed, exponents > 0."""
    from bench.common import firing_model

    model = firing_model(arch, in_channels=1, image_size=8, timesteps=3)
    compiled, options = _on_grid(model)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target)
    shortcuts = [item for inputs in net.inputs.values() for item in inputs if isinstance(item, n.FixedPointSynapse)]
    assert shortcuts and any(len(inputs) == 2 for inputs in net.inputs.values())
    images = np.random.default_rng(6).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    run = _assert_bit_exact(net, compiled.fixed_graph, images)
    assert all(int(s.sum()) > 0 for s in run.spikes.values())  # every layer's comparison sees spikes
    _train_steps(net, images, np.arange(8) % 10, steps=2)
    _write_back(model, compiled.graph_after("import"), net.grid_parameters())
    recompiled = _compile(model, options)
    _assert_bit_exact(net, recompiled.fixed_graph, images)


def test_an_input_gain_the_forward_does_not_model_is_refused_by_name():
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(4,)),
            n.Linear("fc1", ("image",), weight=np.ones((2, 4), np.float32), bias=None),
            n.Neuron("n1", ("fc1",), vth=1.0, reset_amount=1.0, gain=0.5),
            n.Linear("fc2", ("n1",), weight=np.ones((1, 2), np.float32), bias=None),
            n.Accumulator("out", ("fc2",)),
        ),
        timesteps=2,
    )
    with pytest.raises(UnsupportedForFinetune, match="'n1' has an input gain 0.5"):
        check_supported(graph)


@dataclasses.dataclass(frozen=True, eq=False)
class _ShiftedSynapse(n.FixedPointSynapse):
    """A synapse with a field the forward does not know (as a future quantizer might add)."""

    post_shift: int = 0


def test_a_field_the_forward_does_not_implement_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(IMPLEMENTED_FIELDS, _ShiftedSynapse, IMPLEMENTED_FIELDS[n.FixedPointSynapse])
    weight = np.ones((2, 2), np.int32)
    check_implemented(_ShiftedSynapse("s", ("x",), weight=weight))  # the default value: nothing to implement
    with pytest.raises(UnsupportedForFinetune, match=r"_ShiftedSynapse.post_shift = 3 \(node 's'\)"):
        check_implemented(_ShiftedSynapse("s", ("x",), weight=weight, post_shift=3))
    with pytest.raises(UnsupportedForFinetune, match="does not implement Conv2d"):
        check_implemented(n.Conv2d("c", ("x",), weight=np.ones((1, 1, 1, 1), np.float32)))


def _first_layer_weights_times_50():
    """A digits_cnn on its grid whose unit1.conv weights are 50x too large: (compiled, net, that synapse's key)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8)).eval()
    compiled, _ = _on_grid(model)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target)
    key = next(k for k, s in net.synapses.items() if s.name == "unit1.conv")
    with torch.no_grad():
        net.weights[key].mul_(50.0)  # far beyond the headroom (the first layer sees graded inputs up to 256)
    return compiled, net, key


def test_enforce_headroom_keeps_every_worst_case_current_under_the_quantizers_limit():
    from inflor_deploy.passes.quantize import A_LIMIT

    _, net, key = _first_layer_weights_times_50()
    before = net.integer_weight(key).detach().clone()
    net.enforce_headroom()
    w = net.integer_weight(key).detach().reshape(before.shape[0], -1)
    assert float(w.clamp(min=0).sum(1).max()) * 256 <= A_LIMIT  # inputs are >= 0: the positive weights bound it
    assert not torch.equal(w, before.reshape(w.shape))


def test_wraps_and_saturations_are_modelled_bit_for_bit():
    """Weights far beyond the headroom: u wraps (24 bits) and v saturates exactly as in the simulator."""
    compiled, net, key = _first_layer_weights_times_50()
    big = net.integer_weight(key).detach().numpy().astype(np.int32)
    fixed = compiled.fixed_graph
    nodes = [dataclasses.replace(x, weight=big) if x.name == "unit1.conv" else x for x in fixed]
    fixed = fixed.replace_nodes(nodes)
    images = np.random.default_rng(4).uniform(0.5, 1, (6, 1, 8, 8)).astype(np.float32)
    sim = simulate(fixed, images, view="aligned", record=True)
    assert sim.u_wraps["unit1.neuron"] > 0 and sim.v_saturations["unit1.neuron"] > 0
    _assert_bit_exact(net, fixed, images)


@pytest.mark.parametrize("fill", [0.016, 0.012])
def test_a_reduced_weight_precision_starts_exact_and_keeps_its_range(fill):
    """weight_fill < 1: the grid's rounding may reach one step beyond fill * 127; the clip must include it."""
    checkpoint = load_checkpoint(DEFAULT_MODEL)
    compiled, _ = _on_grid(checkpoint.model, weight_fill=fill)
    net = ExactIntegerNetwork(compiled.graph_after("DistributeJoins"), compiled.fixed_graph, compiled.target,
                              weight_fill=fill)  # fmt: skip
    images = np.random.default_rng(5).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    _assert_bit_exact(net, compiled.fixed_graph, images)
    for key, syn in net.synapses.items():
        assert syn.high == max(int(fill * (127 if syn.fixed.kind == "conv" else 254) // syn.step) * syn.step,
                               int(np.abs(syn.fixed.weight).max()))  # fmt: skip
        assert syn.high <= 4
