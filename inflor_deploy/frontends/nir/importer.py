"""The NIR front end: a NIR graph (``nir.read`` of a ``.nir`` file, or a ``nir.NIRGraph``) -> the float IR.

    import_nir("model.nir", timesteps=4, reset="subtract")  ->  NirImport (graph, reading, notes)

A ``.nir`` file is HDF5 read with ``nir.read``: data only, no code runs.
Every node maps onto IR nodes or is refused by name with the reason:

==============  =========================================================================================
NIR node        IR
==============  =========================================================================================
Input           ``Input`` (``(C, H, W)``; a flat ``(N,)`` input with ``input_shape=(C, H, W)``, C-major)
Output          the ``Accumulator``: ``spike_count`` after a neuron, ``mean_current`` after a synapse
Affine, Linear  ``Linear`` (with / without bias; several incoming edges: an ``Add`` before it)
Conv2d          ``Conv2d`` (stride, padding int/pair/'same'/'valid', groups, bias; dilation d as the
                kernel with d - 1 zeros between taps: the same sums)
AvgPool2d       ``AvgPool2d`` (no padding)
SumPool2d       ``AvgPool2d`` times the window area, folded into the synapse that reads it
Scale           folded: into the rows of the synapse it follows (when it alone reads it), else into the
                columns of the synapse it feeds, or the gain of the neuron it feeds (one factor)
Flatten         ``Flatten`` of every per-sample dimension (a Linear flattens C-major anyway)
IF, LIF         ``Neuron`` (:func:`inflor_deploy.nir_semantics.read_neuron`: dt, compare, reset)
CubaLIF         ``Neuron`` when tau_syn = dt (its filter is a gain); refused otherwise (the reason there)
LI              the readout ``Accumulator(mean_membrane)`` when it is the last node before the Output
==============  =========================================================================================

Refused, each with its reason and fix (:data:`REFUSED`): ``I``, ``CubaLI``,
``Threshold``, ``Delay``, ``Conv1d``, nested ``NIRGraph`` (recurrent
subgraphs), cycles, several Inputs or Outputs, partial Flattens, padded
pooling, an LI anywhere but at the readout.

Node names are the NIR names (the Input is named ``image``, the IR's input
name), so a framework module exported through nirtorch keeps its path
(``features.0`` traced by fx is ``features_0``). Nodes follow the order this
project recorded (its own files) or a topological order that takes the file's
node order at ties.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.input_spec import InputSpec, apply_input_spec, resolve_input_spec
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.nir_semantics import (
    NirImportError, Reading, graph_metadata, node_metadata, read_neuron, resolve_reading, uniform,
)

__all__ = ["NirImport", "REFUSED", "SUPPORTED_NODES", "import_nir", "load_nir", "nir_module"]

SUPPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Scale", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
                   "IF", "LIF", "CubaLIF", "LI")  # fmt: skip
#: NIR node types that are refused, with the reason and what to do instead.
REFUSED: dict[str, str] = {
    "I": "a pure integrator (nir.I) is a non-spiking state inside the network; the IR's only non-spiking state is "
         "the readout. Use an IF neuron, or an LI readout as the last layer",
    "CubaLI": "a current-based leaky integrator (nir.CubaLI) has a decaying synaptic current, a second state the IR "
              "neuron does not model in any backend; use an LI readout (tau_syn = dt) or a mean-current readout",
    "Threshold": "a stateless threshold (nir.Threshold) has no IR node and no exact Loihi form (a neuron with no "
                 "memory needs dv = 4096, beyond its 12 bits); use an IF or LIF neuron",
    "Delay": "a synaptic delay (nir.Delay) is not expressed in the IR (the scheduler sets delays only to align "
             "residual paths); remove it, or fold it into the timing of the data",
    "Conv1d": "1-D convolutions are not in the IR (Lava's Conv is 2-D); export the layer as a Conv2d with a "
              "kernel height of 1",
    "NIRGraph": "a nested graph (a recurrent layer such as snnTorch's RLeaky/RSynaptic, or a subgraph) is not "
                "supported: the IR is feed-forward. Export a network without recurrent layers",
    "Identity": "an Identity node has no IR node; remove it from the graph",
}


def nir_module():
    """The ``nir`` package, or an InflorError naming the extra to install."""
    try:
        import nir
    except ImportError as err:  # pragma: no cover - the test set-up installs the extra
        raise InflorError("NIR import/export needs the nir package: pip install 'inflor-deploy[nir]'") from err
    return nir


def load_nir(path: str | Path):
    """Read a ``.nir`` file with ``nir.read`` (HDF5; no code runs), or raise NirImportError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise NirImportError(f"{path}: no such NIR file")
    nir = nir_module()
    try:
        # type_check=False: this front end infers and checks every shape itself, with messages that name the node.
        return nir.read(path, type_check=False)
    except Exception as err:  # noqa: BLE001 - h5py and nir raise many types for a foreign or corrupt file
        raise NirImportError(
            f"{path}: not a readable NIR file ({type(err).__name__}: {err}); write it with nir.write(path, graph) "
            "(nir 1.0.x)"
        ) from err


