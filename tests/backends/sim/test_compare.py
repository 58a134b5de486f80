"""Tests for the trace comparison helpers (first divergence, spike mismatches, near-ties)."""

import numpy as np
import pytest

from inflor_deploy.backends.sim.compare import (
    Divergence,
    first_divergence,
    float_tie_tolerance,
    spike_mismatches,
)

T, B = 4, 2


def _traces():
    rng = np.random.default_rng(0)
    return {
        "unit1.neuron": (rng.random((T, B, 3, 2, 2)) < 0.5).astype(np.uint8),
        "unit2.neuron": (rng.random((T, B, 5, 3, 2)) < 0.5).astype(np.uint8),
        "fc": (rng.random((T, B, 4)) < 0.5).astype(np.uint8),
    }


ORDER = ["unit1.neuron", "unit2.neuron", "fc"]


def _flip(traces, layer, index):
    out = {k: v.copy() for k, v in traces.items()}
    out[layer][index] = 1 - out[layer][index]
    return out


def test_identical_traces_have_no_divergence():
    ref = _traces()
    assert first_divergence(ref, {k: v.copy() for k, v in ref.items()}, ORDER) is None


def test_divergence_names_layer_timestep_sample_neuron_values():
    ref = _traces()
    cand = _flip(ref, "unit2.neuron", (3, 0, 4, 1, 0))
    d = first_divergence(ref, cand, ORDER)
    assert d == Divergence("unit2.neuron", 3, 0, (4, 1, 0), int(ref["unit2.neuron"][3, 0, 4, 1, 0]),
                           int(cand["unit2.neuron"][3, 0, 4, 1, 0]))  # fmt: skip
    expected, actual = d.expected, d.actual
    assert str(d) == f"layer 'unit2.neuron' t=3 sample 0 neuron (4, 1, 0): expected {expected}, got {actual}"
    assert d.to_dict()["neuron"] == [4, 1, 0]


def test_smallest_timestep_wins_over_layer_order():
    ref = _traces()
    # A later layer at t=1 comes before an earlier layer at t=2.
    cand = _flip(_flip(ref, "unit1.neuron", (2, 0, 0, 0, 0)), "fc", (1, 1, 3))
    d = first_divergence(ref, cand, ORDER)
    assert (d.layer, d.timestep, d.sample, d.neuron) == ("fc", 1, 1, (3,))


def test_same_timestep_earliest_layer_then_sample_then_neuron():
    ref = _traces()
    cand = _flip(ref, "fc", (2, 0, 0))
    cand = _flip(cand, "unit2.neuron", (2, 1, 0, 0, 0))
    cand = _flip(cand, "unit2.neuron", (2, 1, 4, 2, 1))
    cand = _flip(cand, "unit2.neuron", (2, 0, 4, 2, 1))
    d = first_divergence(ref, cand, ORDER)
    assert (d.layer, d.timestep, d.sample, d.neuron) == ("unit2.neuron", 2, 0, (4, 2, 1))
    # Layer order is the caller's, not the dict's.
    d = first_divergence(ref, cand, ["fc", "unit2.neuron"])
    assert d.layer == "fc"


def test_float_traces_compare_exactly_and_nan_matches_nan():
    ref = {"h": np.array([[[0.5, np.nan]]], np.float32)}
    assert first_divergence(ref, {"h": ref["h"].copy()}, ["h"]) is None
    cand = {"h": np.array([[[np.nextafter(np.float32(0.5), np.float32(1))], [np.nan]]], np.float32).reshape(1, 1, 2)}
    d = first_divergence(ref, cand, ["h"])
    assert d.neuron == (0,) and d.expected == 0.5 and d.actual > 0.5
    assert "expected 0.5, got 0.5000000" in str(d)


def test_shape_mismatch_and_missing_layer_raise():
    ref = _traces()
    with pytest.raises(ValueError, match="shape"):
        first_divergence(ref, {**ref, "fc": ref["fc"][:2]}, ORDER)
    with pytest.raises(KeyError, match="candidate"):
        first_divergence(ref, {"fc": ref["fc"]}, ORDER)


def test_spike_mismatches_split_near_ties_from_unexplained():
    vth = 0.5
    ref = {"a": np.zeros((T, B, 3), np.uint8), "b": np.zeros((T, B, 2), np.uint8)}
    ref["a"][0, 0, 0] = 1
    ref["b"][:, :, 1] = 1
    membranes = {"a": np.full((T, B, 3), 0.1, np.float32), "b": np.full((T, B, 2), 0.9, np.float32)}
    # a: mismatch at (1, 0, 2) with H one ulp below the threshold -> near-tie.
    membranes["a"][1, 0, 2] = np.nextafter(np.float32(vth), np.float32(0))
    cand = _flip(ref, "a", (1, 0, 2))
    # b: mismatch at (3, 1, 0) with H far from the threshold -> unexplained.
    cand = _flip(cand, "b", (3, 1, 0))
    tol = float_tie_tolerance(membranes["a"], vth)
    result = spike_mismatches(ref, cand, membranes, {"a": vth, "b": vth}, tol)
    assert (result.mismatches, result.near_ties, result.unexplained) == (2, 1, 1)
    assert result.total_spikes == 1 + T * B
    assert result.compared == T * B * 5
    assert not result.ok
    assert (result.first_unexplained.layer, result.first_unexplained.timestep) == ("b", 3)
    assert (result.first_mismatch.layer, result.first_mismatch.timestep) == ("a", 1)
    assert result.per_layer["a"].near_ties == 1 and result.per_layer["a"].unexplained == 0
    assert result.per_layer["b"].unexplained == 1 and result.per_layer["b"].total_spikes == T * B
    assert "2 mismatches, 1 near-ties, 1 unexplained" in result.summary()
    assert result.to_dict()["first_unexplained"]["layer"] == "b"


def test_spike_mismatches_tolerance_per_layer_and_boundary():
    ref = {"a": np.zeros((1, 1, 3), np.uint8)}
    cand = {"a": np.ones((1, 1, 3), np.uint8)}
    membranes = {"a": np.array([[[0.5 - 1e-3, 0.5 - 1e-6, 0.5 + 1e-6]]])}
    result = spike_mismatches(ref, cand, membranes, {"a": 0.5}, {"a": 2e-6})
    assert (result.mismatches, result.near_ties, result.unexplained) == (3, 2, 1)
    assert result.first_unexplained.neuron == (0,)
    # Without mismatches, no membrane is needed.
    clean = spike_mismatches(ref, {"a": ref["a"].copy()}, {}, {}, 0.0)
    assert clean.ok and clean.mismatches == 0 and clean.first_unexplained is None


def test_spike_mismatches_needs_membranes_where_spikes_differ():
    ref = {"a": np.zeros((1, 1, 2), np.uint8)}
    with pytest.raises(KeyError, match="membrane"):
        spike_mismatches(ref, {"a": np.ones((1, 1, 2), np.uint8)}, {}, {"a": 0.5}, 1e-7)


def test_float_tie_tolerance_is_ulps_of_the_largest_magnitude():
    assert float_tie_tolerance(np.array([0.1, -0.2]), 0.5, ulps=1) == float(np.spacing(np.float32(0.5)))
    assert float_tie_tolerance(np.array([3.0, -6.0]), 0.5, ulps=4) == 4 * float(np.spacing(np.float32(6.0)))
