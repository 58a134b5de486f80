"""`inflor-deploy export --format netx`: a trained digits model onto lava-dl NetX, bit-exact in Lava; refusals exit 1.

The route a user takes: `train --neuron if`, `compile --plain-layers`, `export --format netx
--check N`. The check loads the written file with ``netx.hdf5.Network``, runs it
on ``Loihi2SimCfg(select_tag="fixed_pt")`` and compares every spike and v of
every block and every readout with the fixed-point simulator.
"""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from inflor_deploy.backends.netx import run as nr
from inflor_deploy.backends.netx.writer import read_netx_metadata
from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.data import load_digits
from inflor_deploy.nn.models import ModelConfig, build_model
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli

pytestmark = pytest.mark.lava


def _invoke(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def trained_if(tmp_path_factory):
    """A digits_cnn with hard-reset IF neurons, trained briefly through the CLI on 320 digits, then compiled."""
    folder = tmp_path_factory.mktemp("if")
    digits = load_digits("train")
    np.savez(folder / "train.npz", x=digits.images[:320], y=digits.labels[:320])
    trained = _invoke("train", "--neuron", "if", "--data", folder / "train.npz", "--epochs", "2", "-T", "4",
                      "-o", folder / "if.pt")  # fmt: skip
    assert "digits_cnn T=4 if: test accuracy" in trained
    # --plain-layers: no bias source neuron and no weight exponent, the layout a netx chain holds.
    _invoke("compile", folder / "if.pt", "-o", folder / "art", "--no-lava-smoke", "--probe-samples", "4",
            "--plain-layers")  # fmt: skip
    return folder / "art"


@pytest.fixture(scope="module")
def srif_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("srif")
    _invoke("compile", DEFAULT_MODEL, "-o", folder / "art", "--no-lava-smoke", "--probe-samples", "2", "--plain-layers")
    return folder / "art"


def test_trained_if_digits_model_exports_to_netx_and_runs_bit_exactly_in_lava(trained_if, tmp_path):
    out = tmp_path / "model.net"
    printed = _invoke("export", trained_if, "--format", "netx", "-o", out, "--check", "3")
    assert "NetX HDF5 (4 CUBA blocks, exact)" in printed
    assert "on Loihi2SimCfg(select_tag='fixed_pt'), 3 samples: bit-exact with the fixed-point simulator" in printed
    assert "reset_interval=4, reset_offset=1, input_message_bits=8" in printed
    meta = read_netx_metadata(out)
    assert meta["exact"] and meta["source"]["artifact"] == str(trained_if.resolve())
    assert [b["kind"] for b in meta["blocks"]] == ["conv", "conv", "dense", "dense"]
    with h5py.File(out) as f:
        assert [f[f"layer/{i}/type"][0].decode() for i in range(len(f["layer"]))] == [
            "input", "conv", "conv", "flatten", "dense", "dense",
        ]  # fmt: skip
    # The file alone predicts what the simulator predicts (the readout a Loihi user reads).
    from inflor_deploy.artifact import load_artifact
    from inflor_deploy.backends.sim.fixed_point import simulate

    graph = load_artifact(trained_if).fixed_graph
    images = load_digits("test").images[3:6]
    assert min(simulate(graph, images).spike_counts.values()) > 0  # every layer spikes: no silent comparison
    run = nr.run_netx(graph, out, images)
    assert np.array_equal(run.accumulator, simulate(graph, images, view="pipelined").accumulator)


def test_a_check_that_is_not_bit_exact_exits_2_and_writes_nothing(trained_if, tmp_path, monkeypatch):
    original = nr.load_network

    def late_reset(path, metadata=None):
        metadata = read_netx_metadata(path)
        metadata["load"]["reset_offset"] = 2
        return original(path, metadata)

    monkeypatch.setattr(nr, "load_network", late_reset)
    printed = _invoke("export", trained_if, "--format", "netx", "-o", tmp_path / "m.net", "--check", "1", code=2)
    assert "NOT bit-exact" in printed and "first divergence" in printed and "was not written" in printed
    assert list(tmp_path.iterdir()) == []


def test_soft_reset_is_refused_with_its_reason_and_writes_nothing(srif_artifact, tmp_path):
    printed = _invoke("export", srif_artifact, "--format", "netx", "-o", tmp_path / "m.net", code=1)
    assert printed.startswith("error: layer 'unit1.neuron' has a soft (subtractive) reset")
    assert "docs/lava_findings.md" in printed and "Traceback" not in printed and printed.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    needs_check = _invoke("export", srif_artifact, "--format", "netx", "-o", tmp_path / "m.net", "--allow-inexact",
                          "--check", "0", code=1)  # fmt: skip
    assert "--allow-inexact needs --check N >= 1" in needs_check and list(tmp_path.iterdir()) == []


def test_allow_inexact_writes_soft_reset_as_hard_reset_and_prints_the_agreement(srif_artifact, tmp_path):
    printed = _invoke("export", srif_artifact, "--format", "netx", "-o", tmp_path / "m.net", "--allow-inexact",
                      "--check", "3")  # fmt: skip
    assert "NetX HDF5 (4 CUBA blocks, INEXACT)" in printed
    assert "INEXACT: soft reset (v -= " in printed
    assert "against the artifact's soft-reset model: min spike agreement" in printed and "class agreement" in printed
    assert read_netx_metadata(tmp_path / "m.net")["exact"] is False


def test_residual_model_is_refused_with_its_reason(tmp_path):
    model = build_model(ModelConfig(arch="resnet20", num_classes=10, in_channels=1, image_size=8, timesteps=2,
                                    neuron="if", mpr=False))  # fmt: skip
    save_checkpoint(tmp_path / "r20.pt", model, {})
    _invoke("compile", tmp_path / "r20.pt", "-o", tmp_path / "art", "--no-lava-smoke", "--probe-samples", "2")
    printed = _invoke("export", tmp_path / "art", "--format", "netx", "-o", tmp_path / "r20.net", code=1)
    assert "sums 2 synapses" in printed and "feed-forward chain" in printed
    assert not (tmp_path / "r20.net").exists()


def test_existing_output_tampered_artifact_and_wrong_data_are_user_errors(trained_if, tmp_path):
    out = tmp_path / "m.net"
    out.write_text("keep")
    exists = _invoke("export", trained_if, "--format", "netx", "-o", out, "--check", "0", code=1)
    assert "already exists" in exists and out.read_text() == "keep"
    digits_npz = tmp_path / "flat.npz"
    np.savez(digits_npz, x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2, np.int64))
    wrong = _invoke("export", trained_if, "--format", "netx", "-o", tmp_path / "n.net", "--data", digits_npz, code=1)
    assert "the model expects (1, 8, 8)" in wrong and not (tmp_path / "n.net").exists()
    missing = _invoke("export", tmp_path / "nothing", "--format", "netx", "-o", tmp_path / "n.net", code=1)
    assert "not an artifact directory" in missing


def test_export_checks_the_artifact_integrity_first(srif_artifact, tmp_path):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(srif_artifact, copy)
    with open(copy / "fixed_point.npz", "ab") as f:
        f.write(b"\0")
    printed = _invoke("export", copy, "--format", "netx", "-o", tmp_path / "m.net", "--allow-inexact", code=1)
    assert "fixed_point.npz" in printed and not (tmp_path / "m.net").exists()
