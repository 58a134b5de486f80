"""Capture a module's dataflow with torch.fx, and record what every node computes on an example.

* :class:`LeafTracer` is a ``torch.fx.Tracer`` whose leaves are the standard
  torch layers (fx's default) plus every module an adapter declares a leaf
  (spiking neurons and the framework's own wrappers): their internals are
  never traced. Functions the adapters name (a model's input encoding) are
  kept as one call. Python control flow on tensors cannot be traced; such a
  model is refused with the tracer's reason.
* :func:`record` runs the traced graph once on a concrete example input and
  keeps, per fx node, the shape of the tensor it produced (or the Python
  value, for ``x.shape`` and friends). The front end reads shapes from
  there, never from guesses about the user's code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.fx as fx
from torch import nn

from inflor_deploy.errors import ExportError
from inflor_deploy.frontends.adapters.base import Adapter


class TraceError(ExportError):
    """torch.fx could not capture the module, or running it on the example input failed."""


class LeafTracer(fx.Tracer):
    """fx tracer that keeps adapter-declared modules (neurons, wrappers) as leaves.

    Args:
        adapters: The framework adapters in use.
    """

    def __init__(self, adapters: Sequence[Adapter]) -> None:
        functions = tuple(f for adapter in adapters for f in adapter.autowrap_functions())
        super().__init__(autowrap_functions=functions)
        self.adapters = tuple(adapters)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if any(adapter.is_leaf(m) for adapter in self.adapters):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def capture_graph(module: nn.Module, adapters: Sequence[Adapter], concrete_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Trace ``module`` into a GraphModule (raises :class:`TraceError` with the tracer's reason)."""
    tracer = LeafTracer(adapters)
    try:
        graph = tracer.trace(module, concrete_args=concrete_args)
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - fx raises TraceError, TypeError, NotImplementedError, ...
        raise TraceError(
            f"torch.fx cannot trace {type(module).__name__}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "The front end needs a forward without Python control flow on tensor values (if/for on "
            "shapes or data); move such code into a module of its own or out of forward"
        ) from err
    return fx.GraphModule(tracer.root, graph, class_name=type(module).__name__)


@dataclass(frozen=True)
class Recorded:
    """What one fx node produced on the example input.

    Attributes:
        shape: The tensor's shape, or None when the node produced no tensor.
        value: The Python value otherwise (a shape, an int, a tuple of shapes...).
    """

    shape: tuple[int, ...] | None
    value: Any = None


def _summary(result: Any) -> Recorded:
    if isinstance(result, torch.Tensor):
        return Recorded(shape=tuple(result.shape))
    if isinstance(result, torch.Size):
        return Recorded(shape=None, value=tuple(result))
    if isinstance(result, (tuple, list)) and any(isinstance(r, torch.Tensor) for r in result):
        return Recorded(shape=None, value=tuple(_summary(r) for r in result))
    return Recorded(shape=None, value=result)


class _NodeFailed(Exception):
    def __init__(self, node: fx.Node, error: Exception) -> None:
        super().__init__(str(error))
        self.node, self.error = node, error


def _where(module: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(module.get_submodule(node.target)).__name__})"
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"{node.op} {getattr(node.target, '__name__', node.target)} in module {path or '<model>'!r}"


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.recorded: dict[fx.Node, Recorded] = {}

    def run(self, *args: Any) -> Any:
        # fx.Interpreter.run opens a tqdm bar, whose lock fixes multiprocessing's start method
        # and breaks Lava's later set_start_method("fork"); this is the same loop without it.
        self.env = {}
        self.args_iter = iter(args)
        for node in self.module.graph.nodes:
            try:
                result = self.run_node(node)
            except ExportError:
                raise
            except Exception as err:  # noqa: BLE001 - any error of the user's code on the example input
                raise _NodeFailed(node, err) from err
            self.recorded[node] = _summary(result)
            if node.op == "output":
                return result
            self.env[node] = result
        return None


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode without gradients, then restore every module's training flag."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def record(module: fx.GraphModule, *args: Any) -> dict[fx.Node, Recorded]:
    """Run the traced graph on ``args`` (in eval mode) and record every node's result shape or value."""
    recorder = _Recorder(module)
    try:
        with inference_mode(module):
            recorder.run(*args)
    except _NodeFailed as failed:
        err = failed.error
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        raise TraceError(
            f"running the traced {module.__class__.__name__} on an example input of shape {shapes[0] if shapes else '?'} "
            f"failed at fx node {failed.node.name!r} ({_where(module, failed.node)}): {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Check input_shape, "
            "timesteps and time_mode (multi: the module takes [T, B, C, H, W], or [B, C, H, W] when it "
            "encodes its input itself; single: [B, C, H, W] once per step)"
        ) from err
    return recorder.recorded
