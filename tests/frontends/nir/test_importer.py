"""The NIR front end: each supported node maps onto the IR with hand-computed outputs; the rest is refused by name.

Every expected value below is worked out by hand from NIR's definitions
(docs/nir.md): forward Euler with the step dt, ``IF: v += dt r I``,
``LIF: v += dt/tau (v_leak - v) + dt r/tau I``, fire on ``v > v_threshold``
(or ``>=``), reset to ``v_reset`` unless ``reset="subtract"``.
"""

import nir
import numpy as np
import pytest
import torch

from inflor_deploy import from_nir
from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.nir import NirImportError, import_nir
from inflor_deploy.frontends.nir.reference import NirReference
from inflor_deploy.ir import nodes as n
from tests.frontends.nir.graphs import PICK, X, affine, chain, if_, lif


def _run(graph, images=X, T=4):
    run = run_float(graph, images, record=True, dtype=torch.float64)
    return run


def _spikes(graph, name, images=X):
    return _run(graph, images).spikes[name][:, 0].tolist()


def _reference_agrees(imported, images=X):
    """The NIR graph evaluated independently (numpy, as NIR defines it) gives the same spikes and scores."""
    ref = NirReference(imported.nir_graph, imported.graph, imported.reading.dt).run(images)
    run = _run(imported.graph, images)
    for name, spikes in ref.spikes.items():
        assert np.array_equal(spikes, run.spikes[name]), name
    assert np.allclose(ref.scores.reshape(len(images), -1), run.scores.reshape(len(images), -1), rtol=0, atol=1e-9)


def test_affine_into_if_fires_resets_to_v_reset_and_counts_spikes():
    # currents [0.5, 0.75]; dt r = 1; '>' 1:  n0: 0.5 1.0 1.5* 0.5   n1: 0.75 1.5* 0.75 1.5*
    graph = chain(PICK, if_(2), output=[2])
    imported = import_nir(graph, timesteps=4, dt=1.0)
    ir = imported.graph
    neuron = ir.node("l1")
    assert (neuron.reset, neuron.compare, neuron.reset_timing, neuron.tau, neuron.gain) == ("zero", ">", "same_step",
                                                                                            1.0, 1.0)  # fmt: skip
    assert _spikes(ir, "l1") == [[0, 0], [0, 1], [1, 0], [0, 1]]
    assert _run(ir).scores.tolist() == [[1.0, 2.0]]
    assert _run(ir).membranes["l1"][:, 0, 1].tolist() == [0.75, 1.5, 0.75, 1.5]
    _reference_agrees(imported)


def test_reset_subtract_and_compare_override_change_the_spikes_as_computed_by_hand():
    graph = chain(PICK, if_(2), output=[2])
    # subtract 1:  n1: 0.75 1.5* (0.5) 1.25* (0.25) 1.0 -> '>' does not fire at 1.0
    sub = import_nir(graph, timesteps=4, dt=1.0, reset="subtract")
    assert sub.graph.node("l1").reset == "subtract" and sub.graph.node("l1").reset_amount == 1.0
    assert _spikes(sub.graph, "l1") == [[0, 0], [0, 1], [1, 1], [0, 0]]
    _reference_agrees(sub)
    # '>=':  n0: 0.5 1.0* 0.5 1.0*
    ge = import_nir(graph, timesteps=4, dt=1.0, compare=">=")
    assert _spikes(ge.graph, "l1") == [[0, 0], [1, 1], [0, 0], [1, 1]]
    _reference_agrees(ge)


def test_if_gain_is_dt_times_r():
    # r = 4, dt = 0.5: gain 2, current [1.0, 1.5] fires every step (v > 1 each time from 0)
    imported = import_nir(chain(PICK, if_(2, r=4.0), output=[2]), timesteps=2, dt=0.5)
    assert imported.graph.node("l1").gain == 2.0
    assert _spikes(imported.graph, "l1") == [[0, 1], [1, 1]]  # n0: 1.0 (not > 1), 2.0*; n1: 1.5*, 1.5*
    _reference_agrees(imported)


