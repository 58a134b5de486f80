"""A user's own model: the code that builds it (``MODULE:FACTORY``) plus a plain ``state_dict``.

    inflor-deploy compile WEIGHTS.pt --model MODULE:FACTORY [--model-arg KEY=VALUE ...] ...

* ``MODULE`` is an importable module name (the current directory is searched
  first, as ``python -m`` does) or a ``path/to/file.py``; ``FACTORY`` is a
  callable in it that returns the ``nn.Module``. Naming the factory is the
  user vouching for that code: it runs. The weights file never runs code:
  it is read with ``torch.load(weights_only=True)``.
* ``--model-arg`` values are Python literals read with ``ast.literal_eval``
  (numbers, strings, tuples, lists, dicts, True/False/None), never ``eval``;
  anything else is kept as a string.

Every problem (module or file not found, a factory that raises, is not
callable or returns no ``nn.Module``, weights that do not fit the model)
raises :class:`UserModelError` naming it and the fix.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from inflor_deploy.errors import InflorError


class UserModelError(InflorError):
    """The user's model code or weights cannot be loaded; the message names the problem and the fix."""


def parse_model_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``["depth=3", "name=wide", "sizes=(8, 16)"]`` -> keyword arguments (literals, else strings)."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserModelError(f"--model-arg {pair!r} must be KEY=VALUE with KEY a Python identifier, e.g. width=16")
        if key in args:
            raise UserModelError(f"--model-arg {key} is given twice")
        try:
            args[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            args[key] = text  # not a literal: the plain string
    return args


@dataclass(frozen=True)
class FactorySpec:
    """How to rebuild a user's model: ``module:factory(**args)``.

    Attributes:
        module: An importable module name, or a path to a ``.py`` file.
        factory: The name of a callable in that module returning the ``nn.Module``.
        args: Keyword arguments for the factory (Python literals).
    """

    module: str
    factory: str
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, model_args: Sequence[str] = ()) -> "FactorySpec":
        """Read ``MODULE:FACTORY`` (the last colon splits, so Windows drive letters survive)."""
        module, sep, factory = spec.rpartition(":")
        if not sep or not module or not factory.isidentifier():
            raise UserModelError(
                f"--model {spec!r} must be MODULE:FACTORY, e.g. mynets:make_net or path/to/nets.py:make_net"
            )
        return cls(module=module, factory=factory, args=parse_model_args(model_args))

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "factory": self.factory, "args": dict(self.args)}


@contextlib.contextmanager
def _current_directory_on_path() -> Iterator[None]:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_module(spec: FactorySpec) -> ModuleType:
    """Import ``spec.module`` (a module name, or a .py file executed as a fresh module)."""
    if spec.is_file:
        path = Path(spec.module).resolve()
        if not path.is_file():
            raise UserModelError(f"model file {spec.module} not found; give MODULE:FACTORY with an existing path/to/file.py")
        name = f"inflor_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # dataclasses and pickling look classes up here
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's module may fail in any way
            sys.modules.pop(name, None)
            raise UserModelError(f"importing {spec.module} failed: {type(err).__name__}: {err}") from err
        return module
    try:
        with _current_directory_on_path():
            return importlib.import_module(spec.module)
    except ModuleNotFoundError as err:
        raise UserModelError(
            f"module {spec.module!r} not found ({err}); give an importable module name (run from its folder or "
            "set PYTHONPATH) or a path/to/file.py"
        ) from err
    except Exception as err:  # noqa: BLE001
        raise UserModelError(f"importing {spec.module} failed: {type(err).__name__}: {err}") from err


def source_file(spec: FactorySpec) -> Path | None:
    """The file the factory's module was read from (None for a module without a file)."""
    if spec.is_file:
        return Path(spec.module).resolve()
    module = import_module(spec)
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def build(spec: FactorySpec) -> nn.Module:
    """Import the module and call the factory; the result must be an ``nn.Module``."""
    module = import_module(spec)
    factory = getattr(module, spec.factory, None)
    if factory is None:
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:12]
        raise UserModelError(f"{spec.module} has no {spec.factory!r}; callables in it: {', '.join(public)}")
    if not callable(factory):
        raise UserModelError(f"{spec.module}:{spec.factory} is a {type(factory).__name__}, not a callable returning the model")
    try:
        model = factory(**spec.args)
    except Exception as err:  # noqa: BLE001 - report the user's own exception, whatever it is
        raise UserModelError(
            f"the factory {spec.module}:{spec.factory}({_show_args(spec.args)}) raised {type(err).__name__}: {err}"
        ) from err
    if not isinstance(model, nn.Module):
        raise UserModelError(
            f"the factory {spec.module}:{spec.factory} returned a {type(model).__name__}, not a torch nn.Module"
        )
    return model


def _show_args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain ``state_dict`` with ``torch.load(weights_only=True)`` (never runs code from the file)."""
    from inflor_deploy.checkpoint import FORMAT, check_finite_weights

    path = Path(path)
    if not path.is_file():
        raise UserModelError(f"{path}: no such weights file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise UserModelError(
            f"{path}: not a plain state_dict that loads without running code ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Save it with torch.save(model.state_dict(), path)"
        ) from err
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        payload = payload.get("state_dict")  # an inflor-deploy checkpoint holds one
    if not isinstance(payload, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()
    ):
        found = sorted(map(str, payload))[:8] if isinstance(payload, Mapping) else type(payload).__name__
        raise UserModelError(
            f"{path}: expected a state_dict (parameter name -> tensor), found {found}; "
            "save it with torch.save(model.state_dict(), path)"
        )
    state = dict(payload)
    check_finite_weights(path, state)
    return state


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``, strictly; a mismatch lists missing/unexpected keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: model {tuple(expected[k].shape)}, file {tuple(state[k].shape)}"
        for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)
    ]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:10]}")
        raise UserModelError(
            f"{path}: the weights do not fit the model built by the factory: {'; '.join(parts)}. "
            "Pass the --model-arg values the model was trained with, or the matching weights file"
        )
    model.load_state_dict(dict(state))


def model_from_factory(spec: FactorySpec, weights: str | Path) -> nn.Module:
    """Build the model, load the weights strictly, and put it in eval mode."""
    state = load_state_dict(weights)
    model = build(spec)
    load_weights(model, state, weights)
    return model.eval()
