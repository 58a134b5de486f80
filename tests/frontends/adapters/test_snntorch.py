"""The snnTorch adapter: Leaky's variants field for field, spikes and membranes reproduced by the float IR
free-running, the readouts (spikes, mean membrane), the state reset of this model's own Leaky neurons, and every
refusal by name."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

snntorch = pytest.importorskip("snntorch")  # the [snntorch] extra; `make setup` installs it

from snntorch import surrogate  # noqa: E402

from inflor_deploy.backends.sim.float_ir import run_float  # noqa: E402
from tests.frontends.adapters.framework_cases import images as _images, seeded as _seeded  # noqa: E402
from inflor_deploy.frontends.adapters import AdapterError, adapters_for  # noqa: E402
from inflor_deploy.frontends.fx import UnsupportedOpError, UnsupportedReadoutError, trace_model  # noqa: E402

T = 6
Leaky = snntorch.Leaky


class TwoLayers(nn.Module):
    """conv -> Leaky A -> max pool -> linear -> Leaky B, one call per step; returns B's spikes (or its membrane)."""

    def __init__(self, a: Leaky, b: Leaky, returns: str = "spikes"):
        super().__init__()
        self.conv, self.a, self.pool = nn.Conv2d(2, 6, 3, padding=1), a, nn.MaxPool2d(2)
        self.fc, self.b = nn.Linear(6 * 4 * 4, 12), b
        self.returns = returns

    def forward(self, x):
        h = self.fc(self.pool(self.a(self.conv(x))).flatten(1))
        if self.returns == "spikes":
            return self.b(h)
        spk, mem = self.b(h)
        return spk if self.returns == "spk of (spk, mem)" else mem


def _per_channel_threshold():
    return Leaky(beta=0.8, threshold=torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 1.6]).view(6, 1, 1), learn_threshold=True,
                 init_hidden=True, reset_mechanism="zero")  # fmt: skip


