"""The SpikingJelly adapter: every neuron variant field for field, its spikes reproduced by the float IR free-running,
the stateless wrappers and containers in both step modes, the state reset, and every refusal by name."""

import numpy as np
import pytest
import torch
from torch import nn

spikingjelly = pytest.importorskip("spikingjelly")  # the [spikingjelly] extra; `make setup` installs it

from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

from inflor_deploy.backends.sim.float_ir import run_float  # noqa: E402
from tests.frontends.adapters.framework_cases import images as _images, seeded as _seeded  # noqa: E402
from inflor_deploy.frontends.adapters import AdapterError, adapters_for  # noqa: E402
from inflor_deploy.frontends.adapters.spikingjelly import HEAVISIDE_SURROGATES  # noqa: E402
from inflor_deploy.frontends.fx import UnsupportedOpError, trace_model  # noqa: E402
from inflor_deploy.ir import nodes as n  # noqa: E402

T = 5


class TwoLayers(nn.Module):
    """conv -> neuron A -> max pool -> linear -> neuron B -> mean over T (multi-step) or per step (single-step)."""

    def __init__(self, make, step_mode="m"):
        super().__init__()
        self.step_mode = step_mode
        self.conv = layer.Conv2d(2, 6, 3, padding=1, step_mode=step_mode)
        self.a = make(step_mode)
        self.pool = layer.MaxPool2d(2, step_mode=step_mode)
        self.flat = layer.Flatten(step_mode=step_mode)
        self.fc = layer.Linear(6 * 4 * 4, 12, step_mode=step_mode)
        self.b = make(step_mode)

    def forward(self, x):
        out = self.b(self.fc(self.flat(self.pool(self.a(self.conv(x))))))
        return out.mean(0) if self.step_mode == "m" else out


def _plif(**kw):
    def make(step_mode):
        node = neuron.ParametricLIFNode(step_mode=step_mode, **kw)
        with torch.no_grad():
            node.w.fill_(0.4)  # a "learned" tau = 1 / sigmoid(0.4), not the initial 2.0
        return node

    return make


NEURONS = {
    "IF soft": (lambda s: neuron.IFNode(v_reset=None, step_mode=s),
                dict(charge="affine", tau=1.0, gain=1.0, reset="subtract", reset_amount=1.0, v_reset=0.0)),
    "IF hard (default v_reset 0)": (lambda s: neuron.IFNode(step_mode=s),
                                    dict(charge="affine", reset="zero", reset_amount=None, v_reset=0.0)),
    "IF hard v_reset 0.25, vth 0.75": (lambda s: neuron.IFNode(v_threshold=0.75, v_reset=0.25, step_mode=s),
                                       dict(vth=0.75, reset="zero", v_reset=0.25)),
    "LIF decay_input soft": (lambda s: neuron.LIFNode(tau=2.0, v_reset=None, step_mode=s),
                             dict(charge="decay_divide_input", decay=2.0, tau=0.5, gain=0.5, reset="subtract",
                                  reset_amount=1.0)),
    "LIF decay_input hard": (lambda s: neuron.LIFNode(tau=3.0, step_mode=s, surrogate_function=surrogate.ATan()),
                             dict(charge="decay_divide_input", decay=3.0, reset="zero", v_reset=0.0)),
    "LIF no decay_input, v_reset -0.5": (lambda s: neuron.LIFNode(tau=1.5, decay_input=False, v_reset=-0.5,
                                                                  v_threshold=0.5, step_mode=s),
                                         dict(charge="decay_divide", decay=1.5, gain=1.0, reset="zero", v_reset=-0.5)),
    "PLIF decay_input soft": (_plif(v_reset=None), dict(charge="decay_multiply_input", reset="subtract")),
    "PLIF no decay_input hard": (_plif(decay_input=False), dict(charge="decay_multiply", gain=1.0, reset="zero")),
}  # fmt: skip


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("case", list(NEURONS))
def test_each_neuron_maps_field_for_field_and_the_float_ir_reproduces_its_spikes(case, step_mode):
    make, fields = NEURONS[case]
    # decay_input scales the input current by 1/tau: stronger weights keep the second layer firing.
    model = _seeded(TwoLayers(make, step_mode), gain=6.0 if "decay_input" in case and "no decay" not in case else 2.5)
    traced = trace_model(model, (2, 8, 8), T)
    assert traced.time_mode == {"m": "multi", "s": "single"}[step_mode] and traced.adapters[-1].name == "spikingjelly"
    a = traced.graph.node("a")
    assert a.compare == ">=" and a.reset_timing == "same_step" and not a.mpr and a.spike_value == 1.0
    for key, value in fields.items():
        assert getattr(a, key) == value, (key, getattr(a, key))
    if a.charge.startswith("decay_multiply"):  # ParametricLIFNode: q = w.float().sigmoid(), frozen, as _ops/plif computes
        assert a.decay == float(torch.tensor(0.4).sigmoid()) and a.tau == 1.0 - a.decay
    assert not traced.inexact  # the IR computes H in SpikingJelly's own float32 operations
    images = _images()
    for _ in range(2):  # the second run starts from reset state, as the first
        reference = traced.run(images)
        ir = run_float(traced.graph, images, record=True)  # free-running: every layer from its own spikes
        for name in ("a", "pool", "b"):
            assert np.array_equal(reference.spikes[name], ir.spikes[name]), name
            assert 0 < reference.spikes[name].mean() < 1, name
        assert np.array_equal(reference.scores, ir.scores)  # the spike count (run() gives the IR's units)
    assert isinstance(model.a.v, float)  # functional.reset_net left the module reset


