"""Every framework neuron and readout through both ONNX files.

* Float: ``onnx_to_graph(graph_to_onnx(g))`` reproduces g exactly (each new
  field, per-channel arrays included), and onnxruntime stepping the
  ``inflor.Neuron`` function reproduces ``run_float`` spike for spike and
  score for score (the currents are exact, so nothing is left to round
  differently).
* Integer: the compiled graph's ONNX runs in onnxruntime bit-exactly like
  ``int_reference.run_aligned``: spikes, v and the readout.
"""

import numpy as np
import onnx
import pytest

from inflor_deploy.backends.onnx.fixed_model import fixed_graph_to_onnx, run_fixed_onnx
from inflor_deploy.backends.onnx.float_model import graph_to_onnx, onnx_to_graph
from inflor_deploy.backends.onnx.runtime import run_onnx
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.backends.sim.int_reference import run_aligned
from tests.backends.onnx.test_float_model import assert_same_graph
from tests.neuron_cases import CASES, compile_graph, conv_images, conv_per_channel_graph, images, variant_graph


def _float_parity(graph, x):
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    assert_same_graph(graph, onnx_to_graph(model))
    reference = run_float(graph, x, record=True)
    candidate = run_onnx(model, x)
    for name, spikes in reference.spikes.items():
        np.testing.assert_array_equal(candidate.spikes[name], (spikes != 0).astype(np.uint8), err_msg=name)
    np.testing.assert_array_equal(candidate.scores, reference.scores)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float_onnx_round_trip_and_onnxruntime_parity(case):
    _float_parity(variant_graph(case.neuron, timesteps=6), images(16))


@pytest.mark.parametrize("readout", ["mean_current", "mean_membrane", "spike_count"])
def test_readouts_and_per_channel_conv_layers(readout):
    graph = conv_per_channel_graph(readout)
    _float_parity(graph, conv_images(8))
    result, _ = compile_graph(graph, conv_images(6))
    fixed = result.graph
    x = conv_images(8)
    reference = run_aligned(fixed, x, record=True)
    ort = run_fixed_onnx(fixed_graph_to_onnx(fixed), x)
    np.testing.assert_array_equal(ort.accumulator, reference.accumulator)
    for name, spikes in reference.spikes.items():
        np.testing.assert_array_equal(ort.spikes[name], spikes, err_msg=name)
    for name, v in reference.voltages.items():
        np.testing.assert_array_equal(ort.voltages[name], v, err_msg=name)


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("snn") or "v_reset" in c.name],
                         ids=lambda c: c.name)  # fmt: skip
def test_fixed_onnx_is_bit_exact_for_compiled_framework_neurons(case):
    result, _ = compile_graph(variant_graph(case.neuron, timesteps=6), images(8))
    fixed = result.graph
    x = images(10)
    reference = run_aligned(fixed, x, record=True)
    ort = run_fixed_onnx(fixed_graph_to_onnx(fixed), x)
    np.testing.assert_array_equal(ort.accumulator, reference.accumulator)
    np.testing.assert_array_equal(ort.spikes["n"], reference.spikes["n"])
    np.testing.assert_array_equal(ort.voltages["n"], reference.voltages["n"])
