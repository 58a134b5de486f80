"""The fx front end on the zoo networks: graph structure, names, errors, and level 1 (torch == float IR, exactly).

These are the old registration-order walker's tests, ported when the walker was deleted (the fx route was
first proven identical to it: same IR for every architecture, same fixed_point.npz and level 1 for the
bundled model; see the commit that introduced the fx front end).
"""

import numpy as np
import pytest
import torch
from torch import nn

from inflor_deploy.errors import ExportError, InflorError
from inflor_deploy.frontends.fx import UnsupportedOpError, trace, trace_model
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import ModelConfig, TdBatchNorm, TimeDistributed, build_model
from inflor_deploy.backends.sim.float_ir import run_float
from tests.frontends.zoo_models import images_for, randomized_model

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


def torch_trace(model: nn.Module, images: np.ndarray):
    """Scores, and every neuron's spikes and membranes H ([T, B, ...]) keyed by IR name, from torch's own run."""
    run = trace_model(model).run(images)
    return run.scores, run.spikes, run.membranes


# --------------------------------------------------------------------------- structure


def test_digits_graph_structure_and_names():
    graph = trace(build_model(DIGITS).eval())
    assert graph.timesteps == 4 and graph.name == "digits_cnn"
    assert [(type(node).__name__, node.name, node.sources) for node in graph] == [
        ("Input", "image", ()),
        ("Conv2d", "unit1.conv", ("image",)),
        ("BatchNorm", "unit1.bn", ("unit1.conv",)),
        ("Neuron", "unit1.neuron", ("unit1.bn",)),
        ("Conv2d", "unit2.conv", ("unit1.neuron",)),
        ("BatchNorm", "unit2.bn", ("unit2.conv",)),
        ("Neuron", "unit2.neuron", ("unit2.bn",)),
        ("AvgPool2d", "pool", ("unit2.neuron",)),
        ("Flatten", "flatten", ("pool",)),
        ("Linear", "fc1", ("flatten",)),
        ("Neuron", "neuron_fc1", ("fc1",)),
        ("Linear", "fc2", ("neuron_fc1",)),
        ("Accumulator", "readout", ("fc2",)),
    ]
    assert graph.input.shape == (1, 8, 8)
    conv = graph.node("unit1.conv")
    assert conv.weight.shape == (16, 1, 3, 3) and conv.bias is None
    assert (conv.stride, conv.padding, conv.groups) == ((1, 1), (1, 1), 1)
    assert graph.node("pool").kernel == (2, 2) and graph.node("pool").stride == (2, 2)
    assert graph.node("fc1").bias.shape == (64,)
    neuron = graph.node("unit1.neuron")
    # SRIF: soft reset by the spike value (None), MPR on, vth 0.5.
    assert (neuron.vth, neuron.tau, neuron.reset, neuron.reset_amount, neuron.mpr, neuron.spike_value) == (
        0.5, 1.0, "subtract", None, True, 1.0,
    )  # fmt: skip


def test_resnet20_residual_neurons_and_shortcuts():
    graph = trace(build_model(ModelConfig(arch="resnet20", timesteps=2)).eval())
    counts = {}
    for node in graph:
        counts[type(node).__name__] = counts.get(type(node).__name__, 0) + 1
    # stem + 9 blocks x (2 convs) + 2 projection shortcuts = 21 convs; neurons: 1 + 9 x 2.
    assert counts == {"Input": 1, "Conv2d": 21, "BatchNorm": 21, "Neuron": 19, "AvgPool2d": 1, "Flatten": 1,
                      "Linear": 1, "Accumulator": 1}  # fmt: skip
    # Identity shortcut: the block input (previous block's output) is the second source.
    assert graph.node("layer1.1.neuron2").sources == ("layer1.1.bn2", "layer1.0.neuron2")
    assert graph.node("layer1.0.neuron2").sources == ("layer1.0.bn2", "stem.neuron")
    # Downsampling block: 1x1 stride-2 conv + tdBN projection, added after the main path.
    assert graph.node("layer2.0.neuron2").sources == ("layer2.0.bn2", "layer2.0.shortcut.bn")
    shortcut = graph.node("layer2.0.shortcut.conv")
    assert shortcut.sources == ("layer1.2.neuron2",)
    assert shortcut.weight.shape == (32, 16, 1, 1) and shortcut.stride == (2, 2) and shortcut.padding == (0, 0)
    assert graph.node("layer2.0.shortcut.bn").sources == ("layer2.0.shortcut.conv",)
    assert graph.node("layer2.0.conv1").stride == (2, 2)
    # Global average pool over the final 8x8 map.
    assert graph.node("pool").kernel == (8, 8) and graph.node("pool").stride == (8, 8)
    assert [node.name for node in graph.of_type(n.Neuron) if len(node.sources) == 2] == [
        f"layer{s}.{b}.neuron2" for s in (1, 2, 3) for b in range(3)
    ]


