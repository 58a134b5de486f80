"""Probe inputs for contract checks, and the layer-by-layer comparison the contracts share.

A contract runs the graph before and after a pass on the same probe images
and compares every neuron layer (see :mod:`inflor_deploy.passes.base`):

* :func:`make_probe` makes the seeded probe images (or checks real ones);
* :func:`compare_runs` compares two recorded
  :class:`~inflor_deploy.backends.sim.float_ir.FloatRun` results with
  :mod:`inflor_deploy.backends.sim.compare` (spike mismatches, near-ties, first
  divergence) and measures the membrane differences;
* :func:`tolerance_contract` is the whole ``float-tolerance`` contract that
  the folding passes share.

Float contracts run *teacher-forced* (``run_float(..., forced_spikes=...)``
fed with the before-graph's spikes): every layer of the after-graph sees
exactly the spikes the before-graph's layer saw, so a difference in a layer
comes from that layer's own arithmetic, never from upstream.

One spike train at a time. Teacher forcing stops differences travelling
*between* layers, not *along* one neuron's own train: once a neuron fires in
one run and not in the other (a near-tie), its soft reset differs by the
reset amount and the rest of that train (that neuron, that sample)
legitimately differs. So only the first mismatch of each train is judged
(near-tie or unexplained, by :func:`inflor_deploy.backends.sim.compare.spike_mismatches`);
the later ones are counted as ``after_first`` and excused. Membranes are
compared up to and including each train's first mismatch, where both runs
have integrated the same history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.nn.mpr import phi_inverse_scalar
from inflor_deploy.passes.base import ContractResult, PassError
from inflor_deploy.backends.sim.compare import Divergence, SpikeComparison, spike_mismatches
from inflor_deploy.backends.sim.float_ir import FloatRun, run_float

SCORES = "scores"
"""Pseudo-layer name under which :func:`compare_runs` reports the class scores."""


def make_probe(graph: Graph, count: int = 8, seed: int = 0, images: np.ndarray | None = None) -> np.ndarray:
    """Probe inputs for contract checks, shaped ``[B, *graph.input.shape]`` (``[B, T, ...]`` for a sequence).

    Without ``images``: ``count`` inputs drawn uniformly from the Input's
    declared ``value_range`` by a seeded generator, so a contract check is
    reproducible; a sequence Input gets frames rounded to integers (events
    or counts, as event cameras give). With ``images``: the caller's real
    data (all of it; ``count`` and ``seed`` are then unused), checked
    against the graph's input.

    Args:
        graph: The graph the probe is for.
        count: Number of random inputs.
        seed: Seed of ``numpy.random.default_rng``.
        images: Real inputs to use instead.

    Returns:
        float32 ``[B, C, H, W]`` (``[B, T, C, H, W]`` for a sequence Input).

    Raises:
        PassError: ``count < 1``, or ``images`` of the wrong shape, not finite
            or outside the declared range.
    """
    source = graph.input
    sequence = source.encoding == "sequence"
    shape = ((graph.timesteps,) if sequence else ()) + tuple(source.shape)
    low, high = source.value_range
    if images is not None:
        images = np.asarray(images)
        if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != shape or images.shape[0] < 1:
            raise PassError(
                f"probe images have shape {tuple(images.shape)}; graph {graph.name!r} needs "
                f"[B, {', '.join(map(str, shape))}] with B >= 1"
            )
        if not np.isfinite(images).all():
            raise PassError(f"probe images contain NaN/inf values; pass finite inputs in [{low:g}, {high:g}]")
        if images.min() < low or images.max() > high:
            raise PassError(f"probe images leave the declared input range [{low:g}, {high:g}]")
        return np.ascontiguousarray(images, dtype=np.float32)
    if count < 1:
        raise PassError(f"probe count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    probe = rng.uniform(low, high, size=(count, *shape))
    if sequence:
        probe = np.rint(probe)
    return np.clip(probe, low, high).astype(np.float32)


def effective_threshold(neuron: n.Neuron) -> float | np.ndarray:
    """The threshold on the raw membrane H: ``phi^-1(vth)`` with MPR, else ``vth`` (per channel: an array)."""
    if isinstance(neuron.vth, np.ndarray):
        if neuron.mpr:
            return np.array([phi_inverse_scalar(v) for v in neuron.vth])
        return np.asarray(neuron.vth, dtype=np.float64)
    return phi_inverse_scalar(neuron.vth) if neuron.mpr else float(neuron.vth)


@dataclass(frozen=True)
class MembraneDiff:
    """How far one layer's membranes (or the scores) are from the reference.

    Attributes:
        layer: Neuron name, or :data:`SCORES`.
        max_abs_diff: Largest ``|H - H_ref|`` over the compared values (each
            train up to and including its first spike mismatch).
        scale: ``max(1, max |H_ref|)``, the denominator of :attr:`rel_diff`.
        max_diff_at: Where ``max_abs_diff`` occurs, or None when equal.
    """

    layer: str
    max_abs_diff: float
    scale: float
    max_diff_at: Divergence | None

    @property
    def rel_diff(self) -> float:
        """``max_abs_diff / max(1, max |H_ref|)``."""
        return self.max_abs_diff / self.scale


@dataclass(frozen=True)
class RunComparison:
    """Result of :func:`compare_runs`.

    Attributes:
        spikes: First mismatches of each train, split into near-ties and
            unexplained ones (:class:`~inflor_deploy.backends.sim.compare.SpikeComparison`).
        after_first: Mismatches later in a train that had already mismatched.
        membranes: One :class:`MembraneDiff` per compared neuron layer in
            graph order, then one for :data:`SCORES`.
        missing: Layers of the reference missing from the run, or of another shape.
        thresholds: Layer -> effective threshold the ties were measured against.
    """

    spikes: SpikeComparison
    after_first: int
    membranes: list[MembraneDiff]
    missing: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def spike_mismatches(self) -> int:
        """Every differing spike: first mismatches plus those after them."""
        return self.spikes.mismatches + self.after_first

    def first_divergence(self) -> dict[str, Any] | None:
        """The first unexplained spike mismatch (with its membrane and threshold), or None."""
        if self.missing:
            return {"layer": self.missing[0], "reason": "layer missing after the pass, or reshaped"}
        first = self.spikes.first_unexplained
        if first is None:
            return None
        out = first.to_dict()
        threshold = self.thresholds.get(first.layer)
        # Per-channel thresholds: the one of the mismatching neuron's channel.
        out["threshold"] = float(threshold[first.neuron[0]]) if isinstance(threshold, np.ndarray) else threshold
        return out

    def worst(self) -> MembraneDiff:
        """The layer with the largest relative membrane difference."""
        return max(self.membranes, key=lambda d: d.rel_diff)


def _membrane_diff(layer: str, ref: np.ndarray, run: np.ndarray, mask: np.ndarray) -> MembraneDiff:
    ref64 = ref.astype(np.float64)
    diff = np.where(mask, np.abs(run.astype(np.float64) - ref64), 0.0)
    scale = max(1.0, float(np.abs(ref64).max(initial=0.0)))
    nan = np.isnan(diff)
    worst = float("nan") if nan.any() else float(diff.max(initial=0.0))
    at = None
    if worst != 0:  # also true for NaN, which is located first
        index = np.unravel_index(int(np.argmax(nan)) if nan.any() else int(np.argmax(diff)), diff.shape)
        at = Divergence(
            layer=layer, timestep=int(index[0]), sample=int(index[1]), neuron=tuple(int(i) for i in index[2:]),
            expected=ref[index].item(), actual=run[index].item(),
        )  # fmt: skip
    return MembraneDiff(layer=layer, max_abs_diff=worst, scale=scale, max_diff_at=at)


def compare_runs(
    graph: Graph, ref: FloatRun, run: FloatRun, tie_band: dict[str, float] | float = 0.0
) -> RunComparison:
    """Compare a run with the reference run, neuron layer by neuron layer, then the scores.

    Both runs must be recorded (``record=True``).

    Args:
        graph: The reference graph (its neurons give the order and thresholds).
        ref: The reference run (the graph before the pass).
        run: The run to judge (the graph after the pass).
        tie_band: Absolute distance ``|H_ref - threshold|`` (threshold from
            :func:`effective_threshold`) within which a train's first
            mismatch counts as a near-tie; one number for all layers or one
            per layer name (missing names: 0, which excuses only a membrane exactly
            at the threshold).
    """
    neurons = [x for x in graph.of_type(n.Neuron) if x.name in ref.spikes]
    missing = [
        x.name for x in neurons
        if x.name not in run.spikes or run.spikes[x.name].shape != ref.spikes[x.name].shape
    ]  # fmt: skip
    layers = [x for x in neurons if x.name not in missing]
    judged: dict[str, np.ndarray] = {}
    membranes: list[MembraneDiff] = []
    after_first = 0
    for neuron in layers:
        expected, actual = ref.spikes[neuron.name], run.spikes[neuron.name]
        mismatch = expected != actual
        T = mismatch.shape[0]
        first = np.where(mismatch.any(0), mismatch.argmax(0), T)  # per train; T: none
        t_index = np.arange(T).reshape((T,) + (1,) * (mismatch.ndim - 1))
        later = t_index > first
        after_first += int((mismatch & later).sum())
        # Later steps of a mismatched train take the reference's spikes: excused, not judged.
        judged[neuron.name] = np.where(later, expected, actual)
        membranes.append(
            _membrane_diff(neuron.name, ref.membranes[neuron.name], run.membranes[neuron.name], ~later)
        )
    if ref.scores.shape == run.scores.shape:
        # Scores are [B, classes]; a leading time axis makes their locations read like the neurons'.
        everywhere = np.ones((1, *ref.scores.shape), bool)
        membranes.append(_membrane_diff(SCORES, ref.scores[None], run.scores[None], everywhere))
    else:
        missing.append(SCORES)
        membranes.append(MembraneDiff(layer=SCORES, max_abs_diff=float("inf"), scale=1.0, max_diff_at=None))
    thresholds = {x.name: effective_threshold(x) for x in layers}
    bands = {x.name: (tie_band.get(x.name, 0.0) if isinstance(tie_band, dict) else tie_band) for x in layers}
    spikes = spike_mismatches(
        {x.name: ref.spikes[x.name] for x in layers}, judged, ref.membranes, thresholds, bands,
        layer_order=[x.name for x in layers],
    )  # fmt: skip
    return RunComparison(spikes=spikes, after_first=after_first, membranes=membranes, missing=missing,
                         thresholds=thresholds)  # fmt: skip


def tolerance_contract(
    pass_name: str,
    before: Graph,
    after: Graph,
    probe: np.ndarray,
    rel_tol: float,
    why: str,
    folded: tuple[type, ...] = (),
) -> ContractResult:
    """The ``float-tolerance`` contract: teacher-forced float64 membranes agree within ``rel_tol``.

    Both graphs run in float64 on ``probe``; the after-graph is fed the
    before-graph's spikes. Per layer, ``max |dH| / max(1, max |H|) <= rel_tol``
    must hold (the scores are held to the same bound). Spike mismatches are
    allowed only as near-ties: a train's first mismatch must lie within
    ``rel_tol * max(1, max |H|)`` of the effective threshold, the only place a
    membrane difference within tolerance can flip a spike.

    Args:
        pass_name: Reported in the result.
        before, after: The graphs before and after the pass.
        probe: Probe images ``[B, C, H, W]``.
        rel_tol: The stated relative tolerance.
        why: One phrase saying where the tolerance comes from (for the summary).
        folded: Node types the pass removes; one left in ``after`` breaks the
            contract (the pass's postcondition).
    """
    ref = run_float(before, probe, record=True, dtype=torch.float64)
    run = run_float(after, probe, record=True, dtype=torch.float64, forced_spikes=ref.spikes)
    band = {name: rel_tol * max(1.0, float(np.abs(h).max(initial=0.0))) for name, h in ref.membranes.items()}
    comparison = compare_runs(before, ref, run, tie_band=band)
    divergence = comparison.first_divergence()
    over = [d for d in comparison.membranes if not d.rel_diff <= rel_tol]  # NaN counts as over
    if divergence is None and over:
        divergence = over[0].max_diff_at.to_dict() if over[0].max_diff_at else {"layer": over[0].layer}
        divergence["reason"] = f"membrane difference {over[0].rel_diff:.3g} relative, above {rel_tol:g}"
    left = [node.name for node in after.of_type(*folded)] if folded else []
    if divergence is None and left:
        divergence = {"layer": left[0], "reason": f"{type(after.node(left[0])).__name__} not folded"}
    worst = comparison.worst()
    spikes = comparison.spikes
    metrics = {
        "tolerance_rel": rel_tol,
        "max_abs_diff": max(d.max_abs_diff for d in comparison.membranes),
        "max_rel_diff": worst.rel_diff,
        "worst_layer": worst.layer,
        "spike_mismatches": comparison.spike_mismatches,
        "near_ties": spikes.near_ties,
        "unexplained": spikes.unexplained,
        "after_first": comparison.after_first,
        "probe_images": int(probe.shape[0]),
        "layers": {d.layer: {"max_abs_diff": d.max_abs_diff, "rel_diff": d.rel_diff} for d in comparison.membranes},
    }  # fmt: skip
    summary = (
        (f"nodes left that should be folded: {left}; " if left else "")
        + f"max |dH| = {metrics['max_abs_diff']:.3g}, {worst.rel_diff:.3g} relative in {worst.layer!r} "
        f"(tolerance {rel_tol:g}: {why}); {comparison.spike_mismatches} spike mismatches "
        f"({spikes.near_ties} near-ties, {spikes.unexplained} unexplained, {comparison.after_first} "
        f"later in a tied train) on {probe.shape[0]} probe images"
    )
    return ContractResult(
        pass_name=pass_name,
        kind="float-tolerance",
        ok=divergence is None,
        summary=summary,
        metrics=metrics,
        first_divergence=divergence,
    )


ROUNDING_ULPS = 4
"""Width of :func:`rounding_contract`'s band: float32 ulps per timestep."""


def rounding_contract(
    pass_name: str,
    before: Graph,
    after: Graph,
    probe: np.ndarray,
    why: str,
    exact_layers: tuple[str, ...] = (),
    offsets: dict[str, float] | None = None,
) -> ContractResult:
    """The ``spike-exact`` contract of a rewrite that changes only float32 rounding.

    Both graphs run in float32 (the arithmetic the model was trained in) on
    ``probe``, the after-graph teacher-forced with the before-graph's spikes.
    Per rewritten layer, with ``M = max(max |H_ref|, max |vth|, max |reset_amount|, |v_reset|)``
    (the largest magnitude any of its operations rounds at) and ``band =
    ROUNDING_ULPS * T * ulp32(M)``: each step of either graph rounds a few of
    its operations by at most ``ulp32(M) / 2`` each, and the leak (tau <= 1)
    never amplifies an earlier difference, so

    * membranes agree within ``band``, up to and including each train's first
      mismatch (a mismatch changes that train's reset from then on);
    * a train's first spike mismatch is a near-tie: ``|H_ref - vth| <= band``
      (counted; anything else is a violation naming the first divergence);
    * layers in ``exact_layers`` (rewrites that keep every float operation)
      agree bitwise: band 0;
    * the scores are identical (the readout sees the forced spikes).

    Args:
        pass_name: Reported in the result.
        before, after: The graphs before and after the pass.
        probe: Probe images ``[B, C, H, W]``.
        why: What changed the rounding (for the summary).
        exact_layers: Layers whose floats the rewrite must not change at all.
        offsets: Layer -> a constant the rewrite subtracted from the membrane
            (``ShiftResetToZero``: v_reset); the reference's H is shifted by it
            (in float64) before comparing, and thresholds are the after-graph's.
    """
    import dataclasses as _dc

    offsets = offsets or {}
    ref = run_float(before, probe, record=True, dtype=torch.float32)
    run = run_float(after, probe, record=True, dtype=torch.float32, forced_spikes=ref.spikes)
    shifted = {
        name: (h.astype(np.float64) - offsets[name]) if name in offsets else h for name, h in ref.membranes.items()
    }
    reference = _dc.replace(ref, membranes=shifted)
    T = before.timesteps
    bands: dict[str, float] = {}
    for neuron in after.of_type(n.Neuron):
        if neuron.name not in ref.membranes or neuron.name in exact_layers:
            bands[neuron.name] = 0.0
            continue
        original = before.node(neuron.name)
        magnitudes = [float(np.abs(shifted[neuron.name]).max(initial=0.0)), abs(float(original.v_reset))]
        for value in (original.vth, neuron.vth, original.reset_amount, neuron.reset_amount):
            if value is not None:
                magnitudes.append(float(np.abs(np.asarray(value, dtype=np.float64)).max()))
        bands[neuron.name] = ROUNDING_ULPS * T * float(np.spacing(np.float32(max(magnitudes))))
    comparison = compare_runs(after, reference, run, tie_band=bands)
    divergence = comparison.first_divergence()
    over = [
        d for d in comparison.membranes
        if d.layer != SCORES and not d.max_abs_diff <= bands.get(d.layer, 0.0)
    ]  # fmt: skip
    if divergence is None and over:
        divergence = over[0].max_diff_at.to_dict() if over[0].max_diff_at else {"layer": over[0].layer}
        band = bands.get(over[0].layer, 0.0)
        divergence["reason"] = f"membrane differs by {over[0].max_abs_diff:.3g}, beyond the rounding band {band:.3g}"
    scores = next(d for d in comparison.membranes if d.layer == SCORES)
    if divergence is None and scores.max_abs_diff != 0:
        divergence = scores.max_diff_at.to_dict() if scores.max_diff_at else {"layer": SCORES}
        divergence["reason"] = "scores differ although the readout sees the same (forced) spikes"
    spikes = comparison.spikes
    worst = max((d for d in comparison.membranes if d.layer != SCORES), key=lambda d: d.max_abs_diff, default=None)
    metrics = {
        "spike_mismatches": comparison.spike_mismatches,
        "near_ties": spikes.near_ties,
        "unexplained": spikes.unexplained,
        "after_first": comparison.after_first,
        "rounding_ulps_per_step": ROUNDING_ULPS,
        "band": bands,
        "max_membrane_diff": {d.layer: d.max_abs_diff for d in comparison.membranes},
        "exact_layers": list(exact_layers),
        "probe_images": int(probe.shape[0]),
    }
    summary = (
        f"float32 teacher-forced on {probe.shape[0]} probe images ({why}): {comparison.spike_mismatches} spike "
        f"mismatches, {spikes.near_ties} near-ties (within {ROUNDING_ULPS} ulps x T of the threshold), "
        f"{spikes.unexplained} unexplained, {comparison.after_first} later in a tied train; max |dH| "
        f"{worst.max_abs_diff if worst else 0.0:.3g}"
        + (f" in {worst.layer!r}" if worst else "")
        + ("" if divergence is None else f"; first divergence in {divergence['layer']!r}")
    )
    return ContractResult(
        pass_name=pass_name,
        kind="spike-exact",
        ok=divergence is None,
        summary=summary,
        metrics=metrics,
        first_divergence=divergence,
    )


def unchanged(pass_name: str, kind: str, before: Graph, after: Graph, what: str) -> ContractResult | None:
    """The contract's result when the pass rewrote nothing, else None (then run the real check).

    A pass that finds nothing to rewrite returns the very same node objects;
    identical nodes compute identical values, so there is nothing to run.
    Any new or changed node object makes this None.
    """
    if len(before.nodes) != len(after.nodes) or any(a is not b for a, b in zip(before.nodes, after.nodes)):
        return None
    return ContractResult(
        pass_name=pass_name,
        kind=kind,
        ok=True,
        summary=f"no {what}: graph unchanged (the same nodes), nothing to check",
        metrics={"rewritten": 0},
    )
