"""The CLI as a user runs it: help, listing, training, evaluation, and clean errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from inflor_deploy.nn import ModelConfig, build_model
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_help_lists_the_commands(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "info", "targets", "demo"):
        assert command in result.output


def test_targets_lists_both_targets(runner):
    result = runner.invoke(cli, ["targets", "--json"])
    assert result.exit_code == 0
    names = [row["name"] for row in json.loads(result.output)]
    assert names == ["loihi2", "loihi2-sim"]


def test_info_and_evaluate_on_the_bundled_model(runner):
    info = runner.invoke(cli, ["info", str(DEFAULT_MODEL)])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["config"]["arch"] == "digits_cnn"
    result = runner.invoke(cli, ["evaluate", str(DEFAULT_MODEL), "--samples", "50"])
    assert result.exit_code == 0, result.output
    accuracy = float(result.output.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.9


def test_train_writes_a_loadable_checkpoint_and_refuses_to_overwrite(runner, tmp_path):
    out = tmp_path / "m.pt"
    args = ["train", "--epochs", "1", "-T", "2", "-o", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and out.exists()
    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "exists; pass --force" in again.output


def test_user_errors_exit_non_zero_without_traceback(runner, tmp_path):
    missing = runner.invoke(cli, ["info", str(tmp_path / "none.pt")])
    assert missing.exit_code == 1 and "no such checkpoint file" in missing.output
    torch.save(build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8)), tmp_path / "module.pt")
    untrusted = runner.invoke(cli, ["info", str(tmp_path / "module.pt")])
    assert untrusted.exit_code == 1 and "--trust-pickle" in untrusted.output
    trusted = runner.invoke(cli, ["info", "--trust-pickle", str(tmp_path / "module.pt")])
    assert trusted.exit_code == 0, trusted.output
    bad_data = runner.invoke(cli, ["evaluate", str(DEFAULT_MODEL), "--data", "mnist"])
    assert bad_data.exit_code == 1 and "unknown dataset 'mnist'" in bad_data.output
    bad_neuron = runner.invoke(cli, ["train", "-T", "0", "-o", str(tmp_path / "x.pt")])
    assert bad_neuron.exit_code == 1 and "timesteps" in bad_neuron.output
