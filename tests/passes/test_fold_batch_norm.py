"""FoldBatchNorm: structure, float-tolerance contract, threshold boundaries, preconditions."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import Accumulator, BatchNorm, Conv2d, Graph, Input, Linear, Neuron, validate
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.fold_batch_norm import TOLERANCE, FoldBatchNorm
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.targets import load_target

UNIT = 1 / 64  # a membrane step that is exact in float32 and float64


def _ctx(graph, probe=None):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph) if probe is None else probe)


def _graph(conv_weight, conv_bias, bn, timesteps=2, vth=0.5):
    """Input(1,4,4) -> Conv2d 1x1 -> BatchNorm -> Neuron -> Linear -> Accumulator."""
    channels = conv_weight.shape[0]
    rng = np.random.default_rng(1)
    return Graph(
        (
            Input("image", (), shape=(1, 4, 4)),
            Conv2d("conv", ("image",), weight=conv_weight.astype(np.float32),
                   bias=None if conv_bias is None else conv_bias.astype(np.float32)),
            BatchNorm("bn", ("conv",), **{k: np.asarray(v, np.float32) for k, v in bn.items() if k != "eps"},
                      eps=bn.get("eps", 1e-5)),
            Neuron("neuron", ("bn",), vth=vth, mpr=True),
            Linear("fc", ("neuron",), weight=rng.normal(size=(2, channels * 16)).astype(np.float32)),
            Accumulator("readout", ("fc",)),
        ),
        timesteps=timesteps,
    )  # fmt: skip


def _random_graph(seed=0, bias=True):
    rng = np.random.default_rng(seed)
    c = 3
    bn = dict(gamma=rng.uniform(0.5, 2, c), beta=rng.uniform(-0.3, 0.3, c), mean=rng.uniform(-0.5, 0.5, c),
              var=rng.uniform(0.2, 2, c))  # fmt: skip
    return _graph(rng.normal(size=(c, 1, 1, 1)), rng.normal(size=c) if bias else None, bn, timesteps=4)


@pytest.mark.parametrize("bias", [True, False])
def test_batch_norm_folds_into_conv(bias):
    before = _random_graph(bias=bias)
    after = FoldBatchNorm.run(before, _ctx(before))
    validate(after)
    assert [type(x).__name__ for x in after] == ["Input", "Conv2d", "Neuron", "Linear", "Accumulator"]
    assert after.node("neuron").sources == ("conv",)
    bn, conv = before.node("bn"), before.node("conv")
    s = bn.gamma.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps)
    t = bn.beta - bn.mean * s
    b = conv.bias if bias else 0.0
    folded = after.node("conv")
    assert folded.weight.dtype == np.float32 and folded.bias.dtype == np.float32
    np.testing.assert_allclose(folded.weight, conv.weight * s[:, None, None, None], rtol=1e-7)
    np.testing.assert_allclose(folded.bias, b * s + t, rtol=1e-6, atol=1e-7)
    # Pure: the input graph is unchanged.
    assert isinstance(before.node("bn"), BatchNorm) and before.node("conv").weight is conv.weight


def test_contract_holds_within_stated_tolerance():
    before = _random_graph()
    ctx = _ctx(before)
    result = FoldBatchNorm.check(before, FoldBatchNorm.run(before, ctx), ctx)
    assert result.ok, result.summary
    assert result.kind == "float-tolerance"
    assert result.metrics["tolerance_rel"] == TOLERANCE == 1e-5
    assert 0 < result.metrics["max_rel_diff"] <= TOLERANCE  # float32 rounding of the folded weights
    assert result.metrics["unexplained"] == 0
    assert result.first_divergence is None


def test_contract_catches_a_wrong_fold():
    before = _random_graph()
    ctx = _ctx(before)
    after = FoldBatchNorm.run(before, ctx)
    conv = after.node("conv")
    wrong = after.replace_nodes(
        dataclasses.replace(x, weight=conv.weight * np.float32(1.01)) if x is conv else x for x in after
    )
    result = FoldBatchNorm.check(before, wrong, ctx)
    assert not result.ok
    assert result.first_divergence["layer"] == "neuron"


def test_folds_into_linear():
    rng = np.random.default_rng(3)
    graph = Graph(
        (
            Input("image", (), shape=(1, 2, 2)),
            Linear("fc1", ("image",), weight=rng.normal(size=(5, 4)).astype(np.float32)),
            BatchNorm("bn", ("fc1",), gamma=rng.uniform(0.5, 2, 5).astype(np.float32),
                      beta=np.zeros(5, np.float32), mean=rng.normal(size=5).astype(np.float32),
                      var=np.ones(5, np.float32)),
            Neuron("neuron", ("bn",)),
            Linear("fc2", ("neuron",), weight=rng.normal(size=(2, 5)).astype(np.float32)),
            Accumulator("readout", ("fc2",)),
        ),
        timesteps=3,
    )  # fmt: skip
    ctx = _ctx(graph)
    after = FoldBatchNorm.run(graph, ctx)
    assert not after.of_type(BatchNorm) and after.node("fc1").bias is not None
    assert FoldBatchNorm.check(graph, after, ctx).ok


def test_threshold_boundaries_in_exact_units():
    # s = gamma / sqrt(var + eps) = 1/2 and t = beta - mean*s = 3/8 are exact, so with an
    # all-ones image the folded membranes are exactly vth - 1/64, vth, vth + 1/64.
    vth = 0.5
    currents = np.array([vth - UNIT, vth, vth + UNIT])
    conv_w = ((currents - 0.375) / 0.5).reshape(3, 1, 1, 1)
    bn = dict(gamma=[1.0] * 3, beta=[0.5] * 3, mean=[0.25] * 3, var=[4.0] * 3, eps=0.0)
    before = _graph(conv_w, None, bn, timesteps=1, vth=vth)
    ones = np.ones((1, 1, 4, 4), np.float32)
    after = FoldBatchNorm.run(before, _ctx(before, ones))
    for graph in (before, after):
        run = run_float(graph, ones, record=True)
        h = run.membranes["neuron"][0, 0, :, 0, 0]
        np.testing.assert_array_equal(h, currents.astype(np.float32))
        # Fires at H >= threshold: below, at, above.
        np.testing.assert_array_equal(run.spikes["neuron"][0, 0, :, 0, 0], [0, 1, 1])
    result = FoldBatchNorm.check(before, after, _ctx(before, ones))
    assert result.ok and result.metrics["max_abs_diff"] == 0 and result.metrics["spike_mismatches"] == 0


def test_batch_norm_after_a_neuron_cannot_fold():
    graph = _random_graph()
    nodes = list(graph)
    bn = graph.node("bn")
    bad = graph.replace_nodes(
        [nodes[0], dataclasses.replace(nodes[1]), Neuron("pre", ("conv",)),
         dataclasses.replace(bn, sources=("pre",)), *nodes[3:]]
    )  # fmt: skip
    validate(bad)
    with pytest.raises(PassError, match=r"BatchNorm 'bn' follows Neuron 'pre'.*Conv2d/Linear"):
        FoldBatchNorm.run(bad, _ctx(bad))


def test_batch_norm_whose_conv_feeds_others_cannot_fold():
    graph = _random_graph()
    nodes = list(graph)
    # The neuron also reads the raw conv output (a residual-style second source).
    neuron = dataclasses.replace(graph.node("neuron"), sources=("bn", "conv"))
    bad = graph.replace_nodes([*nodes[:3], neuron, *nodes[4:]])
    validate(bad)
    with pytest.raises(PassError, match=r"'conv' also feeds \['neuron'\]"):
        FoldBatchNorm.run(bad, _ctx(bad))


def test_contract_requires_no_batch_norm_left():
    before = _random_graph()
    result = FoldBatchNorm.check(before, before, _ctx(before))
    assert not result.ok and result.first_divergence == {"layer": "bn", "reason": "BatchNorm not folded"}
