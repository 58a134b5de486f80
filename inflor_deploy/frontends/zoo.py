"""Translate a PyTorch InfLoR model (built by ``build_model``) into the float IR.

The models of :mod:`inflor_deploy.nn.models` promise that ``forward`` is the
loop over their children in registration order (``SpikingNetwork.forward``),
that ``nn.Sequential`` chains its children, and that :class:`BasicBlock`
computes ``neuron2(bn2(conv2(neuron1(bn1(conv1(x))))) + shortcut(x))``. So
the exporter walks the module tree in registration order and emits one IR
node per layer, named by its module path (``"unit1.conv"``,
``"layer1.0.neuron2"``). A class whose ``forward`` is overridden breaks
that promise and is refused rather than guessed at.

Every number is copied, never recomputed, except tdBN's scale, which is
computed exactly as the module does in eval mode
(``lambda_ * (alpha * vth)`` in float32 torch), so that
:func:`~inflor_deploy.backends.sim.float_ir.run_float` on the result reproduces
``model(images)`` bit for bit: same kernels, same operand order, same
tensor layout (level 1 of the parity ladder, DESIGN.md section 2).

The export describes inference: batch norms use their running statistics
whatever the module's train/eval mode.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from inflor_deploy.errors import ExportError, InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes, validate
from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.models import BasicBlock, ModelConfig, SpikingNetwork
from inflor_deploy.nn.neurons import Neuron, OutputAccumulator
from inflor_deploy.nn.tdbn import TdBatchNorm

__all__ = ["ExportError", "INPUT_NAME", "SUPPORTED_LAYERS", "UnsupportedLayerError", "model_to_ir"]

INPUT_NAME = n.INPUT_NAME

#: What the exporter understands, for error messages and documentation.
SUPPORTED_LAYERS: tuple[str, ...] = (
    "nn.Sequential",
    "TimeDistributed(nn.Conv2d)",
    "TimeDistributed(nn.Linear)",
    "TimeDistributed(nn.BatchNorm1d/2d)",
    "TimeDistributed(nn.AvgPool2d)",
    "TimeDistributed(nn.AdaptiveAvgPool2d(1))",
    "TimeDistributed(nn.Flatten)",
    "TdBatchNorm",
    "Neuron (SRIF, IFNeuron, LIFNeuron)",
    "BasicBlock",
    "OutputAccumulator",
)


class UnsupportedLayerError(ExportError):
    """A module the exporter does not know; the message names its path and type."""


def _unsupported(path: str, module: nn.Module, why: str = "") -> UnsupportedLayerError:
    reason = f": {why}" if why else ""
    return UnsupportedLayerError(
        f"module {path or '<model>'!r} ({type(module).__name__}) cannot be exported{reason}. "
        f"Supported layers: {', '.join(SUPPORTED_LAYERS)}"
    )


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy (the IR owns its arrays; the model may change later)."""
    return tensor.detach().to(torch.float32).cpu().numpy().copy()


def _pair(value, what: str, path: str, module: nn.Module) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise _unsupported(path, module, f"{what}={value!r} is not an int or a pair of ints")


def _custom_forward(module: nn.Module, base: type) -> bool:
    """True when a subclass overrides ``forward``: its data flow is then unknown."""
    return type(module).forward is not base.forward


