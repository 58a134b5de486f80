"""Level 0: compiling is deterministic, and an artifact is compared bit for bit with a fresh compile."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from inflor_deploy.artifact import load_artifact, write_artifact
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.integrity import sha256
from inflor_deploy.passes.base import QuantizationOptions
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.rebuild import compare_with_rebuild


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("rebuild") / "uv"
    # Non-default options: level 0 must rebuild with what the manifest records.
    options = QuantizationOptions(headroom="uv")
    write_artifact(compile_checkpoint(DEFAULT_MODEL, quantization=options, timesteps=3, probe_samples=2), out)
    return out


def test_two_compiles_in_separate_processes_write_identical_bytes(compiled, tmp_path):
    # Another process with another hash seed: set and dict ordering, zip timestamps and float
    # formatting must not change a byte of what the compile writes.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [sys.executable, "-m", "inflor_deploy_cli.main", "compile", str(DEFAULT_MODEL), "-o", str(tmp_path / "again"),
           "--headroom", "uv", "-T", "3", "--probe-samples", "2", "--no-lava-smoke"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first = json.loads((compiled / "manifest.json").read_text())["integrity"]["files"]
    second = json.loads((tmp_path / "again" / "manifest.json").read_text())["integrity"]["files"]
    assert {"fixed_point.npz", "model.fixed_point.onnx", "model.float.onnx"} <= set(first)
    assert first == second
    assert (compiled / "fixed_point.npz").read_bytes() == (tmp_path / "again" / "fixed_point.npz").read_bytes()


def test_the_manifest_records_every_option_needed_to_rebuild(compiled):
    options = load_artifact(compiled).manifest["compile_options"]
    assert options["target"] == "loihi2-sim" and options["timesteps"] == 3 and options["stop_after"] is None
    assert options["quantization"] == {"input_grade_scale": None, "weight_fill": 1.0, "headroom": "uv", "overflow": "warn",
                                       "weight_bits": None, "prune": 0.0, "plain_layers": False}


def test_an_untouched_artifact_equals_its_rebuild(compiled):
    comparison = compare_with_rebuild(load_artifact(compiled))
    assert comparison.ok and comparison.first_difference is None
    assert comparison.files_compared[:3] == ["fixed_point.npz", "model.fixed_point.onnx", "model.float.onnx"]
    # Every file compile wrote: the three above, quantization_report.json, and the IR after the import and each pass.
    artifact = load_artifact(compiled)
    assert len(comparison.files_compared) == 4 + len(artifact.manifest["files"]["ir_steps"])


def _copy(compiled, tmp_path):
    shutil.copytree(compiled, tmp_path / "art")
    return tmp_path / "art"


def test_an_edited_onnx_initializer_is_named(compiled, tmp_path):
    art = _copy(compiled, tmp_path)
    model = onnx.load(art / "model.float.onnx")
    init = model.graph.initializer[0]
    values = numpy_helper.to_array(init).copy()
    values.flat[1] += np.float32(0.25)
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, art / "model.float.onnx")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["integrity"]["files"]["model.float.onnx"] = sha256(art / "model.float.onnx")
    (art / "manifest.json").write_text(json.dumps(manifest))
    comparison = compare_with_rebuild(load_artifact(art))
    d = comparison.first_difference
    assert not comparison.ok and d["file"] == "model.float.onnx" and d["initializer"] == init.name
    assert d["actual"] == pytest.approx(d["expected"] + 0.25)


def test_options_that_differ_from_the_compile_make_level_0_fail(compiled, tmp_path):
    art = _copy(compiled, tmp_path)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["compile_options"]["quantization"]["headroom"] = "u"  # not what compiled these files
    (art / "manifest.json").write_text(json.dumps(manifest))
    d = compare_with_rebuild(load_artifact(art)).first_difference
    # headroom "uv" shrank the first layer's scale (its v could saturate); under "u" that scale grows until its bias
    # needs a bias source (an extra neuron), so the rebuilt graph's schedule is the first thing to differ.
    assert (d["file"], d["node"], d["field"]) == ("fixed_point.npz", "(graph)", "schedule")


@pytest.mark.parametrize(
    "declared, differs_at",
    # W / std: the first layer's weights fill their grid either way, so its bias (source) differs first.
    [(dict(input_mean="0.3", input_std="0.4"), ("unit1.neuron.bias_current", "weight")),
     # Events (one grade each): the first layer needs no bias source, the pixel compile does: the schedules differ.
     (dict(input_encoding="sequence", input_range="0,1"), ("(graph)", "schedule"))],
    ids=["normalized", "sequence"],
)  # fmt: skip
def test_level0_rebuilds_with_the_declared_input(tmp_path, declared, differs_at):
    out = tmp_path / "art"
    result = compile_checkpoint(DEFAULT_MODEL, timesteps=2, probe_samples=2, **declared)
    write_artifact(result, out)
    options = load_artifact(out).manifest["compile_options"]["input"]
    normalized = "input_mean" in declared
    assert options == {"range": [0.0, 1.0], "mean": [0.3] if normalized else None, "std": [0.4] if normalized else None,
                       "encoding": declared.get("input_encoding", "direct")}  # fmt: skip
    comparison = compare_with_rebuild(load_artifact(out))
    assert comparison.ok, comparison.first_difference
    # The default declaration compiles another network: level 0 names the first field that differs.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["compile_options"]["input"] = {"range": [0.0, 1.0], "mean": None, "std": None, "encoding": "direct"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    d = compare_with_rebuild(load_artifact(out)).first_difference
    assert (d["file"], d["node"], d["field"]) == ("fixed_point.npz", *differs_at), d


def test_level0_rebuilds_a_factory_artifact_through_its_factory(tmp_path):
    """--model artifacts: level 0 recompiles the weights with the recorded MODULE:FACTORY, arguments,
    input shape, T, time convention and input declaration (not through compile_checkpoint)."""
    import torch

    from inflor_deploy.compiler import compile_factory
    from inflor_deploy.frontends.user_model import FactorySpec, UserModelError
    from tests.cli.user_nets import three_conv_net

    nets = Path(__file__).resolve().parent / "cli" / "user_nets.py"
    torch.manual_seed(0)
    torch.save(three_conv_net(width=4).state_dict(), tmp_path / "weights.pt")
    spec = FactorySpec(module=str(nets), factory="three_conv_net", args={"width": 4})
    result = compile_factory(tmp_path / "weights.pt", spec, input_shape=(1, 8, 8), timesteps=2, probe_samples=2,
                             quantization=QuantizationOptions(headroom="uv"), input_mean="0.3", input_std="0.4")
    out = tmp_path / "art"
    write_artifact(result, out)
    artifact = load_artifact(out)
    assert artifact.manifest["source"]["model"]["route"] == "factory"
    comparison = compare_with_rebuild(artifact)
    assert comparison.ok, comparison.first_difference
    assert len(comparison.files_compared) == 4 + len(artifact.manifest["files"]["ir_steps"])

    def edited(change):
        manifest = json.loads((out / "manifest.json").read_text())
        change(manifest)
        copy = tmp_path / f"edited{len(list(tmp_path.iterdir()))}"
        shutil.copytree(out, copy)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return load_artifact(copy)

    # The recorded declaration is what the rebuild uses: without the normalization conv1's weights differ (W / std).
    plain = edited(lambda m: m["compile_options"]["input"].update(mean=None, std=None))
    d = compare_with_rebuild(plain).first_difference
    # (The normalized conv1's bias map needs a bias source, which also changes the schedule: compared first.)
    assert d["file"] == "fixed_point.npz" and (d["node"], d["field"]) in {("conv1", "weight"), ("(graph)", "schedule")}, d
    # The recorded factory arguments too: another width builds a model these weights do not fit.
    wider = edited(lambda m: m["source"]["model"]["args"].update(width=8))
    with pytest.raises(UserModelError, match="the weights do not fit the model built by the factory"):
        compare_with_rebuild(wider)
