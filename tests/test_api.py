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


def test_compile_writes_and_returns_the_artifact_and_verify_needs_the_model(tmp_path):
    data = load_digits("test").take(24)
    model = calibrated(residual_cat_net(T=4), load_digits("train").images[:128])
    artifact = inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4, output=tmp_path / "out",
                                     probe_images=data.images[:8])  # fmt: skip
    assert artifact.path == tmp_path / "out" and artifact.manifest["complete"]
    source = artifact.manifest["source"]
    assert source["checkpoint"] is None and source["model"]["route"] == "python"
    assert source["model"]["class"].endswith("ResidualCatNet") and len(source["model"]["file_sha256"]) == 64
    assert artifact.manifest["probe"] == "8 given images"
    with pytest.raises(InflorError, match="already exists"):
        inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4, output=tmp_path / "out")

    skipped = verify.run_ladder(artifact, data, reference_samples=2, lava_samples=0)
    level1 = skipped.levels[0]
    assert level1.ok is None and "pass the model" in level1.summary
    assert skipped.levels[3].metrics["float_reference"].startswith("float IR")

    ladder = verify.run_ladder(artifact, data, reference_samples=2, lava_samples=0, model=model)
    levels = {level.level: level for level in ladder.levels}
    assert ladder.ok and levels[1].ok and levels[1].metrics["unexplained"] == 0 and levels[2].ok
    assert levels[4].metrics["float_reference"] == "the trained module"
    assert np.isfinite(levels[4].metrics["accuracy_fixed"])
