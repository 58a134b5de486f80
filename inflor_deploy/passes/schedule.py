"""ScheduleTimesteps: place every layer of a fixed-point graph in pipelined time.

On Loihi (and in Lava) every connection adds one timestep; neurons add
none. So a layer's *depth* is the number of connections on its longest
path from the input, and the spikes a layer receives through a shorter
path (a residual shortcut) must be delayed by the difference:

    depth(Input) = 0
    depth(L)     = max over synapses s into L of depth(source(s)) + 1
    delay(s)     = depth(L) - depth(source(s)) - 1

A bias source (a neuron without synapses that fires at every step, see
QuantizeFixedPoint) sits one step before the layer it feeds:
``depth = depth(L) - 1``, so its synapse needs no delay; its spike train is
the same at every step, so where it sits changes no value.

Samples run back to back, one every ``R = reset_interval`` steps (R = T on
the simulator; the next power of two on hardware, padded with empty
frames). A layer at depth d handles sample k's step t at global step
``g = k*R + t + 1 + d`` (Lava counts steps from 1), so it resets its state
at the start of every step with ``g % R == (d + 1) % R``.

Invariant (the contract, bit-exact): running the scheduled graph pipelined
and reading each layer at its own depth gives exactly the aligned run,
every spike and every membrane value. Resetting at the window start also
discards whatever a bias integrated before the layer's window opened.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, Schedule
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError

#: Probe samples run back to back through the pipelined view.
PIPELINE_PROBE_SAMPLES = 4


def schedule_timesteps(graph: Graph, ctx: PassContext) -> Graph:
    """Compute depths, shortcut delays, reset offsets and the reset interval.

    Preconditions: the graph is fixed point (run QuantizeFixedPoint first);
    every delay fits the target's ``max_synaptic_delay``.
    """
    if not graph.is_fixed_point:
        raise PassError("ScheduleTimesteps needs a fixed-point graph: run QuantizeFixedPoint first")
    depth: dict[str, int] = {graph.input.name: 0}
    layers = graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)
    synapse_of = {s.name: s for s in graph.of_type(n.FixedPointSynapse)}
    sourceless = {l.name for l in layers if not l.sources}  # bias sources: placed by their consumer
    for layer in layers:
        if layer.name in sourceless:
            continue
        fed_by = [synapse_of[s].sources[0] for s in layer.sources]
        depth[layer.name] = max((depth[f] + 1 for f in fed_by if f not in sourceless), default=1)
        for f in fed_by:
            if f in sourceless:
                depth[f] = min(depth.get(f, depth[layer.name] - 1), depth[layer.name] - 1)
    nodes = []
    max_delay = ctx.target.timing.max_synaptic_delay
    for node in graph:
        if isinstance(node, n.FixedPointSynapse):
            consumer = next(l for l in layers if node.name in l.sources)
            delay = depth[consumer.name] - depth[node.sources[0]] - 1
            if delay > max_delay:
                raise PassError(
                    f"synapse {node.name!r} needs a delay of {delay} steps to align with "
                    f"{consumer.name!r}; {ctx.target.name} allows at most {max_delay}"
                )
            node = dataclasses.replace(node, delay=delay)
        nodes.append(node)
    interval = ctx.target.timing.reset_interval(graph.timesteps)
    schedule = Schedule(
        depth={l.name: depth[l.name] for l in layers},
        reset_offset={l.name: (depth[l.name] + 1) % interval for l in layers},
        reset_interval=interval,
        latency=depth[graph.output.name],
    )
    return dataclasses.replace(graph, nodes=tuple(nodes), schedule=schedule)


def check_schedule_timesteps(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Bit-exact: the pipelined run, de-skewed, equals the aligned run."""
    from inflor_deploy.backends.sim.compare import first_divergence
    from inflor_deploy.backends.sim.fixed_point import simulate

    s = after.schedule
    misaligned = _misaligned_synapse(after)
    if misaligned is not None:
        return ContractResult(
            pass_name="ScheduleTimesteps",
            kind="bit-exact",
            ok=False,
            summary=f"synapse {misaligned['synapse']!r} delay {misaligned['actual']} does not align its spikes "
            f"with {misaligned['layer']!r} (needs {misaligned['expected']})",
            metrics={"latency": s.latency, "reset_interval": s.reset_interval},
            first_divergence=misaligned,
        )
    # The fast simulator's two views (each checked bit-exact against int_reference).
    probe = ctx.probe[:PIPELINE_PROBE_SAMPLES]
    aligned = simulate(before, probe, view="aligned", record=True)
    pipelined = simulate(after, probe, view="pipelined", record=True)
    order = [l.name for l in after.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    divergence = first_divergence(aligned.spikes, pipelined.spikes, [o for o in order if o in aligned.spikes])
    if divergence is None:
        divergence = first_divergence(aligned.voltages, pipelined.voltages, order)
    readout_equal = bool(np.array_equal(aligned.accumulator, pipelined.accumulator))
    ok = divergence is None and readout_equal
    summary = (
        f"pipelined == aligned on {len(probe)} samples (every spike and v); latency {s.latency} steps, "
        f"reset interval {s.reset_interval}, max delay {max((x.delay for x in after.of_type(n.FixedPointSynapse)), default=0)}"
        if ok
        else f"pipelined run diverges from aligned: {divergence or 'accumulator readout differs'}"
    )
    return ContractResult(
        pass_name="ScheduleTimesteps",
        kind="bit-exact",
        ok=ok,
        summary=summary,
        metrics={"latency": s.latency, "reset_interval": s.reset_interval, "samples": len(probe)},
        first_divergence=None if divergence is None else dataclasses.asdict(divergence),
    )


def _misaligned_synapse(graph: Graph) -> dict | None:
    """The first synapse whose delay breaks ``delay = depth(L) - depth(source) - 1``, if any."""
    depth = {graph.input.name: 0, **graph.schedule.depth}
    for layer in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator):
        for name in layer.sources:
            synapse = graph.node(name)
            expected = depth[layer.name] - depth[synapse.sources[0]] - 1
            if synapse.delay != expected:
                return {"layer": layer.name, "synapse": name, "expected": expected, "actual": synapse.delay}
    return None


ScheduleTimesteps = Pass(
    name="ScheduleTimesteps",
    run=schedule_timesteps,
    check=check_schedule_timesteps,
    contract="bit-exact",
)
