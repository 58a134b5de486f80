"""Re-running `verify` on a checkpoint reuses or rebuilds its artifact; Ctrl-C anywhere prints one line.

Before: the second `inflor-deploy verify model.pt` failed because its
default artifact directory existed ("pass --force"); Ctrl-C printed a
traceback (and one per Lava worker).
"""

import json
import shutil
import signal

import torch
from click.testing import CliRunner

from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli
from tests.faults.conftest import assert_nothing_left, partial_entries, printed, run_cli

VERIFY = ["--samples", "20", "--lava-samples", "0", "--reference-samples", "2"]


def _verify(model, *extra):
    result = CliRunner().invoke(cli, ["verify", str(model), *VERIFY, *extra])
    return result.exit_code, result.output


def test_verify_on_a_checkpoint_twice_reuses_then_rebuilds_when_the_checkpoint_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.pt"
    shutil.copy(DEFAULT_MODEL, model)
    first = _verify(model)
    assert first[0] == 0, first[1]
    assert "compiled model.pt" in first[1]
    second = _verify(model)
    assert second[0] == 0, second[1]
    assert "reusing artifacts/model-loihi2-sim: compiled from this checkpoint (sha256" in second[1]
    assert "compiled model.pt" not in second[1]  # not compiled again
    # verify.json, written under the artifact's lock, holds the whole ladder: level 0 rebuilt the
    # reused artifact bit for bit, and level 4 records its limits.
    written = json.loads((tmp_path / "artifacts" / "model-loihi2-sim" / "verify.json").read_text())
    assert [level["level"] for level in written["levels"]] == [0, 1, 2, 3, 4]
    assert written["levels"][0]["ok"] is True and written["levels"][0]["kind"] == "bit-exact"
    assert written["levels"][4]["metrics"]["max_accuracy_drop"] == 0.01
    assert written["levels"][4]["metrics"]["min_spike_agreement"] == 0.9

    payload = torch.load(model, weights_only=True)  # the same model, one weight changed
    name = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][name] = payload["state_dict"][name] * 1.01
    torch.save(payload, model)
    third = _verify(model)
    assert third[0] == 0, third[1]
    assert "recompiling artifacts/model-loihi2-sim: it does not match this request (checkpoint sha256" in third[1]
    assert "compiled model.pt" in third[1]
    assert partial_entries(tmp_path / "artifacts") == []


def test_verify_never_reuses_nor_silently_replaces_an_artifact_changed_after_compiling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.pt"
    shutil.copy(DEFAULT_MODEL, model)
    out = tmp_path / "artifacts" / "model-loihi2-sim"
    assert _verify(model)[0] == 0
    report = out / "quantization_report.json"
    report.write_text(report.read_text() + " ")
    edited = report.read_bytes()
    code, output = _verify(model)
    assert code == 1 and "Traceback" not in output
    assert "will not be reused" in output and "quantization_report.json differs from what compile wrote" in output
    assert "--force" in output and "parity ladder" not in output
    assert report.read_bytes() == edited  # left as found: it is the evidence
    code, output = _verify(model, "--force")
    assert code == 0, output
    assert "compiled model.pt" in output and report.read_bytes() != edited


def test_verify_never_replaces_a_directory_that_is_not_an_artifact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "artifacts" / "digits_srif_t4-loihi2-sim"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    code, output = _verify(DEFAULT_MODEL)
    assert code == 1 and "is not a usable artifact" in output and "--force" in output
    assert (mine / "notes.txt").read_text() == "mine"


def test_ctrl_c_during_training_prints_one_line_and_writes_no_checkpoint(tmp_path):
    out = tmp_path / "m.pt"
    run = run_cli(["train", "--epochs", "200", "-o", str(out)], tmp_path, send=signal.SIGINT, to_group=True,
                  when=printed("epoch/s"))  # fmt: skip
    assert run.returncode == 130
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == "error: interrupted by Ctrl-C (SIGINT); nothing was left behind"
    assert not out.exists() and partial_entries(tmp_path) == []
    assert_nothing_left(run)


def test_sigterm_during_a_compile_leaves_no_artifact_and_no_staging(tmp_path):
    out = tmp_path / "art"
    # The probe contracts at T = 200 take a while: the signal lands mid-compile (before the smoke run).
    run = run_cli(["compile", str(DEFAULT_MODEL), "-T", "200", "-o", str(out), "--no-lava-smoke"], tmp_path,
                  send=signal.SIGTERM, when=lambda w: (tmp_path / ".art.lock").exists())  # fmt: skip
    assert run.returncode == 143
    assert run.stderr.strip() == "error: interrupted by SIGTERM; nothing was left behind"
    assert not out.exists() and partial_entries(tmp_path) == []
    assert_nothing_left(run)
