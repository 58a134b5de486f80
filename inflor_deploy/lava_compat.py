"""The import-time shims that let lava-nc 0.10.0 / lava-dl 0.6.0 run on Python 3.11 (and in any session).

Every Lava import in this project goes through :func:`import_lava` (or
:func:`apply`), the one place where the shims are applied. Both upstream
repositories are archived, so the shims target exact versions and fail
loudly, naming the fix, when the installed Lava no longer matches.

1. ``lava/magma/compiler/var_model.py`` uses an instance of the plain
   ``@dataclass`` ``ByteEncoder`` as the default of fields of other
   dataclasses. Python 3.11 rejects unhashable defaults
   (``ValueError: mutable default <class 'ByteEncoder'>``). The shim makes
   ``ByteEncoder`` hashable (``unsafe_hash=True``) while that one module is
   executed; nothing else about the class changes.
2. ``lava.lib.dl.slayer`` imports ``slayer.object_detection``, which imports
   torchvision (no CPU build exists for torch 2.13). The shim registers a
   placeholder module under that name; touching any of its attributes
   raises an ImportError that says why.
3. ``lava/magma/runtime/message_infrastructure/multiprocessing.py`` calls
   ``multiprocessing.set_start_method('fork')`` at import, without
   ``force``. That raises ``RuntimeError: context has already been set``
   once anything has fixed the default context, and creating any
   multiprocessing lock does: tqdm's first progress bar creates one
   (``TqdmDefaultWriteLock.create_mp_lock`` -> ``multiprocessing.RLock()``),
   so training with a progress bar and then running Lava in the same
   process failed. The shim runs that module with the start method unset
   again when it was already ``fork`` (Linux's default, so nothing
   changes); Lava needs fork (its workers inherit the compiled network),
   so any other method already chosen is refused with the reason. Like
   shim 1 it is a loader wrapper found by the one finder: it takes effect
   whenever that module is first executed, and patches nothing in
   ``multiprocessing`` itself.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import importlib.metadata
import sys
import types
from typing import Any

SUPPORTED_VERSIONS = {"lava-nc": "0.10.0", "lava-dl": "0.6.0"}

_VAR_MODEL = "lava.magma.compiler.var_model"
_MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"
_OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
_REINSTALL = (
    "reinstall the pinned versions with `make setup` (or "
    "`pip install --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0`)"
)


class LavaCompatError(ImportError):
    """The installed Lava does not match what the shims were written for."""


def _check_version(dist: str) -> None:
    try:
        found = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as err:
        raise LavaCompatError(f"{dist} is not installed; {_REINSTALL}") from err
    wanted = SUPPORTED_VERSIONS[dist]
    if found != wanted:
        raise LavaCompatError(
            f"{dist} {found} is installed but inflor_deploy.lava_compat was written and "
            f"tested for {dist} {wanted}; {_REINSTALL}, or re-verify the shims in "
            f"{__file__} against {dist} {found}"
        )


class _HashableByteEncoderLoader(importlib.abc.Loader):
    """Executes var_model.py with `dataclass` making ByteEncoder hashable."""

    def __init__(self, wrapped: importlib.abc.Loader):
        self._wrapped = wrapped

    def create_module(self, spec):  # noqa: D401 - Loader protocol
        return self._wrapped.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        original = dataclasses.dataclass
        patched_classes: list[str] = []

        def dataclass(cls=None, /, **kwargs: Any):
            def wrap(c):
                if c.__qualname__ == "ByteEncoder":
                    kwargs.setdefault("unsafe_hash", True)
                    patched_classes.append(c.__qualname__)
                return original(c, **kwargs)

            return wrap if cls is None else wrap(cls)

        # var_model.py does `from dataclasses import dataclass` at exec time,
        # so it binds this wrapper; restored right after.
        dataclasses.dataclass = dataclass
        try:
            self._wrapped.exec_module(module)
        finally:
            dataclasses.dataclass = original
        if not patched_classes:
            raise LavaCompatError(
                f"{_VAR_MODEL} no longer defines a dataclass `ByteEncoder`; the "
                f"Python 3.11 shim does not match this Lava. {_REINSTALL}"
            )


class _ForkStartMethodLoader(importlib.abc.Loader):
    """Executes Lava's multiprocessing module with the start method unset, if it was fixed to fork already."""

    def __init__(self, wrapped: importlib.abc.Loader):
        self._wrapped = wrapped

    def create_module(self, spec):  # noqa: D401 - Loader protocol
        return self._wrapped.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        import multiprocessing

        chosen = multiprocessing.get_start_method(allow_none=True)
        if chosen not in (None, "fork") and sys.platform != "win32":
            raise LavaCompatError(
                f"this process already uses the multiprocessing start method {chosen!r}, but Lava "
                "0.10.0 needs 'fork' (its workers inherit the compiled network); do not call "
                f"multiprocessing.set_start_method({chosen!r}) in a process that runs Lava"
            )
        if chosen == "fork":
            # Set implicitly (e.g. tqdm created a multiprocessing lock); Lava sets it again, unforced.
            multiprocessing.set_start_method(None, force=True)
        self._wrapped.exec_module(module)


