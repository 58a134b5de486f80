"""The Python entry points inflor_deploy.trace and inflor_deploy.compile, and verify on an in-memory model."""

import numpy as np
import pytest

import inflor_deploy
from inflor_deploy import verify
from inflor_deploy.data import load_digits
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.nn import ModelConfig, build_model
from inflor_deploy.pretrained import DEFAULT_MODEL
from tests.cli.user_nets import calibrated, residual_cat_net


def test_trace_returns_the_validated_float_ir():
    graph = inflor_deploy.trace(build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8)))
    assert isinstance(graph, Graph) and graph.name == "digits_cnn" and graph.timesteps == 4
    graph = inflor_deploy.trace(residual_cat_net(T=2), input_shape=(1, 8, 8), timesteps=2)
    assert graph.name == "ResidualCatNet" and graph.input.shape == (1, 8, 8)


def test_trace_and_compile_take_the_declared_input_as_keywords(tmp_path):
    from inflor_deploy.ir import nodes as n

    model = residual_cat_net(T=2)
    raw = inflor_deploy.trace(model, input_shape=(1, 8, 8), timesteps=2, input_range=(0, 255))
    assert (raw.input.value_range, raw.input.pixel_levels) == ((0.0, 255.0), 1)
    normalized = inflor_deploy.trace(model, input_shape=(1, 8, 8), timesteps=2, input_mean=[0.5], input_std=[0.25])
    norm = normalized.node("input_normalization")
    assert isinstance(norm, n.Normalize) and norm.mean.tolist() == [0.5] and norm.std.tolist() == [0.25]
    with pytest.raises(InflorError, match="--input-std .*every std must be > 0"):
        inflor_deploy.trace(model, input_shape=(1, 8, 8), timesteps=2, input_mean=[0.5], input_std=[0.0])
    artifact = inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=2, output=tmp_path / "out",
                                     probe_samples=2, input_range="-1,1", input_mean="0.5", input_std="0.25")  # fmt: skip
    declared = artifact.manifest["compile_options"]["input"]
    assert declared == {"range": [-1.0, 1.0], "mean": [0.5], "std": [0.25], "encoding": "direct"}
    assert artifact.fixed_graph.input.value_range == (-1.0, 1.0)


def test_compile_writes_and_returns_the_artifact_and_verify_needs_the_model(tmp_path):
    data = load_digits("test").take(24)
    model = calibrated(residual_cat_net(T=4), load_digits("train").images[:128])
    artifact = inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4, output=tmp_path / "out",
                                     probe_images=data.images[:8])  # fmt: skip
    assert artifact.path == tmp_path / "out" and artifact.manifest["complete"]
    source = artifact.manifest["source"]
    assert source["checkpoint"] is None and source["model"]["route"] == "python"
    assert source["model"]["class"].endswith("ResidualCatNet") and source["model"]["file"].endswith("user_nets.py")
    assert [e["role"] for e in artifact.manifest["integrity"]["sources"]] == ["target"]  # nothing else was read
    assert artifact.manifest["probe"] == "8 given images"
    # Given probe images shape the scales (the probe guard): kept, hashed, and reused by level 0's rebuild.
    assert artifact.manifest["files"]["probe"] == "probe.npy" and "probe.npy" in artifact.manifest["integrity"]["files"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "probe.npy"), data.images[:8])
    with pytest.raises(InflorError, match="already exists"):
        inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4, output=tmp_path / "out")

    skipped = {level.level: level for level in verify.run_ladder(artifact, data, reference_samples=2,
                                                                  lava_samples=0).levels}  # fmt: skip
    # Levels 0 and 1 need the module: skipped, saying so.
    assert skipped[0].ok is None and "pass the model" in skipped[0].summary
    assert skipped[1].ok is None and "pass the model" in skipped[1].summary
    assert skipped[4].metrics["float_reference"].startswith("float IR")

    # Seeded random weights (accuracy is chance): level 4's limits, a guard for trained models, are lifted.
    ladder = verify.run_ladder(artifact, data, reference_samples=2, lava_samples=0, model=model,
                               max_accuracy_drop=1.0, min_spike_agreement=0.0)
    levels = {level.level: level for level in ladder.levels}
    assert levels[0].ok and levels[0].metrics["route"] == "python"  # the module compiles to these very files
    assert ladder.ok and levels[1].ok and levels[1].metrics["unexplained"] == 0 and levels[2].ok
    assert levels[4].metrics["float_reference"] == "the trained module"
    assert np.isfinite(levels[4].metrics["accuracy_fixed"])


def test_from_nir_and_compile_take_a_nir_graph_in_memory_or_a_file(tmp_path):
    """A NIR graph comes in through the same two calls; level 1 runs the framework's module when given one."""
    import nir
    import torch
    from snntorch.export_nir import export_to_nir

    from tests.cli import nir_nets

    digits = load_digits("train")
    net = nir_nets.train(nir_nets.snntorch_net, digits.images, digits.labels, epochs=1)
    graph = export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    ir = inflor_deploy.from_nir(graph, timesteps=4, reset="subtract")
    assert isinstance(ir, Graph) and ir.node("1").reset == "subtract" and ir.node("1").reset_timing == "next_step"
    data = load_digits("test").take(20)
    # in memory: the graph itself rebuilds it (level 0) and is evaluated as NIR defines it (level 1)
    artifact = inflor_deploy.compile(graph, timesteps=4, reset="subtract", output=tmp_path / "mem", probe_samples=2)
    ladder = verify.run_ladder(artifact, data, lava_samples=0, model=graph)
    assert [level.ok for level in ladder.levels[:3]] == [True, True, True]
    assert ladder.levels[1].name.startswith("NIR graph as NIR defines it")
    # from a file, with the trained module: level 1 is snnTorch's own forward pass
    nir.write(tmp_path / "snn.nir", graph)
    artifact = inflor_deploy.compile(tmp_path / "snn.nir", timesteps=4, reset="subtract", output=tmp_path / "file",
                                     probe_samples=2)  # fmt: skip
    ladder = verify.run_ladder(artifact, data, lava_samples=0, model=net)
    assert ladder.levels[1].name == "the framework's own forward pass vs float IR (from NIR)"
    assert ladder.levels[1].ok and ladder.levels[1].metrics["spikes"] > 0 and ladder.levels[1].metrics["mismatches"] == 0
    with pytest.raises(InflorError, match="reset, dt, compare and convention say how a NIR graph is read"):
        inflor_deploy.compile(net, input_shape=(1, 8, 8), timesteps=4, output=tmp_path / "x", reset="subtract")
    with pytest.raises(InflorError, match="a NIR graph needs timesteps=T"):
        inflor_deploy.compile(tmp_path / "snn.nir", output=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_finetune_is_a_top_level_function(tmp_path):
    """``inflor_deploy.finetune`` is the API function (the driver module is ``inflor_deploy.finetuning``)."""
    import inflor_deploy
    import inflor_deploy.finetuning  # noqa: F401 - importing the driver must not shadow the function

    assert callable(inflor_deploy.finetune) and inflor_deploy.finetune.__module__ == "inflor_deploy.api"
    with pytest.raises(InflorError, match="unknown target"):
        inflor_deploy.finetune(DEFAULT_MODEL, "no-such-target", output=tmp_path / "out.pt")
