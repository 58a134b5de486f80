"""Core placement: never exceeds a limit, reports what cannot fit, works for the paper's networks."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.report.resources import MemoryModel, place
from inflor_deploy.targets import load_target
from tests.report.hand_net import hand_graph


def _with_limits(target, **limits):
    return dataclasses.replace(target, limits=dataclasses.replace(target.limits, **limits))


def _assert_within_limits(placement, target):
    lim = target.limits
    assert all(0 < c.neurons <= lim.neurons_per_core for c in placement.cores)
    assert all(c.memory_bytes <= lim.memory_per_core_bytes for c in placement.cores)
    per_chip: dict[int, list] = {}
    for c in placement.cores:
        per_chip.setdefault(c.chip, []).append(c)
    for cores in per_chip.values():
        assert len(cores) <= lim.usable_cores_per_chip
        assert sum(c.neurons for c in cores) <= lim.neurons_per_chip
    # Every placed layer's neurons are on cores exactly once, in order.
    for lp in placement.layers:
        if lp.cores is not None:
            cores = [c for c in placement.cores if c.layer == lp.layer]
            assert len(cores) == lp.cores and sum(c.neurons for c in cores) == lp.neurons
            assert [c.first_neuron for c in cores] == list(np.cumsum([0] + [c.neurons for c in cores[:-1]]))


def test_hand_net_placement_by_hand():
    # Tiny limits: 5 neurons and 50 bytes per core, no routing reserve; 1-byte weights, 8-byte state.
    target = _with_limits(load_target("loihi2"), neurons_per_core=5, memory_per_core_bytes=50, cores_per_chip=4,
                          usable_cores_per_chip=3, neurons_per_chip=20)
    p = place(hand_graph(), target, MemoryModel(routing_reserve_fraction=0.0))
    # n1 (1 channel, 16 neurons, one shared 3x3 kernel = 9 B): k neurons need 9 + 8k <= 50 -> k = 5: 5, 5, 5, 1.
    # n2 (2 channels x 4 positions): 4 neurons of one channel need 9 + 32 = 41 B; a fifth would touch
    #   channel 1: 18 + 40 = 58 > 50 -> 4 + 4.
    # out (dense, 8 inputs): k neurons need 8k + 8k -> k = 3 (48 B): one core.
    assert [(c.layer, c.neurons, c.memory_bytes) for c in p.cores] == [
        ("n1", 5, 49), ("n1", 5, 49), ("n1", 5, 49), ("n1", 1, 17),
        ("n2", 4, 41), ("n2", 4, 41), ("out", 3, 48)]
    by_layer = {lp.layer: lp for lp in p.layers}
    # n1's cores are full at 5 neurons (memory would allow 5 too); n2's end at 4 for memory.
    assert [by_layer[x].limited_by for x in ("n1", "n2", "out")] == ["neurons", "memory", "whole layer"]
    # Chips: at most 3 cores and 20 neurons each -> [5, 5, 5] [1, 4, 4] [3]: three chips. Three chips
    # of one 8-chip board is deployable (a warning); more chips than a board holds is an error.
    assert [c.chip for c in p.cores] == [0, 0, 0, 1, 1, 1, 2] and p.chips == 3
    assert [v.kind for v in p.violations] == ["chips"] and p.status == "warning"
    _assert_within_limits(p, target)
    small_board = _with_limits(target, chips_per_board=2)
    p2 = place(hand_graph(), small_board, MemoryModel(routing_reserve_fraction=0.0))
    assert p2.chips == 3 and [v.kind for v in p2.violations] == ["chips"] and p2.status == "error"


@pytest.mark.parametrize("npc, mem, reserve, sharing", [
    (1, 64, 0.0, True), (3, 100, 0.1, True), (7, 200, 0.25, False), (8192, 10_000, 0.125, True),
])
def test_the_placer_never_exceeds_a_limit(npc, mem, reserve, sharing):
    target = _with_limits(load_target("loihi2"), neurons_per_core=npc, memory_per_core_bytes=mem, cores_per_chip=128,
                          usable_cores_per_chip=120, neurons_per_chip=min(1_000_000, npc * 128))
    p = place(hand_graph(), target, MemoryModel(routing_reserve_fraction=reserve, conv_weight_sharing=sharing))
    _assert_within_limits(p, target)


def _huge_fanin_graph(kind: str) -> Graph:
    if kind == "dense":
        # 300,000 inputs per neuron: 293 KiB of 8-bit weights for ONE neuron, above 192 KiB per core.
        first = n.FixedPointSynapse("fc_big", ("image",), kind="dense", weight=np.ones((2, 300_000), dtype=np.int8))
        shape_in, shape = (3, 100, 1000), (2,)
    else:
        # 2,048 channels x 11 x 11 = 247,808 weights per output channel: 242 KiB.
        first = n.FixedPointSynapse("conv_big", ("image",), kind="conv", weight=np.ones((1, 2048, 11, 11), dtype=np.int8),
                                    padding=(5, 5))
        shape_in, shape = (2048, 4, 4), (1, 4, 4)
    size = int(np.prod(shape))
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=shape_in, grade_scale=255.0),
            first,
            n.FixedPointNeuron("big", (first.name,), shape=shape, vth=1, reset_mant=2,
                               bias_mant=np.zeros(shape, dtype=np.int32)),
            n.FixedPointSynapse("fc", ("big",), kind="dense", weight=np.ones((3, size), dtype=np.int32)),
            n.FixedPointAccumulator("out", ("fc",), shape=(3,), bias_mant=np.zeros(3, dtype=np.int32)),
        ),
        timesteps=2,
        name=f"huge_{kind}",
    )
    validate(graph)
    return graph


@pytest.mark.parametrize("kind, kib", [("dense", "293.0"), ("conv", "242.0")])
def test_a_layer_that_cannot_fit_one_neuron_is_a_violation(kind, kib):
    for target, severity in [(load_target("loihi2"), "error"), (load_target("loihi2-sim"), "warning")]:
        p = place(_huge_fanin_graph(kind), target)
        (v,) = p.violations
        assert (v.kind, v.layer, v.severity, p.status) == ("neuron_memory", "big", severity, severity)
        assert f"{kib} KiB" in v.message and "168.0 KiB usable per core" in v.message
        assert v.needed > v.available == 192 * 1024 - 24 * 1024
        assert ("inputs" if kind == "dense" else "input channels") in v.fix
        by_layer = {lp.layer: lp for lp in p.layers}
        assert by_layer["big"].cores is None and by_layer["out"].cores == 1
        assert all(c.layer != "big" for c in p.cores)
        _assert_within_limits(p, target)


@pytest.fixture(scope="module")
def paper_graphs():
    """ResNet19, ResNet20, VGG16 (random weights) at 32x32, exported and quantized (no schedule needed)."""
    import torch

    from inflor_deploy.frontends.fx import trace
    from inflor_deploy.nn.models import ModelConfig, build_model
    from inflor_deploy.passes.base import PassContext
    from inflor_deploy.passes.fold_batch_norm import FoldBatchNorm
    from inflor_deploy.passes.fold_pooling import FoldAveragePool
    from inflor_deploy.passes.fold_rectifier import FoldRectifierIntoThreshold
    from inflor_deploy.passes.quantize import QuantizeFixedPoint
    from inflor_deploy.passes.soft_reset import SoftResetToSubtractive

    ctx = PassContext(target=load_target("loihi2"), probe=np.zeros((1, 3, 32, 32), dtype=np.float32))
    graphs = {}
    torch.manual_seed(0)
    for arch in ("resnet19", "resnet20", "vgg16"):
        model = build_model(ModelConfig(arch=arch, timesteps=4)).eval()
        graph = trace(model)
        for p in (FoldBatchNorm, FoldAveragePool, FoldRectifierIntoThreshold, SoftResetToSubtractive, QuantizeFixedPoint):
            graph = p.run(graph, ctx)
        graphs[arch] = graph
    return graphs


def test_paper_networks_place_within_limits(paper_graphs):
    target = load_target("loihi2")
    cores = {}
    for arch, graph in paper_graphs.items():
        p = place(graph, target)
        _assert_within_limits(p, target)
        assert all(lp.cores for lp in p.layers), f"{arch}: every layer fits one neuron per core"
        cores[arch] = (p.total_cores, p.chips)
        if p.chips > 1:  # within one Kapoho Point board (8 chips): deployable, a warning
            assert [v.kind for v in p.violations] == ["chips"] and p.status == "warning"
        else:
            assert not p.violations and p.status == "ok"
    # ResNet20 (16-64 channels) fits one chip; ResNet19 (1.44 M neurons > 1 M per chip) and VGG16 do not.
    assert cores["resnet20"][1] == 1 and cores["resnet19"][1] >= 2 and cores["vgg16"][1] >= 2
    # Neuron-bound lower bounds: ResNet19 has 1,442,058 neurons -> at least 177 cores of 8,192.
    assert cores["resnet19"][0] >= 177


def test_memory_model_from_the_target_and_its_assumptions():
    target = load_target("loihi2")
    model = MemoryModel.from_target(target)
    # 8-bit weights -> 1 byte; u 24 + v 24 + bias 13 + exponent 3 = 64 bits -> 8 bytes [D].
    assert (model.weight_bytes, model.state_bytes_per_neuron) == (1, 8)
    assert model.routing_reserve_bytes(192 * 1024) == 24 * 1024
    tags = {a["what"]: a["tag"] for a in model.assumptions(target)}
    assert tags["neuron state per neuron"] == "[D]" and tags["routing reserve per core"] == "assumption"
    with pytest.raises(ValueError):
        MemoryModel(routing_reserve_fraction=1.0)


def test_low_bit_and_pruned_synapses_are_charged_their_bits_and_kept_connections():
    """Hand net with c2 at 4 bits and fc pruned (sparse): packed 4-bit kernels, fc's 21 nonzeros only."""
    from inflor_deploy.report.activity import fanout_exact

    graph = hand_graph()
    edited = graph.replace_nodes(
        dataclasses.replace(x, weight_bits=4) if x.name == "c2"
        else dataclasses.replace(x, sparse=True) if x.name == "fc" else x
        for x in graph
    )  # fmt: skip
    validate(edited)
    target = _with_limits(load_target("loihi2"), neurons_per_core=5, memory_per_core_bytes=50, cores_per_chip=4,
                          usable_cores_per_chip=3, neurons_per_chip=20)  # fmt: skip
    p = place(edited, target, MemoryModel(routing_reserve_fraction=0.0))
    # n2: one channel's kernel is 9 x 4 bits = 5 B, so 4 neurons take 5 + 32 B; a fifth touches channel 1:
    # 18 x 4 bits = 9 B + 40 = 49 <= 50. The last 3 neurons (channel 1 only): 5 + 24 = 29 B.
    # out: fc's rows keep 7, 6 and 8 nonzeros: 21 B + 24 B of state, one core (dense: 48 B).
    assert [(c.layer, c.neurons, c.memory_bytes) for c in p.cores if c.layer != "n1"] == [
        ("n2", 5, 49), ("n2", 3, 29), ("out", 3, 45)]
    _assert_within_limits(p, target)
    # Synaptic ops: a spike of n2 reaches only fc's kept connections (column 0 keeps 2 of 3 targets).
    fanout = fanout_exact(edited.node("fc"), (2, 2, 2))
    assert fanout.reshape(-1).tolist() == [2, 3, 3, 3, 3, 3, 3, 1]
