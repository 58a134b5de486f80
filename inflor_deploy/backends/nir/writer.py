"""Write a float IR graph as a NIR graph (``nir.write``, HDF5), stating what NIR cannot in metadata.

    graph_to_nir(artifact.float_graph)          -> nir.NIRGraph
    export_nir(artifact.float_graph, "m.nir")   -> NirExport (written atomically, read back and checked)

What is written (the IR after the float passes, the input of
``QuantizeFixedPoint``: synapses with folded batch norm, pooling and input
gain; neurons with their folded thresholds; same-step resets from v_reset 0):

===================================  ==========================================================================
IR                                   NIR
===================================  ==========================================================================
Input                                ``Input`` (named ``image``); the declared range and encoding in metadata
Conv2d                               ``Conv2d`` (``input_shape``, stride, padding, groups; a zero bias marked
                                     ``no_bias`` when the IR has none)
Linear                               ``Affine`` (bias) or ``Linear``; reading a map it is preceded by a
                                     ``Flatten`` marked ``implicit``
AvgPool2d, Flatten                   ``AvgPool2d``, ``Flatten``
Add                                  nothing: each summand is an edge into the synapse (NIR sums its inputs)
Neuron, tau = 1 / tau < 1            ``IF(r = gain/dt)`` / ``LIF(tau = dt/(1 - tau), r = gain tau/dt,
                                     v_leak = v_reset)``, v_threshold and v_reset per neuron
Accumulator                          ``Output`` (spike count, mean current); mean membrane: ``LI`` + ``Output``
===================================  ==========================================================================

with ``dt = 1e-4`` (:data:`~inflor_deploy.nir_semantics.EXPORT_DT`, the step
SpikingJelly's and snnTorch's importers assume). NIR has no reset mode: every
consumer reads IF/LIF as *reset to v_reset*. Each neuron's exact fields
(reset mode and amount, compare, reset timing, float order, spike value) are
in its ``metadata["inflor_deploy"]``, the graph's ``dt``, name, T and node
order in the graph's; only inflor-deploy reads them, and it reads them back
into the same float IR, bit for bit (checked by :func:`export_nir` before the
file is kept).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.errors import ExportError, InflorError
from inflor_deploy.integrity import sha256
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate
from inflor_deploy.nir_semantics import (
    EXPORT_DT, META, META_FORMAT, META_VERSION, describe_unstated, nir_parameters, recorded_metadata,
)

__all__ = ["NirCheckFailed", "NirExport", "NirExportRefusal", "export_nir", "graph_to_nir"]


class NirExportRefusal(ExportError):
    """The graph holds something NIR (or this writer) cannot state; nothing was written."""


class NirCheckFailed(RuntimeError):
    """The written graph, evaluated as NIR defines it, did not give the float IR's spikes; it was not kept."""

    def __init__(self, check):
        super().__init__(check.summary)
        self.check = check


@dataclass
class NirExport:
    """What :func:`export_nir` wrote.

    Attributes:
        path: The ``.nir`` file.
        sha256: Its sha256.
        nodes: NIR node name -> NIR type, in the recorded order.
        unstated: Neuron name -> what NIR cannot state about it (carried in metadata only).
        check: The float-run check on given images (None when not run).
        seconds: Wall time.
    """

    path: Path
    sha256: str
    nodes: dict[str, str]
    unstated: dict[str, list[str]] = field(default_factory=dict)
    check: Any = None
    seconds: float = 0.0


def _nir():
    from inflor_deploy.frontends.nir.importer import nir_module

    return nir_module()


