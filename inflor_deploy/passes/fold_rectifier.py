"""FoldRectifierIntoThreshold: replace the Membrane Potential Rectifier by a folded threshold.

Rewrites every :class:`~inflor_deploy.ir.Neuron` with ``mpr=True`` to
``mpr=False, vth=phi^-1(vth)`` (:func:`~inflor_deploy.nn.mpr.phi_inverse_scalar`,
float64). Loihi compares the raw membrane with a threshold; it has no phi.

Invariant: phi is strictly increasing, so ``phi(h) >= vth  <=>  h >= phi^-1(vth)``.
MPR therefore changes no spike at inference (it only shapes the surrogate
gradient in training). For the paper's vth = 1/2 the folded threshold is
exactly 1/2.

Precondition: ``vth > 0`` (raises :class:`PassError` naming the neuron).

Contract (spike-exact): before (with MPR) and after run in float32 on the
probe, the after-graph teacher-forced with the before-graph's spikes. The
membranes H are computed identically by both, so they must be bitwise equal
(up to a train's first spike mismatch, see :mod:`inflor_deploy.passes.probe`).
Spikes must be identical except near-ties, where float32 rounding decides:
the first mismatch of a train must have ``|H - phi^-1(vth)| <= tie_band``
(:func:`tie_band`). Ties are counted and reported; anything else is a
violation naming the first divergence.

The near-tie band follows phi's real float32 error. The model fires on
``fl(phi(H)) >= fl(vth)``, the folded layer on ``H >= fl(theta)`` with
``theta = phi^-1(vth)``. With ``E_phi`` the largest ``|fl(phi(h)) - phi(h)|``
over float32 h around theta (:func:`phi_float32_error`, measured by
evaluating phi in float32 and in float64 on the 4,097 float32 values nearest
theta), ``|fl(vth) - vth| <= ulp(vth) / 2`` and ``phi(H) - vth ~ phi'(theta)
(H - theta)``, the two decisions can differ only when::

    |H - theta| <= ulp(theta) / 2 + (E_phi + ulp(vth) / 2) / phi'(theta)

and the band is ``TIE_ULPS x (ulp(theta) + (E_phi + ulp(vth)) / phi'(theta))``,
a margin of at least 4x that also covers H's last-ulp differences between
torch and the IR runner (level 1). ``E_phi`` is what a band from ulps alone
missed: phi's middle branch ends in ``tanh(.) / (2 tanh(3/2)) + 1/2``, whose
float32 error is a few ulps *of 1/2* (about 5e-8), so for small vth
(vth <= 0.01, where ulp(vth) < 1e-9) it is 50x ulp(vth) and more.
Measured on 10^5 float32 h near theta: vth = 0.001: E_phi = 4.2e-8, slope
0.31, mismatches up to 3.9e-8 from theta, band 5.5e-7 (the ulp-only band
was 2.5e-9); vth = 0.01: E_phi = 4.7e-8, mismatches up to 3.1e-8, band
5.5e-7 (was 1.8e-8); vth = 10: E_phi = 1.2e-6, slope 0.0033, mismatches up
to 3.1e-4, band 2.8e-3.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph
from inflor_deploy.nn.mpr import phi, phi_inverse_scalar
from inflor_deploy.passes.base import ContractResult, Pass, PassContext, PassError
from inflor_deploy.passes.probe import compare_runs
from inflor_deploy.backends.sim.float_ir import run_float

TIE_ULPS = 4
"""Safety factor of the near-tie band over the rounding bound (module docstring)."""
PHI_ERROR_WINDOW = 2048
"""phi's float32 error is measured on the float32 values within this many ulps of theta (each side)."""


def folded_threshold(vth: float | np.ndarray) -> float | np.ndarray:
    """``phi^-1(vth)``, per channel for a ``(C,)`` array of thresholds."""
    if isinstance(vth, np.ndarray):
        return np.array([phi_inverse_scalar(v) for v in vth], dtype=np.float64)
    return phi_inverse_scalar(vth)


def run(graph: Graph, ctx: PassContext) -> Graph:
    """Fold phi into the threshold of every MPR neuron (see the module docstring)."""
    nodes = []
    for node in graph:
        if isinstance(node, n.Neuron) and node.mpr:
            if not (np.asarray(node.vth) > 0).all():
                raise PassError(
                    f"neuron {node.name!r}: threshold {n.plain(node.vth)} must be > 0 to fold MPR into it; "
                    "retrain or re-export with a positive vth"
                )
            node = dataclasses.replace(node, vth=folded_threshold(node.vth), mpr=False)
        nodes.append(node)
    return graph.replace_nodes(nodes)


