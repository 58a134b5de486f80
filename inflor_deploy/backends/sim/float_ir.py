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
        scores: ``[B, classes]`` class scores as the accumulator's ``readout`` defines them
            (``A[T-1] / T`` for InfLoR's mean current).
        spikes: Neuron name -> ``[T, B, ...]`` uint8 spikes (when recorded).
        membranes: Neuron name -> ``[T, B, ...]`` H[t], the membrane before
            reset that the threshold is compared with (when recorded).
        currents: Neuron name -> ``[T, B, ...]`` X[t], the summed input current
            (when ``record_currents``).
    """

    scores: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    membranes: dict[str, np.ndarray] = field(default_factory=dict)
    currents: dict[str, torch.Tensor] = field(default_factory=dict)


def _t(array: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor | None:
    # IR arrays are read-only; torch wants writable memory, so copy.
    return None if array is None else torch.from_numpy(np.array(array)).to(dtype)


def _parameter(value, like: torch.Tensor):
    """A scalar as is (torch rounds a Python float to the tensor's dtype); a per-channel array as a tensor.

    ``like`` is ``[B, ...]``; the ``(C,)`` array becomes ``(C, 1, ..)`` in ``like``'s dtype,
    which is how a framework's float32 per-channel buffer enters the same arithmetic.
    """
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(n.per_channel(value, like.dim() - 1))).to(like.dtype)
    return value


def _charge(node: n.Neuron, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """H from U[t-1] and X[t], operation by operation as the framework computes it (``Neuron.charge``)."""
    charge, vr, k = node.charge, node.v_reset, node.decay
    if charge == "affine":
        decayed = node.tau * u if node.tau != 1.0 else u
        return decayed + (node.gain * x if node.gain != 1.0 else x)
    # SpikingJelly (_ops/lif/cpu.py, _ops/plif/cpu.py), literally.
    if charge == "decay_divide_input":
        return u + (x - (u - vr)) / k
    if charge == "decay_divide":
        return u - (u - vr) / k + x
    if charge == "decay_multiply_input":
        return u + (x - (u - vr)) * k
    if charge == "decay_multiply":
        return u - (u - vr) * k + x
    raise IRError(f"neuron {node.name!r}: unknown charge {charge!r}")


def _neuron(node: n.Neuron, current: torch.Tensor, record: bool, clip: float | None = None):
    """Run one neuron layer over time; current is [T, B, ...]. Returns 0/1 spikes and H.

    ``clip`` clamps H to ``[-clip, clip]`` before the threshold and the reset,
    as Loihi saturates v (:func:`spike_preserving_range` asks which clip
    changes no spike). Every variant of :class:`~inflor_deploy.ir.nodes.Neuron` runs literally, in
    the framework's operation order (InfLoR's own; SpikingJelly's
    ``_ops/if_/cpu.py`` and ``_ops/lif/cpu.py``; snnTorch's ``Leaky``), so a
    framework's float32 spikes are reproduced bit for bit.
    """
    u = torch.zeros_like(current[0])
    if node.v_reset != 0.0:
        u = u + node.v_reset  # SpikingJelly's membrane starts at v_reset
    vth = _parameter(node.vth, u)
    amount = _parameter(node.spike_value if node.reset_amount is None else node.reset_amount, u)
    fires = torch.ge if node.compare == ">=" else torch.gt
    delayed = node.reset_timing == "next_step"
    spikes, membranes = [], []
    for x_t in current:
        if delayed:
            # snnTorch Leaky (reset_delay=True): the reset of the spike decided from U[t-1]
            # lands now, undecayed; U holds the pre-reset membrane.
            r = fires(u, vth).to(u.dtype)
            if node.reset == "subtract":
                h = _charge(node, u, x_t) - r * amount
            elif node.reset == "zero":
                h = _charge(node, (1 - r) * u, x_t)
            else:
                h = _charge(node, u, x_t)
        else:
            h = _charge(node, u, x_t)
        if clip is not None:
            h = h.clamp(-clip, clip)
        compared = phi(h) if node.mpr else h
        o = fires(compared, vth).to(h.dtype)
        if delayed or node.reset == "none":
            u = h
        elif node.reset == "subtract":
            u = h - amount * o
        elif node.v_reset == 0.0:
            u = h * (1.0 - o)
        else:
            u = o * node.v_reset + (1 - o) * h  # SpikingJelly's hard reset, literally
        spikes.append(o)
        if record:
            membranes.append(h)
    return torch.stack(spikes), (torch.stack(membranes) if record else None)


#: Halvings of the interval in :func:`spike_preserving_range` (the range is found within 2^-8 of the peak).
RANGE_SEARCH_STEPS = 8


def spike_preserving_range(node: n.Neuron, current: torch.Tensor) -> tuple[float, float]:
    """(peak, needed): the largest |H| the layer reaches on ``current``, and a clip level that changes none of its spikes.

    ``needed <= peak``: clamping H to ``[-needed, needed]`` (Loihi's v
    saturation, in float units) leaves every spike of the layer as it is on
    this input. A membrane driven far below zero by a steady inhibitory
    current, or far above threshold by a saturating one, reaches a large
    peak but never needs it; a scale guard that bounds ``needed`` instead of
    ``peak`` keeps the precision such layers would otherwise lose. Found by
    bisection on the clip level between 0 and the peak, keeping the upper end
    spike-preserving (clipping need not be monotone in the level, so the
    result is a preserving level, not necessarily the smallest).
    """
    reference, membranes = _neuron(node, current, record=True)
    peak = float(membranes.abs().max()) if membranes.numel() else 0.0
    low, high = 0.0, peak
    for _ in range(RANGE_SEARCH_STEPS):
        middle = 0.5 * (low + high)
        spikes, _ = _neuron(node, current, record=False, clip=middle)
        if torch.equal(spikes, reference):
            high = middle
        else:
            low = middle
    return peak, high


def _readout(node: n.Accumulator, current: torch.Tensor) -> torch.Tensor:
    """Class scores from the accumulator's input current [T, B, ...] (``Accumulator.readout``)."""
    if node.readout == "mean_current":
        return current.mean(0)  # as the PyTorch OutputAccumulator
    if node.readout == "spike_count":
        return current.sum(0)
    m = torch.zeros_like(current[0])
    total = torch.zeros_like(current[0])
    for x_t in current:
        m = node.tau * m + x_t if node.tau != 1.0 else m + x_t
        total = total + m
    return total / current.shape[0]


@torch.no_grad()
def run_float(
    graph: Graph,
    images: np.ndarray,
    record: bool = False,
    dtype: torch.dtype = torch.float32,
    forced_spikes: dict[str, np.ndarray] | None = None,
    record_currents: bool = False,
) -> FloatRun:
    """Run a float graph on a batch of inputs for ``graph.timesteps`` steps.

    Args:
        graph: A float IR graph (before quantization).
        images: ``[B, C, H, W]``, the direct-encoded input frames, or for a
            sequence Input ``[B, T, C, H, W]`` (frame t at step t).
        record: Keep every neuron's spikes and membranes.
        dtype: torch.float32 (as trained) or torch.float64.
        forced_spikes: Neuron name -> ``[T, B, ...]`` spikes to send downstream
            instead of the layer's own (which are still recorded). Feeding every
            layer a reference run's spikes compares each layer in isolation:
            a difference can then only come from that layer's own arithmetic.
        record_currents: Keep every neuron's summed input current (torch ``[T, B, ...]``).
    """
    if graph.is_fixed_point:
        raise IRError("run_float runs float graphs; use the fixed-point simulator for quantized ones")
    T = graph.timesteps
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dtype)
    batch = x.shape[0]
    sequence = graph.input.encoding == "sequence"
    if sequence and (x.dim() < 2 or x.shape[1] != T):
        raise IRError(f"a sequence Input takes [B, T = {T}, ...] inputs; got shape {tuple(x.shape)}")
    # value[name] is [T*B, ...] (time-major); neurons view it as [T, B, ...].
    value: dict[str, torch.Tensor] = {}
    result = FloatRun(scores=np.zeros(0))
    for node in graph:
        src = [value[s] for s in node.sources]
        if isinstance(node, n.Input):
            if sequence:  # frame t at step t: [B, T, ...] -> time-major [T*B, ...]
                out = x.transpose(0, 1).reshape(T * batch, *x.shape[2:])
            else:
                out = x.unsqueeze(0).expand(T, *x.shape).reshape(T * batch, *x.shape[1:])
        elif isinstance(node, n.Normalize):
            view = (1, -1) + (1,) * (src[0].dim() - 2)
            out = (src[0] - _t(node.mean, dtype).view(view)) / _t(node.std, dtype).view(view)
        elif isinstance(node, n.Conv2d):
            per_position = node.bias is not None and node.bias.ndim == 3
            bias = None if per_position else _t(node.bias, dtype)
            out = F.conv2d(src[0], _t(node.weight, dtype), bias, node.stride, node.padding, 1, node.groups)
            if per_position:
                out = out + _t(node.bias, dtype)
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
            current = current.reshape(T, batch, *current.shape[1:])
            if record_currents:
                result.currents[node.name] = current
            spikes, membranes = _neuron(node, current, record)
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
            result.scores = _readout(node, current.reshape(T, batch, *current.shape[1:])).numpy()
            out = current
        else:
            raise IRError(f"run_float cannot execute {type(node).__name__} {node.name!r}")
        value[node.name] = out
    return result