def test_lif_forward_euler_leak_and_gain():
    # tau 2 ms, dt 1 ms, r 2: leak 1 - dt/tau = 0.5, gain dt r / tau = 1.
    # n1 (0.75): 0.75, 0.375 + 0.75 = 1.125*, 0.75, 1.125*      n0 (0.5): 0.5, 0.75, 0.875, 0.9375
    imported = import_nir(chain(PICK, lif(2, 2e-3, 2.0), output=[2]), timesteps=4, dt=1e-3)
    neuron = imported.graph.node("l1")
    assert (neuron.tau, neuron.gain) == (0.5, 1.0)
    assert _spikes(imported.graph, "l1") == [[0, 0], [0, 1], [0, 0], [0, 1]]
    assert _run(imported.graph).membranes["l1"][:, 0, 0].tolist() == [0.5, 0.75, 0.875, 0.9375]
    _reference_agrees(imported)


def test_lif_leaking_toward_a_nonzero_reset_potential():
    # v_leak = v_reset = 0.5, tau 2 dt, r = 1: v += 0.5 (0.5 - v) + 0.5 I; from 0.5 with I = 0.75 (n1):
    # 0.5 + 0 + 0.375 = 0.875, 0.875 - 0.1875 + 0.375 = 1.0625* -> 0.5, 0.875
    imported = import_nir(chain(PICK, lif(2, 2.0, 1.0, v_leak=0.5, v_reset=0.5), output=[2]), timesteps=4, dt=1.0)
    assert imported.graph.node("l1").charge == "decay_multiply_input"
    assert _spikes(imported.graph, "l1")[:3] == [[0, 0], [0, 1], [0, 0]]
    assert _run(imported.graph).membranes["l1"][:3, 0, 1].tolist() == [0.875, 1.0625, 0.875]
    _reference_agrees(imported)


def test_linear_without_bias():
    imported = import_nir(chain(affine([[1, 1, 1, 1]]), if_(1), output=[1]), timesteps=2, dt=1.0)
    assert imported.graph.node("l0").bias is None
    assert _run(imported.graph).membranes["l1"][:, 0, 0].tolist() == [1.75, 1.75]  # sum 1.75 fires, back to 0


def _conv(weight, **kw):
    weight = np.asarray(weight, np.float32)
    fields = dict(input_shape=(3, 3), stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(weight.shape[0], np.float32))
    fields.update(kw)
    return nir.Conv2d(weight=weight, **fields)


X3 = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) / 8  # 0, 1/8, ..., 1


def _first_current(graph, name):
    """H at step 0 of a neuron with v_reset 0 and gain 1: its input current."""
    return _run(graph, X3, T=1).membranes[name][0, 0]


@pytest.mark.parametrize(
    "kw, expected",
    [
        # 2x2 ones, stride 1: window sums of [[0,1,2],[3,4,5],[6,7,8]] / 8 -> [[8,12],[20,24]] / 8
        (dict(), [[[1.0, 1.5], [2.5, 3.0]]]),
        # stride 2, padding 1, bias 0.5: windows at (-1,-1) -> x[0,0]; (-1,1) -> x[0,1]+x[0,2]; ...
        # (1,-1) -> x[1,0] + x[2,0] = 9/8; (1,1) -> (4 + 5 + 7 + 8)/8 = 3
        (dict(stride=2, padding=1, bias=np.array([0.5], np.float32)), [[[0.5, 0.875], [1.625, 3.5]]]),
        # dilation 2 on 3x3: the four corners (0 + 2 + 6 + 8) / 8 = 2
        (dict(dilation=2), [[[2.0]]]),
    ],
)
def test_conv2d_stride_padding_dilation_bias(kw, expected):
    graph = chain(_conv(np.ones((1, 1, 2, 2)), **kw), if_(np.shape(expected), vth=100.0), input_shape=(1, 3, 3),
                  output=list(np.shape(expected)))  # fmt: skip
    imported = import_nir(graph, timesteps=1, dt=1.0)
    assert np.array_equal(_first_current(imported.graph, "l1"), np.asarray(expected))
    _reference_agrees(imported, X3)


