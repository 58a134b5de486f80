"""ScheduleTimesteps: depths, shortcut delays, reset offsets and intervals, and its bit-exact contract."""

import dataclasses

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import PassContext, PassError, QuantizationOptions
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.targets import load_target


def residual_graph(timesteps: int) -> Graph:
    """conv -> n1 -> conv -> n2 -> conv -> n3 (+ identity shortcut from n1) -> fc -> accumulator."""
    rng = np.random.default_rng(1)

    def conv(name, src, cin, cout):
        return n.Conv2d(name, (src,), weight=rng.normal(0, 0.4, (cout, cin, 3, 3)).astype(np.float32),
                        bias=rng.normal(0.1, 0.05, cout).astype(np.float32), padding=(1, 1))

    return Graph(
        nodes=(
            n.Input("image", (), shape=(2, 5, 5)),
            conv("c1", "image", 2, 4),
            n.Neuron("n1", ("c1",), vth=0.5, reset_amount=1.0),
            conv("c2", "n1", 4, 4),
            n.Neuron("n2", ("c2",), vth=0.5, reset_amount=1.0),
            conv("c3", "n2", 4, 4),
            n.Neuron("n3", ("c3", "n1"), vth=0.5, reset_amount=1.0),
            n.Linear("fc", ("n3",), weight=rng.normal(0, 0.3, (3, 100)).astype(np.float32), bias=None),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=timesteps,
        name="residual",
    )


def _quantized(timesteps, target):
    probe = np.random.default_rng(2).random((3, 2, 5, 5)).astype(np.float32)
    ctx = PassContext(target=load_target(target), probe=probe, quantization=QuantizationOptions())
    return QuantizeFixedPoint.run(residual_graph(timesteps), ctx), ctx


@pytest.mark.parametrize("target, timesteps, interval", [("loihi2-sim", 3, 3), ("loihi2", 3, 4), ("loihi2", 4, 4)])
def test_depths_delays_offsets_and_interval(target, timesteps, interval):
    fixed, ctx = _quantized(timesteps, target)
    scheduled = ScheduleTimesteps.run(fixed, ctx)
    s = scheduled.schedule
    assert s.depth == {"n1": 1, "n2": 2, "n3": 3, "out": 4} and s.latency == 4
    assert s.reset_interval == interval
    assert s.reset_offset == {name: (d + 1) % interval for name, d in s.depth.items()}
    delays = {x.name: x.delay for x in scheduled.of_type(n.FixedPointSynapse)}
    # The shortcut skips one connection of the main path: delay 1 realigns it.
    assert delays == {"c1": 0, "c2": 0, "c3": 0, "n3.shortcut": 1, "fc": 0}
    result = ScheduleTimesteps.check(fixed, scheduled, ctx)
    assert result.ok and result.kind == "bit-exact", result.summary


def test_contract_catches_a_misaligned_shortcut():
    fixed, ctx = _quantized(3, "loihi2-sim")
    scheduled = ScheduleTimesteps.run(fixed, ctx)
    broken = scheduled.replace_nodes(
        [dataclasses.replace(x, delay=0) if x.name == "n3.shortcut" else x for x in scheduled]
    )
    result = ScheduleTimesteps.check(fixed, broken, ctx)
    assert not result.ok and result.first_divergence["layer"] == "n3"


def test_delay_beyond_the_target_limit_is_refused():
    fixed, ctx = _quantized(3, "loihi2")
    timing = dataclasses.replace(ctx.target.timing, max_synaptic_delay=0)
    strict = dataclasses.replace(ctx, target=dataclasses.replace(ctx.target, timing=timing))
    with pytest.raises(PassError, match="'n3.shortcut' needs a delay of 1 steps.*at most 0"):
        ScheduleTimesteps.run(fixed, strict)


def test_refuses_a_float_graph():
    _, ctx = _quantized(3, "loihi2-sim")
    with pytest.raises(PassError, match="run QuantizeFixedPoint first"):
        ScheduleTimesteps.run(residual_graph(3), ctx)
