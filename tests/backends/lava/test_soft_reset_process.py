"""SoftResetLIF: the soft-reset CUBA neuron, its float and bit-accurate models, against hand-computed traces.

Each test drives one population straight from a ``RingBuffer`` (no
connection, so the frame of step g arrives at step g) and reads v and the
spikes at every step.
"""

import numpy as np
import pytest

from inflor_deploy import lava_compat

lava_compat.apply()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.io.sink import Read  # noqa: E402
from lava.proc.io.sink import RingBuffer as SpikeSink  # noqa: E402
from lava.proc.io.source import RingBuffer as FrameSource  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402

from inflor_deploy.backends.lava.procs.soft_reset import SoftResetLIF  # noqa: E402


def _drive(neuron, frames: np.ndarray, tag: str = "fixed_pt", steps: int | None = None, between=None):
    """Feed ``frames`` [N, G] into ``neuron``; return (v [G, N], u [G, N], spikes [G, N])."""
    steps = steps or frames.shape[-1]
    source = FrameSource(data=frames.astype(np.int32 if tag == "fixed_pt" else np.float64))
    source.s_out.connect(neuron.a_in)
    v_read, u_read = Read(buffer=steps, interval=1, offset=0), Read(buffer=steps, interval=1, offset=0)
    v_read.connect_var(neuron.v)
    u_read.connect_var(neuron.u)
    sink = SpikeSink(shape=neuron.s_out.shape, buffer=steps)
    neuron.s_out.connect(sink.a_in)
    try:
        if between is None:
            neuron.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag=tag))
        else:
            first = between[0]
            neuron.run(condition=RunSteps(num_steps=first), run_cfg=Loihi2SimCfg(select_tag=tag))
            between[1](neuron)
            neuron.run(condition=RunSteps(num_steps=steps - first))
        return v_read.data.get().T, u_read.data.get().T, sink.data.get().T
    finally:
        neuron.stop()


@pytest.mark.lava
def test_fixed_point_threshold_is_strict_and_a_spike_subtracts_reset_mant():
    # vth = 9: v = 9 weight units does not fire (v > vth << 6 is strict), v = 10 does.
    frames = np.array([[9, 1, 9, 9, 0], [10, 10, 10, 0, 0], [8, 1, 0, 0, 0]])
    neuron = SoftResetLIF(shape=(3,), vth=9, reset_mant=15, du=4095, dv=0, bias_exp=6, reset_interval=100)
    v, u, s = _drive(neuron, frames)
    v = v / 64
    # neuron 0: 9 | 10 -> fire -> -5 | 4 | 13 -> fire -> -2 | -2
    assert v[:, 0].tolist() == [9, -5, 4, -2, -2]
    assert s[:, 0].tolist() == [0, 1, 0, 1, 0]
    # neuron 1: 10 -> -5 | 5 | 15 -> 0 | 0 | 0
    assert v[:, 1].tolist() == [-5, 5, 0, 0, 0] and s[:, 1].tolist() == [1, 0, 1, 0, 0]
    # neuron 2: 8 (threshold - 1) | 9 (threshold): no spike either time
    assert v[:, 2].tolist() == [8, 9, 9, 9, 9] and not s[:, 2].any()
    assert (u[:, 0] / 64).tolist() == [9, 1, 9, 9, 0]  # du = 4095: u is this step's input


@pytest.mark.lava
def test_periodic_reset_zeroes_u_and_v_before_integrating_at_the_offset():
    # reset_interval 3, offset 2: state is zeroed at the start of steps 2, 5, ...
    frames = np.full((1, 6), 3)
    neuron = SoftResetLIF(shape=(1,), vth=100, reset_mant=1, du=4095, bias_mant=1, bias_exp=6, reset_interval=3, reset_offset=2)
    v, _, _ = _drive(neuron, frames)
    assert (v[:, 0] / 64).tolist() == [4, 4, 8, 12, 4, 8]


@pytest.mark.lava
def test_subthreshold_dynamics_are_lavas_lif_reset_bit_for_bit():
    # Current decay, voltage leak, bias with a negative-going input: below threshold the
    # soft-reset neuron must integrate exactly like Lava's stock LIFReset.
    rng = np.random.default_rng(0)
    frames = rng.integers(-300, 400, size=(5, 12))
    params = dict(shape=(5,), vth=10**5, du=1200, dv=350, bias_mant=np.array([0, 7, -7, 100, -4096]), bias_exp=6,
                  reset_interval=7, reset_offset=3)  # fmt: skip
    ours = _drive(SoftResetLIF(reset_mant=5, **params), frames)
    stock = _drive(LIFReset(**params), frames)
    for a, b in zip(ours, stock):
        np.testing.assert_array_equal(a, b)
    assert np.abs(ours[0]).max() > 64 * 1000  # the traces are not trivially zero