def test_grouped_conv2d_keeps_channels_apart():
    weight = np.stack([np.ones((1, 2, 2)), 2 * np.ones((1, 2, 2))])  # 2 out, groups 2: in-channel c -> out c
    images = np.concatenate([X3, np.ones_like(X3)], axis=1)
    graph = chain(_conv(weight, groups=2, bias=np.zeros(2, np.float32)), if_((2, 2, 2), vth=100.0),
                  input_shape=(2, 3, 3), output=[2, 2, 2])  # fmt: skip
    imported = import_nir(graph, timesteps=1, dt=1.0)
    current = _run(imported.graph, images, T=1).membranes["l1"][0, 0]
    assert current[0].tolist() == [[1.0, 1.5], [2.5, 3.0]] and current[1].tolist() == [[8.0, 8.0], [8.0, 8.0]]


def test_sum_pool_is_avg_pool_times_the_window_and_avg_pool_is_the_mean():
    x4 = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 16
    pool = dict(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    # windows of [[0..3],[4..7],...]/16: sums [[10, 18], [42, 50]] / 16; means a quarter of that
    for cls, scale in ((nir.SumPool2d, 1.0), (nir.AvgPool2d, 0.25)):
        graph = chain(cls(**pool), nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1),
                      affine(np.eye(4)), if_(4, vth=100.0), input_shape=(1, 4, 4), output=[4])  # fmt: skip
        imported = import_nir(graph, timesteps=1, dt=1.0)
        current = _run(imported.graph, x4, T=1).membranes["l3"][0, 0]
        assert np.allclose(current, scale * np.array([10, 18, 42, 50]) / 16, rtol=0, atol=1e-12), cls
        assert isinstance(imported.graph.node("l0"), n.AvgPool2d)
        _reference_agrees(imported, x4)
    assert "l3" in import_nir(chain(nir.SumPool2d(**pool), nir.Flatten(input_type={"input": np.array([1, 2, 2])},
                                    start_dim=0, end_dim=-1), affine(np.eye(4)), if_(4), input_shape=(1, 4, 4),
                                    output=[4]), timesteps=1, dt=1.0).inexact  # fmt: skip


def test_scale_folds_into_the_synapse_before_it_or_the_neuron_after_it():
    # after an Affine it alone reads: into the rows. [0.5, 0.75] * [2, 4] = [1, 3]
    imported = import_nir(chain(PICK, nir.Scale(scale=np.array([2.0, 4.0])), if_(2, vth=100.0), output=[2]),
                          timesteps=1, dt=1.0)  # fmt: skip
    assert [type(x).__name__ for x in imported.graph] == ["Input", "Linear", "Neuron", "Accumulator"]
    assert _run(imported.graph).membranes["l2"][0, 0].tolist() == [1.0, 3.0]
    _reference_agrees(imported)
    # after a neuron (one factor for the layer): into the next neuron's... no: into the next synapse's columns
    graph = chain(PICK, if_(2, vth=0.6), nir.Scale(scale=np.array([3.0, 3.0])), affine([[1.0, 1.0]]),
                  if_(1, vth=100.0), output=[1])  # fmt: skip
    imported = import_nir(graph, timesteps=1, dt=1.0)
    assert _run(imported.graph).membranes["l4"][0, 0].tolist() == [3.0]  # only n1 (0.75 > 0.6) spikes, times 3
    _reference_agrees(imported)


def test_cubalif_with_tau_syn_equal_dt_is_a_lif_with_an_input_gain_and_otherwise_refused():
    def cuba(tau_syn):
        return nir.CubaLIF(tau_syn=np.full(2, tau_syn), tau_mem=np.full(2, 2.0), r=np.full(2, 2.0),
                           v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.ones(2))  # fmt: skip

    imported = import_nir(chain(PICK, cuba(1.0), output=[2]), timesteps=4, dt=1.0)
    assert (imported.graph.node("l1").tau, imported.graph.node("l1").gain) == (0.5, 1.0)  # the LIF case above
    assert _spikes(imported.graph, "l1") == [[0, 0], [0, 1], [0, 0], [0, 1]]
    _reference_agrees(imported)
    with pytest.raises(NirImportError, match=r"'l1' \(CubaLIF\): its synaptic current decays.*second state"):
        import_nir(chain(PICK, cuba(2.0), output=[2]), timesteps=4, dt=1.0)


