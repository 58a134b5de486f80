"""The checkpoint format: architecture + config + state_dict, loadable without running code.

A checkpoint is a ``torch.save`` of a plain dict::

    {
        "format": "inflor-deploy-checkpoint",
        "format_version": 1,
        "config": ModelConfig.to_dict(),     # arch, T, neuron, vth, ...
        "state_dict": {name: tensor},
        "metadata": {str: str | int | float},  # e.g. test accuracy, training seed
    }

Everything in it is a tensor, a string or a number, so it loads with
``torch.load(weights_only=True)``, which runs no code from the file. A file
holding a pickled ``nn.Module`` can only be loaded by executing code from
it; :func:`load_checkpoint` refuses that unless the caller passes
``trust_pickle=True`` (CLI: ``--trust-pickle``).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.errors import InflorError
from inflor_deploy.nn.models import ARCHITECTURES, ModelConfig, build_model

FORMAT = "inflor-deploy-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(InflorError):
    """A checkpoint could not be loaded; the message names the problem and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: The file it came from.
        config: The model's architecture and neuron configuration.
        model: The model in eval mode with the weights loaded.
        metadata: Free-form facts saved with it (accuracy, seed, ...).
    """

    path: Path
    config: ModelConfig
    model: torch.nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` (built by :func:`build_model`) atomically to `path`."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise CheckpointError(
            "only models built by inflor_deploy.nn.build_model can be saved (they carry a ModelConfig)"
        )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    # Write next to the target, then rename: a crash never leaves a partial file.
    return write_file_atomically(path, lambda tmp: torch.save(payload, tmp))


def _read(path: Path, trust_pickle: bool) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        # torch.save has written zip archives since torch 1.6; the only other
        # thing torch.load reads is a legacy pickle, which starts with PROTO.
        with open(path, "rb") as f:
            head = f.read(1)
        if head != b"\x80":
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (corrupt, truncated, or another file "
                "type). Re-create it with `inflor-deploy train` or "
                "`inflor_deploy.checkpoint.save_checkpoint`."
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: contains pickled Python objects beyond tensors (e.g. a whole nn.Module). "
                "Loading it would execute code from the file. If you trust its origin, pass "
                "--trust-pickle (trust_pickle=True); better, re-save it with "
                f"inflor_deploy.checkpoint.save_checkpoint. (torch said: {str(err).splitlines()[0]})"
            ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated: {err}). "
            "Re-create it with `inflor-deploy train`."
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a trusted pickle may fail in any way
        raise CheckpointError(f"{path}: loading the trusted pickle failed: {err!r}") from err


def _from_module(path: Path, module: Any) -> Checkpoint:
    """A trusted pickled model is compiled as it is, not rebuilt from its config.

    Rebuilding would silently drop any change the user made to the modules
    (a swapped layer must reach the exporter and be refused there).
    """
    from inflor_deploy.nn.neurons import Neuron

    if not isinstance(module, torch.nn.Module):
        raise CheckpointError(f"{path}: holds a pickled {type(module).__name__}, not a model")
    if not any(isinstance(m, Neuron) for m in module.modules()):
        raise CheckpointError(
            f"{path}: the pickled {type(module).__name__} is not a spiking network (it has no "
            "inflor_deploy.nn.Neuron layer); inflor-deploy compiles SNNs built with inflor_deploy.nn"
        )
    config = getattr(module, "config", None)
    if not isinstance(config, ModelConfig):
        raise CheckpointError(
            f"{path}: holds a pickled {type(module).__name__} without a ModelConfig; build the model "
            f"with inflor_deploy.nn.build_model (architectures: {', '.join(sorted(ARCHITECTURES))})"
        )
    check_finite_weights(path, module.state_dict())
    return Checkpoint(path=path, config=config, model=module.eval(), metadata={"converted_from": "pickled nn.Module"})


def check_finite_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` naming the first tensor of ``state_dict`` with NaN/inf values."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: tensor {name!r} has {bad} NaN/inf value(s); the model cannot be "
                "quantized. Retrain or repair the weights (e.g. lower the learning rate)."
            )


def load_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> Checkpoint:
    """Load and validate a checkpoint; never runs code from the file unless trusted.

    Args:
        path: A file written by :func:`save_checkpoint` (or, with
            `trust_pickle`, a pickled model built by ``build_model``).
        trust_pickle: Allow unpickling arbitrary objects. This executes code
            from the file; only for files whose origin you trust.

    Raises:
        CheckpointError: missing, corrupt or foreign file; pickled objects
            without trust; unknown architecture; invalid config; weights that
            do not match the architecture or are not finite.
    """
    path = Path(path)
    payload = _read(path, trust_pickle)
    if isinstance(payload, torch.nn.Module):
        return _from_module(path, payload)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: a PyTorch file but not an inflor-deploy checkpoint (found {found}; expected "
            f"the keys format={FORMAT!r}, config, state_dict). If it is the state_dict of a model of "
            "your own, name the code that builds the model: inflor-deploy compile WEIGHTS.pt --model "
            "MODULE:FACTORY --input-shape C,H,W -T N (or inflor_deploy.compile(model, ...) in Python)."
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this inflor-deploy reads version "
            f"{FORMAT_VERSION}. Re-save it with this version's save_checkpoint."
        )
    raw_config = payload.get("config")
    if not isinstance(raw_config, dict):
        raise CheckpointError(f"{path}: checkpoint has no config dict")
    arch = raw_config.get("arch")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path}: unknown architecture {arch!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        config = ModelConfig.from_dict(raw_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from err
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: checkpoint has no state_dict")
    check_finite_weights(path, state_dict)
    model = build_model(config)
    missing, unexpected = _key_mismatch(model.state_dict(), state_dict)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match architecture {arch!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match architecture {arch!r}: {err}") from err
    model.eval()
    metadata = payload.get("metadata") or {}
    return Checkpoint(path=path, config=config, model=model, metadata=dict(metadata))


def _key_mismatch(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
