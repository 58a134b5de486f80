"""Tests for ModelConfig, the building blocks and the four architectures."""

import json
import math

import pytest
import torch
from torch import nn

from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.models import (
    ARCHITECTURES,
    BasicBlock,
    ModelConfig,
    ResNet19,
    SpikingNetwork,
    build_model,
    count_parameters,
)
from inflor_deploy.nn.neurons import IFNeuron, LIFNeuron, Neuron, OutputAccumulator, SRIF
from inflor_deploy.nn.tdbn import TdBatchNorm

DIGITS = dict(arch="digits_cnn", in_channels=1, image_size=8)


def _modules_of(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("arch", ["resnet19", "resnet20", "vgg16"])
def test_cifar_models_forward(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch))
    out = model(torch.randn(2, 3, 32, 32), T=2)
    assert out.shape == (2, 10)
    assert bool(torch.isfinite(out).all())
    assert model.config.arch == arch


def test_digits_cnn_forward_and_time_first_input():
    torch.manual_seed(0)
    # Train mode (batch statistics) so an untrained net spikes at all; in
    # eval mode with fresh running stats it may be silent and input-blind.
    model = build_model(ModelConfig(**DIGITS, timesteps=3)).train()
    image = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        out = model(image)
        assert out.shape == (4, 10) and bool(torch.isfinite(out).all())
        assert not torch.allclose(out[0], out[1])  # the scores depend on the image
        # Direct encoding: a static image equals the same image repeated over T,
        # and differs from showing it only at t = 0.
        assert torch.equal(out, model(image.unsqueeze(0).repeat(3, 1, 1, 1, 1)))
        assert torch.equal(out, model(image, T=3))
        once = torch.cat([image.unsqueeze(0), torch.zeros(2, 4, 1, 8, 8)])
        assert not torch.allclose(out, model(once))
        assert model(image, T=5).shape == (4, 10)


