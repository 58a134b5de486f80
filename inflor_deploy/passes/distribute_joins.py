"""DistributeJoins: push Add and Concat joins into the synapses that read them.

On Loihi a synapse reads the spikes of one neuron layer (or the graded
input). A float IR may join several spike trains before a synapse reads
them: :class:`~inflor_deploy.ir.Add` (their sum, e.g. SEW-ResNet's ADD
connection) or :class:`~inflor_deploy.ir.Concat` (``torch.cat`` along the
channels). Joins and synapses are linear, so the join distributes over the
synapse; this pass rewrites, for a join ``J(x_1, ..., x_k)`` and each node
``C`` that reads it:

* ``C`` a Conv2d or Linear ``S`` (weight W, bias b): ``S`` is replaced by
  one synapse per source, ``S[i]`` reading ``x_i``, and ``S``'s consumers,
  which must be neurons or the accumulator (they sum their sources), read
  ``S[0], ..., S[k-1]`` instead::

      Add:     S(x_1 + ... + x_k) = (W x_1 + b) + W x_2 + ... + W x_k
      Concat:  S(cat(x_1, ..., x_k)) = (W_1 x_1 + b) + W_2 x_2 + ... + W_k x_k

  where ``W_i`` is the block of W that reads source i: input channels
  ``o_i .. o_i + C_i - 1`` of a convolution (``o_i = C_1 + ... + C_{i-1}``),
  or, for a Linear (which flattens C-major, so each source's values are
  contiguous), the columns ``o_i*H*W .. (o_i + C_i)*H*W - 1``. The bias goes
  to the first part only.

* ``C`` an AvgPool2d or Flatten ``P``: pooling acts per channel and a
  C-major flatten keeps each channel's values together, so
  ``P(J(x_1, ..., x_k)) = J(P(x_1), ..., P(x_k))``: ``P`` becomes one copy
  per source, ``P[i]``, and a join of the same kind named ``P`` joins them.
  The rewrite repeats until every join feeds only synapses.

* ``C`` a neuron or the accumulator reading an Add: the Add's sources join
  the neuron's own sources (a neuron sums its inputs anyway).

Part names are ``<node>[<i>]``, i the position of the source in the join.

Preconditions (raise :class:`PassError` naming the node and the fix): a
synapse that reads a join feeds only neurons and the accumulator; a
convolution reading a Concat has ``groups == 1``; a Concat feeds no neuron
directly; joins do not feed BatchNorm (run ``FoldBatchNorm`` first) or
other joins of another kind.

Postcondition: no Add or Concat remains (checked by the contract).

Invariant: every rewrite is an identity of real arithmetic, and weights are
copied unchanged (blocks of W, never sums of weights), so only the order in
which products are summed changes. Contract: float64 teacher-forced
membranes equal within 1e-9 relative.
"""

from __future__ import annotations

import dataclasses
import math

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import tolerance_contract

TOLERANCE = 1e-9
"""Relative membrane tolerance: weights are copied exactly, only the float64 summation order changes."""

_JOINS = (n.Add, n.Concat)
_SUMMING = (n.Neuron, n.Accumulator)


def _part_name(node: n.Node, index: int) -> str:
    return f"{node.name}[{index}]"


def _weight_blocks(syn: n.Conv2d | n.Linear, join: n.Node, shapes) -> list:
    """The block of the synapse's weight that reads each source of ``join``."""
    if isinstance(join, n.Add):
        return [syn.weight] * len(join.sources)
    blocks, offset = [], 0
    for source in join.sources:
        shape = shapes[source]
        if isinstance(syn, n.Conv2d):
            if syn.groups != 1:
                raise PassError(
                    f"conv {syn.name!r} (groups={syn.groups}) reads the concatenation {join.name!r}; "
                    "only groups=1 convolutions can be split by input channel. Concatenate after the "
                    "grouped convolution, or use groups=1"
                )
            blocks.append(syn.weight[:, offset : offset + shape[0]])
            offset += shape[0]
        else:
            size = math.prod(shape)
            blocks.append(syn.weight[:, offset : offset + size])
            offset += size
    return blocks


