"""The parity ladder: four checks from the trained PyTorch model down to Lava.

1. **torch vs float IR** (spike-exact): the PyTorch model with MPR against
   the imported IR with phi folded into the threshold, every IR layer fed
   the model's own spikes (teacher-forced) so each mismatch is that layer's
   own. Mismatches are allowed only as near-ties (H within a few float32
   ulps of phi^-1(vth)); they are counted and shown.
2. **integer reference vs simulator** (bit-exact): ``int_reference`` (the
   literal Lava semantics) against the fast simulator, every spike, every
   u and v, every layer and timestep, in the aligned and the pipelined view.
3. **simulator vs Lava** (bit-exact): the pipelined simulator against Lava's
   ``Loihi2SimCfg(select_tag="fixed_pt")`` on a few samples.
4. **float vs fixed point** (statistical): accuracy of each on the data,
   spike agreement per layer, and where the first disagreement appears.

A failing bit-exact level names the first divergence: layer, timestep,
sample, neuron, expected, actual.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from inflor_deploy.data import Dataset
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.backends.sim.compare import first_divergence
from inflor_deploy.backends.sim.float_ir import FloatRun, run_float

Progress = Callable[[str], None]


@dataclass
class LevelResult:
    """One rung of the ladder.

    Attributes:
        level: 1..4.
        name: What is compared with what.
        kind: ``bit-exact``, ``spike-exact`` or ``statistical``.
        ok: True/False, or None when the level was skipped.
        summary: One line with the measured numbers.
        metrics: The numbers (JSON-ready).
        first_divergence: Where a failing level first differs.
    """

    level: int
    name: str
    kind: str
    ok: bool | None
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    first_divergence: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def must_pass(self) -> bool:
        return self.kind in ("bit-exact", "spike-exact")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Ladder:
    levels: list[LevelResult]

    @property
    def ok(self) -> bool:
        """True when no bit-exact or spike-exact level failed."""
        return all(level.ok is not False for level in self.levels if level.must_pass)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "levels": [level.to_dict() for level in self.levels]}


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


# --------------------------------------------------------------------------- level 1


def torch_run(model: torch.nn.Module, images: np.ndarray, timesteps: int | None = None) -> FloatRun:
    """The PyTorch model's scores, spikes and membranes H, keyed like the IR (module paths).

    ``timesteps`` runs the model for that T (an artifact compiled with ``-T``), not its config's.
    """
    from inflor_deploy.nn.neurons import Neuron

    spikes: dict[str, np.ndarray] = {}
    neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, Neuron)]
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: spikes.__setitem__(name, out.detach().numpy()))
        for name, m in neurons
    ]
    saved = {name: m.record_membrane for name, m in neurons}
    try:
        for _, m in neurons:
            m.record_membrane = True
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images))
            scores = (model.eval()(x) if timesteps is None else model.eval()(x, timesteps)).numpy()
        membranes = {name: m.last_membrane.numpy() for name, m in neurons}
    finally:
        for h in hooks:
            h.remove()
        for name, m in neurons:
            m.record_membrane = saved[name]
    return FloatRun(
        scores=scores,
        spikes={k: v.astype(np.uint8) for k, v in spikes.items()},
        membranes=membranes,
    )


def level1_torch_vs_float_ir(model, imported: Graph, data: Dataset, batch_size: int = 256,
                             progress: Progress | None = None) -> LevelResult:  # fmt: skip
    """Teacher-forced: each IR layer gets the model's spikes; ties are the only excuse."""
    from inflor_deploy.passes.fold_rectifier import FoldRectifierIntoThreshold, tie_band
    from inflor_deploy.passes.probe import compare_runs

    start = time.perf_counter()
    folded = FoldRectifierIntoThreshold.run(imported, None)
    bands = {x.name: tie_band(x) for x in imported.of_type(n.Neuron) if x.mpr}
    totals = {"spikes": 0, "mismatches": 0, "near_ties": 0, "unexplained": 0, "after_first": 0}
    max_score_diff, divergence = 0.0, None
    for s in _batches(len(data), batch_size):
        ref = torch_run(model, data.images[s], imported.timesteps)
        out = run_float(folded, data.images[s], record=True, forced_spikes=ref.spikes)
        comparison = compare_runs(imported, ref, out, tie_band=bands)
        totals["spikes"] += int(sum(int(v.sum()) for v in ref.spikes.values()))
        totals["mismatches"] += comparison.spike_mismatches
        totals["near_ties"] += comparison.spikes.near_ties
        totals["unexplained"] += comparison.spikes.unexplained
        totals["after_first"] += comparison.after_first
        max_score_diff = max(max_score_diff, float(np.abs(ref.scores - out.scores).max(initial=0)))
        if divergence is None and comparison.first_divergence() is not None:
            divergence = comparison.first_divergence()
            divergence["sample"] = divergence.get("sample", 0) + s.start
        if progress:
            progress(f"level 1: {s.stop}/{len(data)} samples")
    ok = divergence is None
    return LevelResult(
        level=1,
        name="float torch (MPR) vs float IR (folded threshold)",
        kind="spike-exact",
        ok=ok,
        summary=(
            f"{totals['spikes']} spikes on {len(data)} samples: {totals['mismatches']} mismatches, "
            f"{totals['near_ties']} near-ties within float32 ulps of phi^-1(vth), "
            f"{totals['unexplained']} unexplained; max |score diff| {max_score_diff:.2g}"
        ),
        metrics={**totals, "samples": len(data), "max_score_diff": max_score_diff},
        first_divergence=divergence,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- level 2


def _compare_int_traces(reference, candidate, order: list[str]) -> dict[str, Any] | None:
    """First divergence over spikes, then u, then v; then the accumulator readout."""
    for kind in ("spikes", "currents", "voltages"):
        ref, cand = getattr(reference, kind, {}), getattr(candidate, kind, {})
        layers = [name for name in order if name in ref]
        if not layers:
            continue
        missing = [name for name in layers if name not in cand]
        if missing:
            return {"layer": missing[0], "reason": f"no {kind} trace from the simulator"}
        d = first_divergence(ref, cand, layers)
        if d is not None:
            out = d.to_dict()
            out["quantity"] = kind
            return out
    if not np.array_equal(reference.accumulator, candidate.accumulator):
        index = np.argwhere(reference.accumulator != candidate.accumulator)[0]
        return {
            "layer": "accumulator readout",
            "sample": int(index[0]),
            "neuron": tuple(int(i) for i in index[1:]),
            "expected": int(reference.accumulator[tuple(index)]),
            "actual": int(candidate.accumulator[tuple(index)]),
        }
    return None


def level2_reference_vs_simulator(graph: Graph, images: np.ndarray, pipelined_samples: int = 2) -> LevelResult:
    """Bit-exact: int_reference vs the fast simulator, aligned and pipelined views."""
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.backends.sim.int_reference import run_aligned, run_pipelined

    start = time.perf_counter()
    order = [x.name for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    reference = run_aligned(graph, images, record=True)
    candidate = simulate(graph, images, view="aligned", record=True)
    divergence = _compare_int_traces(reference, candidate, order)
    view = "aligned"
    counters_equal = reference.u_wraps == dict(candidate.u_wraps) and reference.v_saturations == dict(candidate.v_saturations)
    if divergence is None and not counters_equal:
        divergence = {"layer": "counters", "reason": "u-wrap / v-saturation counts differ",
                      "expected": [reference.u_wraps, reference.v_saturations],
                      "actual": [dict(candidate.u_wraps), dict(candidate.v_saturations)]}  # fmt: skip
    if divergence is None and pipelined_samples > 0 and graph.schedule is not None:
        view = "pipelined"
        ref_p, _ = run_pipelined(graph, images[:pipelined_samples], record=True)
        cand_p = simulate(graph, images[:pipelined_samples], view="pipelined", record=True)
        divergence = _compare_int_traces(ref_p, cand_p, order)
    if divergence is not None:
        divergence["view"] = view
    values = sum(int(np.size(v)) for kind in ("spikes", "currents", "voltages") for v in getattr(reference, kind).values())
    return LevelResult(
        level=2,
        name="integer reference vs fixed-point simulator",
        kind="bit-exact",
        ok=divergence is None,
        summary=(
            f"bit-exact on {len(images)} samples aligned ({values} spike/u/v values, every layer and step)"
            f" and {min(pipelined_samples, len(images))} pipelined; u wraps {sum(reference.u_wraps.values())}, "
            f"v saturations {sum(reference.v_saturations.values())}"
            if divergence is None
            else f"DIVERGES ({view}): {_describe(divergence)}"
        ),
        metrics={"samples": len(images), "pipelined_samples": min(pipelined_samples, len(images)), "values_compared": values},
        first_divergence=divergence,
        seconds=time.perf_counter() - start,
    )


def _describe(d: dict[str, Any]) -> str:
    keys = ("quantity", "layer", "timestep", "sample", "neuron", "expected", "actual", "reason")
    return ", ".join(f"{k}={d[k]}" for k in keys if k in d)


# --------------------------------------------------------------------------- level 3


def level3_simulator_vs_lava(graph: Graph, images: np.ndarray, float_graph: Graph | None = None) -> LevelResult:
    """Bit-exact: the pipelined simulator against Lava fixed_pt (few samples: Lava is slow).

    Also runs Lava's floating_pt models on the same samples and reports their
    agreement with the integer network and the float graph (statistical,
    shown beside the bit-exact result).
    """
    start = time.perf_counter()
    name = "fixed-point simulator vs Lava Loihi2SimCfg(fixed_pt)"
    if len(images) == 0:
        return LevelResult(3, name, "bit-exact", None, "skipped (0 Lava samples requested)")
    from inflor_deploy.backends.lava.network import compare_floating_pt, compare_with_simulator

    result = compare_with_simulator(graph, images)
    floating = compare_floating_pt(graph, images, float_graph=float_graph)
    divergence = None if result.ok else result.first_divergence
    if divergence is not None and not isinstance(divergence, dict):
        divergence = divergence.to_dict()
    return LevelResult(
        level=3,
        name=name,
        kind="bit-exact",
        ok=bool(result.ok),
        summary=f"{result.summary()}; {floating.summary()}",
        metrics={**result.to_dict(), "floating_pt": dataclasses.asdict(floating)},
        first_divergence=divergence,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- level 4


def level4_float_vs_fixed(model, float_graph: Graph, fixed_graph: Graph, data: Dataset,
                          batch_size: int = 256, progress: Progress | None = None) -> LevelResult:  # fmt: skip
    """Accuracy of the trained model and of the fixed-point network; spike agreement per layer."""
    from inflor_deploy.backends.sim.fixed_point import simulate

    start = time.perf_counter()
    layers = [x.name for x in fixed_graph.of_type(n.FixedPointNeuron)]
    agree = dict.fromkeys(layers, 0)
    total = dict.fromkeys(layers, 0)
    correct_float = correct_fixed = same_class = 0
    first = None
    saturations: dict[str, int] = {}
    wraps: dict[str, int] = {}
    for s in _batches(len(data), batch_size):
        images, labels = data.images[s], data.labels[s]
        with torch.no_grad():
            torch_scores = model.eval()(torch.from_numpy(np.ascontiguousarray(images)), fixed_graph.timesteps).numpy()
        reference = run_float(float_graph, images, record=True)
        fixed = simulate(fixed_graph, images, view="aligned", record=True)
        fixed_scores = fixed.scores(fixed_graph)
        correct_float += int((torch_scores.argmax(1) == labels).sum())
        correct_fixed += int((fixed_scores.argmax(1) == labels).sum())
        same_class += int((torch_scores.argmax(1) == fixed_scores.argmax(1)).sum())
        for name in layers:
            agree[name] += int((reference.spikes[name] == fixed.spikes[name]).sum())
            total[name] += int(reference.spikes[name].size)
        for name, count in fixed.v_saturations.items():
            saturations[name] = saturations.get(name, 0) + int(count)
        for name, count in fixed.u_wraps.items():
            wraps[name] = wraps.get(name, 0) + int(count)
        if first is None:
            d = first_divergence(reference.spikes, {k: fixed.spikes[k] for k in layers}, layers)
            if d is not None:
                first = d.to_dict()
                first["sample"] = first.get("sample", 0) + s.start
        if progress:
            progress(f"level 4: {s.stop}/{len(data)} samples")
    per_layer = {name: agree[name] / total[name] for name in layers}
    acc_float, acc_fixed = correct_float / len(data), correct_fixed / len(data)
    worst = min(per_layer, key=per_layer.get)
    return LevelResult(
        level=4,
        name="float model vs fixed point (accuracy, spike agreement)",
        kind="statistical",
        ok=True,
        summary=(
            f"accuracy float {acc_float:.4f} -> fixed {acc_fixed:.4f} (delta {acc_fixed - acc_float:+.4f}) on "
            f"{len(data)} samples; same class {same_class / len(data):.4f}; spike agreement min "
            f"{per_layer[worst]:.4f} ({worst}); v saturations {sum(saturations.values())}, u wraps {sum(wraps.values())}"
        ),
        metrics={
            "samples": len(data),
            "accuracy_float": acc_float,
            "accuracy_fixed": acc_fixed,
            "class_agreement": same_class / len(data),
            "spike_agreement": per_layer,
            "v_saturations": saturations,
            "u_wraps": wraps,
        },
        first_divergence=first,
        seconds=time.perf_counter() - start,
    )


def run_ladder(artifact, data: Dataset, *, reference_samples: int = 8, lava_samples: int = 2,
               trust_pickle: bool = False, progress: Progress | None = None) -> Ladder:  # fmt: skip
    """All four levels for a compiled artifact on a dataset."""
    from inflor_deploy.checkpoint import load_checkpoint

    source = artifact.manifest["source"]
    checkpoint = load_checkpoint(source["checkpoint"], trust_pickle=trust_pickle)
    imported = artifact.graph_at("import")
    fixed = artifact.fixed_graph
    float_graph = artifact.float_graph
    if tuple(data.images.shape[1:]) != tuple(imported.input.shape):
        from inflor_deploy.errors import InflorError

        raise InflorError(
            f"dataset {data.name} has images of shape {tuple(data.images.shape[1:])} but the model "
            f"expects {tuple(imported.input.shape)}; pick the dataset the model was trained on"
        )
    from inflor_deploy.memory import batch_size_for, samples_estimate

    # Before any level runs: what cannot fit in memory is refused, the batched levels are sized to fit.
    batch = batch_size_for(imported, "recorded", "verifying one sample (levels 1 and 4)", wanted=256,
                           lower="T (compile with a smaller -T)")  # fmt: skip
    samples_estimate(fixed, "recorded", "level 2 (integer reference)", min(reference_samples, len(data)),
                     "--reference-samples").require()  # fmt: skip
    if lava_samples:
        samples_estimate(fixed, "recorded", "level 3 (Lava, traces of every layer)", min(lava_samples, len(data)),
                         "--lava-samples", steps_per_sample=fixed.schedule.reset_interval).require()  # fmt: skip
    say = progress or (lambda _: None)
    levels = []
    say("level 1: torch vs float IR")
    levels.append(level1_torch_vs_float_ir(checkpoint.model, imported, data, batch_size=batch, progress=progress))
    say("level 2: integer reference vs simulator")
    levels.append(level2_reference_vs_simulator(fixed, data.images[:reference_samples]))
    say("level 3: simulator vs Lava")
    levels.append(level3_simulator_vs_lava(fixed, data.images[:lava_samples], float_graph))
    say("level 4: float vs fixed point")
    levels.append(level4_float_vs_fixed(checkpoint.model, float_graph, fixed, data, batch_size=batch, progress=progress))
    return Ladder(levels)
