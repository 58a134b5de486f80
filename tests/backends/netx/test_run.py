"""NetX files loaded by lava-dl and run on Loihi2SimCfg(fixed_pt), compared bit for bit with the simulator.

Every check compares every spike and every v of every block at every global
step, and the readout of every sample (``LavaParity``). Graphs are small and
built by the real passes; the trained digits model goes through the CLI in
tests/cli/test_export.py.
"""

import numpy as np
import pytest

from inflor_deploy.backends.netx import run as nr
from inflor_deploy.backends.netx.export import NetxCheckFailed, export_netx
from inflor_deploy.backends.netx.writer import read_netx_metadata
from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.errors import InflorError
from inflor_deploy.pretrained import DEFAULT_MODEL
from tests.backends.netx.graphs import compile_graph, conv_lif_graph, mlp_graph, random_images

pytestmark = pytest.mark.lava


def _exact(graph, tmp_path, images, name="m.net"):
    result = export_netx(graph, tmp_path / name, check_images=images)
    check = result.check
    assert check.ok, check.summary()
    assert check.parity.readout_equal and all(
        layer["voltages_equal"] and layer["spikes_equal"] is not False for layer in check.parity.layers.values()
    )
    return result


def test_conv_lif_with_leaky_mean_membrane_readout_is_bit_exact(tmp_path):
    graph = compile_graph(conv_lif_graph())
    images = random_images(graph, 3)
    spikes = simulate(graph, images, record=True).spike_counts
    assert min(spikes.values()) > 0  # every layer is active: the comparison is not of silent layers
    result = _exact(graph, tmp_path, images)
    assert result.check.parity.samples == 3 and result.plan.load_arguments["input_message_bits"] == 8


def test_padded_window_on_the_hardware_target_is_bit_exact(tmp_path):
    """loihi2: R = 4 > T = 3, so a padding step integrates only biases before each reset."""
    graph = compile_graph(conv_lif_graph(readout="mean_current"), target="loihi2")
    assert graph.schedule.reset_interval == 4 and graph.timesteps == 3
    result = _exact(graph, tmp_path, random_images(graph, 3, seed=2))
    assert result.plan.warnings == ()


def test_spikes_into_a_dense_first_block_with_a_spike_count_readout_are_bit_exact(tmp_path):
    """grade_scale 1: the input is binary, fed as unary spikes (input_message_bits 0), flattened C-major."""
    graph = compile_graph(mlp_graph(), grade_scale=1.0)
    result = _exact(graph, tmp_path, random_images(graph, 4, binary=True))
    assert result.plan.input_encoding == "spikes" and result.plan.load_arguments["input_message_bits"] == 0
    assert graph.output.readout == "spike_count"


def test_images_beyond_the_files_input_payload_are_refused(tmp_path):
    graph = compile_graph(mlp_graph(), grade_scale=1.0)
    export_netx(graph, tmp_path / "spikes.net")
    # The declared input range [0, 1] refuses them first (the file's payload check stands behind it).
    with pytest.raises(InflorError, match=r"outside the range \[0, 1\] the network was compiled for"):
        nr.run_netx(graph, tmp_path / "spikes.net", random_images(graph, 1) * 3)


def test_graded_input_into_a_dense_first_block_is_bit_exact(tmp_path):
    graph = compile_graph(mlp_graph(readout="mean_current"))
    result = _exact(graph, tmp_path, random_images(graph, 4, seed=5))
    assert result.plan.input_encoding == "graded"
    # The same file fed the graded frames as unary spikes (the wrong load argument) diverges: the check can fail.
    original = nr.load_network

    def as_spikes(path, metadata=None):
        metadata = read_netx_metadata(path)
        metadata["load"]["input_message_bits"] = 0
        return original(path, metadata)

    nr.load_network = as_spikes
    try:
        check = nr.check_netx(graph, result.path, random_images(graph, 2, seed=5))
    finally:
        nr.load_network = original
    assert not check.ok and check.parity.first_divergence.layer == "if1"


def test_a_check_that_fails_leaves_no_file(tmp_path, monkeypatch):
    graph = compile_graph(conv_lif_graph())
    original = nr.load_network

    def wrong_offset(path, metadata=None):
        metadata = read_netx_metadata(path)
        metadata["load"]["reset_offset"] = 0  # every block resets one step early
        return original(path, metadata)

    monkeypatch.setattr(nr, "load_network", wrong_offset)
    with pytest.raises(NetxCheckFailed) as failed:
        export_netx(graph, tmp_path / "m.net", check_images=random_images(graph, 2))
    assert "NOT bit-exact" in str(failed.value) and failed.value.check.parity.first_divergence is not None
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_file_from_another_graph(tmp_path):
    graph = compile_graph(conv_lif_graph())
    export_netx(graph, tmp_path / "m.net")
    other = compile_graph(mlp_graph())
    with pytest.raises(InflorError, match="run the file with the artifact it was exported from"):
        nr.run_netx(other, tmp_path / "m.net", random_images(other, 1))


@pytest.fixture(scope="module")
def srif_graph():
    """The bundled SRIF digits model, compiled by the passes as plain layers (NetX's chain)."""
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.passes.base import QuantizationOptions

    options = QuantizationOptions(plain_layers=True)
    return compile_checkpoint(DEFAULT_MODEL, "loihi2-sim", probe_samples=2, quantization=options).fixed_graph


def test_soft_reset_written_inexactly_runs_as_written_and_reports_its_agreement(tmp_path, srif_graph):
    """The bundled SRIF model with allow_inexact: the file is bit-exact as hard reset; the agreement is measured."""
    from inflor_deploy.data import load_digits

    images = load_digits("test").images[:4]
    result = export_netx(srif_graph, tmp_path / "srif.net", check_images=images, allow_inexact=True)
    check = result.check
    assert check.parity.ok and not check.exact_export and not check.ok
    assert set(check.spike_agreement) == {"unit1.neuron", "unit2.neuron", "neuron_fc1"}
    # Measured, not assumed: hard reset changes spikes (agreement below 1) but keeps most of them.
    assert all(0.5 < value < 1.0 for value in check.spike_agreement.values())
    assert 0.0 <= check.class_agreement <= 1.0
    assert "against the artifact's soft-reset model" in check.summary()
    assert read_netx_metadata(result.path)["exact"] is False
    # The agreement is against the artifact's own (soft-reset) simulation, recomputed here.
    written = simulate(nr.written_graph(result.plan), images, record=True)
    trained = simulate(srif_graph, images, record=True)
    for name, value in check.spike_agreement.items():
        assert value == float(np.mean(written.spikes[name] == trained.spikes[name]))
    assert check.class_agreement == float(np.mean(written.accumulator.argmax(1) == trained.accumulator.argmax(1)))
