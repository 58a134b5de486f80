"""NIR export: the float IR as a NIR graph; NIR -> IR -> NIR -> IR is identical; the reset NIR cannot state is metadata.

What other consumers read is plain NIR (IF/LIF with v_reset = 0, no reset
mode), so the metadata is the only place the subtractive reset lives; this
project reads it back into the same float IR, bit for bit.
"""

import dataclasses

import nir
import numpy as np
import pytest

from inflor_deploy import from_nir
from inflor_deploy.backends.nir import NirExportRefusal, export_nir, graph_to_nir
from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.nir import import_nir
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.diff import first_difference
from inflor_deploy.nir_semantics import META, node_metadata
from tests.frontends.nir.graphs import PICK, X, affine, chain, if_, lif


def _snntorch_lif(size, beta=0.9):
    tau = np.float32(1e-4) / (np.float32(1) - np.full(size, beta, np.float32))
    return nir.LIF(tau=tau, r=tau / np.float32(1e-4), v_leak=np.zeros(size, np.float32),
                   v_threshold=np.ones(size, np.float32), v_reset=np.zeros(size, np.float32))  # fmt: skip


def _conv(weight, **kw):
    weight = np.asarray(weight, np.float32)
    return nir.Conv2d(weight=weight, **{**dict(input_shape=(4, 4), stride=1, padding=1, dilation=1, groups=1,
                                               bias=np.full(weight.shape[0], 0.1, np.float32)), **kw})  # fmt: skip


def _pool():
    return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))


#: (graph, import options): one per neuron form and node type the writer states.
CASES = {
    "if_zero": (chain(PICK, if_(2), output=[2]), dict(dt=1.0)),
    "if_subtract_ge": (chain(PICK, if_(2, vth=0.7), output=[2]), dict(dt=1.0, reset="subtract", compare=">=")),
    "lif_euler": (chain(PICK, lif(2, 2e-3, 2.0), output=[2]), dict(dt=1e-3)),
    "lif_toward_v_reset": (chain(PICK, lif(2, 2.0, 1.0, v_leak=0.5, v_reset=0.5), output=[2]), dict(dt=1.0)),
    "snntorch_next_step": (chain(PICK, _snntorch_lif(2), output=[2]), dict(reset="subtract")),
    "spikingjelly_decay_divide": (chain(PICK, nir.LIF(tau=np.full(2, 2e-4), r=np.full(2, 2.0), v_leak=np.zeros(2),
                                                      v_threshold=np.ones(2), v_reset=np.zeros(2)), output=[2]), {}),
    "li_readout": (chain(PICK, if_(2), affine(np.eye(2)), nir.LI(tau=np.full(2, 2.0), r=np.full(2, 2.0),
                                                                  v_leak=np.zeros(2)), output=[2]), dict(dt=1.0)),
    "conv_pool_flatten": (
        chain(_conv(np.ones((2, 1, 3, 3)) / 4), if_((2, 4, 4), vth=0.5), _pool(),
              nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0, end_dim=-1), affine(np.ones((3, 8))),
              if_(3), input_shape=(1, 4, 4), output=[3]),
        dict(dt=1.0, reset="subtract"),
    ),
    "conv_into_linear_mean_current": (
        chain(_conv(np.ones((2, 1, 3, 3)) / 4, groups=1), if_((2, 4, 4)), affine(np.ones((3, 32)), np.zeros(3)),
              input_shape=(1, 4, 4), output=[3]),
        dict(dt=1.0),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_nir_ir_nir_ir_round_trip_is_identical(case, tmp_path):
    graph, options = CASES[case]
    ir1 = import_nir(graph, timesteps=4, **options).graph
    written = export_nir(ir1, tmp_path / "m.nir")
    assert nir.read(tmp_path / "m.nir") is not None  # NIR's own reader (with its type check) accepts the file
    ir2 = from_nir(tmp_path / "m.nir", 4)
    assert first_difference(ir1, ir2) is None
    # and once more: the file this project wrote is a fixed point of write . read
    export_nir(ir2, tmp_path / "again.nir")
    assert first_difference(ir2, from_nir(tmp_path / "again.nir", 4)) is None
    again = nir.read(tmp_path / "again.nir")
    first = nir.read(tmp_path / "m.nir")
    assert list(again.nodes) == list(first.nodes) and sorted(again.edges) == sorted(first.edges)
    for name, node in first.nodes.items():
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, getattr(again.nodes[name], key)), (name, key)
    assert written.sha256 and written.path == tmp_path / "m.nir"


