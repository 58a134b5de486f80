"""Compare two runs layer by layer and name the first place they differ.

Every parity check of the project (torch vs float IR, float IR vs ONNX,
integer reference vs fixed-point simulator vs Lava) reduces to comparing
per-layer traces ``name -> [T, B, ...]`` and, when they differ, naming the
first divergence: layer, timestep, sample, neuron, expected, actual
(STYLE.md principle 3).

"First" means the smallest timestep, then the earliest layer in the given
layer order, then the first sample, then the first neuron in C-major order.
In the aligned (layer-major) view every layer at step t depends only on
steps <= t of the layers before it, so the first divergence is the one
that can have caused the others.

Spike-exact comparisons: use teacher forcing
--------------------------------------------
In a free-running comparison one flipped spike propagates: every layer
downstream of it, and the same layer at later steps, may then differ for
no fault of its own. To make each layer's mismatches its own, run the
candidate with the reference's spikes forced into every layer
(``run_float(..., forced_spikes=reference.spikes)`` or the simulator's
equivalent): each layer then sees exactly the reference's input, and a
mismatch can only come from that layer's own arithmetic. Only then is
the near-tie classification of :func:`spike_mismatches` meaningful for
every mismatch; free-running, it is meaningful for the first divergence
only. Where forcing is impossible (e.g. inside onnxruntime), check that
the first divergence is a near-tie.

A *near-tie* is a mismatch where the reference membrane ``H`` lies within
``tie_tolerance`` of the layer's threshold: two correct float
implementations that sum in different orders may decide such a neuron
either way (DESIGN.md section 2, parity level 1). Everything else is
*unexplained* and fails a spike-exact contract.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "Divergence",
    "LayerSpikeStats",
    "SpikeComparison",
    "first_divergence",
    "float_tie_tolerance",
    "spike_mismatches",
]


@dataclass(frozen=True)
class Divergence:
    """Where two traces first differ.

    Attributes:
        layer: Layer (node) name.
        timestep: t.
        sample: Index in the batch.
        neuron: Index of the neuron within the layer (per-sample shape, C-major).
        expected: The reference value.
        actual: The candidate value.
    """

    layer: str
    timestep: int
    sample: int
    neuron: tuple[int, ...]
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return (
            f"layer {self.layer!r} t={self.timestep} sample {self.sample} neuron {self.neuron}: "
            f"expected {_show(self.expected)}, got {_show(self.actual)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``ContractResult.first_divergence`` and reports)."""
        out = asdict(self)
        out["neuron"] = list(self.neuron)
        return out


@dataclass(frozen=True)
class LayerSpikeStats:
    """Spike agreement of one layer.

    Attributes:
        compared: Spike values compared (T * B * neurons).
        total_spikes: Spikes in the reference.
        mismatches: Positions where the candidate differs.
        near_ties: Mismatches whose reference membrane is within the tie tolerance.
        unexplained: ``mismatches - near_ties``.
    """

    compared: int
    total_spikes: int
    mismatches: int
    near_ties: int
    unexplained: int


