"""Place a fixed-point graph onto Loihi cores under a target's limits, and report what does not fit.

Read-only: takes a graph and a :class:`~inflor_deploy.targets.Target`,
returns a :class:`Placement` dataclass.

Memory model (every figure below is stated with its basis; see
:meth:`MemoryModel.assumptions`). Intel publishes one figure: 192 KB per
core, shared by synapses, neuron state and routing (Loihi 2 brief [T]).
How that memory is split is not published, so this model is explicit:

* **Weights:** each synapse's ``weight_bits`` per weight (8-bit mantissa by
  default, Lava ``Dense`` ``num_weight_bits=8`` [P]; fewer with
  ``--weight-bits``), packed: a core's weights of one synapse take
  ``ceil(count * weight_bits / 8)`` bytes (Loihi stores weights of 1 to 9
  bits, Davies et al. 2018 [T] for Loihi 1; Loihi 2's packing is not
  published: an assumption). Stored densely, zeros included, as Lava
  ``Dense`` holds its matrix, except a ``sparse`` (pruned) synapse, which
  stores only its nonzero connections (their index overhead is not
  published and not modelled: an assumption).

  - dense synapse: a core holding k of the layer's neurons stores their
    rows: ``k * in_features`` weights (sparse: the nonzeros of those rows);
  - conv synapse (``conv_weight_sharing=True``, default): a core stores the
    kernel of every output channel it holds part of, once:
    ``channels_touched * (C/G) * kh * kw`` weights (sparse: the kernels'
    nonzeros) — weight sharing within a core is an assumption of this
    model (no published figure); with ``conv_weight_sharing=False`` each
    neuron keeps its own copy (``k * (C/G) * kh * kw``), an upper bound.

* **Bias sources** (one neuron firing at every step, added by quantization
  for a bias beyond the neuron's bias field) sit on the first core of the
  layer they feed: one neuron and its state there, no core of their own.

* **Neuron state:** 8 bytes per neuron [D]: u (24 bit) + v (24 bit) + bias
  mantissa (13 bit) + bias exponent (3 bit) = 64 bits, widths from Lava's
  bit-accurate LIF (``proc/lif/models.py``) [P]. Per-layer parameters
  (vth, du, dv, reset amount) are shared by a core's neurons and ignored
  (a few bytes per core).

* **Routing:** a fixed reserve of ``routing_reserve_fraction`` of each
  core's memory (default 1/8 = 24 KiB) for axon/routing tables. No
  published figure exists; this is a modelling assumption, kept explicit
  so it can be changed.

Placement: greedy, layer by layer in graph order, each layer on its own
cores (layers do not share a core, as Lava/netx maps them). A layer's
neurons, in C-major order, fill a core until the next neuron would exceed
``neurons_per_core`` or the core's memory; then a new core starts. A
layer one of whose neurons cannot fit an empty core (its fan-in weights
plus state exceed the usable memory) is a violation and is not placed.
Chips are filled with whole cores up to ``usable_cores_per_chip`` and
``neurons_per_chip``. The analog input is not placed on neuro cores (it
is injected as graded spikes by the host / embedded cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.targets import Target

KIB = 1024


@dataclass(frozen=True)
class MemoryModel:
    """How a core's memory is charged (module docstring gives the basis of each field).

    Attributes:
        weight_bytes: Bytes per stored weight (``ceil(weight_bits / 8)``).
        state_bytes_per_neuron: Bytes of per-neuron state (u, v, bias mantissa and exponent).
        routing_reserve_fraction: Fraction of each core's memory reserved for routing tables.
        conv_weight_sharing: A core stores each output channel's kernel once (True) or
            once per neuron (False, upper bound).
        weight_bits: The weight width the byte count came from (for the report).
    """

    weight_bytes: int = 1
    state_bytes_per_neuron: int = 8
    routing_reserve_fraction: float = 0.125
    conv_weight_sharing: bool = True
    weight_bits: int = 8

    def __post_init__(self):
        if self.weight_bytes < 1 or self.state_bytes_per_neuron < 0:
            raise ValueError("weight_bytes must be >= 1 and state_bytes_per_neuron >= 0")
        if not 0 <= self.routing_reserve_fraction < 1:
            raise ValueError(f"routing_reserve_fraction must be in [0, 1), got {self.routing_reserve_fraction}")

    @classmethod
    def from_target(cls, target: Target, **overrides) -> "MemoryModel":
        """Widths from the target's numerics: weight bits, and u + v + bias mantissa + exponent bits."""
        num = target.numerics
        state_bits = num.state_bits_u + num.state_bits_v + num.bias_mant_bits + num.bias_exp_bits
        model = cls(weight_bytes=math.ceil(num.weight_bits / 8), state_bytes_per_neuron=math.ceil(state_bits / 8),
                    weight_bits=num.weight_bits)  # fmt: skip
        return replace(model, **overrides)

    def routing_reserve_bytes(self, memory_per_core: int) -> int:
        return int(math.ceil(self.routing_reserve_fraction * memory_per_core))

    def assumptions(self, target: Target) -> list[dict[str, str]]:
        """Each figure of the model with its value, basis and tag (printed in the report)."""
        mem = target.limits.memory_per_core_bytes
        num = target.numerics
        return [
            {"what": "memory per core", "value": f"{mem} bytes ({mem / KIB:g} KiB)",
             "basis": target.source_of("limits.memory_per_core_bytes") or "target file", "tag": "[T]"},
            {"what": "bits per weight", "value": f"each synapse's weight_bits (default {self.weight_bits}), packed",
             "basis": f"{self.weight_bits}-bit weight mantissa ({target.source_of('numerics.weight_bits') or 'target numerics'}); "
                      "fewer with --weight-bits (Lava num_weight_bits); Loihi 1 stores 1-9 bit weights (Davies et al. "
                      "2018 [T]), Loihi 2's packing is not published (an assumption)", "tag": "[P]"},
            {"what": "weight storage", "value": "dense, zeros included; pruned (sparse) synapses: nonzeros only",
             "basis": "as Lava Dense holds its matrix, and Lava Sparse its kept connections; the index overhead of a "
                      "sparse synapse is not published and not modelled", "tag": "assumption"},
            {"what": "bias sources", "value": "on the first core of the layer they feed",
             "basis": "one always-firing neuron per layer whose bias exceeds the neuron's bias field", "tag": "assumption"},
            {"what": "conv weights per core",
             "value": "each held output channel's kernel once" if self.conv_weight_sharing else "one kernel copy per neuron",
             "basis": "weight sharing within a core: modelling assumption, no published figure"
             if self.conv_weight_sharing else "no sharing: upper bound", "tag": "assumption"},
            {"what": "neuron state per neuron", "value": f"{self.state_bytes_per_neuron} bytes",
             "basis": f"u {num.state_bits_u} + v {num.state_bits_v} + bias mantissa {num.bias_mant_bits} + "
                      f"bias exponent {num.bias_exp_bits} bits (lava proc/lif/models.py [P]); per-layer "
                      "parameters (vth, du, dv, reset) shared and ignored", "tag": "[D]"},
            {"what": "routing reserve per core",
             "value": f"{self.routing_reserve_bytes(mem)} bytes ({self.routing_reserve_fraction:.1%})",
             "basis": "modelling assumption: no published split of core memory between routing and synapses",
             "tag": "assumption"},
            {"what": "layers per core", "value": "1",
             "basis": "each layer on its own cores, as Lava/netx maps layers", "tag": "assumption"},
            {"what": "analog input", "value": "not on neuro cores",
             "basis": "injected as graded spikes by the host / embedded cores", "tag": "assumption"},
        ]