@pytest.mark.lava
def test_leaky_soft_reset_matches_the_integer_update():
    frames = np.array([[40, 40, 0, 40, 40, 40]])
    v, _, s = _drive(SoftResetLIF(shape=(1,), vth=50, reset_mant=60, du=4095, dv=1024, bias_exp=6, reset_interval=50), frames)
    expected_v, expected_s, volt = [], [], 0
    for a in frames[0]:
        volt = int(np.sign(volt) * ((abs(volt) * (4096 - 1024)) >> 12)) + (a << 6)
        fired = volt > 50 << 6
        volt -= (60 << 6) if fired else 0
        expected_v.append(volt)
        expected_s.append(int(fired))
    assert v[:, 0].tolist() == expected_v and s[:, 0].tolist() == expected_s
    assert any(expected_s) and min(expected_v) < 0


@pytest.mark.lava
def test_float_model_subtracts_reset_mant_and_agrees_on_integer_inputs():
    frames = np.array([[9, 1, 9, 9, 0], [10, 10, 10, 0, 0]])
    fixed = _drive(SoftResetLIF(shape=(2,), vth=9, reset_mant=15, du=4095, bias_exp=6, reset_interval=100), frames)
    floating = _drive(SoftResetLIF(shape=(2,), vth=9.0, reset_mant=15.0, du=1.0, dv=0.0, reset_interval=100), frames, tag="floating_pt")
    np.testing.assert_array_equal(fixed[0] / 64, floating[0])
    np.testing.assert_array_equal(fixed[2], floating[2])


@pytest.mark.lava
def test_threshold_changed_between_runs_takes_effect():
    # Lava's PyLifModelBitAcc caches vth << 6 at its first step; SoftResetLIF reads it every step,
    # and survives Var.set() storing the int scalar as a float.
    frames = np.full((1, 6), 10)
    neuron = SoftResetLIF(shape=(1,), vth=5, reset_mant=10, du=4095, bias_exp=6, reset_interval=100)
    _, _, s = _drive(neuron, frames, between=(3, lambda proc: proc.vth.set(np.array([15]))))
    # vth 5: 10 fires every step (v back to 0); vth 15: 10 | 20 -> fire -> 10 | 20 -> fire
    assert s[:, 0].tolist() == [1, 1, 1, 0, 1, 1]


@pytest.mark.lava
def test_unknown_or_invalid_parameters_are_refused():
    with pytest.raises(TypeError, match="bias"):
        SoftResetLIF(shape=(1,), vth=1, reset_mant=1, bias=3)  # Lava's LIF would silently ignore it
    with pytest.raises(ValueError, match="reset_mant"):
        SoftResetLIF(shape=(1,), vth=1, reset_mant=-1)
    with pytest.raises(ValueError, match="reset_interval"):
        SoftResetLIF(shape=(1,), vth=1, reset_mant=1, reset_interval=0)


@pytest.mark.lava
def test_per_neuron_thresholds_and_the_zero_and_none_reset_modes():
    # Three neurons, thresholds 4, 6, 9 (one per neuron); input 5 weight units every step.
    frames = np.full((3, 4), 5)
    v = {}
    for mode in ("zero", "none", "subtract"):
        neuron = SoftResetLIF(shape=(3,), vth=np.array([4, 6, 9]), reset_mant=np.array([1, 2, 3]),
                              reset_mode=mode, du=4095, bias_exp=6, reset_interval=100)  # fmt: skip
        v[mode], _, s = _drive(neuron, frames)
        v[mode] = v[mode] / 64
        if mode == "zero":
            # 5 > 4 fires at once and resets to 0; 10 > 6 fires at step 2; 15 > 9 at step 2 too.
            assert s.T.tolist() == [[1, 1, 1, 1], [0, 1, 0, 1], [0, 1, 0, 1]]
            assert v[mode].T.tolist() == [[0, 0, 0, 0], [5, 0, 5, 0], [5, 0, 5, 0]]
    # none: v integrates 5 per step and every neuron fires whenever v > vth.
    assert v["none"].T.tolist() == [[5, 10, 15, 20]] * 3
    # subtract, per neuron: 5 - 1 | 4 + 5 - 1 | ... for vth 4, reset 1.
    assert v["subtract"][:, 0].tolist() == [4, 8, 12, 16]
    assert v["subtract"][:, 2].tolist() == [5, 10 - 3, 12 - 3, 14 - 3]


def test_reset_mode_is_checked():
    with pytest.raises(ValueError, match="reset_mode"):
        SoftResetLIF(shape=(1,), vth=1, reset_mant=1, reset_mode="hard")
