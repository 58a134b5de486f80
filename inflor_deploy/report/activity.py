"""Activity and operation counts (energy tier 1), from spike trains a simulator produced.

Everything here is counted, never estimated: the input is the per-layer
spike trains ``[T, B, ...]`` (or their per-neuron sums over a batch,
``[T, ...]``) of a real run, plus the input images, so the module does not
depend on which simulator produced them (:mod:`inflor_deploy.backends.sim.int_reference`
or the fast fixed-point simulator give the same trains, bit for bit).

Conventions (they differ between tools; HARDWARE_FACTS.md):

* **Synaptic operations, primary = exact per-event fan-out.** One source
  spike costs one synop per target neuron it reaches, zero weights
  included (sinabs ``SNNAnalyzer``'s convention); a pruned (``sparse``)
  synapse reaches only through its kept connections, so its fan-out is the
  non-zero count below. For a dense synapse that
  is ``out_features``. For a conv synapse a spike at ``(c, y, x)`` reaches
  the output positions whose receptive field contains ``(y, x)``, exactly
  at borders, with padding and stride, times ``out_channels / groups``::

      fanout(y, x) = (O / G) * Fy[y] * Fx[x]
      Fy[y] = #{ i in [0, OH) : 0 <= y + ph - sh * i < kh }     (Fx likewise)

* **NeuroBench-style count** (beside it): only connections whose weight is
  non-zero (spikes are binary, so "non-zero input x non-zero weight").
* **lava-dl ``compare_ops`` formula** (beside it): ``events * C_out/G * kh*kw / (sh*sw)``
  for conv, ``events * out_features`` for dense — border effects ignored.

The first synapse (fed by the analog :class:`~inflor_deploy.ir.nodes.Input`,
direct encoding) is not counted as synops: its input is a graded value, so
it is counted as multiply-accumulates, per sample
``MACs = OH * OW * O * (C/G) * kh * kw`` (dense ``in * out``), both ``x T``
(the frame is re-applied at every step: how it runs) and ``x 1``. Its graded
messages (input values sent per step) and the synops they would cost on
Loihi (non-zero graded values x exact fan-out) are reported separately.

A sequence Input (event data, a new frame at every step) is not analog:
its non-zero values are events, counted like spikes: events x exact fan-out
synops, in the synop totals, no MACs; ``from_input`` (analog input counted
as MACs) is then False for its synapses, and the first-layer figures count
its events per step.

Steps per inference: on the chip a sample occupies its layer's window of
R steps (the reset interval, R >= T; a power of two on hardware, so T = 5
runs in windows of 8). Steps T..R-1 are *padding*: zero input, but the
neurons still update, and a membrane left above threshold still fires and
its spikes still cost synops. They are counted: spike trains are
``[R, B, ...]`` (the pipelined view's windows), ``spikes_per_step`` has R
entries, and ``padding_spikes`` says how many fell in the padding.

Neuron updates: every neuron (and the never-firing accumulator) updates
once per step: ``neurons x R x samples``.

Raster: sample 0's trains of a few layers. A layer of at most
:data:`RASTER_MAX_ROWS` neurons shows one row per neuron; a larger conv
layer one row per channel, a larger dense layer one row per group of
consecutive neurons; each aggregated row holds the spikes of its neurons per
step, and the raster says which (``mode``, ``group_size``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.backends.sim.int_reference import quantize_input

CONVENTIONS = {
    "synops_primary": "exact per-event fan-out: each source spike counts one synaptic operation per "
    "target neuron it reaches, zero weights included (sinabs SNNAnalyzer convention); conv fan-out is "
    "exact at borders with padding and stride",
    "synops_nonzero": "NeuroBench SynapticOperations convention: only connections with a non-zero weight "
    "(spikes are binary, so non-zero input x non-zero weight)",
    "synops_lava_formula": "lava-dl compare_ops formula: conv events_in * C_out/groups * kh*kw / (sh*sw), "
    "dense events_in * out_features (border effects ignored)",
    "sequence_input": "event (sequence) input: each non-zero input value of a step is an event; its synapses "
    "count events x exact fan-out as synops, like spikes, and no MACs",
    "first_layer": "the synapse fed by the analog input (direct encoding) is counted as MACs, per sample "
    "out_positions * C_out * (C_in/groups) * kh * kw (dense in*out), x T (the frame is re-applied every "
    "step, as it runs) and x 1; it is excluded from the synop totals",
    "graded_messages": "input values sent per step (graded spikes of the input layer); non-zero values "
    "are the events that cost synaptic operations on Loihi",
    "neuron_updates": "neurons x steps per inference x samples, for every neuron layer and the accumulator",
    "active_update": "a neuron update that produced a spike (used by energy tier 3)",
    "view": "each sample's window as the chip runs it: R = reset interval >= T steps; steps T..R-1 are padding "
    "(zero input; the interval is a power of two on hardware) and their spikes, synops and neuron updates are "
    "counted, because the chip executes them. The pipeline's fill and drain (latency steps once per run) are "
    "not per inference and not counted. Synaptic delays do not change counts",
    "raster": "sample 0; a layer of more than 128 neurons is aggregated: one row per channel (conv) or per group "
    "of consecutive neurons (dense), holding the spikes of that row's neurons at each step",
}

#: A raster layer with more neurons than this is aggregated (one row per channel or neuron group).
RASTER_MAX_ROWS = 128


class ActivityError(InflorError):
    """Spike trains do not match the graph (missing layer, wrong shape)."""


# --------------------------------------------------------------------------- fan-out


def _axis_fanout(size_in: int, size_out: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """``F[y] = #{i in [0, size_out): 0 <= y + pad - stride * i < kernel}`` for every input index y."""
    offset = np.arange(size_in)[:, None] + pad - stride * np.arange(size_out)[None, :]
    return ((offset >= 0) & (offset < kernel)).sum(axis=1).astype(np.int64)