class _Builder:
    """Accumulates IR nodes while walking the module tree in forward order."""

    def __init__(self, config: ModelConfig) -> None:
        self.nodes: list[n.Node] = [
            n.Input(name=INPUT_NAME, sources=(), shape=(config.in_channels, config.image_size, config.image_size))
        ]
        self.finished = False

    def add(self, node: n.Node) -> str:
        self.nodes.append(node)
        return node.name

    def shape_of(self, name: str) -> tuple[int, ...]:
        # Only AdaptiveAvgPool2d needs a shape; inferring on the partial graph keeps one shape rule.
        return infer_shapes(Graph(tuple(self.nodes), timesteps=1))[name]

    # ------------------------------------------------------------------ time-first modules

    def module(self, path: str, module: nn.Module, current: str) -> str:
        """Emit the nodes of one module that takes time-first input; return its output node."""
        if self.finished:
            raise _unsupported(path, module, "nothing may follow the OutputAccumulator readout")
        if isinstance(module, nn.Sequential):
            if _custom_forward(module, nn.Sequential):
                raise _unsupported(path, module, "a Sequential subclass with its own forward")
            for name, child in module.named_children():
                current = self.module(_join(path, name), child, current)
            return current
        if isinstance(module, TimeDistributed):
            if _custom_forward(module, TimeDistributed):
                raise _unsupported(path, module, "a TimeDistributed subclass with its own forward")
            return self.stateless(path, module.module, current)
        if isinstance(module, TdBatchNorm):
            return self.add(_tdbn(path, module, current))
        if isinstance(module, Neuron):
            return self.add(_neuron(path, module, (current,)))
        if isinstance(module, BasicBlock):
            return self.block(path, module, current)
        if isinstance(module, OutputAccumulator):
            if _custom_forward(module, OutputAccumulator):
                raise _unsupported(path, module, "an OutputAccumulator subclass with its own forward")
            self.finished = True
            return self.add(n.Accumulator(name=path, sources=(current,)))
        if isinstance(module, _STATELESS):
            raise _unsupported(
                path,
                module,
                "stateless layers must be wrapped in TimeDistributed (they see [T*B, ...], "
                "not the time-first [T, B, ...] tensors between SNN layers)",
            )
        raise _unsupported(path, module)

    def block(self, path: str, block: BasicBlock, x: str) -> str:
        # BasicBlock.forward: neuron2(bn2(conv2(neuron1(bn1(conv1(x))))) + shortcut(x)).
        if _custom_forward(block, BasicBlock):
            raise _unsupported(path, block, "a BasicBlock subclass with its own forward")
        main = x
        for name in ("conv1", "bn1", "neuron1", "conv2", "bn2"):
            main = self.module(_join(path, name), getattr(block, name), main)
        shortcut = self.module(_join(path, "shortcut"), block.shortcut, x)  # empty Sequential: x itself
        if not isinstance(block.neuron2, Neuron):
            raise _unsupported(_join(path, "neuron2"), block.neuron2, "a residual block must end in a Neuron")
        return self.add(_neuron(_join(path, "neuron2"), block.neuron2, (main, shortcut)))

    # ------------------------------------------------------------------ per-sample modules

    def stateless(self, path: str, module: nn.Module, current: str) -> str:
        """Emit a module wrapped in TimeDistributed (it sees ``[T*B, ...]``)."""
        if isinstance(module, nn.Sequential) and not _custom_forward(module, nn.Sequential):
            for name, child in module.named_children():
                current = self.stateless(_join(path, name), child, current)
            return current
        handler = _STATELESS_HANDLERS.get(type(module))
        if handler is None:
            if isinstance(module, (Neuron, TdBatchNorm, OutputAccumulator, BasicBlock)):
                raise _unsupported(path, module, "time-first layers must not be wrapped in TimeDistributed")
            raise _unsupported(path, module)
        return self.add(handler(self, path, module, current))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _conv(builder: _Builder, path: str, conv: nn.Conv2d, source: str) -> n.Conv2d:
    if isinstance(conv.padding, str):
        raise _unsupported(path, conv, f"string padding {conv.padding!r}; use explicit integer padding")
    if conv.padding_mode != "zeros":
        raise _unsupported(path, conv, f"padding_mode={conv.padding_mode!r}; only 'zeros' is supported")
    if _pair(conv.dilation, "dilation", path, conv) != (1, 1):
        raise _unsupported(path, conv, f"dilation={conv.dilation}; only 1 is supported")
    return n.Conv2d(
        name=path,
        sources=(source,),
        weight=_array(conv.weight),
        bias=None if conv.bias is None else _array(conv.bias),
        stride=_pair(conv.stride, "stride", path, conv),
        padding=_pair(conv.padding, "padding", path, conv),
        groups=int(conv.groups),
    )


