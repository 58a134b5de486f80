"""The compile artifact: a self-describing directory, written atomically.

Layout of ``OUT/``::

    manifest.json              versions, source (checkpoint or weights, the model's code and
                               conventions), target, declared input (range, encoding,
                               normalization, grade scale), compile options, pass list, every
                               contract's result, schedule, file index, and the sha256 of every
                               file below and of every source (``integrity``)
    model.float.onnx           per-timestep float ONNX export (neurons = inflor.Neuron nodes)
    model.fixed_point.onnx     per-timestep integer ONNX (inflor.LoihiNeuron nodes); onnxruntime
                               runs it bit-exactly like the integer reference
    ir/NN_<step>.npz           the IR after the import and after each pass
    fixed_point.npz            the final scheduled fixed-point IR (integer parameters)
    quantization_report.json   per-layer scales, rounding errors, headroom, overflow flags
    probe.npy                  the probe inputs, when the caller gave them (they shape the scales:
                               the probe guard); a seeded probe is remade by a rebuild
    verify.json                written by `inflor-deploy verify` (the parity ladder)
    report/                    written by `inflor-deploy report`

Everything is written into a temporary sibling directory that is renamed
into place only when complete, so a failed or interrupted compile leaves no
partial artifact, and an existing ``OUT`` is replaced only with ``force``
(in one atomic exchange). The output is checked before the compile
(:func:`inflor_deploy.outputs.check_output_path`) and locked while it is
written, so of two compiles to the same ``OUT`` without ``--force`` one
fails at once, naming the other (:mod:`inflor_deploy.outputs`).

Reading one back (:func:`load_artifact`) checks, before anything else, the
manifest's keys and types and the sha256 of every file compile wrote
(:mod:`inflor_deploy.integrity`); ``verify.json`` and ``report/`` are outputs
and are not hashed. :attr:`Artifact.fixed_graph` also checks every field of
``fixed_point.npz`` against the target's bit widths
(:mod:`inflor_deploy.target_fit`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from inflor_deploy.atomic import apply_umask, write_file_atomically
from inflor_deploy.errors import InflorError
from inflor_deploy.integrity import (
    ManifestError, check_artifact_files, check_sources, hash_artifact_files, sha256, source_entry, validate_manifest,
)
from inflor_deploy.outputs import (
    OutputError,
    check_output_path,
    output_error,
    output_lock,
    rename_into_place,
    sibling_name,
)
from inflor_deploy.ir import Graph
from inflor_deploy.ir.serialize import load_graph, save_graph

FORMAT = "inflor-deploy-artifact"
#: 2: the manifest records compile options and the sha256 of every file and source (``integrity``).
#: 3: it records the declared input (``input``) and the options that declared it
#: (``compile_options.input``); the IR's Input carries its range and encoding.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
FIXED_POINT_IR = "fixed_point.npz"
FLOAT_ONNX = "model.float.onnx"
FIXED_ONNX = "model.fixed_point.onnx"
QUANT_REPORT = "quantization_report.json"
PROBE = "probe.npy"

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


def prepare_output(out: Path, force: bool, need_bytes: int = 0) -> None:
    """Refuse an output that exists (unless forced) or cannot be written (checked before any work is done)."""
    check_output_path(out, need_bytes=need_bytes, what="output")  # first: a too-long name cannot even be tested
    if out.exists() and not force:
        raise ArtifactError(f"{out} already exists; choose another -o or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a directory")


@contextlib.contextmanager
def reserve_output(out: Path, force: bool, need_bytes: int = 0) -> Iterator[None]:
    """Check ``out`` and hold its lock while the block computes and writes it.

    Without ``force`` a second writer of the same ``out`` fails at once,
    naming this one; with ``force`` the lock is taken only for the final
    swap (:func:`write_atomically` waits for it), so the last one wins.
    """
    prepare_output(out, force, need_bytes)
    if force:
        yield
        return
    with output_lock(out, wait=False):
        prepare_output(out, force)  # again under the lock: a writer may have finished meanwhile
        yield


def write_atomically(out: Path, force: bool, fill: Callable[[Path], None]) -> Path:
    """Let `fill` write a fresh directory, then move it to `out` in one rename (an atomic swap with `force`)."""
    prepare_output(out, force)
    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # removed again if the write fails
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(out, wait=force):
            staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=sibling_name(out, "partial-")))
            try:
                fill(staging)
                apply_umask(staging)
                retired = rename_into_place(staging, out, replace=force)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if retired is not None:
                shutil.rmtree(retired, ignore_errors=True)
    except BaseException as err:
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        if isinstance(err, FileExistsError):
            raise ArtifactError(
                f"{out} appeared while this one was being written (another process wrote it); "
                "choose another -o or pass --force to replace it"
            ) from err
        cause = err.__cause__ if isinstance(err, OutputError) else err
        if isinstance(cause, OSError):  # name the output, not a file inside its staging copy
            raise output_error(cause, out) from err
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
        if result.probe_given:
            np.save(tmp / PROBE, np.ascontiguousarray(result.probe), allow_pickle=False)
            files["probe"] = PROBE
        write_json(tmp / MANIFEST, manifest(result, files, hash_artifact_files(tmp, exclude=(MANIFEST,))))

    return write_atomically(out, force, fill)


def manifest(result, files: dict[str, Any], hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest of a compile; ``hashes`` maps every written file (relative path) to its sha256."""
    from inflor_deploy.frontends.input_spec import input_spec_of

    checkpoint = result.source.checkpoint  # None for a module compiled in memory
    schedule = result.graph.schedule
    fixed = result.fixed_graph
    sources = [] if checkpoint is None else [source_entry("checkpoint", checkpoint)]
    sources.append(source_entry("target", Path(result.target.path)))
    sources += [source_entry(role, path) for role, path in result.sources]
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
        # The declared input (range, pixel levels, normalization, encoding) and what the chip receives.
        "input": input_spec_of(result.steps[0][1], None if fixed is None else fixed.input.grade_scale),
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
        "compile_options": result.options,
        "files": files,
        "integrity": {"algorithm": "sha256", "files": hashes, "sources": sources},
    }


