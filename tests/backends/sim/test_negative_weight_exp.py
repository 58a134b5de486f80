"""Negative synapse exponents (Lava's truncating right shift): every integer backend floors as Lava does.

``a = floor((W x) / 2^-weight_exp)``, with the wrap of the sum first
(:func:`~inflor_deploy.backends.sim.lava_arith.lava_current`). One graph has
every kind (graded conv -> Sparse summing in int32, spiking dense with odd
mixed-sign weights -> Dense whose encoding doubles them, spiking conv ->
Sparse); a second drives graded sums far past int32 so the wraps show. The
Lava side of the same graphs is in tests/backends/lava/test_precision_and_compression.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from inflor_deploy.backends.onnx.fixed_model import fixed_graph_to_onnx, run_fixed_onnx
from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.backends.sim.int_reference import run_aligned
from inflor_deploy.backends.sim.lava_arith import encode_dense_weights, lava_current, synapse_arithmetic
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from tests.backends.onnx.test_fixed_model import assert_bit_exact


def _neuron(name, sources, shape, vth, reset_mant):
    return n.FixedPointNeuron(name=name, sources=tuple(sources), shape=shape, vth=vth, reset="subtract",
                              reset_mant=reset_mant, du=4095, dv=0, bias_mant=np.zeros(shape, np.int32), bias_exp=6,
                              scale=1.0)  # fmt: skip


def right_shift_graph(grade_scale: float = 255.0, value_range=(0.0, 1.0), timesteps: int = 4) -> Graph:
    """Graded conv (exp -2), spiking odd mixed dense (exp -1), spiking conv (exp -3), readouts (exp -2)."""
    rng = np.random.default_rng(21)

    def syn(name, src, kind, weight, exp):
        return n.FixedPointSynapse(name=name, sources=(src,), kind=kind, weight=weight.astype(np.int32),
                                   weight_exp=exp, padding=(1, 1) if kind == "conv" else (0, 0))  # fmt: skip

    return Graph(
        (
            n.Input(name="image", sources=(), shape=(2, 4, 4), grade_scale=grade_scale, value_range=value_range),
            syn("g", "image", "conv", rng.integers(-60, 128, (6, 2, 3, 3)), -2),
            _neuron("a", ["g"], (6, 4, 4), vth=900, reset_mant=1000),
            syn("d", "a", "dense", rng.integers(-128, 128, (8, 96)) | 1, -1),
            _neuron("b", ["d"], (8,), vth=60, reset_mant=120),
            syn("k", "a", "conv", rng.integers(-100, 128, (4, 6, 3, 3)), -3),
            _neuron("c", ["k"], (4, 4, 4), vth=40, reset_mant=80),
            syn("r1", "b", "dense", 2 * rng.integers(-127, 128, (3, 8)), -2),
            syn("r2", "c", "dense", 2 * rng.integers(-127, 128, (3, 64)), -2),
            n.FixedPointAccumulator(name="out", sources=("r1", "r2"), shape=(3,), bias_mant=np.zeros(3, np.int32),
                                    bias_exp=6, scale=1.0),  # fmt: skip
        ),
        timesteps=timesteps,
        name="right_shift",
    )


def test_lava_current_floors_after_the_wrap():
    graph = right_shift_graph()
    d = graph.node("d")
    m, mode, e = encode_dense_weights(d.weight, d.weight_exp)
    assert (mode, e) == ("MIXED", -2) and np.array_equal(m, 2 * d.weight.astype(np.int64))  # odd: 2W, >> 2
    exact = np.array([-5, -4, -1, 0, 3, 2**33 + 5], dtype=np.int64)
    # Spikes into Dense: int64 sum, shift, then the int32 cut: floor, then a 32-bit wrap of the result.
    spikes = synapse_arithmetic(d, graded=False)
    assert spikes.process == "Dense"
    np.testing.assert_array_equal(lava_current(spikes, exact), [-3, -2, -1, 0, 1, (2**33 + 5) // 2 - 2**32])
    # Graded into Sparse: an int32 sum of 2^j S (odd weights: j = 1) wraps S to 31 bits first, then floors.
    graded = synapse_arithmetic(graph.node("g"), graded=True)
    assert graded.process == "Sparse" and graded.wrap_bits == 31
    np.testing.assert_array_equal(lava_current(graded, exact), [-2, -1, -1, 0, 0, 1])


@pytest.mark.parametrize("precision", ["auto", "int64"])
def test_simulator_and_integer_onnx_floor_exactly_like_the_reference(precision):
    graph = right_shift_graph()
    images = np.random.default_rng(3).random((4, 2, 4, 4)).astype(np.float32)
    reference = run_aligned(graph, images, record=True)
    for name in ("a", "b", "c"):
        assert 0 < reference.spikes[name].mean() < 1, name  # every layer fires sometimes
    sim = simulate(graph, images, record=True, precision=precision)
    np.testing.assert_array_equal(sim.accumulator, reference.accumulator)
    for name, spikes in reference.spikes.items():
        np.testing.assert_array_equal(sim.spikes[name], spikes, err_msg=name)
        np.testing.assert_array_equal(sim.voltages[name], reference.voltages[name], err_msg=name)
    if precision == "auto":
        model = fixed_graph_to_onnx(graph)
        assert any(m.key == "inflor.right_shift" for p in model.graph.node for m in p.metadata_props)
        assert_bit_exact(reference, run_fixed_onnx(model, images), graph)


def test_graded_sums_past_int32_wrap_then_floor_in_every_backend():
    graph = right_shift_graph(grade_scale=float(2**22), value_range=(-256.0, 256.0))
    images = np.random.default_rng(9).uniform(-256, 256, (3, 2, 4, 4)).astype(np.float32)
    reference = run_aligned(graph, images, record=True)
    sim = simulate(graph, images, record=True)
    np.testing.assert_array_equal(sim.accumulator, reference.accumulator)
    for name, spikes in reference.spikes.items():
        np.testing.assert_array_equal(sim.spikes[name], spikes, err_msg=name)
    assert_bit_exact(reference, run_fixed_onnx(fixed_graph_to_onnx(graph), images), graph)
