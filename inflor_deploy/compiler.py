"""The compile driver: model -> fx front end -> ONNX -> IR -> passes -> fixed-point IR.

    trace_model (+ apply_input_spec) ─> graph_to_onnx ─(float ONNX)─> onnx_to_graph
                ─> COMPILE_PIPELINE (each pass validated and its contract checked)

Three routes share that one path (:func:`compile_model`): an inflor-deploy
checkpoint (:func:`compile_checkpoint`), a state_dict plus the code that
builds the model (:func:`compile_factory`), and an in-memory module. A NIR
graph (:func:`compile_nir`) enters after the front end: its float IR takes the
same ONNX round trip and passes (:func:`compile_graph`).

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
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
from torch import nn

from inflor_deploy.checkpoint import Checkpoint, load_checkpoint
from inflor_deploy.errors import InflorError
from inflor_deploy.backends.onnx.float_model import graph_to_onnx, onnx_to_graph
from inflor_deploy.frontends.fx import trace_model
from inflor_deploy.frontends.input_spec import InputSpec, declared_input_spec, resolve_input_spec
from inflor_deploy.frontends.source import ModelSource
from inflor_deploy.frontends.user_model import FactorySpec, model_from_factory
from inflor_deploy.grid import quantization_for
from inflor_deploy.ir import Graph
from inflor_deploy.passes.base import ContractResult, PassContext, QuantizationOptions
from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, run_pipeline
from inflor_deploy.passes.probe import make_probe
from inflor_deploy.passes.quantize import quantize_with_report
from inflor_deploy.targets import Target, load_target

#: Probe samples the contracts run on (real test images when the checkpoint names its dataset).
MAX_PROBE_SAMPLES = 16
MIN_PROBE_SAMPLES = 2
#: Above this T, memory is checked on a one-step trace before the full trace (which runs the model at T).
SHORT_TRACE_ABOVE = 64
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


def _probe_count(graph: Graph, requested: int | None) -> int:
    """The probe size: as requested, or automatic; refused up front when the contracts' runs would not fit in memory."""
    from inflor_deploy.memory import batch_size_for, samples_estimate

    what = f"compiling with T={graph.timesteps:,} (the contracts keep every layer's trace of each probe input)"
    if requested is not None:
        samples_estimate(graph, "recorded", what, requested, "--probe-samples or -T").require()
        return requested
    samples_estimate(graph, "recorded", what, MIN_PROBE_SAMPLES, "-T").require()
    return max(MIN_PROBE_SAMPLES, batch_size_for(graph, "recorded", what, wanted=auto_probe_samples(graph), lower="-T"))


def _refuse_before_tracing(model: nn.Module, input_shape, timesteps: int, probe_samples: int | None,
                           trace_options: dict[str, Any]) -> None:  # fmt: skip
    """Refuse a T whose compile would not fit in memory before the full trace, which runs the model at T.

    The layers' shapes do not depend on T, so a one-step trace labelled with T
    gives the estimate. A model that cannot be traced at one step (its T is
    built in) is left to the full trace, which checks the same after it.
    """
    try:
        short = trace_model(model, input_shape, 1, **trace_options).graph
    except InflorError:
        return
    _probe_count(Graph(short.nodes, timesteps, short.name), probe_samples)


