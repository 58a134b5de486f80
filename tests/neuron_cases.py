"""Hand-built IR graphs for every framework neuron, and numpy transcriptions of the frameworks' updates.

Used by the float-IR, pass, simulator, ONNX and Lava tests. No framework is
imported: each transcription restates, line by line in float32 numpy, the
forward pass read in the framework's source (DESIGN.md section 6):

* SpikingJelly 2.0.0 ``_ops/if_/cpu.py``, ``_ops/lif/cpu.py``, ``_ops/plif/cpu.py``;
* snnTorch 1.0.0 ``_neurons/leaky.py`` (``reset_delay=True``) with the
  surrogate's forward ``(mem - threshold) > 0``;
* InfLoR: the project's own :mod:`inflor_deploy.nn.neurons` modules.

The graphs keep every current exact in float32 (dyadic weights and
inputs: every partial sum is a float32 number, in any summation order), so
the only float32 rounding left is the neuron's own, and a transcription can
be compared with ``run_float`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n

f32 = np.float32
IN, HIDDEN, OUT = 16, 24, 5


def dyadic(rng: np.random.Generator, shape, low: float, high: float, denominator: int = 64) -> np.ndarray:
    """Uniform values in [low, high] that are multiples of 1/denominator (exact float32 sums)."""
    return (np.round(rng.uniform(low, high, shape) * denominator) / denominator).astype(np.float32)


def images(count: int = 12, seed: int = 1) -> np.ndarray:
    """Inputs in [0, 1], multiples of 1/256."""
    return dyadic(np.random.default_rng(seed), (count, IN), 0.0, 1.0, 256)


def variant_graph(neuron: dict, *, readout: str = "mean_current", readout_tau: float = 1.0, timesteps: int = 8,
                  first: bool = False, seed: int = 0) -> Graph:  # fmt: skip
    """Input -> fc1 -> pre (InfLoR SRIF) -> fc2 -> ``n`` (the neuron under test) -> fc3 -> readout.

    ``first=True`` puts ``n`` right after fc1 (analog input current, constant
    over time). A spike-count readout reads ``n``'s spikes directly.
    """
    rng = np.random.default_rng(seed)
    fc1 = n.Linear("fc1", ("image",), weight=dyadic(rng, (HIDDEN, IN), -0.5, 0.6), bias=dyadic(rng, HIDDEN, -0.2, 0.3))
    nodes = [n.Input("image", (), shape=(IN,)), fc1]
    if first:
        nodes.append(n.Neuron("n", ("fc1",), **neuron))
    else:
        nodes += [
            n.Neuron("pre", ("fc1",), vth=0.5, reset_amount=1.0),
            n.Linear("fc2", ("pre",), weight=dyadic(rng, (HIDDEN, HIDDEN), -0.5, 0.5), bias=dyadic(rng, HIDDEN, -0.1, 0.2)),
            n.Neuron("n", ("fc2",), **neuron),
        ]
    if readout == "spike_count":
        nodes.append(n.Accumulator("out", ("n",), readout="spike_count"))
    else:
        nodes += [
            n.Linear("fc3", ("n",), weight=dyadic(rng, (OUT, HIDDEN), -1.0, 1.0), bias=dyadic(rng, OUT, -0.5, 0.5)),
            n.Accumulator("out", ("fc3",), readout=readout, tau=readout_tau),
        ]
    return Graph(tuple(nodes), timesteps=timesteps, name="variant")


def current_into(graph: Graph, spikes: dict[str, np.ndarray], images_: np.ndarray, layer: str = "n") -> np.ndarray:
    """The exact float32 input current ``[T, B, N]`` of ``layer`` (its one Linear source), from recorded spikes."""
    (source,) = graph.node(layer).sources
    syn = graph.node(source)
    feeder = syn.sources[0]
    T = graph.timesteps
    x = np.broadcast_to(images_, (T, *images_.shape)) if feeder == graph.input.name else spikes[feeder]
    out = x.astype(np.float64) @ syn.weight.astype(np.float64).T + (0 if syn.bias is None else syn.bias)
    exact = out.astype(np.float32)
    assert np.array_equal(exact.astype(np.float64), out), "currents must be exact in float32 (dyadic values)"
    return exact


# --------------------------------------------------------------------------- transcriptions


def spikingjelly(x: np.ndarray, *, v_threshold: float, v_reset: float | None, tau: float | None = None,
                 decay_input: bool = True, parametric_q: float | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """SpikingJelly 2.0.0 IFNode / LIFNode / ParametricLIFNode forward on currents ``[T, ...]``.

    ``_ops/if_/cpu.py``::

        h = v + current
    ``_ops/lif/cpu.py`` (``/ tau``) and ``_ops/plif/cpu.py`` (``* q``, q = sigmoid(w))::

        h = v + (current - (v - reset_value)) / tau   if decay_input
            v - (v - reset_value) / tau + current     otherwise
    then::

        spike = (h >= threshold)
        v = h - spike * threshold  if reset is None  else  spike * reset + (1 - spike) * h

    The state starts at v_reset (0 for soft reset). Python floats enter
    float32 arithmetic rounded to float32, as torch rounds them.
    Returns (spikes, h) as float32 ``[T, ...]``.
    """
    reset_value = f32(0.0 if v_reset is None else v_reset)
    threshold = f32(v_threshold)
    v = np.full_like(x[0], reset_value)
    spikes, charged = [], []
    for current in x:
        if tau is None and parametric_q is None:
            h = v + current
        elif parametric_q is None:
            k = f32(tau)
            h = v + (current - (v - reset_value)) / k if decay_input else v - (v - reset_value) / k + current
        else:
            q = f32(parametric_q)
            h = v + (current - (v - reset_value)) * q if decay_input else v - (v - reset_value) * q + current
        spike = (h >= threshold).astype(f32)
        v = h - spike * threshold if v_reset is None else spike * f32(v_reset) + (f32(1) - spike) * h
        spikes.append(spike)
        charged.append(h)
    return np.stack(spikes), np.stack(charged)


def snntorch_leaky(x: np.ndarray, *, beta: float, threshold, reset_mechanism: str,
                   graded_spikes_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """snnTorch 1.0.0 ``Leaky`` forward (``reset_delay=True``) on currents ``[T, B, N]``.

    Per call (``_neurons/leaky.py``, ``neurons.py``)::

        self.reset = mem_reset(self.mem)            = heaviside(mem - threshold), from the previous mem
        subtract: mem = beta.clamp(0, 1) * mem + input_ - reset * threshold
        zero:     mem = (1 - reset) * mem;  mem = beta.clamp(0, 1) * mem + input_
        none:     mem = beta.clamp(0, 1) * mem + input_
        spk = heaviside(mem - threshold) * graded_spikes_factor      (heaviside(z) = (z > 0))

    beta and threshold are float32 buffers (threshold may hold one value per
    neuron). Returns (spikes as 0/1 events, mem) as float32 ``[T, B, N]``.
    """
    b = f32(np.clip(beta, 0, 1))
    thr = np.asarray(threshold, dtype=f32)
    mem = np.zeros_like(x[0])
    spikes, mems = [], []
    for input_ in x:
        reset = ((mem - thr) > 0).astype(f32)
        if reset_mechanism == "subtract":
            mem = (b * mem + input_) - reset * thr
        elif reset_mechanism == "zero":
            mem = (f32(1) - reset) * mem
            mem = b * mem + input_
        else:
            mem = b * mem + input_
        spk = ((mem - thr) > 0).astype(f32) * f32(graded_spikes_factor)
        spikes.append((spk != 0).astype(f32))
        mems.append(mem)
    return np.stack(spikes), np.stack(mems)


def inflor(x: np.ndarray, module: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The project's own neuron module (the InfLoR framework) on currents ``[T, B, N]``: spikes and H."""
    module.record_membrane = True
    with torch.no_grad():
        spikes = module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return spikes, module.last_membrane.numpy()


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One framework neuron: its IR fields, its transcription, and a wrong twin that must differ.

    Attributes:
        name: Test id.
        neuron: ``n.Neuron`` keyword arguments.
        reference: currents ``[T, B, N]`` -> (spikes, membranes H) of the framework.
        twin: Field overrides giving a plausible but wrong neuron (the test data
            must tell them apart, or it would not test the distinction).
    """

    name: str
    neuron: dict
    reference: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    twin: dict = field(default_factory=dict)


BETA = float(f32(0.9))  # snnTorch's beta buffer: 0.899999976
PER_CHANNEL_VTH = dyadic(np.random.default_rng(7), HIDDEN, 0.4, 1.2, 16).astype(np.float64)
Q = float(f32(1 / (1 + np.exp(-0.3))))  # ParametricLIFNode: sigmoid(w) for w = 0.3, frozen, float32


def _sj(**kw):
    return lambda x: spikingjelly(x, **kw)


def _snn(**kw):
    return lambda x: snntorch_leaky(x, **kw)


def _inflor(factory):
    return lambda x: inflor(x, factory())


def _cases() -> list[Case]:
    from inflor_deploy.nn.neurons import SRIF, IFNeuron, LIFNeuron

    df = n.decay_fields
    snn = dict(tau=BETA, compare=">", reset_timing="next_step")
    return [
        # SpikingJelly IFNode
        Case("sj_if_soft", dict(vth=0.75, reset="subtract", reset_amount=0.75),
             _sj(v_threshold=0.75, v_reset=None), twin=dict(reset_amount=1.0)),
        Case("sj_if_hard_zero", dict(vth=0.75, reset="zero"), _sj(v_threshold=0.75, v_reset=0.0),
             twin=dict(reset="subtract", reset_amount=0.75)),
        Case("sj_if_hard_v_reset", dict(vth=1.0, reset="zero", v_reset=0.5), _sj(v_threshold=1.0, v_reset=0.5),
             twin=dict(v_reset=0.0)),
        Case("sj_if_hard_negative_v_reset", dict(vth=0.3, reset="zero", v_reset=-0.4),
             _sj(v_threshold=0.3, v_reset=-0.4), twin=dict(v_reset=0.0)),
        # SpikingJelly LIFNode (tau is a Python float; 2.7 is not a float32 number)
        Case("sj_lif_decay_input_soft", dict(vth=0.3, reset="subtract", reset_amount=0.3, **df("decay_divide_input", 2.7)),
             _sj(v_threshold=0.3, v_reset=None, tau=2.7), twin=df("decay_divide", 2.7)),
        Case("sj_lif_decay_input_hard_v_reset",
             dict(vth=0.6, reset="zero", v_reset=0.2, **df("decay_divide_input", 2.0)),
             _sj(v_threshold=0.6, v_reset=0.2, tau=2.0), twin=dict(v_reset=0.0)),
        Case("sj_lif_no_decay_input_soft", dict(vth=0.8, reset="subtract", reset_amount=0.8, **df("decay_divide", 3.0)),
             _sj(v_threshold=0.8, v_reset=None, tau=3.0, decay_input=False), twin=df("decay_divide_input", 3.0)),
        Case("sj_lif_no_decay_input_hard", dict(vth=0.8, reset="zero", v_reset=0.1, **df("decay_divide", 1.7)),
             _sj(v_threshold=0.8, v_reset=0.1, tau=1.7, decay_input=False), twin=dict(reset="subtract", reset_amount=0.8)),
        # SpikingJelly ParametricLIFNode (learned w frozen)
        Case("sj_plif_decay_input", dict(vth=0.35, reset="subtract", reset_amount=0.35, **df("decay_multiply_input", Q)),
             _sj(v_threshold=0.35, v_reset=None, parametric_q=Q), twin=df("decay_multiply", Q)),
        Case("sj_plif_no_decay_input_hard", dict(vth=0.9, reset="zero", v_reset=0.25, **df("decay_multiply", Q)),
             _sj(v_threshold=0.9, v_reset=0.25, parametric_q=Q, decay_input=False), twin=dict(v_reset=0.0)),
        # snnTorch Leaky, reset applied one step late
        Case("snn_leaky_subtract", dict(vth=0.8, reset="subtract", reset_amount=0.8, **snn),
             _snn(beta=BETA, threshold=f32(0.8), reset_mechanism="subtract"), twin=dict(reset_timing="same_step")),
        # (a zero reset is the same one step late or not: (1 - R) * U is taken before the leak either way)
        Case("snn_leaky_zero", dict(vth=0.8, reset="zero", **snn),
             _snn(beta=BETA, threshold=f32(0.8), reset_mechanism="zero"), twin=dict(reset="subtract", reset_amount=0.8)),
        Case("snn_leaky_none", dict(vth=0.8, reset="none", **snn),
             _snn(beta=BETA, threshold=f32(0.8), reset_mechanism="none"), twin=dict(reset="zero")),
        Case("snn_leaky_subtract_per_channel",
             dict(vth=PER_CHANNEL_VTH, reset="subtract", reset_amount=PER_CHANNEL_VTH, **snn),
             _snn(beta=BETA, threshold=PER_CHANNEL_VTH.astype(f32), reset_mechanism="subtract"),
             twin=dict(vth=0.8, reset_amount=0.8)),
        Case("snn_leaky_zero_per_channel_graded", dict(vth=PER_CHANNEL_VTH, reset="zero", spike_value=2.0, **snn),
             _snn(beta=BETA, threshold=PER_CHANNEL_VTH.astype(f32), reset_mechanism="zero", graded_spikes_factor=2.0),
             twin=dict(vth=float(PER_CHANNEL_VTH.mean()))),
        # InfLoR (the project's own modules)
        Case("inflor_srif", dict(vth=0.5, reset="subtract"), _inflor(lambda: SRIF(vth=0.5, mpr=False)),
             twin=dict(reset_amount=0.5)),
        Case("inflor_srif_mpr", dict(vth=0.3, reset="subtract", mpr=True), _inflor(lambda: SRIF(vth=0.3, mpr=True)),
             twin=dict(mpr=False)),
        Case("inflor_if", dict(vth=0.5, reset="zero"), _inflor(lambda: IFNeuron(vth=0.5)),
             twin=dict(reset="subtract")),
        Case("inflor_lif", dict(vth=0.5, tau=0.75, reset="zero"), _inflor(lambda: LIFNeuron(vth=0.5, tau=0.75)),
             twin=dict(tau=1.0)),
    ]  # fmt: skip


CASES = _cases()
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------- compiled graphs


def conv_per_channel_graph(readout: str = "mean_current", timesteps: int = 4) -> Graph:
    """Conv layers with per-channel thresholds: a hard reset (SpikingJelly-like, '>=') and snnTorch's
    delayed subtract with per-channel amounts ('>'), then a reset-free layer, a shared-threshold hard
    reset (stock Lava LIFReset) and the readout."""
    rng = np.random.default_rng(11)
    vth1 = np.array([0.5, 0.75, 1.0, 0.625])
    vth2 = np.array([0.4, 0.9, 0.6, 0.7, 0.5, 0.8])
    nodes = [
        n.Input("image", (), shape=(2, 5, 5)),
        n.Conv2d("c1", ("image",), weight=dyadic(rng, (4, 2, 3, 3), -0.3, 0.6), bias=dyadic(rng, 4, -0.1, 0.1),
                 padding=(1, 1)),
        n.Neuron("hard_pc", ("c1",), vth=vth1, reset="zero"),
        n.Conv2d("c2", ("hard_pc",), weight=dyadic(rng, (6, 4, 3, 3), -0.3, 0.5), stride=(2, 2), padding=(1, 1)),
        n.Neuron("snn_pc", ("c2",), vth=vth2, tau=BETA, compare=">", reset="subtract", reset_amount=vth2,
                 reset_timing="next_step"),
        n.Linear("fc1", ("snn_pc",), weight=dyadic(rng, (10, 54), -0.3, 0.4)),
        n.Neuron("none", ("fc1",), vth=0.7, tau=0.75, compare=">", reset="none", reset_timing="next_step"),
        n.Linear("fc2", ("none",), weight=dyadic(rng, (8, 10), -0.4, 0.6)),
        n.Neuron("hard", ("fc2",), vth=0.5, reset="zero"),
    ]  # fmt: skip
    if readout == "spike_count":
        nodes.append(n.Accumulator("out", ("hard",), readout="spike_count"))
    else:
        nodes += [
            n.Linear("fc3", ("hard",), weight=dyadic(rng, (3, 8), -1, 1), bias=dyadic(rng, 3, -0.3, 0.3)),
            n.Accumulator("out", ("fc3",), readout=readout, tau=0.875 if readout == "mean_membrane" else 1.0),
        ]
    return Graph(tuple(nodes), timesteps=timesteps, name="conv_per_channel")


def conv_images(count: int = 6, seed: int = 3) -> np.ndarray:
    return dyadic(np.random.default_rng(seed), (count, 2, 5, 5), 0.0, 1.0, 256)


def compile_graph(graph: Graph, probe: np.ndarray, target: str = "loihi2-sim"):
    """The full compile pipeline with every contract checked: ``(PipelineResult, float graph before quantization)``."""
    from inflor_deploy.passes.base import PassContext
    from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, run_pipeline
    from inflor_deploy.targets import load_target

    steps = []
    ctx = PassContext(target=load_target(target), probe=probe)
    result = run_pipeline(graph, COMPILE_PIPELINE, ctx, on_step=lambda name, g: steps.append((name, g)))
    float_graph = dict(steps)["FoldInputGain"]
    return result, float_graph


def declared_neuron_graph(encoding: str = "sequence", timesteps: int = 4) -> Graph:
    """Both halves of the IR at once: a declared signed input (direct or sequence) normalized per channel
    into a zero-padded conv (bias map after the fold), snnTorch's delayed subtract with per-channel
    thresholds, a SpikingJelly-like hard reset to v_reset = 0.25 with input gain 0.5, and a leaky
    mean-membrane readout."""
    rng = np.random.default_rng(21)
    vth = np.array([0.5, 0.375, 0.625])
    nodes = [
        n.Input("image", (), shape=(2, 4, 4), encoding=encoding, value_range=(-1.0, 1.0), pixel_levels=None),
        n.Normalize("norm", ("image",), mean=np.array([0.25, -0.125], f32), std=np.array([0.5, 0.75], f32)),
        n.Conv2d("c1", ("norm",), weight=dyadic(rng, (3, 2, 3, 3), -0.3, 0.5), bias=dyadic(rng, 3, -0.1, 0.1),
                 padding=(1, 1)),
        n.Neuron("snn_pc", ("c1",), vth=vth, tau=0.875, compare=">", reset="subtract", reset_amount=vth,
                 reset_timing="next_step"),
        n.Linear("fc1", ("snn_pc",), weight=dyadic(rng, (10, 48), -0.3, 0.5), bias=dyadic(rng, 10, -0.1, 0.2)),
        n.Neuron("sj_hard", ("fc1",), vth=0.75, reset="zero", v_reset=0.25, gain=0.5),
        n.Linear("fc2", ("sj_hard",), weight=dyadic(rng, (3, 10), -1, 1), bias=dyadic(rng, 3, -0.3, 0.3)),
        n.Accumulator("out", ("fc2",), readout="mean_membrane", tau=0.875),
    ]  # fmt: skip
    return Graph(tuple(nodes), timesteps=timesteps, name="declared_neurons")


def declared_inputs(graph: Graph, count: int = 6, seed: int = 5) -> np.ndarray:
    """Inputs inside the graph's declared range: ``[B, C, H, W]``, or ``[B, T, C, H, W]`` for a sequence."""
    lead = (count, graph.timesteps) if graph.input.encoding == "sequence" else (count,)
    low, high = graph.input.value_range
    return dyadic(np.random.default_rng(seed), (*lead, *graph.input.shape), low, high, 64)
