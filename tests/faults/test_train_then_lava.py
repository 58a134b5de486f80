"""Training (with its progress bar) and then Lava in one Python process.

Before: tqdm's first bar creates a multiprocessing lock, which fixes the
default start method, and Lava's import then called
``multiprocessing.set_start_method('fork')`` unforced and failed with
``RuntimeError: context has already been set`` (fixed in ``lava_compat``).
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    from inflor_deploy.backends.lava.network import compare_with_simulator
    from inflor_deploy.checkpoint import save_checkpoint
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.data import load_dataset
    from inflor_deploy.nn.models import ModelConfig
    from inflor_deploy.train import TrainConfig, train

    train_data, test_data = load_dataset("digits", "train").take(256), load_dataset("digits", "test").take(40)
    config = ModelConfig(arch="digits_cnn", num_classes=10, in_channels=1, image_size=8, timesteps=2)
    result = train(config, train_data, test_data, TrainConfig(epochs=1), progress=True)
    # The precondition of the old failure: the progress bar fixed the start method before Lava's import.
    print("start method fixed before Lava:", multiprocessing.get_start_method(allow_none=True))
    save_checkpoint(sys.argv[1], result.model, {"dataset": "digits"})
    compiled = compile_checkpoint(sys.argv[1], probe_samples=2)
    parity = compare_with_simulator(compiled.fixed_graph, test_data.images[:1])
    print("lava parity:", parity.ok)
    """
)


@pytest.mark.lava
def test_train_with_a_progress_bar_then_run_lava_in_the_same_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "tiny.pt")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "start method fixed before Lava: fork" in result.stdout
    assert "lava parity: True" in result.stdout
    assert "train digits_cnn" in result.stderr  # the tqdm bar was drawn