@dataclass(frozen=True)
class Core:
    """One neuro core of the placement.

    Attributes:
        index: Core number (0-based, in placement order).
        chip: Chip the core sits on.
        layer: The layer whose neurons it holds.
        first_neuron: Index (C-major) of its first neuron in the layer.
        neurons: Neurons it holds.
        synapse_bytes, state_bytes, routing_bytes: Memory use by kind.
    """

    index: int
    chip: int
    layer: str
    first_neuron: int
    neurons: int
    synapse_bytes: int
    state_bytes: int
    routing_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.synapse_bytes + self.state_bytes + self.routing_bytes


@dataclass(frozen=True)
class LayerPlacement:
    """How one layer was placed.

    Attributes:
        layer: The layer.
        neurons: Its neurons.
        cores: Cores it needs (None when one neuron cannot fit a core).
        limited_by: What split the layer: ``"memory"`` (a core's memory ended a core),
            ``"neurons"`` (only neurons per core did), ``"whole layer"`` (one core holds it all);
            None when it cannot be placed.
        fanin_weights: Weights one neuron of this layer needs (all incoming synapses).
        single_neuron_bytes: Memory one neuron needs on an empty core (weights + state).
        synapse_bytes: Weight memory of all its cores together.
    """

    layer: str
    neurons: int
    cores: int | None
    limited_by: str | None
    fanin_weights: int
    single_neuron_bytes: int
    synapse_bytes: int


