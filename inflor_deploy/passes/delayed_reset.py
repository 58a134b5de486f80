"""DelayedResetToSameStep: apply a next-step (delayed) reset at the spike's own step.

snnTorch's ``Leaky`` (``reset_delay=True``, its default) decides a reset from
the previous step's membrane and applies it one step late, after the leak:

    R[t] = O[t-1]
    subtract: H[t] = tau * H[t-1] + X[t] - R[t] * a
    zero:     H[t] = tau * ((1 - R[t]) * H[t-1]) + X[t]

Loihi resets at the spike's own step. Rewrites every
:class:`~inflor_deploy.ir.Neuron` with ``reset_timing="next_step"`` to
``"same_step"``:

* ``"subtract"``: amount ``a -> a / tau``. Invariant: subtracting ``a`` at
  step t+1, *undecayed*, equals subtracting ``a / tau`` at step t, because
  the leak multiplies it by tau on the way: with ``U[t] = H[t] - (a/tau) O[t]``,
  ``tau * U[t] + X[t+1] = tau * H[t] + X[t+1] - a * O[t]``, the delayed form
  with ``R[t+1] = O[t]``. H, and therefore every spike, is unchanged in real
  arithmetic (per channel when ``a`` is per channel).
* ``"zero"``: ``U[t] = (1 - O[t]) * H[t]`` at step t and then
  ``H[t+1] = tau * U[t] + X[t+1]``: the same float operations on the same
  operands as the delayed form, so bit-identical.
* ``"none"``: nothing to move.

Precondition: ``tau > 0`` for a subtract layer (raises :class:`PassError`):
with ``tau = 0`` (snnTorch ``beta = 0``) the leak erases the state before
the delayed subtraction lands, so it acts on the next step's fresh input and
no same-step amount can express it. Same-step layers are left alone.

Postcondition: no neuron has ``reset_timing="next_step"``.

Contract (spike-exact, :func:`~inflor_deploy.passes.probe.rounding_contract`):
float32, teacher-forced; membranes within a few float32 ulps per step
(``a / tau`` and ``H - (a/tau) O`` round differently from ``tau*H + X - a R``),
spike mismatches only as near-ties (counted); zero/none layers bitwise equal.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import rounding_contract, unchanged


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Move every next-step reset to its spike's step (see the module docstring)."""
    nodes = []
    for node in graph:
        if isinstance(node, n.Neuron) and node.reset_timing == "next_step":
            changes: dict = {"reset_timing": "same_step"}
            if node.reset == "subtract":
                if node.reset_amount is None:
                    raise PassError(
                        f"neuron {node.name!r}: run SoftResetToSubtractive before DelayedResetToSameStep "
                        "(the reset amount must be explicit)"
                    )
                if not node.tau > 0:
                    raise PassError(
                        f"neuron {node.name!r}: a delayed subtractive reset with tau = 0 (snnTorch beta = 0) "
                        "has no same-step equivalent: the leak erases the membrane before the subtraction "
                        "lands, so it hits the next input instead (a / tau is undefined). Use "
                        "reset_mechanism='zero' or beta > 0 in the model"
                    )
                amount = node.reset_amount
                if isinstance(amount, np.ndarray):
                    changes["reset_amount"] = np.asarray(amount, dtype=np.float64) / node.tau
                else:
                    changes["reset_amount"] = float(amount) / node.tau
            node = dataclasses.replace(node, **changes)
        nodes.append(node)
    return graph.replace_nodes(nodes)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Spike-exact in float32 up to counted near-ties; zero/none layers bitwise equal."""
    same = unchanged("DelayedResetToSameStep", "spike-exact", before, after, "next-step reset")
    if same is not None:
        return same
    moved = [x for x in before.of_type(n.Neuron) if x.reset_timing == "next_step"]
    exact = tuple(x.name for x in before.of_type(n.Neuron) if x not in moved or x.reset != "subtract")
    result = rounding_contract(
        "DelayedResetToSameStep", before, after, ctx.probe,
        f"{len(moved)} delayed resets moved; a -> a / tau rounds", exact_layers=exact,
    )  # fmt: skip
    left = [x.name for x in after.of_type(n.Neuron) if x.reset_timing == "next_step"]
    if result.ok and left:
        return dataclasses.replace(
            result, ok=False, first_divergence={"layer": left[0], "reason": "reset still next_step after the pass"}
        )
    result.metrics["moved"] = {
        x.name: {"reset": x.reset, "tau": x.tau, "amount": n.plain(after.node(x.name).reset_amount)} for x in moved
    }
    return result


DelayedResetToSameStep = Pass(name="DelayedResetToSameStep", run=run, check=check, contract="spike-exact")
"""snnTorch's next-step reset -> same-step (subtract a -> a/tau); spike-exact up to float32 near-ties."""