def _linear(builder: _Builder, path: str, linear: nn.Linear, source: str) -> n.Linear:
    return n.Linear(
        name=path,
        sources=(source,),
        weight=_array(linear.weight),
        bias=None if linear.bias is None else _array(linear.bias),
    )


def _batchnorm(builder: _Builder, path: str, bn: nn.modules.batchnorm._BatchNorm, source: str) -> n.BatchNorm:
    if bn.running_mean is None or bn.running_var is None:
        raise _unsupported(path, bn, "track_running_stats=False: there are no inference statistics to export")
    rank = len(builder.shape_of(source))
    if rank != {nn.BatchNorm1d: 1, nn.BatchNorm2d: 3}[type(bn)]:
        raise _unsupported(path, bn, f"its per-sample input has {rank} dimension(s)")
    channels = bn.num_features
    return n.BatchNorm(
        name=path,
        sources=(source,),
        # F.batch_norm treats weight=None as 1 and bias=None as 0.
        gamma=_array(bn.weight) if bn.weight is not None else np.ones(channels, np.float32),
        beta=_array(bn.bias) if bn.bias is not None else np.zeros(channels, np.float32),
        mean=_array(bn.running_mean),
        var=_array(bn.running_var),
        eps=float(bn.eps),
    )


def _tdbn(path: str, bn: TdBatchNorm, source: str) -> n.BatchNorm:
    if _custom_forward(bn, TdBatchNorm):
        raise _unsupported(path, bn, "a TdBatchNorm subclass with its own forward")
    with torch.no_grad():
        # Exactly the weight TdBatchNorm.forward hands to F.batch_norm, in the same dtype and order.
        gamma = bn.lambda_ * (bn.alpha * bn.vth)
    return n.BatchNorm(
        name=path,
        sources=(source,),
        gamma=_array(gamma),
        beta=_array(bn.beta),
        mean=_array(bn.running_mean),
        var=_array(bn.running_var),
        eps=float(bn.eps),
    )


def _avgpool(builder: _Builder, path: str, pool: nn.AvgPool2d, source: str) -> n.AvgPool2d:
    kernel = _pair(pool.kernel_size, "kernel_size", path, pool)
    stride = kernel if pool.stride is None else _pair(pool.stride, "stride", path, pool)
    if stride != kernel:
        raise _unsupported(path, pool, f"stride {stride} differs from kernel {kernel}; only kernel == stride")
    if _pair(pool.padding, "padding", path, pool) != (0, 0):
        raise _unsupported(path, pool, f"padding={pool.padding}; only 0 is supported")
    if pool.ceil_mode:
        raise _unsupported(path, pool, "ceil_mode=True; only floor mode is supported")
    if pool.divisor_override is not None:
        raise _unsupported(path, pool, f"divisor_override={pool.divisor_override}; only the plain mean")
    return n.AvgPool2d(name=path, sources=(source,), kernel=kernel, stride=stride)


def _global_pool(builder: _Builder, path: str, pool: nn.AdaptiveAvgPool2d, source: str) -> n.AvgPool2d:
    # adaptive_avg_pool2d and avg_pool2d may differ by an ulp on arbitrary floats. In the
    # build_model ResNets the pool follows a neuron, so its input is spikes: both kernels
    # sum small integers exactly and divide once, and AvgPool2d(kernel = H, W) stays
    # bit-exact with the model.
    if pool.output_size not in (1, (1, 1), [1, 1]):
        raise _unsupported(path, pool, f"output_size={pool.output_size}; only 1 (global pooling) is supported")
    shape = builder.shape_of(source)
    if len(shape) != 3:
        raise _unsupported(path, pool, f"needs a (C, H, W) input; its input has shape {shape}")
    kernel = (shape[1], shape[2])
    return n.AvgPool2d(name=path, sources=(source,), kernel=kernel, stride=kernel)