def _conv_out_hw(syn: n.FixedPointSynapse, in_shape: tuple[int, ...]) -> tuple[int, int]:
    _, h, w = in_shape
    _, _, kh, kw = syn.weight.shape
    (sh, sw), (ph, pw) = syn.stride, syn.padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def fanout_exact(syn: n.FixedPointSynapse, in_shape: tuple[int, ...]) -> np.ndarray:
    """Target neurons each source position reaches, zero weights included; shaped like the source.

    Dense: ``out_features`` everywhere. Conv: ``(O / G) * Fy[y] * Fx[x]``
    (module docstring), the same for every input channel. A ``sparse``
    (pruned) synapse has only its kept connections: its fan-out is
    :func:`fanout_nonzero`.
    """
    if syn.sparse:
        return fanout_nonzero(syn, in_shape)
    if syn.kind == "dense":
        return np.full(in_shape, syn.weight.shape[0], dtype=np.int64)
    out_c, _, kh, kw = syn.weight.shape
    oh, ow = _conv_out_hw(syn, in_shape)
    fy = _axis_fanout(in_shape[1], oh, kh, syn.stride[0], syn.padding[0])
    fx = _axis_fanout(in_shape[2], ow, kw, syn.stride[1], syn.padding[1])
    per_channel = (out_c // syn.groups) * np.outer(fy, fx)
    return np.broadcast_to(per_channel, in_shape).astype(np.int64)


def fanout_nonzero(syn: n.FixedPointSynapse, in_shape: tuple[int, ...]) -> np.ndarray:
    """Target neurons each source position reaches through a non-zero weight (NeuroBench count).

    Conv: source ``(c, y, x)`` meets kernel tap ``(a, b)`` of output ``(i, j)``
    when ``y = sh*i + a - ph`` and ``x = sw*j + b - pw``; each tap adds the
    number of output channels of c's group whose weight there is non-zero.
    """
    weight = np.asarray(syn.weight)
    if syn.kind == "dense":
        return np.count_nonzero(weight, axis=0).astype(np.int64).reshape(in_shape)
    out_c, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw), groups = syn.stride, syn.padding, syn.groups
    _, h, w = in_shape
    oh, ow = _conv_out_hw(syn, in_shape)
    per_group = out_c // groups
    result = np.zeros(in_shape, dtype=np.int64)
    nonzero = weight != 0
    for g in range(groups):
        taps = nonzero[g * per_group:(g + 1) * per_group].sum(axis=0)  # [cg, kh, kw]
        block = result[g * cg:(g + 1) * cg]
        for a in range(kh):
            ys = sh * np.arange(oh) + a - ph
            ys = ys[(ys >= 0) & (ys < h)]
            for b in range(kw):
                xs = sw * np.arange(ow) + b - pw
                xs = xs[(xs >= 0) & (xs < w)]
                # For a fixed tap the positions ys (xs) are distinct, so += adds once each.
                block[:, ys[:, None], xs[None, :]] += taps[:, a, b][:, None, None]
    return result