def _split_synapse(graph: Graph, join: n.Node, syn: n.Conv2d | n.Linear, shapes) -> tuple[list[n.Node], dict]:
    """One synapse per join source; returns the parts and the consumers rewritten to read them."""
    consumers = graph.consumers(syn.name)
    bad = [c for c in consumers if not isinstance(c, _SUMMING)]
    if bad:
        raise PassError(
            f"{type(syn).__name__} {syn.name!r} reads the join {join.name!r} and feeds "
            f"{type(bad[0]).__name__} {bad[0].name!r}; it can be split into one synapse per joined "
            "source only when its output goes straight into neurons or the readout (which sum their inputs). "
            "Put the neuron (or BatchNorm, folded first) right after the synapse"
        )
    parts = [
        dataclasses.replace(
            syn, name=_part_name(syn, i), sources=(source,), weight=block.copy(), bias=syn.bias if i == 0 else None
        )
        for i, (source, block) in enumerate(zip(join.sources, _weight_blocks(syn, join, shapes)))
    ]
    names = tuple(p.name for p in parts)
    rewritten = {
        c.name: dataclasses.replace(c, sources=tuple(x for s in c.sources for x in (names if s == syn.name else (s,))))
        for c in consumers
    }
    return parts, rewritten


def _step(graph: Graph) -> Graph | None:
    """Distribute the first join that still feeds something other than a synapse's sum; None when done."""
    shapes = infer_shapes(graph)
    for join in graph.of_type(*_JOINS):
        for consumer in graph.consumers(join.name):
            if isinstance(consumer, (n.Conv2d, n.Linear)):
                parts, rewritten = _split_synapse(graph, join, consumer, shapes)
                nodes = []
                for node in graph:
                    if node.name == consumer.name:
                        nodes.extend(parts)
                    else:
                        nodes.append(rewritten.get(node.name, node))
                return graph.replace_nodes(nodes)
            if isinstance(consumer, (n.AvgPool2d, n.Flatten)):
                parts = [
                    dataclasses.replace(consumer, name=_part_name(consumer, i), sources=(source,))
                    for i, source in enumerate(join.sources)
                ]
                joined = type(join)(name=consumer.name, sources=tuple(p.name for p in parts))
                nodes = []
                for node in graph:
                    nodes.extend([*parts, joined] if node.name == consumer.name else [node])
                return graph.replace_nodes(nodes)
            if isinstance(consumer, _SUMMING) and isinstance(join, n.Add):
                merged = tuple(x for s in consumer.sources for x in (join.sources if s == join.name else (s,)))
                return graph.replace_nodes(
                    dataclasses.replace(node, sources=merged) if node.name == consumer.name else node for node in graph
                )
            if isinstance(consumer, type(join)):
                merged = tuple(x for s in consumer.sources for x in (join.sources if s == join.name else (s,)))
                return graph.replace_nodes(
                    dataclasses.replace(node, sources=merged) if node.name == consumer.name else node for node in graph
                )
            raise PassError(
                f"{type(join).__name__} {join.name!r} feeds {type(consumer).__name__} {consumer.name!r}; a join "
                "of spike trains can only be read by a Conv2d or Linear (directly, or through AvgPool2d/Flatten)"
                + (", or summed by a neuron" if isinstance(join, n.Add) else "")
                + ". Change the model so a synapse reads the joined spikes"
            )
    return None


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Distribute every Add and Concat over the nodes that read it (module docstring)."""
    while (rewritten := _step(graph)) is not None:
        graph = rewritten
    # A join whose every consumer was rewritten is read by nothing now.
    consumed = {s for node in graph for s in node.sources}
    return graph.replace_nodes(node for node in graph if not (isinstance(node, _JOINS) and node.name not in consumed))


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float64 teacher-forced membranes within :data:`TOLERANCE`; no Add or Concat left."""
    return tolerance_contract(
        "DistributeJoins", before, after, ctx.probe, TOLERANCE, "weights copied, only the summation order changes",
        folded=_JOINS,
    )


DistributeJoins = Pass(name="DistributeJoins", run=run, check=check, contract="float-tolerance")
"""Split every synapse that reads an Add or Concat into one synapse per source (float-tolerance, 1e-9)."""
