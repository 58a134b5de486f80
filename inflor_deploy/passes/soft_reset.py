"""SoftResetToSubtractive: make the soft reset's subtracted amount explicit.

Rewrites every :class:`~inflor_deploy.ir.Neuron` with ``reset="subtract"``
and ``reset_amount=None`` to ``reset_amount=spike_value``. The InfLoR soft
reset is ``U[t] = H[t] - O[t]``: it subtracts the *spike value* (1 in the
paper), NOT the threshold Vth (0.5 in the paper). None already meant that
(see :class:`~inflor_deploy.ir.Neuron`); after this pass the amount is a
field that quantization can scale with the layer, rather than a convention
callers must remember. Neurons with ``reset="zero"`` or an explicit amount
are left alone.

Preconditions: none beyond a valid graph (spike_value is finite; the IR
validator requires reset amounts > 0, so a spike_value <= 0 is reported by
the pipeline's validation of the output).

Postcondition: no subtract neuron has ``reset_amount=None`` (checked by the
contract).

Invariant: ``H - None_as_spike_value * O == H - spike_value * O`` is the same
float operation on the same operands. Contract (bit-exact in float): the
float32 runs of both graphs on the probe are identical, every spike and
every membrane value of every layer (``np.array_equal``), and the scores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import ContractResult, Pass, PassContext
from inflor_deploy.passes.probe import compare_runs
from inflor_deploy.backends.sim.float_ir import run_float


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Set ``reset_amount = spike_value`` on every subtract neuron that leaves it implicit."""
    nodes = []
    for node in graph:
        if isinstance(node, n.Neuron) and node.reset == "subtract" and node.reset_amount is None:
            node = dataclasses.replace(node, reset_amount=float(node.spike_value))
        nodes.append(node)
    return graph.replace_nodes(nodes)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Free-running float32 runs identical: spikes, membranes and scores (``np.array_equal``)."""
    ref = run_float(before, ctx.probe, record=True, dtype=torch.float32)
    out = run_float(after, ctx.probe, record=True, dtype=torch.float32)
    unequal = [
        name for name in ref.spikes
        if name not in out.spikes
        or not np.array_equal(ref.spikes[name], out.spikes[name])
        or not np.array_equal(ref.membranes[name], out.membranes[name])
    ]  # fmt: skip
    scores_equal = np.array_equal(ref.scores, out.scores)
    divergence = None
    if unequal or not scores_equal:
        comparison = compare_runs(before, ref, out, tie_band=0.0)
        # Free-running, the earliest spike mismatch is the one that can have caused the rest.
        first = comparison.spikes.first_mismatch
        divergence = first.to_dict() if first is not None else comparison.first_divergence()
        if divergence is None:  # spikes agree but a membrane (or score) value differs
            worst = comparison.worst()
            divergence = worst.max_diff_at.to_dict() if worst.max_diff_at else {"layer": worst.layer}
            divergence["reason"] = "membrane values differ"
    implicit = [
        node.name for node in after.of_type(n.Neuron) if node.reset == "subtract" and node.reset_amount is None
    ]
    if divergence is None and implicit:
        divergence = {"layer": implicit[0], "reason": "reset_amount still None after the pass"}
    explicit = {
        node.name: n.plain(node.reset_amount) for node in after.of_type(n.Neuron) if node.reset == "subtract"
    }
    neurons = len(before.of_type(n.Neuron))
    amounts = sorted({v for v in explicit.values() if isinstance(v, float)})
    if any(isinstance(v, list) for v in explicit.values()):
        amounts.append("per channel")
    summary = (
        f"float32 spikes, membranes and scores identical in {neurons - len(unequal)}/{neurons} layers "
        f"on {ctx.probe.shape[0]} probe images; reset amounts {amounts} (InfLoR: the spike value, not vth)"
    )
    return ContractResult(
        pass_name="SoftResetToSubtractive",
        kind="bit-exact",
        ok=divergence is None,
        summary=summary,
        metrics={
            "layers_identical": neurons - len(unequal),
            "layers": neurons,
            "scores_identical": bool(scores_equal),
            "reset_amounts": explicit,
            "probe_images": int(ctx.probe.shape[0]),
        },
        first_divergence=divergence,
    )


SoftResetToSubtractive = Pass(name="SoftResetToSubtractive", run=run, check=check, contract="bit-exact")
"""Make the soft reset subtract the spike value explicitly (bit-exact contract in float32)."""
