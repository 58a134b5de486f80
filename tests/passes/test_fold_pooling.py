"""FoldAveragePool: pooling folds into the next Linear/Conv2d, Flatten is dropped."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inflor_deploy.ir import Accumulator, AvgPool2d, Conv2d, Flatten, Graph, Input, Linear, Neuron, validate
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.fold_pooling import EXACT_TOLERANCE, ROUNDED_TOLERANCE, FoldAveragePool
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.targets import load_target

UNIT = 1 / 64


def _ctx(graph, probe=None):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph) if probe is None else probe)


def _f32(a):
    return np.asarray(a, np.float32)


def _front(size, channels=2, seed=0):
    """Input(1, size, size) -> Conv2d 1x1 -> Neuron 'n1': a spiking (channels, size, size) map."""
    rng = np.random.default_rng(seed)
    return [
        Input("image", (), shape=(1, size, size)),
        Conv2d("conv1", ("image",), weight=_f32(rng.uniform(0.5, 1.5, (channels, 1, 1, 1)))),
        Neuron("n1", ("conv1",)),
    ]


def _linear_graph(size=4, kernel=(2, 2), flatten=True, seed=0, timesteps=3):
    rng = np.random.default_rng(seed)
    front = _front(size, seed=seed)
    ho, wo = (size - kernel[0]) // kernel[0] + 1, (size - kernel[1]) // kernel[1] + 1
    nodes = [*front, AvgPool2d("pool", ("n1",), kernel=kernel, stride=kernel)]
    if flatten:
        nodes.append(Flatten("flatten", ("pool",)))
    nodes += [
        Linear("fc1", (nodes[-1].name,), weight=_f32(rng.normal(size=(3, 2 * ho * wo))), bias=_f32([0.1, 0, -0.1])),
        Neuron("n2", ("fc1",)),
        Linear("fc2", ("n2",), weight=_f32(rng.normal(size=(2, 3)))),
        Accumulator("readout", ("fc2",)),
    ]
    return Graph(tuple(nodes), timesteps=timesteps)


def _conv_graph(size=8, kernel=(2, 2), conv_kernel=3, stride=1, padding=1, seed=0, pool_stride=None):
    rng = np.random.default_rng(seed)
    nodes = [
        *_front(size, seed=seed),
        AvgPool2d("pool", ("n1",), kernel=kernel, stride=pool_stride or kernel),
        Conv2d("conv2", ("pool",), weight=_f32(rng.normal(size=(3, 2, conv_kernel, conv_kernel))),
               bias=_f32(rng.normal(size=3)), stride=(stride, stride), padding=(padding, padding)),
        Neuron("n2", ("conv2",)),
        Flatten("flatten", ("n2",)),
    ]  # fmt: skip
    fan_in = int(np.prod(validate(Graph((*nodes, Accumulator("a", ("flatten",))), 1))["n2"]))
    nodes += [Linear("fc", ("flatten",), weight=_f32(rng.normal(size=(2, fan_in)))), Accumulator("readout", ("fc",))]
    return Graph(tuple(nodes), timesteps=3)


@pytest.mark.parametrize("flatten", [True, False])
def test_pool_folds_into_linear(flatten):
    before = _linear_graph(flatten=flatten)
    after = FoldAveragePool.run(before, _ctx(before))
    validate(after)
    assert not after.of_type(AvgPool2d, Flatten)
    fc = after.node("fc1")
    assert fc.sources == ("n1",) and fc.weight.shape == (3, 2 * 4 * 4)
    w = before.node("fc1").weight.reshape(3, 2, 2, 2)
    expected = np.repeat(np.repeat(w, 2, axis=2), 2, axis=3) / 4  # W'[o,c,h,w] = W[o,c,h//2,w//2]/4
    np.testing.assert_array_equal(fc.weight, expected.reshape(3, -1))
    np.testing.assert_array_equal(fc.bias, before.node("fc1").bias)
    result = FoldAveragePool.check(before, after, _ctx(before))
    assert result.ok, result.summary
    assert result.metrics["tolerance_rel"] == EXACT_TOLERANCE
    assert result.metrics["max_rel_diff"] <= EXACT_TOLERANCE


def test_global_pool_is_the_same_rule():
    before = _linear_graph(size=4, kernel=(4, 4))
    after = FoldAveragePool.run(before, _ctx(before))
    w = before.node("fc1").weight  # [3, 2]: one value per channel
    np.testing.assert_array_equal(after.node("fc1").weight.reshape(3, 2, 16), np.repeat(w[:, :, None], 16, 2) / 16)
    assert FoldAveragePool.check(before, after, _ctx(before)).ok


def test_non_divisible_map_folds_into_linear_with_zero_edges():
    before = _linear_graph(size=5)  # pooled 2x2; row and column 4 are dropped by the pool
    after = FoldAveragePool.run(before, _ctx(before))
    w = after.node("fc1").weight.reshape(3, 2, 5, 5)
    assert not w[:, :, 4, :].any() and not w[:, :, :, 4].any()
    assert FoldAveragePool.check(before, after, _ctx(before)).ok


def test_non_power_of_two_pool_uses_the_rounded_tolerance():
    before = _linear_graph(size=6, kernel=(3, 3))
    result = FoldAveragePool.check(before, FoldAveragePool.run(before, _ctx(before)), _ctx(before))
    assert result.ok, result.summary
    assert result.metrics["tolerance_rel"] == ROUNDED_TOLERANCE


@pytest.mark.parametrize(
    "kernel, conv_kernel, stride, padding",
    [((2, 2), 3, 1, 1), ((2, 2), 1, 1, 0), ((2, 2), 3, 2, 1), ((2, 4), 3, 1, 1), ((4, 4), 1, 1, 0)],
)
def test_pool_folds_into_conv(kernel, conv_kernel, stride, padding):
    before = _conv_graph(kernel=kernel, conv_kernel=conv_kernel, stride=stride, padding=padding)
    after = FoldAveragePool.run(before, _ctx(before))
    validate(after)
    assert not after.of_type(AvgPool2d, Flatten)
    conv = after.node("conv2")
    kh, kw = kernel
    assert conv.sources == ("n1",)
    assert conv.weight.shape == (3, 2, conv_kernel * kh, conv_kernel * kw)
    assert conv.stride == (stride * kh, stride * kw) and conv.padding == (padding * kh, padding * kw)
    assert after.node("fc").sources == ("n2",)
    # The identity itself, on arbitrary (non-spike) float64 maps: conv(pool(x)) == conv'(x).
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(4, 2, 8, 8)))
    old = before.node("conv2")
    pooled = F.conv2d(F.avg_pool2d(x, kernel), torch.from_numpy(old.weight).double(), None, old.stride, old.padding)
    folded = F.conv2d(x, torch.from_numpy(conv.weight).double(), None, conv.stride, conv.padding)
    torch.testing.assert_close(folded, pooled, rtol=0, atol=1e-12)
    result = FoldAveragePool.check(before, after, _ctx(before))
    assert result.ok, result.summary
    assert result.metrics["max_rel_diff"] <= EXACT_TOLERANCE


def test_flatten_alone_is_dropped():
    before = _conv_graph(kernel=(2, 2))
    after = FoldAveragePool.run(before, _ctx(before))
    assert after.node("fc").weight is before.node("fc").weight  # a Linear flattens implicitly


def test_threshold_boundaries_in_exact_units():
    # n1 spikes where the pixel is 1: two of the four pixels of the top-left 2x2 block, so the
    # pooled value is 1/2 and n2's current is W[i, 0] / 2 = vth - 1/64, vth, vth + 1/64 exactly.
    vth = 0.5
    currents = np.array([vth - UNIT, vth, vth + UNIT])
    nodes = [
        Input("image", (), shape=(1, 4, 4)),
        Conv2d("conv1", ("image",), weight=_f32(np.ones((1, 1, 1, 1)))),
        Neuron("n1", ("conv1",), vth=vth),
        AvgPool2d("pool", ("n1",), kernel=(2, 2), stride=(2, 2)),
        Flatten("flatten", ("pool",)),
        Linear("fc1", ("flatten",), weight=_f32(np.c_[2 * currents, np.zeros((3, 3))])),
        Neuron("n2", ("fc1",), vth=vth),
        Linear("fc2", ("n2",), weight=_f32(np.ones((2, 3)))),
        Accumulator("readout", ("fc2",)),
    ]
    before = Graph(tuple(nodes), timesteps=1)
    image = np.zeros((1, 1, 4, 4), np.float32)
    image[0, 0, 0, 0] = image[0, 0, 1, 1] = 1.0
    after = FoldAveragePool.run(before, _ctx(before, image))
    for graph in (before, after):
        run = run_float(graph, image, record=True)
        np.testing.assert_array_equal(run.membranes["n2"][0, 0], currents.astype(np.float32))
        np.testing.assert_array_equal(run.spikes["n2"][0, 0], [0, 1, 1])  # fires at H >= vth
    assert FoldAveragePool.check(before, after, _ctx(before, image)).ok


def test_non_divisible_map_before_conv_raises():
    before = _conv_graph(size=5)
    with pytest.raises(PassError, match=r"AvgPool2d 'pool' pools a 5x5 map with kernel 2x2.*conv 'conv2'"):
        FoldAveragePool.run(before, _ctx(before))


def test_overlapping_pool_before_conv_raises():
    bad = _conv_graph(pool_stride=(1, 1))
    validate(bad)
    with pytest.raises(PassError, match="overlaps"):
        FoldAveragePool.run(bad, _ctx(bad))


def test_pool_feeding_a_neuron_raises():
    nodes = [*_front(4), AvgPool2d("pool", ("n1",)), Neuron("n2", ("pool",)), Flatten("flatten", ("n2",)),
             Linear("fc", ("flatten",), weight=_f32(np.ones((2, 8)))), Accumulator("readout", ("fc",))]  # fmt: skip
    graph = Graph(tuple(nodes), timesteps=1)
    validate(graph)
    with pytest.raises(PassError, match="AvgPool2d 'pool' feeds Neuron 'n2'"):
        FoldAveragePool.run(graph, _ctx(graph))


def test_contract_requires_no_pool_left():
    before = _linear_graph()
    result = FoldAveragePool.check(before, before, _ctx(before))
    assert not result.ok and "nodes left that should be folded: ['pool', 'flatten']" in result.summary
    assert result.first_divergence == {"layer": "pool", "reason": "AvgPool2d not folded"}