CASES = {
    "subtract": (lambda: Leaky(beta=0.9, init_hidden=True), dict(reset="subtract", reset_amount=1.0, tau=0.8999999761581421)),
    "zero": (lambda: Leaky(beta=0.7, threshold=0.8, init_hidden=True, reset_mechanism="zero"),
             dict(reset="zero", vth=0.800000011920929, reset_amount=None)),
    "none": (lambda: Leaky(beta=0.5, init_hidden=True, reset_mechanism="none"), dict(reset="none", tau=0.5)),
    "zero, reset_delay=False": (lambda: Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero", reset_delay=False),
                                dict(reset="zero", reset_timing="same_step")),
    "beta 1.3 clamped, learn_beta, surrogate_disable": (
        lambda: Leaky(beta=1.3, learn_beta=True, surrogate_disable=True, init_hidden=True), dict(tau=1.0)),
    "per-channel threshold, fast_sigmoid": (
        lambda: Leaky(beta=0.9, threshold=torch.linspace(0.7, 1.2, 6).view(6, 1, 1), init_hidden=True,
                      spike_grad=surrogate.fast_sigmoid()), dict(reset="subtract")),
    "per-neuron beta, all equal": (lambda: Leaky(beta=torch.full((6, 8, 8), 0.75), init_hidden=True), dict(tau=0.75)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_leaky_maps_field_for_field_and_the_float_ir_reproduces_spikes_and_membranes(case):
    make, fields = CASES[case]
    model = _seeded(TwoLayers(make(), Leaky(beta=0.9, threshold=torch.linspace(0.8, 1.4, 12), init_hidden=True)))
    traced = trace_model(model, (2, 8, 8), T)
    assert traced.time_mode == "single" and traced.readout == "mean_over_time" and traced.score_scale == T
    assert [a.name for a in traced.adapters] == ["inflor", "snntorch"] and not traced.inexact
    a, b = traced.graph.node("a"), traced.graph.node("b")
    assert a.compare == ">" and a.charge == "affine" and a.gain == 1.0 and a.v_reset == 0.0 and a.spike_value == 1.0
    assert fields.get("reset_timing", "next_step") == a.reset_timing
    for key, value in fields.items():
        assert getattr(a, key) == value, (key, getattr(a, key))
    if case.startswith("per-channel"):
        expected = torch.linspace(0.7, 1.2, 6).double().numpy()
        assert np.array_equal(a.vth, expected) and np.array_equal(a.reset_amount, expected)  # subtracts Vth per channel
    # The linear layer's per-neuron threshold is per channel of an (N,) layer.
    assert np.array_equal(b.vth, torch.linspace(0.8, 1.4, 12).double().numpy()) and b.reset_timing == "next_step"
    images = _images()
    for _ in range(2):  # each run starts from zeroed membranes
        reference = traced.run(images)
        ir = run_float(traced.graph, images, record=True)  # free-running: every layer from its own spikes
        for name in ("a", "pool", "b"):
            assert np.array_equal(reference.spikes[name], ir.spikes[name]), name
            assert 0 < reference.spikes[name].mean() < 1, name
        for name in ("a", "b"):  # mem (pre-reset) == the IR's H, bit for bit
            if name in reference.membranes:
                assert np.array_equal(reference.membranes[name], ir.membranes[name]), name
        assert ("a" in reference.membranes) == (a.reset_timing == "next_step" or a.reset == "none")
        assert np.array_equal(reference.scores, ir.scores)  # the spike count


def test_reset_delay_false_zero_is_a_same_step_reset_to_zero():
    """The module docstring's induction, in the module itself: mem is 0 after a spike and the delayed reset never fires."""
    delayed = Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero", reset_delay=False)
    x = torch.tensor([[0.7], [0.7], [0.3], [2.5], [0.9], [0.0]])
    spikes, mems = [], []
    for x_t in x:
        spikes.append(delayed(x_t).item())
        mems.append(delayed.mem.item())
        assert delayed.reset.item() == 0.0
    h, expected_spikes, expected_mems = 0.0, [], []
    for x_t in x.flatten().tolist():
        h = np.float32(0.8) * np.float32(h) + np.float32(x_t)
        s = float(h > 1.0)
        h = h * (1 - s)
        expected_spikes.append(s)
        expected_mems.append(float(h))
    assert spikes == expected_spikes == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0] and mems == pytest.approx(expected_mems)


@pytest.mark.parametrize("returns", ["mem", "spk of (spk, mem)"])
def test_the_output_leaky_readouts(returns):
    """output=True returns (spk, mem): its spikes are the spike count; a non-resetting layer's mem, the mean membrane."""
    b = Leaky(beta=0.85, init_hidden=True, output=True, reset_mechanism="none" if returns == "mem" else "zero")
    model = _seeded(TwoLayers(Leaky(beta=0.9, init_hidden=True), b, returns))
    traced = trace_model(model, (2, 8, 8), T)
    readout = traced.graph.nodes[-1]
    if returns == "mem":
        assert (readout.name, readout.readout, readout.tau, readout.sources) == ("b", "mean_membrane", 0.8500000238418579, ("fc",))
        assert "b" not in [x.name for x in traced.graph.nodes[:-1]] and traced.score_scale == 1  # its spikes unused
    else:
        assert readout.readout == "spike_count" and traced.graph.node("b").reset == "zero"
    images = _images()
    reference = traced.run(images)
    ir = run_float(traced.graph, images, record=True)
    assert np.array_equal(reference.spikes["a"], ir.spikes["a"])
    if returns == "mem":  # float32 sums over T in another order: the last ulp
        np.testing.assert_allclose(ir.scores, reference.scores, rtol=1e-6, atol=1e-6)
        assert np.abs(reference.scores).max() > 0.1
    else:
        assert np.array_equal(ir.scores, reference.scores)


class Nested(nn.Module):
    """A Leaky inside a nested Sequential, which snntorch.utils.reset(net) would miss."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Sequential(Leaky(beta=0.9, init_hidden=True)))
        self.fc, self.out = nn.Linear(4 * 8 * 8, 5), Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        return self.out(self.fc(self.body(x).flatten(1)))


def test_state_reset_touches_every_leaky_of_this_model_and_no_other():
    model, other = _seeded(Nested()), Leaky(beta=0.5, init_hidden=True)
    other(torch.ones(3))  # another model's neuron, with state
    traced = trace_model(model, (2, 8, 8), T)
    images = _images(4)
    first, second = traced.run(images), traced.run(images)
    for name in first.spikes:
        assert np.array_equal(first.spikes[name], second.spikes[name]), name
    assert not model.body[1][0].mem.any() and not model.out.mem.any()  # left reset
    assert other.mem.tolist() == [1.0, 1.0, 1.0]  # untouched
    assert [a.name for a in adapters_for(model)] == ["inflor", "snntorch"]


@pytest.mark.parametrize("name", [n for n, f in inspect.getmembers(surrogate, inspect.isfunction)
                                  if f.__module__ == "snntorch.surrogate" and n not in ("LSO", "custom_surrogate")])  # fmt: skip
def test_every_snntorch_spike_function_fires_on_mem_minus_threshold_above_zero(name):
    function = getattr(surrogate, name)()
    x = torch.cat([torch.randn(10000, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([0.0, -0.0, 1e-38, -1e-38, 1e-45, -1e-45])])  # fmt: skip
    assert torch.equal(function(x), (x > 0).float())


class CalledWithMem(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.lif = nn.Linear(2 * 8 * 8, 4), Leaky(beta=0.9)

    def forward(self, x):
        spk, mem = self.lif(self.fc(x.flatten(1)), torch.zeros(4))
        return spk


def _leaky(**kw):
    return TwoLayers(Leaky(beta=0.9, init_hidden=True, **kw), Leaky(beta=0.9, init_hidden=True))


def _custom_spike(x):
    return (x > 0).float()


@pytest.mark.parametrize(
    "model, error, message",
    [
        (TwoLayers(snntorch.Synaptic(alpha=0.9, beta=0.8, init_hidden=True), Leaky(beta=0.9, init_hidden=True)),
         AdapterError, "snnTorch Synaptic 'a' has no IR mapping: only Leaky maps onto the IR neuron"),
        (_leaky(reset_delay=False), AdapterError, "has reset_delay=False with reset_mechanism='subtract'"),
        (_leaky(inhibition=True), AdapterError, "has inhibition=True"),
        (_leaky(graded_spikes_factor=0.5), AdapterError, "emits graded spikes"),
        (_leaky(spike_grad=_custom_spike), AdapterError, "which is not one of snntorch.surrogate's"),
        (TwoLayers(Leaky(beta=torch.rand(6, 1, 1), init_hidden=True), Leaky(beta=0.9, init_hidden=True)), AdapterError,
         "has a per-neuron beta (6, 1, 1) with different values; the IR's leak is one value per layer"),
        (TwoLayers(Leaky(beta=0.9, threshold=torch.linspace(0.5, 1, 8), init_hidden=True),
                   Leaky(beta=0.9, init_hidden=True)), AdapterError,
         "its threshold of shape (8,) varies within a channel of the [6, 8, 8] layer; the IR's threshold is one value per "
         "layer or per channel (the first axis): give it shape (6, 1, 1)"),
        (CalledWithMem(), UnsupportedOpError, "a neuron is called with its input current alone"),
        (TwoLayers(Leaky(beta=0.9, init_hidden=True), Leaky(beta=0.9, init_hidden=True, output=True), "mem"),
         UnsupportedReadoutError, "the model returns the membrane of neuron 'b', but it resets (subtract)"),
    ],
    ids=["synaptic", "reset-delay-subtract", "inhibition", "graded", "custom-spike-function", "per-neuron-beta",
         "threshold-within-channel", "called-with-mem", "membrane-of-resetting-layer"],
)  # fmt: skip
def test_what_does_not_map_is_refused_by_name(model, error, message):
    with pytest.raises(error) as caught:
        trace_model(_seeded(model), (2, 8, 8), 3)
    assert message in str(caught.value)


def test_the_tuple_a_leaky_returns_must_be_unpacked():
    class ReturnsTuple(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(2 * 8 * 8, 4), Leaky(beta=0.9, init_hidden=True, output=True)

        def forward(self, x):
            return self.lif(self.fc(x.flatten(1)))

    with pytest.raises(UnsupportedOpError, match="the model returns the tuple neuron 'lif' returns; return one tensor"):
        trace_model(ReturnsTuple(), (2, 8, 8), 3)

    class ReadsMem(TwoLayers):
        def forward(self, x):
            spk, mem = self.a(self.conv(x))
            return self.b(self.fc(self.pool(mem).flatten(1)))

    refused = ReadsMem(Leaky(beta=0.9, init_hidden=True, output=True), Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(UnsupportedOpError, match="it reads the membrane of neuron 'a'; a membrane can only be the model's output"):
        trace_model(refused, (2, 8, 8), 3)
