"""`inflor-deploy compile WEIGHTS.pt --model MODULE:FACTORY ...`: user-defined networks end to end, and every error.

The networks (tests/cli/user_nets.py) are built from inflor_deploy.nn layers, not build_model; their weights
are seeded and their tdBN statistics set from digits images, so every layer fires. Each is saved as a plain
state_dict, compiled through the CLI and verified: level 1 spike-exact against the module itself, levels 2
and 3 bit-exact (Lava on one sample).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from inflor_deploy.artifact import load_artifact, sha256
from inflor_deploy.data import load_digits
from inflor_deploy_cli.main import cli
from tests.cli.user_nets import calibrated, residual_cat_net, three_conv_net

ROOT = Path(__file__).resolve().parents[2]
NETS = "tests/cli/user_nets.py"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _at_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # --model tests/cli/user_nets.py:... is a path relative to here


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    images = load_digits("train").images[:256]
    torch.save(calibrated(three_conv_net(width=8), images, timesteps=4).state_dict(), folder / "three_conv.pt")
    torch.save(calibrated(residual_cat_net(T=4), images).state_dict(), folder / "residual_cat.pt")
    from tests.cli.user_nets import relu_net

    torch.save(relu_net().state_dict(), folder / "relu.pt")
    return folder


def _verified(tmp_path, weights_file, factory, *extra):
    out = tmp_path / "out"
    compiled = invoke("compile", weights_file, "--model", f"{NETS}:{factory}", "--input-shape", "1,8,8", "-T", 4,
                      "-o", out, *extra)  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    # Seeded random weights (not trained: accuracy is chance), so level 4's limits, a guard for trained
    # models, are lifted; levels 0-3 are the proof.
    checked = invoke("verify", out, "--data", "digits", "--samples", 48, "--reference-samples", 2, "--lava-samples", 1,
                     "--max-accuracy-drop", 100, "--min-spike-agreement", 0)  # fmt: skip
    assert checked.exit_code == 0, checked.output
    ladder = json.loads((out / "verify.json").read_text())
    levels = {level["level"]: level for level in ladder["levels"]}
    assert ladder["ok"] and all(levels[k]["ok"] for k in (0, 1, 2, 3)) and levels[4]["ok"] is True
    assert levels[1]["metrics"]["unexplained"] == 0 and levels[1]["metrics"]["spikes"] > 1000
    return out, compiled.output, levels


@pytest.mark.lava
def test_three_conv_network_compiles_and_verifies(tmp_path, weights):
    out, output, levels = _verified(tmp_path, weights / "three_conv.pt", "three_conv_net", "--model-arg", "width=8")
    assert "compiled three_conv.pt (" in output and "multi-step" in output
    manifest = load_artifact(out).manifest
    model = manifest["source"]["model"]
    # A .py module is recorded absolute, so that verify rebuilds it from any directory.
    assert model["route"] == "factory" and model["module"] == str(ROOT / NETS) and model["factory"] == "three_conv_net"
    assert model["args"] == {"width": 8} and model["file"] == str(ROOT / NETS)
    assert model["input_shape"] == [1, 8, 8] and model["timesteps"] == 4 and model["time_mode"] == "multi"
    # The factory's source file is a hashed source, like the weights.
    sources = {e["role"]: e for e in manifest["integrity"]["sources"]}
    assert sources["model_source"] == {"role": "model_source", "path": str(ROOT / NETS), "sha256": sha256(ROOT / NETS)}
    assert sources["checkpoint"]["path"] == str((weights / "three_conv.pt").resolve())
    assert levels[0]["ok"] and levels[0]["metrics"]["route"] == "factory"  # level 0: rebuilt through the factory
    assert levels[1]["metrics"]["mismatches"] == 0  # no MPR: the same float32 operations, bit for bit
    # run and report work on it as on any artifact.
    ran = invoke("run", out, "--backend", "sim", "--data", "digits", "--samples", 20)
    assert ran.exit_code == 0 and "sim: accuracy" in ran.output
    reported = invoke("report", out, "--data", "digits", "--samples", 8)
    assert reported.exit_code == 0, reported.output
    assert (out / "report" / "report.json").is_file()


@pytest.mark.lava
def test_residual_and_concat_network_compiles_and_verifies(tmp_path, weights):
    out, _, levels = _verified(tmp_path, weights / "residual_cat.pt", "residual_cat_net", "--no-lava-smoke")
    fixed = load_artifact(out).fixed_graph
    assert fixed.node("sn_mix").sources == ("mix[0]", "mix[1]") and fixed.node("sn_res").sources[1] == "sn_res.shortcut"
    assert "pool" in levels[1]["metrics"]["membranes_from_ir"]  # the max pool's OR layer: its H is the IR's


def test_verify_says_when_the_model_source_changed(tmp_path, weights):
    nets = tmp_path / "nets.py"
    shutil.copy(ROOT / NETS, nets)
    out = tmp_path / "out"
    compiled = invoke("compile", weights / "three_conv.pt", "--model", f"{nets}:three_conv_net", "--input-shape",
                      "1,8,8", "-T", 4, "-o", out, "--no-lava-smoke")  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    nets.write_text(nets.read_text() + "\n# edited after the compile\n")
    # The factory's file is a hashed source: levels 0 and 1 would rebuild another model, so verify stops and says why.
    checked = invoke("verify", out, "--samples", 8, "--reference-samples", 1, "--lava-samples", 0)
    assert checked.exit_code == 1, checked.output
    assert f"the source model_source {nets.resolve()} was replaced after compiling artifact {out}" in checked.output
    assert f"--model {nets.resolve()}:three_conv_net --input-shape 1,8,8 -T 4" in checked.output  # the recompile hint
    assert "Traceback" not in checked.output and not (out / "verify.json").exists()


def _nothing_written(tmp_path):
    return not any(p.name == "out" or p.name.startswith(".out.") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "model, extra, message",
    [
        (f"{NETS}:broken_factory", ["--model-arg", "width=4"],
         f"the factory {NETS}:broken_factory(width=4) raised RuntimeError: cannot build width 4"),
        ("inflor_no_such_module:make", [], "module 'inflor_no_such_module' not found"),
        ("tests/cli/no_such_file.py:make", [], "model file tests/cli/no_such_file.py not found"),
        (f"{NETS}:no_such_factory", [], f"{NETS} has no 'no_such_factory'; callables in it:"),
        (f"{NETS}:NOT_CALLABLE", [], f"{NETS}:NOT_CALLABLE is a int, not a callable"),
        (f"{NETS}:not_a_model", [], "returned a dict, not a torch nn.Module"),
        (f"{NETS}:three_conv_net", ["--model-arg", "width=4"],
         "the weights do not fit the model built by the factory: shape mismatches ['conv1.module.weight: model (4, 1, 3, 3), file (8, 1, 3, 3)'"),
        (f"{NETS}:residual_cat_net", [], "missing keys ['bn_a.beta'"),
        (f"{NETS}:three_conv_net", ["--input-shape", "3,8,8"], "failed at fx node 'conv1' (module 'conv1' (TimeDistributed))"),
        (f"{NETS}:three_conv_net", ["--input-shape", "1x8x8"], "--input-shape must be one sample's shape as positive integers C,H,W"),
        (f"{NETS}:relu_net", [], "TimeDistributed at fx node '_1' (module '1') cannot be converted: it applies ReLU at every step"),
        (f"{NETS}:three_conv_net", ["--model-arg", "8"], "--model-arg '8' must be KEY=VALUE"),
        ("three_conv_net", [], "--model 'three_conv_net' must be MODULE:FACTORY"),
    ],
    ids=["factory-raises", "module-not-found", "file-not-found", "no-factory", "not-callable", "not-a-module",
         "shape-mismatch", "missing-keys", "wrong-input-shape", "bad-input-shape", "unsupported-op", "bad-model-arg",
         "bad-spec"],
)  # fmt: skip
def test_bad_user_model_input_gives_one_line_and_exit_1(tmp_path, weights, model, extra, message):
    weights_file = weights / ("relu.pt" if model.endswith(":relu_net") else "three_conv.pt")
    args = ["compile", weights_file, "--model", model, "-T", 4, "-o", tmp_path / "out", "--no-lava-smoke"]
    if "--input-shape" not in extra:
        args += ["--input-shape", "1,8,8"]
    result = invoke(*args, *extra)
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert _nothing_written(tmp_path)


def test_weights_that_are_not_a_plain_state_dict_are_never_unpickled(tmp_path):
    torch.save(three_conv_net(), tmp_path / "pickled.pt")  # a whole module: loading it would run code
    result = invoke("compile", tmp_path / "pickled.pt", "--model", f"{NETS}:three_conv_net", "--input-shape",
                    "1,8,8", "-T", 4, "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 1 and "not a plain state_dict that loads without running code" in result.output
    torch.save({"model": three_conv_net().state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    result = invoke("compile", tmp_path / "wrapped.pt", "--model", f"{NETS}:three_conv_net", "--input-shape",
                    "1,8,8", "-T", 4, "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 1 and "expected a state_dict (parameter name -> tensor), found ['epoch', 'model']" in result.output


def test_model_options_must_come_together(tmp_path, weights):
    result = invoke("compile", weights / "three_conv.pt", "--model", f"{NETS}:three_conv_net", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "--model needs --input-shape C,H,W and -T N" in result.output
    from inflor_deploy.pretrained import DEFAULT_MODEL

    result = invoke("compile", DEFAULT_MODEL, "--input-shape", "1,8,8", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "describe a model given with --model MODULE:FACTORY" in result.output
    # A state_dict without --model: the checkpoint loader points at the --model route.
    result = invoke("compile", weights / "three_conv.pt", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "--model MODULE:FACTORY --input-shape C,H,W -T N" in result.output


def test_the_model_route_takes_the_declared_input_options(tmp_path, weights):
    """--input-range/--input-mean/--input-std apply to --model as to a checkpoint: recorded, folded, and verify
    feeds the module the data as the pipeline hands them over (normalized), levels 0 and 1 exact."""
    out = tmp_path / "out"
    compiled = invoke("compile", weights / "three_conv.pt", "--model", f"{NETS}:three_conv_net", "--model-arg",
                      "width=8", "--input-shape", "1,8,8", "-T", 4, "--input-range", "0,1", "--input-mean", "0.3",
                      "--input-std", "0.4", "-o", out, "--no-lava-smoke", "--probe-samples", 4)  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    artifact = load_artifact(out)
    assert artifact.manifest["compile_options"]["input"] == {"range": [0.0, 1.0], "mean": [0.3], "std": [0.4],
                                                            "encoding": "direct"}  # fmt: skip
    assert artifact.manifest["input"]["normalization"] == {"mean": [0.30000001192092896], "std": [0.4000000059604645]}
    imported = artifact.graph_at("import")
    assert [x.name for x in imported.nodes[:3]] == ["image", "input_normalization", "conv1"]
    assert not artifact.float_graph.of_type(type(imported.nodes[1]))  # FoldInputNormalization folded it
    checked = invoke("verify", out, "--data", "digits", "--samples", 16, "--reference-samples", 1, "--lava-samples", 0,
                     "--max-accuracy-drop", 100, "--min-spike-agreement", 0)  # fmt: skip
    assert checked.exit_code == 0, checked.output
    levels = {level["level"]: level for level in json.loads((out / "verify.json").read_text())["levels"]}
    assert levels[0]["ok"] and levels[1]["ok"] and levels[1]["metrics"]["spikes"] > 0
    # A declaration that does not fit the model is one line, exit 1, nothing written.
    bad = invoke("compile", weights / "three_conv.pt", "--model", f"{NETS}:three_conv_net", "--input-shape", "1,8,8",
                 "-T", 4, "--input-mean", "0.3,0.2", "--input-std", "0.4,0.4", "-o", tmp_path / "bad")  # fmt: skip
    assert bad.exit_code == 1 and "the model's input has 1 channels" in bad.output and not (tmp_path / "bad").exists()


def test_a_multi_step_model_on_event_sequences_compiles_and_verifies(tmp_path, weights):
    """--input-encoding sequence: the module is called on [T, B, 1, 8, 8] events (not a repeated frame); the IR's
    Input is a sequence; verify runs the module on the events of an .npz [N, T, C, H, W] dataset."""
    import numpy as np

    rng = np.random.default_rng(7)
    events = (rng.random((12, 4, 1, 8, 8)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "events.npz", x=events, y=rng.integers(0, 10, size=12))
    out = tmp_path / "out"
    compiled = invoke("compile", weights / "three_conv.pt", "--model", f"{NETS}:three_conv_net", "--input-shape",
                      "1,8,8", "-T", 4, "--input-encoding", "sequence", "-o", out, "--no-lava-smoke",
                      "--probe-samples", 4)  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    artifact = load_artifact(out)
    model = artifact.manifest["source"]["model"]
    assert model["encoding"] == "sequence" and model["input"] == "[T, B, C, H, W] (events)"
    assert artifact.fixed_graph.input.encoding == "sequence" and "integer frames" in artifact.manifest["probe"]
    checked = invoke("verify", out, "--data", tmp_path / "events.npz", "--reference-samples", 1, "--lava-samples", 0,
                     "--max-accuracy-drop", 100, "--min-spike-agreement", 0)  # fmt: skip
    assert checked.exit_code == 0, checked.output
    levels = {level["level"]: level for level in json.loads((out / "verify.json").read_text())["levels"]}
    assert levels[0]["ok"] and levels[1]["ok"] and levels[2]["ok"]
    assert levels[1]["metrics"]["spikes"] > 0 and levels[1]["metrics"]["mismatches"] == 0
    # Single frames are not what it was compiled for.
    np.savez(tmp_path / "frames.npz", x=events[:, 0], y=np.zeros(12, np.int64))
    refused = invoke("verify", out, "--data", tmp_path / "frames.npz", "--lava-samples", 0)
    assert refused.exit_code == 1 and "sequence" in refused.output
