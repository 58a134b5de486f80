"""first_difference names the first node, field and index where two graphs differ, bit for bit."""

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.diff import first_difference
from inflor_deploy.ir.graph import Graph


def _graph(weight=None, vth=5, timesteps=2) -> Graph:
    weight = np.arange(6, dtype=np.int32).reshape(3, 2) * 2 if weight is None else weight
    return Graph((
        n.Input("image", (), shape=(2,), grade_scale=255.0),
        n.FixedPointSynapse("fc", ("image",), weight=weight),
        n.FixedPointNeuron("n1", ("fc",), shape=(3,), vth=vth, reset_mant=6, bias_mant=np.zeros(3, np.int32)),
        n.FixedPointSynapse("out_fc", ("n1",), weight=np.full((2, 3), 2, np.int32)),
        n.FixedPointAccumulator("out", ("out_fc",), shape=(2,), bias_mant=np.zeros(2, np.int32)),
    ), timesteps=timesteps)


def test_identical_graphs_have_no_difference():
    assert first_difference(_graph(), _graph()) is None


def test_the_first_differing_element_is_named_with_both_values():
    weight = np.arange(6, dtype=np.int32).reshape(3, 2) * 2
    weight[2, 1] += 20
    weight[2, 0] -= 2
    assert first_difference(_graph(), _graph(weight)) == {
        "node": "fc", "field": "weight", "index": [2, 0], "expected": 8, "actual": 6, "count": 2}


def test_dtype_scalar_structure_and_graph_fields_are_compared():
    as_float = _graph(np.arange(6, dtype=np.float32).reshape(3, 2) * 2)
    assert first_difference(_graph(), as_float)["expected"] == "dtype int32"
    assert first_difference(_graph(), _graph(vth=-5)) == {
        "node": "n1", "field": "vth", "index": None, "expected": 5, "actual": -5}
    assert first_difference(_graph(), _graph(vth=5.0))["field"] == "vth"  # 5 and 5.0: not the same file
    assert first_difference(_graph(), _graph(timesteps=3))["field"] == "timesteps"
    renamed = _graph().replace_nodes([dataclasses.replace(x, name="n2") if x.name == "n1" else x for x in _graph()])
    assert first_difference(_graph(), renamed)["field"] == "(node)"
