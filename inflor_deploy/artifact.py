"""The compile artifact: a self-describing directory, written atomically.

Layout of ``OUT/``::

    manifest.json              versions, source (checkpoint or weights sha256, the model's code
                               and conventions), target, pass list,
                               every contract's result, schedule, file index
    model.float.onnx           per-timestep float ONNX export (neurons = inflor.Neuron nodes)
    model.fixed_point.onnx     per-timestep integer ONNX (inflor.LoihiNeuron nodes); onnxruntime
                               runs it bit-exactly like the integer reference
    ir/NN_<step>.npz           the IR after the import and after each pass
    fixed_point.npz            the final scheduled fixed-point IR (integer parameters)
    quantization_report.json   per-layer scales, rounding errors, headroom, overflow flags
    verify.json                written by `inflor-deploy verify` (the parity ladder)

Everything is written into a temporary sibling directory that is renamed
into place only when complete, so a failed compile leaves no partial
artifact, and an existing ``OUT`` is replaced only with ``force``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from inflor_deploy.atomic import apply_umask, write_file_atomically
from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.ir.serialize import load_graph, save_graph

FORMAT = "inflor-deploy-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FIXED_POINT_IR = "fixed_point.npz"
FLOAT_ONNX = "model.float.onnx"
FIXED_ONNX = "model.fixed_point.onnx"
QUANT_REPORT = "quantization_report.json"

_VERSIONED = ("inflor-deploy", "torch", "numpy", "onnx", "onnxruntime", "lava-nc", "lava-dl")


class ArtifactError(InflorError):
    """An artifact directory is missing, incomplete or foreign."""


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_default(value: Any):
    """JSON for numpy scalars/arrays and infinities (as strings)."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=json_default, allow_nan=True) + "\n")


def prepare_output(out: Path, force: bool) -> None:
    """Refuse an existing output unless forced (checked before any work is done)."""
    if out.exists() and not force:
        raise ArtifactError(f"{out} already exists; choose another -o or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a directory")


def write_atomically(out: Path, force: bool, fill: Callable[[Path], None]) -> Path:
    """Let `fill` write a fresh directory, then move it to `out` in one rename."""
    prepare_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        fill(staging)
        apply_umask(staging)
        if out.exists():
            retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            retired.rmdir()
            os.replace(out, retired)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_artifact(result, out: str | Path, force: bool = False) -> Path:
    """Write a :class:`~inflor_deploy.compiler.CompileResult` as an artifact directory."""
    from inflor_deploy.backends.onnx.fixed_model import save_fixed_onnx
    from inflor_deploy.backends.onnx.float_model import save_onnx

    out = Path(out)

    def fill(tmp: Path) -> None:
        (tmp / "ir").mkdir()
        ir_files = []
        for index, (name, graph) in enumerate(result.steps):
            rel = f"ir/{index:02d}_{name}.npz"
            save_graph(graph, tmp / rel)
            ir_files.append(rel)
        save_onnx(result.onnx_model, tmp / FLOAT_ONNX)
        files = {"float_onnx": FLOAT_ONNX, "ir_steps": ir_files}
        fixed = result.fixed_graph
        if fixed is not None:
            save_graph(fixed, tmp / FIXED_POINT_IR)
            save_fixed_onnx(fixed, tmp / FIXED_ONNX)
            files["fixed_point_ir"] = FIXED_POINT_IR
            files["fixed_point_onnx"] = FIXED_ONNX
        if result.quantization_report:
            write_json(tmp / QUANT_REPORT, result.quantization_report)
            files["quantization_report"] = QUANT_REPORT
        write_json(tmp / MANIFEST, manifest(result, files))

    return write_atomically(out, force, fill)


def manifest(result, files: dict[str, Any]) -> dict[str, Any]:
    schedule = result.graph.schedule
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        # checkpoint, sha256, config, metadata, and model: how verify rebuilds and runs it (frontends/source.py).
        "source": result.source.manifest(result.conventions),
        "target": {
            "name": result.target.name,
            "file": str(result.target.path),
            "sha256": sha256(Path(result.target.path)),
        },
        "timesteps": result.graph.timesteps,
        "passes": [name for name, _ in result.steps[1:]],
        "complete": result.fixed_graph is not None,
        "contracts": [c.to_dict() for c in result.contracts],
        "probe": result.probe_source,
        "schedule": None if schedule is None else {
            "reset_interval": schedule.reset_interval,
            "latency": schedule.latency,
            "depth": schedule.depth,
            "reset_offset": schedule.reset_offset,
        },
        "compile_seconds": round(result.seconds, 3),
        "files": files,
    }


@dataclass(frozen=True)
class Artifact:
    """A compiled artifact read back from disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def fixed_graph(self) -> Graph:
        rel = self.manifest["files"].get("fixed_point_ir")
        if rel is None:
            raise ArtifactError(
                f"{self.path}: the compile stopped after {self.manifest['passes'][-1] if self.manifest['passes'] else 'import'}; "
                "it has no fixed-point IR. Compile without --stop-after."
            )
        return load_graph(self.path / rel)

    @property
    def float_graph(self) -> Graph:
        """The last float IR (the input of QuantizeFixedPoint)."""
        steps = self.manifest["files"]["ir_steps"]
        for rel in reversed(steps):
            graph = load_graph(self.path / rel)
            if not graph.is_fixed_point:
                return graph
        raise ArtifactError(f"{self.path}: no float IR step found")

    def graph_at(self, step: str) -> Graph:
        for rel in self.manifest["files"]["ir_steps"]:
            if Path(rel).stem.split("_", 1)[1] == step:
                return load_graph(self.path / rel)
        raise ArtifactError(f"{self.path}: no IR saved after {step!r}")

    def write_json(self, name: str, data: Any) -> Path:
        """Add or replace one JSON file in the artifact (atomic rename)."""
        return write_file_atomically(self.path / name, lambda tmp: write_json(tmp, data))


def load_artifact(path: str | Path) -> Artifact:
    """Open an artifact directory written by ``inflor-deploy compile``."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact directory (run `inflor-deploy compile MODEL -o {path}`)")
    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: no {MANIFEST}; not an inflor-deploy artifact") from err
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}/{MANIFEST} is not valid JSON: {err}") from err
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {data.get('format')!r} v{data.get('format_version')!r}; expected {FORMAT!r} v{FORMAT_VERSION}")
    return Artifact(path=path, manifest=data)