def graph_to_nir(graph: Graph, *, dt: float = EXPORT_DT, source: dict[str, Any] | None = None):
    """The NIR graph of a float IR graph (module docstring for the mapping).

    Args:
        graph: A float IR graph (an artifact's ``float_graph``, or a graph ``from_nir`` returned).
        dt: The step the neurons' time constants are written for.
        source: Provenance recorded in the graph's metadata (strings and numbers).

    Raises:
        NirExportRefusal: a node NIR cannot express (named, with the reason).
    """
    nir = _nir()
    if graph.is_fixed_point:
        raise NirExportRefusal("NIR export takes the float IR (the artifact's float_graph), not the fixed-point one")
    shapes = validate(graph)
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    adds = {x.name: x for x in graph.of_type(n.Add)}

    def feeds(node: n.Node) -> list[str]:
        out: list[str] = []
        for s in node.sources:
            out += list(adds[s].sources) if s in adds else [s]
        return out

    def put(name: str, value) -> None:
        if name in nodes:
            raise NirExportRefusal(f"two NIR nodes would be named {name!r}; rename the IR node")
        nodes[name] = value

    for node in graph:
        where = f"{type(node).__name__} {node.name!r}"
        if isinstance(node, n.Input):
            meta = {"value_range": np.asarray(node.value_range, np.float64), "encoding": node.encoding}
            if node.pixel_levels is not None:
                meta["pixel_levels"] = int(node.pixel_levels)
            put(node.name, nir.Input(input_type={"input": np.asarray(node.shape)}, metadata={META: meta}))
            continue
        if isinstance(node, n.Add):
            if any(not isinstance(c, (n.Linear, n.Conv2d)) for c in graph.consumers(node.name)):
                raise NirExportRefusal(f"{where}: a sum that feeds anything but synapses has no NIR form")
            continue  # its consumer synapse takes one edge per summand
        if isinstance(node, n.Conv2d):
            if node.bias is not None and node.bias.ndim != 1:
                raise NirExportRefusal(
                    f"{where} has a per-position bias (an input normalization folded into a zero-padded conv); NIR's "
                    "Conv2d bias is per channel. Compile without --input-mean/--input-std (normalize the data "
                    "instead), or with padding 0"
                )
            (reads,) = node.sources
            h, w = shapes[reads][1:]
            bias = np.zeros(node.weight.shape[0], np.float32) if node.bias is None else np.asarray(node.bias)
            meta = {META: {"no_bias": 1}} if node.bias is None else {}
            put(node.name, nir.Conv2d(input_shape=(int(h), int(w)), weight=np.asarray(node.weight), bias=bias,
                                      stride=tuple(node.stride), padding=tuple(node.padding), dilation=(1, 1),
                                      groups=int(node.groups), metadata=meta))  # fmt: skip
        elif isinstance(node, n.Linear):
            weight = np.asarray(node.weight)
            put(node.name, nir.Linear(weight=weight) if node.bias is None
                else nir.Affine(weight=weight, bias=np.asarray(node.bias)))  # fmt: skip
            reads = feeds(node)
            if len(shapes[reads[0]]) > 1:
                # NIR's Affine takes a vector; the IR's Linear reads a map C-major: a Flatten says so.
                flat = f"{node.name}_flatten"
                put(flat, nir.Flatten(input_type={"input": np.asarray(shapes[reads[0]])}, start_dim=0, end_dim=-1,
                                      metadata={META: {"implicit": 1}}))  # fmt: skip
                edges += [(s, flat) for s in reads]
                edges.append((flat, node.name))
                # Keep the declared order: the Flatten before its Linear.
                nodes[node.name] = nodes.pop(node.name)
                continue
        elif isinstance(node, n.AvgPool2d):
            put(node.name, nir.AvgPool2d(kernel_size=np.asarray(node.kernel), stride=np.asarray(node.stride),
                                         padding=np.zeros(2, dtype=np.int64)))  # fmt: skip
        elif isinstance(node, n.Flatten):
            put(node.name, nir.Flatten(input_type={"input": np.asarray(shapes[node.sources[0]])}, start_dim=0,
                                       end_dim=-1))  # fmt: skip
        elif isinstance(node, n.Neuron):
            kind, params = nir_parameters(node, shapes[node.name], dt)
            cls = nir.IF if kind == "IF" else nir.LIF
            put(node.name, cls(**params, metadata={META: recorded_metadata(node)}))
        elif isinstance(node, n.Accumulator):
            if len(node.sources) != 1:
                raise NirExportRefusal(f"{where} sums {len(node.sources)} layers; a NIR Output reads one")
            meta = {META: {"readout": node.readout}}
            shape = np.asarray(shapes[node.name])
            if node.readout == "mean_membrane":
                tau = dt / (1.0 - node.tau)
                put(node.name, nir.LI(tau=np.full(shapes[node.name], tau), r=np.full(shapes[node.name], tau / dt),
                                      v_leak=np.zeros(shapes[node.name]), metadata=meta))  # fmt: skip
                edges += [(s, node.name) for s in feeds(node)]
                out = f"{node.name}_output"
                put(out, nir.Output(output_type={"output": shape}))
                edges.append((node.name, out))
                continue
            put(node.name, nir.Output(output_type={"output": shape}, metadata=meta))
        else:
            raise NirExportRefusal(
                f"{where} has no NIR form; export the artifact's float graph after the float passes (batch norm, "
                "input normalization and joins folded)"
            )
        edges += [(s, node.name) for s in feeds(node)]
    info: dict[str, Any] = {"format": META_FORMAT, "format_version": META_VERSION, "dt": float(dt),
                            "name": graph.name, "timesteps": int(graph.timesteps), "order": "\n".join(nodes)}  # fmt: skip
    if source:
        info["source"] = {k: v for k, v in source.items() if v is not None}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META: info}, type_check=True)
    except (ValueError, AssertionError) as err:  # a shape NIR's own type check rejects: a bug here, named
        raise InflorError(f"the NIR graph for {graph.name!r} fails nir's type check ({err})") from err