@dataclass(frozen=True)
class SpikeComparison:
    """Result of :func:`spike_mismatches` over all layers.

    Attributes:
        total_spikes: Spikes in the reference over all layers.
        mismatches: Differing positions.
        near_ties: Mismatches explained by a membrane within the tie tolerance of the threshold.
        unexplained: Mismatches that are not near-ties.
        first_unexplained: The first unexplained mismatch (module docstring for "first"), or None.
        per_layer: Layer name -> its :class:`LayerSpikeStats`, in layer order.
        compared: Spike values compared over all layers.
        first_mismatch: The first mismatch of any kind, or None.
    """

    total_spikes: int
    mismatches: int
    near_ties: int
    unexplained: int
    first_unexplained: Divergence | None
    per_layer: dict[str, LayerSpikeStats] = field(default_factory=dict)
    compared: int = 0
    first_mismatch: Divergence | None = None

    @property
    def ok(self) -> bool:
        """True when every mismatch is a near-tie."""
        return self.unexplained == 0

    def summary(self) -> str:
        """One line with the numbers, and the first unexplained mismatch if any."""
        line = (
            f"{self.compared} spike values compared ({self.total_spikes} reference spikes): "
            f"{self.mismatches} mismatches, {self.near_ties} near-ties, {self.unexplained} unexplained"
        )
        return line + (f"; first unexplained: {self.first_unexplained}" if self.first_unexplained else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "compared": self.compared,
            "total_spikes": self.total_spikes,
            "mismatches": self.mismatches,
            "near_ties": self.near_ties,
            "unexplained": self.unexplained,
            "first_unexplained": self.first_unexplained.to_dict() if self.first_unexplained else None,
            "first_mismatch": self.first_mismatch.to_dict() if self.first_mismatch else None,
            "per_layer": {name: asdict(stats) for name, stats in self.per_layer.items()},
        }


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _scalar(value: np.generic) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _pair_of(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], layer: str
) -> tuple[np.ndarray, np.ndarray]:
    for role, trace in (("reference", reference), ("candidate", candidate)):
        if layer not in trace:
            raise KeyError(f"layer {layer!r} is missing from the {role} trace (has {sorted(trace)[:8]})")
    ref, cand = np.asarray(reference[layer]), np.asarray(candidate[layer])
    if ref.shape != cand.shape:
        raise ValueError(
            f"layer {layer!r}: reference trace has shape {ref.shape}, candidate {cand.shape}; "
            "both must be [T, B, ...] with the same T, batch and layer shape"
        )
    if ref.ndim < 2:
        raise ValueError(f"layer {layer!r}: traces must be [T, B, ...], got shape {ref.shape}")
    return ref, cand


