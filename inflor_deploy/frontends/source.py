"""Where a compiled model came from, as the manifest records it, and how ``verify`` rebuilds it.

Three routes into the compiler share one path (:func:`inflor_deploy.compiler.compile_model`):

* ``checkpoint``: an inflor-deploy checkpoint (a zoo architecture + weights);
* ``factory``: ``WEIGHTS.pt --model MODULE:FACTORY``: the user's code builds
  the model, a plain state_dict fills it;
* ``python``: a module handed to ``inflor_deploy.compile`` in memory.

The manifest's ``source`` section keeps its keys (``checkpoint``,
``sha256``, ``config``, ``metadata``) and adds ``model``: the route, the
model's class and source file (with its sha256), the factory and its
arguments, and the time/I/O conventions the front end used, so that level 1
of ``verify`` rebuilds and runs the same module the same way. If the source
file changed since the compile, the rebuild says so.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.user_model import FactorySpec, model_from_factory, source_file
from inflor_deploy.integrity import sha256

Route = Literal["checkpoint", "factory", "python"]


def _class_file(model: nn.Module) -> Path | None:
    try:
        file = inspect.getsourcefile(type(model))
    except TypeError:
        return None
    return Path(file).resolve() if file else None


@dataclass(frozen=True)
class ModelSource:
    """Provenance of a compiled model.

    Attributes:
        route: ``checkpoint``, ``factory`` or ``python`` (module docstring).
        label: What the CLI prints for it (a file name or a class name).
        checkpoint: The checkpoint or weights file, if any.
        config: The zoo ``ModelConfig`` (checkpoint route), as a dict.
        metadata: Facts saved with a checkpoint (dataset, accuracy, ...).
        factory: How to rebuild the model (factory route).
        model_class: ``module.QualifiedName`` of the model's class.
        model_file: The file defining the factory (factory route) or the model's class.
    """

    route: Route
    label: str
    checkpoint: Path | None = None
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    factory: FactorySpec | None = None
    model_class: str = ""
    model_file: Path | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "ModelSource":
        """An inflor-deploy :class:`~inflor_deploy.checkpoint.Checkpoint`."""
        model = checkpoint.model
        return cls(
            route="checkpoint", label=checkpoint.path.name, checkpoint=checkpoint.path,
            config=checkpoint.config.to_dict(), metadata=dict(checkpoint.metadata),
            model_class=f"{type(model).__module__}.{type(model).__qualname__}", model_file=_class_file(model),
        )  # fmt: skip

    @classmethod
    def from_factory(cls, spec: FactorySpec, weights: str | Path, model: nn.Module) -> "ModelSource":
        """Weights built into the model that ``spec`` makes."""
        weights = Path(weights)
        return cls(
            route="factory", label=weights.name, checkpoint=weights, factory=spec,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}", model_file=source_file(spec),
        )  # fmt: skip

    @classmethod
    def from_module(cls, model: nn.Module) -> "ModelSource":
        """A module compiled in memory (``inflor_deploy.compile``)."""
        return cls(
            route="python", label=type(model).__name__,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}", model_file=_class_file(model),
        )  # fmt: skip

    def manifest(self, conventions: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``source`` section (``conventions``: :meth:`TracedModel.conventions`)."""
        model: dict[str, Any] = {"route": self.route, "class": self.model_class, **conventions}
        if self.factory is not None:
            model.update(self.factory.to_dict())
        if self.model_file is not None and self.model_file.is_file():
            model["file"] = str(self.model_file)
            model["file_sha256"] = sha256(self.model_file)
        return {
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint.resolve()),
            "sha256": None if self.checkpoint is None else sha256(self.checkpoint),
            "config": self.config,
            "metadata": self.metadata,
            "model": model,
        }


def _changed(source: dict[str, Any]) -> list[str]:
    """What changed since the compile: the weights file, the model's source file."""
    notes = []
    ckpt, recorded = source.get("checkpoint"), source.get("sha256")
    if ckpt and recorded and Path(ckpt).is_file() and sha256(Path(ckpt)) != recorded:
        notes.append(f"the weights file {ckpt} changed since the compile (sha256 differs)")
    model = source.get("model") or {}
    file, digest = model.get("file"), model.get("file_sha256")
    if file and digest:
        if not Path(file).is_file():
            notes.append(f"the model source file {file} is gone since the compile")
        elif sha256(Path(file)) != digest:
            notes.append(f"the model source file {file} changed since the compile (sha256 differs)")
    return notes


def rebuild_traced(
    manifest: dict[str, Any], timesteps: int, name: str, *, trust_pickle: bool = False, model: nn.Module | None = None
):
    """The module an artifact was compiled from, traced as it was: ``(TracedModel | None, notes)``.

    Args:
        manifest: The artifact's manifest (``source``, and ``compile_options.input``: the declared input).
        timesteps: The artifact's T (used when the manifest predates recorded conventions).
        name: The graph name.
        trust_pickle: Passed to ``load_checkpoint`` (checkpoint route).
        model: The module itself (required for the ``python`` route; for the
            others it replaces the rebuilt one).

    Returns:
        The traced model, or None when it cannot be rebuilt (the notes say
        why), and notes about files that changed since the compile.
    """
    from inflor_deploy.frontends.fx import trace_model

    source = manifest["source"]
    info = source.get("model") or {"route": "checkpoint"}
    notes = _changed(source)
    if model is None:
        if info.get("route", "checkpoint") == "checkpoint":
            from inflor_deploy.checkpoint import load_checkpoint

            model = load_checkpoint(source["checkpoint"], trust_pickle=trust_pickle).model
        elif info["route"] == "factory":
            spec = FactorySpec(module=info["module"], factory=info["factory"], args=dict(info.get("args") or {}))
            model = model_from_factory(spec, source["checkpoint"])
        else:
            return None, notes + [
                f"the artifact was compiled from an in-memory {info.get('class', 'module')}; pass the model "
                "(inflor_deploy.verify.run_ladder(artifact, data, model=model)) to run level 1"
            ]
    config = source.get("config") or {}
    if "input_shape" in info:
        shape, timesteps = tuple(info["input_shape"]), int(info["timesteps"])
    elif config:  # an artifact written before the front end recorded its conventions
        shape = (config["in_channels"], config["image_size"], config["image_size"])
    else:
        raise InflorError("the artifact's manifest records no input shape; recompile it with this inflor-deploy")
    traced = trace_model(
        model, shape, timesteps, time_mode=info.get("time_mode"), adapters=info.get("adapters"), name=name,
        input_spec=recorded_input_spec(manifest),
    )  # fmt: skip
    return traced, notes


def recorded_input_spec(manifest: dict[str, Any]):
    """The :class:`~inflor_deploy.frontends.input_spec.InputSpec` an artifact was compiled with (``compile_options.input``)."""
    from inflor_deploy.frontends.input_spec import resolve_input_spec

    declared = (manifest.get("compile_options") or {}).get("input") or {}
    return resolve_input_spec(
        declared.get("range"), declared.get("mean"), declared.get("std"), declared.get("encoding", "direct")
    )