def test_tdbn_gamma_is_the_modules_eval_weight_exactly():
    config = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, vth=0.3, tdbn_alpha=0.7071)
    model = build_model(config).eval()
    with torch.no_grad():
        model.unit1.bn.lambda_.uniform_(0.5, 2.0)
    node = trace(model).node("unit1.bn")
    bn = model.unit1.bn
    expected = (bn.lambda_ * (bn.alpha * bn.vth)).detach().numpy()
    assert node.gamma.dtype == np.float32 and np.array_equal(node.gamma, expected)
    assert np.array_equal(node.beta, bn.beta.detach().numpy()) and node.eps == bn.eps


@pytest.mark.parametrize(
    "neuron, expected",
    [("srif", ("subtract", 1.0, None)), ("if", ("zero", 1.0, None)), ("lif", ("zero", 0.5, None))],
)
def test_neuron_kinds_map_to_ir_attributes(neuron, expected):
    graph = trace(build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, neuron=neuron)))
    node = graph.node("neuron_fc1")
    assert (node.reset, node.tau, node.reset_amount) == expected


def test_reset_amount_other_than_the_spike_value_is_explicit():
    model = build_model(DIGITS)
    model.unit1.neuron.reset_amount = 0.5  # subtract vth instead of the spike
    graph = trace(model)
    assert graph.node("unit1.neuron").reset_amount == 0.5
    assert graph.node("unit2.neuron").reset_amount is None


# --------------------------------------------------------------------------- errors


def test_maxpool_applied_to_a_time_first_tensor_names_the_module():
    model = build_model(DIGITS)
    model.pool = nn.MaxPool2d(2)  # not wrapped: it sees [T, B, C, H, W]
    with pytest.raises(ExportError, match=r"fx node 'pool' \(module 'pool' \(MaxPool2d\)\)"):
        trace(model)


def test_dropout_and_identity_are_removed():
    model = build_model(DIGITS)
    model.unit2.add_module("drop", nn.Dropout(0.1))
    model.flatten = nn.Sequential(TimeDistributed(nn.Flatten()), TimeDistributed(nn.Identity()))
    graph = trace(model)
    assert [x.name for x in graph][5:9] == ["unit2.bn", "unit2.neuron", "pool", "flatten.0"]
    assert graph.node("fc1").sources == ("flatten.0",)


def test_relu_in_place_of_a_neuron_is_rejected():
    model = build_model(DIGITS)
    model.unit1.neuron = nn.ReLU()
    with pytest.raises(UnsupportedOpError, match=r"ReLU at fx node 'unit1_neuron' \(module 'unit1.neuron'\).*Supported: "):
        trace(model)


@pytest.mark.parametrize(
    "conv, match",
    [
        (nn.Conv2d(1, 16, 3, padding=1, padding_mode="reflect", bias=False), "padding_mode"),
        (nn.Conv2d(1, 16, 3, padding="same", bias=False), "string padding"),
    ],
)
def test_unsupported_conv_settings(conv, match):
    model = build_model(DIGITS)
    model.unit1.conv = TimeDistributed(conv)
    with pytest.raises(UnsupportedOpError, match=rf"TimeDistributed at fx node 'unit1_conv' \(module 'unit1.conv'\) cannot be converted: .*{match}"):
        trace(model)


def test_unwrapped_stateless_layer_and_bad_pooling_are_rejected():
    model = build_model(DIGITS)
    model.pool = nn.AvgPool2d(2)
    with pytest.raises(ExportError, match="module 'pool' \\(AvgPool2d\\)"):
        trace(model)
    model.pool = TimeDistributed(nn.AvgPool2d(3, stride=2, padding=1))  # 8x8 -> 4x4, as fc1 expects
    with pytest.raises(UnsupportedOpError, match="kernel == stride"):
        trace(model)
    model.pool = TimeDistributed(nn.AvgPool2d(2, ceil_mode=True))
    with pytest.raises(UnsupportedOpError, match="ceil_mode"):
        trace(model)


def test_plain_cnn_is_not_an_snn():
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with pytest.raises(ExportError, match="not an SNN"):
        trace(cnn, (1, 8, 8), 4)
    model = build_model(DIGITS)
    for unit in (model.unit1, model.unit2):
        unit.neuron = nn.ReLU()
    model.neuron_fc1 = nn.ReLU()
    with pytest.raises(InflorError, match="not an SNN"):
        trace(model)


def test_forward_is_read_not_assumed():
    # A subclass with its own forward is traced like any module (the walker had to refuse it).
    class Shuffled(type(build_model(DIGITS))):
        def forward(self, image, T=None):
            return super().forward(image, T)

    assert [x.name for x in trace(Shuffled(DIGITS))] == [x.name for x in trace(build_model(DIGITS))]
    # Without its readout the model returns [T, B, classes]; the IR's readout is their mean over T.
    model = build_model(DIGITS)
    del model.readout
    traced = trace_model(model)
    assert traced.readout == "mean_over_time" and traced.graph.output.sources == ("fc2",)
    # Nothing may follow the readout.
    model = build_model(DIGITS)
    model.add_module("extra", nn.Linear(10, 10))  # runs on the [B, classes] scores
    with pytest.raises(ExportError, match="nothing may follow the readout"):
        trace(model)


