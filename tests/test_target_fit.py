"""Every field of a fixed-point graph is checked against the target's bit widths (limits read from the target)."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, Schedule
from inflor_deploy.target_fit import TargetFitError, check_fits_target
from inflor_deploy.targets import load_target

SIM, HW = load_target("loihi2-sim"), load_target("loihi2")


def graph(**changes) -> Graph:
    """image (1x4x4) -conv-> n1 (2x4x4) -dense-> out (3); ``changes`` maps node name -> replaced fields."""
    nodes = [
        n.Input("image", (), shape=(1, 4, 4), grade_scale=255.0),
        n.FixedPointSynapse("c", ("image",), kind="conv", weight=np.full((2, 1, 3, 3), 127, np.int32), padding=(1, 1)),
        n.FixedPointNeuron("n1", ("c",), shape=(2, 4, 4), vth=131071, reset_mant=131071,
                           bias_mant=np.full((2, 4, 4), -4096, np.int32), bias_exp=7, du=4095, dv=4095),
        n.FixedPointSynapse("d", ("n1",), kind="dense", weight=np.full((3, 32), -256, np.int32)),
        n.FixedPointAccumulator("out", ("d",), shape=(3,), bias_mant=np.full(3, 4095, np.int32)),
    ]
    nodes = [dataclasses.replace(x, **changes.get(x.name, {})) for x in nodes]
    schedule = Schedule(depth={"n1": 1, "out": 2}, reset_offset={"n1": 2, "out": 3}, reset_interval=4, latency=2)
    return Graph(tuple(nodes), timesteps=4, name="g", schedule=schedule)


def test_the_extremes_of_every_range_fit_both_targets():
    check_fits_target(graph(), SIM)
    check_fits_target(graph(), HW)


@pytest.mark.parametrize("changes, message", [
    ({"d": {"weight": np.full((3, 32), 3, np.int32)}}, "'d' field 'weight' [0, 0] = 3 is outside the target's dense "
                                                       "weights [-256, 254] in steps of 2"),
    ({"d": {"weight": np.full((3, 32), 256, np.int32)}}, "= 256 is outside the target's dense weights"),
    ({"c": {"weight": np.full((2, 1, 3, 3), -129, np.int32)}}, "'c' field 'weight' [0, 0, 0, 0] = -129 is outside the "
                                                               "target's conv weights [-128, 127]"),
    ({"d": {"weight": np.full((3, 32), 2.0, np.float64)}}, "'d' field 'weight' has dtype float64"),
    ({"n1": {"vth": -5}}, "'n1' field 'vth' = -5 is outside the target's 17-bit unsigned mantissa [0, 131071]"),
    ({"n1": {"vth": 131072}}, "= 131072 is outside the target's 17-bit unsigned mantissa"),
    ({"n1": {"vth": 3.5}}, "'vth' = 3.5 is not an integer"),
    ({"n1": {"reset_mant": 0}}, "'reset_mant' = 0 is outside the target's 17-bit unsigned reset mantissa [1, 131071]"),
    ({"n1": {"bias_mant": np.full((2, 4, 4), 4096, np.int32)}}, "'bias_mant' [0, 0, 0] = 4096 is outside the target's "
                                                               "13-bit signed bias mantissa [-4096, 4095]"),
    ({"n1": {"bias_mant": np.zeros((2, 4), np.int32)}}, "'bias_mant' has shape (2, 4), the layer's shape is (2, 4, 4)"),
    ({"n1": {"bias_exp": 8}}, "'bias_exp' = 8 is outside the target's 3-bit unsigned bias exponent [0, 7]"),
    ({"n1": {"du": 4096}}, "'du' = 4096 is outside the target's 12-bit current decay [0, 4095]"),
    ({"d": {"delay": 63}}, "'d' field 'delay' = 63 is outside the target's synaptic delays [0, 62]"),
    ({"out": {"scale": -1.0}}, "'out' field 'scale' = -1.0 must be a finite number > 0"),
    ({"image": {"grade_scale": None}}, "'grade_scale' is missing"),
    ({"n1": {"reset_mant": np.array([5, 131072])}}, "'reset_mant' [1] = 131072 is outside the target's 17-bit "
                                                    "unsigned reset mantissa [1, 131071]"),
    ({"n1": {"reset": "none", "reset_mant": 3}}, "'reset_mant' = 3 is outside the unused reset mantissa of reset "
                                                 "'none' [0, 0]"),
    ({"image": {"encoding": "rate"}}, "'image' field 'encoding' = 'rate' must be one of direct, sequence"),
    ({"image": {"value_range": (1.0, 0.0)}}, "'value_range' = (1.0, 0.0) must be two finite numbers, low < high"),
    ({"image": {"value_range": (0.0, float("inf"))}}, "'value_range' = (0.0, inf) must be two finite numbers"),
    ({"image": {"pixel_levels": 0}}, "'pixel_levels' = 0 must be an integer >= 1 or none"),
    ({"image": {"value_range": (-2.0**31 / 255, 1.0), "pixel_levels": None}},
     "'value_range' = [-8.4215e+06, 1] at grade scale 255 reaches graded values of 2147483648, outside the "
     "target's 32-bit signed graded-spike payload [-2147483648, 2147483647]"),
    ({"d": {"weight_exp": 10}}, "'d' field 'weight_exp' = 10 is outside the target's weight exponents [-8, 9]"),
    ({"d": {"weight_exp": -9}}, "'d' field 'weight_exp' = -9 is outside the target's weight exponents [-8, 9]"),
    ({"d": {"weight_bits": 9}}, "'d' field 'weight_bits' = 9 is outside the target's weight mantissa widths [1, 8]"),
    ({"d": {"weight_bits": 4, "weight": np.full((3, 32), 2, np.int32)}},
     "'d' field 'weight' [0, 0] = 2 is outside the target's 4-bit dense weights [-256, 224] in steps of 32"),
    ({"c": {"weight_bits": 4}}, "'c' field 'weight' [0, 0, 0, 0] = 127 is outside the target's 4-bit conv weights "
                                "[-8, 7]"),
    ({"d": {"sparse": "yes"}}, "'d' field 'sparse' = 'yes' must be true or false"),
], ids=["dense-odd", "dense-high", "conv-low", "float-weights", "vth-negative", "vth-17-bit", "vth-float",
        "reset-zero", "bias-13-bit", "bias-shape", "bias-exp", "du", "delay", "scale", "grade-scale",
        "reset-per-channel-17-bit", "reset-none-mantissa", "input-encoding", "input-range-order", "input-range-inf", "pixel-levels", "input-payload", "weight-exp-high", "weight-exp-low",
        "weight-bits", "weight-4-bit-dense", "weight-4-bit-conv", "sparse"])
def test_each_field_outside_the_target_is_named(changes, message):
    with pytest.raises(TargetFitError) as err:
        check_fits_target(graph(**changes), SIM, where="art/fixed_point.npz")
    assert str(err.value).startswith("art/fixed_point.npz: ") and message in str(err.value)
    assert "Recompile" in str(err.value) or "recompile" in str(err.value)


def test_limits_come_from_the_target_file(tmp_path):
    text = (SIM.path).read_text().replace("max_synaptic_delay = 62", "max_synaptic_delay = 2")
    text = text.replace("vth_mant_bits = 17", "vth_mant_bits = 12")
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(text.replace('name = "loihi2-sim"', 'name = "narrow"'))
    target = load_target(narrow)
    with pytest.raises(TargetFitError, match=r"'vth' = 131071 is outside the target's 12-bit unsigned mantissa \[0, 4095\]"):
        check_fits_target(graph(), target)
    with pytest.raises(TargetFitError, match=r"'delay' = 3 is outside the target's synaptic delays \[0, 2\]"):
        check_fits_target(graph(n1={"vth": 7, "reset_mant": 8}, d={"delay": 3}), target)


def test_every_input_declaration_fits():
    """Sequence input, a signed range, raw pixels and a range without pixel levels are all representable."""
    for declared in (dict(encoding="sequence", value_range=(0.0, 1.0), pixel_levels=1, grade_scale=1.0),
                     dict(value_range=(-2.5, 2.5), pixel_levels=None, grade_scale=102.0),
                     dict(value_range=(0.0, 255.0), pixel_levels=1, grade_scale=1.0),
                     dict(value_range=(-(2.0**31 - 1), 2.0**31 - 1), pixel_levels=None, grade_scale=1.0)):  # fmt: skip
        check_fits_target(graph(image=declared), SIM)
        check_fits_target(graph(image=declared), HW)


def test_the_graded_payload_comes_from_the_target_file(tmp_path):
    text = SIM.path.read_text().replace("graded_spike_bits = 32", "graded_spike_bits = 16")
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(text.replace('name = "loihi2-sim"', 'name = "narrow"'))
    target = load_target(narrow)
    check_fits_target(graph(), target)  # pixels: at most 255
    with pytest.raises(TargetFitError, match=r"reaches graded values of 65025, outside the target's 16-bit signed "
                                             r"graded-spike payload \[-32768, 32767\]"):
        check_fits_target(graph(image=dict(value_range=(0.0, 255.0), pixel_levels=1)), target)


def test_a_reset_interval_that_is_not_a_power_of_two_fits_the_simulator_only():
    g = graph()
    odd = dataclasses.replace(g, timesteps=3, schedule=dataclasses.replace(g.schedule, reset_interval=3))
    check_fits_target(odd, SIM)
    with pytest.raises(TargetFitError, match="reset_interval 3 is not a power of two, which target loihi2 requires"):
        check_fits_target(odd, HW)