def _slope(theta: float) -> float:
    """phi'(theta) in float64, the smaller one-sided slope (phi has kinks at 0 and 1)."""
    d = 1e-6 * max(1.0, abs(theta))
    u = torch.tensor([theta - d, theta, theta + d], dtype=torch.float64)
    lo, mid, hi = phi(u).tolist()
    return min(mid - lo, hi - mid) / d


@functools.lru_cache(maxsize=256)
def phi_float32_error(theta: float) -> float:
    """Largest ``|phi_float32(h) - phi(h)|`` over the float32 h within PHI_ERROR_WINDOW ulps of theta (measured).

    phi is evaluated by the same torch kernel the model uses, in float32 and
    in float64 (whose own error, ~1e-16, is negligible), on the 2 x
    PHI_ERROR_WINDOW + 1 consecutive float32 values around ``fl(theta)``.
    """
    center = np.array([theta], dtype=np.float32)
    sign = -1 if theta < 0 else 1
    bits = center.view(np.int32)[0] + sign * np.arange(-PHI_ERROR_WINDOW, PHI_ERROR_WINDOW + 1, dtype=np.int64)
    h = torch.from_numpy(bits.astype(np.int32).view(np.float32).copy())
    return float((phi(h).double() - phi(h.double())).abs().max())


def tie_band(neuron: n.Neuron) -> float:
    """The near-tie band on H around ``phi^-1(vth)`` for an MPR neuron run in float32 (the widest channel's).

    ``TIE_ULPS x (ulp(theta) + (E_phi + ulp(vth)) / phi'(theta))`` with
    ``E_phi = phi_float32_error(theta)`` (derivation in the module docstring).
    """
    bands = []
    for vth in np.atleast_1d(np.asarray(neuron.vth, dtype=np.float64)):
        theta = phi_inverse_scalar(float(vth))
        ulp_theta, ulp_vth = (float(np.spacing(np.float32(abs(x)))) for x in (theta, vth))
        bands.append(TIE_ULPS * (ulp_theta + (phi_float32_error(theta) + ulp_vth) / _slope(theta)))
    return max(bands)


def check(before: Graph, after: Graph, ctx: PassContext) -> ContractResult:
    """Float32 teacher-forced spikes identical up to near-ties; membranes bitwise equal."""
    ref = run_float(before, ctx.probe, record=True, dtype=torch.float32)
    out = run_float(after, ctx.probe, record=True, dtype=torch.float32, forced_spikes=ref.spikes)
    bands = {neuron.name: tie_band(neuron) for neuron in before.of_type(n.Neuron) if neuron.mpr}
    comparison = compare_runs(before, ref, out, tie_band=bands)
    divergence = comparison.first_divergence()
    unequal = [d for d in comparison.membranes if d.max_abs_diff != 0]
    if divergence is None and unequal:
        divergence = unequal[0].max_diff_at.to_dict() if unequal[0].max_diff_at else {"layer": unequal[0].layer}
        divergence["reason"] = "membranes differ; folding the threshold must not change H"
    left = [node.name for node in after.of_type(n.Neuron) if node.mpr]
    if divergence is None and left:
        divergence = {"layer": left[0], "reason": "neuron still has mpr=True after the pass"}
    spikes = comparison.spikes
    metrics = {
        "spike_mismatches": comparison.spike_mismatches,
        "near_ties": spikes.near_ties,
        "unexplained": spikes.unexplained,
        "after_first": comparison.after_first,
        "tie_ulps": TIE_ULPS,
        "tie_band": bands,
        "folded_thresholds": {
            node.name: {"vth": n.plain(node.vth), "folded": n.plain(folded_threshold(node.vth))}
            for node in before.of_type(n.Neuron) if node.mpr
        },
        "probe_images": int(ctx.probe.shape[0]),
        "layers": {name: stats.mismatches for name, stats in spikes.per_layer.items()},
    }  # fmt: skip
    summary = (
        f"{len(bands)} thresholds folded; {comparison.spike_mismatches} spike mismatches on "
        f"{ctx.probe.shape[0]} probe images: {spikes.near_ties} near-ties (|H - phi^-1(vth)| within the "
        f"float32 tie band: phi's measured float32 error over its slope, x{TIE_ULPS}), {spikes.unexplained} unexplained, {comparison.after_first} later "
        f"in a tied train (its reset differs from then on); membranes {'differ' if unequal else 'bitwise equal'}"
        + ("" if divergence is None else f"; first divergence in {divergence['layer']!r}")
    )
    return ContractResult(
        pass_name="FoldRectifierIntoThreshold",
        kind="spike-exact",
        ok=divergence is None,
        summary=summary,
        metrics=metrics,
        first_divergence=divergence,
    )


FoldRectifierIntoThreshold = Pass(
    name="FoldRectifierIntoThreshold", run=run, check=check, contract="spike-exact"
)
"""Fold MPR into the threshold, vth -> phi^-1(vth) (spike-exact contract up to float32 near-ties)."""
