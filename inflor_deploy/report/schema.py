"""The versioned JSON schema of ``report.json`` and a minimal validator for the subset it uses.

The schema is JSON Schema (draft 2020-12 keywords) restricted to: ``type``
(one name or a list), ``properties``, ``required``,
``additionalProperties: false``, ``items``, ``enum``, ``const``,
``minimum``, ``maximum``, ``minItems`` and local ``$ref`` into ``$defs``.
:func:`validate` implements exactly that subset (jsonschema is not a
dependency), so any full JSON Schema validator accepts what it accepts.
``docs/report_schema.md`` documents every field.

Bump :data:`SCHEMA_VERSION` when a field is removed or changes meaning;
adding an optional field does not need a bump.
"""

from __future__ import annotations

from typing import Any

SCHEMA_NAME = "inflor-deploy-report"
#: 2: activity counts each sample's whole window (padding steps of the reset interval included);
#: the raster is rows x steps, aggregated for large layers; ``tags`` explains the source tags.
SCHEMA_VERSION = 2

TAGS = ["exact", "[P]", "[T]", "[2]", "[D]"]

_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_NNUM = {"type": "number", "minimum": 0}
_STR = {"type": "string"}


def _obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object with exactly these properties, all required except ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in optional],
        "additionalProperties": False,
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _array(items: dict[str, Any], min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": min_items}


_FIGURE = _obj({
    "name": _STR,
    "value": {"type": ["number", "null"]},
    "unit": _STR,
    "tier": {"type": "integer", "minimum": 1, "maximum": 4},
    "tag": {"enum": TAGS},
    "source": {"type": "string", "minLength": 1},
    "formula": _STR,
    "low": {"type": ["number", "null"]},
    "high": {"type": ["number", "null"]},
    "note": _STR,
})

_TIER = _obj({
    "tier": {"type": "integer", "minimum": 1, "maximum": 4},
    "title": _STR,
    "source": {"type": "string", "minLength": 1},
    "tag": {"enum": TAGS},
    "note": _STR,
    "constants": _array({"$ref": "#/$defs/figure"}),
    "figures": _array({"$ref": "#/$defs/figure"}, 1),
    "layers": _array({"type": "object"}),
})

_LAYER_ACTIVITY = _obj({
    "name": _STR,
    "kind": {"enum": ["neuron", "accumulator"]},
    "shape": _array(_INT, 1),
    "neurons": _INT,
    "spikes": _nullable(_INT),
    "spikes_per_step": {"type": ["array", "null"], "items": _INT},
    "rate_per_step": {"type": ["array", "null"], "items": {"type": "number", "minimum": 0, "maximum": 1}},
    "spikes_per_neuron_per_step": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "neuron_updates": _INT,
    "active_updates": _INT,
    "synops": _INT,
    "synops_nonzero": _INT,
    "synops_lava_formula": _NNUM,
    "first_layer_macs": _INT,
    "padding_spikes": _nullable(_INT),
    "readout": {"enum": ["mean_current", "mean_membrane", "spike_count", None]},
}, optional=("readout",))

_SYNAPSE_ACTIVITY = _obj({
    "name": _STR,
    "source": _STR,
    "target": _STR,
    "kind": {"enum": ["dense", "conv"]},
    "from_input": {"type": "boolean"},
    "identity_like": {"type": "boolean"},
    "events": _INT,
    "synops": _INT,
    "synops_per_step": _array(_INT),
    "synops_nonzero": _INT,
    "synops_lava_formula": _NNUM,
    "mean_fanout": _NNUM,
    "macs_per_sample": _INT,
    "weights": _INT,
    "weights_nonzero": _INT,
})

_FIRST_LAYER = _obj({
    "synapses": _array(_STR),
    "macs_per_sample": _INT,
    "macs_per_sample_x_T": _INT,
    "graded_values_per_step": _INT,
    "graded_nonzero_per_step": _NNUM,
    "graded_messages_per_sample": _INT,
    "graded_nonzero_messages_per_sample": _NNUM,
    "graded_synops_per_sample": _NNUM,
})

_RASTER = _obj({
    "layer": _STR,
    "neurons": _INT,
    "mode": {"enum": ["neurons", "channels", "groups"]},
    "group_size": {"type": "integer", "minimum": 1},
    "counts": _array(_array(_INT)),
})

_TOTALS = _obj({
    "samples": {"type": "integer", "minimum": 1},
    "timesteps": {"type": "integer", "minimum": 1},
    "spiking_neurons": _INT,
    "spikes": _INT,
    "spikes_per_sample": _NNUM,
    "spikes_per_neuron_per_step": {"type": "number", "minimum": 0, "maximum": 1},
    "steps_per_inference": {"type": "integer", "minimum": 1},
    "padding_steps": _INT,
    "padding_spikes_per_sample": _NNUM,
    "synops": _INT,
    "synops_per_sample": _NNUM,
    "synops_nonzero": _INT,
    "synops_nonzero_per_sample": _NNUM,
    "synops_lava_formula": _NNUM,
    "synops_lava_formula_per_sample": _NNUM,
    "neuron_updates": _INT,
    "neuron_updates_per_sample": _NNUM,
    "active_updates_per_sample": _NNUM,
    "ann_macs_per_sample": _INT,
})

_ASSUMPTION = _obj({"what": _STR, "value": _STR, "basis": _STR, "tag": {"enum": ["[P]", "[T]", "[2]", "[D]", "assumption"]}})

_VIOLATION = _obj({
    "kind": {"enum": ["neuron_memory", "chips"]},
    "layer": {"type": ["string", "null"]},
    "limit": _STR,
    "needed": _INT,
    "available": _INT,
    "message": _STR,
    "fix": _STR,
    "severity": {"enum": ["error", "warning"]},
})

_RESOURCES = _obj({
    "target": _STR,
    "enforced": {"type": "boolean"},
    "status": {"enum": ["ok", "warning", "error"]},
    "limits": _obj({k: {"type": "integer", "minimum": 1} for k in (
        "neurons_per_core", "memory_per_core_bytes", "cores_per_chip", "usable_cores_per_chip",
        "neurons_per_chip", "chips_per_board")}),
    "memory_model": _obj({
        "weight_bytes": {"type": "integer", "minimum": 1},
        "state_bytes_per_neuron": _INT,
        "routing_reserve_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "routing_reserve_bytes": _INT,
        "conv_weight_sharing": {"type": "boolean"},
        "assumptions": _array(_ASSUMPTION, 1),
    }),
    "total_cores": _INT,
    "chips": _INT,
    "layers": _array(_obj({
        "layer": _STR,
        "neurons": _INT,
        "cores": _nullable(_INT),
        "limited_by": {"enum": ["neurons", "memory", "whole layer", None]},
        "fanin_weights": _INT,
        "single_neuron_bytes": _INT,
        "synapse_bytes": _INT,
    })),
    "cores": _array(_obj({
        "index": _INT, "chip": _INT, "layer": _STR, "first_neuron": _INT, "neurons": _INT,
        "synapse_bytes": _INT, "state_bytes": _INT, "routing_bytes": _INT, "memory_bytes": _INT,
        "neurons_pct": {"type": "number", "minimum": 0, "maximum": 100},
        "memory_pct": {"type": "number", "minimum": 0, "maximum": 100},
    })),
    "violations": _array(_VIOLATION),
})

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://inflor-deploy/schemas/report-v{SCHEMA_VERSION}.json",
    "title": "inflor-deploy activity, energy and resource report",
    "$defs": {"figure": _FIGURE, "tier": _TIER},
    **_obj({
        "schema": {"const": SCHEMA_NAME},
        "schema_version": {"const": SCHEMA_VERSION},
        "created": _STR,
        "tags": _obj({tag: _STR for tag in TAGS}),
        "status": {"enum": ["ok", "warning", "error"]},
        "model": _obj({
            "name": _STR,
            "arch": {"type": ["string", "null"]},
            "timesteps": {"type": "integer", "minimum": 1},
            "artifact": {"type": ["string", "null"]},
            "checkpoint_sha256": {"type": ["string", "null"]},
        }),
        "target": _obj({"name": _STR, "kind": _STR, "file": {"type": ["string", "null"]}}),
        "run": _obj({
            "data": _STR,
            "samples": {"type": "integer", "minimum": 1},
            "simulator": _STR,
            "view": {"enum": ["aligned", "pipelined"]},
            "seconds": _NNUM,
        }),
        "schedule": {"type": ["object", "null"]},
        "activity": _obj({
            "conventions": {"type": "object"},
            "totals": _TOTALS,
            "first_layer": _FIRST_LAYER,
            "layers": _array(_LAYER_ACTIVITY, 1),
            "synapses": _array(_SYNAPSE_ACTIVITY, 1),
            "raster": _array(_RASTER),
        }),
        "energy": _obj({
            "per": _STR,
            "tiers": _array({"$ref": "#/$defs/tier"}, 4),
            "not_published": _array(_STR),
        }),
        "resources": _RESOURCES,
    }),
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def validate(instance: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Check ``instance`` against ``schema`` (default :data:`SCHEMA`); return every error as ``"path: problem"``.

    Raises:
        ValueError: the schema uses a keyword outside the supported subset.
    """
    root = SCHEMA if schema is None else schema
    errors: list[str] = []
    _check(instance, root, root, "$", errors)
    return errors


_KNOWN = {"$schema", "$id", "title", "$defs", "type", "properties", "required", "additionalProperties",
          "items", "enum", "const", "minimum", "maximum", "minItems", "minLength", "$ref", "description"}


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str, errors: list[str]) -> None:
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"only local #/$defs/ references are supported, got {ref!r}")
        _check(value, root["$defs"][ref.split("/")[-1]], root, path, errors)
        return
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, name) for name in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {type(value).__name__} {value!r:.60}")
            return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r:.60}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r:.60} is not one of {schema['enum']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: string shorter than {schema['minLength']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        if schema.get("additionalProperties", True) is False:
            for key in value:
                if key not in props:
                    errors.append(f"{path}: unexpected key {key!r}")
        for key, sub in props.items():
            if key in value:
                _check(value[key], sub, root, f"{path}.{key}", errors)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: {len(value)} items, at least {schema['minItems']} required")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]", errors)
