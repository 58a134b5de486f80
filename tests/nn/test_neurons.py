"""Tests for the spiking neurons and the output accumulator (DESIGN.md section 1)."""

import math

import pytest
import torch
from torch import nn

from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.mpr import phi, phi_inverse_scalar
from inflor_deploy.nn.neurons import IFNeuron, LIFNeuron, Neuron, OutputAccumulator, SRIF
from inflor_deploy.nn.surrogate import SURROGATE_KINDS, Surrogate, surrogate_gradient

VTH = 0.5
# Paper Fig. 2: inputs 1.5, 1.2, 1.5, 0.9, 1.4 x Vth = 0.75, 0.6, 0.75, 0.45, 0.7.
FIG2_INPUT = torch.tensor([1.5, 1.2, 1.5, 0.9, 1.4], dtype=torch.float64) * VTH


def _fig2(neuron: Neuron) -> tuple[list[float], list[float]]:
    neuron.record_membrane = True
    spikes = neuron(FIG2_INPUT.reshape(5, 1, 1))
    return spikes.flatten().tolist(), neuron.last_membrane.flatten().tolist()


@pytest.mark.parametrize("mpr", [False, True])
def test_paper_fig2_srif_fires_three_times(mpr):
    # By hand, U[t] = H[t] - O[t] (subtract the spike value 1):
    #   t0: H = 0.75        >= 0.5 spike, U = -0.25
    #   t1: H = -0.25+0.6  = 0.35  no,    U = 0.35
    #   t2: H = 0.35+0.75  = 1.10  spike, U = 0.10
    #   t3: H = 0.10+0.45  = 0.55  spike, U = -0.45
    #   t4: H = -0.45+0.7  = 0.25  no
    # MPR changes no spike: phi(h) >= 0.5 <=> h >= 0.5.
    spikes, membrane = _fig2(SRIF(vth=VTH, mpr=mpr))
    assert spikes == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert membrane == pytest.approx([0.75, 0.35, 1.10, 0.55, 0.25], abs=1e-12)


@pytest.mark.parametrize("mpr", [False, True])
def test_paper_fig2_hard_reset_if_fires_four_times(mpr):
    # By hand, U[t] = H[t] * (1 - O[t]):
    #   t0: H = 0.75 spike, U = 0
    #   t1: H = 0.60 spike, U = 0
    #   t2: H = 0.75 spike, U = 0
    #   t3: H = 0.45 no,    U = 0.45
    #   t4: H = 0.45+0.7 = 1.15 spike
    spikes, membrane = _fig2(IFNeuron(vth=VTH, mpr=mpr))
    assert spikes == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert membrane == pytest.approx([0.75, 0.60, 0.75, 0.45, 1.15], abs=1e-12)


def test_lif_leaks_by_tau():
    # tau = 0.5, constant input 0.3, vth 0.5, hard reset:
    #   H0 = 0.3 no; H1 = 0.15+0.3 = 0.45 no; H2 = 0.225+0.3 = 0.525 spike, U = 0;
    #   H3 = 0.3 no; H4 = 0.45 no; H5 = 0.525 spike.
    neuron = LIFNeuron(vth=0.5, tau=0.5)
    neuron.record_membrane = True
    spikes = neuron(torch.full((6, 1), 0.3, dtype=torch.float64))
    assert spikes.flatten().tolist() == [0, 0, 1, 0, 0, 1]
    assert neuron.last_membrane.flatten().tolist() == pytest.approx([0.3, 0.45, 0.525] * 2, abs=1e-12)


def test_soft_reset_subtracts_reset_amount_not_vth():
    # vth = 0.5, reset_amount = 0.25, input 0.6 every step:
    #   H0 = 0.6 spike U = 0.35; H1 = 0.95 spike U = 0.70; H2 = 1.30 spike.
    neuron = Neuron(vth=0.5, reset="subtract", reset_amount=0.25)
    neuron.record_membrane = True
    neuron(torch.full((3, 1), 0.6, dtype=torch.float64))
    assert neuron.last_membrane.flatten().tolist() == pytest.approx([0.6, 0.95, 1.30], abs=1e-12)


@pytest.mark.parametrize("neuron", [SRIF(), SRIF(mpr=False), IFNeuron(mpr=True), LIFNeuron(tau=0.7)])
def test_forward_equals_repeated_step(neuron):
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = torch.zeros_like(x[0])
    outs = []
    for t in range(6):
        o, u = neuron.step(x[t], u)
        outs.append(o)
    assert torch.equal(neuron(x), torch.stack(outs))


