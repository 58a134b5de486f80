"""`inflor-deploy compile` end to end: the artifact, and every bad input named in the issue."""

import json

import numpy as np

import pytest
import torch
from click.testing import CliRunner

from inflor_deploy.artifact import load_artifact
from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import ModelConfig, build_model
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


def _compile(tmp_path, *args, out="out"):
    result = CliRunner().invoke(cli, ["compile", *map(str, args), "-o", str(tmp_path / out)])
    return result


def _nothing_written(tmp_path, out="out"):
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out}.") or p.name == out]
    return leftovers == []


def test_compile_bundled_model_writes_a_self_describing_artifact(tmp_path):
    result = _compile(tmp_path, DEFAULT_MODEL)
    assert result.exit_code == 0, result.output
    assert "ok   ScheduleTimesteps" in result.output and "artifact:" in result.output
    artifact = load_artifact(tmp_path / "out")
    manifest = artifact.manifest
    assert manifest["target"]["name"] == "loihi2-sim" and manifest["complete"]
    assert manifest["passes"] == [
        "FoldBatchNorm", "DistributeJoins", "FoldAveragePool", "FoldInputNormalization",
        "FoldRectifierIntoThreshold", "SoftResetToSubtractive", "DelayedResetToSameStep", "ShiftResetToZero",
        "FoldInputGain", "QuantizeFixedPoint", "ScheduleTimesteps",
    ]  # fmt: skip
    assert all(c["ok"] for c in manifest["contracts"]) and len(manifest["contracts"]) == 11
    assert {"torch", "onnx", "lava-nc", "python"} <= set(manifest["versions"])
    assert len(manifest["source"]["sha256"]) == 64
    fixed = artifact.fixed_graph
    assert fixed.schedule is not None and all(isinstance(x, n.FIXED_POINT_NODES) for x in fixed)
    report = json.loads((tmp_path / "out" / "quantization_report.json").read_text())
    assert [r["layer"] for r in report] == ["unit1.neuron", "unit2.neuron", "neuron_fc1", "readout"]
    assert (tmp_path / "out" / "model.float.onnx").stat().st_size > 0
    # The integer ONNX in the artifact runs in onnxruntime exactly like the integer reference.
    import onnx

    from inflor_deploy.data import load_digits
    from inflor_deploy.backends.onnx.fixed_model import run_fixed_onnx
    from inflor_deploy.backends.sim.int_reference import run_aligned

    images = load_digits("test").images[:8]
    ort = run_fixed_onnx(onnx.load(tmp_path / "out" / "model.fixed_point.onnx"), images)
    assert np.array_equal(ort.accumulator, run_aligned(fixed, images).accumulator)


