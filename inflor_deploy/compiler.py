"""The compile driver: checkpoint -> ONNX -> IR -> passes -> fixed-point IR.

    load_checkpoint ─> model_to_ir ─> apply_input_spec ─> graph_to_onnx ─(float ONNX)─> onnx_to_graph
                    ─> COMPILE_PIPELINE (each pass validated and its contract checked)

The declared input (range, pixel levels, normalization, encoding:
:mod:`inflor_deploy.frontends.input_spec`) is part of the exported graph, so
the float ONNX, every IR step and the manifest record it.

The IR that the passes see is the one read back from the exported ONNX, so
the ONNX file in an artifact is exactly what was compiled.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from inflor_deploy.checkpoint import Checkpoint, load_checkpoint
from inflor_deploy.errors import InflorError
from inflor_deploy.backends.onnx.float_model import graph_to_onnx, onnx_to_graph
from inflor_deploy.frontends.input_spec import apply_input_spec, resolve_input_spec
from inflor_deploy.frontends.zoo import model_to_ir
from inflor_deploy.ir import Graph
from inflor_deploy.passes.base import ContractResult, PassContext, QuantizationOptions
from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, run_pipeline
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.passes.quantize import quantize_with_report
from inflor_deploy.targets import Target, load_target

#: Probe samples the contracts run on (real test images when the checkpoint names its dataset).
MAX_PROBE_SAMPLES = 16
MIN_PROBE_SAMPLES = 2
#: Multiply-accumulates one float run of the probe may cost when the probe size is automatic.
#: Contracts check each pass on a handful of inputs; whole datasets are `inflor-deploy verify`'s job.
PROBE_MAC_BUDGET = 2e10


def macs_per_sample(graph: Graph) -> int:
    """Dense-equivalent multiply-accumulates of one sample over T timesteps (synapses only)."""
    from inflor_deploy.ir import infer_shapes
    from inflor_deploy.ir import nodes as n

    shapes = infer_shapes(graph)
    per_step = 0
    for node in graph.of_type(n.Conv2d, n.Linear):
        per_step += int(np.prod(shapes[node.name])) * int(np.prod(node.weight.shape[1:]))
    return per_step * graph.timesteps


def auto_probe_samples(graph: Graph) -> int:
    """16 probe inputs for small nets, fewer (at least 2) when one float run would exceed the budget."""
    fit = int(PROBE_MAC_BUDGET // max(1, macs_per_sample(graph)))
    return max(MIN_PROBE_SAMPLES, min(MAX_PROBE_SAMPLES, fit))


@dataclass
class CompileResult:
    """Everything one compile produced.

    Attributes:
        checkpoint: The loaded checkpoint.
        target: The hardware target compiled for.
        onnx_model: The per-timestep float ONNX export.
        steps: ``(name, graph)`` after the import and after each pass, in order.
        contracts: One contract result per pass run.
        quantization_report: Per-layer quantization report (empty if stopped before).
        probe_source: Where the contract probe came from.
        probe: The probe inputs themselves ``[N, C, H, W]``.
        seconds: Wall time of the compile.
        options: Every option that shaped the result (target, T override, probe size,
            stop_after, quantization, the resolved input declaration): with the checkpoint,
            enough to rebuild it bit for bit.
        sources: Inputs besides the checkpoint and the target file, as ``(role, path)``
            (e.g. a model factory's source file); the manifest records their sha256.
    """

    checkpoint: Checkpoint
    target: Target
    onnx_model: onnx.ModelProto
    steps: list[tuple[str, Graph]]
    contracts: list[ContractResult]
    quantization_report: list[dict[str, Any]] = field(default_factory=list)
    probe_source: str = ""
    probe: np.ndarray | None = None
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    sources: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def graph(self) -> Graph:
        """The graph after the last pass run."""
        return self.steps[-1][1]

    def graph_after(self, name: str) -> Graph:
        for step, graph in self.steps:
            if step == name:
                return graph
        raise KeyError(name)

    @property
    def float_graph(self) -> Graph:
        """The last float graph (input of QuantizeFixedPoint, or the final graph if stopped before)."""
        floats = [g for _, g in self.steps if not g.is_fixed_point]
        return floats[-1]

    @property
    def fixed_graph(self) -> Graph | None:
        """The scheduled fixed-point graph, or None when the compile stopped earlier."""
        graph = self.graph
        return graph if graph.is_fixed_point and graph.schedule is not None else None


def _probe(checkpoint: Checkpoint, graph: Graph, samples: int) -> tuple[np.ndarray, str]:
    """Real test images when the checkpoint names a built-in dataset that fits, else seeded noise.

    Digits are pixels in [0, 1]; they are converted to the declared units
    (``x * 255 / pixel_levels``) and used only for a direct-encoded pixel input.
    """
    dataset = checkpoint.metadata.get("dataset")
    source = graph.input
    if dataset in ("digits", "digits32") and source.encoding == "direct" and source.pixel_levels is not None:
        from inflor_deploy.data import load_dataset

        images = load_dataset(dataset, "test").images[:samples]
        if images.shape[1:] == tuple(source.shape):
            units = np.float32(255 / source.pixel_levels)
            return images * units if units != 1 else images, f"{dataset}/test[:{samples}]"
    low, high = source.value_range
    kind = "integer frames" if source.encoding == "sequence" else "noise"
    return make_probe(graph, count=samples, seed=0), f"uniform[{low:g},{high:g}] {kind}, seed 0, {samples} samples"


def compile_checkpoint(
    path: str | Path,
    target: str | Target = "loihi2-sim",
    *,
    trust_pickle: bool = False,
    quantization: QuantizationOptions = QuantizationOptions(),
    stop_after: str | None = None,
    probe_samples: int | None = None,
    timesteps: int | None = None,
    on_step: Callable[[str, Graph], None] | None = None,
    input_range: str | Sequence[float] | None = None,
    input_mean: str | Sequence[float] | None = None,
    input_std: str | Sequence[float] | None = None,
    input_encoding: str | None = None,
) -> CompileResult:
    """Compile a checkpoint for a target, checking every pass's contract.

    Args:
        path: A checkpoint written by ``save_checkpoint``.
        target: Target name (``inflor-deploy targets``) or a loaded Target.
        trust_pickle: Passed to ``load_checkpoint`` (executes code; trusted files only).
        quantization: Options of ``QuantizeFixedPoint``.
        stop_after: Stop after this pass (see ``PASSES_BY_NAME``).
        probe_samples: How many probe inputs the contracts run on (None: :func:`auto_probe_samples`).
        timesteps: Override the checkpoint's T (must be >= 1).
        on_step: Called with ``(name, graph)`` after the import and each pass.
        input_range: ``(low, high)`` (or ``"LO,HI"``) of the input data; default
            pixels in [0, 1]; ``(0, 255)`` declares raw 8-bit pixels
            (:mod:`inflor_deploy.frontends.input_spec`).
        input_mean, input_std: Per-channel normalization the model was trained
            with (``(x - mean) / std``); folded into the first synapses.
        input_encoding: ``"direct"`` or ``"sequence"`` (event data, ``[T, C, H, W]``
            per sample); default the checkpoint's ``input_encoding`` metadata, else direct.

    Raises:
        InflorError: bad checkpoint, unsupported layer, bad option, a broken
            precondition, or a violated contract (each names the fix).
    """
    start = time.perf_counter()
    if isinstance(target, str):
        target = load_target(target)
    checkpoint = load_checkpoint(path, trust_pickle=trust_pickle)
    if timesteps is not None and timesteps < 1:
        raise InflorError(f"timesteps must be >= 1, got {timesteps}")
    if probe_samples is not None and probe_samples < 1:
        raise InflorError(f"probe_samples must be >= 1, got {probe_samples}")
    spec = resolve_input_spec(
        input_range, input_mean, input_std, input_encoding or checkpoint.metadata.get("input_encoding", "direct")
    )
    exported = model_to_ir(checkpoint.model)
    if timesteps is not None:
        exported = Graph(exported.nodes, timesteps, exported.name)
    exported = apply_input_spec(exported, spec)
    onnx_model = graph_to_onnx(exported)
    imported = onnx_to_graph(onnx_model)
    steps: list[tuple[str, Graph]] = [("import", imported)]
    if on_step:
        on_step("import", imported)

    def record(name: str, graph: Graph) -> None:
        steps.append((name, graph))
        if on_step:
            on_step(name, graph)

    probe, probe_source = _probe(checkpoint, imported, probe_samples or auto_probe_samples(imported))
    ctx = PassContext(target=target, probe=probe, quantization=quantization)
    result = run_pipeline(imported, COMPILE_PIPELINE, ctx, stop_after=stop_after, on_step=record)
    report: list[dict[str, Any]] = []
    if "QuantizeFixedPoint" in result.steps:
        float_graph = [g for _, g in steps if not g.is_fixed_point][-1]
        _, report = quantize_with_report(float_graph, ctx)
    return CompileResult(
        checkpoint=checkpoint,
        target=target,
        onnx_model=onnx_model,
        steps=steps,
        contracts=result.results,
        quantization_report=report,
        probe_source=probe_source,
        probe=probe,
        seconds=time.perf_counter() - start,
        options={
            "target": target.name,
            "timesteps": timesteps,
            "probe_samples": probe_samples,
            "stop_after": stop_after,
            "quantization": dataclasses.asdict(quantization),
            # The resolved input declaration: with it, level 0 rebuilds a normalized, raw-pixel,
            # signed-range or sequence artifact exactly (the encoding default reads the checkpoint).
            "input": {
                "range": [float(v) for v in spec.value_range],
                "mean": None if spec.mean is None else [float(v) for v in spec.mean],
                "std": None if spec.std is None else [float(v) for v in spec.std],
                "encoding": spec.encoding,
            },
        },
    )