@dataclass(frozen=True)
class Artifact:
    """A compiled artifact read back from disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def target(self):
        """The target compiled for: the recorded target file, or the shipped target of that name."""
        from inflor_deploy.targets import load_target

        info = self.manifest["target"]
        if Path(info["file"]).is_file():
            return load_target(info["file"])
        return load_target(info["name"])

    @property
    def fixed_graph(self) -> Graph:
        """The scheduled fixed-point IR, every field checked against the target's bit widths."""
        from inflor_deploy.target_fit import check_fits_target

        rel = self.manifest["files"].get("fixed_point_ir")
        if rel is None:
            raise ArtifactError(
                f"{self.path}: the compile stopped after {self.manifest['passes'][-1] if self.manifest['passes'] else 'import'}; "
                "it has no fixed-point IR. Compile without --stop-after."
            )
        graph = load_graph(self.path / rel)
        check_fits_target(graph, self.target, where=str(self.path / rel))
        return graph

    def check_sources(self, roles: tuple[str, ...] | None = None) -> None:
        """Raise TamperError if a source (checkpoint, target, ...) is gone or changed since compiling."""
        check_sources(self.path, self.manifest, roles)

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
        """Add or replace one JSON file in the artifact (atomic rename; the last of concurrent writers wins).

        Raises:
            ArtifactError: The artifact was replaced (a ``compile --force``)
                since it was loaded: what was computed belongs to the old one.
            OutputError: The file cannot be written (read-only, full disk, ...).
        """
        with output_lock(self.path, wait=True):
            try:
                on_disk = json.loads((self.path / MANIFEST).read_text())
            except (OSError, ValueError):
                on_disk = None
            if on_disk != self.manifest:
                raise ArtifactError(
                    f"{self.path} was replaced while this command ran (another compile --force); "
                    f"{name} was not written: run the command again on the new artifact"
                )
            return write_file_atomically(self.path / name, lambda tmp: write_json(tmp, data))


def load_artifact(path: str | Path, *, check_files: bool = True) -> Artifact:
    """Open an artifact directory written by ``inflor-deploy compile``.

    Args:
        path: The artifact directory.
        check_files: Check the sha256 of every file compile wrote (the default;
            :class:`~inflor_deploy.integrity.TamperError` names what changed).

    Raises:
        ArtifactError: not an artifact, or another format version.
        ManifestError: the manifest lacks a key or has a value of the wrong JSON type.
        TamperError: a file differs from what compile wrote.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact directory (run `inflor-deploy compile MODEL -o {path}`)")
    where = str(path / MANIFEST)
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: no {MANIFEST}; not an inflor-deploy artifact") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{where} is not valid JSON ({err}); recompile the artifact") from err
    except OSError as err:
        raise ArtifactError(f"{where}: cannot read it ({err.strerror})") from err
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: must hold a JSON object, got {type(data).__name__}; recompile the artifact")
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {data.get('format')!r} v{data.get('format_version')!r}; this inflor-deploy reads "
            f"{FORMAT!r} v{FORMAT_VERSION}. Recompile it with `inflor-deploy compile CHECKPOINT -o {path} --force`"
        )
    validate_manifest(data, where)
    if check_files:
        check_artifact_files(path, data)
    return Artifact(path=path, manifest=data)