def test_existing_output_is_refused_unless_forced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    refused = _compile(tmp_path, DEFAULT_MODEL)
    assert refused.exit_code == 1 and "already exists; choose another -o or pass --force" in refused.output
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    forced = CliRunner().invoke(cli, ["compile", str(DEFAULT_MODEL), "-o", str(tmp_path / "out"), "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "manifest.json").exists()


def test_stop_after_saves_the_ir_so_far(tmp_path):
    result = _compile(tmp_path, DEFAULT_MODEL, "--stop-after", "FoldRectifierIntoThreshold")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "out")
    assert artifact.manifest["passes"][-1] == "FoldRectifierIntoThreshold" and not artifact.manifest["complete"]
    assert not artifact.float_graph.of_type(n.BatchNorm)
    bad = _compile(tmp_path, DEFAULT_MODEL, "--stop-after", "Nope", out="o2")
    assert bad.exit_code == 1 and "unknown pass 'Nope'" in bad.output and _nothing_written(tmp_path, "o2")


def _pickled(tmp_path, mutate):
    model = build_model(DIGITS)
    mutate(model)
    torch.save(model, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def _checkpoint(tmp_path, **changes):
    model = build_model(DIGITS)
    path = save_checkpoint(tmp_path / "model.pt", model)
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key == "state_dict":
            value(payload["state_dict"])
        else:
            payload["config"][key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "make, flags, message",
    [
        (lambda p: _checkpoint(p, arch="alexnet"), [], "unknown architecture 'alexnet'"),
        (lambda p: _checkpoint(p, vth=-0.5), [], "vth must be > 0"),
        (lambda p: _checkpoint(p, timesteps=0), [], "timesteps must be an int >= 1"),
        (lambda p: _checkpoint(p, state_dict=lambda sd: sd["fc2.module.weight"].__setitem__((0, 0), float("inf"))),
         [], "'fc2.module.weight' has 1 NaN/inf"),
        (lambda p: p / "missing.pt", [], "no such checkpoint file"),
        (lambda p: _checkpoint(p), ["-T", "0"], "timesteps must be >= 1"),
        (lambda p: _checkpoint(p), ["--target", "loihi9"], "unknown target 'loihi9'"),
        (lambda p: _pickled(p, lambda m: setattr(m, "pool", torch.nn.MaxPool2d(2))), ["--trust-pickle"],
         "MaxPool2d"),
        (lambda p: _pickled(p, lambda m: [setattr(m, name, torch.nn.ReLU()) for name in ("neuron_fc1",)]
                            and [setattr(u, "neuron", torch.nn.ReLU()) for u in (m.unit1, m.unit2)]),
         ["--trust-pickle"], "not a spiking network"),
        (lambda p: _pickled(p, lambda m: None), [], "--trust-pickle"),
        (lambda p: _checkpoint(p), ["--weight-bits", "9"], "weight_bits must be an integer in 2..8"),
        (lambda p: _checkpoint(p), ["--prune", "1.5"], "prune must be a fraction in [0, 1)"),
    ],
    ids=["unknown-arch", "non-positive-threshold", "T-zero-config", "inf-weights", "missing-file",
         "T-zero-flag", "unknown-target", "unsupported-layer", "non-snn", "pickle-without-trust", "weight-bits-9",
         "prune-1.5"],
)
def test_bad_input_gives_a_clear_error_and_writes_nothing(tmp_path, make, flags, message):
    model = make(tmp_path)
    result = _compile(tmp_path, model, *flags)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert _nothing_written(tmp_path)


def test_a_coarsely_rounded_threshold_warns_and_overflow_error_refuses(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=2, vth=2e-4, mpr=False))
    path = save_checkpoint(tmp_path / "small_vth.pt", model)
    warned = _compile(tmp_path, path, "--probe-samples", "2", "--no-lava-smoke")
    assert warned.exit_code == 0, warned.output
    assert "WARNING: threshold 0.0002 x scale" in warned.output and "% error, bound 1 %" in warned.output
    rows = json.loads((tmp_path / "out" / "quantization_report.json").read_text())
    assert any(row.get("rounding_warnings") for row in rows) and all(row.get("rounding_bound", 0.01) == 0.01 for row in rows)
    # headroom uv: no layer can saturate, so the refusal is the rounding one.
    refused = _compile(tmp_path, path, "--probe-samples", "2", "--headroom", "uv", "--overflow", "error", out="o2")
    assert refused.exit_code == 1 and "Refused because overflow='error' (--overflow error)" in refused.output
    assert "Traceback" not in refused.output and _nothing_written(tmp_path, "o2")


def test_weight_bits_and_pruning_compress_every_synapse(tmp_path):
    """--weight-bits 4 --prune 0.5: every model synapse on the 4-bit grid, half its connections kept, run sparse."""
    result = _compile(tmp_path, DEFAULT_MODEL, "--weight-bits", "4", "--prune", "0.5", "--no-lava-smoke")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "out")
    assert artifact.manifest["compile_options"]["quantization"]["weight_bits"] == 4
    fixed = artifact.fixed_graph
    for syn in fixed.of_type(n.FixedPointSynapse):
        assert syn.weight_bits == 4 and np.unique(syn.weight).size <= 16, syn.name
        if not syn.name.endswith("bias_current"):
            assert syn.sparse and np.count_nonzero(syn.weight) <= syn.weight.size // 2 + 1, syn.name
