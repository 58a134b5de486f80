"""Level 0 of the parity ladder: the artifact is exactly what compiling its model gives.

Compiling is deterministic: the same checkpoint, target file and options
give byte-identical ``fixed_point.npz``, IR steps, ONNX files and
quantization report (``np.savez`` stamps every member 1980-01-01, dicts keep
insertion order, JSON floats print by ``repr``, protobuf serializes fields in
order). Only ``manifest.json`` differs (creation time, compile seconds).

:func:`compare_with_rebuild` recompiles the artifact's model through the
route it was compiled by (``source.model.route``: an inflor-deploy
checkpoint, or a state_dict and the ``MODULE:FACTORY`` that builds the model,
with the factory's arguments and the input shape, T, time convention and
adapters the front end recorded; a module compiled in memory needs the
module itself), with the options its manifest records (``compile_options``:
quantization, declared input, probe size, stop_after; given probe images from
``probe.npy``), for the target file
it recorded, into a temporary directory (the artifact is never touched),
and compares every file compile wrote byte for byte, the fixed-point IR
first. When an IR file differs it names the first tensor or
attribute that differs (node, field, index, expected, actual) with
:func:`inflor_deploy.ir.diff.first_difference`; when an ONNX file differs,
the first initializer that differs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.errors import InflorError


class NotRebuildable(InflorError):
    """The manifest does not hold what a rebuild needs (a module compiled in memory, without the module)."""


@dataclass(frozen=True)
class RebuildComparison:
    """The outcome of level 0.

    Attributes:
        ok: Every file equal to the rebuilt one.
        files_compared: Relative paths compared, in order.
        first_difference: The first difference: ``file``, and for IR files
            ``node, field, index, expected, actual``; None when ok.
        seconds: Time of the rebuild and comparison.
    """

    ok: bool
    files_compared: list[str] = field(default_factory=list)
    first_difference: dict[str, Any] | None = None
    seconds: float = 0.0


def rebuild(artifact, *, trust_pickle: bool = False, model=None):
    """Compile the artifact's model again with its recorded route and options (a CompileResult).

    Args:
        artifact: The artifact.
        trust_pickle: Passed to the checkpoint loader.
        model: The module compiled in memory (``python`` route; required
            there). The checkpoint and factory routes always rebuild from
            their recorded, hash-checked files.

    Raises:
        NotRebuildable: a module compiled in memory, and no ``model``.
    """
    from inflor_deploy.compiler import compile_checkpoint, compile_factory, compile_model
    from inflor_deploy.frontends.source import in_memory_note
    from inflor_deploy.frontends.user_model import FactorySpec
    from inflor_deploy.passes.base import QuantizationOptions

    manifest = artifact.manifest
    options = manifest["compile_options"]
    try:
        quantization = QuantizationOptions(**options["quantization"])
    except TypeError as err:
        raise InflorError(f"{artifact.path}: manifest compile_options.quantization is not understood ({err}); "
                          "recompile the artifact") from err
    declared = options["input"]
    common = dict(
        quantization=quantization, stop_after=options["stop_after"], probe_samples=options["probe_samples"],
        input_range=declared["range"], input_mean=declared["mean"], input_std=declared["std"],
        input_encoding=declared["encoding"],
    )  # fmt: skip
    probe_file = manifest["files"].get("probe")
    if probe_file is not None:  # given probe images shaped the scales (the probe guard): the same ones again
        common["probe_images"] = np.load(artifact.path / probe_file, allow_pickle=False)
    source = manifest["source"]
    info = source.get("model") or {"route": "checkpoint"}
    route = info.get("route", "checkpoint")
    try:
        if route == "nir":
            from inflor_deploy.compiler import compile_nir

            graph = info.get("file") or model
            if graph is None:
                raise NotRebuildable("the artifact was compiled from a NIR graph in memory; pass the graph "
                                     "(inflor_deploy.verify.run_ladder(artifact, data, model=graph)) to rebuild it")
            read = dict(info["nir_options"])
            return compile_nir(graph, timesteps=int(info["timesteps"]), target=artifact.target, **read, **common)
        if route == "checkpoint":
            return compile_checkpoint(source["checkpoint"], artifact.target, trust_pickle=trust_pickle,
                                      timesteps=options["timesteps"], **common)  # fmt: skip
        traced_as = dict(input_shape=tuple(info["input_shape"]), timesteps=int(info["timesteps"]),
                         time_mode=info["time_mode"], adapters=info["adapters"])  # fmt: skip
        if route == "factory":
            spec = FactorySpec(module=info["module"], factory=info["factory"], args=dict(info.get("args") or {}))
            return compile_factory(source["checkpoint"], spec, target=artifact.target, **traced_as, **common)
    except KeyError as err:
        raise InflorError(f"{artifact.path}: manifest source.model lacks {err}, which a rebuild needs; recompile "
                          "the artifact") from err
    if model is None:
        raise NotRebuildable(in_memory_note(info))
    # Named as compiled: the graph's name is in every IR file.
    return compile_model(model, target=artifact.target, name=artifact.graph_at("import").name, **traced_as, **common)


def _order(files: list[str], artifact) -> list[str]:
    """The fixed-point IR first (what runs), then the ONNX files, then the rest."""
    manifest_files = artifact.manifest["files"]
    first = [manifest_files.get(k) for k in ("fixed_point_ir", "fixed_point_onnx", "float_onnx", "quantization_report")]
    first = [f for f in first if f in files]
    return first + [f for f in files if f not in first]


def _onnx_difference(expected: Path, actual: Path) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    try:
        a, b = onnx.load(expected), onnx.load(actual)
    except Exception as err:  # noqa: BLE001 - any parse failure is a difference in itself
        return {"reason": f"the artifact's file is not a readable ONNX model ({type(err).__name__})"}
    theirs = {t.name: t for t in b.graph.initializer}
    for init in a.graph.initializer:
        other = theirs.get(init.name)
        if other is None:
            return {"initializer": init.name, "reason": "missing from the artifact's file"}
        x, y = numpy_helper.to_array(init), numpy_helper.to_array(other)
        if x.dtype != y.dtype or x.shape != y.shape:
            return {"initializer": init.name, "expected": f"{x.dtype}{list(x.shape)}", "actual": f"{y.dtype}{list(y.shape)}"}
        unequal = x != y
        if unequal.any():
            index = tuple(int(i) for i in np.argwhere(unequal)[0])
            return {"initializer": init.name, "index": list(index), "expected": x[index].item(), "actual": y[index].item()}
    return {"reason": "the graph's nodes, attributes or metadata differ (every initializer is equal)"}


def _ir_difference(expected: Path, actual: Path) -> dict[str, Any]:
    from inflor_deploy.ir.diff import first_difference
    from inflor_deploy.ir.serialize import load_graph

    try:
        theirs = load_graph(actual)
    except InflorError as err:
        return {"reason": str(err)}
    found = first_difference(load_graph(expected), theirs)
    return found or {"reason": "the same graph, serialized differently (bytes differ)"}


def compare_with_rebuild(artifact, *, trust_pickle: bool = False, model=None) -> RebuildComparison:
    """Rebuild the artifact in a temporary directory and compare every file it wrote (module docstring).

    ``model``: see :func:`rebuild`.
    """
    from inflor_deploy.artifact import write_artifact
    from inflor_deploy.integrity import hash_artifact_files

    start = time.perf_counter()
    result = rebuild(artifact, trust_pickle=trust_pickle, model=model)
    recorded = list(artifact.manifest["integrity"]["files"])
    with tempfile.TemporaryDirectory(prefix="inflor-rebuild-") as tmp:
        fresh = write_artifact(result, Path(tmp) / "rebuilt")
        rebuilt = hash_artifact_files(fresh)
        compared = []
        missing = [rel for rel in rebuilt if rel not in recorded]
        if missing:
            return RebuildComparison(False, compared, {"file": missing[0], "reason": "compile writes it; the artifact "
                                                       "has no such file"}, time.perf_counter() - start)
        for rel in _order(recorded, artifact):
            compared.append(rel)
            if rel not in rebuilt:
                return RebuildComparison(False, compared, {"file": rel, "reason": "the artifact has it; compiling the "
                                                           "model does not write it"}, time.perf_counter() - start)
            ours, theirs = fresh / rel, artifact.path / rel
            if ours.read_bytes() == theirs.read_bytes():
                continue
            if rel.endswith(".npz"):
                detail = _ir_difference(ours, theirs)
            elif rel.endswith(".onnx"):
                detail = _onnx_difference(ours, theirs)
            else:
                detail = {"reason": "contents differ"}
            return RebuildComparison(False, compared, {"file": rel, **detail}, time.perf_counter() - start)
    return RebuildComparison(True, compared, None, time.perf_counter() - start)