def test_li_before_the_output_is_the_mean_membrane_readout():
    li = nir.LI(tau=np.full(2, 2.0), r=np.full(2, 2.0), v_leak=np.zeros(2))  # A = 0.5 A + X
    imported = import_nir(chain(PICK, li, output=[2]), timesteps=2, dt=1.0)
    readout = imported.graph.output
    assert (readout.readout, readout.tau) == ("mean_membrane", 0.5)
    # X = [0.5, 0.75]: A = X, then 1.5 X; mean 1.25 X
    assert np.allclose(_run(imported.graph).scores, [[0.625, 0.9375]], rtol=0, atol=1e-12)
    _reference_agrees(imported)


def test_a_flat_input_with_input_shape_and_several_inputs_summed_into_a_synapse():
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "a": affine(np.eye(4)), "b": affine(np.eye(4)),
             "s": if_(4), "fc": affine([[1, 1, 1, 1]]), "z": if_(1, vth=100.0),
             "output": nir.Output(output_type={"output": np.array([1])})}  # fmt: skip
    edges = [("input", "a"), ("input", "b"), ("a", "s"), ("b", "s"), ("s", "fc"), ("fc", "z"), ("z", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with pytest.raises(NirImportError, match=r"flat vector of 4 values.*--input-shape C,H,W"):
        import_nir(graph, timesteps=1, dt=1.0)
    ir = from_nir(graph, 1, dt=1.0, input_shape=(1, 2, 2))
    # s gets 2x: [1.0, 0.5, 2.0, 0.0] > 1 -> spikes [0, 0, 1, 0]; fc sums 1
    assert _run(ir).membranes["z"][0, 0].tolist() == [1.0]


def test_conventions_spikingjelly_and_snntorch_are_detected_from_how_the_exporters_write():
    sj = chain(PICK, nir.IF(r=np.full(2, 1e4), v_threshold=np.ones(2), v_reset=np.zeros(2)), output=[2])
    imported = import_nir(sj, timesteps=4)
    assert imported.reading.convention.name == "spikingjelly" and imported.reading.dt == 1e-4
    assert imported.graph.node("l1").compare == ">=" and imported.graph.node("l1").gain == 1.0
    beta = np.float32(0.9)
    tau = np.float32(1e-4) / (np.float32(1) - np.full(2, beta, np.float32))
    snn = chain(PICK, nir.LIF(tau=tau, r=tau / np.float32(1e-4), v_leak=np.zeros(2, np.float32),
                              v_threshold=np.ones(2, np.float32), v_reset=np.zeros(2, np.float32)), output=[2])  # fmt: skip
    imported = import_nir(snn, timesteps=4, reset="subtract")
    neuron = imported.graph.node("l1")
    assert imported.reading.convention.name == "snntorch"
    assert (neuron.tau, neuron.gain, neuron.compare, neuron.reset_timing) == (float(beta), 1.0, ">", "next_step")
    # --convention overrides the detection
    assert import_nir(snn, timesteps=4, convention="nir", dt=1e-4).graph.node("l1").reset_timing == "same_step"


def test_norse_convention_reads_r_1_with_norse_default_step():
    # Norse's LIFBoxCell: LIF(tau = 1/tau_mem_inv, r = 1); dt 1e-3 -> leak 1 - 0.1, gain dt r / tau = 0.1
    imported = import_nir(chain(PICK, lif(2, 1e-2, 1.0), output=[2]), timesteps=1, convention="norse")
    neuron = imported.graph.node("l1")
    assert imported.reading.dt == 1e-3 and neuron.compare == ">" and neuron.reset_timing == "same_step"
    assert neuron.tau == pytest.approx(0.9, abs=1e-15) and neuron.gain == pytest.approx(0.1, abs=1e-15)


def test_a_lif_without_a_known_step_asks_for_dt():
    with pytest.raises(NirImportError, match=r"'l1' \(LIF\): NIR does not state the time step.*--dt"):
        # float32 parameters written as no known exporter writes them: NIR's own convention, no step
        f32 = {k: np.full(2, v, np.float32) for k, v in dict(tau=2.0, r=1.0, v_leak=0, v_threshold=1, v_reset=0).items()}
        import_nir(chain(PICK, nir.LIF(**f32), output=[2]), timesteps=1)


class _Other(nir.NIRNode):
    pass


@pytest.mark.parametrize(
    "layer, message",
    [
        (nir.I(r=np.ones(2)), r"'l1' \(I\) is not supported: a pure integrator"),
        (nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
         r"'l1' \(CubaLI\) is not supported: a current-based leaky integrator"),
        (nir.Threshold(threshold=np.ones(2)), r"'l1' \(Threshold\) is not supported: a stateless threshold"),
        (nir.Delay(delay=np.ones(2)), r"'l1' \(Delay\) is not supported: a synaptic delay"),
        (lif(2, 2.0, 1.0, v_leak=0.5), r"leaks toward v_leak = 0.5 but resets to v_reset = 0.*v_leak = v_reset"),
        (lif(2, 0.5, 1.0), r"tau = 0.5 s is shorter than the step dt = 1 s"),
        (nir.LI(tau=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2)), r"input gain dt r / tau = 0.5 is not 1"),
    ],
)
def test_unsupported_nodes_and_inexact_dynamics_are_refused_by_name(layer, message):
    with pytest.raises(NirImportError, match=message):
        import_nir(chain(PICK, layer, output=[2]), timesteps=1, dt=1.0)


def test_structural_refusals_name_the_fix():
    conv1d = nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 2)), stride=1, padding=0, dilation=1, groups=1,
                        bias=np.zeros(1))  # fmt: skip
    with pytest.raises(NirImportError, match=r"\(Conv1d\) is not supported: 1-D convolutions.*kernel height of 1"):
        import_nir(chain(conv1d, input_shape=(1, 4)), timesteps=1, dt=1.0)
    inner = chain(if_(4))
    with pytest.raises(NirImportError, match=r"\(NIRGraph\) is not supported: a nested graph"):
        import_nir(chain(nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1), inner),
                   timesteps=1, dt=1.0)  # fmt: skip
    cyc = chain(affine(np.eye(4)), if_(4), affine(np.eye(4)), if_(4), output=[4])
    cyc.edges.append(("l3", "l2"))
    with pytest.raises(NirImportError, match=r"cycle through.*recurrent connections are not supported"):
        import_nir(cyc, timesteps=1, dt=1.0, input_shape=None)
    partial = chain(nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=1, end_dim=2), output=[1, 4])
    with pytest.raises(NirImportError, match=r"Flatten.*flatten only part"):
        import_nir(partial, timesteps=1, dt=1.0)
    with pytest.raises(NirImportError, match=r"timesteps must be an integer >= 1"):
        import_nir(chain(PICK, if_(2), output=[2]), timesteps=0, dt=1.0)
    with pytest.raises(NirImportError, match=r"reset 'hard'"):
        import_nir(chain(PICK, if_(2), output=[2]), timesteps=1, dt=1.0, reset="hard")


def test_subtract_needs_rest_at_zero():
    with pytest.raises(NirImportError, match=r"subtractive reset .* v_reset = 0.5"):
        import_nir(chain(PICK, if_(2, vth=2.0, v_reset=0.5), output=[2]), timesteps=1, dt=1.0, reset="subtract")


def test_a_file_that_is_not_nir_is_named(tmp_path):
    bad = tmp_path / "model.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InflorError, match=r"model.nir: not a readable NIR file"):
        from_nir(bad, 1)
    with pytest.raises(InflorError, match=r"no such NIR file"):
        from_nir(tmp_path / "missing.nir", 1)


def test_a_file_reads_as_the_graph_in_memory(tmp_path):
    from inflor_deploy.ir.diff import first_difference

    graph = chain(PICK, lif(2, 2e-3, 2.0), output=[2])
    nir.write(tmp_path / "m.nir", graph)
    from_file = from_nir(tmp_path / "m.nir", 4, dt=1e-3)
    assert from_file.name == "m"  # the file's stem
    assert first_difference(from_nir(graph, 4, dt=1e-3, name="m"), from_file) is None
