"""FoldAveragePool: fold average pooling (and Flatten) into the next synapse.

Loihi has no pooling operation, but average pooling is linear, so the
synapse that reads the pooled map can read the un-pooled map instead with
expanded weights. This pass rewrites, for every
:class:`~inflor_deploy.ir.AvgPool2d` P (kernel ``(kh, kw)``, stride
``(sh, sw)``) reading a ``(C, H, W)`` map X from a node S:

* ``P -> [Flatten ->] Linear``: the Linear reads S directly with::

      W'[o, c, y, x] = sum over (i, j, a, b) with sh*i + a = y, sw*j + b = x,
                       a < kh, b < kw  of  W[o, c, i, j] / (kh * kw)

  flattened C-major. With stride == kernel this is
  ``W'[o, c, y, x] = W[o, c, y // kh, x // kw] / (kh * kw)``, zero on the rows
  and columns beyond the pooled extent when H or W is not divisible (pooling
  drops them too). Global pooling (kernel == whole map) is the same rule.

* ``P -> Conv2d(K, stride s, padding p)``: with P(y, x) the pooled value,
  the conv computes ``sum_{a,b} W[o, c, a, b] * P[c, s*i + a - p, s*j + b - p]``
  and ``P[c, y', x'] = 1/(kh kw) sum_{da, db} X[c, kh*y' + da, kw*x' + db]``.
  Substituting ``y' = s*i + a - p`` gives the X row
  ``kh*(s*i + a - p) + da = (s*kh)*i + (kh*a + da) - kh*p``: a convolution of X
  with kernel ``(K*kh, K*kw)``, stride ``s*k``, padding ``p*k`` and::

      W'[o, c, kh*a + da, kw*b + db] = W[o, c, a, b] / (kh * kw)

  The identity needs non-overlapping pools (stride == kernel) and H, W
  divisible by the kernel: only then do the zero-padded pooled positions
  ``y' < 0`` or ``y' >= H / kh`` map onto exactly the zero-padded X rows.
  The output size is unchanged: ``(H + 2 p kh - K kh) // (s kh) + 1
  == (H/kh + 2p - K) // s + 1``.

* ``Flatten -> Linear`` (no pooling): the Flatten is dropped; a Linear
  flattens its input implicitly (C-major), so its weights stay as they are.

Weights are expanded in float64 and stored as float32.

Preconditions (raise :class:`PassError` naming the node and the fix): a
pooling layer feeds only Conv2d, Linear or Flatten -> Linear; a Flatten
feeds only Linear; a pooling layer that feeds a Conv2d has stride == kernel
and a map divisible by the kernel.

Postcondition: no AvgPool2d or Flatten remains (checked by the contract).

Invariant: the expanded synapse computes exactly the pooled one in real
arithmetic. Contract: float64 teacher-forced membranes equal within 1e-9
relative when every folded pool has a power-of-two area and does not
overlap (``w / (kh kw)`` is then exact in float32; only the float64
summation order differs); otherwise within 1e-5 relative, the float32
rounding of the divided weights, as for ``FoldBatchNorm``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import tolerance_contract

EXACT_TOLERANCE = 1e-9
"""Relative tolerance when every pool divides by a power of two without overlap (exact weights)."""
ROUNDED_TOLERANCE = 1e-5
"""Relative tolerance otherwise: float32 rounding of ``w / (kh kw)``, as FoldBatchNorm."""


def _expand_linear(linear: n.Linear, pool: n.AvgPool2d, in_shape: tuple[int, ...], source: str) -> n.Linear:
    c, h, w = in_shape
    kh, kw = pool.kernel
    sh, sw = pool.stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    weight = np.asarray(linear.weight, np.float64).reshape(-1, c, ho, wo) / (kh * kw)
    expanded = np.zeros((weight.shape[0], c, h, w))
    # Each pooled position (i, j) averages X[sh*i + a, sw*j + b] for a < kh, b < kw.
    for a in range(kh):
        for b in range(kw):
            expanded[:, :, a : a + sh * ho : sh, b : b + sw * wo : sw] += weight
    return dataclasses.replace(
        linear, sources=(source,), weight=expanded.reshape(weight.shape[0], -1).astype(np.float32)
    )


def _expand_conv(conv: n.Conv2d, pool: n.AvgPool2d, in_shape: tuple[int, ...], source: str) -> n.Conv2d:
    _, h, w = in_shape
    kh, kw = pool.kernel
    if tuple(pool.stride) != tuple(pool.kernel):
        raise PassError(
            f"AvgPool2d {pool.name!r} (kernel {pool.kernel}, stride {pool.stride}) overlaps, so it "
            f"cannot fold into conv {conv.name!r}; use stride == kernel in the model"
        )
    if h % kh or w % kw:
        raise PassError(
            f"AvgPool2d {pool.name!r} pools a {h}x{w} map with kernel {kh}x{kw}, which does not "
            f"divide it, so it cannot fold into conv {conv.name!r} (the dropped rows/columns would "
            "reappear inside the expanded kernel's padding); make the map size a multiple of the "
            "pooling kernel (e.g. change the image size or the padding before it)"
        )
    weight = np.asarray(conv.weight, np.float64) / (kh * kw)
    # np.repeat maps index kh*a + da back to a: W'[o, c, kh*a + da, kw*b + db] = W[o, c, a, b] / (kh kw).
    weight = np.repeat(np.repeat(weight, kh, axis=2), kw, axis=3)
    return dataclasses.replace(
        conv,
        sources=(source,),
        weight=weight.astype(np.float32),
        stride=(conv.stride[0] * kh, conv.stride[1] * kw),
        padding=(conv.padding[0] * kh, conv.padding[1] * kw),
    )


def _linear_after_flatten(graph: Graph, flatten: n.Flatten) -> list[n.Linear]:
    consumers = graph.consumers(flatten.name)
    bad = [c for c in consumers if not isinstance(c, n.Linear)]
    if bad:
        raise PassError(
            f"Flatten {flatten.name!r} feeds {type(bad[0]).__name__} {bad[0].name!r}; only a Linear "
            "may follow a Flatten (it flattens implicitly), so the Flatten cannot be dropped; "
            "remove the Flatten or put a Linear after it"
        )
    return consumers


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Fold every AvgPool2d into its consuming synapses and drop every Flatten."""
    shapes = infer_shapes(graph)
    replaced: dict[str, n.Node] = {}  # consumer name -> rewritten consumer
    for pool in graph.of_type(n.AvgPool2d):
        (source,) = pool.sources
        for consumer in graph.consumers(pool.name):
            if isinstance(consumer, n.Conv2d):
                replaced[consumer.name] = _expand_conv(consumer, pool, shapes[source], source)
            elif isinstance(consumer, n.Linear):
                replaced[consumer.name] = _expand_linear(consumer, pool, shapes[source], source)
            elif isinstance(consumer, n.Flatten):
                for linear in _linear_after_flatten(graph, consumer):
                    replaced[linear.name] = _expand_linear(linear, pool, shapes[source], source)
            else:
                raise PassError(
                    f"AvgPool2d {pool.name!r} feeds {type(consumer).__name__} {consumer.name!r}; Loihi "
                    "has no pooling op, so pooling must be followed by a Conv2d or Linear (optionally "
                    "via Flatten) to fold into; change the model so a synapse reads the pooled map"
                )
    for flatten in graph.of_type(n.Flatten):
        (source,) = flatten.sources
        if isinstance(graph.node(source), n.AvgPool2d):
            continue  # handled with its pool above
        for linear in _linear_after_flatten(graph, flatten):
            # A Linear reads its input flattened C-major; the Flatten changes nothing it sees.
            replaced[linear.name] = dataclasses.replace(linear, sources=(source,))
    nodes = [replaced.get(node.name, node) for node in graph if not isinstance(node, (n.AvgPool2d, n.Flatten))]
    return graph.replace_nodes(nodes)


def _exact(pool: n.AvgPool2d) -> bool:
    area = pool.kernel[0] * pool.kernel[1]
    no_overlap = pool.stride[0] >= pool.kernel[0] and pool.stride[1] >= pool.kernel[1]
    return no_overlap and area & (area - 1) == 0


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float64 teacher-forced membranes within tolerance; no AvgPool2d or Flatten left."""
    pools = before.of_type(n.AvgPool2d)
    if all(_exact(pool) for pool in pools):
        tol, why = EXACT_TOLERANCE, "power-of-two pool areas make the expanded weights exact"
    else:
        tol, why = ROUNDED_TOLERANCE, "float32 rounding of weights divided by a non-power-of-two pool area"
    return tolerance_contract(
        "FoldAveragePool", before, after, ctx.probe, tol, why, folded=(n.AvgPool2d, n.Flatten)
    )


FoldAveragePool = Pass(name="FoldAveragePool", run=run, check=check, contract="float-tolerance")
"""Fold AvgPool2d/Flatten into the next Conv2d/Linear (float-tolerance contract)."""
