"""`inflor-deploy finetune` end to end on a tiny epoch count, and its refusals (one line, exit 1)."""

import json

import torch
from click.testing import CliRunner

from inflor_deploy.nn import ModelConfig, build_model
from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli
from tests.test_finetuning import small_digits


def test_finetune_then_compile_and_info(tmp_path):
    runner = CliRunner()
    data = small_digits(tmp_path / "digits.npz", train=64, test=30)
    out = tmp_path / "tuned.pt"
    args = ["finetune", str(DEFAULT_MODEL), "--target", "loihi2-sim", "--epochs", "1", "--data", data,
            "--activity-weight", "0.5", "-o", str(out)]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "digits_cnn on loihi2-sim: test accuracy float" in result.output and "fine-tuned" in result.output
    assert out.exists()
    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "exists; pass --force" in again.output
    info = json.loads(runner.invoke(cli, ["info", str(out)]).output)
    assert info["metadata"]["integer_grid"]["target"] == "loihi2-sim"
    assert info["metadata"]["finetune"]["activity_weight"] == 0.5
    compiled = runner.invoke(cli, ["compile", str(out), "-o", str(tmp_path / "art"), "--no-lava-smoke",
                                   "--probe-samples", "2"])  # fmt: skip
    assert compiled.exit_code == 0, compiled.output
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["compile_options"]["quantization"]["layer_scales"] == info["metadata"]["integer_grid"]["layer_scales"]


def _one_line_error(result, text):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_input_exits_1_with_one_line(tmp_path):
    runner = CliRunner()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    _one_line_error(runner.invoke(cli, ["finetune", str(tmp_path / "foreign.pt"), "-o", str(tmp_path / "o.pt")]),
                    "not an inflor-deploy checkpoint")  # fmt: skip
    events = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=2)).eval()
    save_checkpoint(tmp_path / "events.pt", events, {"dataset": "digits", "input_encoding": "sequence"})
    _one_line_error(runner.invoke(cli, ["finetune", str(tmp_path / "events.pt"), "-o", str(tmp_path / "o.pt")]),
                    "takes event sequences")  # fmt: skip
    _one_line_error(runner.invoke(cli, ["finetune", str(DEFAULT_MODEL), "--weight-bits", "9",
                                        "-o", str(tmp_path / "o.pt")]), "weight_bits must be an integer in 2..8")  # fmt: skip
    _one_line_error(runner.invoke(cli, ["finetune", str(DEFAULT_MODEL), "-t", "nope", "-o", str(tmp_path / "o.pt")]),
                    "unknown target 'nope'")  # fmt: skip
    _one_line_error(runner.invoke(cli, ["finetune", str(DEFAULT_MODEL), "--activity-weight", "-1",
                                        "-o", str(tmp_path / "o.pt")]), "activity weight")  # fmt: skip
    assert not (tmp_path / "o.pt").exists()