@dataclass(frozen=True)
class Violation:
    """A limit the model exceeds.

    Attributes:
        kind: ``"neuron_memory"`` (one neuron does not fit a core) or ``"chips"``
            (the model needs more than one chip).
        layer: The layer at fault (None for model-wide).
        limit: The limit exceeded, as ``"table.key"`` of the target file.
        needed, available: The amounts.
        message: What is wrong. fix: What to change.
        severity: ``"error"`` when the target enforces its limits, else ``"warning"``.
    """

    kind: str
    layer: str | None
    limit: str
    needed: int
    available: int
    message: str
    fix: str
    severity: str


@dataclass(frozen=True)
class Placement:
    """The result of :func:`place`: cores per layer, chips, occupancy and violations."""

    target: str
    enforced: bool
    limits: dict[str, int]
    memory_model: MemoryModel
    assumptions: list[dict[str, str]]
    layers: list[LayerPlacement]
    cores: list[Core]
    violations: list[Violation] = field(default_factory=list)

    @property
    def total_cores(self) -> int:
        return len(self.cores)

    @property
    def chips(self) -> int:
        return 1 + max((c.chip for c in self.cores), default=0) if self.cores else 0

    @property
    def status(self) -> str:
        """``"ok"``, ``"warning"`` (violations, limits only reported) or ``"error"`` (enforced)."""
        if not self.violations:
            return "ok"
        return "error" if any(v.severity == "error" for v in self.violations) else "warning"

    def summary(self) -> str:
        """One line: cores, chips, violations."""
        unplaced = [lp.layer for lp in self.layers if lp.cores is None]
        text = (f"{self.total_cores} cores on {self.chips} chip(s) of {self.limits['usable_cores_per_chip']} usable "
                f"cores ({self.target}, limits {'enforced' if self.enforced else 'reported'})")
        if unplaced:
            text += f"; {len(unplaced)} layer(s) cannot be placed: {', '.join(unplaced)}"
        if self.violations:
            text += f"; {len(self.violations)} violation(s) [{self.status}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        mem = self.limits["memory_per_core_bytes"]
        npc = self.limits["neurons_per_core"]
        return {
            "target": self.target,
            "enforced": self.enforced,
            "status": self.status,
            "limits": dict(self.limits),
            "memory_model": {
                "weight_bytes": self.memory_model.weight_bytes,
                "state_bytes_per_neuron": self.memory_model.state_bytes_per_neuron,
                "routing_reserve_fraction": self.memory_model.routing_reserve_fraction,
                "routing_reserve_bytes": self.memory_model.routing_reserve_bytes(mem),
                "conv_weight_sharing": self.memory_model.conv_weight_sharing,
                "assumptions": list(self.assumptions),
            },
            "total_cores": self.total_cores,
            "chips": self.chips,
            "layers": [
                {"layer": lp.layer, "neurons": lp.neurons, "cores": lp.cores, "limited_by": lp.limited_by,
                 "fanin_weights": lp.fanin_weights, "single_neuron_bytes": lp.single_neuron_bytes,
                 "synapse_bytes": lp.synapse_bytes}
                for lp in self.layers
            ],
            "cores": [
                {"index": c.index, "chip": c.chip, "layer": c.layer, "first_neuron": c.first_neuron,
                 "neurons": c.neurons, "synapse_bytes": c.synapse_bytes, "state_bytes": c.state_bytes,
                 "routing_bytes": c.routing_bytes, "memory_bytes": c.memory_bytes,
                 "neurons_pct": 100.0 * c.neurons / npc, "memory_pct": 100.0 * c.memory_bytes / mem}
                for c in self.cores
            ],
            "violations": [v.__dict__.copy() for v in self.violations],
        }


# --------------------------------------------------------------------------- memory of a core slice


