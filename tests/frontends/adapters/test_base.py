"""The adapter mechanism: a framework's own adapter plugs in (here a single-step one), packages and extras."""

import numpy as np
import pytest
import torch
from torch import nn

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.errors import ExportError
from inflor_deploy.frontends.adapters import Adapter, AdapterError, Capture, adapters_for, load_adapter, require_package
from inflor_deploy.frontends.fx import trace, trace_model
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import SRIF, TimeDistributed


class StepIF(nn.Module):
    """A single-step soft-reset IF neuron with hidden state, as stateful frameworks write them.

    ``H = U + X``, ``O = H >= vth``, ``U = H - O`` per call; ``U`` starts at 0 (None) until ``reset``.
    """

    def __init__(self, vth: float = 0.5) -> None:
        super().__init__()
        self.vth, self.u, self.h = vth, None, None

    def forward(self, x):
        self.h = x if self.u is None else self.u + x
        spikes = (self.h >= self.vth).to(x.dtype)
        self.u = self.h - spikes
        return spikes


class StepAdapter(Adapter):
    """A test framework: StepIF neurons, single-step, membranes readable, state reset by the adapter."""

    name = "step-test"

    def __init__(self, mode="single"):
        self.mode = mode

    def is_neuron(self, module):
        return isinstance(module, StepIF)

    def time_mode(self, module):
        return self.mode

    def neuron(self, path, module, sources):
        return n.Neuron(name=path, sources=sources, vth=module.vth, tau=1.0, reset="subtract")

    def capture(self, module, output):
        return Capture(spikes=output, membrane=module.h)

    def reset_state(self, model):
        for m in model.modules():
            if isinstance(m, StepIF):
                m.u = m.h = None


class StepNet(nn.Module):
    """Called once per step on [B, 2, 8, 8]; returns that step's class currents."""

    def __init__(self):
        super().__init__()
        self.conv, self.sn1 = nn.Conv2d(2, 6, 3, padding=1), StepIF()
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.sn2 = nn.Linear(6 * 4 * 4, 16), StepIF()
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        s = self.pool(self.sn1(self.conv(x)))
        return self.fc2(self.sn2(self.fc1(s.flatten(1))))


def _seeded(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
            with torch.no_grad():
                m.weight.mul_(2.0)
    return model


def test_single_step_modules_are_called_once_per_step_with_state_reset():
    model = _seeded(StepNet())
    traced = trace_model(model, (2, 8, 8), 4, adapters=["inflor", StepAdapter()])
    assert traced.time_mode == "single" and traced.readout == "mean_over_time"
    assert [(type(x).__name__, x.name) for x in traced.graph][1:5] == [
        ("Conv2d", "conv"), ("Neuron", "sn1"), ("Conv2d", "pool.window"), ("Neuron", "pool"),
    ]  # fmt: skip
    images = np.random.default_rng(1).random((5, 2, 8, 8), dtype=np.float32)
    for _ in range(2):  # the second run starts from reset state, not from the first's
        reference = traced.run(images)
        ir = run_float(traced.graph, images, record=True)
        for name in ("sn1", "pool", "sn2"):
            assert np.array_equal(reference.spikes[name], ir.spikes[name]), name
            assert 0 < reference.spikes[name].mean() < 1
        assert np.array_equal(reference.membranes["sn1"], ir.membranes["sn1"])
        assert np.array_equal(reference.scores, ir.scores)
    assert model.sn1.u is None  # the runner leaves the module reset


def test_a_single_step_model_gets_frame_t_of_an_event_sequence_at_step_t():
    from inflor_deploy.frontends.input_spec import resolve_input_spec

    model = _seeded(StepNet())
    traced = trace_model(model, (2, 8, 8), 4, adapters=["inflor", StepAdapter()],
                         input_spec=resolve_input_spec(input_encoding="sequence"))  # fmt: skip
    assert traced.graph.input.encoding == "sequence" and traced.conventions()["input"].endswith("frame t at step t")
    events = (np.random.default_rng(3).random((5, 4, 2, 8, 8)) < 0.4).astype(np.float32)  # [B, T, C, H, W]
    reference = traced.run(events)
    ir = run_float(traced.graph, events, record=True)
    for name in ("sn1", "pool", "sn2"):
        assert np.array_equal(reference.spikes[name], ir.spikes[name]), name
    assert np.array_equal(reference.scores, ir.scores)
    with torch.no_grad():  # the user's own loop: one call per step on that step's frame, state reset first
        StepAdapter().reset_state(model)
        own = torch.stack([model(torch.from_numpy(events[:, t])) for t in range(4)]).mean(0).numpy()
    assert np.array_equal(reference.scores, own)


def test_time_convention_errors():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.a, self.b = TimeDistributed(nn.Conv2d(2, 2, 1)), SRIF(), StepIF()

        def forward(self, x):
            return self.b(self.a(self.conv(x)))

    with pytest.raises(ExportError, match="the neurons mix time conventions: 'a' is multi-step, 'b' is single-step"):
        trace(Mixed(), (2, 8, 8), 3, adapters=["inflor", StepAdapter()])
    with pytest.raises(ExportError, match="ambiguous; pass time_mode='multi'"):
        trace(StepNet(), (2, 8, 8), 3, adapters=[StepAdapter(mode=None)])
    assert trace_model(_seeded(StepNet()), (2, 8, 8), 3, adapters=[StepAdapter(mode=None)], time_mode="single").time_mode == "single"
    with pytest.raises(ExportError, match="it is not an SNN"):
        trace(StepNet(), (2, 8, 8), 3)  # no adapter knows StepIF


def test_adapter_lookup_and_missing_packages_name_the_extra():
    assert load_adapter("inflor").name == "inflor"
    assert [a.name for a in adapters_for(StepNet())] == ["inflor"]
    with pytest.raises(AdapterError, match="unknown framework adapter 'spiky'; known: inflor"):
        load_adapter("spiky")
    with pytest.raises(AdapterError, match=r"pip install 'inflor-deploy\[nosuchframework\]'"):
        require_package("inflor_no_such_framework_package", "nosuchframework")