def export_nir(graph: Graph, path: str | Path, *, force: bool = False, source: dict[str, Any] | None = None,
               check_images: np.ndarray | None = None) -> NirExport:  # fmt: skip
    """Write ``graph`` to ``path`` as NIR, atomically; keep it only when it reads back as the same IR.

    Order: :func:`graph_to_nir` (refusals before any file exists); ``nir.write`` to a
    temporary file; ``nir.read`` of that file and :func:`~inflor_deploy.frontends.nir.import_nir`
    of it must give ``graph`` field for field (:func:`~inflor_deploy.ir.diff.first_difference`);
    with ``check_images``, the written graph evaluated as NIR defines it (numpy, the recorded
    reset and compare: :class:`~inflor_deploy.frontends.nir.reference.NirReference`) is
    compared with the float IR spike for spike; then the rename.

    Raises:
        NirExportRefusal: a node NIR cannot express.
        NirCheckFailed: ``check_images`` given and the evaluation disagrees beyond near-ties.
        InflorError: ``path`` exists without ``force``; the file does not read back as ``graph``.
    """
    from inflor_deploy.frontends.nir.importer import import_nir, load_nir
    from inflor_deploy.ir.diff import first_difference

    start = time.perf_counter()
    path = Path(path)
    if path.exists() and not force:
        raise InflorError(f"{path} exists; pass --force to replace it")
    if path.exists() and path.is_dir():
        raise InflorError(f"{path} is a directory; give the .nir file to write")
    nir = _nir()
    written = graph_to_nir(graph, source=source)
    unstated = {x.name: describe_unstated(x) for x in graph.of_type(n.Neuron)}
    unstated = {k: v for k, v in unstated.items() if v}
    check = None

    def write(tmp: Path) -> None:
        nonlocal check
        nir.write(tmp, written)
        back = import_nir(load_nir(tmp), timesteps=graph.timesteps)
        difference = first_difference(graph, back.graph)
        if difference is not None:
            raise InflorError(f"the written NIR file does not read back as the same float IR ({difference}); "
                              f"{path} was not written")
        if check_images is not None:
            from inflor_deploy.frontends.nir.reference import check_against_reference

            check = check_against_reference(graph, tmp, check_images)
            if not check.ok:
                raise NirCheckFailed(check)

    write_file_atomically(path, write, suffix=".nir")
    return NirExport(path=path, sha256=sha256(path), nodes={k: type(v).__name__ for k, v in written.nodes.items()},
                     unstated=unstated, check=check, seconds=time.perf_counter() - start)  # fmt: skip

