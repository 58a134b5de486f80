"""The inflor_deploy.nn adapter: which modules are leaves, subclasses that change forward, level-1 capture."""

import numpy as np
import pytest
import torch
from torch import nn

from inflor_deploy.frontends.adapters.inflor import ADAPTER
from inflor_deploy.frontends.fx import trace, trace_model
from inflor_deploy.nn import SRIF, ModelConfig, Neuron, OutputAccumulator, TdBatchNorm, TimeDistributed, build_model

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


def test_leaves_and_conventions():
    model = build_model(DIGITS)
    leaves = {name for name, m in model.named_modules() if ADAPTER.is_leaf(m)}
    assert {"unit1.conv", "unit1.bn", "unit1.neuron", "pool", "readout"} <= leaves
    assert "unit1" not in leaves  # containers are traced
    assert ADAPTER.time_mode(model.unit1.neuron) == "multi"
    assert ADAPTER.declared_input(model) == ((1, 8, 8), 4, "digits_cnn")
    assert ADAPTER.timesteps_argument(model) == "T" and ADAPTER.timesteps_argument(nn.Linear(1, 1)) is None


class LoudSRIF(SRIF):
    def forward(self, x):
        return super().forward(2 * x)


class ScaledTdBN(TdBatchNorm):
    def forward(self, x):
        return super().forward(x) + 1


class Wrapped(TimeDistributed):
    def forward(self, x):
        return super().forward(x.flip(0))


class Loud(OutputAccumulator):
    def forward(self, x):
        return x.sum(0)


@pytest.mark.parametrize(
    "attribute, replacement, base",
    [
        ("unit1.neuron", lambda m: LoudSRIF(), "Neuron"),
        ("unit1.bn", lambda m: ScaledTdBN(16), "TdBatchNorm"),
        ("unit1.conv", lambda m: Wrapped(m.unit1.conv.module), "TimeDistributed"),
        ("readout", lambda m: Loud(), "OutputAccumulator"),
    ],
)
def test_a_subclass_that_overrides_forward_is_refused(attribute, replacement, base):
    model = build_model(DIGITS)
    parent, _, leaf = attribute.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, replacement(model))
    with pytest.raises(Exception, match=rf"module '{attribute}' \({type(replacement(model)).__name__}\) overrides {base}.forward"):
        trace(model)


def test_capture_reads_the_pre_reset_membrane_and_restores_the_flag():
    model = build_model(DIGITS).eval()
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    run = trace_model(model).run(images)
    neuron = model.unit1.neuron
    assert neuron.record_membrane is False and neuron.last_membrane is None
    # H = U[t-1] + X[t]; the first step's H is the input current itself.
    with torch.no_grad():
        current = model.unit1.bn(model.unit1.conv(torch.from_numpy(images).unsqueeze(0).repeat(4, 1, 1, 1, 1)))
    assert np.array_equal(run.membranes["unit1.neuron"][0], current[0].numpy())
    assert isinstance(neuron, Neuron) and run.spikes["unit1.neuron"].dtype == np.uint8
