"""Tamper evidence for artifacts: file hashes, source hashes and the manifest's shape.

What ``inflor-deploy compile`` records in ``manifest.json`` (section ``integrity``)::

    "integrity": {
        "algorithm": "sha256",
        "files":   {"fixed_point.npz": "<hex>", "ir/00_import.npz": "<hex>", ...},
        "sources": [{"role": "checkpoint", "path": "/abs/model.pt", "sha256": "<hex>"},
                    {"role": "target",     "path": "/abs/hw_targets/loihi2-sim.toml", "sha256": "<hex>"}]
    }

* ``files``: every file the compile wrote into the artifact, by its path
  relative to the artifact (``manifest.json`` itself excepted). Files that
  later commands add (:data:`OUTPUTS`: ``verify.json``, ``report/``) are
  outputs, not inputs, and are never hashed.
* ``sources``: the inputs the artifact was built from, one ``{role, path,
  sha256}`` each. The list is open: a front end that reads more files (a
  user's model factory) adds an entry with its own role, and
  :func:`check_sources` checks it like the others.

A hash is evidence, not a signature: whoever edits a file can also edit the
manifest. The edits that matter are caught again further down the chain:
``fixed_point.npz`` is range-checked against the target on load
(:mod:`inflor_deploy.target_fit`), and ``verify`` recompiles the checkpoint
and compares the result bit for bit (level 0).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Any

from inflor_deploy.errors import InflorError

ALGORITHM = "sha256"
#: What later commands add to an artifact: outputs, never inputs, never hashed.
OUTPUTS = ("verify.json", "report")
_HEX = re.compile(r"[0-9a-f]{64}")


class TamperError(InflorError):
    """An artifact file or a source changed after compiling; the message names it and the fix."""


class ManifestError(InflorError):
    """``manifest.json`` is missing a key or has a value of the wrong JSON type."""


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_artifact_files(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``root`` except ``exclude`` and :data:`OUTPUTS`."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude or rel.split("/", 1)[0] in OUTPUTS:
            continue
        found[rel] = sha256(path)
    return found


def source_entry(role: str, path: str | Path) -> dict[str, str]:
    """One ``{role, path, sha256}`` entry of ``integrity.sources`` (the path made absolute)."""
    path = Path(path)
    return {"role": role, "path": str(path.resolve()), "sha256": sha256(path)}


def _recompile_hint(manifest: dict[str, Any], artifact: Path) -> str:
    source = manifest.get("source") or {}
    target = (manifest.get("target") or {}).get("name", "TARGET")
    model = source.get("model") or {}
    if model.get("route") == "python":
        return f"compile the module again with inflor_deploy.compile(model, ..., target={target!r}, output={str(artifact)!r})"
    weights = source.get("checkpoint") or "CHECKPOINT"
    if model.get("route") == "nir":
        read = model.get("nir_options") or {}
        flags = "".join(f" --{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in read.items() if v is not None and k != "name")  # fmt: skip
        return (f"inflor-deploy compile {model.get('file', 'MODEL.nir')} -T {model.get('timesteps')}{flags} "
                f"--target {target} -o {artifact} --force")
    if model.get("route") == "factory":
        args = "".join(f" --model-arg {k}={v!r}" for k, v in (model.get("args") or {}).items())
        shape = ",".join(str(s) for s in model.get("input_shape") or ())
        return (f"inflor-deploy compile {weights} --model {model.get('module')}:{model.get('factory')}{args} "
                f"--input-shape {shape} -T {model.get('timesteps')} --target {target} -o {artifact} --force")
    return f"inflor-deploy compile {weights} --target {target} -o {artifact} --force"


def check_artifact_files(root: Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`TamperError` naming every recorded file that is missing or differs.

    Args:
        root: The artifact directory.
        manifest: Its manifest, already shape-checked by :func:`validate_manifest`.
    """
    problems = []
    for rel, recorded in manifest["integrity"]["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        actual = sha256(path)
        if actual != recorded:
            problems.append(f"{rel} differs from what compile wrote (sha256 {actual[:12]}..., "
                            f"compile recorded {recorded[:12]}...)")
    if problems:
        raise TamperError(
            f"artifact {root} was changed after compiling: {'; '.join(problems)}. Its results cannot be "
            f"trusted; recompile it: {_recompile_hint(manifest, root)}"
        )


def check_sources(root: Path, manifest: dict[str, Any], roles: tuple[str, ...] | None = None) -> None:
    """Raise :class:`TamperError` when a source the artifact was built from is gone or was replaced.

    Args:
        root: The artifact directory (for the message).
        manifest: Its manifest.
        roles: Check only these roles (None: every source).
    """
    for entry in manifest["integrity"]["sources"]:
        if roles is not None and entry["role"] not in roles:
            continue
        path = Path(entry["path"])
        if not path.is_file():
            raise TamperError(
                f"the source {entry['role']} {path} that artifact {root} was compiled from is missing "
                f"(moved or deleted after compiling); restore it at that path, or recompile the artifact "
                f"from the file you have"
            )
        actual = sha256(path)
        if actual != entry["sha256"]:
            raise TamperError(
                f"the source {entry['role']} {path} was replaced after compiling artifact {root}: its sha256 "
                f"is now {actual[:12]}..., compile recorded {entry['sha256'][:12]}.... Restore the file "
                f"that was compiled, or recompile the artifact from the new one: {_recompile_hint(manifest, root)}"
            )


# --------------------------------------------------------------------------- manifest shape

_ANY = object()


class _Optional:
    def __init__(self, spec):
        self.spec = spec


_NUMBER = (int, float)
_INT_OR_NONE = (int, type(None))
#: The manifest's shape: a dict is an object with these keys, a list ``[spec]`` an array of
#: ``spec``, a type or tuple of types a JSON scalar, ``_Optional`` a key that may be absent.
MANIFEST_SPEC: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "created": str,
    "versions": dict,
    # checkpoint and sha256 are null for a module compiled in memory, config for a non-zoo model;
    # model (the fx front end's record of how to rebuild and run it) is absent from older artifacts.
    "source": {"checkpoint": (str, type(None)), "sha256": (str, type(None)), "config": (dict, type(None)),
               "metadata": dict, "model": _Optional(dict)},
    "target": {"name": str, "file": str, "sha256": str},
    "timesteps": int,
    "passes": [str],
    "complete": bool,
    "contracts": [dict],
    "probe": str,
    "schedule": (dict, type(None)),
    "compile_seconds": _NUMBER,
    "compile_options": {
        "target": str,
        "timesteps": _INT_OR_NONE,
        "probe_samples": _INT_OR_NONE,
        "stop_after": (str, type(None)),
        "quantization": {
            "input_grade_scale": (int, float, type(None)),
            "weight_fill": _NUMBER,
            "headroom": str,
            "overflow": str,
        },
        "input": {
            "range": [_NUMBER],
            "mean": (list, type(None)),
            "std": (list, type(None)),
            "encoding": str,
        },
    },
    "input": dict,
    "files": {
        "float_onnx": str,
        "ir_steps": [str],
        "fixed_point_ir": _Optional(str),
        "fixed_point_onnx": _Optional(str),
        "quantization_report": _Optional(str),
        "probe": _Optional(str),
    },
    "integrity": {
        "algorithm": str,
        "files": dict,
        "sources": [{"role": str, "path": str, "sha256": str}],
    },
}

