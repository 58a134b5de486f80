"""Pipelines: explicit lists of passes, and the runner that checks every contract.

A pipeline is a plain ``list[Pass]``; :data:`PASSES_BY_NAME` is the one
explicit dict the CLI uses to name a pass (``--stop-after FoldBatchNorm``).
Nothing registers itself on import.

:func:`run_pipeline` validates the input graph, then for each pass: runs it,
validates the output graph, runs the pass's contract on the context's probe
and raises :class:`~inflor_deploy.passes.base.ContractViolation` when it
does not hold (it never just warns), calls ``on_step(name, graph)`` (e.g. to
save the IR after each pass), and stops after the named pass if asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from inflor_deploy.ir.graph import Graph, IRError, validate
from inflor_deploy.passes.base import ContractResult, ContractViolation, Pass, PassContext, PassError
from inflor_deploy.passes.delayed_reset import DelayedResetToSameStep
from inflor_deploy.passes.distribute_joins import DistributeJoins
from inflor_deploy.passes.fold_batch_norm import FoldBatchNorm
from inflor_deploy.passes.fold_input_gain import FoldInputGain
from inflor_deploy.passes.fold_input_normalization import FoldInputNormalization
from inflor_deploy.passes.fold_pooling import FoldAveragePool
from inflor_deploy.passes.fold_rectifier import FoldRectifierIntoThreshold
from inflor_deploy.passes.quantize import QuantizeFixedPoint
from inflor_deploy.passes.schedule import ScheduleTimesteps
from inflor_deploy.passes.shift_reset import ShiftResetToZero
from inflor_deploy.passes.soft_reset import SoftResetToSubtractive

FLOAT_PIPELINE: list[Pass] = [
    FoldBatchNorm,
    DistributeJoins,
    FoldAveragePool,
    FoldInputNormalization,
    FoldRectifierIntoThreshold,
    SoftResetToSubtractive,
    DelayedResetToSameStep,
    ShiftResetToZero,
    FoldInputGain,
]
"""The float rewrites, in order: after them the graph is synapses (reading the raw input:
an input normalization is folded into them), threshold neurons ``H = tau * U + X`` (input
gain folded where a synapse can take it) with an explicit same-step reset (subtract an
amount, to zero, or none) from v_reset = 0, and the accumulator, ready for quantization."""

COMPILE_PIPELINE: list[Pass] = [
    *FLOAT_PIPELINE,
    QuantizeFixedPoint,
    ScheduleTimesteps,
]
"""The whole compile: the float rewrites, then quantization to the target's integers
(from here on everything is integer) and the pipelined schedule."""

PASSES_BY_NAME: dict[str, Pass] = {
    "FoldBatchNorm": FoldBatchNorm,
    "DistributeJoins": DistributeJoins,
    "FoldAveragePool": FoldAveragePool,
    "FoldInputNormalization": FoldInputNormalization,
    "FoldRectifierIntoThreshold": FoldRectifierIntoThreshold,
    "SoftResetToSubtractive": SoftResetToSubtractive,
    "DelayedResetToSameStep": DelayedResetToSameStep,
    "ShiftResetToZero": ShiftResetToZero,
    "FoldInputGain": FoldInputGain,
    "QuantizeFixedPoint": QuantizeFixedPoint,
    "ScheduleTimesteps": ScheduleTimesteps,
}
"""Every pass by name, for the CLI (one explicit dict; no registry)."""


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`run_pipeline` returns.

    Attributes:
        graph: The graph after the last pass run.
        results: One contract result per pass run, in order.
        steps: The names of the passes run, in order.
    """

    graph: Graph
    results: list[ContractResult] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


def _violation(result: ContractResult) -> ContractViolation:
    message = f"pass {result.pass_name} broke its {result.kind} contract: {result.summary}"
    if result.first_divergence is not None:
        where = ", ".join(f"{key}={value}" for key, value in result.first_divergence.items())
        message += f"; first divergence: {where}"
    error = ContractViolation(message)
    error.result = result  # the full result, for reports
    return error


def run_pipeline(
    graph: Graph,
    passes: Sequence[Pass],
    ctx: PassContext,
    stop_after: str | None = None,
    on_step: Callable[[str, Graph], None] | None = None,
) -> PipelineResult:
    """Run ``passes`` in order, checking every contract.

    Args:
        graph: The input graph (validated first).
        passes: The passes, e.g. :data:`FLOAT_PIPELINE`.
        ctx: Target, probe images and options shared by the passes.
        stop_after: Name of the last pass to run; None runs them all.
        on_step: Called as ``on_step(pass_name, graph)`` after each pass whose
            contract held (e.g. to save the IR).

    Returns:
        The final graph, the contract results and the names of the passes run.

    Raises:
        PassError: ``stop_after`` names no pass of ``passes`` (the message lists
            them), the probe does not fit the graph's input, or a pass's
            precondition fails.
        IRError: The input graph, or a pass's output, is invalid.
        ContractViolation: A pass broke its contract; the message carries the
            summary and the first divergence, ``error.result`` the full result.
    """
    names = [p.name for p in passes]
    if stop_after is not None and stop_after not in names:
        raise PassError(f"unknown pass {stop_after!r} for --stop-after; this pipeline runs: {', '.join(names)}")
    validate(graph)
    expected = ((graph.timesteps,) if graph.input.encoding == "sequence" else ()) + tuple(graph.input.shape)
    if ctx.probe.ndim != len(expected) + 1 or tuple(ctx.probe.shape[1:]) != expected:
        raise PassError(
            f"probe shape {tuple(ctx.probe.shape)} does not fit graph {graph.name!r} with input "
            f"{expected}; make it with inflor_deploy.passes.probe.make_probe(graph)"
        )
    results: list[ContractResult] = []
    steps: list[str] = []
    for p in passes:
        after = p.run(graph, ctx)
        try:
            validate(after)
        except IRError as err:
            raise IRError(f"pass {p.name} produced an invalid graph: {err}") from err
        result = p.check(graph, after, ctx)
        if not result.ok:
            raise _violation(result)
        graph = after
        results.append(result)
        steps.append(p.name)
        if on_step is not None:
            on_step(p.name, graph)
        if p.name == stop_after:
            break
    return PipelineResult(graph=graph, results=results, steps=steps)