def lava_formula_fanout(syn: n.FixedPointSynapse) -> float:
    """Synops per event by lava-dl's ``compare_ops``: ``C_out/G * kh*kw / (sh*sw)``; dense ``out``."""
    if syn.kind == "dense":
        return float(syn.weight.shape[0])
    out_c, _, kh, kw = syn.weight.shape
    return (out_c / syn.groups) * kh * kw / (syn.stride[0] * syn.stride[1])


def macs_per_sample(syn: n.FixedPointSynapse, in_shape: tuple[int, ...]) -> int:
    """Dense-equivalent MACs of one application: conv ``OH*OW*O*(C/G)*kh*kw``, dense ``in*out``."""
    if syn.kind == "dense":
        return int(syn.weight.shape[0] * syn.weight.shape[1])
    out_c, cg, kh, kw = syn.weight.shape
    oh, ow = _conv_out_hw(syn, in_shape)
    return int(oh * ow * out_c * cg * kh * kw)


def is_identity_like(syn: n.FixedPointSynapse) -> bool:
    """True for an identity shortcut compiled as a 1x1 conv / square dense with a diagonal weight."""
    w = np.asarray(syn.weight)
    if syn.kind == "conv":
        if w.shape[2:] != (1, 1) or syn.groups != 1 or w.shape[0] != w.shape[1] or syn.stride != (1, 1):
            return False
        w = w[:, :, 0, 0]
    elif w.shape[0] != w.shape[1]:
        return False
    return bool(np.count_nonzero(w - np.diag(np.diag(w))) == 0)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerActivity:
    """Spikes and updates of one neuron layer (or the accumulator) over the whole run.

    Attributes:
        name: The layer.
        kind: ``"neuron"`` or ``"accumulator"`` (never fires: spike fields are None).
        shape: Per-sample shape.
        neurons: Neurons per sample.
        spikes: Total spikes over all samples and steps (padding steps included).
        spikes_per_step: ``[R]`` spikes at each step of the window, summed over samples.
        rate_per_step: ``[R]`` fraction of neurons firing at each step (in [0, 1]).
        spikes_per_neuron_per_step: Mean spikes per neuron per step (= mean firing rate).
        padding_spikes: Of ``spikes``, those at the padding steps T..R-1.
        neuron_updates: ``neurons x R x samples``.
        active_updates: Updates that produced a spike.
        synops: Synaptic ops of the binary-spike synapses into this layer (primary convention).
        synops_nonzero: Same, NeuroBench count.
        synops_lava_formula: Same, lava-dl formula.
        first_layer_macs: MACs per sample (x 1) of input-fed synapses into this layer.
        readout: The accumulator's readout (``"mean_current"``, ``"mean_membrane"``,
            ``"spike_count"``); None for a neuron layer.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    neurons: int
    spikes: int | None
    spikes_per_step: list[int] | None
    rate_per_step: list[float] | None
    spikes_per_neuron_per_step: float | None
    neuron_updates: int
    active_updates: int
    synops: int
    synops_nonzero: int
    synops_lava_formula: float
    first_layer_macs: int
    padding_spikes: int | None = None
    readout: str | None = None


@dataclass(frozen=True)
class SynapseActivity:
    """Events through one synapse and the operations they cost, over the whole run.

    Attributes:
        name, source, target: The synapse, the node feeding it, the layer it feeds.
        kind: ``"dense"`` or ``"conv"``.
        from_input: Fed by the analog input (first layer: MACs, graded events).
        identity_like: An identity shortcut compiled as a 1x1 conv / diagonal dense;
            the primary count still charges its full structural fan-out.
        events: Source events (spikes, or non-zero graded input values) over all samples and steps.
        synops: Events x exact fan-out (primary; for the input synapse: graded synops).
        synops_per_step: ``[R]`` of the same, summed over samples.
        synops_nonzero: Events x non-zero-weight fan-out (NeuroBench).
        synops_lava_formula: Events x lava-dl formula fan-out.
        mean_fanout: Mean exact fan-out per event (synops / events; 0 without events).
        macs_per_sample: Dense-equivalent MACs of one application (the ANN's cost of this synapse).
        weights: Weight count; weights_nonzero: of which non-zero.
    """

    name: str
    source: str
    target: str
    kind: str
    from_input: bool
    identity_like: bool
    events: int
    synops: int
    synops_per_step: list[int]
    synops_nonzero: int
    synops_lava_formula: float
    mean_fanout: float
    macs_per_sample: int
    weights: int
    weights_nonzero: int


@dataclass(frozen=True)
class FirstLayer:
    """The direct-encoding layer: analog input counted as MACs and graded messages, per sample.

    Attributes:
        synapses: Names of the input-fed synapses.
        macs_per_sample: MACs of one frame (x 1).
        macs_per_sample_x_T: ``macs_per_sample * T`` (the frame is re-applied each step: as run).
        graded_values_per_step: Input values sent per step (the frame's size).
        graded_nonzero_per_step: Mean non-zero input values per step (events on Loihi).
        graded_messages_per_sample: ``graded_values_per_step * T``.
        graded_nonzero_messages_per_sample: Non-zero values x T.
        graded_synops_per_sample: Non-zero values x exact fan-out x T (what Loihi would execute).
    """

    synapses: list[str]
    macs_per_sample: int
    macs_per_sample_x_T: int
    graded_values_per_step: int
    graded_nonzero_per_step: float
    graded_messages_per_sample: int
    graded_nonzero_messages_per_sample: float
    graded_synops_per_sample: float


@dataclass(frozen=True)
class Raster:
    """Spike trains of one sample for one layer (for the raster plot), aggregated when large.

    Attributes:
        layer: The layer.
        neurons: Its neurons per sample.
        mode: ``"neurons"`` (one row per neuron), ``"channels"`` (one row per
            channel of a conv layer) or ``"groups"`` (one row per
            ``group_size`` consecutive neurons, C-major).
        group_size: Neurons per row (1 for ``"neurons"``; the last group may be smaller).
        counts: ``[rows][R]``: spikes of the row's neurons at each step of the window.
    """

    layer: str
    neurons: int
    mode: str
    group_size: int
    counts: list[list[int]]


@dataclass(frozen=True)
class Activity:
    """Tier 1: counts of one run over a dataset (see the module docstring for conventions).

    Totals are over all samples; ``per_sample`` figures are means. ``steps``
    is R, the steps one inference occupies (>= ``timesteps``, T).
    """

    samples: int
    timesteps: int
    layers: list[LayerActivity]
    synapses: list[SynapseActivity]
    first_layer: FirstLayer
    raster: list[Raster] = field(default_factory=list)
    steps: int | None = None

    @property
    def window(self) -> int:
        """Steps per inference as run (R; T when no longer window was counted)."""
        return self.steps or self.timesteps

    @property
    def spiking_layers(self) -> list[LayerActivity]:
        return [layer for layer in self.layers if layer.kind == "neuron"]

    def totals(self) -> dict[str, Any]:
        """Network-wide totals and per-sample means."""
        spiking = self.spiking_layers
        neurons = sum(layer.neurons for layer in spiking)
        spikes = sum(layer.spikes for layer in spiking)
        padding = sum(layer.padding_spikes or 0 for layer in spiking)
        updates = sum(layer.neuron_updates for layer in self.layers)
        binary = [s for s in self.synapses if not s.from_input]
        synops = sum(s.synops for s in binary)
        synops_nonzero = sum(s.synops_nonzero for s in binary)
        synops_lava = sum(s.synops_lava_formula for s in binary)
        per = max(self.samples, 1)
        return {
            "samples": self.samples,
            "timesteps": self.timesteps,
            "spiking_neurons": neurons,
            "spikes": spikes,
            "spikes_per_sample": spikes / per,
            "spikes_per_neuron_per_step": spikes / max(neurons * self.window * self.samples, 1),
            "steps_per_inference": self.window,
            "padding_steps": self.window - self.timesteps,
            "padding_spikes_per_sample": padding / per,
            "synops": synops,
            "synops_per_sample": synops / per,
            "synops_nonzero": synops_nonzero,
            "synops_nonzero_per_sample": synops_nonzero / per,
            "synops_lava_formula": synops_lava,
            "synops_lava_formula_per_sample": synops_lava / per,
            "neuron_updates": updates,
            "neuron_updates_per_sample": updates / per,
            "active_updates_per_sample": sum(layer.active_updates for layer in self.layers) / per,
            "ann_macs_per_sample": sum(s.macs_per_sample for s in self.synapses),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "conventions": dict(CONVENTIONS),
            "totals": self.totals(),
            "first_layer": _plain(self.first_layer),
            "layers": [_plain(layer) for layer in self.layers],
            "synapses": [_plain(s) for s in self.synapses],
            "raster": [_plain(r) for r in self.raster],
        }


def _plain(obj) -> dict[str, Any]:
    out = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# --------------------------------------------------------------------------- counting


class ActivityCounter:
    """Accumulates spike counts batch by batch, then turns them into :class:`Activity`.

    Feed it either full spike trains (:meth:`add_spikes`, ``[T, B, ...]`` per
    layer, which also keeps sample 0's trains for the raster plot) or their
    per-neuron sums over a batch (:meth:`add_counts`, ``[T, ...]``). Only
    these sums are kept, so memory does not grow with the dataset.

    Args:
        graph: The fixed-point graph the trains come from.
        raster_layers: How many spiking layers the raster keeps (spread from first to last).
        steps: Steps per sample window R (>= T; default T): trains are ``[R, B, ...]``,
            steps T..R-1 being the padding of the reset interval.
    """

    def __init__(self, graph: Graph, raster_layers: int = 4, steps: int | None = None):
        if not graph.is_fixed_point:
            raise ActivityError("activity is counted on the fixed-point graph (after QuantizeFixedPoint)")
        self.graph = graph
        self.shapes = infer_shapes(graph)
        self.T = graph.timesteps
        self.steps = self.T if steps is None else steps
        if self.steps < self.T:
            raise ActivityError(f"a sample window of {self.steps} steps is shorter than T = {self.T}")
        self.layers = graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)
        self.spiking = [node for node in self.layers if isinstance(node, n.FixedPointNeuron)]
        self.counts = {node.name: np.zeros((self.steps, *self.shapes[node.name]), dtype=np.int64)
                       for node in self.spiking}  # fmt: skip
        self.sequence = graph.input.encoding == "sequence"
        # Non-zero input values per step [T, ...] (direct encoding: the same frame at every step).
        self.input_nonzero = np.zeros((self.T, *self.shapes[graph.input.name]), dtype=np.int64)
        self.samples = 0
        self._raster_names = _spread([node.name for node in self.spiking], raster_layers)
        self._raster: list[Raster] = []

    def _add_input(self, images: np.ndarray) -> int:
        graded = quantize_input(self.graph, images)
        expected = self.shapes[self.graph.input.name]
        frames = graded.shape[2:] if self.sequence else graded.shape[1:]
        if frames != expected:
            raise ActivityError(f"images have shape {frames} per frame; the graph's input is {expected}")
        self.input_nonzero += np.count_nonzero(graded, axis=0)  # [T, ...] for a sequence, broadcast otherwise
        return graded.shape[0]

    def add_counts(self, counts: Mapping[str, np.ndarray], images: np.ndarray) -> None:
        """Add one batch given as per-neuron spike counts ``[R, ...]`` summed over the batch.

        Args:
            counts: Layer name -> ``[R, *shape]`` spike counts of the batch (R = ``steps``).
            images: The batch's float input images ``[B, C, H, W]``.
        """
        for node in self.spiking:
            if node.name not in counts:
                raise ActivityError(f"no spike counts for layer {node.name!r}; the simulator must record every neuron layer")
            c = np.asarray(counts[node.name])
            if c.shape != self.counts[node.name].shape:
                raise ActivityError(f"layer {node.name!r}: spike counts have shape {c.shape}, "
                                    f"expected {self.counts[node.name].shape} ([R, *layer shape])")
            self.counts[node.name] += c.astype(np.int64)
        self.samples += self._add_input(images)

    def add_spikes(self, spikes: Mapping[str, np.ndarray], images: np.ndarray) -> None:
        """Add one batch given as spike trains ``[R, B, *shape]`` (0/1) per layer (R = ``steps``)."""
        batch = np.asarray(images).shape[0]
        sums = {}
        for node in self.spiking:
            if node.name not in spikes:
                raise ActivityError(f"no spike train for layer {node.name!r}; the simulator must record every neuron layer")
            s = np.asarray(spikes[node.name])
            if s.shape != (self.steps, batch, *self.shapes[node.name]):
                raise ActivityError(f"layer {node.name!r}: spike train has shape {s.shape}, "
                                    f"expected {(self.steps, batch, *self.shapes[node.name])} ([R, B, *shape])")
            sums[node.name] = s.sum(axis=1, dtype=np.int64)
        if not self._raster and batch:
            self._raster = [self._raster_of(name, np.asarray(spikes[name])[:, 0]) for name in self._raster_names]
        self.add_counts(sums, images)

    def _raster_of(self, name: str, train: np.ndarray) -> Raster:
        """Sample 0's train ``[R, *shape]`` as rows x steps, aggregated beyond RASTER_MAX_ROWS neurons."""
        shape = self.shapes[name]
        flat = train.reshape(self.steps, -1).astype(np.int64)
        neurons = flat.shape[1]
        if neurons <= RASTER_MAX_ROWS:
            mode, group = "neurons", 1
        elif len(shape) == 3 and shape[0] <= RASTER_MAX_ROWS:
            mode, group = "channels", int(shape[1] * shape[2])  # C-major: a channel is a contiguous block
        else:
            mode, group = "groups", -(-neurons // RASTER_MAX_ROWS)
        rows = -(-neurons // group)
        padded = np.zeros((self.steps, rows * group), dtype=np.int64)
        padded[:, :neurons] = flat
        counts = padded.reshape(self.steps, rows, group).sum(axis=2).T
        return Raster(layer=name, neurons=int(neurons), mode=mode, group_size=group, counts=counts.tolist())

    def result(self) -> Activity:
        """The counts so far as :class:`Activity`."""
        if self.samples == 0:
            raise ActivityError("no samples were added")
        synapses = [self._synapse(syn) for syn in self.graph.of_type(n.FixedPointSynapse)]
        by_target: dict[str, list[SynapseActivity]] = {}
        for s in synapses:
            by_target.setdefault(s.target, []).append(s)
        layers = [self._layer(node, by_target.get(node.name, [])) for node in self.layers]
        return Activity(samples=self.samples, timesteps=self.T, layers=layers, synapses=synapses,
                        first_layer=self._first_layer(synapses), raster=list(self._raster), steps=self.steps)

    def _target_of(self, syn: n.FixedPointSynapse) -> str:
        consumers = self.graph.consumers(syn.name)
        return consumers[0].name if consumers else ""

    def _synapse(self, syn: n.FixedPointSynapse) -> SynapseActivity:
        source = syn.sources[0]
        in_shape = self.shapes[source]
        exact = fanout_exact(syn, in_shape)
        nonzero = fanout_nonzero(syn, in_shape)
        reads_input = source == self.graph.input.name
        from_input = reads_input and not self.sequence  # analog input: MACs; events count as synops
        if reads_input:
            # Per-step events are the non-zero graded values at steps t < T (the same frame at every
            # step when direct, frame t of a sequence); the padding steps send zero frames: no events.
            per_step = np.zeros((self.steps, *in_shape), dtype=np.int64)
            per_step[: self.T] = self.input_nonzero
        else:
            per_step = self.counts[source]
        flat = per_step.reshape(self.steps, -1)
        events_per_step = flat.sum(axis=1)
        synops_per_step = flat @ exact.reshape(-1)
        events = int(events_per_step.sum())
        synops = int(synops_per_step.sum())
        return SynapseActivity(
            name=syn.name,
            source=source,
            target=self._target_of(syn),
            kind=syn.kind,
            from_input=from_input,
            identity_like=is_identity_like(syn),
            events=events,
            synops=synops,
            synops_per_step=[int(x) for x in synops_per_step],
            synops_nonzero=int((flat @ nonzero.reshape(-1)).sum()),
            synops_lava_formula=events * lava_formula_fanout(syn),
            mean_fanout=synops / events if events else 0.0,
            macs_per_sample=macs_per_sample(syn, in_shape),
            weights=int(syn.weight.size),
            weights_nonzero=int(np.count_nonzero(syn.weight)),
        )

    def _layer(self, node: n.Node, incoming: list[SynapseActivity]) -> LayerActivity:
        shape = tuple(int(x) for x in self.shapes[node.name])
        neurons = math.prod(shape)
        updates = neurons * self.steps * self.samples
        binary = [s for s in incoming if not s.from_input]
        common = dict(
            name=node.name,
            shape=shape,
            neurons=neurons,
            neuron_updates=updates,
            synops=sum(s.synops for s in binary),
            synops_nonzero=sum(s.synops_nonzero for s in binary),
            synops_lava_formula=sum(s.synops_lava_formula for s in binary),
            first_layer_macs=sum(s.macs_per_sample for s in incoming if s.from_input),
        )
        if not isinstance(node, n.FixedPointNeuron):
            return LayerActivity(kind="accumulator", spikes=None, spikes_per_step=None, rate_per_step=None,
                                 spikes_per_neuron_per_step=None, active_updates=0, readout=node.readout, **common)
        per_step = self.counts[node.name].reshape(self.steps, -1).sum(axis=1)
        spikes = int(per_step.sum())
        return LayerActivity(
            kind="neuron",
            spikes=spikes,
            padding_spikes=int(per_step[self.T:].sum()),
            spikes_per_step=[int(x) for x in per_step],
            rate_per_step=[float(x) / (neurons * self.samples) for x in per_step],
            spikes_per_neuron_per_step=spikes / updates,
            active_updates=spikes,
            **common,
        )

    def _first_layer(self, synapses: list[SynapseActivity]) -> FirstLayer:
        first = [s for s in synapses if s.from_input]  # none for event input: its events are synops
        macs = sum(s.macs_per_sample for s in first)
        values = int(self.input_nonzero[0].size)
        nonzero = float(self.input_nonzero.sum()) / self.samples / self.T
        return FirstLayer(
            synapses=[s.name for s in first],
            macs_per_sample=macs,
            macs_per_sample_x_T=macs * self.T,
            graded_values_per_step=values,
            graded_nonzero_per_step=nonzero,
            graded_messages_per_sample=values * self.T,
            graded_nonzero_messages_per_sample=nonzero * self.T,
            graded_synops_per_sample=sum(s.synops for s in first) / self.samples,
        )


def _spread(names: list[str], count: int) -> list[str]:
    """Up to ``count`` names spread evenly from the first to the last."""
    if count <= 0 or not names:
        return []
    if len(names) <= count:
        return list(names)
    picks = np.linspace(0, len(names) - 1, count).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks.tolist())]


def count_activity(graph: Graph, batches: Iterable[tuple[Mapping[str, np.ndarray], np.ndarray]],
                   raster_layers: int = 4, steps: int | None = None) -> Activity:
    """Count a whole run given as ``(spike trains [R, B, ...] per layer, images [B, C, H, W])`` batches."""
    counter = ActivityCounter(graph, raster_layers=raster_layers, steps=steps)
    for spikes, images in batches:
        counter.add_spikes(spikes, images)
    return counter.result()