_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def _json_type(value: Any) -> str:
    for tp in (bool, dict, list, str, int, float, type(None)):
        if isinstance(value, tp):
            return _JSON_NAMES[tp]
    return type(value).__name__


def _check(value: Any, spec: Any, key: str, where: str) -> None:
    def wrong(expected: str) -> ManifestError:
        return ManifestError(f"{where}: key '{key}' must be {expected}, got {_json_type(value)} ({value!r:.60}); "
                             "the manifest was edited or written by another tool: recompile the artifact")

    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise wrong("an object")
        for name, sub in spec.items():
            child = f"{key}.{name}" if key else name
            if name not in value:
                if isinstance(sub, _Optional):
                    continue
                raise ManifestError(f"{where}: missing key '{child}'; the manifest is incomplete or was edited: "
                                    "recompile the artifact")
            _check(value[name], sub.spec if isinstance(sub, _Optional) else sub, child, where)
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise wrong("an array")
        for i, item in enumerate(value):
            _check(item, spec[0], f"{key}[{i}]", where)
        return
    types = spec if isinstance(spec, tuple) else (spec,)
    # JSON has one number type: an int is a valid float, but true/false are not numbers.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise wrong(" or ".join(_JSON_NAMES.get(t, t.__name__) for t in types))


def _relative_inside(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts and "\\" not in rel


def validate_manifest(data: Any, where: str) -> None:
    """Check the manifest's keys and JSON types (:data:`MANIFEST_SPEC`), hashes and file paths.

    Raises:
        ManifestError: naming ``where`` (the file) and the key.
    """
    _check(data, MANIFEST_SPEC, "", where)
    integrity = data["integrity"]
    if integrity["algorithm"] != ALGORITHM:
        raise ManifestError(f"{where}: key 'integrity.algorithm' is {integrity['algorithm']!r}; this version checks "
                            f"{ALGORITHM!r}: recompile the artifact")
    hashed = integrity["files"]
    for rel, digest in hashed.items():
        if not _relative_inside(rel):
            raise ManifestError(f"{where}: key 'integrity.files' names {rel!r}, which is not a path inside the "
                                "artifact; the manifest was edited: recompile the artifact")
        if not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise ManifestError(f"{where}: key 'integrity.files.{rel}' must be a sha256 hex digest, got {digest!r:.60}")
    for i, entry in enumerate(integrity["sources"]):
        if not _HEX.fullmatch(entry["sha256"]):
            raise ManifestError(f"{where}: key 'integrity.sources[{i}].sha256' must be a sha256 hex digest, "
                                f"got {entry['sha256']!r:.60}")
    files = data["files"]
    used = [files["float_onnx"], *files["ir_steps"]]
    used += [files[k] for k in ("fixed_point_ir", "fixed_point_onnx", "quantization_report", "probe") if k in files]
    for rel in used:
        if rel not in hashed:
            raise ManifestError(f"{where}: file {rel!r} (key 'files') has no hash in 'integrity.files'; the manifest "
                                "was edited: recompile the artifact")
