"""Whole workflows through the CLI on the other data paths: CIFAR-10 batches on disk and .npz arrays."""

import json

import numpy as np
from click.testing import CliRunner

from inflor_deploy.data import load_digits
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli
from tests.data.test_datasets import _write_batch


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_cifar10_folder_train_compile_verify_report(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", 4, seed=i)
    _write_batch(folder / "test_batch", 4, seed=9)
    data = f"cifar10:{folder}"
    out = _invoke("train", "--arch", "resnet20", "--data", data, "--epochs", "1", "-T", "2",
                  "-o", tmp_path / "r20.pt")  # fmt: skip
    assert "resnet20 T=2 srif+MPR: test accuracy" in out
    info = json.loads(_invoke("info", tmp_path / "r20.pt"))
    assert info["config"]["in_channels"] == 3 and info["config"]["image_size"] == 32
    _invoke("compile", tmp_path / "r20.pt", "-o", tmp_path / "art", "--no-lava-smoke", "--probe-samples", "2")
    verified = _invoke("verify", tmp_path / "art", "--data", data, "--reference-samples", "1", "--lava-samples", "0")
    assert "2  PASS" in verified and "on 4 samples" in verified
    _invoke("report", tmp_path / "art", "--data", data)
    report = json.loads((tmp_path / "art" / "report" / "report.json").read_text())
    totals = report["activity"]["totals"]
    assert totals["samples"] == 4 and totals["timesteps"] == 2
    # Every neuron updates every step: 4 samples x 2 steps x (spiking neurons + 10 readout neurons).
    assert totals["neuron_updates"] == 4 * 2 * (totals["spiking_neurons"] + 10) > 0
    assert report["resources"]["total_cores"] >= 19  # at least one core per layer of ResNet20


def test_npz_data_through_verify_and_run(tmp_path):
    digits = load_digits("test")
    np.savez(tmp_path / "few.npz", x=digits.images[:20], y=digits.labels[:20])
    _invoke("compile", DEFAULT_MODEL, "-o", tmp_path / "art", "--no-lava-smoke")
    verified = _invoke("verify", tmp_path / "art", "--data", tmp_path / "few.npz", "--lava-samples", "0",
                       "--reference-samples", "2")  # fmt: skip
    assert "1  PASS" in verified and "2  PASS" in verified and "on 20 samples" in verified
    ran = _invoke("run", tmp_path / "art", "--backend", "sim", "--data", f"npz:{tmp_path / 'few.npz'}", "--show", "2")
    assert "sim: accuracy" in ran and "on 20 samples of npz:few.npz" in ran


def test_event_npz_train_compile_verify_run_report(tmp_path):
    from tests.backends.test_sequence_input import synthetic_events

    train, test = synthetic_events(160, seed=0), synthetic_events(24, seed=1)
    np.savez(tmp_path / "events.npz", x_train=train.images, y_train=train.labels, x_test=test.images,
             y_test=test.labels)  # fmt: skip
    data = tmp_path / "events.npz"
    out = _invoke("train", "--data", data, "--epochs", "2", "-o", tmp_path / "ev.pt")
    assert "T=4" in out and "(24 samples: npz:events.npz/test (a separate split))" in out
    assert json.loads(_invoke("info", tmp_path / "ev.pt"))["metadata"]["input_encoding"] == "sequence"
    compiled = _invoke("compile", tmp_path / "ev.pt", "-o", tmp_path / "art", "--no-lava-smoke")
    assert "input: events in [0, 1], sequence encoding; the chip receives round(x * 1)" in compiled
    verified = _invoke("verify", tmp_path / "art", "--data", data, "--lava-samples", "0", "--reference-samples", "3")
    assert "0  PASS" in verified and "1  PASS" in verified and "2  PASS" in verified and "on 24 samples" in verified
    ran = _invoke("run", tmp_path / "art", "--data", data, "--show", "1")
    assert "sim: accuracy" in ran and "on 24 samples" in ran
    _invoke("report", tmp_path / "art", "--data", data)
    report = json.loads((tmp_path / "art" / "report" / "report.json").read_text())
    assert report["activity"]["first_layer"]["macs_per_sample"] == 0  # events are synops, not MACs
    # Static images do not fit an event artifact.
    digits = load_digits("test")
    np.savez(tmp_path / "static.npz", x=digits.images[:4], y=digits.labels[:4])
    failed = CliRunner().invoke(cli, ["run", str(tmp_path / "art"), "--data", str(tmp_path / "static.npz")])
    assert failed.exit_code == 1 and "compiled for sequence input" in failed.output
