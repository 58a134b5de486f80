"""The parity ladder on the bundled digits model, and a corrupted weight caught at level 2."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy import verify
from inflor_deploy.artifact import load_artifact, write_artifact
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import load_digits
from inflor_deploy.pretrained import DEFAULT_MODEL


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "digits"
    write_artifact(compile_checkpoint(DEFAULT_MODEL), out)
    return load_artifact(out)


def test_ladder_passes_on_the_bundled_model(artifact):
    # The whole split: on 96 samples a single digit classified differently is already 1.04 percentage points.
    data = load_digits("test")
    ladder = verify.run_ladder(artifact, data, reference_samples=4, lava_samples=0)
    levels = {level.level: level for level in ladder.levels}
    assert ladder.ok
    assert levels[1].ok and levels[1].metrics["unexplained"] == 0 and levels[1].metrics["spikes"] > 0
    assert levels[2].ok and levels[2].metrics["values_compared"] > 0
    assert levels[3].ok is None  # skipped: 0 Lava samples
    assert levels[4].metrics["accuracy_fixed"] >= 0.95 and levels[4].metrics["class_agreement"] >= 0.95
    assert levels[4].metrics["readout"] == "mean_current" and "readout mean_current" in levels[4].summary


def test_a_corrupted_weight_fails_level_2_in_the_right_layer(artifact, monkeypatch):
    from inflor_deploy.backends.sim import fixed_point

    real = fixed_point.simulate

    def corrupted(graph, images, **kwargs):
        nodes = []
        for node in graph:
            if node.name == "unit2.conv":
                weight = node.weight.copy()
                weight[3, 0, 1, 1] += 40  # one weight of one synapse
                node = dataclasses.replace(node, weight=weight)
            nodes.append(node)
        return real(graph.replace_nodes(nodes), images, **kwargs)

    monkeypatch.setattr(fixed_point, "simulate", corrupted)
    result = verify.level2_reference_vs_simulator(artifact.fixed_graph, load_digits("test").images[:4])
    assert result.ok is False
    assert result.first_divergence["layer"] == "unit2.neuron"
    assert "DIVERGES" in result.summary


def test_level1_names_a_real_mismatch(artifact):
    from inflor_deploy.checkpoint import load_checkpoint

    model = load_checkpoint(DEFAULT_MODEL).model
    imported = artifact.graph_at("import")
    # Shift one layer's threshold in the IR: no longer a near-tie, a real disagreement.
    broken = imported.replace_nodes(
        [dataclasses.replace(x, vth=0.45) if x.name == "unit2.neuron" else x for x in imported]
    )
    result = verify.level1_torch_vs_float_ir(model, broken, load_digits("test").take(16))
    assert result.ok is False and result.first_divergence["layer"] == "unit2.neuron"


@pytest.mark.lava
def test_level3_runs_lava_bit_exact_and_reports_floating_pt(artifact):
    result = verify.level3_simulator_vs_lava(artifact.fixed_graph, load_digits("test").images[:2], artifact.float_graph)
    assert result.ok is True and result.kind == "bit-exact"
    assert result.metrics["readout_equal"] and result.metrics["floating_pt"]["samples"] == 2
    assert "Lava floating_pt" in result.summary


def test_verify_cli_writes_the_ladder_and_exits_2_on_a_bit_exact_failure(artifact, monkeypatch):
    import json

    from click.testing import CliRunner

    from inflor_deploy.backends.sim import fixed_point
    from inflor_deploy_cli.main import cli

    args = ["verify", str(artifact.path), "--samples", "24", "--reference-samples", "2", "--lava-samples", "0"]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert "0  PASS" in ok.output and "1  PASS" in ok.output and "2  PASS" in ok.output and "3  skip" in ok.output
    written = json.loads((artifact.path / "verify.json").read_text())
    assert written["ok"] and [level["level"] for level in written["levels"]] == [0, 1, 2, 3, 4]

    real = fixed_point.simulate

    def off_by_one(graph, images, **kwargs):
        run = real(graph, images, **kwargs)
        run.accumulator[0, 0] += 1  # a simulator bug in the readout
        return run

    monkeypatch.setattr(fixed_point, "simulate", off_by_one)
    failed = CliRunner().invoke(cli, args)
    assert failed.exit_code == 2, failed.output
    assert "2  FAIL" in failed.output and "accumulator readout" in failed.output


def test_level1_runs_the_model_with_an_overridden_T(tmp_path):
    # compile -T 6 traces and verifies the zoo model at T = 6 (its forward's T argument), not its config's 4.
    out = tmp_path / "t6"
    write_artifact(compile_checkpoint(DEFAULT_MODEL, timesteps=6, probe_samples=4), out)
    artifact = load_artifact(out)
    assert artifact.manifest["source"]["model"]["timesteps"] == 6
    ladder = verify.run_ladder(artifact, load_digits("test").take(16), reference_samples=1, lava_samples=0,
                               rebuild=False)
    level1 = ladder.levels[0]
    assert level1.level == 1 and level1.ok and level1.metrics["spikes"] > 0 and level1.metrics["unexplained"] == 0


def _scaled_threshold(graph, layer, factor):
    return graph.replace_nodes(
        [dataclasses.replace(x, vth=int((x.vth + 1) * factor) - 1) if x.name == layer else x for x in graph])


def test_level4_fails_below_the_spike_agreement_floor_and_names_the_layer(artifact):
    from inflor_deploy.checkpoint import load_checkpoint

    model = load_checkpoint(DEFAULT_MODEL).model
    data = load_digits("test")  # the whole split: on 96 samples one digit classified differently is 1.04 points
    good = verify.level4_float_vs_fixed(model, artifact.float_graph, artifact.fixed_graph, data)
    assert good.ok and good.metrics["look_at"] is None and verify.Ladder([good]).ok
    # The first layer's threshold 30 % low: it fires too often, and the next layer inherits it.
    broken = _scaled_threshold(artifact.fixed_graph, "unit1.neuron", 0.7)
    result = verify.level4_float_vs_fixed(model, artifact.float_graph, broken, data)
    agreement = result.metrics["spike_agreement_forced"]["unit1.neuron"]
    # The first layer reads the input only: teacher forcing changes nothing there.
    assert agreement == result.metrics["spike_agreement"]["unit1.neuron"]
    assert result.ok is False and agreement < verify.MIN_SPIKE_AGREEMENT
    assert result.metrics["look_at"] == "unit1.neuron" and result.first_divergence["layer"] == "unit1.neuron"
    assert f"look at layer 'unit1.neuron' (teacher-forced spike agreement {agreement:.4f})" in result.summary
    # Downstream layers fed the float spikes keep their own agreement; free-running they inherit the fault.
    forced, free = result.metrics["spike_agreement_forced"], result.metrics["spike_agreement"]
    assert forced["unit2.neuron"] >= verify.MIN_SPIKE_AGREEMENT and forced["unit2.neuron"] > free["unit2.neuron"]
    ladder = verify.Ladder([good, result])
    assert not ladder.ok and ladder.failed == [result]


def test_level4_fails_on_an_accuracy_drop_beyond_the_limit(artifact):
    from inflor_deploy.checkpoint import load_checkpoint

    model = load_checkpoint(DEFAULT_MODEL).model
    data = load_digits("test").take(96)
    weight_of_class_3 = artifact.fixed_graph.replace_nodes(
        [dataclasses.replace(x, weight=np.where(np.arange(10)[:, None] == 3, 254, x.weight).astype(np.int32))
         if x.name == "fc2" else x for x in artifact.fixed_graph])
    result = verify.level4_float_vs_fixed(model, artifact.float_graph, weight_of_class_3, data, min_spike_agreement=0)
    assert result.ok is False and result.metrics["accuracy_drop"] > 0.5
    assert "accuracy drops by" in result.summary and result.metrics["look_at"] == "readout"
    assert result.first_divergence["quantity"] == "class"
    # The same run within a generous limit passes.
    lenient = verify.level4_float_vs_fixed(model, artifact.float_graph, weight_of_class_3, data,
                                           max_accuracy_drop=1.0, min_spike_agreement=0)
    assert lenient.ok
