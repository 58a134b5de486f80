"""graph.validate checks every neuron and readout field, and each message names the fix."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import Graph, IRError, validate
from inflor_deploy.ir import nodes as n
from tests.neuron_cases import variant_graph


def _graph_with(**fields) -> Graph:
    return variant_graph(fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(vth=0.0), r"threshold 0.0 must be > 0"),
        (dict(vth=0.5, reset="zero", v_reset=0.5), r"above v_reset = 0.5"),
        (dict(vth=np.array([0.5, -0.1] + [0.5] * 22)), r"must be > 0"),
        (dict(vth=np.full(5, 0.5)), r"per-channel vth has shape \(5,\); it needs one value per channel, shape \(24,\)"),
        (dict(vth=np.full((24, 1), 0.5)), r"scalar or a 1-D per-channel array"),
        (dict(tau=1.5), r"tau 1.5 must be in \[0, 1\]"),
        (dict(gain=0.0), r"input gain 0.0 must be > 0"),
        (dict(reset="hard"), r"reset 'hard' must be one of 'subtract', 'zero', 'none'"),
        (dict(compare="=>"), r"compare '=>' must be one of '>=', '>'"),
        (dict(reset_timing="late"), r"reset_timing 'late' must be one of"),
        (dict(charge="lif"), r"charge 'lif' must be one of"),
        (dict(reset_amount=0.0), r"reset amount 0.0 must be > 0; a layer that never resets has reset 'none'"),
        (dict(tau=0.5, v_reset=0.2, vth=0.6, reset="zero"), r"'affine' charge leaks toward 0.*needs a decay_\* charge"),
        (dict(decay=2.0), r"decay 2.0 is only read by the decay_\* charges"),
        (dict(charge="decay_divide", decay=0.5), r"needs decay \(SpikingJelly's tau, the divisor\) >= 1"),
        (dict(charge="decay_multiply", decay=1.5), r"needs decay \(the multiplier sigmoid\(w\)\) in \(0, 1\]"),
        (dict(charge="decay_divide_input", decay=2.0), r"means tau = 0.5, gain = 0.5.*ir.nodes.decay_fields"),
        (dict(reset_timing="next_step", **n.decay_fields("decay_divide", 2.0)), r"next-step reset .* 'affine' charge"),
        (dict(spike_value=0.0), r"spike value 0.0 must be > 0"),
    ],
)
def test_neuron_fields_out_of_range(fields, message):
    with pytest.raises(IRError, match=message):
        validate(_graph_with(**fields))


def test_decay_fields_give_the_coefficients():
    assert n.decay_fields("decay_divide_input", 4.0) == dict(charge="decay_divide_input", decay=4.0, tau=0.75, gain=0.25)
    assert n.decay_coefficients("decay_multiply", 0.25) == (0.75, 1.0)
    validate(_graph_with(vth=0.5, **n.decay_fields("decay_multiply_input", 0.25)))
    with pytest.raises(ValueError, match="no decay coefficients"):
        n.decay_coefficients("affine", 2.0)


def test_per_channel_broadcast():
    vth = np.array([1.0, 2.0, 3.0])
    assert n.per_channel(vth, 3).shape == (3, 1, 1) and n.per_channel(vth, 1).shape == (3,)
    assert n.per_channel(0.5, 3) == 0.5 and n.per_channel(np.array(7), 3).shape == ()


@pytest.mark.parametrize(
    "readout, tau, message",
    [
        ("mean", 1.0, r"readout 'mean' must be one of"),
        ("mean_current", 0.9, r"tau 0.9 only applies to readout 'mean_membrane'"),
        ("mean_membrane", 0.0, r"mean-membrane readout needs tau in \(0, 1\]"),
    ],
)
def test_readout_fields(readout, tau, message):
    with pytest.raises(IRError, match=message):
        validate(variant_graph(dict(vth=0.5), readout=readout, readout_tau=tau))


def test_a_spike_count_must_read_spiking_layers():
    graph = variant_graph(dict(vth=0.5))
    bad = graph.replace_nodes(dataclasses.replace(x, readout="spike_count") if x.name == "out" else x for x in graph)
    with pytest.raises(IRError, match=r"spike-count readout adds the spikes of spiking layers.*'fc3' is a Linear"):
        validate(bad)


def test_fixed_point_neuron_fields():
    from tests.neuron_cases import compile_graph, conv_images, conv_per_channel_graph

    fixed = compile_graph(conv_per_channel_graph(), conv_images(4))[0].graph
    for changes, message in (
        (dict(vth=np.array([1, 2])), r"per-channel vth has shape \(2,\)"),
        (dict(vth=np.array([1, 2, 3, -4])), r"vth \[1, 2, 3, -4\] must be non-negative integers"),
        (dict(reset="hard"), r"reset 'hard' must be one of"),
        (dict(reset_mant=np.array([1.0, 2.0, 3.0, 4.0])), r"reset_mant \[1.0, 2.0, 3.0, 4.0\] must be non-negative"),
    ):
        bad = fixed.replace_nodes(dataclasses.replace(x, **changes) if x.name == "hard_pc" else x for x in fixed)
        with pytest.raises(IRError, match=message):
            validate(bad)
