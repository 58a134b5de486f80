"""The integer reference itself, against traces computed by hand.

Every case is a tiny hand-made fixed-point graph

    Input (1 value, grade_scale 1 unless said) -> dense [N, 1] -> FixedPointNeuron (N)
        -> dense diag(w_out) -> FixedPointAccumulator (N)

driven by one constant integer input (direct encoding repeats the frame at
every step), so each neuron sees the same current ``a = w * x`` every step.
The expected u, v and spikes are worked out in the comments, in v units
(one weight unit = 64). ``HAND_CASES`` is shared with the simulator's tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, Schedule, validate
from inflor_deploy.backends.sim.int_reference import _decay, _wrap_u, quantize_input, run_aligned, run_pipelined


def hand_graph(
    weights: list[int],
    *,
    timesteps: int,
    grade_scale: float = 1.0,
    value_range: tuple[float, float] = (0.0, 1.0),
    w_out: int = 1,
    acc_bias: int = 0,
    bias_mant: list[int] | None = None,
    bias_exp: int = 6,
    **neuron,
) -> Graph:
    """``x -> dense [[w] for w in weights] -> neuron layer -> dense w_out * I -> accumulator``.

    The schedule is the one ScheduleTimesteps gives on the simulator target
    (R = T): neuron at depth 1, accumulator at depth 2.
    """
    size = len(weights)
    graph = Graph(
        nodes=(
            n.Input("x", (), shape=(1,), grade_scale=grade_scale, value_range=value_range),
            n.FixedPointSynapse("w_in", ("x",), kind="dense", weight=np.array(weights, np.int32).reshape(size, 1)),
            n.FixedPointNeuron(
                "n", ("w_in",), shape=(size,),
                bias_mant=np.array(bias_mant or [0] * size, np.int32), bias_exp=bias_exp, **neuron,
            ),  # fmt: skip
            n.FixedPointSynapse("w_out", ("n",), kind="dense", weight=(w_out * np.eye(size)).astype(np.int32)),
            n.FixedPointAccumulator("acc", ("w_out",), shape=(size,), bias_mant=np.full(size, acc_bias, np.int32)),
        ),
        timesteps=timesteps,
        name="hand",
        schedule=Schedule(
            depth={"n": 1, "acc": 2},
            reset_offset={"n": 2 % timesteps, "acc": 3 % timesteps},
            reset_interval=timesteps,
            latency=2,
        ),
    )
    validate(graph)
    return graph


@dataclass(frozen=True)
class HandCase:
    """A hand-made graph, its input and the traces worked out by hand ([T, N] per neuron layer)."""

    name: str
    graph: Graph
    image: float
    spikes: list[list[int]]
    voltages: list[list[int]]
    currents: list[list[int]]
    accumulator: list[int]
    u_wraps: int = 0
    v_saturations: int = 0

    @property
    def images(self) -> np.ndarray:
        return np.array([[self.image]], dtype=np.float32)


def _cols(*columns: list[int]) -> list[list[int]]:
    """Per-neuron columns -> [T, N] rows."""
    return [list(row) for row in zip(*columns)]


HAND_CASES = [
    # SRIF: soft reset. theta = 10 weight units -> vth = theta - 1 = 9, compared as v > 9 << 6 = 576;
    # reset_mant 10 subtracts 640. a = 4 * 1 = 4 -> u = 4 << 6 = 256 every step (du = 4095).
    #   t0: v = 256            t1: v = 512
    #   t2: v = 768 > 576: spike, v = 768 - 640 = 128
    #   t3: v = 384            t4: v = 640 > 576: spike, v = 0       t5: v = 256
    # Accumulator: a = 3 * s, bias 1 << 6 = 64 per step: v = 64, 128, 128+192+64 = 384, 448, 704, 768.
    HandCase(
        "srif_soft_reset",
        hand_graph([4], timesteps=6, vth=9, reset="subtract", reset_mant=10, w_out=3, acc_bias=1),
        image=1.0,
        spikes=_cols([0, 0, 1, 0, 1, 0]),
        voltages=_cols([256, 512, 128, 384, 0, 256]),
        currents=_cols([256] * 6),
        accumulator=[768],
    ),
    # Hard-reset IF, same drive: v = 256, 512, 768 > 576 -> 0, 256, 512, 768 -> 0.
    # Accumulator: 2 spikes * (1 << 6).
    HandCase(
        "if_hard_reset",
        hand_graph([4], timesteps=6, vth=9, reset="zero"),
        image=1.0,
        spikes=_cols([0, 0, 1, 0, 0, 1]),
        voltages=_cols([256, 512, 0, 256, 512, 0]),
        currents=_cols([256] * 6),
        accumulator=[128],
    ),
    # LIF, dv = 1000: v <- trunc(v * 3096 / 4096) (toward zero, also for negative v), then + u.
    # Neuron 0: a = +5 -> u = 320; vth 9 (576), hard reset.
    #   t0: 320
    #   t1: 320 * 3096 = 990720, / 4096 = 241.875 -> 241; v = 241 + 320 = 561 (not > 576)
    #   t2: 561 * 3096 = 1736856, / 4096 = 424.04 -> 424; v = 744 > 576: spike, v = 0
    #   t3..t5 repeat t0..t2.
    # Neuron 1: a = -5 -> u = -320, never fires; floor would give -242, -425, ... instead:
    #   t0: -320
    #   t1: -990720 / 4096 = -241.875 -> -241; v = -561
    #   t2: -1736856 / 4096 = -424.04 -> -424; v = -744
    #   t3: -744 * 3096 = -2303424, / 4096 = -562.36 -> -562; v = -882
    #   t4: -882 * 3096 = -2730672, / 4096 = -666.67 -> -666; v = -986
    #   t5: -986 * 3096 = -3052656, / 4096 = -745.28 -> -745; v = -1065
    HandCase(
        "lif_leak_rounds_toward_zero",
        hand_graph([5, -5], timesteps=6, vth=9, reset="zero", dv=1000),
        image=1.0,
        spikes=_cols([0, 0, 1, 0, 0, 1], [0] * 6),
        voltages=_cols([320, 561, 0, 320, 561, 0], [-320, -561, -744, -882, -986, -1065]),
        currents=_cols([320] * 6, [-320] * 6),
        accumulator=[128, 0],
    ),
    # Current decay du = 1000: u <- trunc(u * (4096 - 1001) / 4096) + (a << 6) = trunc(u * 3095 / 4096) + 192.
    # Neuron 0 (a = +3), vth 15 (960), soft reset 16 (1024):
    #   u: t0 192; t1 trunc(594240 / 4096 = 145.08) + 192 = 337; t2 trunc(1043015 / 4096 = 254.64) + 192 = 446;
    #      t3 trunc(1380370 / 4096 = 337.004) + 192 = 529; t4 trunc(1637255 / 4096 = 399.72) + 192 = 591;
    #      t5 trunc(1829145 / 4096 = 446.57) + 192 = 638
    #   v: t0 192; t1 529; t2 975 > 960: spike, -49; t3 480; t4 1071 > 960: spike, 47; t5 685
    # Neuron 1 (a = -3): u = -192, -337, -446, -529, -591, -638 (symmetric: toward zero);
    #   v = -192, -529, -975, -1504, -2095, -2733.
    HandCase(
        "current_decay",
        hand_graph([3, -3], timesteps=6, vth=15, reset="subtract", reset_mant=16, du=1000),
        image=1.0,
        spikes=_cols([0, 0, 1, 0, 1, 0], [0] * 6),
        voltages=_cols([192, 529, -49, 480, 47, 685], [-192, -529, -975, -1504, -2095, -2733]),
        currents=_cols([192, 337, 446, 529, 591, 638], [-192, -337, -446, -529, -591, -638]),
        accumulator=[128, 0],
    ),
    # The 24-bit wrap of u and the saturation of v. grade_scale 140000 turns image 1.0 into x = 140000;
    # vth = 131071 -> 131071 << 6 = 8388544; hard reset.
    # Neuron 0 (w = 1): a << 6 = 8960000 > 2^23 = 8388608 -> u = 8960000 - 2^24 = -7817216 (a wrap).
    #   v: t0 -7817216; t1 -15634432 -> clip -8388607 (saturation); t2 -16205823 -> clip (saturation).
    # Neuron 1 (w = -1): -8960000 <= -2^23 -> u = -8960000 + 2^24 = 7817216 (a wrap).
    #   v: t0 7817216 (not > 8388544); t1 15634432 -> clip 8388607 (saturation) > 8388544: spike, 0;
    #   t2 7817216.
    # Neuron 2 (w = 3): a << 6 = 26880000 -> one wrap only: 26880000 - 2^24 = 10102784, still > 2^23.
    #   v: 10102784 -> clip 8388607 (saturation) -> spike -> 0, every step.
    # Wraps: 3 neurons x 3 steps = 9. Saturations: 2 + 1 + 3 = 6.
    HandCase(
        "u_wrap_and_v_saturation",
        hand_graph([1, -1, 3], timesteps=3, grade_scale=140000.0, vth=131071, reset="zero"),
        image=1.0,
        spikes=_cols([0, 0, 0], [0, 1, 0], [1, 1, 1]),
        voltages=_cols([-7817216, -8388607, -8388607], [7817216, 0, 7817216], [0, 0, 0]),
        currents=_cols([-7817216] * 3, [7817216] * 3, [10102784] * 3),
        accumulator=[0, 64, 192],
        u_wraps=9,
        v_saturations=6,
    ),
    # The wrap's boundaries: u lives in (-2^23, 2^23]. grade_scale 131072 = 2^17 gives a << 6 = +-2^23.
    # vth = 131071 (8388544), hard reset.
    # Neuron 0 (w = 1): u = 2^23 = 8388608 stays (not > 2^23); v = 8388608 -> clip 8388607
    #   (saturation) > 8388544: spike, 0. Every step.
    # Neuron 1 (w = -1): u = -2^23 <= -2^23 wraps to -2^23 + 2^24 = 8388608; then as neuron 0.
    # Wraps: 2 (neuron 1, each step). Saturations: 4.
    HandCase(
        "u_wrap_boundaries",
        hand_graph([1, -1], timesteps=2, grade_scale=131072.0, vth=131071, reset="zero"),
        image=1.0,
        spikes=_cols([1, 1], [1, 1]),
        voltages=_cols([0, 0], [0, 0]),
        currents=_cols([8388608] * 2, [8388608] * 2),
        accumulator=[128, 128],
        u_wraps=2,
        v_saturations=4,
    ),
    # Saturation of v on both sides without any wrap: x = 131071, so a << 6 = +-8388544 < 2^23.
    # vth = 131071 (8388544), hard reset.
    # Neuron 0 (w = -1): v = -8388544; -16777088 -> clip -8388607 (saturation); -16777151 -> clip (saturation).
    # Neuron 1 (w = 1): v = 8388544 (= vth << 6: no spike); 16777088 -> clip 8388607 (saturation):
    #   spike, 0; 8388544 (no spike). Saturations: 2 + 1 = 3.
    HandCase(
        "v_saturation_both_signs",
        hand_graph([-1, 1], timesteps=3, grade_scale=131071.0, vth=131071, reset="zero"),
        image=1.0,
        spikes=_cols([0, 0, 0], [0, 1, 0]),
        voltages=_cols([-8388544, -8388607, -8388607], [8388544, 0, 8388544]),
        currents=_cols([-8388544] * 3, [8388544] * 3),
        accumulator=[0, 64],
        v_saturations=3,
    ),
    # The threshold boundary: theta = 10 weight units -> vth = 9, compared as v > 576.
    # Weights 9, 10, 11, 9 and bias [0, 0, 0, 1] with bias_exp 0 (one v unit); soft reset 10 (640).
    #   t0: v = 576 (= vth << 6: no spike), 640 (theta: spike), 704 (spike), 577 (vth << 6 + 1: spike)
    #       after reset: 576, 0, 64, -63
    #   t1: v = 1152 (spike), 640 (spike), 768 (spike), -63 + 576 + 1 = 514 (no)
    #       after reset: 512, 0, 128, 514
    HandCase(
        "threshold_boundary",
        hand_graph([9, 10, 11, 9], timesteps=2, vth=9, reset="subtract", reset_mant=10,
                   bias_mant=[0, 0, 0, 1], bias_exp=0),  # fmt: skip
        image=1.0,
        spikes=_cols([0, 1], [1, 1], [1, 1], [1, 0]),
        voltages=_cols([576, 512], [0, 0], [64, 128], [-63, 514]),
        currents=_cols([576] * 2, [640] * 2, [704] * 2, [576] * 2),
        accumulator=[64, 128, 128, 64],
    ),
    # Bias with bias_exp 6: mantissa 3 -> 3 << 6 = 192 per step, no input current.
    # vth 9 (576), soft reset 10 (640): v = 192, 384, 576 (equal: no spike), 768 -> 128, 320, 512.
    HandCase(
        "bias_exp_6",
        hand_graph([0], timesteps=6, vth=9, reset="subtract", reset_mant=10, bias_mant=[3], bias_exp=6),
        image=1.0,
        spikes=_cols([0, 0, 0, 1, 0, 0]),
        voltages=_cols([192, 384, 576, 128, 320, 512]),
        currents=_cols([0] * 6),
        accumulator=[64],
    ),
    # Bias with bias_exp 3: mantissas 5 and -5 -> +-40 per step. vth 0 (fires when v > 0), soft reset 1 (64).
    # Neuron 0: 40 -> -24, 16 -> -48, -8, 32 -> -32, 8 -> -56, -16. Neuron 1: -40, -80, ..., -240.
    HandCase(
        "bias_exp_3",
        hand_graph([0, 0], timesteps=6, vth=0, reset="subtract", reset_mant=1, bias_mant=[5, -5], bias_exp=3),
        image=1.0,
        spikes=_cols([1, 1, 0, 1, 1, 0], [0] * 6),
        voltages=_cols([-24, -48, -8, -32, -56, -16], [-40, -80, -120, -160, -200, -240]),
        currents=_cols([0] * 6, [0] * 6),
        accumulator=[256, 0],
    ),
]


def check_hand_case(case: HandCase, run) -> None:
    """Assert a run (IntRun or SimRun, aligned or de-skewed) matches the hand-computed traces."""
    np.testing.assert_array_equal(run.spikes["n"][:, 0], np.array(case.spikes, dtype=np.uint8))
    np.testing.assert_array_equal(run.voltages["n"][:, 0], np.array(case.voltages))
    np.testing.assert_array_equal(run.currents["n"][:, 0], np.array(case.currents))
    np.testing.assert_array_equal(run.accumulator, np.array([case.accumulator]))
    assert run.accumulator.dtype == np.int64 and run.spikes["n"].dtype == np.uint8
    assert run.u_wraps["n"] == case.u_wraps and run.v_saturations["n"] == case.v_saturations
    assert run.u_wraps["acc"] == 0 and run.v_saturations["acc"] == 0


@pytest.mark.parametrize("case", HAND_CASES, ids=lambda c: c.name)
def test_reference_matches_hand_computed_traces(case):
    check_hand_case(case, run_aligned(case.graph, case.images, record=True))


@pytest.mark.parametrize("case", HAND_CASES, ids=lambda c: c.name)
def test_pipelined_reference_deskews_to_the_aligned_run(case):
    # No currents in run_pipelined's record; spikes, voltages, readout and counters must match.
    run, raw = run_pipelined(case.graph, case.images, record=True)
    np.testing.assert_array_equal(run.spikes["n"][:, 0], np.array(case.spikes, dtype=np.uint8))
    np.testing.assert_array_equal(run.voltages["n"][:, 0], np.array(case.voltages))
    np.testing.assert_array_equal(run.accumulator, np.array([case.accumulator]))
    assert set(raw) == {"spikes", "voltages"}


def test_pipelined_global_trace_by_hand():
    # bias_exp_6 case, one sample, R = T = 6: the neuron (depth 1) resets when g % 6 == 2, the
    # accumulator (depth 2) when g % 6 == 3; G = 1 * 6 + 2 + 1 = 9 global steps.
    #   neuron g=1: before its first window: bias only, v = 192
    #          g=2: reset; window of sample 0: 192, 384, 576, 768 -> spike -> 128, 320, 512 (g = 2..7)
    #          g=8: reset; tail window: 192, 384 (g = 8, 9)
    #   accumulator reads the neuron's spike of g - 1: the spike of g=5 arrives at g=6 (+64),
    #          its window is g = 3..8 (reset at g=3 and g=9).
    case = next(c for c in HAND_CASES if c.name == "bias_exp_6")
    run, raw = run_pipelined(case.graph, case.images, record=True)
    np.testing.assert_array_equal(raw["voltages"]["n"][:, 0], [192, 192, 384, 576, 128, 320, 512, 192, 384])
    np.testing.assert_array_equal(raw["spikes"]["n"][:, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(raw["voltages"]["acc"][:, 0], [0, 0, 0, 0, 0, 64, 64, 64, 0])
    assert run.accumulator.tolist() == [[64]]  # read at g = k*R + T + depth = 8


def test_decay_rounds_toward_zero():
    # 7 * 2048 / 4096 = 3.5 -> 3 and -3.5 -> -3 (floor would give -4); factor 4096 keeps x.
    np.testing.assert_array_equal(_decay(np.array([7, -7, 0]), 2048), [3, -3, 0])
    np.testing.assert_array_equal(_decay(np.array([-8388607, 5]), 4096), [-8388607, 5])


def test_wrap_is_applied_once_into_the_half_open_interval():
    u = np.array([2**23, 2**23 + 1, -(2**23), -(2**23) + 1, 3 * 2**23, -3 * 2**23])
    wrapped, count = _wrap_u(u)
    # 2^23 stays (the interval is (-2^23, 2^23]); -2^23 wraps to +2^23; one wrap only for +-3 * 2^23.
    np.testing.assert_array_equal(wrapped, [2**23, -(2**23) + 1, 2**23, -(2**23) + 1, 2**23, -(2**23)])
    assert count == 4


def test_quantize_input_rounds_half_to_even():
    graph = hand_graph([1], timesteps=1, vth=1, reset="zero", grade_scale=2.0, value_range=(-1.0, 2.0))
    # 0.25 * 2 = 0.5 -> 0, 0.75 * 2 = 1.5 -> 2, 1.25 * 2 = 2.5 -> 2, -0.75 * 2 = -1.5 -> -2
    q = quantize_input(graph, np.array([[0.25], [0.75], [1.25], [-0.75]]))
    assert q.dtype == np.int64 and q[:, 0].tolist() == [0, 2, 2, -2]


def test_inputs_outside_the_declared_range_are_refused():
    graph = hand_graph([1], timesteps=1, vth=1, reset="zero", grade_scale=2.0, value_range=(0.0, 1.0))
    for bad in ([[-0.25]], [[1.5]], [[np.nan]]):
        with pytest.raises(IRError, match="outside the range|NaN"):
            run_aligned(graph, np.array(bad))
    with pytest.raises(IRError, match="do not fit"):
        quantize_input(graph, np.zeros((2, 3)))


def test_graded_inputs_beyond_32_bits_are_refused():
    graph = hand_graph([1], timesteps=1, vth=1, reset="zero", grade_scale=1.0, value_range=(-2.0**40, 2.0**40))
    assert quantize_input(graph, np.array([[2.0**31 - 1]]))[0, 0] == 2**31 - 1
    with pytest.raises(IRError, match="32-bit graded payload"):
        quantize_input(graph, np.array([[2.0**31]]))


def test_reference_refuses_float_and_unscheduled_graphs():
    case = HAND_CASES[0]
    with pytest.raises(IRError, match="needs a scheduled graph"):
        run_pipelined(Graph(case.graph.nodes, case.graph.timesteps), case.images)
    float_graph = Graph(
        (
            n.Input("x", (), shape=(1,)),
            n.Linear("l", ("x",), weight=np.ones((1, 1), np.float32)),
            n.Accumulator("a", ("l",)),
        ),
        timesteps=1,
    )
    with pytest.raises(IRError, match="quantized graphs"):
        run_aligned(float_graph, case.images)