def test_what_nir_cannot_state_is_metadata_and_plain_consumers_read_reset_to_zero(tmp_path):
    graph, options = CASES["if_subtract_ge"]
    ir = import_nir(graph, timesteps=4, **options).graph
    written = export_nir(ir, tmp_path / "m.nir")
    assert written.unstated == {"l1": ["subtractive reset (amount 0.7)", "fires on >="]}
    node = nir.read(tmp_path / "m.nir").nodes["l1"]
    assert type(node).__name__ == "IF" and not np.any(node.v_reset)  # the standard node: reset to 0
    assert np.array_equal(node.v_threshold, np.full(2, 0.7)) and np.array_equal(node.r, np.full(2, 1e4))
    meta = node_metadata(node)
    assert (meta["reset"], meta["reset_amount"], meta["compare"], meta["reset_timing"]) == ("subtract", 0.7, ">=",
                                                                                            "same_step")  # fmt: skip
    # Read as plain NIR (metadata ignored: what every other consumer does), it is reset-to-zero, '>'.
    plain = from_nir(tmp_path / "m.nir", 4, convention="nir", dt=1e-4).node("l1")
    assert (plain.reset, plain.compare, plain.gain) == ("zero", ">", 1.0)


def test_an_edited_file_is_named_not_silently_misread(tmp_path):
    graph, options = CASES["if_zero"]
    written = graph_to_nir(import_nir(graph, timesteps=4, **options).graph)
    written.nodes["l1"] = dataclasses.replace(written.nodes["l1"], v_threshold=np.full(2, 2.0))
    nir.write(tmp_path / "m.nir", written)
    with pytest.raises(InflorError, match=r"'l1' \(IF\): its v_threshold is not what inflor-deploy wrote"):
        from_nir(tmp_path / "m.nir", 4)


def test_refusals_write_nothing(tmp_path):
    graph, options = CASES["if_zero"]
    ir = import_nir(graph, timesteps=4, **options).graph
    out = tmp_path / "m.nir"
    conv_graph, conv_options = CASES["conv_pool_flatten"]
    conv_ir = import_nir(conv_graph, timesteps=4, **conv_options).graph
    conv = conv_ir.node("l0")
    per_position = dataclasses.replace(conv_ir, nodes=tuple(
        dataclasses.replace(x, bias=np.full((2, 4, 4), 0.1, np.float32)) if x is conv else x for x in conv_ir.nodes))
    with pytest.raises(NirExportRefusal, match=r"per-position bias .* NIR's Conv2d bias is per channel"):
        export_nir(per_position, out)
    mpr = dataclasses.replace(ir, nodes=tuple(dataclasses.replace(x, mpr=True) if isinstance(x, n.Neuron) else x
                                              for x in ir.nodes))  # fmt: skip
    with pytest.raises(InflorError, match=r"still has MPR; export the graph after FoldRectifierIntoThreshold"):
        export_nir(mpr, out)
    assert not out.exists()
    out.write_text("keep")
    with pytest.raises(InflorError, match=r"exists; pass --force"):
        export_nir(ir, out)
    assert out.read_text() == "keep"
    assert list(tmp_path.iterdir()) == [out]


def test_a_file_that_does_not_read_back_is_not_kept(tmp_path, monkeypatch):
    import inflor_deploy.ir.diff as diff

    graph, options = CASES["if_zero"]
    ir = import_nir(graph, timesteps=4, **options).graph
    monkeypatch.setattr(diff, "first_difference", lambda a, b: {"node": "l1", "field": "vth"})
    with pytest.raises(InflorError, match=r"does not read back as the same float IR.*was not written"):
        export_nir(ir, tmp_path / "m.nir", force=True)
    assert list(tmp_path.iterdir()) == []


def test_the_check_runs_the_file_as_nir_defines_it(tmp_path):
    graph, options = CASES["conv_pool_flatten"]
    ir = import_nir(graph, timesteps=4, **options).graph
    images = np.random.default_rng(0).random((6, 1, 4, 4), dtype=np.float32)
    written = export_nir(ir, tmp_path / "m.nir", check_images=images)
    assert written.check.ok and "0 unexplained" in written.check.summary
    assert META in nir.read(tmp_path / "m.nir").metadata
    assert X.shape == (1, 1, 2, 2)
