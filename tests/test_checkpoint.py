"""Checkpoint format: round trip, and a clear error for every kind of bad file."""

import pickle

import pytest
import torch

from inflor_deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from inflor_deploy.nn import ModelConfig, build_model
from inflor_deploy.pretrained import DEFAULT_MODEL

DIGITS = ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(DIGITS).eval()


def test_round_trip_restores_config_weights_and_outputs(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, {"test_accuracy": 0.5})
    loaded = load_checkpoint(path)
    assert loaded.config == DIGITS and loaded.metadata == {"test_accuracy": 0.5}
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[key]), key
    images = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(images), loaded.model(images))
    # The payload is plain data: torch's safe loader reads it without running code.
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "inflor-deploy-checkpoint" and payload["config"]["arch"] == "digits_cnn"


def test_missing_corrupt_and_truncated_files(tmp_path, model):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    good = save_checkpoint(tmp_path / "good.pt", model).read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated|not a readable"):
        load_checkpoint(tmp_path / "cut.pt")


def test_foreign_files_name_what_is_missing(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "plain_state_dict.pt")
    with pytest.raises(CheckpointError, match="not an inflor-deploy checkpoint"):
        load_checkpoint(tmp_path / "plain_state_dict.pt")
    torch.save({"format": "inflor-deploy-checkpoint", "format_version": 1,
                "config": {"arch": "alexnet"}, "state_dict": {}}, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="unknown architecture 'alexnet'; supported: digits_cnn"):
        load_checkpoint(tmp_path / "arch.pt")


def test_pickled_module_needs_trust(tmp_path, model):
    torch.save(model, tmp_path / "module.pt")  # a whole pickled nn.Module
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        load_checkpoint(tmp_path / "module.pt")
    loaded = load_checkpoint(tmp_path / "module.pt", trust_pickle=True)
    assert loaded.config == DIGITS and loaded.metadata["converted_from"] == "pickled nn.Module"


def test_untrusted_pickle_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_non_finite_and_mismatched_weights(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["fc1.module.weight"][0, 0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="'fc1.module.weight' has 1 NaN/inf"):
        load_checkpoint(tmp_path / "nan.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["fc2.module.bias"]
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing \\['fc2.module.bias'\\]"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bundled_model_loads_and_meets_the_accuracy_target():
    loaded = load_checkpoint(DEFAULT_MODEL)
    assert loaded.config.arch == "digits_cnn" and loaded.config.timesteps == 4
    assert loaded.config.neuron == "srif" and loaded.config.mpr
    assert loaded.metadata["test_accuracy"] >= 0.95
