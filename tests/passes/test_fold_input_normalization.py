"""FoldInputNormalization: structure (weights / std, bias maps at zero-padded borders), contract, preconditions."""

import numpy as np
import pytest
import torch

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Accumulator, Conv2d, Graph, Input, Linear, Neuron, Normalize, validate
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.fold_input_normalization import TOLERANCE, FoldInputNormalization
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.targets import load_target

MEAN = np.array([0.49, 0.48, 0.45], np.float32)
STD = np.array([0.25, 0.24, 0.26], np.float32)


def _ctx(graph):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph, count=6))


def conv_graph(padding=(1, 1), stride=(1, 1), groups=1, bias=True, seed=0) -> Graph:
    """Input(3, 6, 5) -> Normalize -> Conv2d 3x3 (6 channels) -> Neuron -> Linear -> Accumulator."""
    rng = np.random.default_rng(seed)
    out = 6
    oh = (6 + 2 * padding[0] - 3) // stride[0] + 1
    ow = (5 + 2 * padding[1] - 3) // stride[1] + 1
    graph = Graph(
        (
            Input("image", (), shape=(3, 6, 5)),
            Normalize("norm", ("image",), mean=MEAN, std=STD),
            Conv2d("conv", ("norm",), weight=rng.normal(0, 0.3, (out, 3 // groups, 3, 3)).astype(np.float32),
                   bias=rng.normal(0, 0.1, out).astype(np.float32) if bias else None, stride=stride,
                   padding=padding, groups=groups),  # fmt: skip
            Neuron("neuron", ("conv",), vth=0.5, reset_amount=1.0),
            Linear("fc", ("neuron",), weight=rng.normal(0, 0.2, (2, out * oh * ow)).astype(np.float32)),
            Accumulator("readout", ("fc",)),
        ),
        timesteps=3,
    )
    validate(graph)
    return graph


def test_conv_with_padding_gets_weights_over_std_and_a_per_position_bias_map():
    before = conv_graph()
    after = FoldInputNormalization.run(before, _ctx(before))
    validate(after)
    assert [type(x).__name__ for x in after] == ["Input", "Conv2d", "Neuron", "Linear", "Accumulator"]
    conv, folded = before.node("conv"), after.node("conv")
    assert folded.sources == ("image",)
    np.testing.assert_allclose(folded.weight, conv.weight / STD[None, :, None, None], rtol=1e-6)
    assert folded.bias.shape == (6, 6, 5)  # one bias per output position
    # Interior outputs see all 9 taps of every channel; a corner sees 4.
    shift = (conv.weight.astype(np.float64) * (MEAN / STD)[None, :, None, None])
    interior = conv.bias - shift.sum(axis=(1, 2, 3))
    corner = conv.bias - shift[:, :, 1:, 1:].sum(axis=(1, 2, 3))  # output (0, 0): taps a, b >= 1 are inside
    np.testing.assert_allclose(folded.bias[:, 2, 2], interior, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(folded.bias[:, 0, 0], corner, rtol=1e-6, atol=1e-6)
    assert not np.allclose(folded.bias[:, 0, 0], folded.bias[:, 2, 2])  # per channel would not be exact


def test_folded_conv_computes_the_normalized_conv_in_float64():
    before = conv_graph(padding=(1, 2), stride=(2, 1))
    after = FoldInputNormalization.run(before, _ctx(before))
    x = make_probe(before, count=4, seed=3).astype(np.float64)
    conv, folded = before.node("conv"), after.node("conv")
    normalized = (x - MEAN[None, :, None, None]) / STD[None, :, None, None]
    expected = torch.nn.functional.conv2d(torch.from_numpy(normalized), torch.from_numpy(conv.weight.astype(np.float64)),
                                          torch.from_numpy(conv.bias.astype(np.float64)), conv.stride, conv.padding)
    got = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(folded.weight.astype(np.float64)), None,
                                     folded.stride, folded.padding) + torch.from_numpy(folded.bias.astype(np.float64))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_without_padding_the_bias_stays_per_channel_and_groups_use_their_channels():
    before = conv_graph(padding=(0, 0), groups=3)
    after = FoldInputNormalization.run(before, _ctx(before))
    folded, conv = after.node("conv"), before.node("conv")
    assert folded.bias.shape == (6,)
    # groups=3: outputs 0, 1 read channel 0; 2, 3 channel 1; 4, 5 channel 2.
    np.testing.assert_allclose(folded.weight[:, 0], conv.weight[:, 0] / np.repeat(STD, 2)[:, None, None], rtol=1e-6)
    assert FoldInputNormalization.check(before, after, _ctx(before)).ok


def test_linear_reads_the_raw_input():
    rng = np.random.default_rng(2)
    before = Graph(
        (
            Input("image", (), shape=(3, 2, 2)),
            Normalize("norm", ("image",), mean=MEAN, std=STD),
            Linear("fc1", ("norm",), weight=rng.normal(0, 0.5, (5, 12)).astype(np.float32),
                   bias=rng.normal(0, 0.1, 5).astype(np.float32)),  # fmt: skip
            Neuron("n", ("fc1",), vth=0.5, reset_amount=1.0),
            Linear("fc2", ("n",), weight=rng.normal(0, 0.5, (2, 5)).astype(np.float32)),
            Accumulator("readout", ("fc2",)),
        ),
        timesteps=2,
    )
    after = FoldInputNormalization.run(before, _ctx(before))
    x = make_probe(before, count=5, seed=1).reshape(5, -1).astype(np.float64)
    fc1, folded = before.node("fc1"), after.node("fc1")
    normalized = (x - np.repeat(MEAN, 4)) / np.repeat(STD, 4)
    np.testing.assert_allclose(x @ folded.weight.T.astype(np.float64) + folded.bias,
                               normalized @ fc1.weight.T.astype(np.float64) + fc1.bias, atol=1e-5)  # fmt: skip
    result = FoldInputNormalization.check(before, after, _ctx(before))
    assert result.ok and result.kind == "float-tolerance" and result.metrics["tolerance_rel"] == TOLERANCE


def test_contract_holds_and_spikes_match_the_normalized_network():
    before = conv_graph(seed=5)
    ctx = _ctx(before)
    after = FoldInputNormalization.run(before, ctx)
    result = FoldInputNormalization.check(before, after, ctx)
    assert result.ok, result.summary
    assert result.metrics["max_rel_diff"] <= TOLERANCE
    ref, out = run_float(before, ctx.probe, record=True), run_float(after, ctx.probe, record=True)
    assert ref.spikes["neuron"].any() and ref.spikes["neuron"].mean() < 1
    mismatches = int((ref.spikes["neuron"] != out.spikes["neuron"]).sum())
    assert mismatches <= result.metrics["near_ties"] + result.metrics["after_first"]


def test_a_normalization_that_feeds_a_neuron_is_refused():
    graph = Graph(
        (
            Input("image", (), shape=(2,)),
            Normalize("norm", ("image",), mean=np.zeros(2, np.float32), std=np.ones(2, np.float32)),
            Neuron("n", ("norm",), vth=0.5, reset_amount=1.0),
            Linear("fc", ("n",), weight=np.ones((1, 2), np.float32)),
            Accumulator("readout", ("fc",)),
        ),
        timesteps=1,
    )
    with pytest.raises(PassError, match="folds only into Conv2d and Linear"):
        FoldInputNormalization.run(graph, _ctx(graph))


def test_normalize_needs_one_positive_std_per_channel():
    from inflor_deploy.ir import IRError

    bad = conv_graph().replace_nodes(
        [Normalize("norm", ("image",), mean=MEAN, std=np.array([0.2, 0.0, 0.3], np.float32)) if x.name == "norm" else x
         for x in conv_graph()]  # fmt: skip
    )
    with pytest.raises(IRError, match="std must be > 0"):
        validate(bad)
    short = conv_graph().replace_nodes(
        [Normalize("norm", ("image",), mean=MEAN[:2], std=STD[:2]) if x.name == "norm" else x for x in conv_graph()]
    )
    with pytest.raises(IRError, match="3 entries"):
        validate(short)
