"""Where a compiled model came from, as the manifest records it, and how ``verify`` rebuilds it.

Three routes into the compiler share one path (:func:`inflor_deploy.compiler.compile_model`):

* ``checkpoint``: an inflor-deploy checkpoint (a zoo architecture + weights);
* ``factory``: ``WEIGHTS.pt --model MODULE:FACTORY``: the user's code builds
  the model, a plain state_dict fills it;
* ``python``: a module handed to ``inflor_deploy.compile`` in memory.

The manifest's ``source`` section keeps its keys (``checkpoint``,
``sha256``, ``config``, ``metadata``) and adds ``model``: the route, the
model's class and source file, the factory and its arguments, and the
time/I/O conventions the front end used, so that levels 0 and 1 of
``verify`` rebuild and run the same module the same way.

The files a rebuild reads are hashed sources of the artifact
(``integrity.sources``, :mod:`inflor_deploy.integrity`): the checkpoint or
weights file, and for the factory route the factory's source file (role
:data:`MODEL_SOURCE_ROLE`). ``verify`` checks them before anything runs and
names a file that changed since the compile.
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
#: Role of the factory's source file in the manifest's ``integrity.sources``.
MODEL_SOURCE_ROLE = "model_source"


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
        """Weights built into the model that ``spec`` makes (a ``.py`` path is recorded absolute, to rebuild anywhere)."""
        weights = Path(weights)
        if spec.is_file:
            spec = FactorySpec(module=str(Path(spec.module).resolve()), factory=spec.factory, args=dict(spec.args))
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

    def hashed_sources(self) -> list[tuple[str, Path]]:
        """Files besides the checkpoint that a rebuild reads, as ``(role, path)``: the factory's source file."""
        if self.route == "factory" and self.model_file is not None and self.model_file.is_file():
            return [(MODEL_SOURCE_ROLE, self.model_file)]
        return []

    def manifest(self, conventions: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``source`` section (``conventions``: :meth:`TracedModel.conventions`)."""
        model: dict[str, Any] = {"route": self.route, "class": self.model_class, **conventions}
        if self.factory is not None:
            model.update(self.factory.to_dict())
        if self.model_file is not None and self.model_file.is_file():
            model["file"] = str(self.model_file)  # its sha256: integrity.sources (factory route)
        return {
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint.resolve()),
            "sha256": None if self.checkpoint is None else sha256(self.checkpoint),
            "config": self.config,
            "metadata": self.metadata,
            "model": model,
        }


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
        The traced model, or None when it cannot be rebuilt, and notes saying why.
    (The files it reads were hash-checked first: ``Artifact.check_sources``.)
    """
    from inflor_deploy.frontends.fx import trace_model

    source = manifest["source"]
    info = source.get("model") or {"route": "checkpoint"}
    notes: list[str] = []
    if model is None:
        if info.get("route", "checkpoint") == "checkpoint":
            from inflor_deploy.checkpoint import load_checkpoint

            model = load_checkpoint(source["checkpoint"], trust_pickle=trust_pickle).model
        elif info["route"] == "factory":
            spec = FactorySpec(module=info["module"], factory=info["factory"], args=dict(info.get("args") or {}))
            model = model_from_factory(spec, source["checkpoint"])
        else:
            return None, [in_memory_note(info)]
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


def in_memory_note(info: dict[str, Any]) -> str:
    """Why a module compiled in memory cannot be rebuilt from the manifest, and what to do."""
    return (
        f"the artifact was compiled from an in-memory {info.get('class', 'module')}; pass the model "
        "(inflor_deploy.verify.run_ladder(artifact, data, model=model)) to rebuild and run it"
    )


def recorded_input_spec(manifest: dict[str, Any]):
    """The :class:`~inflor_deploy.frontends.input_spec.InputSpec` an artifact was compiled with (``compile_options.input``)."""
    from inflor_deploy.frontends.input_spec import resolve_input_spec

    declared = (manifest.get("compile_options") or {}).get("input") or {}
    return resolve_input_spec(
        declared.get("range"), declared.get("mean"), declared.get("std"), declared.get("encoding", "direct")
    )
