"""Map a traced fx graph onto float IR nodes, op by op.

Every fx node becomes a :class:`Value` (an IR tensor and what it carries),
a :class:`Const` (shapes, ints: read from the recorded example run), or an
error naming the op, the fx node, the module path and :data:`SUPPORTED_OPS`.

Tensors between layers have one of four layouts, known from the time
convention and checked against the recorded shapes:

* ``seq``: ``[T, B, ...]``, between multi-step layers;
* ``merged``: ``[T*B, ...]``, inside a wrapper that applies a module per step;
* ``step``: ``[B, ...]``, single-step modules (called once per step);
* ``frame``: ``[B, C, H, W]``, a multi-step model's input before it encodes it.

Stateless torch layers act per sample, so they map onto IR nodes directly in
the ``merged``, ``step`` and ``frame`` layouts (and ``nn.Linear``, which acts
on the last axis, also in ``seq``). What a tensor carries decides what may
read it: a synapse reads the input or spike trains (never a current: on
Loihi a synapse reads spikes); a neuron reads currents (and spike trains,
identity shortcuts); max pooling reads binary spike trains only.

A leading ``(x - mean) / std`` of the model input (also ``x - mean`` or
``x / std`` alone), with per-channel constants (buffers, parameters, or
numbers; shaped ``(C, 1, 1)``, ``(1, C, 1, 1)``, ... so that they broadcast
along the channel axis only), is an IR :class:`~inflor_deploy.ir.Normalize`
right after the Input, computed in float32 as torch computes it;
``FoldInputNormalization`` folds it into the first synapses. Anything else
(a statistic of the input, values that vary across positions, float64
constants, a product) is refused with the reason. Operations on constants
alone (``self.mean.view(1, -1, 1, 1)``) are evaluated once, at trace time.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from inflor_deploy.errors import ExportError
from inflor_deploy.frontends.adapters.base import Adapter
from inflor_deploy.frontends.fx_capture import Recorded, capture_graph, record
from inflor_deploy.frontends.spike_max_pool import spike_max_pool
from inflor_deploy.ir import nodes as n

Layout = Literal["frame", "seq", "merged", "step"]
Kind = Literal["input", "spikes", "current", "readout"]

#: What the fx front end maps, for error messages and the documentation.
SUPPORTED_OPS: tuple[str, ...] = (
    "nn.Conv2d / F.conv2d (stride, padding, groups, dilation; zero padding)",
    "nn.Linear / F.linear",
    "nn.BatchNorm1d/2d (inference statistics; folded into the synapse before it)",
    "nn.AvgPool2d / F.avg_pool2d (stride == kernel, no padding)",
    "nn.AdaptiveAvgPool2d / F.adaptive_avg_pool2d (output size divides the input)",
    "nn.MaxPool2d / F.max_pool2d of spike trains (an exact OR neuron layer)",
    "nn.Flatten / torch.flatten / Tensor.flatten, view, reshape (a per-sample flatten)",
    "nn.Dropout* / F.dropout*, nn.Identity, Tensor.contiguous (removed at inference)",
    "a + b (currents into a neuron; spike trains into a synapse)",
    "(x - mean) / std of the model input, per-channel constants (input normalization)",
    "torch.cat along the channel axis (spike trains)",
    "x.unsqueeze(0).repeat(T, ...) / expand (direct encoding)",
    "readouts over time: x.mean(0) of a final synapse's current (mean_current); x.sum(0) or x.mean(0) of "
    "spike trains (spike_count)",
    "x.flatten(0, 1) / view(T, B, ...) (merging and splitting time and batch)",
    "spiking neurons and layers of the framework adapters (inflor: Neuron, TdBatchNorm, TimeDistributed, "
    "OutputAccumulator)",
)


class UnsupportedOpError(ExportError):
    """An fx node the front end cannot map; the message names the op, the node, the module and the supported list."""


class UnsupportedReadoutError(UnsupportedOpError):
    """A reduction (over time or another axis) that is none of the IR's readouts (:data:`READOUT_FORMS`)."""


#: The reductions over time the front end maps onto an :class:`~inflor_deploy.ir.Accumulator` readout.
READOUT_FORMS = (
    "x.mean(0) of a synapse's current [T, B, classes] -> mean_current (score: the mean over T)",
    "x.sum(0) of spike trains -> spike_count (score: the count)",
    "x.mean(0) of spike trains -> spike_count (score: the count; the module's score is the count / T)",
)


@dataclass(frozen=True)
class Value:
    """A tensor of the user's graph, in IR terms.

    Attributes:
        sources: IR nodes whose outputs sum to this tensor: one, or several for
            ``a + b`` (materialized as an :class:`~inflor_deploy.ir.Add` only
            if something other than a neuron reads it).
        kind: ``"input"`` (the analog frame, or anything joined with it),
            ``"spikes"`` (spike trains, or sums of them), ``"current"`` (synapse
            and normalization outputs), ``"readout"`` (the accumulator).
        binary: Every value is 0 or 1 (what max pooling may OR).
        layout: See the module docstring.
        shape: Per-sample shape.
        in_order: A sum whose sources, added left to right as the IR adds a
            neuron's sources, give torch's float result bit for bit.
    """

    sources: tuple[str, ...]
    kind: Kind
    binary: bool
    layout: Layout
    shape: tuple[int, ...]
    in_order: bool = True


@dataclass(frozen=True)
class Const:
    """A non-tensor value (a shape, an int, a parameter tensor of a functional call)."""

    value: Any


@dataclass(frozen=True)
class _OneFrame:
    """``x.unsqueeze(0)`` of a frame: ``[1, B, ...]``, waiting to be repeated T times (direct encoding)."""

    value: Value


@dataclass(frozen=True)
class Probe:
    """A module whose outputs level 1 reads in the framework's own run.

    Attributes:
        name: The IR neuron it corresponds to.
        module: The module (a hook is registered on it).
        adapter: Its adapter (None for ``nn.MaxPool2d``, whose output is the OR layer's spikes).
        layout: The layout of the module's output (``merged`` outputs are
            ``[T*B, ...]`` and are reshaped to ``[T, B, ...]``).
    """

    name: str
    module: nn.Module
    adapter: Adapter | None
    layout: Layout


