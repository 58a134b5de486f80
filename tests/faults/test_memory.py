"""A T or batch the machine cannot hold is refused up front, with the estimate; batches shrink to fit.

Before: `inflor-deploy train -T 100000` grew to 23.8 GB and was OOM-killed;
compile, verify and `run --backend sim` on a large T likewise.
"""

import re
import time

import pytest
from click.testing import CliRunner

from inflor_deploy import memory
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy_cli.main import cli
from tests.faults.conftest import assert_nothing_left, assert_one_line, run_cli

ESTIMATE = re.compile(r"needs about [\d.,]+ [GM]B of memory \(.+\); [\d.,]+ [GM]B is available on this machine\. Lower ")


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_train_with_a_huge_t_is_refused_in_seconds_with_the_estimate(tmp_path):
    started = time.monotonic()
    run = run_cli(["train", "-T", "100000", "-o", str(tmp_path / "m.pt")], tmp_path)
    assert run.returncode == 1
    line = assert_one_line(run, "training digits_cnn with T=100,000", "x T=100,000 x 32 samples", "Lower -T")
    assert ESTIMATE.search(line), line
    assert time.monotonic() - started < 120  # refused before training, not killed after minutes
    assert not (tmp_path / "m.pt").exists()
    assert_nothing_left(run)


def test_compile_with_a_huge_t_is_refused_before_compiling(tmp_path):
    run = run_cli(["compile", str(DEFAULT_MODEL), "-T", "100000", "-o", str(tmp_path / "art")], tmp_path)
    assert run.returncode == 1
    line = assert_one_line(run, "compiling with T=100,000", "Lower -T (about T=")
    assert ESTIMATE.search(line), line
    assert "compiled" not in run.stdout and not (tmp_path / "art").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("cli-")] == []


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend the machine has ``n`` bytes available (the refusals and batch sizes follow)."""

    def set_available(n: int):
        monkeypatch.setattr(memory, "available_bytes", lambda: n)

    return set_available


def test_run_on_the_simulator_is_refused_when_one_sample_does_not_fit(digits_artifact, little_memory):
    little_memory(10_000)
    code, output = _invoke(["run", str(digits_artifact), "--backend", "sim", "--samples", "5"])
    assert code == 1 and "simulating one sample needs about" in output and "Lower T" in output
    assert "Traceback" not in output


def test_verify_is_refused_before_any_level_when_its_samples_do_not_fit(digits_artifact, little_memory):
    little_memory(10_000)
    code, output = _invoke(["verify", str(digits_artifact), "--samples", "20", "--lava-samples", "0"])
    assert code == 1 and "verifying one sample (levels 1 and 4) needs about" in output
    assert "parity ladder" not in output and "Traceback" not in output


def test_verify_names_the_option_to_lower_for_the_integer_reference(digits_artifact, little_memory):
    from inflor_deploy.artifact import load_artifact

    fixed = load_artifact(digits_artifact).fixed_graph
    one = memory.samples_estimate(fixed, "recorded", "x", 1, "x").bytes
    # Room for a few verified samples at a time, not for 200 reference samples at once.
    little_memory(40 * one)
    code, output = _invoke(["verify", str(digits_artifact), "--samples", "300", "--reference-samples", "200",
                            "--lava-samples", "0"])  # fmt: skip
    assert code == 1 and "level 2 (integer reference)" in output and "Lower --reference-samples" in output


def test_the_simulator_batches_to_fit_and_gives_the_same_answer(digits_artifact, little_memory):
    from inflor_deploy.artifact import load_artifact
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.data import load_dataset

    graph = load_artifact(digits_artifact).fixed_graph
    images = load_dataset("digits", "test").images[:40]
    whole = simulate(graph, images, view="pipelined")
    one = memory.samples_estimate(graph, "simulate", "x", 1, "x", steps_per_sample=graph.schedule.reset_interval)
    little_memory(6 * one.bytes)  # half of it holds 3 samples
    batched = simulate(graph, images, view="pipelined", progress=False)
    assert memory.batch_size_for(graph, "simulate", "x", wanted=40, lower="x",
                                 steps_per_sample=graph.schedule.reset_interval) == 3  # fmt: skip
    assert (batched.accumulator == whole.accumulator).all()
    assert batched.pipeline_spike_counts == whole.pipeline_spike_counts


def test_the_estimate_is_the_documented_formula():
    from inflor_deploy.nn.models import ModelConfig, build_model

    model = build_model(ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=7))
    estimate = memory.training_estimate(model, 7, 32)
    params = sum(p.numel() for p in model.parameters())
    from inflor_deploy.frontends.zoo import model_to_ir

    assert estimate.bytes == 16 * memory.activations(model_to_ir(model)) * 7 * 32 + 16 * params
    with pytest.raises(memory.MemoryLimitError, match="about T="):
        estimate.require(available=estimate.bytes - 1)
    estimate.require(available=estimate.bytes)
