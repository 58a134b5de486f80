"""The fx front end reproduces the registration-order walker it replaces, node for node and bit for bit.

Run against the old walker (``inflor_deploy.frontends.zoo``) before it is deleted: same IR (types,
names, sources, every array and attribute) for every zoo architecture, and the same compiled
``fixed_point.npz`` arrays and level 1 result for the bundled model.
"""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.frontends.fx import trace_model
from inflor_deploy.frontends.zoo import model_to_ir
from inflor_deploy.nn import ModelConfig, build_model
from tests.frontends.test_zoo import images_for, randomized_model


def assert_same_graph(a, b):
    assert (a.name, a.timesteps) == (b.name, b.timesteps)
    assert [type(x) for x in a] == [type(x) for x in b]
    for x, y in zip(a, b):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v), (x.name, f.name)
            else:
                assert u == v and type(u) is type(v), (x.name, f.name, u, v)


CONFIGS = [
    ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=4),
    ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, timesteps=3, neuron="lif"),
    ModelConfig(arch="digits_cnn", in_channels=1, image_size=8, neuron="if", vth=0.3),
    ModelConfig(arch="resnet20", timesteps=2),
    ModelConfig(arch="resnet19", timesteps=2),
    ModelConfig(arch="vgg16", timesteps=2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.arch}-{c.neuron}-T{c.timesteps}")
def test_same_ir_as_the_walker(config):
    images = images_for(config, 2)
    model = randomized_model(config, images)
    shape = (config.in_channels, config.image_size, config.image_size)
    assert_same_graph(trace_model(model, shape, config.timesteps, name=config.arch).graph, model_to_ir(model))


def _old_route_fixed_graph(model):
    """The compile as it was: walker -> ONNX -> IR -> the passes (same probe: digits/test[:16])."""
    from inflor_deploy.backends.onnx.float_model import graph_to_onnx, onnx_to_graph
    from inflor_deploy.data import load_digits
    from inflor_deploy.passes.base import PassContext
    from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, run_pipeline
    from inflor_deploy.targets import load_target

    imported = onnx_to_graph(graph_to_onnx(model_to_ir(model)))
    ctx = PassContext(target=load_target("loihi2-sim"), probe=load_digits("test").images[:16])
    return imported, run_pipeline(imported, COMPILE_PIPELINE, ctx).graph


def _old_level1(model, imported, data):
    """Level 1 as it was: forward hooks on every inflor Neuron of the model (the old verify.torch_run)."""
    import torch

    from inflor_deploy.backends.sim.float_ir import run_float
    from inflor_deploy.ir import nodes as n
    from inflor_deploy.nn.neurons import Neuron
    from inflor_deploy.passes.fold_rectifier import FoldRectifierIntoThreshold, tie_band
    from inflor_deploy.passes.probe import compare_runs
    from inflor_deploy.backends.sim.float_ir import FloatRun

    spikes = {}
    neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, Neuron)]
    hooks = [m.register_forward_hook(lambda mod, i, out, name=name: spikes.__setitem__(name, out.numpy())) for name, m in neurons]
    for _, m in neurons:
        m.record_membrane = True
    with torch.no_grad():
        scores = model.eval()(torch.from_numpy(data.images)).numpy()
    ref = FloatRun(scores, {k: v.astype(np.uint8) for k, v in spikes.items()}, {k: m.last_membrane.numpy() for k, m in neurons})
    for h in hooks:
        h.remove()
    for _, m in neurons:
        m.record_membrane = False
    folded = FoldRectifierIntoThreshold.run(imported, None)
    out = run_float(folded, data.images, record=True, forced_spikes=ref.spikes)
    bands = {x.name: tie_band(x) for x in imported.of_type(n.Neuron) if x.mpr}
    return ref, compare_runs(imported, ref, out, tie_band=bands)


def test_bundled_model_compiles_and_verifies_identically(tmp_path):
    from inflor_deploy import compiler, verify
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data import load_digits
    from inflor_deploy.ir.serialize import graph_to_arrays
    from inflor_deploy.pretrained import DEFAULT_MODEL

    model = load_checkpoint(DEFAULT_MODEL).model
    new = compiler.compile_checkpoint(DEFAULT_MODEL)
    old_imported, old_fixed = _old_route_fixed_graph(model)
    assert_same_graph(new.graph_after("import"), old_imported)
    a, b = graph_to_arrays(old_fixed), graph_to_arrays(new.fixed_graph)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key

    data = load_digits("test")
    ref, comparison = _old_level1(model, old_imported, data)
    level1 = verify.level1_torch_vs_float_ir(model, new.graph_after("import"), data)
    assert level1.ok and comparison.spikes.unexplained == 0
    old_spikes = int(sum(int(v.sum()) for v in ref.spikes.values()))
    assert (level1.metrics["spikes"], level1.metrics["mismatches"], level1.metrics["near_ties"]) == (
        old_spikes, comparison.spike_mismatches, comparison.spikes.near_ties,
    )
    assert old_spikes == 965191  # the README's level 1 figure for the bundled model
