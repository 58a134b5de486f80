"""IR files: exact round trip of float and fixed-point graphs; foreign files refused."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import IRError, validate
from inflor_deploy.ir.serialize import load_graph, save_graph
from inflor_deploy.passes.base import PassContext
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.targets import load_target

from tests.passes.test_schedule import residual_graph


def _same(a, b):
    assert a.name == b.name and a.timesteps == b.timesteps and a.schedule == b.schedule
    assert [type(x) for x in a] == [type(x) for x in b]
    for x, y in zip(a, b):
        for field in x.__dataclass_fields__:
            u, v = getattr(x, field), getattr(y, field)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v), (x.name, field)
            else:
                assert u == v and type(u) is type(v), (x.name, field, u, v)


def test_round_trip_float_and_scheduled_fixed_point(tmp_path):
    graph = residual_graph(3)
    _same(graph, load_graph(save_graph(graph, tmp_path / "float.npz")))
    ctx = PassContext(target=load_target("loihi2"), probe=np.random.default_rng(0).random((2, 2, 5, 5)))
    fixed = ScheduleTimesteps.run(QuantizeFixedPoint.run(graph, ctx), ctx)
    loaded = load_graph(save_graph(fixed, tmp_path / "fixed.npz"))
    _same(fixed, loaded)
    validate(loaded)
    assert isinstance(loaded.node("n3.shortcut"), n.FixedPointSynapse) and loaded.node("n3.shortcut").delay == 1


def test_round_trip_of_the_synapse_exponent_bits_and_sparsity(tmp_path):
    ctx = PassContext(target=load_target("loihi2"), probe=np.random.default_rng(0).random((2, 2, 5, 5)))
    fixed = QuantizeFixedPoint.run(residual_graph(3), ctx)
    edited = fixed.replace_nodes(
        dataclasses.replace(x, weight_exp=-3, weight_bits=5, sparse=True) if isinstance(x, n.FixedPointSynapse) else x
        for x in fixed
    )  # fmt: skip
    loaded = load_graph(save_graph(edited, tmp_path / "fixed.npz"))
    _same(edited, loaded)
    assert {(s.weight_exp, s.weight_bits, s.sparse) for s in loaded.of_type(n.FixedPointSynapse)} == {(-3, 5, True)}


def test_foreign_and_missing_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(IRError, match="not an inflor-deploy IR file"):
        load_graph(tmp_path / "other.npz")
    with pytest.raises(IRError, match="no such IR file"):
        load_graph(tmp_path / "missing.npz")


def test_round_trip_of_the_joins(tmp_path):
    from tests.passes.test_distribute_joins import _graph

    graph = _graph()
    assert graph.of_type(n.Add) and graph.of_type(n.Concat)
    _same(graph, load_graph(save_graph(graph, tmp_path / "joins.npz")))


def test_round_trip_of_every_neuron_field_and_readout(tmp_path):
    """Framework neurons (per-channel vth and amounts, compare, timing, v_reset, charge, gain) and readouts."""
    from tests.neuron_cases import CASES, compile_graph, conv_images, conv_per_channel_graph, variant_graph

    for case in CASES:
        graph = variant_graph(case.neuron, readout="mean_membrane", readout_tau=0.875)
        _same(graph, load_graph(save_graph(graph, tmp_path / f"{case.name}.npz")))
    for readout in ("mean_membrane", "spike_count"):
        result, _ = compile_graph(conv_per_channel_graph(readout), conv_images(4))
        fixed = result.graph
        loaded = load_graph(save_graph(fixed, tmp_path / f"fixed_{readout}.npz"))
        _same(fixed, loaded)
        assert loaded.node("hard_pc").vth.shape == (4,) and loaded.output.readout == readout


def test_version_1_files_still_load_with_the_old_semantics(tmp_path):
    """A version-1 header (before the framework neurons) loads; the new fields take their defaults."""
    import json

    from inflor_deploy.ir.serialize import graph_to_arrays

    graph = residual_graph(3)
    arrays = graph_to_arrays(graph)
    header = json.loads(str(arrays["__graph__"]))
    header["format_version"] = 1
    added = {"Neuron": ("gain", "compare", "reset_timing", "v_reset", "charge", "decay"), "Accumulator": ("readout", "tau")}
    for node in header["nodes"]:
        for field in added.get(node["type"], ()):
            del node["fields"][field]
    arrays["__graph__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "v1.npz", **arrays)
    _same(graph, load_graph(tmp_path / "v1.npz"))
