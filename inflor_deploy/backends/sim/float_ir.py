"""Float execution of a float IR graph (the aligned view: every layer at the same timestep).

Evaluation is layer-major, as the PyTorch models run: each stateless node
processes all T timesteps at once as a batch of T*B, each neuron loops over
T. Using the same torch kernels on the same tensor layout is what lets
level 1 of the parity ladder compare spike trains for equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError
from inflor_deploy.nn.mpr import phi


@dataclass
class FloatRun:
    """Result of :func:`run_float`.

    Attributes:
        scores: ``[B, classes]`` class scores, ``A[T-1] / T``.
        spikes: Neuron name -> ``[T, B, ...]`` uint8 spikes (when recorded).
        membranes: Neuron name -> ``[T, B, ...]`` H[t], the membrane before
            reset that the threshold is compared with (when recorded).
    """

    scores: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    membranes: dict[str, np.ndarray] = field(default_factory=dict)


def _t(array: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor | None:
    # IR arrays are read-only; torch wants writable memory, so copy.
    return None if array is None else torch.from_numpy(np.array(array)).to(dtype)


def _neuron(node: n.Neuron, current: torch.Tensor, record: bool):
    """Run one neuron layer over time; current is [T, B, ...]. Returns 0/1 spikes and H."""
    u = torch.zeros_like(current[0])
    reset_amount = node.spike_value if node.reset_amount is None else node.reset_amount
    spikes, membranes = [], []
    for x_t in current:
        h = node.tau * u + x_t if node.tau != 1.0 else u + x_t
        compared = phi(h) if node.mpr else h
        o = (compared >= node.vth).to(h.dtype)
        u = h - reset_amount * o if node.reset == "subtract" else h * (1.0 - o)
        spikes.append(o)
        if record:
            membranes.append(h)
    return torch.stack(spikes), (torch.stack(membranes) if record else None)


@torch.no_grad()
def run_float(
    graph: Graph,
    images: np.ndarray,
    record: bool = False,
    dtype: torch.dtype = torch.float32,
    forced_spikes: dict[str, np.ndarray] | None = None,
) -> FloatRun:
    """Run a float graph on a batch of static images for ``graph.timesteps`` steps.

    Args:
        graph: A float IR graph (before quantization).
        images: ``[B, C, H, W]``, the direct-encoded input frames.
        record: Keep every neuron's spikes and membranes.
        dtype: torch.float32 (as trained) or torch.float64.
        forced_spikes: Neuron name -> ``[T, B, ...]`` spikes to send downstream
            instead of the layer's own (which are still recorded). Feeding every
            layer a reference run's spikes compares each layer in isolation:
            a difference can then only come from that layer's own arithmetic.
    """
    if graph.is_fixed_point:
        raise IRError("run_float runs float graphs; use the fixed-point simulator for quantized ones")
    T = graph.timesteps
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dtype)
    batch = x.shape[0]
    # value[name] is [T*B, ...] (time-major); neurons view it as [T, B, ...].
    value: dict[str, torch.Tensor] = {}
    result = FloatRun(scores=np.zeros(0))
    for node in graph:
        src = [value[s] for s in node.sources]
        if isinstance(node, n.Input):
            out = x.unsqueeze(0).expand(T, *x.shape).reshape(T * batch, *x.shape[1:])
        elif isinstance(node, n.Conv2d):
            out = F.conv2d(src[0], _t(node.weight, dtype), _t(node.bias, dtype), node.stride, node.padding, 1, node.groups)
        elif isinstance(node, n.Linear):
            out = F.linear(src[0].flatten(1), _t(node.weight, dtype), _t(node.bias, dtype))
        elif isinstance(node, n.BatchNorm):
            out = F.batch_norm(
                src[0], _t(node.mean, dtype), _t(node.var, dtype), _t(node.gamma, dtype), _t(node.beta, dtype),
                False, 0.0, node.eps,
            )  # fmt: skip
        elif isinstance(node, n.AvgPool2d):
            out = F.avg_pool2d(src[0], node.kernel, node.stride)
        elif isinstance(node, n.Flatten):
            out = src[0].flatten(1)
        elif isinstance(node, n.Add):
            out = src[0]
            for extra in src[1:]:
                out = out + extra
        elif isinstance(node, n.Concat):
            out = torch.cat(src, dim=1)
        elif isinstance(node, n.Neuron):
            current = src[0]
            for extra in src[1:]:
                current = current + extra
            spikes, membranes = _neuron(node, current.reshape(T, batch, *current.shape[1:]), record)
            sent = spikes
            if forced_spikes is not None and node.name in forced_spikes:
                sent = torch.from_numpy(np.array(forced_spikes[node.name])).to(dtype).reshape(spikes.shape)
            # Downstream sees spikes of magnitude spike_value; traces keep 0/1.
            out = (sent * node.spike_value if node.spike_value != 1.0 else sent).reshape(T * batch, *spikes.shape[2:])
            if record:
                result.spikes[node.name] = spikes.to(torch.uint8).numpy()
                result.membranes[node.name] = membranes.numpy()
        elif isinstance(node, n.Accumulator):
            current = src[0]
            for extra in src[1:]:
                current = current + extra
            # Class score = mean over T, as the PyTorch OutputAccumulator.
            result.scores = current.reshape(T, batch, *current.shape[1:]).mean(0).numpy()
            out = current
        else:
            raise IRError(f"run_float cannot execute {type(node).__name__} {node.name!r}")
        value[node.name] = out
    return result