def _flatten(builder: _Builder, path: str, flatten: nn.Flatten, source: str) -> n.Flatten:
    if flatten.start_dim != 1 or flatten.end_dim != -1:
        raise _unsupported(
            path, flatten, f"start_dim={flatten.start_dim}, end_dim={flatten.end_dim}; only (1, -1)"
        )
    return n.Flatten(name=path, sources=(source,))


def _neuron(path: str, neuron: Neuron, sources: tuple[str, ...]) -> n.Neuron:
    if _custom_forward(neuron, Neuron):
        raise _unsupported(path, neuron, "a Neuron subclass with its own forward")
    spike_value = 1.0  # the torch neurons emit {0, 1}
    return n.Neuron(
        name=path,
        sources=sources,
        vth=float(neuron.vth),
        tau=float(neuron.tau),
        reset=neuron.reset,
        # None = "subtract the spike value", the paper's soft reset; explicit otherwise.
        reset_amount=None if float(neuron.reset_amount) == spike_value else float(neuron.reset_amount),
        mpr=bool(neuron.mpr),
        spike_value=spike_value,
    )


# Exact types: a subclass may compute something else in forward.
_STATELESS_HANDLERS: dict[type, Callable[[_Builder, str, nn.Module, str], n.Node]] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: _global_pool,
    nn.Flatten: _flatten,
}
_STATELESS = tuple(_STATELESS_HANDLERS)


def model_to_ir(model: nn.Module) -> Graph:
    """Translate a model built by ``build_model`` into a validated float IR graph.

    Args:
        model: A :class:`~inflor_deploy.nn.models.SpikingNetwork` (DigitsCNN,
            ResNet19, ResNet20, VGG16, or a subclass that only registers
            supported layers). Its ``config`` gives the input shape and T.

    Returns:
        The graph: ``Input "image"`` then one node per layer in forward
        order, named by module path, ending in the ``Accumulator``. A
        residual block's ``neuron2`` has two sources: the main path's bn2
        first, then the shortcut's last node (or the block input itself).

    Raises:
        ExportError: The model has no spiking neuron (not an SNN), carries
            no ``ModelConfig``, overrides ``forward``, or has no readout.
        UnsupportedLayerError: A module the exporter does not know, or a
            known one with unsupported settings (dilation, padding modes,
            ceil_mode, ...); the message names its path and type.
    """
    if not isinstance(model, nn.Module):
        raise ExportError(f"model_to_ir needs a torch nn.Module; got {type(model).__name__}")
    if not any(isinstance(m, Neuron) for m in model.modules()):
        raise ExportError(
            f"{type(model).__name__} has no spiking neuron (inflor_deploy.nn.Neuron): it is not an SNN. "
            "Build it with inflor_deploy.nn.build_model (SRIF, IF or LIF neurons)."
        )
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ExportError(
            f"{type(model).__name__} carries no ModelConfig (model.config), which gives the input "
            "shape and timesteps; build it with inflor_deploy.nn.build_model."
        )
    if not isinstance(model, SpikingNetwork) or _custom_forward(model, SpikingNetwork):
        raise ExportError(
            f"{type(model).__name__} does not run SpikingNetwork.forward (direct encoding, then the "
            "children in registration order), so its data flow cannot be read from its modules"
        )
    builder = _Builder(config)
    current = INPUT_NAME
    for name, child in model.named_children():
        current = builder.module(name, child, current)
    if not builder.finished:
        raise ExportError(
            f"{type(model).__name__} does not end in an OutputAccumulator readout; "
            "the last layer must accumulate its currents (the class score is their mean over T)"
        )
    graph = Graph(tuple(builder.nodes), timesteps=int(config.timesteps), name=config.arch)
    validate(graph)
    return graph
