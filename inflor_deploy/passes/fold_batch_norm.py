"""FoldBatchNorm: fold inference-time (td)BatchNorm into the preceding Conv2d/Linear.

Rewrites every :class:`~inflor_deploy.ir.BatchNorm` ``bn`` whose single source
is a :class:`~inflor_deploy.ir.Conv2d` or :class:`~inflor_deploy.ir.Linear`
``syn`` consumed by nothing else. At inference BatchNorm is an affine map per
output channel c::

    bn(y)[c] = s[c] * y[c] + t[c],   s = gamma / sqrt(var + eps),   t = beta - mean * s

and ``y = W * x + b`` is linear, so their composition is one synapse::

    W'[c, ...] = W[c, ...] * s[c]        b'[c] = (b[c] or 0) * s[c] + t[c]

(per output channel, hence valid for grouped convolutions too). ``s``, ``t``,
``W'`` and ``b'`` are computed in float64 and stored as float32. The folded
synapse keeps the synapse's name; the BatchNorm's consumers read from it.

Preconditions (each raises :class:`PassError` naming the node and the fix):

* the BatchNorm's source is a Conv2d or Linear (not a neuron, the input, a
  pooling layer, ...);
* that synapse feeds only this BatchNorm (otherwise its other consumers
  would see the normalized output too);
* ``var + eps > 0`` for every channel.

Invariant: ``bn(W x + b) == W' x + b'`` exactly in real arithmetic. The only
error is the float32 rounding of ``W'`` and ``b'`` (relative 2^-24 per
value), hence the contract: float64 teacher-forced membranes agree within
1e-5 relative (``max |dH| / max(1, max |H|)``), with spike mismatches
allowed only as near-ties within that band of the threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import tolerance_contract

TOLERANCE = 1e-5
"""Relative membrane tolerance: float32 storage of folded weights (2^-24 each) summed over
a layer's fan-in and T steps stays well below this on the paper's layer sizes."""


def _folded(syn: n.Conv2d | n.Linear, bn: n.BatchNorm) -> n.Conv2d | n.Linear:
    var_eps = np.asarray(bn.var, np.float64) + float(bn.eps)
    if not (var_eps > 0).all():
        channel = int(np.argmin(var_eps))
        raise PassError(
            f"BatchNorm {bn.name!r}: var + eps = {var_eps[channel]:g} <= 0 in channel {channel}; "
            "the running variance must be non-negative with eps > 0 (re-export the model in eval mode)"
        )
    s = np.asarray(bn.gamma, np.float64) / np.sqrt(var_eps)
    t = np.asarray(bn.beta, np.float64) - np.asarray(bn.mean, np.float64) * s
    weight = np.asarray(syn.weight, np.float64)
    weight = weight * s.reshape((-1,) + (1,) * (weight.ndim - 1))
    bias = np.zeros_like(s) if syn.bias is None else np.asarray(syn.bias, np.float64)
    bias = bias * s + t
    return dataclasses.replace(syn, weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Fold every BatchNorm into its source synapse (see the module docstring)."""
    folded: dict[str, n.Node] = {}  # synapse name -> folded synapse
    renamed: dict[str, str] = {}  # BatchNorm name -> the synapse that now produces its output
    for bn in graph.of_type(n.BatchNorm):
        (source_name,) = bn.sources
        syn = graph.node(source_name)
        if not isinstance(syn, (n.Conv2d, n.Linear)):
            raise PassError(
                f"BatchNorm {bn.name!r} follows {type(syn).__name__} {syn.name!r}, not a Conv2d/Linear, "
                "so it cannot fold into a synapse; place it directly after a convolution or linear "
                "layer in the model (as tdBN is) or remove it"
            )
        others = [c.name for c in graph.consumers(syn.name) if c is not bn]
        if others:
            raise PassError(
                f"BatchNorm {bn.name!r} cannot fold into {syn.name!r}: {syn.name!r} also feeds "
                f"{others}, which would then see normalized values; give the BatchNorm its own "
                "synapse (duplicate the layer) in the model"
            )
        folded[syn.name] = _folded(syn, bn)
        renamed[bn.name] = syn.name
    return graph.fold_away(n.BatchNorm, folded, renamed)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float64 teacher-forced membranes within :data:`TOLERANCE`; no BatchNorm left."""
    return tolerance_contract(
        "FoldBatchNorm", before, after, ctx.probe, TOLERANCE, "float32 rounding of folded weights",
        folded=(n.BatchNorm,),
    )


FoldBatchNorm = Pass(name="FoldBatchNorm", run=run, check=check, contract="float-tolerance")
"""Fold BatchNorm into the preceding Conv2d/Linear (float-tolerance contract, 1e-5 relative)."""
