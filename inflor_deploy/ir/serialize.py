"""Save and load IR graphs exactly: one ``.npz`` per graph, no pickles.

Layout: a JSON header under the key ``__graph__`` (name, timesteps,
schedule, and each node's type, scalar fields and the keys of its arrays)
plus one array per node array field, named ``<node index>/<field>``.
Loading uses ``allow_pickle=False``, so a graph file can never run code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, IRError, Schedule

FORMAT = "inflor-deploy-ir"
FORMAT_VERSION = 1

#: Every node type a file may name (explicit: no lookup by arbitrary class name).
NODE_TYPES: dict[str, type[n.Node]] = {
    cls.__name__: cls
    for cls in (
        n.Input, n.Conv2d, n.Linear, n.BatchNorm, n.AvgPool2d, n.Flatten, n.Add, n.Concat, n.Neuron, n.Accumulator,
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
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as err:
        raise IRError(f"{path}: not an inflor-deploy IR file ({err})") from err
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise IRError(f"{path}: IR format {header.get('format')!r} v{header.get('format_version')!r}, expected {FORMAT!r} v{FORMAT_VERSION}")
    nodes = []
    for entry in header["nodes"]:
        cls = NODE_TYPES.get(entry["type"])
        if cls is None:
            raise IRError(f"{path}: unknown node type {entry['type']!r}")
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
