"""Save and load IR graphs exactly: one ``.npz`` per graph, no pickles.

Layout: a JSON header under the key ``__graph__`` (name, timesteps,
schedule, and each node's type, scalar fields and the keys of its arrays)
plus one array per node array field, named ``<node index>/<field>``. A
field that holds a scalar on one node and an array on another (a neuron's
``vth``: one threshold, or one per channel) is stored as whichever it is.
Loading uses ``allow_pickle=False``, so a graph file can never run code.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, Schedule

FORMAT = "inflor-deploy-ir"
FORMAT_VERSION = 3
#: Versions :func:`load_graph` reads. Version 1 files predate the neuron fields of issue 10
#: (gain, compare, reset timing, v_reset, charge, per-channel vth, readouts), version 2 the
#: synapse fields of issue 12 (weight_exp, weight_bits, sparse); their defaults are exactly
#: the older versions' semantics.
READABLE_VERSIONS = (1, 2, 3)

#: Every node type a file may name (explicit: no lookup by arbitrary class name).
NODE_TYPES: dict[str, type[n.Node]] = {
    cls.__name__: cls
    for cls in (
        n.Input, n.Normalize, n.Conv2d, n.Linear, n.BatchNorm, n.AvgPool2d, n.Flatten, n.Add, n.Concat, n.Neuron,
        n.Accumulator,
        n.FixedPointSynapse, n.FixedPointNeuron, n.FixedPointAccumulator,
    )
}  # fmt: skip


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def graph_to_arrays(graph: Graph) -> dict[str, np.ndarray]:
    """The graph as a dict of arrays (header included), ready for ``np.savez``."""
    arrays: dict[str, np.ndarray] = {}
    header_nodes = []
    for index, node in enumerate(graph):
        fields, array_keys = {}, {}
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, np.ndarray):
                key = f"{index}/{f.name}"
                arrays[key] = value
                array_keys[f.name] = key
            else:
                fields[f.name] = _plain(value)
        header_nodes.append({"type": type(node).__name__, "fields": fields, "arrays": array_keys})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": graph.name,
        "timesteps": graph.timesteps,
        "schedule": None if graph.schedule is None else dataclasses.asdict(graph.schedule),
        "nodes": header_nodes,
    }
    arrays["__graph__"] = np.array(json.dumps(header))
    return arrays


def save_graph(graph: Graph, path: str | Path) -> Path:
    """Write `graph` to `path` (.npz) atomically."""
    arrays = graph_to_arrays(graph)
    return write_file_atomically(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")


def _tuple_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}


def load_graph(path: str | Path) -> Graph:
    """Read a graph written by :func:`save_graph`; raises IRError on a foreign or corrupt file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__graph__"]))
            arrays = {key: data[key] for key in data.files if key != "__graph__"}
    except FileNotFoundError as err:
        raise IRError(f"{path}: no such IR file") from err
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError) as err:
        # A truncated or corrupt zip fails in any of these ways, depending on where it was cut.
        raise IRError(f"{path}: not an inflor-deploy IR file, or a corrupt or truncated one "
                      f"({type(err).__name__}: {err}); recompile to rewrite it") from err
    if not isinstance(header, dict):
        raise IRError(f"{path}: the IR header is {type(header).__name__}, not an object; recompile to rewrite it")
    if header.get("format") != FORMAT or header.get("format_version") not in READABLE_VERSIONS:
        raise IRError(f"{path}: IR format {header.get('format')!r} v{header.get('format_version')!r}, expected {FORMAT!r} v{FORMAT_VERSION}")
    try:
        return _graph_from(header, arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        # A header whose keys or types were edited: name what is wrong instead of a traceback.
        what = f"missing key {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise IRError(f"{path}: malformed IR header ({what}); the file was edited or written by another "
                      "tool: recompile to rewrite it") from err


def _graph_from(header: dict, arrays: dict[str, np.ndarray]) -> Graph:
    nodes = []
    for entry in header["nodes"]:
        cls = NODE_TYPES.get(entry["type"])
        if cls is None:
            raise ValueError(f"unknown node type {entry['type']!r}")
        kwargs = dict(entry["fields"])
        for name in _tuple_fields(cls):
            if name in kwargs and isinstance(kwargs[name], list):
                kwargs[name] = tuple(kwargs[name])
        for name, key in entry["arrays"].items():
            kwargs[name] = arrays[key]
        nodes.append(cls(**kwargs))
    schedule = header["schedule"]
    return Graph(
        nodes=tuple(nodes),
        timesteps=int(header["timesteps"]),
        name=header["name"],
        schedule=None if schedule is None else Schedule(**schedule),
    )