def _differs(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Elementwise inequality; NaN equals NaN (a NaN in both runs is agreement, not divergence)."""
    diff = ref != cand
    if ref.dtype.kind == "f" or cand.dtype.kind == "f":
        diff &= ~(np.isnan(ref.astype(np.float64)) & np.isnan(cand.astype(np.float64)))
    return diff


def _divergence_at(layer: str, mask: np.ndarray, ref: np.ndarray, cand: np.ndarray) -> Divergence | None:
    """The first True of ``mask`` ([T, B, ...]) by (t, sample, neuron)."""
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return None
    index = np.unravel_index(int(hits[0]), mask.shape)
    return Divergence(
        layer=layer,
        timestep=int(index[0]),
        sample=int(index[1]),
        neuron=tuple(int(i) for i in index[2:]),
        expected=_scalar(ref[index]),
        actual=_scalar(cand[index]),
    )


def _first(layer_masks: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Divergence | None:
    """First divergence over layers: smallest t, then layer order, then sample and neuron."""
    best: tuple[int, int] | None = None
    for position, (_, mask, _, _) in enumerate(layer_masks):
        per_t = mask.reshape(mask.shape[0], -1).any(axis=1)
        if per_t.any():
            key = (int(np.argmax(per_t)), position)
            best = key if best is None or key < best else best
    if best is None:
        return None
    layer, mask, ref, cand = layer_masks[best[1]]
    only_t = np.zeros_like(mask)
    only_t[best[0]] = mask[best[0]]
    return _divergence_at(layer, only_t, ref, cand)


def first_divergence(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    layer_order: Sequence[str],
) -> Divergence | None:
    """The first place where two traces differ, or None when they are identical.

    Args:
        reference: Layer name -> ``[T, B, ...]`` trace (spikes, membranes, ...)
            of the run taken as correct.
        candidate: The same layers from the run under test.
        layer_order: The layers to compare, in data-flow order. Layers not
            listed are ignored.

    Returns:
        The divergence at the smallest timestep, then the earliest layer in
        ``layer_order``, then the first sample and neuron; values compare
        with ``!=`` (exact), NaN matching NaN.

    Raises:
        KeyError: A listed layer is missing from either trace.
        ValueError: A layer's two traces differ in shape or are not ``[T, B, ...]``.
    """
    masks = []
    for layer in layer_order:
        ref, cand = _pair_of(reference, candidate, layer)
        masks.append((layer, _differs(ref, cand), ref, cand))
    return _first(masks)


def float_tie_tolerance(
    membrane: np.ndarray, threshold: float, ulps: float = 4.0, dtype: type = np.float32
) -> float:
    """An absolute tie tolerance of ``ulps`` units in the last place.

    The unit is the ``dtype`` spacing at ``max(max|H|, threshold)``: the
    largest rounding step any sum of this layer can take, so two summation
    orders of the same currents differ by a few of them at most.

    Args:
        membrane: The layer's reference membranes ``H`` (any shape).
        threshold: The threshold ``H`` is compared with.
        ulps: How many units in the last place count as a tie.
        dtype: The arithmetic's float type.
    """
    values = np.abs(np.asarray(membrane, dtype=np.float64))
    finite = values[np.isfinite(values)]
    scale = max(float(finite.max()) if finite.size else 0.0, float(np.abs(threshold).max()))
    return float(ulps) * float(np.spacing(dtype(scale)))


def spike_mismatches(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    membranes: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float],
    tie_tolerance: float | Mapping[str, float],
    layer_order: Sequence[str] | None = None,
) -> SpikeComparison:
    """Count spike mismatches and split them into near-ties and unexplained ones.

    Make the candidate run teacher-forced (module docstring) so that every
    layer's mismatches are its own.

    Args:
        reference: Layer -> ``[T, B, ...]`` spikes of the reference run.
        candidate: Layer -> spikes of the run under test (same shapes).
        membranes: Layer -> ``[T, B, ...]`` reference membranes ``H`` (the value
            compared with the threshold); needed only for layers with mismatches.
        thresholds: Layer -> the threshold ``H`` is compared with (for a layer
            with MPR, the folded threshold ``phi^-1(vth)``): a number, or a
            ``(C,)`` array of per-channel thresholds.
        tie_tolerance: Absolute distance ``|H - threshold|`` within which a
            mismatch counts as a near-tie; one number, or one per layer
            (see :func:`float_tie_tolerance`).
        layer_order: Layers to compare in data-flow order; default: the
            reference's keys in their order.

    Returns:
        The :class:`SpikeComparison`; ``ok`` is True when nothing is unexplained.

    Raises:
        KeyError: A layer is missing from a trace, or a layer with
            mismatches has no membrane, threshold or tolerance.
        ValueError: Shapes differ.
    """
    order = list(reference) if layer_order is None else list(layer_order)
    per_layer: dict[str, LayerSpikeStats] = {}
    mismatch_masks, unexplained_masks = [], []
    for layer in order:
        ref, cand = _pair_of(reference, candidate, layer)
        mismatch = _differs(ref, cand)
        near = np.zeros_like(mismatch)
        count = int(mismatch.sum())
        if count:
            h = _layer_value(membranes, layer, "membrane")
            h = np.asarray(h, dtype=np.float64)
            if h.shape != ref.shape:
                raise ValueError(f"layer {layer!r}: membranes have shape {h.shape}, spikes {ref.shape}")
            threshold = _layer_value(thresholds, layer, "threshold")
            if isinstance(threshold, np.ndarray):  # one per channel: broadcast over [T, B, C, ...]
                threshold = threshold.astype(np.float64).reshape((-1,) + (1,) * (h.ndim - 3))
            else:
                threshold = float(threshold)
            tolerance = float(
                _layer_value(tie_tolerance, layer, "tie tolerance")
                if isinstance(tie_tolerance, Mapping)
                else tie_tolerance
            )
            near = mismatch & (np.abs(h - threshold) <= tolerance)
        unexplained = mismatch & ~near
        per_layer[layer] = LayerSpikeStats(
            compared=int(ref.size),
            total_spikes=int(np.count_nonzero(ref)),
            mismatches=count,
            near_ties=int(near.sum()),
            unexplained=int(unexplained.sum()),
        )
        mismatch_masks.append((layer, mismatch, ref, cand))
        unexplained_masks.append((layer, unexplained, ref, cand))
    return SpikeComparison(
        compared=sum(s.compared for s in per_layer.values()),
        total_spikes=sum(s.total_spikes for s in per_layer.values()),
        mismatches=sum(s.mismatches for s in per_layer.values()),
        near_ties=sum(s.near_ties for s in per_layer.values()),
        unexplained=sum(s.unexplained for s in per_layer.values()),
        first_unexplained=_first(unexplained_masks),
        first_mismatch=_first(mismatch_masks),
        per_layer=per_layer,
    )


def _layer_value(values: Mapping[str, Any], layer: str, what: str) -> Any:
    if layer not in values:
        raise KeyError(f"layer {layer!r} has spike mismatches but no reference {what} was given")
    return values[layer]
