"""The torch.fx front end: any ``nn.Module`` built from supported layers -> the float IR.

    trace(model, input_shape=(C, H, W), timesteps=T)  ->  validated float IR Graph

How (one way, no guessing):

1. **Capture.** ``torch.fx`` traces ``model.forward`` into a dataflow graph
   (:mod:`~inflor_deploy.frontends.fx_capture`); spiking neurons and the
   framework wrappers named by the adapters (:mod:`~inflor_deploy.frontends.adapters`)
   stay leaves, so their internals are never traced.
2. **Shapes.** The graph runs once on an example input; every node's output
   shape is recorded (shape propagation), in eval mode, state reset after.
3. **Mapping.** Each fx node becomes IR nodes (:mod:`~inflor_deploy.frontends.fx_convert`);
   anything else stops with an error naming the op, the fx node, the module
   path and the supported list. The IR's shapes are checked against the
   recorded ones.

IR node names are module paths (``layer1.0.conv1``); functional ops are
named by the module that calls them and the fx node (``layer1.0.add``).

Time conventions (``time_mode``), stated by the user or read from the
neurons' adapters (an error when they disagree or say nothing):

* ``"multi"``: the module is called once on the whole sequence. It takes
  ``[T, B, C, H, W]``, or ``[B, C, H, W]`` when it repeats the frame itself
  (``x.unsqueeze(0).repeat(T, ...)``, or ``SpikingNetwork``'s
  :func:`~inflor_deploy.nn.models.direct_encoding`). The readout is the
  model's ``x.mean(0)`` / ``x.sum(0)`` (or a readout module), or, when the
  model returns ``[T, B, classes]``, the mean of that over T.
* ``"single"``: the module is called once per step on ``[B, C, H, W]`` and
  keeps its state inside (reset by the adapter before each sample batch);
  the readout is the mean over the T calls of what it returns.

Readout modes (:class:`~inflor_deploy.ir.Accumulator`): the mean over T of
a final synapse's current is ``mean_current`` (the score is the module's);
the sum or mean over T of the last spiking layer's spikes is
``spike_count``, whose score is the count. For a mean the module's score is
the count / T, so level 1 and 4 compare T times it (:attr:`TracedModel.score_scale`).
Any other reduction raises :class:`~inflor_deploy.frontends.fx_convert.UnsupportedReadoutError`.

Input (the declared :class:`~inflor_deploy.frontends.input_spec.InputSpec`,
written into the IR's Input by :func:`~inflor_deploy.frontends.input_spec.apply_input_spec`):

* ``encoding="direct"``: one analog frame per sample, repeated at every step
  (by the module itself, or by the caller for a ``[T, B, ...]`` module);
* ``encoding="sequence"``: event data, a new frame at every step. A
  multi-step module is called once on ``[T, B, C, H, W]``; a single-step
  module once per step on frame t. (The dataset layout is ``[B, T, C, H, W]``.)

A declared normalization (``--input-mean/--input-std``: the trained model
expects normalized data and the data pipeline, not the module, normalized
it) is applied to the data before the module sees it.

The :class:`TracedModel` that :func:`trace_model` returns also knows how to
run the user's module the way the user runs it, recording every neuron's
spikes (and membrane) with forward hooks: level 1 of the parity ladder.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from inflor_deploy.errors import ExportError
from inflor_deploy.frontends.adapters import TIME_MODES, Adapter, adapters_for
from inflor_deploy.frontends.fx_capture import capture_graph, inference_mode, record
from inflor_deploy.frontends.fx_convert import (
    SUPPORTED_OPS, Converter, Probe, UnsupportedOpError, UnsupportedReadoutError, Value,
)
from inflor_deploy.frontends.input_spec import InputSpec, apply_input_spec
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes, validate

__all__ = ["SUPPORTED_OPS", "TracedModel", "UnsupportedOpError", "UnsupportedReadoutError", "trace", "trace_model"]


@dataclass(frozen=True)
class TracedModel:
    """The float IR of a module, and how to run the module itself (level 1).

    Attributes:
        graph: The validated float IR.
        model: The user's module.
        time_mode: ``"multi"`` or ``"single"``.
        encodes_inside: Multi-step: the module takes ``[B, C, H, W]`` and repeats it itself.
        timesteps_argument: Keyword of ``model.forward`` that sets T (e.g. ``SpikingNetwork``'s ``T``), or None.
        readout: ``"module"`` (the model returns the class scores) or
            ``"mean_over_time"`` (the IR averages what the model returns over T).
        probes: The modules whose outputs level 1 records, by IR neuron name.
        adapters: The framework adapters used.
        inexact: IR neurons whose H the framework computes in another float
            operation order (the neuron's own update, or a sum of currents
            like ``(a + b) + (c + d)``); level 1 counts last-ulp near-ties there.
        input_spec: The declared input (encoding; a normalization the data
            pipeline applies before the module).
        score_scale: The IR's class score per the module's: T when the module
            averages spike trains over T (the IR's ``spike_count`` score is
            their count), else 1.
    """

    graph: Graph
    model: nn.Module
    time_mode: Literal["multi", "single"]
    encodes_inside: bool
    timesteps_argument: str | None
    readout: Literal["module", "mean_over_time"]
    probes: tuple[Probe, ...]
    adapters: tuple[Adapter, ...]
    inexact: frozenset[str] = frozenset()
    input_spec: InputSpec = InputSpec()
    score_scale: int = 1

    @property
    def encoding(self) -> str:
        return self.input_spec.encoding

    @property
    def timesteps(self) -> int:
        return self.graph.timesteps

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.input.shape)

    def conventions(self) -> dict[str, Any]:
        """The time and I/O conventions, JSON-ready (recorded in the artifact manifest)."""
        return {
            "frontend": "fx",
            "input_shape": list(self.input_shape),
            "timesteps": self.timesteps,
            "time_mode": self.time_mode,
            "input": self._input_layout(),
            "encoding": self.encoding,
            "readout": self.readout,
            "score_scale": self.score_scale,
            "adapters": [a.name for a in self.adapters],
        }

    def _input_layout(self) -> str:
        if self.encoding == "sequence":
            return "[B, C, H, W], frame t at step t" if self.time_mode == "single" else "[T, B, C, H, W] (events)"
        if self.encodes_inside or self.time_mode == "single":
            return "[B, C, H, W], encoded inside"
        return "[T, B, C, H, W] (the frame repeated T times)"

    def module_input(self, images: np.ndarray) -> torch.Tensor:
        """The data as the module's caller hands them over: float32, normalized if the data pipeline normalizes.

        ``images`` are in the units of the IR's Input (``[B, C, H, W]``, or
        ``[B, T, C, H, W]`` for a sequence). A declared normalization is
        applied as the data pipeline applied it, ``(x - mean) / std`` per
        channel in float32 (the float IR's own arithmetic).
        """
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        spec = self.input_spec
        if spec.mean is not None:
            rank = len(self.input_shape)
            view = (1,) * (x.dim() - rank) + (-1,) + (1,) * (rank - 1)
            mean = torch.tensor(spec.mean, dtype=torch.float32).view(view)
            std = torch.tensor(spec.std, dtype=torch.float32).view(view)
            x = (x - mean) / std
        return x

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        T = self.timesteps
        sequence = self.encoding == "sequence"
        if self.time_mode == "single":
            outputs = [self.model(x[:, t] if sequence else x) for t in range(T)]
            return torch.stack(outputs).mean(0)
        if sequence:
            kwargs = {self.timesteps_argument: T} if self.timesteps_argument else {}
            out = self.model(x.transpose(0, 1).contiguous(), **kwargs)
        elif self.encodes_inside:
            kwargs = {self.timesteps_argument: T} if self.timesteps_argument else {}
            out = self.model(x, **kwargs)
        else:
            out = self.model(x.unsqueeze(0).repeat(T, *([1] * x.dim())))
        return out.mean(0) if self.readout == "mean_over_time" else out

    def run(self, images: np.ndarray):
        """Run the user's module on ``images`` as the user runs it, recording every probe.

        ``images``: ``[B, C, H, W]`` (``[B, T, C, H, W]`` for a sequence), in
        the units of the IR's Input (see :meth:`module_input`).

        Returns:
            A :class:`~inflor_deploy.backends.sim.float_ir.FloatRun`: the class
            scores in the IR's units (see :meth:`ir_scores`), each IR neuron's
            ``[T, B, ...]`` spikes (uint8) from the module's own forward pass,
            and its membranes H where the framework exposes them (missing
            names: the adapter cannot read them).
        """
        from inflor_deploy.backends.sim.float_ir import FloatRun

        T = self.timesteps
        outputs: dict[str, list] = {p.name: [] for p in self.probes}
        membranes: dict[str, list] = {p.name: [] for p in self.probes}

        def hook(probe: Probe):
            def read(module, inputs, output):
                capture = probe.adapter.capture(module, output) if probe.adapter else None
                spikes = capture.spikes if capture else output
                outputs[probe.name].append(spikes.detach().clone())
                if capture is not None and capture.membrane is not None:
                    membranes[probe.name].append(capture.membrane.detach().clone())

            return read

        handles = [p.module.register_forward_hook(hook(p)) for p in self.probes]
        x = self.module_input(images)
        try:
            with contextlib.ExitStack() as stack:
                for p in self.probes:
                    if p.adapter is not None:
                        stack.enter_context(p.adapter.recording(p.module))
                stack.enter_context(inference_mode(self.model))
                self._reset()
                scores = self._call(x)
        finally:
            for handle in handles:
                handle.remove()
            self._reset()

        shapes = infer_shapes(self.graph)

        def over_time(name: str, parts: list) -> np.ndarray:
            if self.time_mode == "multi" and len(parts) != 1:
                raise ExportError(f"{name!r} ran {len(parts)} times in one multi-step call; expected once")
            stacked = torch.stack(parts) if self.time_mode == "single" else parts[0]
            return stacked.reshape(T, x.shape[0], *shapes[name]).numpy()

        spikes = {p.name: over_time(p.name, outputs[p.name]).astype(np.uint8) for p in self.probes}
        found = {p.name: over_time(p.name, membranes[p.name]) for p in self.probes if membranes[p.name]}
        order = [x.name for x in self.graph.of_type(n.Neuron)]
        return FloatRun(
            scores=self.ir_scores(scores.numpy()),
            spikes={k: spikes[k] for k in order if k in spikes},
            membranes={k: found[k] for k in order if k in found},
        )

    def ir_scores(self, scores: np.ndarray) -> np.ndarray:
        """The module's class scores in the IR's units.

        With :attr:`score_scale` T the module returns the mean over T of 0/1
        spikes, ``fl(k / T)`` for a count k; the IR's score is k. In float64
        ``T * fl(k / T)`` is within ``k * 2^-24 < 1/2`` of k (k <= T * neurons
        is far below 2^23), so rounding it gives k exactly.
        """
        if self.score_scale == 1:
            return scores
        return np.rint(scores.astype(np.float64) * self.score_scale).astype(scores.dtype)

    def _reset(self) -> None:
        for adapter in self.adapters:
            adapter.reset_state(self.model)


def _check_arguments(model, input_shape, timesteps, time_mode) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ExportError(f"input_shape must be a tuple of positive ints such as (1, 8, 8); got {input_shape!r}") from None
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape) or any(isinstance(s, bool) for s in input_shape):
        raise ExportError(
            f"input_shape must be 1 to 3 positive ints per sample, without batch or time, e.g. (C, H, W) = "
            f"(1, 8, 8); got {input_shape!r}"
        )
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ExportError(f"timesteps must be an int >= 1; got {timesteps!r}")
    if time_mode is not None and time_mode not in TIME_MODES:
        raise ExportError(f"time_mode must be one of {', '.join(TIME_MODES)} (or None to read it from the neurons); got {time_mode!r}")
    return shape


def _resolve_time_mode(model: nn.Module, adapters: Sequence[Adapter], time_mode: str | None) -> str:
    neurons = [(path, m, a) for path, m in model.named_modules() for a in adapters if a.is_neuron(m)]
    if not neurons:
        raise ExportError(
            f"{type(model).__name__} has no spiking neuron layer known to the adapters "
            f"({', '.join(a.name for a in adapters)}): it is not an SNN. Build it from inflor_deploy.nn neurons "
            "(SRIF, IFNeuron, LIFNeuron) or a supported framework's"
        )
    stated = {}
    for path, module, adapter in neurons:
        mode = adapter.time_mode(module)
        if mode is not None:
            stated.setdefault(mode, path)
    if time_mode is not None:
        other = [mode for mode in stated if mode != time_mode]
        if other:
            raise ExportError(
                f"time_mode={time_mode!r} contradicts neuron {stated[other[0]]!r}, which is {other[0]}-step; "
                f"pass time_mode={other[0]!r} or configure the neurons for {time_mode}-step"
            )
        return time_mode
    if len(stated) > 1:
        raise ExportError(
            "the neurons mix time conventions: "
            + ", ".join(f"{path!r} is {mode}-step" for mode, path in stated.items())
            + "; use one step mode for the whole network"
        )
    if not stated:
        raise ExportError(
            f"the time convention of {type(model).__name__}'s neurons is ambiguous; pass time_mode='multi' "
            "(one call on [T, B, ...]) or time_mode='single' (one call per step)"
        )
    return next(iter(stated))


def _repeats_frame(gm: fx.GraphModule) -> bool:
    """Whether the forward repeats a frame over time itself: ``x.unsqueeze(0).repeat(T, ...)`` / ``expand``."""
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "unsqueeze":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim == 0 and any(u.op == "call_method" and u.target in ("repeat", "expand") for u in node.users):
                return True
    return False


def _encodes_inside(gm: fx.GraphModule, adapters: Sequence[Adapter]) -> bool:
    if any(node.op == "call_function" and any(a.encoding(node.target) == "direct" for a in adapters)
           for node in gm.graph.nodes):  # fmt: skip
        return True
    return _repeats_frame(gm)


def _call_arguments(model: nn.Module, gm: fx.GraphModule, example: torch.Tensor, timesteps_argument: str | None, T: int):
    placeholders = [x for x in gm.graph.nodes if x.op == "placeholder"]
    if not placeholders:
        raise ExportError(f"{type(model).__name__}.forward takes no input")
    names = [p for p in inspect.signature(model.forward).parameters]
    args: list[Any] = [example]
    for index, placeholder in enumerate(placeholders[1:], start=1):
        name = names[index] if index < len(names) else placeholder.target
        if name == timesteps_argument:
            args.append(T)
        elif placeholder.args:
            args.append(placeholder.args[0])  # its default
        else:
            raise ExportError(
                f"{type(model).__name__}.forward needs the argument {name!r}; only the input may be required "
                "(give the others defaults)"
            )
    return args


def trace_model(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    timesteps: int | None = None,
    *,
    time_mode: Literal["multi", "single"] | None = None,
    adapters: Iterable[str | Adapter] | None = None,
    name: str | None = None,
    input_spec: InputSpec | None = None,
) -> TracedModel:
    """Trace a module into the float IR, keeping what level 1 needs to run the module itself.

    Args:
        model: The trained module (its weights are copied; it is not changed).
        input_shape: One sample without batch or time, e.g. ``(C, H, W)``;
            None: what the model declares (a ``build_model`` network's config).
        timesteps: T, the steps per sample; None: what the model declares.
        time_mode: ``"multi"`` / ``"single"`` (module docstring); None reads it from the neurons.
        adapters: Framework adapter names; None: the project's own plus those
            whose framework the model uses.
        name: The graph's name (reports); default: the declared name (the
            zoo architecture), else the model's class name.
        input_spec: The declared input (range, pixel levels, normalization,
            encoding: :func:`~inflor_deploy.frontends.input_spec.resolve_input_spec`);
            default pixels in [0, 1], direct encoding.

    Raises:
        ExportError: Not an SNN, ambiguous or contradictory time convention,
            a forward torch.fx cannot trace, an unsupported op (the message
            names the op, fx node, module path and the supported list), or
            wrong input_shape/timesteps (the example run fails or repeats the
            input another number of times).
    """
    if not isinstance(model, nn.Module):
        raise ExportError(f"trace needs a torch nn.Module; got {type(model).__name__}")
    used = adapters_for(model, adapters)
    declared = next((d for d in (a.declared_input(model) for a in used) if d is not None), None)
    if input_shape is None or timesteps is None:
        if declared is None:
            raise ExportError(
                f"{type(model).__name__} does not declare its input: pass input_shape=(C, H, W) and timesteps=T"
            )
        input_shape = declared[0] if input_shape is None else input_shape
        timesteps = declared[1] if timesteps is None else timesteps
    if name is None and declared is not None:
        name = declared[2]
    shape = _check_arguments(model, input_shape, timesteps, time_mode)
    mode = _resolve_time_mode(model, used, time_mode)
    timesteps_argument = next((a.timesteps_argument(model) for a in used if a.timesteps_argument(model)), None)
    spec = input_spec or InputSpec()
    sequence = spec.encoding == "sequence"
    gm = capture_graph(model, used)
    if sequence and mode == "multi" and _repeats_frame(gm):
        raise ExportError(
            f"{type(model).__name__} repeats its input over time itself (x.unsqueeze(0).repeat/expand: direct "
            "encoding), but the input was declared a sequence (--input-encoding sequence): declare direct encoding, "
            "or give the model the [T, B, C, H, W] events"
        )
    # A sequence is handed over time-first; a direct encoding inside the model (SpikingNetwork's) passes it through.
    encodes_inside = mode == "multi" and not sequence and _encodes_inside(gm, used)
    batch = 2 if timesteps != 2 else 3  # B != T keeps the [T, B] axes apart in every shape check
    layout = "step" if mode == "single" else ("frame" if encodes_inside else "seq")
    lead = (batch,) if layout != "seq" else (timesteps, batch)
    example = torch.rand(lead + shape, generator=torch.Generator().manual_seed(0))
    traced = TracedModel(
        graph=Graph((), timesteps), model=model, time_mode=mode, encodes_inside=encodes_inside,  # type: ignore[arg-type]
        timesteps_argument=timesteps_argument, readout="module", probes=(), adapters=used, input_spec=spec,
    )  # fmt: skip
    try:
        recorded = record(gm, *_call_arguments(model, gm, example, timesteps_argument, timesteps))
    finally:
        traced._reset()
    converter = Converter(used, mode, timesteps, batch, spec.encoding)
    converter.add(n.Input(name=n.INPUT_NAME, sources=(), shape=shape), shape)
    out = converter.convert(gm, recorded, [Value((n.INPUT_NAME,), "input", False, layout, shape)])
    readout = "module"
    if out.kind != "readout":
        if out.layout != ("step" if mode == "single" else "seq") or out.kind == "input":
            raise ExportError(
                f"{type(model).__name__} returns a {out.layout} tensor of shape {list(converter.lead(out.layout))} + "
                f"{list(out.shape)}; it must return the class scores: x.mean(0) of a [T, B, classes] tensor, or "
                "[T, B, classes] (multi-step), or [B, classes] each step (single-step)"
            )
        made = n.Accumulator(name=converter.unique("readout"), sources=out.sources)
        accumulator = converter.readout_of(None, out, made)  # spike trains: spike_count (score: the count)
        converter.add(accumulator, out.shape)
        readout = "mean_over_time"
    graph = Graph(tuple(converter.nodes), timesteps=timesteps, name=name or type(model).__name__)
    shapes = validate(graph)
    for node_name, expected in converter.expected_shapes.items():
        if shapes[node_name] != expected:
            raise ExportError(
                f"IR node {node_name!r} has shape {shapes[node_name]} but the module computed {expected}; "
                "the mapping of this layer is wrong or unsupported"
            )
    inexact = frozenset(
        p.name for p in converter.probes if p.adapter is not None and not p.adapter.exact_float(p.module)
    ) | frozenset(converter.reordered)
    return TracedModel(
        graph=apply_input_spec(graph, spec), model=model, time_mode=mode, encodes_inside=encodes_inside,  # type: ignore[arg-type]
        timesteps_argument=timesteps_argument, readout=readout, probes=tuple(converter.probes), adapters=used,  # type: ignore[arg-type]
        inexact=inexact, input_spec=spec, score_scale=converter.score_scale,
    )  # fmt: skip


def trace(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    timesteps: int | None = None,
    *,
    time_mode: Literal["multi", "single"] | None = None,
    adapters: Iterable[str | Adapter] | None = None,
    name: str | None = None,
    input_spec: InputSpec | None = None,
) -> Graph:
    """The validated float IR of ``model`` (see :func:`trace_model` for the arguments)."""
    return trace_model(
        model, input_shape, timesteps, time_mode=time_mode, adapters=adapters, name=name, input_spec=input_spec
    ).graph
