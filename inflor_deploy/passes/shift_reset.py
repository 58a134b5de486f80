"""ShiftResetToZero: measure every membrane from its reset potential, so that v_reset = 0.

Loihi's neuron starts at v = 0, leaks toward 0 and a hard reset sets v = 0.
SpikingJelly's starts at ``v_reset``, leaks toward it and resets to it (e.g.
``v_reset=0.5``). Rewrites every :class:`~inflor_deploy.ir.Neuron` with
``v_reset != 0`` in the shifted variable ``V' = V - v_reset``:

    vth' = vth - v_reset,   v_reset' = 0

Invariant: with ``U' = U - v_reset`` and ``H' = H - v_reset``,

    H  = v_reset + tau (U - v_reset) + g X   <=>   H' = tau U' + g X
    H >= vth  <=>  H' >= vth - v_reset         (likewise for >)
    U = v_reset (hard reset)  <=>  U' = 0;   U = H - a O  <=>  U' = H' - a O
    U[-1] = v_reset  <=>  U'[-1] = 0

so every spike is unchanged in real arithmetic. The IR carries ``v_reset``
(rather than the adapter shifting) because the float IR must compute
SpikingJelly's own ``V + (X - (V - v_reset)) / tau`` to reproduce its float32
spikes at level 1; the shift is the compiler's step toward Loihi.

Precondition: none beyond a valid graph (``vth > v_reset`` is an IR
invariant, so ``vth' > 0``).

Contract (spike-exact, :func:`~inflor_deploy.passes.probe.rounding_contract`
with the reference's H shifted by ``v_reset``): float32, teacher-forced;
``H'`` equals ``H - v_reset`` within a few float32 ulps per step, spike
mismatches only as near-ties (counted).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import ContractResult, Pass, PassContext
from inflor_deploy.passes.probe import rounding_contract, unchanged


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Shift every neuron with a nonzero reset potential to ``v_reset = 0`` (module docstring)."""
    nodes = []
    for node in graph:
        if isinstance(node, n.Neuron) and node.v_reset != 0:
            vth = np.asarray(node.vth, dtype=np.float64) if isinstance(node.vth, np.ndarray) else float(node.vth)
            node = dataclasses.replace(node, vth=vth - node.v_reset, v_reset=0.0)
        nodes.append(node)
    return graph.replace_nodes(nodes)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Spike-exact in float32 up to counted near-ties; H' == H - v_reset within the rounding band."""
    same = unchanged("ShiftResetToZero", "spike-exact", before, after, "nonzero v_reset")
    if same is not None:
        return same
    offsets = {x.name: float(x.v_reset) for x in before.of_type(n.Neuron) if x.v_reset != 0}
    unshifted = tuple(x.name for x in before.of_type(n.Neuron) if x.name not in offsets)
    result = rounding_contract(
        "ShiftResetToZero", before, after, ctx.probe,
        f"{len(offsets)} layers shifted by v_reset", exact_layers=unshifted, offsets=offsets,
    )  # fmt: skip
    left = [x.name for x in after.of_type(n.Neuron) if x.v_reset != 0]
    if result.ok and left:
        return dataclasses.replace(
            result, ok=False, first_divergence={"layer": left[0], "reason": "v_reset still nonzero after the pass"}
        )
    result.metrics["shifted"] = {
        name: {"v_reset": offset, "vth": n.plain(after.node(name).vth)} for name, offset in offsets.items()
    }
    return result


ShiftResetToZero = Pass(name="ShiftResetToZero", run=run, check=check, contract="spike-exact")
"""V' = V - v_reset: thresholds shift, resets go to 0 (spike-exact up to float32 near-ties)."""
