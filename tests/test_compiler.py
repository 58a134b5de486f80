"""End to end: the paper's CIFAR architectures (random weights, 32x32, T=4) compile with every contract held."""

import numpy as np
import pytest

from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.compiler import auto_probe_samples, compile_checkpoint
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import ModelConfig
from inflor_deploy.backends.sim.fixed_point import simulate
from tests.frontends.zoo_models import images_for, randomized_model


@pytest.mark.parametrize("arch", ["resnet20", "vgg16", "resnet19"])
def test_cifar_architectures_compile_and_run(tmp_path, arch):
    config = ModelConfig(arch=arch, timesteps=4)
    images = images_for(config, 4)
    path = save_checkpoint(tmp_path / f"{arch}.pt", randomized_model(config, images))
    result = compile_checkpoint(path, "loihi2", probe_samples=2)
    assert [c.pass_name for c in result.contracts][-1] == "ScheduleTimesteps"
    assert all(c.ok for c in result.contracts), [c.summary for c in result.contracts if not c.ok]
    fixed = result.fixed_graph
    assert fixed.schedule.reset_interval == 4  # a power of two on hardware
    neurons = [x for x in fixed.of_type(n.FixedPointNeuron) if x.sources]  # the model's; bias sources have none
    assert len(neurons) == {"resnet20": 19, "vgg16": 13, "resnet19": 18}[arch]
    if arch.startswith("resnet"):
        # Every residual block aligns its shortcut with the main path by a delay of one step.
        shortcuts = [s for s in fixed.of_type(n.FixedPointSynapse) if s.delay > 0]
        assert shortcuts and all(s.delay == 1 for s in shortcuts)
    run = simulate(fixed, images[:2], view="aligned")
    assert run.accumulator.shape == (2, 10)
    assert sum(run.u_wraps.values()) == 0


def test_probe_size_shrinks_only_for_very_large_networks():
    from inflor_deploy.frontends.fx import trace
    from inflor_deploy.nn import build_model

    sizes = {a: auto_probe_samples(trace(build_model(ModelConfig(arch=a, timesteps=4))))
             for a in ("resnet20", "resnet19")}  # fmt: skip
    assert sizes == {"resnet20": 16, "resnet19": 2}