@dataclass
class NirImport:
    """What :func:`import_nir` produced.

    Attributes:
        graph: The validated float IR (its Input declared).
        reading: The convention, dt, compare and reset applied.
        nir_graph: The NIR graph read.
        notes: What the import did that a user should know (folds, recovered parameters).
        inexact: IR neurons whose input current or parameters are not computed in the exporting
            framework's float32 operation order (a folded Scale or SumPool, a dilated kernel, a
            parameter recovered only up to rounding): level 1 counts last-ulp near-ties there.
        names: IR node name -> the NIR node it came from.
    """

    graph: Graph
    reading: Reading
    nir_graph: Any
    notes: list[str] = field(default_factory=list)
    inexact: frozenset[str] = frozenset()
    names: dict[str, str] = field(default_factory=dict)


def _pair(value, what: str) -> tuple[int, int]:
    array = np.asarray(value).ravel()
    if array.size == 1:
        array = np.repeat(array, 2)
    if array.size != 2 or not all(float(v).is_integer() for v in array):
        raise NirImportError(f"{what} must be an integer or a pair of integers, got {np.asarray(value).tolist()}")
    return int(array[0]), int(array[1])


def _as_float32(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.all(np.isfinite(array)):
        raise NirImportError(f"{what} has NaN or infinite values; fix the exported parameters")
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass
class _Value:
    """The IR value standing for a NIR node's output: a node name, a pending factor, and whether it is exact."""

    name: str
    shape: tuple[int, ...]
    factor: np.ndarray | None = None  # multiplies the value elementwise (broadcast to shape); folded downstream
    approximate: bool = False  # computed in another float order than the exporter's


class _Builder:
    def __init__(self, graph, reading: Reading, *, input_shape, name_map):
        self.graph = graph
        self.reading = reading
        self.input_shape = input_shape
        self.nodes: list[n.Node] = []
        self.index: dict[str, int] = {}
        self.values: dict[str, _Value] = {}
        self.notes: list[str] = []
        self.inexact: set[str] = set()
        self.names = name_map
        self.consumers: dict[str, list[str]] = {k: [] for k in graph.nodes}
        self.sources: dict[str, list[str]] = {k: [] for k in graph.nodes}
        for a, b in graph.edges:
            self.consumers[a].append(b)
            self.sources[b].append(a)

    # ------------------------------------------------------------------ helpers

    def add(self, node: n.Node, nir_name: str) -> None:
        if node.name in self.index:
            raise NirImportError(f"two NIR nodes map to the IR name {node.name!r}; rename one of them")
        self.index[node.name] = len(self.nodes)
        self.nodes.append(node)
        self.names[node.name] = nir_name

    def replace(self, node: n.Node) -> None:
        self.nodes[self.index[node.name]] = node

    def ir(self, name: str) -> n.Node:
        return self.nodes[self.index[name]]

    def inputs(self, key: str) -> list[_Value]:
        missing = [s for s in self.sources[key] if s not in self.values]
        if missing:
            raise NirImportError(f"NIR node {key!r}: its source {missing[0]!r} maps to nothing")
        return [self.values[s] for s in self.sources[key]]

    def one_input(self, key: str, kind: str) -> _Value:
        ins = self.inputs(key)
        if len(ins) != 1:
            raise NirImportError(f"NIR node {key!r} ({kind}) has {len(ins)} incoming edges; it takes exactly one")
        return ins[0]

    def summed(self, key: str, kind: str, out_name: str) -> tuple[str, tuple[int, ...], bool]:
        """The IR name of the sum of ``key``'s inputs (an Add when several feed a synapse); pending factors refused."""
        ins = self.inputs(key)
        if not ins:
            raise NirImportError(f"NIR node {key!r} ({kind}) has no incoming edge")
        if len(ins) == 1:
            return ins[0].name, ins[0].shape, ins[0].approximate
        if any(v.factor is not None for v in ins):
            raise NirImportError(f"NIR node {key!r} ({kind}) sums several inputs, one of them scaled (Scale or "
                                 "SumPool2d); fold the scale into the layer before it")
        if any(v.shape != ins[0].shape for v in ins):
            raise NirImportError(f"NIR node {key!r} ({kind}) sums inputs of shapes {[v.shape for v in ins]}")
        add = f"{out_name}_sum"
        self.add(n.Add(add, tuple(v.name for v in ins)), key)
        return add, ins[0].shape, any(v.approximate for v in ins)

    # ------------------------------------------------------------------ nodes

    def input(self, key: str, node) -> None:
        shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).ravel())
        if self.input_shape is not None:
            wanted = tuple(int(s) for s in self.input_shape)
            if math.prod(wanted) != math.prod(shape):
                raise NirImportError(f"input_shape {wanted} has {math.prod(wanted)} values; the NIR Input {key!r} "
                                     f"has shape {shape} ({math.prod(shape)} values)")
            if len(shape) != 1 and wanted != shape:
                raise NirImportError(f"input_shape {wanted} reinterprets only a flat NIR Input; {key!r} is {shape}")
            shape = wanted
        if len(shape) == 1:
            raise NirImportError(
                f"the NIR Input {key!r} is a flat vector of {shape[0]} values; this tool's data are images: pass "
                f"--input-shape C,H,W (C*H*W = {shape[0]}; the first Linear reads it C-major)"
            )
        if len(shape) != 3:
            raise NirImportError(
                f"the NIR Input {key!r} has shape {shape}; one sample must be (C, H, W) (a leading batch or time "
                "dimension: export with it removed, e.g. snnTorch's export_to_nir(..., ignore_dims=[0]))"
            )
        meta = node_metadata(node) or {}
        self.add(n.Input(n.INPUT_NAME, (), shape=shape), key)
        self.values[key] = _Value(n.INPUT_NAME, shape)
        self.recorded_input = meta

    def synapse(self, key: str, node, kind: str) -> None:
        source, shape, approx = self.summed(key, kind, key)
        factor = self.inputs(key)[0].factor if len(self.sources[key]) == 1 else None
        if kind in ("Affine", "Linear"):
            weight = _as_float32(node.weight, f"NIR node {key!r} weight")
            if weight.ndim != 2 or weight.shape[1] != math.prod(shape):
                raise NirImportError(f"NIR node {key!r} ({kind}): weight {weight.shape} does not take its input of "
                                     f"shape {shape} ({math.prod(shape)} values)")
            bias = _as_float32(node.bias, f"NIR node {key!r} bias") if kind == "Affine" else None
            if bias is not None and bias.shape != (weight.shape[0],):
                raise NirImportError(f"NIR node {key!r} (Affine): bias {bias.shape} does not match {weight.shape[0]} "
                                     "outputs")
            if factor is not None:
                columns = np.broadcast_to(factor, shape).reshape(-1).astype(np.float64)
                weight = (weight.astype(np.float64) * columns[None, :]).astype(np.float32)
                approx = True
            self.add(n.Linear(key, (source,), weight=weight, bias=bias), key)
            self.values[key] = _Value(key, (weight.shape[0],), approximate=approx)
            return
        self.conv(key, node, source, shape, factor, approx)

    def conv(self, key: str, node, source: str, shape, factor, approx: bool) -> None:
        where = f"NIR node {key!r} (Conv2d)"
        weight = _as_float32(node.weight, f"{where} weight")
        if weight.ndim != 4 or len(shape) != 3:
            raise NirImportError(f"{where}: weight {weight.shape} on an input of shape {shape}; it needs a 4-D weight "
                                 "and a (C, H, W) input")
        groups = int(np.asarray(node.groups).ravel()[0])
        if weight.shape[1] * groups != shape[0] or weight.shape[0] % groups:
            raise NirImportError(f"{where}: weight {weight.shape} with groups {groups} does not take {shape[0]} "
                                 "input channels")
        declared = getattr(node, "input_shape", None)
        if declared is not None and tuple(int(v) for v in np.asarray(declared).ravel()) != tuple(shape[1:]):
            raise NirImportError(f"{where}: its input_shape {np.asarray(declared).tolist()} is not the map it "
                                 f"receives, {shape[1:]}")
        stride = _pair(node.stride, f"{where} stride")
        dilation = _pair(node.dilation, f"{where} dilation")
        if dilation != (1, 1):
            # A dilated kernel is the kernel with d - 1 zeros between taps: the same sum of products.
            kh, kw = weight.shape[2:]
            dilated = np.zeros(weight.shape[:2] + ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), np.float32)
            dilated[:, :, :: dilation[0], :: dilation[1]] = weight
            weight, approx = dilated, True
            self.notes.append(f"{key}: dilation {dilation} written as a {weight.shape[2]}x{weight.shape[3]} kernel "
                              "with zeros between the taps")
        padding = node.padding
        if isinstance(padding, (str, bytes)):
            padding = padding.decode() if isinstance(padding, bytes) else padding
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same" and stride == (1, 1) and all(k % 2 for k in weight.shape[2:]):
                padding = ((weight.shape[2] - 1) // 2, (weight.shape[3] - 1) // 2)
            else:
                raise NirImportError(f"{where}: padding {padding!r} with stride {stride} and kernel "
                                     f"{weight.shape[2:]} is not a symmetric zero padding; export numeric padding")
        padding = _pair(padding, f"{where} padding")
        bias = _as_float32(node.bias, f"{where} bias")
        if bias.shape != (weight.shape[0],):
            raise NirImportError(f"{where}: bias {bias.shape} does not match {weight.shape[0]} output channels")
        if bool((node_metadata(node) or {}).get("no_bias", 0)) and not bias.any():
            bias = None  # written by inflor-deploy for a conv without bias
        if factor is not None:
            per_channel = np.broadcast_to(factor, shape).reshape(shape[0], -1)
            if not np.all(per_channel == per_channel[:, :1]):
                raise NirImportError(f"{where}: it reads a map scaled per position (Scale); a convolution can take "
                                     "one scale per input channel. Fold the Scale into the layer before it")
            scale = per_channel[:, 0].reshape(groups, -1)  # [groups, C/groups]
            out_group = np.repeat(np.arange(groups), weight.shape[0] // groups)
            weight = (weight.astype(np.float64) * scale[out_group][:, :, None, None]).astype(np.float32)
            approx = True
        self.add(n.Conv2d(key, (source,), weight=weight, bias=bias, stride=stride, padding=padding, groups=groups), key)
        c, h, w = shape
        oh = (h + 2 * padding[0] - weight.shape[2]) // stride[0] + 1
        ow = (w + 2 * padding[1] - weight.shape[3]) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise NirImportError(f"{where}: its output on a {shape} input is empty")
        self.values[key] = _Value(key, (weight.shape[0], oh, ow), approximate=approx)

    def pool(self, key: str, node, kind: str) -> None:
        where = f"NIR node {key!r} ({kind})"
        value = self.one_input(key, kind)
        if len(value.shape) != 3:
            raise NirImportError(f"{where}: pooling needs a (C, H, W) input, got {value.shape}")
        kernel = _pair(node.kernel_size, f"{where} kernel_size")
        stride = _pair(node.stride, f"{where} stride")
        if _pair(node.padding, f"{where} padding") != (0, 0):
            raise NirImportError(f"{where}: padded pooling has no exact fold on Loihi; export it without padding")
        factor = value.factor
        if factor is not None:
            per_channel = np.broadcast_to(factor, value.shape).reshape(value.shape[0], -1)
            if not np.all(per_channel == per_channel[:, :1]):
                raise NirImportError(f"{where}: it pools a map scaled per position (Scale); fold the Scale first")
            factor = per_channel[:, 0].reshape(-1, 1, 1)
        if kind == "SumPool2d":
            # sum = mean * area: the area goes downstream with any other pending factor.
            area = np.float64(kernel[0] * kernel[1])
            factor = area if factor is None else factor * area
        c, h, w = value.shape
        shape = (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)
        if min(shape) < 1:
            raise NirImportError(f"{where}: kernel {kernel} is larger than its input {value.shape}")
        self.add(n.AvgPool2d(key, (value.name,), kernel=kernel, stride=stride), key)
        self.values[key] = _Value(key, shape, factor, value.approximate or kind == "SumPool2d")

    def flatten(self, key: str, node) -> None:
        value = self.one_input(key, "Flatten")
        rank = len(value.shape)
        start, end = int(node.start_dim), int(node.end_dim)
        start, end = start + rank if start < 0 else start, end + rank if end < 0 else end
        if (start, end) != (0, rank - 1) and rank > 1:
            raise NirImportError(
                f"NIR node {key!r} (Flatten): start_dim {node.start_dim}, end_dim {node.end_dim} flatten only part of "
                f"a {value.shape} sample; only a flatten of the whole sample (start_dim 0, end_dim -1) maps"
            )
        if (node_metadata(node) or {}).get("implicit") or rank == 1:
            # Nothing to flatten, or written by inflor-deploy where a Linear reads a map (C-major, as
            # a Flatten would): no IR node; the Linear takes the map as it is.
            self.values[key] = dataclasses.replace(value)
            return
        factor = None if value.factor is None else np.broadcast_to(value.factor, value.shape).reshape(-1)
        self.add(n.Flatten(key, (value.name,)), key)
        self.values[key] = _Value(key, (math.prod(value.shape),), factor, value.approximate)

    def scale(self, key: str, node) -> None:
        value = self.one_input(key, "Scale")
        s = np.asarray(node.scale, np.float64)
        if not np.all(np.isfinite(s)):
            raise NirImportError(f"NIR node {key!r} (Scale) has NaN or infinite values")
        try:
            s = np.broadcast_to(s, value.shape)
        except ValueError:
            raise NirImportError(f"NIR node {key!r} (Scale): scale {s.shape} does not fit its input {value.shape}") from None
        producer = self.ir(value.name) if value.name in self.index else None
        alone = [c for c in self.consumers[self.names.get(value.name, "")]] == [key]
        if isinstance(producer, (n.Linear, n.Conv2d)) and alone and value.factor is None:
            rows = s.reshape(s.shape[0], -1)
            if isinstance(producer, n.Conv2d) and not np.all(rows == rows[:, :1]):
                rows = None  # a per-position scale of a conv's output cannot go into its kernel
            if rows is not None:
                rows = rows[:, 0] if isinstance(producer, n.Conv2d) else s.reshape(-1)
                view = (-1,) + (1,) * (producer.weight.ndim - 1)
                weight = (producer.weight.astype(np.float64) * rows.reshape(view)).astype(np.float32)
                bias = None if producer.bias is None else (producer.bias.astype(np.float64) * rows).astype(np.float32)
                self.replace(dataclasses.replace(producer, weight=weight, bias=bias))
                self.notes.append(f"{key}: Scale folded into the rows of {value.name}")
                self.values[key] = _Value(value.name, value.shape, None, True)
                return
        factor = s if value.factor is None else value.factor * s
        self.values[key] = _Value(value.name, value.shape, factor, True)
        self.notes.append(f"{key}: Scale carried into the layer that reads it")

    def neuron(self, key: str, node) -> None:
        ins = self.inputs(key)
        if not ins:
            raise NirImportError(f"NIR node {key!r} ({type(node).__name__}) has no incoming edge")
        shape = ins[0].shape
        if any(v.shape != shape for v in ins):
            raise NirImportError(f"NIR node {key!r}: its inputs have shapes {[v.shape for v in ins]}; they must agree")
        read = read_neuron(key, node, shape, self.reading)
        fields = dict(read.fields)
        factors = {None if v.factor is None else tuple(np.unique(v.factor).tolist()) for v in ins}
        if factors != {None}:
            if len(factors) != 1 or len(next(iter(factors))) != 1 or fields.get("charge", "affine") != "affine":
                raise NirImportError(
                    f"NIR node {key!r}: its input current is scaled (Scale or SumPool2d) by a factor that is not one "
                    "number for the whole layer (or the neuron's charge form fixes its gain); fold the scale into "
                    "the synapse before it"
                )
            fields["gain"] = fields["gain"] * next(iter(factors))[0]
        self.add(n.Neuron(key, tuple(v.name for v in ins), **fields), key)
        self.values[key] = _Value(key, shape)
        if read.note:
            self.notes.append(f"{key}: {read.note}")
        if not read.exact or any(v.approximate for v in ins) or factors != {None}:
            self.inexact.add(key)

    def readout_li(self, key: str, node, out_key: str) -> None:
        """An LI feeding the Output: the mean-membrane readout ``A = (1 - dt/tau) A + X``."""
        where = f"NIR node {key!r} (LI)"
        source, shape, _ = self.summed(key, "LI", key)
        if any(v.factor is not None for v in self.inputs(key)):
            raise NirImportError(f"{where}: its input is scaled (Scale or SumPool2d); fold the scale into the synapse")
        if self.reading.dt is None:
            raise NirImportError(f"{where}: NIR does not state the time step; pass --dt SECONDS")
        dt = self.reading.dt
        tau_nir, r = uniform(node.tau, f"{where}: tau"), uniform(node.r, f"{where}: r")
        if uniform(node.v_leak, f"{where}: v_leak") != 0.0:
            raise NirImportError(f"{where}: v_leak must be 0 (the readout integrates from 0)")
        if not tau_nir >= dt:
            raise NirImportError(f"{where}: tau = {tau_nir:g} s is shorter than dt = {dt:g} s; pass --dt")
        gain = dt * r / tau_nir
        if abs(gain - 1.0) > 2 * np.finfo(np.float32).eps:
            raise NirImportError(
                f"{where}: its input gain dt r / tau = {gain:g} is not 1; the readout accumulator has none. Export "
                "it with r = tau / dt"
            )
        tau = 1.0 - dt / tau_nir
        if tau <= 0:
            raise NirImportError(f"{where}: tau = dt keeps no membrane (1 - dt/tau = 0); use a mean-current readout")
        self.add(n.Accumulator(key, (source,), readout="mean_membrane", tau=tau), key)
        self.values[out_key] = _Value(key, shape)

    def output(self, key: str) -> None:
        value = self.one_input(key, "Output")
        if value.factor is not None:
            raise NirImportError(f"NIR Output {key!r} reads a scaled value (Scale or SumPool2d); the readout takes "
                                 "none: fold the scale into the layer before it")
        producer = self.ir(value.name)
        if isinstance(producer, n.Neuron):
            readout = "spike_count"
        elif isinstance(producer, (n.Linear, n.Conv2d)):
            readout = "mean_current"
        else:
            raise NirImportError(
                f"NIR Output {key!r} reads a {type(producer).__name__}; the readout is the spike count of a neuron "
                "layer, the mean current of a synapse (Affine, Linear, Conv2d) or an LI"
            )
        self.add(n.Accumulator(key, (value.name,), readout=readout), key)


def _order(graph, recorded: dict[str, Any] | None) -> list[str]:
    """A topological order: the one this project recorded, else Kahn's with the file's node order at ties."""
    names = list(graph.nodes)
    preds = {k: [] for k in names}
    for a, b in graph.edges:
        preds[b].append(a)
    if recorded and isinstance(recorded.get("order"), str):
        order = recorded["order"].split("\n")
        ok = sorted(order) == sorted(names)
        placed: set[str] = set()
        for k in order if ok else ():
            if not all(p in placed for p in preds[k]):
                ok = False
                break
            placed.add(k)
        if ok:
            return order
    remaining = {k: len(set(preds[k])) for k in names}
    succ: dict[str, list[str]] = {k: [] for k in names}
    for a, b in dict.fromkeys(graph.edges):
        succ[a].append(b)
    ready = [k for k in names if remaining[k] == 0]
    order = []
    position = {k: i for i, k in enumerate(names)}
    while ready:
        ready.sort(key=position.get)
        k = ready.pop(0)
        order.append(k)
        for b in dict.fromkeys(succ[k]):
            remaining[b] -= 1
            if remaining[b] == 0:
                ready.append(b)
    if len(order) != len(names):
        cyclic = sorted(k for k in names if k not in order)
        raise NirImportError(
            f"the NIR graph has a cycle through {cyclic}: recurrent connections are not supported (the IR is "
            "feed-forward); export a network without recurrent layers"
        )
    return order


def _check_structure(graph) -> None:
    names = set(graph.nodes)
    for a, b in graph.edges:
        for end in (a, b):
            if end not in names:
                raise NirImportError(f"the NIR graph has an edge ({a!r}, {b!r}) to a node {end!r} it does not have")
    for key, node in graph.nodes.items():
        kind = type(node).__name__
        if kind in REFUSED:
            raise NirImportError(f"NIR node {key!r} ({kind}) is not supported: {REFUSED[kind]}")
        if kind not in SUPPORTED_NODES:
            raise NirImportError(f"NIR node {key!r} ({kind}) is not supported; supported nodes: "
                                 f"{', '.join(SUPPORTED_NODES)}")
    for kind in ("Input", "Output"):
        found = [k for k, v in graph.nodes.items() if type(v).__name__ == kind]
        if len(found) != 1:
            raise NirImportError(f"the NIR graph has {len(found)} {kind} nodes ({found}); this tool compiles graphs "
                                 f"with exactly one {kind}")


def import_nir(
    graph_or_path,
    *,
    timesteps: int,
    reset: str | None = None,
    dt: float | None = None,
    compare: str | None = None,
    convention: str | None = None,
    input_shape: Sequence[int] | None = None,
    input_range: str | Sequence[float] | None = None,
    input_mean: str | Sequence[float] | None = None,
    input_std: str | Sequence[float] | None = None,
    input_encoding: str | None = None,
    name: str | None = None,
) -> NirImport:
    """Read a NIR graph into the float IR (module docstring for the node table).

    Args:
        graph_or_path: A ``nir.NIRGraph`` or the path of a ``.nir`` file.
        timesteps: T (NIR states none).
        reset: ``"subtract"`` (subtract v_threshold on a spike, as SpikingJelly's soft
            reset and snnTorch's ``"subtract"`` do) or ``"zero"`` (NIR's reset to v_reset);
            None: NIR's, or the mode this project recorded in the file.
        dt: The step in seconds the model was trained with (None: the convention's).
        compare: ``">"`` or ``">="`` (None: the convention's).
        convention: ``auto`` (None), ``nir``, ``spikingjelly``, ``snntorch`` or ``norse``
            (:data:`inflor_deploy.nir_semantics.CONVENTIONS`).
        input_shape: ``(C, H, W)`` to read a flat ``(N,)`` NIR Input as images.
        input_range, input_mean, input_std, input_encoding: The declared input
            (:func:`~inflor_deploy.frontends.input_spec.resolve_input_spec`); default the
            declaration this project recorded in the file, else pixels in [0, 1], direct.
        name: The graph's name (default: recorded, else the file's stem, else ``"nir"``).

    Raises:
        NirImportError: an unreadable file, an unsupported node, a dynamics the IR cannot
            express exactly (each names the node, the reason and the fix).
    """
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise NirImportError(f"timesteps must be an integer >= 1 (NIR does not state T): got {timesteps!r}")
    path = None
    if isinstance(graph_or_path, (str, Path)):
        path = Path(graph_or_path)
        graph = load_nir(path)
    else:
        graph = graph_or_path
    if type(graph).__name__ != "NIRGraph":
        raise NirImportError(f"expected a nir.NIRGraph or the path of a .nir file, got {type(graph).__name__}")
    _check_structure(graph)
    recorded = graph_metadata(graph)
    reading = resolve_reading(graph, convention=convention, dt=dt, compare=compare, reset=reset)
    names: dict[str, str] = {}
    builder = _Builder(graph, reading, input_shape=input_shape, name_map=names)
    order = _order(graph, recorded if reading.recorded else None)
    out_key = next(k for k, v in graph.nodes.items() if type(v).__name__ == "Output")
    for key in order:
        node = graph.nodes[key]
        kind = type(node).__name__
        if key == n.INPUT_NAME and kind != "Input":
            raise NirImportError(f"NIR node {key!r} has the name the IR gives its Input; rename it")
        if kind == "Input":
            builder.input(key, node)
        elif kind in ("Affine", "Linear", "Conv2d"):
            builder.synapse(key, node, kind)
        elif kind in ("AvgPool2d", "SumPool2d"):
            builder.pool(key, node, kind)
        elif kind == "Flatten":
            builder.flatten(key, node)
        elif kind == "Scale":
            builder.scale(key, node)
        elif kind in ("IF", "LIF", "CubaLIF"):
            builder.neuron(key, node)
        elif kind == "LI":
            if builder.consumers[key] != [out_key]:
                raise NirImportError(f"NIR node {key!r} (LI): {REFUSED_LI}")
            builder.readout_li(key, node, out_key)
        elif kind == "Output":
            if key not in builder.values:
                builder.output(key)
    T = int(timesteps)
    graph_name = name or (recorded or {}).get("name") or (path.stem if path is not None else "nir")
    ir = Graph(nodes=tuple(builder.nodes), timesteps=T, name=str(graph_name))
    validate(ir)
    spec = _input_spec(getattr(builder, "recorded_input", {}) if reading.recorded else {},
                       input_range, input_mean, input_std, input_encoding)  # fmt: skip
    ir = apply_input_spec(ir, spec)
    return NirImport(graph=ir, reading=reading, nir_graph=graph, notes=builder.notes,
                     inexact=frozenset(builder.inexact), names=names)  # fmt: skip


REFUSED_LI = ("a leaky integrator (LI) maps only as the readout (the last node before the Output); inside the network "
              "it is a non-spiking state the IR does not have")


def _input_spec(recorded: dict[str, Any], input_range, input_mean, input_std, input_encoding) -> InputSpec:
    """The user's declaration, else the one this project recorded in the file, else the default."""
    if all(v is None for v in (input_range, input_mean, input_std, input_encoding)) and recorded:
        rng = recorded.get("value_range")
        return resolve_input_spec(
            None if rng is None else [float(v) for v in np.asarray(rng).ravel()],
            None, None, str(recorded.get("encoding", "direct")),
        )
    return resolve_input_spec(input_range, input_mean, input_std, input_encoding or "direct")