def auto_probe_samples(graph: Graph) -> int:
    """16 probe inputs for small nets, fewer (at least 2) when one float run would exceed the budget."""
    fit = int(PROBE_MAC_BUDGET // max(1, macs_per_sample(graph)))
    return max(MIN_PROBE_SAMPLES, min(MAX_PROBE_SAMPLES, fit))


@dataclass
class CompileResult:
    """Everything one compile produced.

    Attributes:
        source: Where the model came from (recorded in the manifest).
        target: The hardware target compiled for.
        onnx_model: The per-timestep float ONNX export.
        steps: ``(name, graph)`` after the import and after each pass, in order.
        contracts: One contract result per pass run.
        quantization_report: Per-layer quantization report (empty if stopped before).
        probe_source: Where the contract probe came from.
        probe: The probe inputs themselves ``[N, C, H, W]``.
        probe_given: The caller gave the probe (``probe_images``). The probe shapes
            the result (QuantizeFixedPoint's probe guard), so the artifact keeps
            given images (``probe.npy``) for a rebuild; a seeded probe is remade.
        seconds: Wall time of the compile.
        conventions: The front end's time and I/O conventions (``TracedModel.conventions``).
        options: Every option that shaped the result (:func:`compile_options`: target, T,
            probe size, stop_after, quantization, the resolved input declaration), as the
            manifest records them: with the model's source (``source``), enough to rebuild it bit for bit.
        sources: Inputs besides the checkpoint and the target file, as ``(role, path)``
            (a model factory's source file); the manifest records their sha256.
    """

    source: ModelSource
    target: Target
    onnx_model: onnx.ModelProto
    steps: list[tuple[str, Graph]]
    contracts: list[ContractResult]
    quantization_report: list[dict[str, Any]] = field(default_factory=list)
    probe_source: str = ""
    probe: np.ndarray | None = None
    probe_given: bool = False
    seconds: float = 0.0
    conventions: dict[str, Any] = field(default_factory=dict)
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


def compile_options(target: Target, quantization: QuantizationOptions, spec: InputSpec, *,
                    stop_after: str | None = None, probe_samples: int | None = None,
                    timesteps: int) -> dict[str, Any]:  # fmt: skip
    """The manifest's ``compile_options``: every option that decides what a compile produces, JSON-ready.

    The one record of them: level 0 rebuilds from it (:mod:`inflor_deploy.rebuild`)
    and a re-run of ``verify CHECKPOINT`` compares a request with it
    (:mod:`inflor_deploy.artifact_reuse`); two compiles of one checkpoint
    (and target file) whose options are equal give byte-identical artifacts.

    ``timesteps`` is the resolved T (the checkpoint's unless overridden); ``input`` is the resolved input declaration (range, normalization,
    encoding): with it, level 0 rebuilds a normalized, raw-pixel,
    signed-range or sequence artifact exactly (the encoding default reads the
    checkpoint, so the resolved value is recorded, not the option as typed).
    """
    return {
        "target": target.name,
        "timesteps": timesteps,
        "probe_samples": probe_samples,
        "stop_after": stop_after,
        # layer_scales (a fine-tuned checkpoint's grid) only when set: other compiles record what they always did.
        "quantization": {k: v for k, v in dataclasses.asdict(quantization).items()
                         if k != "layer_scales" or v is not None},
        "input": {
            "range": [float(v) for v in spec.value_range],
            "mean": None if spec.mean is None else [float(v) for v in spec.mean],
            "std": None if spec.std is None else [float(v) for v in spec.std],
            "encoding": spec.encoding,
        },
    }


def requested_options(
    checkpoint: Checkpoint,
    target: Target,
    *,
    quantization: QuantizationOptions = QuantizationOptions(),
    stop_after: str | None = None,
    probe_samples: int | None = None,
    timesteps: int | None = None,
    input_range: str | Sequence[float] | None = None,
    input_mean: str | Sequence[float] | None = None,
    input_std: str | Sequence[float] | None = None,
    input_encoding: str | None = None,
) -> dict[str, Any]:
    """The :func:`compile_options` that :func:`compile_checkpoint` would record for these arguments, without compiling."""
    encoding = input_encoding or checkpoint.metadata.get("input_encoding", "direct")
    spec = resolve_input_spec(input_range, input_mean, input_std, encoding)
    return compile_options(
        target, quantization_for(checkpoint.metadata, quantization), spec, stop_after=stop_after, probe_samples=probe_samples,
        timesteps=timesteps or checkpoint.config.timesteps,
    )  # fmt: skip


def _probe(source: ModelSource, graph: Graph, samples: int, images: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The caller's images, real test images when the source names a built-in dataset that fits, else seeded noise.

    Digits are pixels in [0, 1]; they are converted to the declared units
    (``x * 255 / pixel_levels``) and used only for a direct-encoded pixel input.
    """
    if images is not None:
        probe = make_probe(graph, images=images)
        return probe, f"{len(probe)} given images"
    declared = graph.input
    dataset = source.metadata.get("dataset")
    if dataset in ("digits", "digits32") and declared.encoding == "direct" and declared.pixel_levels is not None:
        from inflor_deploy.data import load_dataset

        digits = load_dataset(dataset, "test").images[:samples]
        if digits.shape[1:] == tuple(declared.shape):
            units = np.float32(255 / declared.pixel_levels)
            return digits * units if units != 1 else digits, f"{dataset}/test[:{samples}]"
    low, high = declared.value_range
    kind = "integer frames" if declared.encoding == "sequence" else "noise"
    return make_probe(graph, count=samples, seed=0), f"uniform[{low:g},{high:g}] {kind}, seed 0, {samples} samples"


def compile_model(
    model: nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    timesteps: int | None = None,
    target: str | Target = "loihi2-sim",
    time_mode: str | None = None,
    adapters: Iterable[str] | None = None,
    name: str | None = None,
    source: ModelSource | None = None,
    quantization: QuantizationOptions = QuantizationOptions(),
    stop_after: str | None = None,
    probe_samples: int | None = None,
    probe_images: np.ndarray | None = None,
    on_step: Callable[[str, Graph], None] | None = None,
    input_range: str | Sequence[float] | None = None,
    input_mean: str | Sequence[float] | None = None,
    input_std: str | Sequence[float] | None = None,
    input_encoding: str | None = None,
) -> CompileResult:
    """Compile an ``nn.Module`` for a target, checking every pass's contract.

    Args:
        model: The trained module (see :func:`inflor_deploy.frontends.fx.trace_model`).
        input_shape: One sample, without batch or time, e.g. ``(C, H, W)`` (None: declared by the model).
        timesteps: T (None: declared by the model).
        target: Target name (``inflor-deploy targets``) or a loaded Target.
        time_mode: ``"multi"``, ``"single"`` or None (read from the neurons).
        adapters: Framework adapter names (None: detected from the model).
        name: The graph's name (default: the model's class name).
        source: Where the model came from (default: an in-memory module).
        quantization: Options of ``QuantizeFixedPoint``.
        stop_after: Stop after this pass (see ``PASSES_BY_NAME``).
        probe_samples: How many probe inputs the contracts run on (None: :func:`auto_probe_samples`).
        probe_images: Real inputs ``[N, *input_shape]`` for the contracts instead.
        on_step: Called with ``(name, graph)`` after the import and each pass.
        input_range: ``(low, high)`` (or ``"LO,HI"``) of the input data; default
            pixels in [0, 1]; ``(0, 255)`` declares raw 8-bit pixels
            (:mod:`inflor_deploy.frontends.input_spec`).
        input_mean, input_std: Per-channel normalization the data pipeline
            applied before the model (``(x - mean) / std``); folded into the
            first synapses. (A model that normalizes inside its ``forward``
            declares its own: do not repeat it here.)
        input_encoding: ``"direct"`` (default) or ``"sequence"`` (event data,
            ``[T, C, H, W]`` per sample; a multi-step model gets ``[T, B, C, H, W]``).

    Raises:
        InflorError: an unsupported model or op, a bad option, a broken
            precondition, or a violated contract (each names the fix).
    """
    start = time.perf_counter()
    if isinstance(target, str):
        target = load_target(target)
    if probe_samples is not None and probe_samples < 1:
        raise InflorError(f"probe_samples must be >= 1, got {probe_samples}")
    spec = resolve_input_spec(input_range, input_mean, input_std, input_encoding or "direct")
    trace_options = dict(time_mode=time_mode, adapters=adapters, name=name, input_spec=spec)
    if timesteps is not None and timesteps > SHORT_TRACE_ABOVE:
        _refuse_before_tracing(model, input_shape, timesteps, probe_samples, trace_options)
    traced = trace_model(model, input_shape, timesteps, **trace_options)
    return compile_graph(
        traced.graph, source=source or ModelSource.from_module(model), conventions=traced.conventions(), target=target,
        quantization=quantization, stop_after=stop_after, probe_samples=probe_samples, probe_images=probe_images,
        on_step=on_step, start=start, spec=spec,
    )  # fmt: skip


def compile_graph(
    graph: Graph,
    *,
    source: ModelSource,
    conventions: dict[str, Any],
    target: str | Target = "loihi2-sim",
    quantization: QuantizationOptions = QuantizationOptions(),
    stop_after: str | None = None,
    probe_samples: int | None = None,
    probe_images: np.ndarray | None = None,
    on_step: Callable[[str, Graph], None] | None = None,
    start: float | None = None,
    spec: InputSpec | None = None,
) -> CompileResult:
    """Compile a front end's float IR (its Input declared): ONNX round trip, then the passes.

    Shared by every front end (:func:`compile_model` for PyTorch modules,
    :func:`compile_nir` for NIR graphs); ``conventions`` is what the front end
    records in the manifest's ``source.model`` to rebuild and rerun the model;
    ``spec`` the input declaration as given (default: read back from ``graph``).
    """
    start = time.perf_counter() if start is None else start
    if isinstance(target, str):
        target = load_target(target)
    if probe_samples is not None and probe_samples < 1:
        raise InflorError(f"probe_samples must be >= 1, got {probe_samples}")
    spec = declared_input_spec(graph) if spec is None else spec
    onnx_model = graph_to_onnx(graph)
    imported = onnx_to_graph(onnx_model)
    steps: list[tuple[str, Graph]] = [("import", imported)]
    if on_step:
        on_step("import", imported)

    def record(step: str, graph: Graph) -> None:
        steps.append((step, graph))
        if on_step:
            on_step(step, graph)

    probe, probe_source = _probe(source, imported, _probe_count(imported, probe_samples), probe_images)
    ctx = PassContext(target=target, probe=probe, quantization=quantization)
    result = run_pipeline(imported, COMPILE_PIPELINE, ctx, stop_after=stop_after, on_step=record)
    report: list[dict[str, Any]] = []
    if "QuantizeFixedPoint" in result.steps:
        float_graph = [g for _, g in steps if not g.is_fixed_point][-1]
        _, report = quantize_with_report(float_graph, ctx)
    return CompileResult(
        source=source,
        target=target,
        onnx_model=onnx_model,
        steps=steps,
        contracts=result.results,
        quantization_report=report,
        probe_source=probe_source,
        probe=probe,
        probe_given=probe_images is not None,
        seconds=time.perf_counter() - start,
        conventions=conventions,
        sources=source.hashed_sources(),
        options=compile_options(
            target, quantization, spec, stop_after=stop_after, probe_samples=probe_samples, timesteps=graph.timesteps
        ),
    )


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
    probe_images: np.ndarray | None = None,
) -> CompileResult:
    """Compile an inflor-deploy checkpoint (a zoo architecture) for a target.

    Args:
        path: A checkpoint written by ``save_checkpoint``.
        target: Target name (``inflor-deploy targets``) or a loaded Target.
        trust_pickle: Passed to ``load_checkpoint`` (executes code; trusted files only).
        quantization: Options of ``QuantizeFixedPoint``.
        stop_after: Stop after this pass (see ``PASSES_BY_NAME``).
        probe_samples: How many probe inputs the contracts run on (None: :func:`auto_probe_samples`).
        timesteps: Override the checkpoint's T (must be >= 1).
        on_step: Called with ``(name, graph)`` after the import and each pass.
        input_range, input_mean, input_std: As :func:`compile_model`.
        input_encoding: As :func:`compile_model`; default the checkpoint's
            ``input_encoding`` metadata, else direct.
        probe_images: As :func:`compile_model` (real inputs for the probe).

    A fine-tuned checkpoint (``inflor-deploy finetune``) is compiled on the
    integer grid it records (:func:`inflor_deploy.grid.quantization_for`).

    Raises:
        InflorError: bad checkpoint, unsupported layer, bad option, a broken
            precondition, or a violated contract (each names the fix).
    """
    if isinstance(target, str):
        target = load_target(target)
    checkpoint = load_checkpoint(path, trust_pickle=trust_pickle)
    if timesteps is not None and timesteps < 1:
        raise InflorError(f"timesteps must be >= 1, got {timesteps}")
    config = checkpoint.config
    return compile_model(
        checkpoint.model, input_shape=(config.in_channels, config.image_size, config.image_size),
        timesteps=timesteps or config.timesteps, target=target, name=config.arch,
        source=ModelSource.from_checkpoint(checkpoint), quantization=quantization_for(checkpoint.metadata, quantization),
        stop_after=stop_after,
        probe_samples=probe_samples, on_step=on_step, input_range=input_range, input_mean=input_mean,
        input_std=input_std, input_encoding=input_encoding or checkpoint.metadata.get("input_encoding", "direct"),
        probe_images=probe_images,
    )  # fmt: skip


def compile_factory(
    weights: str | Path,
    factory: FactorySpec,
    *,
    input_shape: Sequence[int],
    timesteps: int,
    target: str | Target = "loihi2-sim",
    time_mode: str | None = None,
    **options: Any,
) -> CompileResult:
    """Compile a plain state_dict loaded into the model that ``factory`` builds.

    Args:
        weights: ``torch.save(model.state_dict(), path)``; read with ``weights_only=True``.
        factory: ``MODULE:FACTORY`` and its arguments (the user's code: it runs).
        input_shape, timesteps, target, time_mode: As :func:`compile_model`.
        **options: Further keyword arguments of :func:`compile_model`.
    """
    model = model_from_factory(factory, weights)
    return compile_model(
        model, input_shape=input_shape, timesteps=timesteps, target=target, time_mode=time_mode,
        source=ModelSource.from_factory(factory, weights, model), **options,
    )  # fmt: skip


def compile_nir(
    graph_or_path,
    *,
    timesteps: int,
    target: str | Target = "loihi2-sim",
    reset: str | None = None,
    dt: float | None = None,
    compare: str | None = None,
    convention: str | None = None,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
    **options: Any,
) -> CompileResult:
    """Compile a NIR graph (a ``.nir`` file, or a ``nir.NIRGraph`` in memory) for a target.

    Args:
        graph_or_path: The ``.nir`` file (read with ``nir.read``: no code runs) or the graph.
        timesteps: T (NIR states none).
        target: Target name or a loaded Target.
        reset, dt, compare, convention, input_shape, name: How the graph is read
            (:func:`inflor_deploy.frontends.nir.import_nir`; ``docs/nir.md``).
        **options: ``quantization``, ``stop_after``, ``probe_samples``, ``probe_images``,
            ``on_step`` and the input declaration (``input_range``, ``input_mean``,
            ``input_std``, ``input_encoding``) as for :func:`compile_model`.

    Raises:
        InflorError: an unreadable file, an unsupported node, a dynamics that cannot map onto
            Loihi integers exactly, a bad option, or a violated contract (each names the fix).
    """
    from inflor_deploy.frontends.nir import import_nir

    start = time.perf_counter()
    if isinstance(target, str):
        target = load_target(target)  # an unknown target is named before the graph is read
    declared = {k: options.pop(k) for k in ("input_range", "input_mean", "input_std", "input_encoding") if k in options}
    imported = import_nir(graph_or_path, timesteps=timesteps, reset=reset, dt=dt, compare=compare,
                          convention=convention, input_shape=input_shape, name=name, **declared)  # fmt: skip
    read = {"reset": reset, "dt": dt, "compare": compare, "convention": convention,
            "input_shape": None if input_shape is None else [int(v) for v in input_shape], "name": name}  # fmt: skip
    source = ModelSource.from_nir(graph_or_path)
    conventions = {
        "frontend": "nir",
        "input_shape": list(imported.graph.input.shape),
        "timesteps": int(timesteps),
        "nir_options": read,
        "reading": imported.reading.to_dict(),
        "readout": imported.graph.output.readout,
        "inexact": sorted(imported.inexact),
        "notes": list(imported.notes),
    }
    return compile_graph(imported.graph, source=source, conventions=conventions, target=target, start=start, **options)
