"""The float pipeline on an exported digits model; runner behaviour; probe inputs."""

import dataclasses

import numpy as np
import pytest
import torch

from inflor_deploy.frontends.fx import trace
from inflor_deploy.ir import AvgPool2d, BatchNorm, Flatten, IRError, Neuron
from inflor_deploy.nn.models import ModelConfig, build_model
from inflor_deploy.nn.tdbn import TdBatchNorm
from inflor_deploy.passes.base import ContractViolation, PassContext, PassError
from inflor_deploy.passes.fold_batch_norm import FoldBatchNorm
from inflor_deploy.passes.pipeline import FLOAT_PIPELINE, PASSES_BY_NAME, PipelineResult, run_pipeline
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.targets import load_target

NAMES = [
    "FoldBatchNorm", "DistributeJoins", "FoldAveragePool", "FoldInputNormalization", "FoldRectifierIntoThreshold",
    "SoftResetToSubtractive", "DelayedResetToSameStep", "ShiftResetToZero", "FoldInputGain",
]  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    """The digits CNN with non-trivial tdBN statistics (a fresh model's fold is the identity)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TdBatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.2, 2.0)
                module.lambda_.uniform_(0.5, 2.0)
                module.beta.uniform_(-0.3, 0.3)
    return trace(model.eval())


@pytest.fixture(scope="module")
def ctx(digits):
    return PassContext(target=load_target("loihi2-sim"), probe=make_probe(digits, count=16))


def test_float_pipeline_on_digits(digits, ctx):
    steps = []
    result = run_pipeline(digits, FLOAT_PIPELINE, ctx, on_step=lambda name, graph: steps.append((name, graph)))
    assert isinstance(result, PipelineResult)
    assert result.steps == NAMES == [name for name, _ in steps]
    assert steps[-1][1] is result.graph
    assert [r.pass_name for r in result.results] == NAMES and all(r.ok for r in result.results)
    assert [r.kind for r in result.results] == [
        "float-tolerance", "float-tolerance", "float-tolerance", "float-tolerance", "spike-exact", "bit-exact",
        "spike-exact", "spike-exact", "float-tolerance",
    ]  # fmt: skip
    # InfLoR neurons have nothing for the three framework-neuron passes to rewrite.
    assert [r.metrics.get("rewritten") for r in result.results[6:]] == [0, 0, 0]
    graph = result.graph
    assert not graph.of_type(BatchNorm, AvgPool2d, Flatten)
    neurons = graph.of_type(Neuron)
    assert len(neurons) == 3
    assert all(not x.mpr and x.vth == 0.5 and x.reset_amount == 1.0 for x in neurons)
    assert graph.node("fc1").sources == ("unit2.neuron",) and graph.node("fc1").weight.shape == (64, 32 * 8 * 8)
    # Each intermediate graph is what the next pass received: FoldBatchNorm's output still pools.
    assert steps[0][1].of_type(AvgPool2d) and not steps[0][1].of_type(BatchNorm)


def test_stop_after(digits, ctx):
    seen = []
    result = run_pipeline(
        digits, FLOAT_PIPELINE, ctx, stop_after="FoldAveragePool", on_step=lambda name, g: seen.append(name)
    )
    assert result.steps == seen == NAMES[:3] and len(result.results) == 3
    assert all(x.mpr for x in result.graph.of_type(Neuron))  # the rectifier is not folded yet


def test_unknown_stop_after_lists_the_passes(digits, ctx):
    with pytest.raises(PassError, match="unknown pass 'FoldBN'.*FoldBatchNorm, DistributeJoins, FoldAveragePool"):
        run_pipeline(digits, FLOAT_PIPELINE, ctx, stop_after="FoldBN")


def test_broken_contract_raises_and_stops(digits, ctx):
    def sloppy(graph, c):
        after = FoldBatchNorm.run(graph, c)
        conv = after.node("unit1.conv")
        return after.replace_nodes(
            dataclasses.replace(x, weight=x.weight * np.float32(1.001)) if x is conv else x for x in after
        )

    seen = []
    message = r"FoldBatchNorm broke its float-tolerance contract.*first divergence"
    with pytest.raises(ContractViolation, match=message) as err:
        run_pipeline(digits, [dataclasses.replace(FoldBatchNorm, run=sloppy)], ctx, on_step=lambda n, g: seen.append(n))
    assert seen == []
    assert err.value.result.first_divergence["layer"] == "unit1.neuron"


def test_invalid_pass_output_is_reported(digits, ctx):
    def drops_the_readout(graph, c):
        return graph.replace_nodes(graph.nodes[:-1])

    broken = dataclasses.replace(FoldBatchNorm, run=drops_the_readout)
    with pytest.raises(IRError, match="pass FoldBatchNorm produced an invalid graph"):
        run_pipeline(digits, [broken], ctx)


def test_invalid_input_graph_and_probe_are_refused(digits, ctx):
    with pytest.raises(IRError):
        run_pipeline(digits.replace_nodes(digits.nodes[:-1]), FLOAT_PIPELINE, ctx)
    wrong_probe = dataclasses.replace(ctx, probe=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(PassError, match="probe shape"):
        run_pipeline(digits, FLOAT_PIPELINE, wrong_probe)


def test_passes_by_name_is_explicit():
    from inflor_deploy.passes.pipeline import COMPILE_PIPELINE

    assert list(PASSES_BY_NAME) == [p.name for p in COMPILE_PIPELINE]
    assert [p.name for p in FLOAT_PIPELINE] == NAMES
    assert COMPILE_PIPELINE[: len(FLOAT_PIPELINE)] == FLOAT_PIPELINE
    assert [p.name for p in COMPILE_PIPELINE[len(FLOAT_PIPELINE):]] == ["QuantizeFixedPoint", "ScheduleTimesteps"]
    assert all(PASSES_BY_NAME[p.name] is p for p in COMPILE_PIPELINE)


def test_make_probe(digits):
    probe = make_probe(digits, count=5, seed=3)
    assert probe.shape == (5, 1, 8, 8) and probe.dtype == np.float32
    assert probe.min() >= 0 and probe.max() <= 1
    np.testing.assert_array_equal(probe, make_probe(digits, count=5, seed=3))
    assert not np.array_equal(probe, make_probe(digits, count=5, seed=4))
    real = np.full((2, 1, 8, 8), 0.5)
    np.testing.assert_array_equal(make_probe(digits, images=real), real.astype(np.float32))
    with pytest.raises(PassError, match=r"needs \[B, 1, 8, 8\]"):
        make_probe(digits, images=np.zeros((2, 8, 8)))


def test_input_normalization_and_framework_neurons_normalize_in_one_pipeline():
    """FoldInputNormalization first (the synapses then read raw inputs), then the neuron passes; the
    gain folds into a synapse whose weights the normalization fold already rewrote."""
    from inflor_deploy.ir import Normalize
    from tests.neuron_cases import declared_inputs, declared_neuron_graph

    graph = declared_neuron_graph("sequence")
    ctx = PassContext(target=load_target("loihi2-sim"), probe=declared_inputs(graph, 8, seed=1))
    result = run_pipeline(graph, FLOAT_PIPELINE, ctx)
    assert result.steps == NAMES and all(r.ok for r in result.results), [r.summary for r in result.results]
    metrics = {r.pass_name: r.metrics for r in result.results}
    assert list(metrics["DelayedResetToSameStep"]["moved"]) == ["snn_pc"]
    assert list(metrics["ShiftResetToZero"]["shifted"]) == ["sj_hard"]
    assert metrics["FoldInputGain"]["kept_on_neuron"] == {}
    after = result.graph
    assert not after.of_type(Normalize) and after.node("c1").sources == ("image",)
    assert after.node("c1").bias.shape == (3, 4, 4)  # zero padding: a per-position bias map
    assert after.input.encoding == "sequence" and after.input.value_range == (-1.0, 1.0)
    neurons = {x.name: x for x in after.of_type(Neuron)}
    assert neurons["snn_pc"].reset_timing == "same_step" and neurons["sj_hard"].v_reset == 0
    assert neurons["sj_hard"].gain == 1.0
    # The gain halved fc1 exactly (dyadic weights): only FoldInputGain rewrote it.
    np.testing.assert_array_equal(after.node("fc1").weight, graph.node("fc1").weight * np.float32(0.5))