def test_soft_reset_subtracts_vth_and_hard_reset_is_the_default():
    """DESIGN.md section 6, in the module itself: soft reset subtracts v_threshold (not 1); v_reset=0.0 is the default."""
    x = torch.tensor([[0.9], [0.9], [0.9]])  # [T, B=1, 1]
    soft = neuron.IFNode(v_threshold=0.5, v_reset=None, step_mode="m", store_v_seq=True)
    assert soft(x).flatten().tolist() == [1.0, 1.0, 1.0] and soft.v_seq.flatten().tolist() == pytest.approx([0.4, 0.8, 1.2])
    default = neuron.IFNode(step_mode="m")
    assert default.v_reset == 0.0
    model = _seeded(TwoLayers(lambda s: neuron.IFNode(v_threshold=0.5, v_reset=None, step_mode=s)))
    assert trace_model(model, (2, 8, 8), T).graph.node("a").reset_amount == 0.5  # Vth, not the spike value


class Wrapped(nn.Module):
    """Every stateless wrapper and both containers, multi-step; the frame is repeated inside (direct encoding)."""

    def __init__(self):
        super().__init__()
        self.stem = layer.SeqToANNContainer(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
        self.sn1 = neuron.IFNode(v_reset=None, step_mode="m")
        self.block = layer.MultiStepContainer(layer.Conv2d(6, 6, 3, padding=1), layer.BatchNorm2d(6), layer.Dropout(0.3))
        self.sn2 = neuron.LIFNode(tau=2.0, step_mode="m")
        self.pool = layer.AvgPool2d(2, step_mode="m")
        self.conv3 = layer.Conv2d(6, 8, 3, padding=1, step_mode="m")
        self.sn3 = neuron.IFNode(step_mode="m")
        self.gap = layer.AdaptiveAvgPool2d((2, 2), step_mode="m")
        self.head = layer.SeqToANNContainer(layer.Flatten(), layer.Dropout(0.2), layer.Linear(8 * 2 * 2, 10))

    def forward(self, image):
        x = image.unsqueeze(0).repeat(T, 1, 1, 1, 1)
        x = self.pool(self.sn2(self.block(self.sn1(self.stem(x)))))
        return self.head(self.gap(self.sn3(self.conv3(x)))).mean(0)


def _calibrate_batch_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.6)
    return model


def test_wrappers_and_containers_apply_their_layers_per_step():
    model = _calibrate_batch_norms(_seeded(Wrapped()))
    traced = trace_model(model, (2, 8, 8), T)
    assert traced.encodes_inside and traced.readout == "module"
    assert [(type(x).__name__, x.name) for x in traced.graph][1:] == [
        ("Conv2d", "stem.0"), ("BatchNorm", "stem.1"), ("Neuron", "sn1"),
        ("Conv2d", "block.0"), ("BatchNorm", "block.1"), ("Neuron", "sn2"), ("AvgPool2d", "pool"),
        ("Conv2d", "conv3"), ("Neuron", "sn3"), ("AvgPool2d", "gap"), ("Flatten", "head.0"), ("Linear", "head.2"),
        ("Accumulator", "mean"),
    ]  # fmt: skip
    images = _images()
    reference = traced.run(images)
    ir = run_float(traced.graph, images, record=True)
    for name in ("sn1", "sn2", "sn3"):
        assert np.array_equal(reference.spikes[name], ir.spikes[name]), name
        assert 0 < reference.spikes[name].mean() < 1, name
    np.testing.assert_allclose(ir.scores, reference.scores, rtol=1e-5, atol=1e-6)  # float32 sums, another order


