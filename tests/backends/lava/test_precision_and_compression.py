"""Parity level 3 for issue 12's constructs: Lava fixed_pt == the fixed-point simulator, bit for bit.

Synapse exponents (an identity shortcut beside small conv weights: the conv
runs as Lava Sparse since Lava's Conv ignores ``weight_exp``), bias sources
(a bias beyond the neuron's bias field), fewer weight bits
(``num_weight_bits``) and magnitude pruning (Sparse / DelaySparse holding
only the kept connections).
"""

import numpy as np
import pytest

from inflor_deploy.backends.lava import network as lb
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.passes.base import PassContext, QuantizationOptions
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.targets import load_target
from tests.backends.lava.test_lava_backend import _assert_bit_exact, _images, conv_residual_graph


def _compile(float_graph: Graph, **options) -> Graph:
    ctx = PassContext(target=load_target("loihi2-sim"), probe=np.zeros((1, *float_graph.input.shape), np.float32),
                      quantization=QuantizationOptions(**options))  # fmt: skip
    scheduled = ScheduleTimesteps.run(QuantizeFixedPoint.run(float_graph, ctx), ctx)
    validate(scheduled)
    return scheduled


def shortcut_and_large_bias_graph(timesteps: int = 3) -> Graph:
    """Small conv weights beside an identity shortcut (weight 1 per spike), and a first layer with a large bias."""
    rng = np.random.default_rng(12)
    return Graph(
        nodes=(
            n.Input("image", (), shape=(2, 4, 5)),
            # Bias 40x the weights: the neuron's 13-bit bias field cannot hold it at the weights' scale.
            n.Conv2d("c1", ("image",), weight=rng.normal(0, 0.02, (4, 2, 3, 3)).astype(np.float32),
                     bias=rng.uniform(0.3, 0.8, 4).astype(np.float32), padding=(1, 1)),  # fmt: skip
            n.Neuron("n1", ("c1",), vth=0.5, reset_amount=0.5),
            n.Conv2d("c2", ("n1",), weight=rng.normal(0, 0.05, (4, 4, 3, 3)).astype(np.float32),
                     bias=np.full(4, 0.05, np.float32), padding=(1, 1)),  # fmt: skip
            n.Neuron("n2", ("c2",), vth=0.5, reset_amount=0.5),
            n.Conv2d("c3", ("n2",), weight=rng.normal(0, 0.05, (4, 4, 3, 3)).astype(np.float32), bias=None,
                     padding=(1, 1)),  # fmt: skip
            n.Neuron("n3", ("c3", "n1"), vth=0.5, reset_amount=0.5),  # identity shortcut from n1 (delayed)
            n.Linear("fc", ("n3",), weight=rng.normal(0, 0.3, (3, 80)).astype(np.float32), bias=None),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=timesteps,
        name="shortcut_and_bias",
    )


@pytest.mark.lava
def test_synapse_exponents_and_bias_sources_are_bit_exact():
    graph = _compile(shortcut_and_large_bias_graph())
    synapses = {s.name: s for s in graph.of_type(n.FixedPointSynapse)}
    assert synapses["n3.shortcut"].weight_exp > 0 and synapses["n3.shortcut"].delay == 1
    assert synapses["c3"].weight_exp == 0 and np.abs(synapses["c3"].weight).max() >= 120  # c3 fills its grid
    sources = [x for x in graph.of_type(n.FixedPointNeuron) if not x.sources]
    assert [x.name for x in sources] == ["n1.bias_source"]
    assert lb.lava_process(synapses["n3.shortcut"], graded=False) == "DelaySparse"
    _assert_bit_exact(graph, _images(graph, 2))


@pytest.mark.lava
@pytest.mark.parametrize("weight_bits, prune", [(4, 0.0), (6, 0.5), (8, 0.8), (4, 0.8)])
def test_low_bit_and_pruned_residual_nets_are_bit_exact(weight_bits, prune):
    graph = _compile(conv_residual_graph(), weight_bits=weight_bits, prune=prune)
    model = [s for s in graph.of_type(n.FixedPointSynapse) if not s.name.endswith(".shortcut")]
    for syn in model:
        _, _, step = load_target("loihi2-sim").numerics.weight_grid(syn.kind, weight_bits)
        assert syn.weight_bits == weight_bits and np.all(syn.weight % step == 0), syn.name
        assert np.unique(syn.weight).size <= 2**weight_bits
        assert syn.sparse == (prune > 0)
        if prune:
            assert np.count_nonzero(syn.weight) <= round((1 - prune) * syn.weight.size) + 1, syn.name
            assert lb.lava_process(syn, graded=syn.sources[0] == graph.input.name) in ("Sparse", "DelaySparse")
    _assert_bit_exact(graph, _images(graph, 2))


@pytest.mark.lava
@pytest.mark.parametrize("wide", [False, True])
def test_negative_exponents_floor_exactly_as_lava(wide):
    """Lava's right shift floors; graded sums past int32 wrap before it (``wide``)."""
    from tests.backends.sim.test_negative_weight_exp import right_shift_graph

    ctx = PassContext(target=load_target("loihi2-sim"), probe=np.zeros((1, 2, 4, 4), np.float32))
    if wide:
        graph = ScheduleTimesteps.run(right_shift_graph(float(2**22), (-256.0, 256.0)), ctx)
        images = np.random.default_rng(9).uniform(-256, 256, (2, 2, 4, 4)).astype(np.float32)
    else:
        graph = ScheduleTimesteps.run(right_shift_graph(), ctx)
        images = _images(graph, 2)
    assert {lb.lava_process(graph.node(s), graded=s == "g") for s in ("g", "d", "k")} == {"Sparse", "Dense"}
    parity = lb.compare_with_simulator(graph, images)
    assert parity.ok, parity.summary()


@pytest.mark.lava
def test_a_quantized_wide_fan_in_layer_takes_a_negative_exponent_and_stays_bit_exact():
    """A graded input layer whose u headroom caps its scale: its conv runs as Sparse with a right shift."""
    rng = np.random.default_rng(13)
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(8, 4, 4)),
            n.Conv2d("c1", ("image",), weight=rng.normal(0.02, 0.05, (4, 8, 3, 3)).astype(np.float32),
                     bias=None, padding=(1, 1)),  # fmt: skip
            n.Neuron("n1", ("c1",), vth=0.5, reset_amount=0.5),
            n.Linear("fc", ("n1",), weight=rng.normal(0, 0.3, (3, 64)).astype(np.float32), bias=None),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=3,
        name="wide_fan_in",
    )
    fixed = _compile(graph)
    c1 = fixed.node("c1")
    assert c1.weight_exp < 0 and np.abs(c1.weight).max() >= 64
    _assert_bit_exact(fixed, _images(fixed, 2))
