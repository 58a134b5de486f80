"""IR files: exact round trip of float and fixed-point graphs; foreign files refused."""

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