# --------------------------------------------------------------------------- parity level 1


PARITY_CASES = [
    pytest.param(DIGITS, 16, id="digits_srif"),
    pytest.param(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, neuron="if"), 16, id="digits_if"),
    pytest.param(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=3, neuron="lif"), 16,
                 id="digits_lif"),
    pytest.param(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, vth=0.3, mpr=True), 16, id="digits_vth03"),
    pytest.param(ModelConfig(arch="resnet20", timesteps=2), 2, id="resnet20"),
    pytest.param(ModelConfig(arch="vgg16", timesteps=2), 2, id="vgg16"),
    pytest.param(ModelConfig(arch="resnet19", timesteps=2), 1, id="resnet19"),
]  # fmt: skip


@pytest.mark.parametrize("config, batch", PARITY_CASES)
def test_float_ir_reproduces_torch_exactly(config, batch):
    images = images_for(config, batch)
    model = randomized_model(config, images)
    scores, spikes, membranes = torch_trace(model, images)
    graph = trace(model)
    run = run_float(graph, images, record=True)

    assert list(run.spikes) == list(spikes)  # every torch neuron, in forward order
    assert np.array_equal(run.scores, scores)
    for name in spikes:
        assert np.array_equal(run.spikes[name], spikes[name].astype(np.uint8)), name
        assert np.array_equal(run.membranes[name], membranes[name]), name
    # The check means something only if neurons both fire and stay silent.
    rates = np.array([s.mean() for s in spikes.values()])
    assert 0.02 < rates.mean() < 0.8
    assert (rates > 0).all() and (rates < 1).all()


def test_plain_batchnorm_grouped_conv_with_bias_and_nested_sequential_are_exact():
    images = images_for(DIGITS, 16)
    model = randomized_model(DIGITS, images)
    torch.manual_seed(3)
    bn2d = nn.BatchNorm2d(16).eval()
    bn1d = nn.BatchNorm1d(64, affine=False).eval()
    with torch.no_grad():
        bn2d.running_mean.uniform_(-0.5, 0.5), bn2d.running_var.uniform_(0.5, 2.0)
        bn2d.weight.uniform_(0.2, 0.6), bn2d.bias.uniform_(0.0, 0.3)
        bn1d.running_mean.uniform_(-0.5, 0.5), bn1d.running_var.uniform_(0.5, 2.0)
    model.unit1.bn = TimeDistributed(bn2d)
    model.unit2.conv = TimeDistributed(nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=True))
    model.fc1 = nn.Sequential(TimeDistributed(nn.Linear(32 * 16, 64)), TimeDistributed(bn1d))
    scores, spikes, _ = torch_trace(model, images)
    graph = trace(model)
    assert [node.name for node in graph][1:4] == ["unit1.conv", "unit1.bn", "unit1.neuron"]
    assert graph.node("unit2.conv").groups == 4 and graph.node("unit2.conv").bias.shape == (32,)
    assert graph.node("fc1.1").sources == ("fc1.0",) and np.array_equal(graph.node("fc1.1").gamma, np.ones(64))
    run = run_float(graph, images, record=True)
    assert np.array_equal(run.scores, scores)
    for name in spikes:
        assert np.array_equal(run.spikes[name], spikes[name].astype(np.uint8)), name


def test_batchnorm_rank_and_adaptive_pool_size_are_checked():
    model = build_model(DIGITS)
    model.unit1.bn = TimeDistributed(nn.BatchNorm1d(16))
    with pytest.raises(ExportError, match=r"module 'unit1.bn'"):
        trace(model)  # BatchNorm1d on [T*B, 16, 8, 8] fails in torch itself
    model = build_model(DIGITS)
    model.pool = TimeDistributed(nn.AdaptiveAvgPool2d(3))
    model.fc1 = TimeDistributed(nn.Linear(32 * 3 * 3, 64))
    with pytest.raises(UnsupportedOpError, match="output_size=3 does not divide the 8x8 input"):
        trace(model)
    model.pool = TimeDistributed(nn.AdaptiveAvgPool2d(4))  # divides: an AvgPool2d(2)
    model.fc1 = TimeDistributed(nn.Linear(32 * 4 * 4, 64))
    pool = trace(model).node("pool")
    assert isinstance(pool, n.AvgPool2d) and pool.kernel == (2, 2) == pool.stride
    model = build_model(DIGITS)
    model.unit1.neuron = TimeDistributed(model.unit1.neuron)
    with pytest.raises(UnsupportedOpError, match="must not be wrapped in a per-step wrapper"):
        trace(model)
