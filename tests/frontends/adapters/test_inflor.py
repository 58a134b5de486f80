"""The inflor_deploy.nn adapter: which modules are leaves, subclasses that change forward, level-1 capture."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from inflor_deploy.frontends.adapters.inflor import ADAPTER
from inflor_deploy.frontends.fx import trace, trace_model
from inflor_deploy.nn import (
    SRIF, IFNeuron, LIFNeuron, ModelConfig, Neuron, OutputAccumulator, TdBatchNorm, TimeDistributed, build_model,
)

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


class _OneLayer(nn.Module):
    """A linear synapse into one neuron module; takes [T, B, 6]."""

    def __init__(self, neuron: nn.Module) -> None:
        super().__init__()
        self.fc, self.neuron, self.out = TimeDistributed(nn.Linear(6, 5)), neuron, TimeDistributed(nn.Linear(5, 3))

    def forward(self, x):
        return self.out(self.neuron(self.fc(x))).mean(0)


@pytest.mark.parametrize(
    "neuron, tau, reset, amount, mpr",
    [
        (SRIF(vth=0.4), 1.0, "subtract", None, True),  # InfLoR: subtract the spike value 1, not Vth
        (SRIF(vth=0.4, mpr=False), 1.0, "subtract", None, False),
        (IFNeuron(vth=0.3), 1.0, "zero", None, False),  # hard reset to 0
        (LIFNeuron(vth=0.3, tau=0.75), 0.75, "zero", None, False),
        (Neuron(vth=0.3, tau=0.75, reset="subtract", reset_amount=0.6), 0.75, "subtract", 0.6, False),
    ],
    ids=["srif-mpr", "srif", "if", "lif", "lif-subtract"],
)
def test_neurons_carry_every_field_of_the_general_neuron(neuron, tau, reset, amount, mpr):
    """The adapter states each field of ir.Neuron (charge affine, '>=', same-step reset, v_reset 0, gain 1):
    the float IR runs the module's own update, spike for spike, and the framework-neuron passes leave it alone."""
    from inflor_deploy.backends.sim.float_ir import run_float
    from inflor_deploy.passes.delayed_reset import DelayedResetToSameStep
    from inflor_deploy.passes.fold_input_gain import FoldInputGain
    from inflor_deploy.passes.shift_reset import ShiftResetToZero

    torch.manual_seed(0)
    traced = trace_model(_OneLayer(neuron).eval(), (6,), 6)
    (ir,) = [x for x in traced.graph if x.name == "neuron"]
    assert (ir.charge, ir.compare, ir.reset_timing, ir.v_reset, ir.gain, ir.decay) == ("affine", ">=", "same_step", 0.0, 1.0, None)
    assert (ir.tau, ir.reset, ir.reset_amount, ir.mpr, ir.spike_value) == (tau, reset, amount, mpr, 1.0)
    assert ir.vth == pytest.approx(neuron.vth)
    for normalize in (DelayedResetToSameStep, ShiftResetToZero, FoldInputGain):
        assert dataclasses.asdict(normalize.run(traced.graph, None).node("neuron")) == dataclasses.asdict(ir)
    x = np.random.default_rng(1).normal(0.3, 1.0, size=(64, 6)).astype(np.float32)
    module_run = traced.run(x)
    ir_run = run_float(traced.graph, x, record=True)
    assert module_run.spikes["neuron"].any() and not module_run.spikes["neuron"].all()
    assert np.array_equal(module_run.spikes["neuron"], ir_run.spikes["neuron"])  # free-running, not teacher-forced
    assert np.array_equal(module_run.membranes["neuron"], ir_run.membranes["neuron"])  # H bit for bit
