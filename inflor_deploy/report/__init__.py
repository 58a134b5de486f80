"""Activity, energy and resource reports for a compiled artifact: JSON first, then Markdown and HTML.

    report = build_report("artifacts/demo", "digits", samples=100)
    paths = write_report(report, "artifacts/demo")      # OUT/report/report.{json,md,html}
    print(short_summary(report))

Modules (each read-only, each returning dataclasses):

* :mod:`.activity` — tier 1: spikes, rates, synaptic ops (exact fan-out,
  NeuroBench, lava-dl formula), first-layer MACs, graded messages, updates;
* :mod:`.energy` — tiers 2-4 with the target file's constants, each figure
  labelled with tier, tag and source;
* :mod:`.resources` — greedy core placement under the target's limits and
  an explicit memory model; violations with the layer and the fix;
* :mod:`.schema` — the versioned JSON schema and a validator;
* :mod:`.render` — ``report.md`` and a self-contained ``report.html`` with
  plots, rendered from the JSON dict alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir.graph import Graph
from inflor_deploy.report.activity import Activity, ActivityCounter
from inflor_deploy.report.energy import EnergyReport, estimate_energy
from inflor_deploy.report.resources import MemoryModel, Placement, place
from inflor_deploy.report.schema import SCHEMA_NAME, SCHEMA_VERSION, validate
from inflor_deploy.targets import TAG_MEANINGS, Target, load_target

__all__ = [
    "Report", "build_report", "report_from_graph", "write_report", "short_summary", "resource_summary", "place",
    "MemoryModel", "REPORT_DIR",
]

REPORT_DIR = "report"
"""Sub-directory of the artifact the report files go to."""

#: Spike/voltage/current traces of one simulated batch may use about this much memory.
_BATCH_BYTES = 256 * 2**20


class ReportError(InflorError):
    """The report could not be built (bad artifact, data that does not fit the model)."""


@dataclass(frozen=True)
class Report:
    """A full report: metadata plus the three analyses. ``to_dict()`` is ``report.json``."""

    meta: dict[str, Any]
    activity: Activity
    energy: EnergyReport
    resources: Placement

    @property
    def status(self) -> str:
        return self.resources.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "created": self.meta["created"],
            "tags": dict(TAG_MEANINGS),
            "status": self.status,
            "model": self.meta["model"],
            "target": self.meta["target"],
            "run": self.meta["run"],
            "schedule": self.meta["schedule"],
            "activity": self.activity.to_dict(),
            "energy": self.energy.to_dict(),
            "resources": self.resources.to_dict(),
        }


# --------------------------------------------------------------------------- simulation


def _windows(graph: Graph, raw: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    """Each sample's spike trains over its whole window as the chip runs it: ``[R, B, ...]`` per layer.

    A layer at depth d runs sample k's step t at global step ``k*R + t + 1 + d``
    (:mod:`inflor_deploy.backends.sim.fixed_point`); the pipelined views' raw
    traces hold global step g at index ``g - 1``. Steps t >= T are the padding.
    """
    R = graph.schedule.reset_interval
    out = {}
    for name, trace in raw.items():
        d = graph.schedule.depth[name]
        windows = trace[d : d + samples * R].reshape(samples, R, *trace.shape[1:])
        out[name] = np.moveaxis(windows, 0, 1)
    return out


def _simulator(graph: Graph) -> tuple[str, str, int, Any]:
    """``(name, view, steps per window, run(graph, images) -> spike trains [steps, B, ...])``.

    The fast simulator when present, else the integer reference. The aligned
    view when the window is T steps; else the pipelined view's windows, so the
    padding steps of a power-of-two reset interval are counted.
    """
    window = graph.schedule.reset_interval if graph.schedule is not None else graph.timesteps
    view = "aligned" if window == graph.timesteps else "pipelined"
    try:
        from inflor_deploy.backends.sim.fixed_point import simulate
    except ImportError:
        simulate = None
    if simulate is not None:
        name = "fixed-point simulator (inflor_deploy.backends.sim.fixed_point"

        def aligned(g, images):
            return simulate(g, images, view="aligned", record=True).spikes

        def pipelined(g, images):
            return _windows(g, simulate(g, images, view="pipelined", record=True).raw["spikes"], len(images))
    else:
        from inflor_deploy.backends.sim.int_reference import run_aligned, run_pipelined

        name = "integer reference (inflor_deploy.backends.sim.int_reference"

        def aligned(g, images):
            return run_aligned(g, images, record=True).spikes

        def pipelined(g, images):
            return _windows(g, run_pipelined(g, images, record=True)[1]["spikes"], len(images))

    if view == "aligned":
        return f"{name}, aligned view)", view, window, aligned
    return (f"{name}, pipelined view: each sample's {window}-step window, {window - graph.timesteps} padding "
            "steps included)", view, window, pipelined)


def _batches(graph: Graph, images: np.ndarray, batch_size: int | None, progress: bool,
             window: int) -> Iterator[np.ndarray]:  # fmt: skip
    from inflor_deploy.ir.graph import infer_shapes
    from inflor_deploy.ir import nodes as n

    shapes = infer_shapes(graph)
    neurons = sum(math.prod(shapes[x.name]) for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator))
    # Recorded traces: uint8 spikes + int64 voltages and currents per neuron and step of the window.
    per_sample = max(neurons * window * 17, 1)
    size = batch_size or max(1, min(256, _BATCH_BYTES // per_sample))
    starts = range(0, images.shape[0], size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="simulating", unit="batch")
    for start in starts:
        yield images[start:start + size]


# --------------------------------------------------------------------------- building


def report_from_graph(graph: Graph, images: np.ndarray, target: Target, *, data_name: str = "images",
                      progress: bool = False, batch_size: int | None = None, memory_model: MemoryModel | None = None,
                      model_meta: dict[str, Any] | None = None) -> Report:
    """Simulate ``graph`` on ``images`` and build the report (no artifact needed).

    Args:
        graph: A quantized (fixed-point) graph; scheduled for tier 4's steps per inference.
        images: Float images ``[N, C, H, W]`` (``[N, T, C, H, W]`` for a sequence Input) in the
            range the model was compiled for (the simulator refuses others).
        target: Limits and energy constants.
        data_name: How the data is named in the report.
        progress: Show a progress bar while simulating.
        batch_size: Samples per simulated batch (default: sized to ~256 MiB of traces).
        memory_model: Override the resource model (default from the target).
        model_meta: Extra ``model`` fields (arch, artifact, checkpoint hash).
    """
    if not graph.is_fixed_point:
        raise ReportError("the report needs the quantized graph (run QuantizeFixedPoint / compile first)")
    images = np.asarray(images)
    lead = 2 if graph.input.encoding == "sequence" else 1
    layout = "[N, T, C, H, W]" if lead == 2 else "[N, C, H, W]"
    if images.ndim != len(graph.input.shape) + lead or images.shape[0] == 0:
        raise ReportError(f"images must be a non-empty {layout} array, got shape {images.shape}")
    expected = tuple(graph.input.shape)
    if tuple(images.shape[lead:]) != expected:
        raise ReportError(f"{data_name}: images are {tuple(images.shape[lead:])} per sample but the model's input is "
                          f"{expected}; use the dataset the model was trained on")
    sim_name, view, window, simulate = _simulator(graph)
    counter = ActivityCounter(graph, steps=window)
    began = time.perf_counter()
    for batch in _batches(graph, images, batch_size, progress, window):
        counter.add_spikes(simulate(graph, batch), batch)
    seconds = time.perf_counter() - began
    activity = counter.result()
    placement = place(graph, target, memory_model)
    schedule = graph.schedule
    steps = schedule.reset_interval if schedule else graph.timesteps
    latency = schedule.latency if schedule else 0
    energy = estimate_energy(activity, target, chips=max(placement.chips, 1), steps_per_inference=steps,
                             latency=latency, counts_source=f"{sim_name} on {data_name} ({activity.samples} samples)")
    model = {"name": graph.name, "arch": None, "timesteps": graph.timesteps, "artifact": None, "checkpoint_sha256": None}
    model.update(model_meta or {})
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "target": {"name": target.name, "kind": target.kind, "file": str(target.path) if target.path else None},
        "run": {"data": data_name, "samples": activity.samples, "simulator": sim_name, "view": view,
                "seconds": round(seconds, 3)},
        "schedule": None if schedule is None else {
            "reset_interval": schedule.reset_interval, "latency": schedule.latency, "depth": dict(schedule.depth)},
    }
    return Report(meta=meta, activity=activity, energy=energy, resources=placement)


def build_report(artifact, data, samples: int | None = None, progress: bool = False, *,
                 target: str | Target | None = None, batch_size: int | None = None) -> Report:
    """Simulate an artifact's fixed-point graph over a dataset and build the full report.

    Args:
        artifact: An :class:`~inflor_deploy.artifact.Artifact` or its directory.
        data: A :class:`~inflor_deploy.data.Dataset` or a ``--data`` spec (``"digits"``); its test split is used.
        samples: Use only the first N samples.
        progress: Show a progress bar.
        target: Override the artifact's target (name, path or Target) for limits and constants.
        batch_size: Samples per simulated batch.
    """
    from inflor_deploy.artifact import Artifact, load_artifact
    from inflor_deploy.data import Dataset, load_dataset

    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    if not isinstance(data, Dataset):
        data = load_dataset(str(data), "test")
    if samples is not None:
        if samples < 1:
            raise ReportError(f"--samples must be >= 1, got {samples}")
        data = data.take(samples)
    if isinstance(target, Target):
        tgt = target
    elif target is not None:
        tgt = load_target(target)
    else:
        tgt = artifact.target
    source = artifact.manifest.get("source", {})
    meta = {
        "name": Path(source["checkpoint"]).stem if source.get("checkpoint") else artifact.path.name,
        "arch": (source.get("config") or {}).get("arch"),
        "artifact": str(artifact.path),
        "checkpoint_sha256": source.get("sha256"),
    }
    from inflor_deploy.data.conform import conform_dataset

    graph = artifact.fixed_graph
    data = conform_dataset(data, graph.input, classes=graph.output.shape[0], timesteps=graph.timesteps)
    return report_from_graph(graph, data.images, tgt, data_name=data.name, progress=progress,
                             batch_size=batch_size, model_meta=meta)


# --------------------------------------------------------------------------- writing


def write_report(report: Report | dict[str, Any], artifact_dir: str | Path,
                 directory: str | Path | None = None) -> dict[str, Path]:  # fmt: skip
    """Write ``report.json``, ``report.md`` and a self-contained ``report.html`` into ``artifact_dir/report/``.

    The directory is replaced atomically. The JSON is validated against the
    schema first (an invalid report is a bug, and raises). ``directory``
    puts the files elsewhere (for an artifact that is read-only).

    Returns:
        ``{"json": ..., "markdown": ..., "html": ...}`` paths.
    """
    from inflor_deploy.artifact import write_atomically, write_json
    from inflor_deploy.report.render import render_html, render_markdown

    data = report.to_dict() if isinstance(report, Report) else report
    errors = validate(data)
    if errors:
        raise AssertionError("report does not match its schema:\n  " + "\n  ".join(errors[:20]))
    out = Path(directory) if directory is not None else Path(artifact_dir) / REPORT_DIR
    markdown = render_markdown(data)
    html = render_html(data)

    def fill(tmp: Path) -> None:
        write_json(tmp / "report.json", data)
        (tmp / "report.md").write_text(markdown, encoding="utf-8")
        (tmp / "report.html").write_text(html, encoding="utf-8")

    write_atomically(out, True, fill)
    return {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}


def short_summary(report: Report | dict[str, Any]) -> str:
    """A few lines for the CLI: activity, energy tiers (each labelled), resources."""
    from inflor_deploy.report.render import energy

    d = report.to_dict() if isinstance(report, Report) else report
    tot = d["activity"]["totals"]
    first = d["activity"]["first_layer"]
    tiers = {t["tier"]: t for t in d["energy"]["tiers"]}

    def fig(tier, name):
        return next(f for f in tiers[tier]["figures"] if f["name"] == name)

    t2s, t2a = fig(2, "E_SNN (first layer x T, as run)"), fig(2, "E_ANN (same architecture, dense MACs once)")
    ratio = fig(2, "E_ANN / E_SNN (first layer x T)")["value"]
    t3 = fig(3, "total (Loihi 1 per-op estimate)")
    t4 = fig(4, "static energy per inference")
    res = d["resources"]
    padding = tot.get("padding_steps", 0)
    window = (f"; {tot['steps_per_inference']} steps per inference, {padding} padding steps counted "
              f"({tot['padding_spikes_per_sample']:,.0f} of the spikes)") if padding else ""
    lines = [
        f"report: {d['run']['samples']} samples of {d['run']['data']}, T={d['model']['timesteps']}, {d['run']['simulator']}",
        f"  activity [tier 1, exact{window}]: {tot['spikes_per_neuron_per_step']:.3f} spikes/neuron/step, "
        f"{tot['spikes_per_sample']:,.0f} spikes and {tot['synops_per_sample']:,.0f} synops per inference "
        f"(exact fan-out; NeuroBench {tot['synops_nonzero_per_sample']:,.0f}, lava-dl formula "
        f"{tot['synops_lava_formula_per_sample']:,.0f}); first layer {first['macs_per_sample']:,} MACs x T",
        f"  energy/inference [tier 2, [D] from 45 nm Horowitz ISSCC 2014 {tiers[2]['tag']}]: SNN {energy(t2s['value'])}"
        f" vs ANN {energy(t2a['value'])}" + (f" (ANN/SNN {ratio:.2f}x)" if ratio else ""),
        f"  energy/inference [tier 3, [D] from Loihi 1 per-op Davies 2018 {tiers[3]['tag']}]: {energy(t3['value'])} "
        f"({energy(t3['low'])}-{energy(t3['high'])})",
        f"  energy/inference [tier 4, Loihi 2 static power x PilotNet step-time anchor, [D] from [P]]: "
        f"{energy(t4['low'])}-{energy(t4['high'])}; Loihi 2 per-op energy: not published",
        f"  resources [{res['target']}]: {res['total_cores']} cores on {res['chips']} chip(s); status {res['status']}",
    ]
    for v in res["violations"]:
        lines.append(f"    {v['severity'].upper()}: {v['message']}; fix: {v['fix']}")
    return "\n".join(lines)


def resource_summary(graph: Graph, target: Target | str) -> str:
    """Cores, chips and violations of a compiled graph (no data needed): for ``compile`` to print.

    Args:
        graph: The fixed-point graph.
        target: The target (or its name) whose limits apply.
    """
    tgt = load_target(target) if isinstance(target, str) else target
    placement = place(graph, tgt)
    per_layer = ", ".join(f"{lp.layer} {lp.cores if lp.cores is not None else 'CANNOT PLACE'}" for lp in placement.layers)
    lines = [f"resources: {placement.summary()}", f"  cores per layer: {per_layer}"]
    for v in placement.violations:
        lines.append(f"  {v.severity.upper()}: {v.message}; fix: {v.fix}")
    return "\n".join(lines)
