"""FoldInputGain: fold a neuron's input gain into its synapses; every neuron leaves in the affine form.

SpikingJelly's ``LIFNode(decay_input=True)`` charges ``H = V + (X - V) / k``:
its input enters with gain ``g = 1/k``. Loihi's neuron adds the synaptic
current unscaled (``H = tau U + X``). Rewrites every
:class:`~inflor_deploy.ir.Neuron`:

* ``gain != 1`` and every source a Conv2d/Linear that feeds only this neuron:
  ``W -> g W``, ``b -> g b`` (float64, stored float32) and ``gain -> 1``.
  Invariant: ``g * (W x + b) == (g W) x + g b`` in real arithmetic.
* ``gain != 1`` with a source that cannot absorb it (an identity shortcut
  from a neuron: the spikes add unweighted, there is no weight to scale; or
  a synapse shared with another consumer): the gain stays on the neuron,
  and ``QuantizeFixedPoint`` scales every incoming synapse by it, the
  shortcut's identity weights included.
* every ``decay_*`` charge becomes ``"affine"`` with the same tau and gain
  (the math is identical, only the float operation order changes:
  ``V - (V - 0) / k + X == (1 - 1/k) V + X``).

Precondition: ``v_reset == 0`` for a ``decay_*`` layer (run ShiftResetToZero
first: the affine form leaks toward 0).

Postcondition: every neuron is ``"affine"``; only neurons with an
unfoldable source keep ``gain != 1``.

Contract (float-tolerance, 1e-5 relative, like FoldBatchNorm): float64,
teacher-forced, membranes agree within 1e-5 of ``max(1, max |H|)`` (the only
error is the float32 rounding of ``g W`` and ``g b``, 2^-24 per value);
spike mismatches only as near-ties within that band.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import tolerance_contract, unchanged

TOLERANCE = 1e-5
"""Relative membrane tolerance: float32 storage of the scaled weights (2^-24 each), as FoldBatchNorm."""


def _foldable(graph: Graph, neuron: n.Neuron) -> bool:
    """Whether every source of ``neuron`` is a Conv2d/Linear that feeds nothing else."""
    for name in neuron.sources:
        src = graph.node(name)
        if not isinstance(src, (n.Conv2d, n.Linear)) or len(graph.consumers(name)) != 1:
            return False
    return True


def _scaled(syn: n.Conv2d | n.Linear, gain: float) -> n.Conv2d | n.Linear:
    weight = (np.asarray(syn.weight, np.float64) * gain).astype(np.float32)
    bias = None if syn.bias is None else (np.asarray(syn.bias, np.float64) * gain).astype(np.float32)
    return dataclasses.replace(syn, weight=weight, bias=bias)


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Fold input gains into synapses and make every neuron affine (see the module docstring)."""
    replaced: dict[str, n.Node] = {}
    for neuron in graph.of_type(n.Neuron):
        changes: dict = {}
        if neuron.charge != "affine":
            if neuron.v_reset != 0:
                raise PassError(
                    f"neuron {neuron.name!r}: charge {neuron.charge!r} leaks toward v_reset = {neuron.v_reset}; "
                    "run ShiftResetToZero before FoldInputGain"
                )
            changes.update(charge="affine", decay=None)
        if neuron.gain != 1 and _foldable(graph, neuron):
            for name in neuron.sources:
                replaced[name] = _scaled(graph.node(name), neuron.gain)
            changes["gain"] = 1.0
        if changes:
            replaced[neuron.name] = dataclasses.replace(neuron, **changes)
    return graph.replace_nodes(replaced.get(node.name, node) for node in graph)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float64 teacher-forced membranes within :data:`TOLERANCE`; every neuron affine afterwards."""
    same = unchanged("FoldInputGain", "float-tolerance", before, after, "input gain or decay charge")
    if same is not None:
        return same
    result = tolerance_contract(
        "FoldInputGain", before, after, ctx.probe, TOLERANCE, "float32 rounding of gain-scaled weights"
    )
    left = [x.name for x in after.of_type(n.Neuron) if x.charge != "affine"]
    if result.ok and left:
        return dataclasses.replace(
            result, ok=False, first_divergence={"layer": left[0], "reason": "charge not affine after the pass"}
        )
    result.metrics["folded"] = {
        x.name: x.gain for x in before.of_type(n.Neuron) if x.gain != 1 and after.node(x.name).gain == 1
    }
    result.metrics["kept_on_neuron"] = {x.name: x.gain for x in after.of_type(n.Neuron) if x.gain != 1}
    return result


FoldInputGain = Pass(name="FoldInputGain", run=run, check=check, contract="float-tolerance")
"""Input gain into the synapses' weights and biases; every neuron affine (float-tolerance, 1e-5 relative)."""