class SingleStepWrapped(nn.Module):
    """Single-step: wrappers in step_mode 's' (the torch layer as is) in nn.Sequential, the state inside."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(layer.Conv2d(2, 6, 3, padding=1), layer.BatchNorm2d(6))
        self.sn1 = neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None)
        self.pool = layer.MaxPool2d(2)
        self.fc = nn.Sequential(layer.Flatten(), layer.Linear(6 * 4 * 4, 10))
        self.sn2 = neuron.IFNode()

    def forward(self, x):
        return self.sn2(self.fc(self.pool(self.sn1(self.conv(x)))))


def test_single_step_wrappers_and_state_reset():
    model = _calibrate_batch_norms(_seeded(SingleStepWrapped()))
    traced = trace_model(model, (2, 8, 8), T)
    # The mean over the T calls of 0/1 spikes: the IR's spike count is T times it.
    assert traced.time_mode == "single" and traced.readout == "mean_over_time" and traced.score_scale == T
    assert traced.graph.nodes[-1].readout == "spike_count"
    images = _images()
    first = traced.run(images)
    again = traced.run(images)
    ir = run_float(traced.graph, images, record=True)
    for name in ("sn1", "pool", "sn2"):
        assert np.array_equal(first.spikes[name], again.spikes[name]) and np.array_equal(first.spikes[name], ir.spikes[name])
    with torch.no_grad():  # the user's own loop: reset_net, then one call per step
        functional.reset_net(model)
        own = torch.stack([model(torch.from_numpy(images)) for _ in range(T)]).mean(0).numpy()
    assert np.array_equal(first.scores, traced.ir_scores(own)) and np.array_equal(first.scores, ir.scores)


def test_adapter_is_picked_from_the_model():
    assert [a.name for a in adapters_for(Wrapped())] == ["inflor", "spikingjelly"]


@pytest.mark.parametrize("surrogate_class", HEAVISIDE_SURROGATES, ids=lambda c: c.__name__)
def test_every_accepted_surrogate_fires_on_the_heaviside_step(surrogate_class):
    x = torch.cat([torch.randn(10000, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([0.0, -0.0, 1e-38, -1e-38, 1e-45, -1e-45])])  # fmt: skip
    assert torch.equal(surrogate_class()(x), (x >= 0).to(x))


class One(nn.Module):
    def __init__(self, node, conv=None, readout=None):
        super().__init__()
        self.conv = conv or layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
        self.sn = node
        self.fc = layer.Linear(4 * 8 * 8, 3, step_mode="m")
        self.readout = readout

    def forward(self, x):
        s = self.sn(self.conv(x))
        if self.readout is None:
            return s.mean(0)
        return self.readout(self.fc(s.flatten(2)))


def _precision(node):
    node._neuron_precision = (torch.float16, "fp16", "fp16")
    return node


def _reset_value(node):
    node.set_reset_value("v", 0.3)
    return node


@pytest.mark.parametrize(
    "model, message",
    [
        (One(neuron.HalfThresholdIFNode(step_mode="m")), "SpikingJelly HalfThresholdIFNode 'sn' has no IR mapping; the "
         "neurons that map are IFNode, LIFNode, ParametricLIFNode"),
        (One(neuron.SimpleIFNode(step_mode="m")), "SpikingJelly SimpleIFNode 'sn' has no IR mapping"),
        (One(neuron.IFNode(step_mode="m", surrogate_function=surrogate.Sigmoid(spiking=False))),
         "whose forward is not the Heaviside step"),
        (One(neuron.IFNode(step_mode="m", surrogate_function=surrogate.PoissonPass())), "fires through PoissonPass"),
        (One(_precision(neuron.IFNode(step_mode="m"))), "has a neuron precision setting"),
        (One(_reset_value(neuron.IFNode(step_mode="m"))), "its state resets to {'v': 0.3}, not v = 0.0"),
        (One(neuron.IFNode(step_mode="m"), layer.WSConv2d(2, 4, 3, padding=1, step_mode="m")),
         "SpikingJelly WSConv2d 'conv' has no IR mapping; supported: IFNode, LIFNode, ParametricLIFNode; layer.Conv2d"),
        (One(neuron.IFNode(step_mode="m"), layer.MultiStepContainer(nn.Conv2d(2, 4, 3, padding=1), neuron.IFNode())),
         "MultiStepContainer 'conv' steps the stateful IFNode conv.1 through time itself; give the neuron step_mode='m'"),
        (One(neuron.IFNode(step_mode="m"), readout=neuron.NonSpikingLIFNode(decode="mean-mem")),
         "SpikingJelly NonSpikingLIFNode 'readout' has no IR mapping; supported:"),
        (One(neuron.IFNode(step_mode="m"), layer.SynapseFilter(step_mode="m")),
         "SpikingJelly SynapseFilter 'conv' has no IR mapping"),
    ],
    ids=["half-threshold", "simple-node", "not-spiking", "poisson", "precision", "reset-value", "ws-conv",
         "container-with-neuron", "non-spiking-readout", "stateful-layer"],
)  # fmt: skip
def test_what_does_not_map_is_refused_by_name(model, message):
    with pytest.raises(AdapterError) as caught:
        trace_model(model, (2, 8, 8), 3, time_mode="multi")
    assert message in str(caught.value)


def test_max_pooling_of_currents_is_refused():
    class PoolCurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = layer.Conv2d(2, 4, 3, padding=1, step_mode="m"), layer.MaxPool2d(2, step_mode="m")
            self.sn = neuron.IFNode(step_mode="m")

        def forward(self, x):
            return self.sn(self.pool(self.conv(x))).mean(0)

    with pytest.raises(UnsupportedOpError, match="it max-pools a current, not a binary spike train"):
        trace_model(PoolCurrent(), (2, 8, 8), 3)
