"""DistributeJoins: a synapse reading an Add or a Concat becomes one synapse per source."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import (
    Accumulator, Add, AvgPool2d, Concat, Conv2d, Flatten, Graph, Input, Linear, Neuron, validate,
)  # fmt: skip
from inflor_deploy.passes.base import PassContext, PassError
from inflor_deploy.passes.distribute_joins import TOLERANCE, DistributeJoins
from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, run_pipeline
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.targets import load_target


def _f32(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def _graph(seed=0) -> Graph:
    """Two spiking maps n0 (3 ch) and n1 (2 ch); a Concat read by a conv, an Add pooled, flattened and read by
    a Linear, and a Concat of flattened maps read by another Linear."""
    rng = np.random.default_rng(seed)
    nodes = [
        Input("image", (), shape=(2, 4, 4)),
        Conv2d("c0", ("image",), weight=_f32(rng, 3, 2, 1, 1, scale=1.5)), Neuron("n0", ("c0",)),
        Conv2d("c1", ("image",), weight=_f32(rng, 2, 2, 1, 1, scale=1.5)), Neuron("n1", ("c1",)),
        Concat("cat", ("n0", "n1")),
        Conv2d("mix", ("cat",), weight=_f32(rng, 3, 5, 3, 3), bias=_f32(rng, 3), padding=(1, 1)),
        Neuron("nm", ("mix",)),
        Add("add", ("n0", "nm")),
        AvgPool2d("pool", ("add",), kernel=(2, 2), stride=(2, 2)),
        Flatten("flat", ("pool",)),
        Linear("fc", ("flat",), weight=_f32(rng, 4, 12), bias=_f32(rng, 4)),
        Flatten("f0", ("n0",)), Flatten("f1", ("n1",)),
        Concat("vec", ("f0", "f1")),
        Linear("fc2", ("vec",), weight=_f32(rng, 4, 80)),
        Accumulator("readout", ("fc", "fc2")),
    ]  # fmt: skip
    return Graph(tuple(nodes), timesteps=3)


def _ctx(graph):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(graph, count=8))


def test_structure_weight_blocks_and_bias_on_the_first_part():
    before = _graph()
    after = DistributeJoins.run(before, _ctx(before))
    validate(after)
    assert not after.of_type(Add, Concat)
    mix = before.node("mix")
    assert after.node("nm").sources == ("mix[0]", "mix[1]")
    assert after.node("mix[0]").sources == ("n0",) and np.array_equal(after.node("mix[0]").weight, mix.weight[:, :3])
    assert after.node("mix[1]").sources == ("n1",) and np.array_equal(after.node("mix[1]").weight, mix.weight[:, 3:])
    assert np.array_equal(after.node("mix[0]").bias, mix.bias) and after.node("mix[1]").bias is None
    # Add -> AvgPool -> Flatten -> Linear: pool and flatten per source, the Linear split in two.
    assert after.node("pool[0]").sources == ("n0",) and after.node("pool[1]").sources == ("nm",)
    assert after.node("fc[0]").sources == ("flat[0]",) and after.node("flat[0]").sources == ("pool[0]",)
    assert np.array_equal(after.node("fc[1]").weight, before.node("fc").weight)
    # Concat of flattened maps: column blocks of 48 and 32.
    assert np.array_equal(after.node("fc2[1]").weight, before.node("fc2").weight[:, 48:])
    assert after.node("readout").sources == ("fc[0]", "fc[1]", "fc2[0]", "fc2[1]")


def test_contract_holds_and_membranes_match_in_float64():
    before = _graph()
    ctx = _ctx(before)
    after = DistributeJoins.run(before, ctx)
    result = DistributeJoins.check(before, after, ctx)
    assert result.ok and result.metrics["max_rel_diff"] <= TOLERANCE
    import torch

    a, b = run_float(before, ctx.probe, record=True, dtype=torch.float64), run_float(after, ctx.probe, record=True, dtype=torch.float64)
    for name in a.spikes:
        assert np.array_equal(a.spikes[name], b.spikes[name]), name
    assert 0 < a.spikes["nm"].mean() < 1
    # A broken split (the bias on both parts) is caught.
    broken = after.replace_nodes(
        dataclasses.replace(x, bias=before.node("mix").bias) if x.name == "mix[1]" else x for x in after
    )
    assert not DistributeJoins.check(before, broken, ctx).ok


def test_the_whole_pipeline_accepts_the_split_graph():
    graph = _graph()
    result = run_pipeline(graph, COMPILE_PIPELINE, _ctx(graph))
    assert all(r.ok for r in result.results) and result.graph.is_fixed_point


def test_preconditions_name_the_node_and_the_fix():
    front = _graph().nodes[:6]  # image, c0, n0, c1, n1, cat (5 channels)
    rng = np.random.default_rng(1)

    def graph(*rest):
        g = Graph((*front, *rest), timesteps=3)
        validate(g)
        return g

    neuron_reads_concat = graph(Neuron("n2", ("cat",)), Linear("fc", ("n2",), weight=_f32(rng, 4, 80)),
                                Accumulator("readout", ("fc",)))  # fmt: skip
    with pytest.raises(PassError, match="Concat 'cat' feeds Neuron 'n2'"):
        DistributeJoins.run(neuron_reads_concat, None)
    grouped = graph(Conv2d("mix", ("cat",), weight=_f32(rng, 5, 1, 3, 3), padding=(1, 1), groups=5),
                    Neuron("nm", ("mix",)), Linear("fc", ("nm",), weight=_f32(rng, 4, 80)),
                    Accumulator("readout", ("fc",)))  # fmt: skip
    with pytest.raises(PassError, match="groups=5.*only groups=1 convolutions can be split"):
        DistributeJoins.run(grouped, None)
    pooled_current = graph(Conv2d("mix", ("cat",), weight=_f32(rng, 2, 5, 1, 1)),
                           AvgPool2d("pool", ("mix",), kernel=(2, 2), stride=(2, 2)), Neuron("nm", ("pool",)),
                           Linear("fc", ("nm",), weight=_f32(rng, 4, 8)), Accumulator("readout", ("fc",)))  # fmt: skip
    with pytest.raises(PassError, match="Conv2d 'mix' reads the join 'cat' and feeds AvgPool2d 'pool'"):
        DistributeJoins.run(pooled_current, None)
