"""How a pass is written (read this before adding one).

A pass is a pure function ``run(graph, ctx) -> graph`` in its own module:
it never mutates its input (IR arrays are read-only) and returns a new
:class:`~inflor_deploy.ir.Graph`. Its docstring states

* what it rewrites,
* the preconditions it checks, raising :class:`PassError` naming the node
  and the fix when one does not hold,
* the invariant it keeps, e.g. "phi is strictly increasing, so
  phi(h) >= vth  <=>  h >= phi^-1(vth)".

Every pass also has a *contract*: a function ``check(before, after, ctx)``
that runs both graphs on the context's seeded probe inputs and returns a
:class:`ContractResult` whose ``kind`` is one of

* ``bit-exact`` — every integer spike and membrane value equal;
* ``spike-exact`` — every spike equal, except ties within float rounding
  of the threshold, which are counted in ``metrics``;
* ``float-tolerance`` — currents equal within a stated tolerance;
* ``statistical`` — agreement measured and reported, not required.

The pipeline (:mod:`inflor_deploy.passes.pipeline`) validates the graph
after every pass and runs its contract; a broken contract raises
:class:`ContractViolation`, it never just warns. A pass is bundled as a
:class:`Pass` value named like the rewrite (``FoldBatchNorm``) and listed
explicitly in a pipeline; nothing registers itself on import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.targets import Target

ContractKind = Literal["bit-exact", "spike-exact", "float-tolerance", "statistical"]


class PassError(InflorError):
    """A pass's precondition does not hold; the message names the node and the fix."""


class ContractViolation(InflorError):
    """A pass broke its numerical contract; the message names the first divergence."""


@dataclass(frozen=True)
class QuantizationOptions:
    """User choices for ``QuantizeFixedPoint``.

    Attributes:
        input_grade_scale: Integer grades per unit of input; None picks the
            Input's natural scale (``quantize.default_grade_scale``: 255 for
            pixels in [0, 1], 1 for raw 0..255 pixels).
        weight_fill: Fraction of the weight range the largest |weight| of a
            layer may use (1.0 fills it).
        headroom: Which bounds the scale must respect: ``"u"`` (u can never
            wrap; always enforced), ``"probe"`` (default: also v stays below
            half its range at the largest membrane the float layer reached on
            the compile probe, so typical inputs do not saturate it) or
            ``"uv"`` (v can never saturate within a sample window, whatever the
            input, at the cost of coarser weights).
        overflow: What to do with a layer whose worst case can still
            saturate v, or whose threshold or reset amount rounds with a
            relative error above ``MAX_THRESHOLD_ROUNDING`` (1 %):
            ``"warn"`` records it in the report (the simulators count real
            saturation events), ``"error"`` refuses to compile.
        layer_scales: Layer name -> the scale to use instead of choosing one:
            the integer grid a fine-tuned checkpoint was trained against
            (:mod:`inflor_deploy.grid`). The quantizer checks it against the
            target (weights, bias and threshold ranges, the u headroom) and
            refuses it when it no longer fits; None chooses every scale.
        weight_bits: Mantissa bits of every synapse's weights (compression); None
            takes the target's ``weight_bits`` (8). Lava's ``num_weight_bits``.
        prune: Fraction of each synapse's connections removed, smallest |weight|
            first (magnitude pruning, per synapse; identity shortcuts are kept);
            0 keeps them all. Pruned synapses are stored as their kept connections.
        plain_layers: Quantize every layer as a plain Loihi layer: no bias
            source, the target's preferred ``bias_exp`` (6), no negative
            weight exponent, so the bias and u-headroom ranges cap a layer's
            scale as before issue 12. The layout NetX's chain format holds
            (``export --format netx``); False (default) uses every exact
            construction for precision (docs/quantization.md).
    """

    input_grade_scale: float | None = None
    weight_fill: float = 1.0
    headroom: Literal["u", "probe", "uv"] = "probe"
    overflow: Literal["error", "warn"] = "warn"
    layer_scales: dict[str, float] | None = None
    weight_bits: int | None = None
    prune: float = 0.0
    plain_layers: bool = False

    def __post_init__(self):
        if self.weight_bits is not None and (
            isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 8
        ):
            raise PassError(f"weight_bits must be an integer in 2..8 (Lava's num_weight_bits), got {self.weight_bits!r}; "
                            "use --weight-bits 8 for full precision")
        if not 0 <= self.prune < 1:
            raise PassError(f"prune must be a fraction in [0, 1), got {self.prune!r}; e.g. --prune 0.5 removes half "
                            "of each synapse's connections")
        if self.input_grade_scale is not None and not self.input_grade_scale > 0:
            raise PassError(f"input_grade_scale must be > 0, got {self.input_grade_scale}")
        if not 0 < self.weight_fill <= 1:
            raise PassError(f"weight_fill must be in (0, 1], got {self.weight_fill}")
        if self.headroom not in ("u", "probe", "uv") or self.overflow not in ("error", "warn"):
            raise PassError("headroom must be 'u', 'probe' or 'uv' and overflow 'error' or 'warn'")
        if self.layer_scales is not None and not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.layer_scales.values()
        ):
            raise PassError(f"layer_scales must map layer names to finite scales > 0, got {self.layer_scales}")


@dataclass(frozen=True)
class PassContext:
    """What every pass may read besides the graph.

    Attributes:
        target: The hardware target (numerics, limits).
        probe: Seeded probe inputs ``[B, C, H, W]`` for contract checks.
        quantization: Options for ``QuantizeFixedPoint``.
    """

    target: Target
    probe: np.ndarray
    quantization: QuantizationOptions = QuantizationOptions()


@dataclass(frozen=True)
class ContractResult:
    """The outcome of one contract check.

    Attributes:
        pass_name: The pass checked.
        kind: The contract (see module docstring).
        ok: Whether it held.
        summary: One line with the measured numbers.
        metrics: The numbers themselves (JSON-serialisable).
        first_divergence: Where it broke: layer, timestep, neuron, expected, actual.
    """

    pass_name: str
    kind: ContractKind
    ok: bool
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    first_divergence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": self.pass_name,
            "contract": self.kind,
            "ok": self.ok,
            "summary": self.summary,
            "metrics": self.metrics,
            "first_divergence": self.first_divergence,
        }


@dataclass(frozen=True)
class Pass:
    """A named rewrite and its contract.

    Attributes:
        name: Verb-object name, e.g. ``FoldBatchNorm``.
        run: The pure rewrite ``(graph, ctx) -> graph``.
        check: The contract ``(before, after, ctx) -> ContractResult``.
        contract: The contract kind, for documentation and manifests.
    """

    name: str
    run: Callable[[Graph, PassContext], Graph]
    check: Callable[[Graph, Graph, PassContext], ContractResult]
    contract: ContractKind
