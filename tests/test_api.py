"""The Python entry points inflor_deploy.trace and inflor_deploy.compile, and verify on an in-memory model."""

import numpy as np
import pytest

import inflor_deploy
from inflor_deploy import verify
from inflor_deploy.data import load_digits
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.nn import ModelConfig, build_model
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