@pytest.mark.parametrize("vth", [0.5, 0.3, 0.8, 1.7])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_mpr_folds_into_threshold_spike_exactly(vth, reset):
    # phi strictly increasing: phi(h) >= vth <=> h >= phi^-1(vth), so an MPR
    # neuron and a plain neuron at the folded threshold emit identical trains.
    x = 0.8 * torch.randn(8, 64, 32, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with_mpr = Neuron(vth=vth, reset=reset, mpr=True)(x)
    folded = Neuron(vth=phi_inverse_scalar(vth), reset=reset, mpr=False)(x)
    assert torch.equal(with_mpr, folded)
    assert 0 < int(with_mpr.sum()) < with_mpr.numel()


def test_mpr_gradient_flows_through_phi():
    # One step from U = 0: O = Theta(phi(x) - vth), so dO/dx = g(phi(x) - vth) * phi'(x).
    surrogate = Surrogate("sigmoid", 1.0)
    x = torch.tensor([[-0.4, 0.2, 0.45, 0.6, 1.3]], dtype=torch.float64, requires_grad=True)
    SRIF(vth=0.5, mpr=True, surrogate=surrogate)(x).sum().backward()
    xd = x.detach().clone().requires_grad_(True)
    phi(xd).sum().backward()
    expected = surrogate_gradient(phi(x.detach()) - 0.5, surrogate) * xd.grad
    assert torch.allclose(x.grad, expected, rtol=1e-12)
    # Without MPR the gradient is just g(x - vth): MPR really changes training.
    x2 = x.detach().clone().requires_grad_(True)
    SRIF(vth=0.5, mpr=False, surrogate=surrogate)(x2).sum().backward()
    assert not torch.allclose(x2.grad, x.grad)


@pytest.mark.parametrize("kind", SURROGATE_KINDS)
@pytest.mark.parametrize(
    "make_neuron",
    [
        lambda s: SRIF(surrogate=s),
        lambda s: SRIF(mpr=False, surrogate=s),
        lambda s: IFNeuron(surrogate=s),
        lambda s: IFNeuron(mpr=True, surrogate=s),
        lambda s: LIFNeuron(surrogate=s),
        lambda s: LIFNeuron(mpr=True, surrogate=s),
    ],
    ids=["srif+mpr", "srif", "if", "if+mpr", "lif", "lif+mpr"],
)
def test_first_layer_gets_gradient(kind, make_neuron):
    torch.manual_seed(0)
    model = nn.Sequential(
        TimeDistributed(nn.Linear(6, 16)),
        make_neuron(Surrogate(kind, 1.0)),
        TimeDistributed(nn.Linear(16, 3)),
        OutputAccumulator(),
    )
    x = torch.rand(4, 8, 6)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    loss.backward()
    grad = model[0].module.weight.grad
    assert bool(torch.isfinite(grad).all())
    assert grad.abs().sum().item() > 0


def test_kinds_and_attributes():
    cases = [
        (SRIF(), "srif", 1.0, "subtract", True),
        (IFNeuron(), "if", 1.0, "zero", False),
        (LIFNeuron(), "lif", 0.5, "zero", False),
    ]
    for neuron, kind, tau, reset, mpr in cases:
        assert isinstance(neuron, Neuron)
        assert (neuron.kind, neuron.tau, neuron.reset, neuron.mpr, neuron.vth) == (kind, tau, reset, mpr, 0.5)
        assert neuron.reset_amount == 1.0
        assert neuron.record_membrane is False and neuron.last_membrane is None
        assert list(neuron.parameters()) == [] and dict(neuron.state_dict()) == {}
    assert Neuron().kind == "srif"
    assert Neuron(reset="zero").kind == "if"
    assert Neuron(tau=0.9, reset="zero").kind == "lif"
    assert Neuron(tau=0.9).kind == "soft_lif"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vth": 0.0}, r"vth must be > 0"),
        ({"vth": -0.5}, r"vth must be > 0"),
        ({"vth": math.nan}, r"vth must be finite"),
        ({"vth": math.inf}, r"vth must be finite"),
        ({"vth": "0.5"}, r"vth must be a real number"),
        ({"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ({"tau": -0.1}, r"tau must be in \(0, 1\]"),
        ({"tau": 1.5}, r"tau must be in \(0, 1\]"),
        ({"reset": "hard"}, r"reset must be one of subtract, zero"),
        ({"reset_amount": 0.0}, r"reset_amount must be > 0"),
        ({"mpr": 1}, r"mpr must be True or False"),
        ({"surrogate": "rectangular"}, r"surrogate must be a Surrogate"),
    ],
)
def test_neuron_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Neuron(**kwargs)


def test_subclass_validation_and_bad_input_rank():
    with pytest.raises(ValueError, match="vth must be > 0"):
        SRIF(vth=-1.0)
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\]"):
        LIFNeuron(tau=2.0)
    with pytest.raises(ValueError, match=r"time-first \[T, B, ...\]"):
        SRIF()(torch.zeros(4))


def test_record_membrane_keeps_pre_reset_membrane_detached():
    neuron = SRIF()
    x = torch.rand(3, 2, 5, requires_grad=True)
    neuron(x)
    assert neuron.last_membrane is None
    neuron.record_membrane = True
    neuron(x)
    assert neuron.last_membrane.shape == (3, 2, 5)
    assert not neuron.last_membrane.requires_grad
    # At t = 0 the membrane starts from U = 0, so H[0] = X[0].
    assert torch.equal(neuron.last_membrane[0], x[0].detach())


def test_output_accumulator_mean_and_step_agree():
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    readout = OutputAccumulator()
    a = torch.zeros_like(x[0])
    for t in range(5):
        a = readout.step(x[t], a)
    assert torch.allclose(readout(x), a / 5, rtol=1e-14)
    assert torch.allclose(readout(x), x.mean(0), rtol=1e-14)
    with pytest.raises(ValueError):
        readout(torch.zeros(3))
