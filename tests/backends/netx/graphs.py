"""Small scheduled fixed-point graphs for the NetX tests, built from float graphs by the real passes."""

from __future__ import annotations

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.passes.base import PassContext, QuantizationOptions
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.targets import load_target


def compile_graph(float_graph: Graph, *, grade_scale: float | None = None, target: str = "loihi2-sim") -> Graph:
    """QuantizeFixedPoint then ScheduleTimesteps (contracts are tested with the passes)."""
    steps = (float_graph.timesteps,) if float_graph.input.encoding == "sequence" else ()
    ctx = PassContext(
        target=load_target(target),
        # A silent probe (the probe guard sees only what the biases drive): shaped as the input takes it.
        probe=np.zeros((1, *steps, *float_graph.input.shape), np.float32),
        quantization=QuantizationOptions(input_grade_scale=grade_scale),
    )
    scheduled = ScheduleTimesteps.run(QuantizeFixedPoint.run(float_graph, ctx), ctx)
    validate(scheduled)
    return scheduled


def _f32(rng, *shape, scale=0.5, mean=0.0):
    return rng.normal(mean, scale, shape).astype(np.float32)


def conv_lif_graph(timesteps: int = 3, readout: str = "mean_membrane") -> Graph:
    """Non-square graded input, strided grouped conv -> hard-reset LIF, conv -> IF, dense LIF, a leaky readout."""
    rng = np.random.default_rng(11)
    return Graph(
        nodes=(
            n.Input("image", (), shape=(2, 5, 7)),
            n.Conv2d("c1", ("image",), weight=_f32(rng, 4, 1, 3, 3), bias=_f32(rng, 4, scale=0.05, mean=0.05),
                     stride=(1, 2), padding=(1, 1), groups=2),  # fmt: skip  (4, 5, 4)
            n.Neuron("lif1", ("c1",), vth=0.5, tau=0.75, reset="zero"),
            n.Conv2d("c2", ("lif1",), weight=_f32(rng, 6, 4, 3, 3, scale=0.6), bias=None, padding=(1, 0)),  # (6, 5, 2)
            n.Neuron("if2", ("c2",), vth=0.5, reset="zero"),
            n.Linear("fc1", ("if2",), weight=_f32(rng, 8, 60, scale=0.4), bias=_f32(rng, 8, scale=0.05, mean=0.1)),
            n.Neuron("lif3", ("fc1",), vth=0.5, tau=0.5, reset="zero"),
            n.Linear("fc2", ("lif3",), weight=_f32(rng, 3, 8, scale=0.8), bias=_f32(rng, 3, scale=0.1)),
            n.Accumulator("out", ("fc2",), readout=readout, tau=0.875 if readout == "mean_membrane" else 1.0),
        ),
        timesteps=timesteps,
        name="conv_lif",
    )


def mlp_graph(timesteps: int = 4, readout: str = "spike_count") -> Graph:
    """A (1, 3, 4) input read by a dense layer first (NetX: flatten, then dense), IF then LIF, a spike-count readout."""
    rng = np.random.default_rng(7)
    nodes = [
        n.Input("image", (), shape=(1, 3, 4)),
        n.Linear("fc1", ("image",), weight=_f32(rng, 10, 12, scale=0.8), bias=_f32(rng, 10, scale=0.1, mean=0.1)),
        n.Neuron("if1", ("fc1",), vth=0.5, reset="zero"),
        n.Linear("fc2", ("if1",), weight=_f32(rng, 6, 10, scale=0.8), bias=None),
        n.Neuron("lif2", ("fc2",), vth=0.5, tau=0.8, reset="zero"),
    ]
    if readout == "spike_count":
        nodes.append(n.Accumulator("out", ("lif2",), readout="spike_count"))
    else:
        nodes += [n.Linear("fc3", ("lif2",), weight=_f32(rng, 4, 6), bias=None), n.Accumulator("out", ("fc3",))]
    return Graph(nodes=tuple(nodes), timesteps=timesteps, name="mlp")


def residual_graph() -> Graph:
    """A conv chain with an identity shortcut: two synapses into one layer."""
    rng = np.random.default_rng(3)
    return Graph(
        nodes=(
            n.Input("image", (), shape=(1, 4, 4)),
            n.Conv2d("c1", ("image",), weight=_f32(rng, 2, 1, 3, 3), bias=None, padding=(1, 1)),
            n.Neuron("n1", ("c1",), vth=0.5, reset="zero"),
            n.Conv2d("c2", ("n1",), weight=_f32(rng, 2, 2, 3, 3), bias=None, padding=(1, 1)),
            n.Neuron("n2", ("c2", "n1"), vth=0.5, reset="zero"),
            n.Linear("fc", ("n2",), weight=_f32(rng, 3, 32), bias=None),
            n.Accumulator("out", ("fc",)),
        ),
        timesteps=2,
        name="residual",
    )


def random_images(graph: Graph, count: int, seed: int = 0, binary: bool = False) -> np.ndarray:
    """Pixels in [0, 1] (or {0, 1}) shaped for the graph's input."""
    rng = np.random.default_rng(seed)
    shape = (count, *graph.input.shape)
    if binary:
        return (rng.random(shape) < 0.4).astype(np.float32)
    return rng.random(shape).astype(np.float32)
