"""quantize_layer: one layer's scale, exponents and mantissas (the identities of its module docstring)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inflor_deploy.passes.fixed_point_layer import (
    A_LIMIT, LayerQuantizationError, LayerSpec, SynapseSpec, _violations, _Fixed, quantize_layer,
)  # fmt: skip
from inflor_deploy.targets import load_target

NUM = load_target("loihi2-sim").numerics


def _layer(synapses, bias=0.0, shape=None, **kw) -> LayerSpec:
    shape = shape or (synapses[0].effective.shape[0],)
    return LayerSpec("n", shape, tuple(synapses), np.full(shape, bias, dtype=np.float64), kw.pop("timesteps", 4),
                     **{"vth": 0.5, "reset_amount": 1.0, **kw})  # fmt: skip


def _dense(name, weight, **kw) -> SynapseSpec:
    return SynapseSpec(name, "src", "dense", np.asarray(weight, dtype=np.float64), **kw)


def test_an_identity_shortcut_beside_small_conv_weights_gets_an_exponent_and_is_exact():
    rng = np.random.default_rng(0)
    conv = SynapseSpec("conv2", "n1", "conv", rng.uniform(-0.05, 0.05, (8, 8, 3, 3)))
    eye = SynapseSpec("shortcut", "n0", "conv", np.eye(8).reshape(8, 8, 1, 1), identity=True)
    q = quantize_layer(_layer([conv, eye], shape=(8, 4, 4)), NUM)
    w_conv, w_eye = q.synapses
    # The conv fills its 8-bit grid (it used to get 127 * 0.05 = 6 levels: the identity capped the scale at 127).
    assert w_conv.weight_exp == 0 and 120 <= np.abs(w_conv.weight).max() <= 127
    # The shortcut's integer weight is exactly scale * spike_value, on its grid with an exponent.
    value = int(w_eye.weight.max()) << w_eye.weight_exp
    assert w_eye.weight_exp > 0 and value == q.scale and w_eye.weight.max() <= 127
    np.testing.assert_array_equal(w_eye.weight[:, :, 0, 0], np.eye(8, dtype=np.int32) * w_eye.weight.max())


def test_a_projection_shortcut_and_the_main_path_both_keep_at_least_half_their_grid():
    rng = np.random.default_rng(1)
    main = SynapseSpec("conv2", "n1", "conv", rng.uniform(-0.1, 0.1, (4, 4, 3, 3)))
    proj = SynapseSpec("proj", "n0", "conv", rng.uniform(-0.77, 0.77, (4, 4, 1, 1)))
    q = quantize_layer(_layer([main, proj], shape=(4, 2, 2)), NUM)
    for s in q.synapses:
        assert 64 <= np.abs(s.weight).max() <= 127, (s.name, s.weight_exp)
    assert [s.weight_exp for s in q.synapses] == [0, 3]


def test_the_scale_search_terminates_with_the_largest_scale_that_respects_the_headroom():
    """The old shrink loop gave up here: rounding (3.98 -> 4) kept the bound above 2^17 at every shrink step."""
    x_max = 255 * 129  # value_range (0, 255) at input_grade_scale 129
    spec = _layer([_dense("fc", [[1.0 / 129]], input_max=x_max)], vth=200.0, reset_amount=1.0)
    exponent_0 = dataclasses.replace(NUM, weight_exp_min=0)  # the weight as the old quantizer held it
    q = quantize_layer(spec, exponent_0)
    assert q.u_bound <= A_LIMIT and q.scale_limited_by == "u_wrap"
    fixed = _Fixed((0,), NUM.bias_exp, None)
    assert not _violations(spec, exponent_0, fixed, q.scale, "u")
    assert "u_wrap" in _violations(spec, exponent_0, fixed, q.scale * (1 + 1e-12), "u")  # nothing larger fits
    # The same layer at grade scale 128 rounds the other way and keeps the float cap.
    q128 = quantize_layer(_layer([_dense("fc", [[1.0 / 128]], input_max=255 * 128)], vth=200.0), exponent_0)
    assert q128.u_bound <= A_LIMIT and q128.scale == pytest.approx(A_LIMIT / 255)
    # The target allows negative exponents: the weight (4 wu at exponent 0) gets a fine mantissa instead.
    fine = quantize_layer(spec, NUM)
    (syn,) = fine.synapses
    assert syn.weight_exp < 0 and int(syn.weight[0, 0]) >= 120 and fine.u_bound <= A_LIMIT  # about half of [0, 254]
    fixed = _Fixed((syn.weight_exp,), fine.bias_exp, None)
    assert not _violations(spec, NUM, fixed, fine.scale, "u")


def test_a_negative_exponent_keeps_the_grid_under_a_headroom_cap_and_its_floor_is_bounded():
    """A pooled conv (weights / 4, fan-in x 4): u headroom, not the weights, caps the scale."""
    rng = np.random.default_rng(4)
    conv = SynapseSpec("pooled", "n0", "conv", rng.uniform(-0.25, 0.25, (8, 256, 6, 6)) / 4)
    q = quantize_layer(_layer([conv], shape=(8, 2, 2)), NUM)
    (syn,) = q.synapses
    assert q.scale_limited_by == "u_wrap" and syn.weight_exp < 0
    assert 64 <= np.abs(syn.weight).max() <= 127  # half to all of the 8-bit grid
    # Every integer current, floored as Lava floors it, stays inside the headroom: the bounds are exact.
    w = syn.weight.reshape(8, -1).astype(np.int64)
    top = np.clip(w, 0, None).sum(1) >> -syn.weight_exp
    bottom = np.clip(w, None, 0).sum(1) >> -syn.weight_exp
    assert max(top.max(), -bottom.min()) == q.u_bound <= A_LIMIT


def test_a_bias_beyond_the_neurons_field_goes_through_a_bias_source():
    # Graded input (255 grades): weights per grade are tiny next to a bias of 0.8 float units.
    rng = np.random.default_rng(2)
    w = rng.uniform(-0.3, 0.3, (6, 9)) / 255
    spec = _layer([_dense("stem", w, input_max=255.0)], bias=0.8, timesteps=2)
    q = quantize_layer(spec, NUM)
    assert q.bias_source is not None and q.scale_limited_by != "bias_range"
    plain = quantize_layer(spec, NUM, plain=True)  # a plain layer: the bias range caps the scale
    assert plain.bias_source is None and plain.scale_limited_by == "bias_range" and plain.scale < q.scale
    source = q.bias_source
    assert source.weight.shape == (6, 1) and source.source == "n.bias_source" and source.weight_exp > 0
    total = source.weight[:, 0].astype(np.int64) * 2**source.weight_exp + q.bias_mant.astype(np.int64) * 2 ** (
        q.bias_exp - 6)
    # Exact up to the neuron's own mantissa step (one weight unit at bias_exp 6, two at 7).
    assert np.all(np.abs(total - 0.8 * q.scale) <= 2 ** (q.bias_exp - 6) / 2 + 1e-9)
    # Without the source, the 13-bit field (at most 4095 << 7 v units) would have capped the scale far lower.
    assert q.scale > (4095 * 2 + 0.49) / 0.8 * 2
    # The u headroom counts the source's current.
    assert q.u_bound <= A_LIMIT


def test_a_moderate_bias_takes_bias_exp_7_and_a_small_one_keeps_6():
    w = np.array([[0.5, -0.25]])
    small = quantize_layer(_layer([_dense("fc", w)], bias=0.1), NUM)  # 0.1 * 508 = 50.8 weight units
    assert small.bias_exp == 6 and small.bias_source is None and int(small.bias_mant[0]) == 51
    moderate = quantize_layer(_layer([_dense("fc", w)], bias=10.0), NUM)  # 5080 wu: beyond 4095, within 8190
    assert moderate.bias_exp == 7 and moderate.bias_source is None and int(moderate.bias_mant[0]) == 2540


@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_fewer_weight_bits_put_every_weight_on_the_coarser_grid(bits):
    rng = np.random.default_rng(4)
    conv = SynapseSpec("conv", "src", "conv", rng.normal(0, 0.2, (4, 3, 3, 3)), weight_bits=bits)
    dense = _dense("fc", rng.normal(0, 0.2, (4 * 9, 5)).T, weight_bits=bits)
    for syn, shape in ((conv, (4, 3, 3)), (dense, (5,))):
        q = quantize_layer(_layer([syn], shape=shape), NUM).synapses[0]
        lo, hi, step = NUM.weight_grid(syn.kind, bits)
        assert q.weight.min() >= lo and q.weight.max() <= hi and not np.any((q.weight - lo) % step)
        assert np.unique(q.weight).size <= 2**bits and q.weight_bits == bits


def test_an_all_zero_layer_is_refused():
    with pytest.raises(LayerQuantizationError, match="every incoming weight is zero"):
        quantize_layer(_layer([_dense("fc", np.zeros((2, 3)))]), NUM)