@dataclass(frozen=True)
class _Incoming:
    """One synapse into a layer, reduced to what its weight memory depends on."""

    kind: str  # "dense" | "conv"
    per_neuron: int  # weights one neuron needs: in_features, or (C/G)*kh*kw
    positions: int  # conv: output positions per channel (H*W of the layer); dense: 1
    weight_bits: int = 8
    # Sparse (pruned) synapses: stored nonzeros per output row (dense) or per output channel's kernel (conv);
    # None stores every weight.
    kept: tuple[int, ...] | None = None


def _incoming(graph: Graph, layer: n.Node, shapes) -> list[_Incoming]:
    found = []
    for name in layer.sources:
        syn = graph.node(name)
        if not isinstance(syn, n.FixedPointSynapse):
            continue
        kept = None
        if syn.sparse:
            kept = tuple(int(c) for c in np.count_nonzero(syn.weight.reshape(syn.weight.shape[0], -1), axis=1))
        bits = int(syn.weight_bits)
        if syn.kind == "dense":
            found.append(_Incoming("dense", int(syn.weight.shape[1]), 1, bits, kept))
        else:
            _, cg, kh, kw = syn.weight.shape
            _, oh, ow = shapes[layer.name]
            found.append(_Incoming("conv", int(cg * kh * kw), int(oh * ow), bits, kept))
    return found