def test_forward_rejects_bad_inputs():
    model = build_model(ModelConfig(**DIGITS))
    with pytest.raises(ValueError, match=r"configured for images \[B, 1, 8, 8\]"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"configured for images \[B, 1, 8, 8\]"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        model(torch.rand(2, 1, 8, 8), T=0)
    with pytest.raises(ValueError, match="contradicts"):
        model(torch.rand(3, 2, 1, 8, 8), T=4)
    with pytest.raises(ValueError, match="expects an image batch"):
        model(torch.rand(1, 8, 8))


@pytest.mark.parametrize("arch", ["digits_cnn", "resnet20"])
def test_training_reaches_the_first_conv(arch):
    torch.manual_seed(0)
    config = ModelConfig(**DIGITS) if arch == "digits_cnn" else ModelConfig(arch=arch)
    model = build_model(config)
    x = torch.rand(4, config.in_channels, config.image_size, config.image_size)
    nn.functional.cross_entropy(model(x, T=2), torch.tensor([0, 1, 2, 3])).backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum().item() > 0


def test_children_follow_data_flow_and_end_with_the_readout():
    expected = {
        "digits_cnn": ["unit1", "unit2", "pool", "flatten", "fc1", "neuron_fc1", "fc2", "readout"],
        "resnet19": ["stem", "layer1", "layer2", "layer3", "pool", "flatten", "fc1", "neuron_fc1", "fc2", "readout"],
        "resnet20": ["stem", "layer1", "layer2", "layer3", "pool", "flatten", "fc", "readout"],
        "resnet8": ["stem", "layer1", "layer2", "layer3", "pool", "flatten", "fc", "readout"],
        "vgg16": ["features", "flatten", "fc", "readout"],
    }
    assert sorted(ARCHITECTURES) == sorted(expected)
    for arch, names in expected.items():
        config = ModelConfig(**DIGITS) if arch == "digits_cnn" else ModelConfig(arch=arch)
        model = build_model(config)
        assert isinstance(model, SpikingNetwork)
        assert [name for name, _ in model.named_children()] == names
        assert isinstance(model.readout, OutputAccumulator)
        # Convs feed tdBN, so they carry no bias; linear layers keep theirs.
        assert all(m.bias is None for m in _modules_of(model, nn.Conv2d))
        assert all(m.bias is not None for m in _modules_of(model, nn.Linear))
        assert not _modules_of(model, nn.MaxPool2d) and not _modules_of(model, nn.BatchNorm2d)
        # Every stateless layer is wrapped for time-first input.
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
                assert any(w.module is m for w in _modules_of(model, TimeDistributed))


def test_resnet19_layout():
    model = ResNet19(ModelConfig(arch="resnet19"))
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [3, 3, 2]
    assert [s[0].out_channels for s in stages] == [128, 256, 512]
    assert [s[0].stride for s in stages] == [1, 2, 2]
    assert model.fc1.module.in_features == 512 and model.fc1.module.out_features == 256
    assert model.fc2.module.in_features == 256
    # 1 stem + 2 per block + 2 projection shortcuts + 0 in fc = 20 conv layers.
    assert len(_modules_of(model, nn.Conv2d)) == 1 + 2 * 8 + 2


def test_resnet20_and_vgg16_layouts():
    r20 = build_model(ModelConfig(arch="resnet20"))
    assert [len(getattr(r20, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert r20.stem.conv.module.out_channels == 16
    assert r20.fc.module.in_features == 64
    # 19 3x3 convs + 1 fc = the "20" layers, plus 2 projection shortcuts.
    assert len(_modules_of(r20, nn.Conv2d)) == 19 + 2

    vgg = build_model(ModelConfig(arch="vgg16"))
    assert len(_modules_of(vgg, TdBatchNorm)) == 13
    assert len(_modules_of(vgg, nn.AvgPool2d)) == 5
    assert vgg.fc.module.in_features == 512


def test_basic_block_adds_currents_before_the_neuron():
    config = ModelConfig(arch="resnet20")
    torch.manual_seed(0)
    for in_ch, out_ch, stride, identity in [(8, 8, 1, True), (8, 16, 2, False)]:
        block = BasicBlock(in_ch, out_ch, stride, config).eval()
        names = [name for name, _ in block.named_children()]
        assert names == ["conv1", "bn1", "neuron1", "conv2", "bn2", "shortcut", "neuron2"]
        assert isinstance(block.shortcut, nn.Sequential) and (len(block.shortcut) == 0) == identity
        x = (torch.rand(3, 2, in_ch, 8, 8) < 0.3).float()
        block.neuron2.record_membrane = True
        out = block(x)
        assert out.shape == (3, 2, out_ch, 8 // stride, 8 // stride)
        # H[0] of neuron2 (U[-1] = 0) is exactly the summed current at t = 0.
        current = block.bn2(block.conv2(block.neuron1(block.bn1(block.conv1(x))))) + block.shortcut(x)
        assert torch.allclose(block.neuron2.last_membrane[0], current[0], atol=1e-6)


@pytest.mark.parametrize(
    "neuron, cls, tau",
    [("srif", SRIF, 1.0), ("if", IFNeuron, 1.0), ("lif", LIFNeuron, 0.25)],
)
def test_config_selects_neurons(neuron, cls, tau):
    config = ModelConfig(**DIGITS, neuron=neuron, tau=0.25, vth=0.7, mpr=False, surrogate_kind="arctan")
    neurons = _modules_of(build_model(config), Neuron)
    assert len(neurons) == 3
    for n in neurons:
        assert type(n) is cls
        assert (n.vth, n.tau, n.mpr, n.surrogate.kind) == (0.7, tau, False, "arctan")
    tdbns = _modules_of(build_model(config), TdBatchNorm)
    assert all(b.vth == 0.7 for b in tdbns)


def test_digits_cnn_parameter_count_by_hand():
    # conv1 1*16*9 = 144, tdBN 2*16 = 32, conv2 16*32*9 = 4608, tdBN 2*32 = 64,
    # fc1 32*4*4*64 + 64 = 32832, fc2 64*10 + 10 = 650  ->  38330.
    assert count_parameters(build_model(ModelConfig(**DIGITS))) == 38330


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"arch": "resnet18"}, "arch"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"image_size": 0}, "image_size"),
        ({"timesteps": 0}, "timesteps"),
        ({"timesteps": 2.0}, "timesteps"),
        ({"timesteps": True}, "timesteps"),
        ({"neuron": "adex"}, "neuron"),
        ({"vth": 0.0}, "vth"),
        ({"vth": math.nan}, "vth"),
        ({"tau": 0.0}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"mpr": "yes"}, "mpr"),
        ({"surrogate_kind": "triangle"}, "surrogate_kind"),
        ({"surrogate_width": 0.0}, "surrogate_width"),
        ({"tdbn_alpha": -1.0}, "tdbn_alpha"),
        ({"arch": "vgg16", "image_size": 40}, "image_size"),
        ({"arch": "digits_cnn", "image_size": 7}, "image_size"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    kwargs = {"arch": "resnet20", **overrides}
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        ModelConfig(**kwargs)


def test_config_round_trips_through_json():
    config = ModelConfig(**DIGITS, neuron="lif", tau=0.3, timesteps=6, surrogate_kind="sigmoid")
    data = config.to_dict()
    assert ModelConfig.from_dict(json.loads(json.dumps(data))) == config
    assert list(data) == [
        "arch", "num_classes", "in_channels", "image_size", "timesteps", "neuron",
        "vth", "tau", "mpr", "surrogate_kind", "surrogate_width", "tdbn_alpha",
    ]
    # JSON may carry 1 for 1.0; the config normalizes so round trips stay equal.
    loaded = ModelConfig.from_dict({"arch": "resnet20", "vth": 1})
    assert isinstance(loaded.vth, float) and loaded == ModelConfig(arch="resnet20", vth=1.0)


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) 'dropout'"):
        ModelConfig.from_dict({"arch": "resnet20", "dropout": 0.1})
    with pytest.raises(ValueError, match="needs 'arch'"):
        ModelConfig.from_dict({"num_classes": 10})
    with pytest.raises(ValueError, match="needs a mapping"):
        ModelConfig.from_dict([("arch", "resnet20")])  # type: ignore[arg-type]


def test_build_model_and_classes_check_their_config():
    with pytest.raises(TypeError):
        build_model({"arch": "resnet20"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="implements arch='resnet19'"):
        ResNet19(ModelConfig(arch="resnet20"))
