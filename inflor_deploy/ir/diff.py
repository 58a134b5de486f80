"""The first difference between two IR graphs, field by field, bit for bit.

Two graphs are equal when they have the same name, timesteps and schedule,
the same nodes in the same order (type and name), and every field of every
node is equal: arrays by dtype, shape and value (``np.array_equal``, no
tolerance; floats compared by value, so -0.0 == 0.0 and NaN never equals),
scalars and tuples by ``==``. :func:`first_difference` names the first field
that is not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from inflor_deploy.ir.graph import Graph


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array_difference(expected: np.ndarray, actual: Any) -> dict[str, Any] | None:
    if not isinstance(actual, np.ndarray):
        return {"index": None, "expected": f"array {expected.dtype}{list(expected.shape)}", "actual": repr(actual)}
    if expected.dtype != actual.dtype:
        return {"index": None, "expected": f"dtype {expected.dtype}", "actual": f"dtype {actual.dtype}"}
    if expected.shape != actual.shape:
        return {"index": None, "expected": f"shape {list(expected.shape)}", "actual": f"shape {list(actual.shape)}"}
    unequal = expected != actual
    if not unequal.any():
        return None
    index = tuple(int(i) for i in np.argwhere(unequal)[0])
    return {"index": list(index), "expected": _plain(expected[index]), "actual": _plain(actual[index]),
            "count": int(unequal.sum())}


def first_difference(expected: Graph, actual: Graph) -> dict[str, Any] | None:
    """Where ``actual`` first differs from ``expected``, or None when they are identical.

    Returns:
        ``{"node", "field", "index", "expected", "actual"}`` (``index`` is the
        array index, or None for a scalar field; ``count`` is the number of
        unequal elements of an array field). Graph-level fields name the node
        ``"(graph)"``.
    """
    for name in ("name", "timesteps", "schedule"):
        a, b = getattr(expected, name), getattr(actual, name)
        if a != b:
            return {"node": "(graph)", "field": name, "index": None, "expected": a, "actual": b}
    if len(expected.nodes) != len(actual.nodes):
        return {"node": "(graph)", "field": "nodes", "index": None,
                "expected": f"{len(expected.nodes)} nodes", "actual": f"{len(actual.nodes)} nodes"}  # fmt: skip
    for position, (a, b) in enumerate(zip(expected.nodes, actual.nodes)):
        if type(a) is not type(b) or a.name != b.name:
            return {"node": a.name, "field": "(node)", "index": position,
                    "expected": f"{type(a).__name__} {a.name!r}", "actual": f"{type(b).__name__} {b.name!r}"}  # fmt: skip
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, np.ndarray):
                d = _array_difference(x, y)
                if d is not None:
                    return {"node": a.name, "field": f.name, **d}
            elif isinstance(y, np.ndarray) or type(x) is not type(y) or x != y:
                return {"node": a.name, "field": f.name, "index": None, "expected": _plain(x), "actual": _plain(y)}
    return None