#: Lava module -> the loader wrapper that executes it.
_SHIMMED_LOADERS = {_VAR_MODEL: _HashableByteEncoderLoader, _MULTIPROCESSING: _ForkStartMethodLoader}


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Finds the shimmed Lava modules with the next finder and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        wrapper = _SHIMMED_LOADERS.get(fullname)
        if wrapper is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = wrapper(spec.loader)
                return spec
        return None


class _NoObjectDetection(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "lava.lib.dl.slayer.object_detection is disabled by inflor_deploy.lava_compat: "
            "it needs torchvision, which has no CPU build for torch 2.13. "
            "inflor-deploy does not use object detection."
        )


_applied = False


def apply() -> None:
    """Install the shims. Idempotent. Must run before the first lava import."""
    global _applied
    if _applied:
        return
    for dist in SUPPORTED_VERSIONS:
        _check_version(dist)
    if _VAR_MODEL in sys.modules and not _is_hashable_encoder(sys.modules[_VAR_MODEL]):
        raise LavaCompatError(
            f"{_VAR_MODEL} was imported before inflor_deploy.lava_compat.apply(); "
            "import Lava only through inflor_deploy.lava_compat.import_lava()"
        )
    if not any(isinstance(f, _ShimFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ShimFinder())
    if _OBJECT_DETECTION not in sys.modules:
        module = _NoObjectDetection(_OBJECT_DETECTION)
        module.__spec__ = importlib.machinery.ModuleSpec(_OBJECT_DETECTION, loader=None)
        sys.modules[_OBJECT_DETECTION] = module
    _applied = True


def _is_hashable_encoder(var_model: types.ModuleType) -> bool:
    encoder = getattr(var_model, "ByteEncoder", None)
    return encoder is not None and encoder.__hash__ is not None


def import_lava() -> types.ModuleType:
    """Apply the shims, import Lava's core and check the shims took effect.

    Returns:
        The ``lava.magma.compiler.var_model`` module (proof the shim ran).
    """
    apply()
    import importlib

    var_model = importlib.import_module(_VAR_MODEL)
    if not _is_hashable_encoder(var_model):
        raise LavaCompatError(f"the ByteEncoder shim did not take effect; {_REINSTALL}")
    return var_model


def check() -> str:
    """Import lava core and lava-dl netx through the shims; return a summary line."""
    import_lava()
    import importlib

    importlib.import_module("lava.proc.lif.process")
    importlib.import_module("lava.lib.dl.netx")
    return "lava-nc {lava-nc} and lava-dl {lava-dl} import on Python {py} with the shims".format(
        py=".".join(map(str, sys.version_info[:3])), **SUPPORTED_VERSIONS
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m inflor_deploy.lava_compat --check")
    print(check())