class _BadArgument(Exception):
    """A layer argument of an unsupported form (turned into an UnsupportedOpError naming the node)."""


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise _BadArgument(f"{what}={value!r} is not an int or a pair of ints")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], int):
        return (value[0], value[0])
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise _BadArgument(f"{what}={value!r} is not an int or a pair of ints")


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy (the IR owns its arrays; the model may change later)."""
    return tensor.detach().to(torch.float32).cpu().numpy().copy()


def _dilated(weight: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
    """A dilated kernel as the plain kernel it equals: zeros between the taps.

    ``conv(x, W, dilation=d)`` sums ``W[a, b] * x[s*i + d*a - p, s*j + d*b - p]``;
    the kernel ``W'`` of size ``d*(k-1)+1`` with ``W'[d*a, d*b] = W[a, b]`` and
    zeros elsewhere sums the same products plus zeros, with the same output
    size ``(H + 2p - d(k-1) - 1) // s + 1``. Lava's Conv computes a dilated
    convolution the same way (``lava/proc/conv/utils.py``: a zero-filled
    ``dilated_weight``), so the integer network is the one Lava would run.
    """
    if dilation == (1, 1):
        return weight
    o, c, kh, kw = weight.shape
    out = np.zeros((o, c, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1), weight.dtype)
    out[:, :, :: dilation[0], :: dilation[1]] = weight
    return out


def _describe(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    if module.startswith("torch.nn.functional") or getattr(F, getattr(target, "__name__", ""), None) is target:
        return f"F.{getattr(target, '__name__', name)}"
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if getattr(torch, getattr(target, "__name__", ""), None) is target:
        return f"torch.{target.__name__}"
    return f"{module}.{name}" if module else name


class Converter:
    """Turns one traced graph (and the sub-graphs of per-step containers) into IR nodes.

    Args:
        adapters: The framework adapters in use.
        time_mode: ``"multi"`` or ``"single"``.
        timesteps: T.
        batch: B of the example input.
        encoding: The declared input encoding (``"direct"`` or ``"sequence"``).
    """

    def __init__(
        self, adapters: Sequence[Adapter], time_mode: str, timesteps: int, batch: int, encoding: str = "direct"
    ) -> None:
        self.adapters = tuple(adapters)
        self.time_mode = time_mode
        self.encoding = encoding
        self.T = timesteps
        self.B = batch
        self.nodes: list[n.Node] = []
        self.names: set[str] = set()
        self.probes: list[Probe] = []
        self.neuron_calls: set[int] = set()
        self.unprobed: set[int] = set()  # modules called more than once: their outputs are not read
        self.module_calls: dict[str, int] = {}
        self.materialized: dict[tuple[str, ...], str] = {}  # sum of spike trains -> its Add node
        self.sum_names: dict[tuple[str, ...], str] = {}  # sum of spike trains -> the name of the op that made it
        self.expected_shapes: dict[str, tuple[int, ...]] = {}  # IR node -> per-sample shape torch computed
        self.reordered: set[str] = set()  # neurons whose input sum the IR adds in another float order
        # The IR's class score per the module's score: T when the module averages spikes over T
        # (the IR's spike_count score is their count).
        self.score_scale = 1
        # Per fx graph being converted:
        self.root: nn.Module | None = None
        self.recorded: dict[fx.Node, Recorded] = {}
        self.prefix = ""
        self.env: dict[fx.Node, Any] = {}
        # While a per-step wrapper's layer is mapped directly, the wrapper's fx node reports the outer layout.
        self.wrapper_layout: Layout | None = None

    # ------------------------------------------------------------------ helpers

    def lead(self, layout: Layout) -> tuple[int, ...]:
        return {"frame": (self.B,), "seq": (self.T, self.B), "merged": (self.T * self.B,), "step": (self.B,)}[layout]

    def join(self, *parts: str) -> str:
        return ".".join(p for p in parts if p)

    def unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.names:
            candidate, k = f"{name}_{k}", k + 1
        return candidate

    def add(self, node: n.Node, shape: tuple[int, ...] | None = None) -> str:
        if node.name in self.names:
            raise ExportError(f"IR node name {node.name!r} used twice (front end bug)")
        self.nodes.append(node)
        self.names.add(node.name)
        if shape is not None:
            self.expected_shapes[node.name] = tuple(shape)
        return node.name

    def module_path(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return self.join(self.prefix, node.target)
        stack = node.meta.get("nn_module_stack") or {}
        inner = next(reversed(stack.values()))[0] if stack else ""
        return self.join(self.prefix, inner)

    def op_name(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        inner = next(reversed(stack.values()))[0] if stack else ""
        return self.unique(self.join(self.prefix, inner, node.name))

    def error(self, node: fx.Node, why: str = "") -> UnsupportedOpError:
        path = self.module_path(node) or "<model>"
        reason = f": {why}" if why else ""
        where = f" of the per-step module {self.prefix!r}" if self.prefix else ""
        return UnsupportedOpError(
            f"{_describe(node, self.root)} at fx node {node.name!r}{where} (module {path!r}) cannot be converted{reason}. "
            f"Supported: {'; '.join(SUPPORTED_OPS)}"
        )

    def out_shape(self, node: fx.Node) -> tuple[int, ...]:
        rec = self.recorded.get(node)
        if rec is None or rec.shape is None:
            raise self.error(node, "it produced no tensor on the example input")
        return rec.shape

    def per_sample(self, node: fx.Node, layout: Layout) -> tuple[int, ...]:
        """The node's output shape without the layout's leading dimensions (which are checked)."""
        shape = self.out_shape(node)
        lead = self.lead(layout)
        if self.wrapper_layout is not None and shape[: len(lead)] != lead:
            lead = self.lead(self.wrapper_layout)
        if shape[: len(lead)] != lead:
            raise self.error(node, f"its output has shape {shape}, not the {layout} layout {list(lead)} + per-sample shape")
        return shape[len(lead):]

    def value(self, node: fx.Node, arg: Any, what: str = "input") -> Value:
        """An argument that must be a tensor of the graph (sums of spike trains materialized by the caller)."""
        resolved = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(resolved, _OneFrame):
            raise self.error(node, "it reads x.unsqueeze(0) of the input before the input is repeated over time")
        if not isinstance(resolved, Value):
            raise self.error(node, f"its {what} is not a tensor computed from the model input")
        if resolved.kind == "readout":
            raise self.error(node, "nothing may follow the readout (the class score is the mean over T)")
        return resolved

    def const(self, arg: Any) -> Any:
        """A non-tensor argument with fx nodes replaced by their recorded values."""
        if isinstance(arg, fx.Node):
            resolved = self.env.get(arg)
            if isinstance(resolved, Const):
                return resolved.value
            raise ExportError(f"fx node {arg.name!r} is a tensor where a constant was expected")
        if isinstance(arg, (tuple, list)):
            return type(arg)(self.const(a) for a in arg)
        return arg

    def pending_normalization(self, node: fx.Node, x: Value) -> int | None:
        """Index of the Normalize that ``x - mean`` made, when this division is its only use; else None."""
        if len(x.sources) != 1 or x.kind != "input":
            return None
        index = next((i for i, m in enumerate(self.nodes) if m.name == x.sources[0]), None)
        if index is None or not isinstance(self.nodes[index], n.Normalize) or not (self.nodes[index].std == 1).all():
            return None
        source = node.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return None
        return index

    def single(self, node: fx.Node, value: Value) -> str:
        """One IR tensor for ``value``: a sum of several spike trains becomes an Add node."""
        if len(value.sources) == 1:
            return value.sources[0]
        if value.kind == "current":
            raise self.error(
                node,
                "it reads a sum of currents; currents may only be summed straight into a neuron "
                "(a residual addition before the neuron)",
            )
        if value.sources not in self.materialized:
            name = self.unique(self.sum_names.get(value.sources, "add"))
            self.materialized[value.sources] = self.add(n.Add(name=name, sources=value.sources), value.shape)
        return self.materialized[value.sources]

    def synapse_input(self, node: fx.Node, value: Value) -> str:
        if value.kind == "current":
            raise self.error(
                node,
                f"it reads a current (the output of {value.sources[-1]!r}); on Loihi a synapse reads the "
                "input or spike trains, so a neuron must come between two synapses",
            )
        return self.single(node, value)

    def per_sample_layout(self, node: fx.Node, value: Value, allow_seq: bool = False) -> None:
        allowed = ("frame", "merged", "step") + (("seq",) if allow_seq else ())
        if value.layout not in allowed:
            raise self.error(
                node,
                "it is applied to a time-first [T, B, ...] tensor; apply it per step (wrap it in the "
                "framework's per-step wrapper, e.g. TimeDistributed, or call it on x.flatten(0, 1))",
            )

    # ------------------------------------------------------------------ graphs

    def convert(
        self,
        gm: fx.GraphModule,
        recorded: dict[fx.Node, Recorded],
        inputs: Sequence[Value],
        prefix: str = "",
    ) -> Value:
        """Convert one traced graph; ``inputs`` are the Values of its placeholders, in order."""
        saved = (self.root, self.recorded, self.prefix, self.env)
        self.root, self.recorded, self.prefix, self.env = gm, recorded, prefix, {}
        try:
            placeholders = [x for x in gm.graph.nodes if x.op == "placeholder"]
            for i, placeholder in enumerate(placeholders):
                if i < len(inputs):
                    self.env[placeholder] = inputs[i]
                else:
                    self.env[placeholder] = Const(recorded[placeholder].value if placeholder in recorded else None)
            result = None
            for node in gm.graph.nodes:
                if node.op == "placeholder":
                    continue
                if node.op == "output":
                    result = self.env.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
                    if not isinstance(result, Value):
                        raise self.error(node, "the model must return one tensor (the class scores)")
                    break
                self.env[node] = self.map_node(node)
            return result
        finally:
            self.root, self.recorded, self.prefix, self.env = saved

    def map_node(self, node: fx.Node) -> Any:
        rec = self.recorded.get(node)
        if node.op == "get_attr":
            return Const(_fetch_attr(self.root, node.target))
        tensor_args = [a for a in node.all_input_nodes if isinstance(self.env.get(a), (Value, _OneFrame))]
        if rec is not None and rec.shape is None and not tensor_args:
            return Const(rec.value)  # shapes, sizes, ints
        if not tensor_args and node.op in ("call_function", "call_method"):
            return self.fold_constant(node)
        if node.op == "call_module":
            return self.call_module(node, self.root.get_submodule(node.target))
        if node.op == "call_function":
            if node.target is getattr and len(node.args) == 2 and node.args[1] == "shape":
                return Const(rec.value)
            if node.target is operator.getitem and rec is not None and rec.shape is None:
                return Const(rec.value)
            handler = _FUNCTION_HANDLERS.get(node.target)
            if handler is None:
                for adapter in self.adapters:
                    if adapter.encoding(node.target) == "direct":
                        return self.direct_encoding(node)
                raise self.error(node)
            return handler(self, node)
        if node.op == "call_method":
            if node.target in ("size", "dim") and rec is not None and rec.shape is None:
                return Const(rec.value)
            handler = _METHOD_HANDLERS.get(node.target)
            if handler is None:
                raise self.error(node)
            return handler(self, node)
        raise self.error(node)

    def fold_constant(self, node: fx.Node) -> Const:
        """An operation on constants alone (``self.mean.view(1, -1, 1, 1)``), evaluated once, now."""
        if node.target in _RANDOM:
            raise self.error(node, "it draws random numbers; the network must be deterministic at inference")
        args, kwargs = self.const(tuple(node.args)), {k: self.const(v) for k, v in node.kwargs.items()}
        try:
            with torch.no_grad():
                if node.op == "call_method":
                    return Const(getattr(args[0], node.target)(*args[1:], **kwargs))
                return Const(node.target(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - the user's expression may fail in any way
            raise self.error(node, f"evaluating it on the model's constants failed ({type(err).__name__}: {err})") from err

    # ------------------------------------------------------------------ modules

    def call_module(self, node: fx.Node, module: nn.Module) -> Value:
        path = self.join(self.prefix, node.target)
        calls = self.module_calls.get(path, 0)
        self.module_calls[path] = calls + 1
        name = path if calls == 0 else f"{path}@{calls}"
        adapter = next((a for a in self.adapters if a.is_leaf(module)), None)
        if adapter is not None:
            return self.adapter_leaf(node, adapter, module, name)
        return self.torch_module(node, module, type(module), name, self.value(node, node.args[0]))

    def adapter_leaf(self, node: fx.Node, adapter: Adapter, module: nn.Module, name: str) -> Value:
        x = self.value(node, node.args[0])
        if adapter.is_neuron(module):
            if id(module) in self.neuron_calls:
                raise self.error(node, "this neuron module is called a second time; each neuron layer holds its own "
                                       "state, so use one module per layer")  # fmt: skip
            self.neuron_calls.add(id(module))
            mode_layout = "seq" if self.time_mode == "multi" else "step"
            if x.layout != mode_layout:
                raise self.error(node, f"a {self.time_mode}-step neuron needs {list(self.lead(mode_layout))} + per-sample "
                                       f"input; it gets the {x.layout} layout")  # fmt: skip
            if x.kind == "input":
                raise self.error(node, "a neuron's input must come from a synapse (Conv2d/Linear), not the raw input")
            neuron = adapter.neuron(name, module, x.sources)
            if not x.in_order:
                self.reordered.add(name)
            self.add(neuron, self.per_sample(node, mode_layout))
            self.probes.append(Probe(name=name, module=module, adapter=adapter, layout=mode_layout))
            return Value((name,), "spikes", True, mode_layout, self.per_sample(node, mode_layout))
        if adapter.is_time_first_normalization(module):
            if x.layout != "seq":
                raise self.error(node, "a time-first normalization needs [T, B, ...] input")
            if x.kind != "current":
                raise self.error(node, "normalization must follow a synapse (it folds into it)")
            self.add(adapter.normalization(name, module, self.single(node, x)), x.shape)
            return Value((name,), "current", False, "seq", self.per_sample(node, "seq"))
        if adapter.is_readout(module):
            return self.accumulate(node, x, lambda sources: adapter.readout(name, module, sources))
        per_step = adapter.per_step(name, module)
        inner_layout: Layout = {"seq": "merged", "step": "step"}.get(x.layout)  # type: ignore[assignment]
        if inner_layout is None:
            raise self.error(node, f"a per-step wrapper needs [T, B, ...] (multi) or [B, ...] (single) input, not {x.layout}")
        inner = per_step.module
        if any(a.is_leaf(inner) for a in self.adapters):
            raise self.error(node, "time-first layers (neurons, tdBN, readouts, wrappers) must not be wrapped in a per-step wrapper")
        as_type = per_step.as_type or type(inner)
        if as_type not in _MODULE_HANDLERS and type(inner).__module__.startswith("torch.nn") and not isinstance(
            inner, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
        ):
            raise self.error(node, f"it applies {type(inner).__name__} at every step, which has no IR mapping")
        self.wrapper_layout = x.layout
        try:
            result = self.per_step(node, inner, as_type, name, replace(x, layout=inner_layout))
        finally:
            self.wrapper_layout = None
        return replace(result, layout=x.layout)

    def per_step(self, node: fx.Node, inner: nn.Module, as_type: type, name: str, x: Value) -> Value:
        """Apply ``inner`` at every step: a known layer directly, a container by tracing it."""
        if as_type in _MODULE_HANDLERS:
            return self.torch_module(node, inner, as_type, name, x)
        example = torch.zeros(self.lead(x.layout) + x.shape)
        gm = capture_graph(inner, self.adapters)
        recorded = record(gm, example)
        saved, self.wrapper_layout = self.wrapper_layout, None
        try:
            return self.convert(gm, recorded, [x], prefix=name)
        finally:
            self.wrapper_layout = saved

    def torch_module(self, node: fx.Node, module: nn.Module, as_type: type, name: str, x: Value) -> Value:
        handler = _MODULE_HANDLERS.get(as_type)
        if handler is None:
            raise self.error(node)
        try:
            return handler(self, node, module, name, x)
        except _BadArgument as err:
            raise self.error(node, str(err)) from err

    # ------------------------------------------------------------------ IR construction shared by modules and functions

    def conv(self, node, name, x: Value, weight, bias, stride, padding, dilation, groups) -> Value:
        self.per_sample_layout(node, x)
        if isinstance(padding, str):
            raise self.error(node, f"string padding {padding!r}; use explicit integer padding")
        stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
        source = self.synapse_input(node, x)
        shape = self.per_sample(node, x.layout)
        self.add(
            n.Conv2d(
                name=name, sources=(source,), weight=_dilated(_array(weight), dilation),
                bias=None if bias is None else _array(bias), stride=stride, padding=padding, groups=int(groups),
            ),
            shape,
        )  # fmt: skip
        return Value((name,), "current", False, x.layout, shape)

    def linear(self, node, name, x: Value, weight, bias) -> Value:
        self.per_sample_layout(node, x, allow_seq=True)
        if len(x.shape) != 1:
            raise self.error(node, f"its per-sample input has shape {x.shape}; flatten it first (Linear acts on the last axis)")
        source = self.synapse_input(node, x)
        shape = self.per_sample(node, x.layout)
        self.add(n.Linear(name=name, sources=(source,), weight=_array(weight),
                          bias=None if bias is None else _array(bias)), shape)  # fmt: skip
        return Value((name,), "current", False, x.layout, shape)

    def avg_pool(self, node, name, x: Value, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) -> Value:
        self.per_sample_layout(node, x)
        kernel = _pair(kernel, "kernel_size")
        stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
        if stride != kernel:
            raise self.error(node, f"stride {stride} differs from kernel {kernel}; only kernel == stride folds into the next synapse")
        if _pair(padding, "padding") != (0, 0):
            raise self.error(node, f"padding={padding}; only 0 is supported")
        if ceil_mode:
            raise self.error(node, "ceil_mode=True; only floor mode is supported")
        if divisor_override is not None:
            raise self.error(node, f"divisor_override={divisor_override}; only the plain mean")
        return self.pool_node(node, name, x, kernel)

    def pool_node(self, node, name, x: Value, kernel: tuple[int, int]) -> Value:
        if x.kind == "current":
            raise self.error(node, "it pools a current; pool spike trains (after the neuron), which folds into the next synapse")
        if len(x.shape) != 3:
            raise self.error(node, f"needs a (C, H, W) input per sample; its input has shape {x.shape}")
        shape = self.per_sample(node, x.layout)
        self.add(n.AvgPool2d(name=name, sources=(self.single(node, x),), kernel=kernel, stride=kernel), shape)
        return Value((name,), x.kind, False, x.layout, shape)

    def adaptive_pool(self, node, name, x: Value, output_size) -> Value:
        self.per_sample_layout(node, x)
        if len(x.shape) != 3:
            raise self.error(node, f"needs a (C, H, W) input per sample; its input has shape {x.shape}")
        _, h, w = x.shape
        out = tuple(int(s) if s is not None else d for s, d in zip(_pair_or_none(output_size), (h, w)))
        if h % out[0] or w % out[1]:
            raise self.error(node, f"output_size={output_size} does not divide the {h}x{w} input; only then is it an AvgPool2d")
        # adaptive_avg_pool2d with a dividing output size averages the same windows as avg_pool2d
        # with kernel = stride = input / output; on spike trains both sum small integers exactly.
        return self.pool_node(node, name, x, (h // out[0], w // out[1]))

    def max_pool(self, node, name, x: Value, kernel, stride, padding, dilation, ceil_mode, return_indices) -> Value:
        self.per_sample_layout(node, x)
        if not (x.kind == "spikes" and x.binary):
            what = {"input": "the analog input", "current": "a current"}.get(x.kind, "a sum of spike trains")
            raise self.error(
                node,
                f"it max-pools {what}, not a binary spike train: only the max of 0/1 spikes is an OR, which a "
                "neuron computes exactly (Loihi has no max). Pool spikes (after a neuron), or use AvgPool2d",
            )
        if ceil_mode or return_indices:
            raise self.error(node, "ceil_mode / return_indices are not supported")
        if len(x.shape) != 3:
            raise self.error(node, f"needs a (C, H, W) input per sample; its input has shape {x.shape}")
        kernel = _pair(kernel, "kernel_size")
        stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
        shape = self.per_sample(node, x.layout)
        window, neuron = spike_max_pool(
            name, self.single(node, x), x.shape[0], kernel, stride, _pair(padding, "padding"), _pair(dilation, "dilation")
        )
        self.add(window, shape)
        self.add(neuron, shape)
        return Value((name,), "spikes", True, x.layout, shape)

    def batch_norm(self, node, name, x: Value, module: nn.modules.batchnorm._BatchNorm) -> Value:
        self.per_sample_layout(node, x)
        if module.running_mean is None or module.running_var is None:
            raise self.error(node, "track_running_stats=False: there are no inference statistics to fold")
        rank = 3 if isinstance(module, nn.BatchNorm2d) else 1
        if len(x.shape) != rank:
            raise self.error(node, f"its per-sample input has {len(x.shape)} dimension(s), not {rank}")
        if x.kind != "current":
            raise self.error(node, "batch normalization must follow a synapse (it folds into it); normalizing the "
                                   "input or spikes is not supported")  # fmt: skip
        channels = module.num_features
        self.add(
            n.BatchNorm(
                name=name, sources=(self.single(node, x),),
                # F.batch_norm treats weight=None as 1 and bias=None as 0.
                gamma=_array(module.weight) if module.weight is not None else np.ones(channels, np.float32),
                beta=_array(module.bias) if module.bias is not None else np.zeros(channels, np.float32),
                mean=_array(module.running_mean), var=_array(module.running_var), eps=float(module.eps),
            ),
            x.shape,
        )  # fmt: skip
        return Value((name,), "current", False, x.layout, self.per_sample(node, x.layout))

    def reshape(self, node: fx.Node, x: Value, name: str | None = None) -> Value:
        """flatten / view / reshape / unflatten: a per-sample flatten, or moving between [T, B] and [T*B]."""
        out = self.out_shape(node)
        size = math.prod(x.shape)
        layouts: tuple[Layout, ...] = {"seq": ("seq", "merged"), "merged": ("merged", "seq"),
                                       "step": ("step",), "frame": ("frame",)}[x.layout]  # fmt: skip
        for layout in layouts:
            lead = self.lead(layout)
            if out[: len(lead)] != lead:
                continue
            rest = out[len(lead):]
            if rest == x.shape:
                return replace(x, layout=layout)
            if rest == (size,):
                name = self.unique(name) if name is not None else self.op_name(node)
                self.add(n.Flatten(name=name, sources=(self.single(node, x),)), (size,))
                return Value((name,), x.kind, x.binary, layout, (size,))
        raise self.error(
            node,
            f"it reshapes {list(self.lead(x.layout))} + {list(x.shape)} into {list(out)}, which is neither a "
            "per-sample flatten nor a merge/split of the time and batch axes",
        )

    def accumulate(self, node: fx.Node, x: Value, make: Callable[[tuple[str, ...]], n.Accumulator],
                   total: bool = False) -> Value:
        """The readout of ``x`` over time: the mean (``total``: the sum) over T, made by ``make``."""
        if self.time_mode != "multi" or x.layout != "seq":
            raise self.error(node, "the readout averages a time-first [T, B, ...] tensor over T (multi-step models)")
        accumulator = self.readout_of(node, x, make(x.sources), total)
        self.add(accumulator, x.shape)
        return Value((accumulator.name,), "readout", False, "seq", x.shape)

    def readout_of(self, node: fx.Node | None, x: Value, accumulator: n.Accumulator, total: bool = False) -> n.Accumulator:
        """The readout mode of a reduction over time of ``x`` (``accumulator`` as made: the mean over T).

        * the mean of a current (a final synapse's output): ``mean_current``,
          the score ``A[T-1] / T`` is the module's;
        * spike trains: ``spike_count``, the score is the count ``A[T-1]``:
          the module's own for a sum, T times the module's for a mean
          (:attr:`score_scale`);
        * the sum of a current has no readout: refused.
        """
        if x.kind == "input":
            raise self._readout_error(node, "the readout must read currents or spikes, not the input")
        if x.kind == "spikes":
            if accumulator.readout != "mean_current":
                raise self._readout_error(node, f"a {accumulator.readout} readout of spike trains")
            if not total:
                self.score_scale = self.T
            return replace(accumulator, readout="spike_count")
        if total:
            raise self._readout_error(node, "the sum over time of a current is not a readout the IR has; take its "
                                             "mean, x.mean(0) (mean_current)")  # fmt: skip
        return accumulator

    def _readout_error(self, node: fx.Node | None, why: str) -> UnsupportedReadoutError:
        forms = "; ".join(READOUT_FORMS)
        if node is None:
            return UnsupportedReadoutError(f"the model's output cannot be read out: {why}. Readouts: {forms}")
        error = self.error(node, f"{why}. Readouts: {forms}")
        return UnsupportedReadoutError(str(error))

    def direct_encoding(self, node: fx.Node) -> Value:
        x = self.value(node, node.args[0])
        if self.encoding == "sequence" and x.kind == "input" and x.layout == "seq":
            # An adapter's encoding function hands a time-first sequence over as it is (SpikingNetwork's does).
            if self.out_shape(node) != self.lead("seq") + x.shape:
                raise self.error(node, "it changes the time-first event sequence it is given")
            return x
        return self.encoded(node, x)

    def encoded(self, node: fx.Node, x: Value) -> Value:
        if self.encoding == "sequence":
            raise self.error(node, "the model repeats its input over time (direct encoding), but the input was "
                                   "declared a sequence (--input-encoding sequence): declare direct encoding, or "
                                   "give the model the [T, B, ...] events")  # fmt: skip
        if self.time_mode != "multi" or x.layout != "frame":
            raise self.error(node, "only a multi-step model's input frame can be repeated over time (direct encoding)")
        out = self.out_shape(node)
        if out[2:] != x.shape or out[1:2] != (self.B,):
            raise self.error(node, f"it turns {[self.B, *x.shape]} into {list(out)}, not [T, B, ...] of the same frame")
        if out[0] != self.T:
            raise ExportError(
                f"the model repeats its input {out[0]} times (fx node {node.name!r}), but timesteps={self.T}; "
                f"pass timesteps={out[0]}, or change the model's own T"
            )
        return replace(x, layout="seq")


#: Functions never folded into a constant: they draw random numbers.
_RANDOM = frozenset({torch.rand, torch.randn, torch.randint, torch.rand_like, torch.randn_like, torch.randint_like,
                     torch.bernoulli, torch.normal, torch.multinomial, torch.randperm, "bernoulli_", "normal_",
                     "uniform_", "random_", "exponential_"})  # fmt: skip


def _pair_or_none(value) -> tuple:
    if isinstance(value, int) or value is None:
        return (value, value)
    return tuple(value)


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --------------------------------------------------------------------------- module handlers


def _m_conv(c: Converter, node, module: nn.Conv2d, name, x):
    if module.padding_mode != "zeros":
        raise c.error(node, f"padding_mode={module.padding_mode!r}; only 'zeros' is supported")
    return c.conv(node, name, x, module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups)


def _m_linear(c: Converter, node, module: nn.Linear, name, x):
    return c.linear(node, name, x, module.weight, module.bias)


def _m_batch_norm(c: Converter, node, module, name, x):
    return c.batch_norm(node, name, x, module)


def _m_avg_pool(c: Converter, node, module: nn.AvgPool2d, name, x):
    return c.avg_pool(node, name, x, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                      module.count_include_pad, module.divisor_override)  # fmt: skip


def _m_adaptive_pool(c: Converter, node, module: nn.AdaptiveAvgPool2d, name, x):
    return c.adaptive_pool(node, name, x, module.output_size)


def _m_max_pool(c: Converter, node, module: nn.MaxPool2d, name, x):
    value = c.max_pool(node, name, x, module.kernel_size, module.stride, module.padding, module.dilation,
                       module.ceil_mode, module.return_indices)  # fmt: skip
    # Level 1 reads the module's output as the OR layer's spikes; a module called twice interleaves its
    # outputs, so then neither call is read (the OR layers still run, teacher-forced from their inputs).
    if any(p.module is module for p in c.probes) or id(module) in c.unprobed:
        c.probes = [p for p in c.probes if p.module is not module]
        c.unprobed.add(id(module))
    else:
        c.probes.append(Probe(name=name, module=module, adapter=None, layout=x.layout))
    return value


def _m_flatten(c: Converter, node, module: nn.Flatten, name, x):
    return c.reshape(node, x, name)


def _m_identity(c: Converter, node, module, name, x):
    return x


_MODULE_HANDLERS: dict[type, Callable[..., Value]] = {
    nn.Conv2d: _m_conv,
    nn.Linear: _m_linear,
    nn.BatchNorm1d: _m_batch_norm,
    nn.BatchNorm2d: _m_batch_norm,
    nn.AvgPool2d: _m_avg_pool,
    nn.AdaptiveAvgPool2d: _m_adaptive_pool,
    nn.MaxPool2d: _m_max_pool,
    nn.Flatten: _m_flatten,
    nn.Identity: _m_identity,
    nn.Dropout: _m_identity,
    nn.Dropout1d: _m_identity,
    nn.Dropout2d: _m_identity,
    nn.Dropout3d: _m_identity,
    nn.AlphaDropout: _m_identity,
    nn.FeatureAlphaDropout: _m_identity,
}
"""Exact types: a subclass may compute something else in forward (adapters map framework subclasses)."""


# --------------------------------------------------------------------------- function and method handlers


def _param_name(c: Converter, node: fx.Node, weight_arg) -> str:
    """A functional synapse is named by the module owning its weight (``conv1.weight`` -> ``conv1``)."""
    if isinstance(weight_arg, fx.Node) and weight_arg.op == "get_attr" and "." in weight_arg.target:
        owner = c.join(c.prefix, weight_arg.target.rsplit(".", 1)[0])
        if owner not in c.names:
            return owner
    return c.op_name(node)


def _tensor_param(c: Converter, node: fx.Node, arg, what: str) -> torch.Tensor | None:
    if arg is None:
        return None
    value = c.env.get(arg) if isinstance(arg, fx.Node) else None
    if not isinstance(value, Const) or not isinstance(value.value, torch.Tensor):
        raise c.error(node, f"its {what} must be a parameter or buffer of the model, not a computed tensor")
    return value.value


def _f_conv2d(c: Converter, node: fx.Node) -> Value:
    x = c.value(node, node.args[0])
    weight = _tensor_param(c, node, _arg(node, 1, "weight"), "weight")
    bias = _tensor_param(c, node, _arg(node, 2, "bias"), "bias")
    args = [c.const(_arg(node, i, key, default)) for i, key, default in
            ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))]  # fmt: skip
    try:
        return c.conv(node, _param_name(c, node, _arg(node, 1, "weight")), x, weight, bias, *args)
    except _BadArgument as err:
        raise c.error(node, str(err)) from err


def _f_linear(c: Converter, node: fx.Node) -> Value:
    x = c.value(node, node.args[0])
    weight = _tensor_param(c, node, _arg(node, 1, "weight"), "weight")
    bias = _tensor_param(c, node, _arg(node, 2, "bias"), "bias")
    return c.linear(node, _param_name(c, node, _arg(node, 1, "weight")), x, weight, bias)


def _f_max_pool2d(c: Converter, node: fx.Node) -> Value:
    x = c.value(node, node.args[0])
    keys = (("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1), ("ceil_mode", False),
            ("return_indices", False))  # fmt: skip
    args = [c.const(_arg(node, i + 1, key, default)) for i, (key, default) in enumerate(keys)]
    try:
        return c.max_pool(node, c.op_name(node), x, *args)
    except _BadArgument as err:
        raise c.error(node, str(err)) from err


def _f_avg_pool2d(c: Converter, node: fx.Node) -> Value:
    x = c.value(node, node.args[0])
    keys = (("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
            ("count_include_pad", True), ("divisor_override", None))  # fmt: skip
    args = [c.const(_arg(node, i + 1, key, default)) for i, (key, default) in enumerate(keys)]
    try:
        return c.avg_pool(node, c.op_name(node), x, *args)
    except _BadArgument as err:
        raise c.error(node, str(err)) from err


def _f_adaptive_avg_pool2d(c: Converter, node: fx.Node) -> Value:
    x = c.value(node, node.args[0])
    return c.adaptive_pool(node, c.op_name(node), x, c.const(_arg(node, 1, "output_size")))


def _f_identity(c: Converter, node: fx.Node) -> Value:
    return c.value(node, node.args[0])


def _f_flatten(c: Converter, node: fx.Node) -> Value:
    return c.reshape(node, c.value(node, node.args[0]))


def _f_add(c: Converter, node: fx.Node) -> Value:
    if node.kwargs.get("alpha", 1) != 1 or len(node.args) != 2:
        raise c.error(node, "only the plain sum of two tensors (no alpha)")
    values = []
    for arg in node.args:
        if not isinstance(arg, fx.Node) or not isinstance(c.env.get(arg), Value):
            raise c.error(node, f"adding the constant {c.const(arg)!r} is not supported: only sums of tensors of the "
                                "model (a bias belongs in the synapse)")  # fmt: skip
        values.append(c.value(node, arg))
    a, b = values
    if a.layout != b.layout or a.shape != b.shape:
        raise c.error(node, f"it adds {a.layout} {list(a.shape)} and {b.layout} {list(b.shape)}; only tensors of one "
                            "shape (no broadcasting)")  # fmt: skip
    if "input" in (a.kind, b.kind):
        raise c.error(node, "adding the raw input to other tensors is not supported (a synapse reads the input; "
                            "an input normalization is written (x - mean) / std)")  # fmt: skip
    kind = "current" if "current" in (a.kind, b.kind) else "spikes"
    # Float addition commutes exactly but does not associate: a + (b + c) is (b + c) + a bit for bit, so a
    # single tensor goes last; (a + b) + (c + d) has no left-to-right order with torch's rounding.
    if len(b.sources) == 1:
        sources, in_order = a.sources + b.sources, a.in_order
    elif len(a.sources) == 1:
        sources, in_order = b.sources + a.sources, b.in_order
    else:
        sources, in_order = a.sources + b.sources, False
    out = Value(sources, kind, False, a.layout, a.shape, in_order)
    c.sum_names[out.sources] = c.op_name(node)
    return out


def _f_cat(c: Converter, node: fx.Node) -> Value:
    tensors = _arg(node, 0, "tensors")
    dim = c.const(_arg(node, 1, "dim", 0))
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise c.error(node, "it needs a list of tensors")
    values = [c.value(node, t) for t in tensors]
    layout = values[0].layout
    rank = len(values[0].shape)
    channel_axis = len(c.lead(layout))
    if any(v.layout != layout or len(v.shape) != rank for v in values):
        raise c.error(node, "it concatenates tensors of different layouts or ranks")
    if dim not in (channel_axis, -rank):
        raise c.error(node, f"dim={dim}; only the channel axis (dim {channel_axis} in the {layout} layout, the first "
                            "per-sample axis) is supported")  # fmt: skip
    if any(v.kind == "current" for v in values):
        raise c.error(node, "it concatenates currents; concatenate spike trains (the synapse after it is split "
                            "into one synapse per source)")  # fmt: skip
    if len(values) == 1:
        return values[0]
    name = c.op_name(node)
    shape = c.per_sample(node, layout)
    c.add(n.Concat(name=name, sources=tuple(c.single(node, v) for v in values)), shape)
    kind = "input" if any(v.kind == "input" for v in values) else "spikes"
    return Value((name,), kind, all(v.binary for v in values), layout, shape)


def _per_channel(c: Converter, node: fx.Node, arg: Any, x: Value, what: str) -> np.ndarray:
    """A constant that broadcasts along the channel axis of ``x`` only, as float32 ``(C,)``; else a named refusal."""
    channels = x.shape[0]
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return np.full(channels, arg, np.float32)  # torch rounds a Python number to the tensor's float32
    value = c.env.get(arg) if isinstance(arg, fx.Node) else None
    if not isinstance(value, Const) or not isinstance(value.value, torch.Tensor):
        raise c.error(node, f"its {what} is computed from the input; an input normalization needs constant "
                            "per-channel values (a buffer, a parameter or a number)")  # fmt: skip
    tensor = value.value.detach()
    if tensor.dtype != torch.float32 and tensor.dim() > 0:  # a 0-dim tensor is cast to float32, like a number
        raise c.error(node, f"its {what} is a {tensor.dtype} tensor; torch would compute in {tensor.dtype}, which "
                            "the float32 IR does not reproduce: store it as float32")  # fmt: skip
    lead = len(c.lead(x.layout))
    rank = lead + len(x.shape)
    if tensor.dim() > rank:
        raise c.error(node, f"its {what} has {tensor.dim()} dimensions, more than its input's {rank}")
    aligned = (1,) * (rank - tensor.dim()) + tuple(tensor.shape)
    varying = [i for i, size in enumerate(aligned) if size != 1 and i != lead]
    if varying or aligned[lead] not in (1, channels):
        raise c.error(node, f"its {what} of shape {tuple(tensor.shape)} is not one value per channel of the "
                            f"{list(c.lead(x.layout))} + {list(x.shape)} input (shape ({channels}, 1, 1) or "
                            f"(1, {channels}, 1, 1), or a number): a per-position or per-sample normalization "
                            "does not fold into the synapses")  # fmt: skip
    return np.broadcast_to(tensor.reshape(-1).cpu().numpy(), (channels,)).astype(np.float32).copy()


def _normalized_input(c: Converter, node: fx.Node, x: Value) -> None:
    """``x`` must be the model input itself, not yet normalized, not spikes or currents."""
    if x.kind != "input" or x.sources != (n.INPUT_NAME,):
        what = {"spikes": "spike trains", "current": "a current"}.get(x.kind, "an already normalized input")
        raise c.error(node, f"it applies arithmetic to {what}; besides sums, only a leading (x - mean) / std of the "
                            "model input maps (to the IR's input Normalize)")  # fmt: skip


def _f_sub(c: Converter, node: fx.Node) -> Value:
    """``x - mean``: the first half of an input normalization (``std`` 1 until a division follows)."""
    if len(node.args) != 2 or set(node.kwargs) - {"alpha"} or node.kwargs.get("alpha", 1) != 1:
        raise c.error(node, "only x - mean (no alpha)")
    x = c.value(node, node.args[0])
    _normalized_input(c, node, x)
    mean = _per_channel(c, node, node.args[1], x, "mean")
    name = c.op_name(node)
    c.add(n.Normalize(name=name, sources=(n.INPUT_NAME,), mean=mean, std=np.ones_like(mean)), x.shape)
    return Value((name,), "input", False, x.layout, x.shape)


def _f_div(c: Converter, node: fx.Node) -> Value:
    """``(x - mean) / std`` (or ``x / std``): the Normalize of the subtraction gets its std."""
    if len(node.args) != 2 or node.kwargs.get("rounding_mode") is not None:
        raise c.error(node, "only a true division by a constant")
    x = c.value(node, node.args[0])
    pending = c.pending_normalization(node, x)
    if pending is None:
        _normalized_input(c, node, x)
    std = _per_channel(c, node, node.args[1], x, "std")
    if not (np.isfinite(std).all() and (std > 0).all()):
        raise c.error(node, f"its std {std.tolist()} has values <= 0 or not finite; a normalization divides by a "
                            "positive std per channel")  # fmt: skip
    if pending is not None:
        c.nodes[pending] = replace(c.nodes[pending], std=std)
        return x
    name = c.op_name(node)
    c.add(n.Normalize(name=name, sources=(n.INPUT_NAME,), mean=np.zeros_like(std), std=std), x.shape)
    return Value((name,), "input", False, x.layout, x.shape)


def _f_mul(c: Converter, node: fx.Node) -> Value:
    for arg in node.args:
        if isinstance(arg, fx.Node) and isinstance(c.env.get(arg), Value):
            c.value(node, arg)
    raise c.error(node, "products are not supported; an input normalization is written (x - mean) / std (the IR's "
                        "Normalize divides: a product by 1 / std rounds differently)")  # fmt: skip


def _t_unsqueeze(c: Converter, node: fx.Node) -> Any:
    x = c.value(node, node.args[0])
    dim = c.const(_arg(node, 1, "dim"))
    if x.layout == "frame" and dim == 0:
        return _OneFrame(x)
    raise c.error(node, "only x.unsqueeze(0) of the input frame (before repeating it T times) is supported")


def _t_repeat(c: Converter, node: fx.Node) -> Value:
    pending = c.env.get(node.args[0])
    if not isinstance(pending, _OneFrame):
        raise c.error(node, "only x.unsqueeze(0).repeat(T, 1, ...) / expand(T, ...) of the input frame is supported")
    return c.encoded(node, pending.value)


def _over_time(c: Converter, node: fx.Node, what: str) -> Value:
    """The tensor a reduction reads, when it is ``x.<what>(0)`` of a time-first tensor; else a named refusal."""
    x = c.value(node, node.args[0])
    dim = c.const(_arg(node, 1, "dim"))
    keepdim = c.const(_arg(node, 2, "keepdim", False))
    extra = [k for k in node.kwargs if k not in ("dim", "keepdim")] + (["dtype"] if len(node.args) > 3 else [])
    if dim not in (0, (0,), [0]) or keepdim or extra or x.layout != "seq":
        raise c._readout_error(
            node, f"{what}(dim={dim!r}{', keepdim=True' if keepdim else ''}) of a {x.layout} tensor; only {what}(0) "
                  "over the time axis of a [T, B, ...] tensor is a readout",
        )  # fmt: skip
    return x


def _t_mean(c: Converter, node: fx.Node) -> Value:
    x = _over_time(c, node, "mean")
    return c.accumulate(node, x, lambda sources: n.Accumulator(name=c.op_name(node), sources=sources))


def _t_sum(c: Converter, node: fx.Node) -> Value:
    x = _over_time(c, node, "sum")
    return c.accumulate(node, x, lambda sources: n.Accumulator(name=c.op_name(node), sources=sources), total=True)


def _t_other_reduction(c: Converter, node: fx.Node) -> Value:
    c.value(node, node.args[0])
    raise c._readout_error(node, f"{_describe(node, c.root)} is a reduction the IR has no readout for")


#: Reductions that are refused by name (UnsupportedReadoutError), as methods and as torch functions.
_OTHER_REDUCTIONS = ("max", "amax", "min", "amin", "argmax", "argmin", "prod", "std", "var", "median", "norm",
                     "logsumexp", "cumsum", "count_nonzero", "nansum", "nanmean")  # fmt: skip


def _t_identity(c: Converter, node: fx.Node) -> Value:
    return c.value(node, node.args[0])


def _t_reshape(c: Converter, node: fx.Node) -> Value:
    return c.reshape(node, c.value(node, node.args[0]))


_FUNCTION_HANDLERS: dict[Any, Callable[[Converter, fx.Node], Any]] = {
    torch.conv2d: _f_conv2d,
    F.linear: _f_linear,
    F.max_pool2d: _f_max_pool2d,
    F.avg_pool2d: _f_avg_pool2d,
    F.adaptive_avg_pool2d: _f_adaptive_avg_pool2d,
    F.dropout: _f_identity,
    F.dropout1d: _f_identity,
    F.dropout2d: _f_identity,
    F.dropout3d: _f_identity,
    F.alpha_dropout: _f_identity,
    F.feature_alpha_dropout: _f_identity,
    torch.flatten: _f_flatten,
    operator.add: _f_add,
    torch.add: _f_add,
    torch.cat: _f_cat,
    torch.concat: _f_cat,
    torch.mean: _t_mean,
    torch.sum: _t_sum,
    **{getattr(torch, name): _t_other_reduction for name in _OTHER_REDUCTIONS},
    operator.sub: _f_sub,
    torch.sub: _f_sub,
    operator.truediv: _f_div,
    torch.div: _f_div,
    torch.true_divide: _f_div,
    operator.mul: _f_mul,
    torch.mul: _f_mul,
}


_METHOD_HANDLERS: dict[str, Callable[[Converter, fx.Node], Any]] = {
    "flatten": _t_reshape,
    "view": _t_reshape,
    "reshape": _t_reshape,
    "unflatten": _t_reshape,
    "contiguous": _t_identity,
    "unsqueeze": _t_unsqueeze,
    "repeat": _t_repeat,
    "expand": _t_repeat,
    "mean": _t_mean,
    "sum": _t_sum,
    **{name: _t_other_reduction for name in _OTHER_REDUCTIONS},
    "add": _f_add,
    "sub": _f_sub,
    "div": _f_div,
    "true_divide": _f_div,
    "mul": _f_mul,
}
