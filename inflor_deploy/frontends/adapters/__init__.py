"""Framework adapters for the fx front end, one small module per training framework.

:data:`ADAPTER_MODULES` is the one explicit table of them (nothing registers
itself on import): name -> (module that defines ``ADAPTER``, the framework's
top-level package, the pip extra that installs it). An adapter module is
imported only when a model uses its framework, so the core imports without
SpikingJelly or snnTorch.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from torch import nn

from inflor_deploy.frontends.adapters.base import (
    TIME_MODES,
    Adapter,
    AdapterError,
    Capture,
    PerStep,
    TimeMode,
    require_package,
)

__all__ = [
    "ADAPTER_MODULES", "Adapter", "AdapterError", "Capture", "PerStep", "TIME_MODES", "TimeMode",
    "adapters_for", "load_adapter", "require_package",
]  # fmt: skip

#: name -> (adapter module, framework package or None for the project's own layers, pip extra or None).
ADAPTER_MODULES: dict[str, tuple[str, str | None, str | None]] = {
    "inflor": ("inflor_deploy.frontends.adapters.inflor", None, None),
}


def load_adapter(name: str) -> Adapter:
    """The adapter called ``name``; raises naming the known ones, or the extra to install."""
    if name not in ADAPTER_MODULES:
        raise AdapterError(f"unknown framework adapter {name!r}; known: {', '.join(ADAPTER_MODULES)}")
    module_name, package, extra = ADAPTER_MODULES[name]
    if package is not None:
        require_package(package, extra or package)
    return importlib.import_module(module_name).ADAPTER


def _framework_of(module: nn.Module) -> str:
    return type(module).__module__.split(".")[0]


def adapters_for(model: nn.Module, names: Iterable[str | Adapter] | None = None) -> tuple[Adapter, ...]:
    """The adapters to trace ``model`` with.

    Args:
        model: The user's module.
        names: Adapter names (or :class:`Adapter` instances, e.g. one of your
            own) to use; None picks the project's own adapter plus every
            framework one of whose modules appears in ``model`` (read from the
            modules' classes, without importing anything).
    """
    if names is None:
        frameworks = {_framework_of(m) for m in model.modules()}
        names = [name for name, (_, package, _) in ADAPTER_MODULES.items() if package is None or package in frameworks]
    return tuple(name if isinstance(name, Adapter) else load_adapter(name) for name in names)
