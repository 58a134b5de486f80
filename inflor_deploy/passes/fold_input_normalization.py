"""FoldInputNormalization: fold a per-channel input normalization into the synapses that read it.

The paper normalizes every image channel to mean 0, variance 1, so the
trained network sees ``Y[c] = (X[c] - m[c]) / s[c]`` (an IR
:class:`~inflor_deploy.ir.Normalize` after the Input). The map is affine
per channel, so every synapse reading Y can read the raw input X instead,
and the chip receives raw 8-bit pixels. For a synapse with weights W and
bias b:

* ``Linear`` (input flattened C-major, index k of channel c(k))::

      W'[o, k] = W[o, k] / s[c(k)]          b'[o] = b[o] - sum_k W[o, k] * m[c(k)] / s[c(k)]

* ``Conv2d`` (stride, groups, zero padding p): the padding of Y is zero *in
  normalized units*, where X would need ``m[c]``, so a border output sees
  fewer taps and its bias changes less. With ``V(i, j)`` the taps of output
  ``(i, j)`` that land inside the map (padded taps contribute 0 both ways)::

      Y-conv[o, i, j] = b[o] + sum_{(c,a,b) in V(i,j)} W[o,c,a,b] (X - m[c]) / s[c]
                      = b'[o, i, j] + sum_{(c,a,b) in V(i,j)} W'[o,c,a,b] X
      W'[o, c, a, b] = W[o, c, a, b] / s[c(o, c)]
      b'[o, i, j]    = b[o] - sum_{(c,a,b) in V(i,j)} W[o,c,a,b] m[c] / s[c]

  (``c(o, c)`` the input channel of group-local channel c). ``b'`` is the
  zero-padded convolution of the constant image ``m / s`` with W, taken
  from ``b``: a per-output-position bias map (``Conv2d.bias`` of shape
  ``[O, OH, OW]``); without padding every output sees every tap and the
  bias stays per channel.

W', b' are computed in float64 and stored as float32.

Preconditions (:class:`PassError` naming the node and the fix): a Normalize
reads the Input directly, and every node reading it is a Conv2d or a
Linear (run after FoldBatchNorm and FoldAveragePool, which leave only those).

Invariant: the rewritten synapses compute exactly the normalized ones in
real arithmetic. The only errors are the float32 roundings of W' and b':
at most ``2^-24 (|b'| + sum |W' X|)`` per output, hence the contract:
float64 teacher-forced membranes agree within 1e-5 relative (``max |dH| /
max(1, max |H|)``), which holds unless the normalization cancels a current
more than ~160-fold; spike mismatches only as near-ties within that band.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import tolerance_contract

#: Relative tolerance of the contract (module docstring).
TOLERANCE = 1e-5


def _fold_linear(syn: n.Linear, mean: np.ndarray, std: np.ndarray, shape: tuple[int, ...]) -> n.Linear:
    per_channel = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    scale = np.repeat(1.0 / std, per_channel)  # 1 / s[c(k)], C-major flattening
    shift = np.repeat(mean / std, per_channel)  # m[c(k)] / s[c(k)]
    weight = np.asarray(syn.weight, np.float64)
    bias = np.zeros(weight.shape[0]) if syn.bias is None else np.asarray(syn.bias, np.float64)
    return dataclasses.replace(
        syn, weight=(weight * scale).astype(np.float32), bias=(bias - weight @ shift).astype(np.float32)
    )


def _fold_conv(syn: n.Conv2d, mean: np.ndarray, std: np.ndarray, shape: tuple[int, ...]) -> n.Conv2d:
    weight = np.asarray(syn.weight, np.float64)
    out_c, cg, _, _ = weight.shape
    per_group = out_c // syn.groups
    # Input channel of (output o, group-local channel c): (o // per_group) * cg + c.
    channel = (np.arange(out_c)[:, None] // per_group) * cg + np.arange(cg)[None, :]
    folded = weight / std[channel][:, :, None, None]
    # sum over the valid taps of W * m / s: the zero-padded convolution of the constant image m / s.
    image = np.broadcast_to((mean / std)[:, None, None], shape).astype(np.float64)
    with torch.no_grad():
        taps = F.conv2d(torch.from_numpy(image[None].copy()), torch.from_numpy(weight), None, syn.stride,
                        syn.padding, 1, syn.groups)[0].numpy()  # fmt: skip
    bias = np.zeros(out_c) if syn.bias is None else np.asarray(syn.bias, np.float64)
    bias = (bias[:, None, None] if bias.ndim == 1 else bias) - taps
    if not any(syn.padding):  # every output sees every tap: the shift is the same across positions
        bias = bias[:, 0, 0]
    return dataclasses.replace(syn, weight=folded.astype(np.float32), bias=bias.astype(np.float32))


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Fold every Normalize into the synapses that read it (see the module docstring)."""
    shapes = infer_shapes(graph)
    folded: dict[str, n.Node] = {}
    renamed: dict[str, str] = {}  # Normalize name -> the Input it reads
    for norm in graph.of_type(n.Normalize):
        (source,) = norm.sources
        if not isinstance(graph.node(source), n.Input):
            raise PassError(
                f"Normalize {norm.name!r} reads {source!r}, not the Input; only an input normalization "
                "folds into the first synapses (declare it with --input-mean/--input-std)"
            )
        mean, std = np.asarray(norm.mean, np.float64), np.asarray(norm.std, np.float64)
        for user in graph.consumers(norm.name):
            if isinstance(user, n.Linear):
                folded[user.name] = _fold_linear(user, mean, std, shapes[source])
            elif isinstance(user, n.Conv2d):
                folded[user.name] = _fold_conv(user, mean, std, shapes[source])
            else:
                raise PassError(
                    f"Normalize {norm.name!r} feeds {type(user).__name__} {user.name!r}; it folds only into "
                    "Conv2d and Linear synapses (run FoldBatchNorm and FoldAveragePool first); a model whose "
                    "first layer is not a synapse cannot receive raw pixels"
                )
        renamed[norm.name] = source
    return graph.fold_away(n.Normalize, folded, renamed)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float64 teacher-forced membranes within :data:`TOLERANCE`; no Normalize left."""
    return tolerance_contract(
        "FoldInputNormalization", before, after, ctx.probe, TOLERANCE,
        "float32 rounding of the folded weights and bias map", folded=(n.Normalize,),
    )  # fmt: skip


FoldInputNormalization = Pass(name="FoldInputNormalization", run=run, check=check, contract="float-tolerance")
"""Fold an input normalization into the first synapses (float-tolerance contract, 1e-5 relative)."""
