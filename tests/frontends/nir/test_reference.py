"""Level 1's references for NIR artifacts: the framework's own module (single- or multi-step) and NIR's semantics."""

import pytest
import torch

from inflor_deploy.data import load_digits
from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.nir import import_nir
from inflor_deploy.frontends.nir.reference import FrameworkReference, NirReference
from inflor_deploy.verify import level1_torch_vs_float_ir
from tests.cli import nir_nets


@pytest.fixture(scope="module")
def spikingjelly_export():
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    train = load_digits("train")
    net = nir_nets.train(nir_nets.spikingjelly_hard_net, train.images, train.labels, epochs=1)
    return net, import_nir(export_to_nir(net, torch.zeros(1, 1, 8, 8)), timesteps=4)


def test_the_framework_module_runs_single_or_multi_step_with_the_same_spikes(spikingjelly_export):
    from spikingjelly.activation_based import functional

    net, imported = spikingjelly_export
    data = load_digits("test").take(30)
    results = {}
    for mode in ("single", "multi"):
        functional.set_step_mode(net, "s" if mode == "single" else "m")
        reference = FrameworkReference(net, time_mode=mode).bind(imported.graph, imported.inexact)
        results[mode] = level1_torch_vs_float_ir(reference, imported.graph, data)
    functional.set_step_mode(net, "s")
    for result in results.values():
        assert result.ok and result.metrics["spikes"] > 1000 and result.metrics["mismatches"] == 0
    assert results["single"].metrics["spikes"] == results["multi"].metrics["spikes"]
    # the NIR graph as NIR defines it agrees too (SpikingJelly's IF/LIF with hard reset are NIR's)
    nir_reference = NirReference(imported.nir_graph, imported.graph, imported.reading.dt)
    assert level1_torch_vs_float_ir(nir_reference, imported.graph, data).ok


def test_a_module_that_is_not_the_exported_one_is_named(spikingjelly_export):
    _, imported = spikingjelly_export
    from collections import OrderedDict

    other = torch.nn.Sequential(OrderedDict(flat=torch.nn.Flatten(), fc=torch.nn.Linear(64, 10)))
    reference = FrameworkReference(other).bind(imported.graph)
    with pytest.raises(InflorError, match=r"none of the NIR graph's neurons .* is a submodule"):
        level1_torch_vs_float_ir(reference, imported.graph, load_digits("test").take(2))
    with pytest.raises(InflorError, match=r"time_mode 'both'"):
        FrameworkReference(other, time_mode="both")