def _slice_weight_bits(incoming: list[_Incoming], start: int, count: int, sharing: bool) -> int:
    """Weight bits a core holding neurons ``[start, start + count)`` of the layer stores."""
    total = 0
    for inc in incoming:
        if inc.kind == "conv" and sharing:
            first, last = start // inc.positions, (start + count - 1) // inc.positions
            if inc.kept is None:
                weights = (last - first + 1) * inc.per_neuron
            else:
                weights = sum(inc.kept[first : last + 1])
        elif inc.kept is None:
            weights = count * inc.per_neuron
        elif inc.kind == "conv":  # no sharing: each neuron keeps its channel's kernel nonzeros
            weights = sum(inc.kept[i // inc.positions] for i in range(start, start + count))
        else:
            weights = sum(inc.kept[start : start + count])
        total += weights * inc.weight_bits
    return total


def place(graph: Graph, target: Target, memory_model: MemoryModel | None = None) -> Placement:
    """Place every neuron layer and the accumulator onto cores (module docstring: the model).

    Guarantees: no core holds more than ``neurons_per_core`` neurons or more
    than ``memory_per_core_bytes`` bytes (reserve included); no chip more
    than ``usable_cores_per_chip`` cores or ``neurons_per_chip`` neurons.
    Whatever cannot respect a limit is reported in ``violations``.
    """
    model = memory_model or MemoryModel.from_target(target)
    lim = target.limits
    shapes = infer_shapes(graph)
    severity = "error" if lim.enforce_resource_limits else "warning"
    reserve = model.routing_reserve_bytes(lim.memory_per_core_bytes)
    usable = lim.memory_per_core_bytes - reserve
    cores: list[Core] = []
    layers: list[LayerPlacement] = []
    violations: list[Violation] = []

    def memory(incoming, start, count) -> tuple[int, int]:
        # Packed weights: whole bytes per synapse slice (module docstring); the model's bytes per 8 bits.
        weights = math.ceil(_slice_weight_bits(incoming, start, count, model.conv_weight_sharing) / 8)
        return weights, count * model.state_bytes_per_neuron

    # Bias sources (neurons without synapses) share the first core of the layer they feed.
    guests: dict[str, int] = {}
    for layer in graph.of_type(n.FixedPointNeuron):
        if not layer.sources:
            feeds = next(x for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)
                         if any(graph.node(s).sources[0] == layer.name for s in x.sources))  # fmt: skip
            guests[feeds.name] = guests.get(feeds.name, 0) + math.prod(shapes[layer.name])

    for layer in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        if isinstance(layer, n.FixedPointNeuron) and not layer.sources:
            continue  # a bias source: placed with the layer it feeds
        total = math.prod(shapes[layer.name])
        incoming = _incoming(graph, layer, shapes)
        fanin = sum(inc.per_neuron for inc in incoming)
        one = sum(memory(incoming, 0, 1))
        guest_neurons = guests.get(layer.name, 0)
        guest_state = guest_neurons * model.state_bytes_per_neuron
        if one + guest_state > usable:
            layers.append(LayerPlacement(layer.name, total, None, None, fanin, one, 0))
            violations.append(_neuron_memory_violation(graph, layer, incoming, one, usable, reserve, model, lim, severity))
            continue
        start, used, synapse_bytes, limited_by = 0, 0, 0, "whole layer"
        while start < total:
            extra_neurons, extra_state = (guest_neurons, guest_state) if start == 0 else (0, 0)
            most = min(lim.neurons_per_core - extra_neurons, total - start)
            if most < total - start and limited_by == "whole layer":
                limited_by = "neurons"
            lo, hi = 1, most  # the largest count that fits: memory grows with count
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if sum(memory(incoming, start, mid)) + extra_state <= usable:
                    lo = mid
                else:
                    hi = mid - 1
            if lo < most:
                limited_by = "memory"
            weights, state = memory(incoming, start, lo)
            cores.append(Core(len(cores), 0, layer.name, start, lo + extra_neurons, weights, state + extra_state,
                              reserve))  # fmt: skip
            synapse_bytes += weights
            start += lo
            used += 1
        layers.append(LayerPlacement(layer.name, total, used, limited_by, fanin, one, synapse_bytes))

    cores = _assign_chips(cores, lim)
    chips = 1 + max((c.chip for c in cores), default=0) if cores else 0
    if chips > 1:
        violations.append(Violation(
            kind="chips", layer=None, limit="limits.usable_cores_per_chip",
            needed=len(cores), available=lim.usable_cores_per_chip,
            message=(f"the model needs {len(cores)} cores ({sum(c.neurons for c in cores):,} neurons) on {chips} chips; "
                     f"one chip offers {lim.usable_cores_per_chip} usable cores and {lim.neurons_per_chip:,} neurons"),
            fix=("shrink the model (fewer channels, a smaller input) to fit one chip, or partition it across "
                 f"{chips} chips (a Kapoho Point board holds {lim.chips_per_board}); this report does not map "
                 "across chips"),
            # Several chips of one board is a deployment the hardware supports (with inter-chip
            # routing this report does not model): a warning. Beyond one board: the target's severity.
            severity=severity if chips > lim.chips_per_board else "warning",
        ))
    return Placement(
        target=target.name,
        enforced=lim.enforce_resource_limits,
        limits={
            "neurons_per_core": lim.neurons_per_core,
            "memory_per_core_bytes": lim.memory_per_core_bytes,
            "cores_per_chip": lim.cores_per_chip,
            "usable_cores_per_chip": lim.usable_cores_per_chip,
            "neurons_per_chip": lim.neurons_per_chip,
            "chips_per_board": lim.chips_per_board,
        },
        memory_model=model,
        assumptions=model.assumptions(target),
        layers=layers,
        cores=cores,
        violations=violations,
    )


def _assign_chips(cores: list[Core], lim) -> list[Core]:
    out, chip, on_chip, neurons = [], 0, 0, 0
    for core in cores:
        if on_chip + 1 > lim.usable_cores_per_chip or neurons + core.neurons > lim.neurons_per_chip:
            chip, on_chip, neurons = chip + 1, 0, 0
        out.append(replace(core, chip=chip))
        on_chip += 1
        neurons += core.neurons
    return out


def _neuron_memory_violation(graph, layer, incoming, one, usable, reserve, model, lim, severity) -> Violation:
    weight_bytes = one - model.state_bytes_per_neuron
    max_fanin = (usable - model.state_bytes_per_neuron) // model.weight_bytes
    fanin = sum(inc.per_neuron for inc in incoming)
    kinds = {inc.kind for inc in incoming}
    if kinds == {"dense"}:
        fix = (f"split its {fanin:,} inputs: at most {max_fanin:,} fit one core, so feed it through "
               f"{math.ceil(fanin / max(max_fanin, 1))} partial layers of fewer inputs, or reduce the previous layer")
    else:
        fix = (f"reduce its fan-in of {fanin:,} weights per neuron to at most {max_fanin:,}: fewer input "
               "channels (split them over partial-sum layers or use groups) or a smaller kernel")
    return Violation(
        kind="neuron_memory", layer=layer.name, limit="limits.memory_per_core_bytes",
        needed=one, available=usable,
        message=(f"layer {layer.name}: a single neuron's fan-in weights need {weight_bytes / KIB:,.1f} KiB "
                 f"(+{model.state_bytes_per_neuron} B state) > {usable / KIB:,.1f} KiB usable per core "
                 f"({lim.memory_per_core_bytes / KIB:g} KiB minus {reserve / KIB:g} KiB routing reserve)"),
        fix=fix,
        severity=severity,
    )
