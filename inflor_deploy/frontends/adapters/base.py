"""What the fx front end needs to know about one training framework.

The front end (:mod:`inflor_deploy.frontends.fx`) traces a user's module
with ``torch.fx`` and maps standard torch operations itself. Everything
framework-specific comes from one :class:`Adapter` per framework, in its own
small module (``inflor.py`` now; ``spikingjelly.py`` and ``snntorch.py``
follow the same pattern):

* **Leaves.** Modules the tracer must not trace into: spiking neurons (their
  internals are a time loop and state), and the framework's own stateless
  layers whose data flow the adapter knows (a time-first normalization, a
  wrapper that applies a module at every step, a readout).
* **Neurons.** How one neuron module becomes an :class:`~inflor_deploy.ir.Neuron`
  (the adapter's docstring quotes the framework's exact update equation and
  the file it was read from), and its time convention: ``"multi"`` (called
  once on ``[T, B, ...]``) or ``"single"`` (called once per step on
  ``[B, ...]``, state kept inside the module).
* **Level 1.** How to read a neuron's spikes (and membrane, where the
  framework exposes it) from a forward hook, and how to reset the state of
  single-step modules before each sample batch.

An adapter never imports its framework at module import time unless it is
used: the core must import without SpikingJelly or snnTorch. Use
:func:`require_package` to import the framework; it names the pip extra to
install when the package is missing.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from inflor_deploy.errors import ExportError
from inflor_deploy.ir import nodes as n

TimeMode = Literal["multi", "single"]
TIME_MODES: tuple[str, ...] = ("multi", "single")


class AdapterError(ExportError):
    """A framework adapter cannot be used (package missing, module it cannot map)."""


def require_package(package: str, extra: str):
    """Import a framework package, or raise naming the pip extra that installs it.

    Args:
        package: The import name (``"spikingjelly"``).
        extra: The inflor-deploy extra that pins a compatible version.

    Raises:
        AdapterError: The package is not installed.
    """
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise AdapterError(
            f"the {package} adapter needs the {package} package, which is not installed ({err}); "
            f"install it with: pip install 'inflor-deploy[{extra}]'"
        ) from err


@dataclass(frozen=True)
class PerStep:
    """A stateless module that a framework wrapper applies independently at every step.

    ``Y[t] = module(X[t])`` for every t; the front end maps ``module`` as if it
    were called on one step's ``[B, ...]`` batch.

    Attributes:
        module: The module applied per step (a single layer or a container,
            which is then traced).
        as_type: The torch type whose per-step semantics ``module`` has, when
            ``module`` is a framework subclass of it (e.g. a multi-step
            ``Conv2d`` subclass); None means ``type(module)``.

    A single layer's IR node is named by the wrapper's module path; a traced
    container's layers by the wrapper's path followed by their path inside
    the container (the wrapper's attribute holding the module is not part of
    the name: ``TimeDistributed`` at ``unit1.conv`` gives ``unit1.conv``).
    """

    module: nn.Module
    as_type: type | None = None


@dataclass(frozen=True)
class Capture:
    """What a forward hook read from one neuron call.

    Attributes:
        spikes: The spikes the module emitted (``[T, B, ...]`` multi-step or
            ``[B, ...]`` single-step), values 0/1.
        membrane: The membrane compared with the threshold (``H``, before the
            reset), same shape, or None when the framework does not expose it.
    """

    spikes: torch.Tensor
    membrane: torch.Tensor | None = None


class Adapter:
    """Base of the framework adapters; every hook has a safe default (not a leaf, not supported).

    Attributes:
        name: Short name (``"inflor"``), recorded in manifests.
    """

    name: str = ""

    # ------------------------------------------------------------------ leaves

    def is_neuron(self, module: nn.Module) -> bool:
        """Whether ``module`` is one of this framework's spiking neuron layers."""
        return False

    def is_per_step_wrapper(self, module: nn.Module) -> bool:
        """Whether ``module`` applies a stateless module independently at every step (see :meth:`per_step`)."""
        return False

    def is_time_first_normalization(self, module: nn.Module) -> bool:
        """Whether ``module`` normalizes time-first input itself (e.g. tdBN over ``[T, B, C, ...]``)."""
        return False

    def is_readout(self, module: nn.Module) -> bool:
        """Whether ``module`` is a readout layer (the class score over time)."""
        return False

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether the tracer must keep ``module`` as one call (its internals never traced)."""
        return (
            self.is_neuron(module)
            or self.is_per_step_wrapper(module)
            or self.is_time_first_normalization(module)
            or self.is_readout(module)
        )

    def autowrap_functions(self) -> tuple[Callable, ...]:
        """Module-level functions the tracer keeps as one call (e.g. a model's input encoding)."""
        return ()

    # ------------------------------------------------------------------ mapping to IR

    def neuron(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Neuron:
        """The IR neuron of a neuron module (exact update; see the adapter's docstring)."""
        raise AdapterError(f"the {self.name} adapter cannot map {type(module).__name__} {path!r}")

    def per_step(self, path: str, module: nn.Module) -> PerStep:
        """What a per-step wrapper applies at every step (raise if the wrapper's forward is not the known one)."""
        raise AdapterError(f"the {self.name} adapter cannot map {type(module).__name__} {path!r}")

    def time_mode(self, module: nn.Module) -> TimeMode | None:
        """The neuron module's time convention, or None when the module does not say."""
        return None

    def normalization(self, path: str, module: nn.Module, source: str) -> n.Node:
        """The IR node of a time-first normalization layer."""
        raise AdapterError(f"the {self.name} adapter cannot map {type(module).__name__} {path!r}")

    def readout(self, path: str, module: nn.Module, sources: tuple[str, ...]) -> n.Accumulator:
        """The IR readout of a readout module."""
        raise AdapterError(f"the {self.name} adapter cannot map {type(module).__name__} {path!r}")

    def encoding(self, function: Callable) -> Literal["direct"] | None:
        """How an autowrapped function turns the input into time-first currents ("direct": repeat the frame).

        A ``"direct"`` function must hand a time-first ``[T, B, ...]`` sequence
        through unchanged: with event input (``--input-encoding sequence``) the
        model is called on the events and the front end maps the call to nothing.
        """
        return None

    def timesteps_argument(self, model: nn.Module) -> str | None:
        """The keyword argument of ``model.forward`` that sets T for models that encode their input inside."""
        return None

    def declared_input(self, model: nn.Module) -> tuple[tuple[int, ...], int, str] | None:
        """``(input_shape, timesteps, name)`` when the model declares them itself (e.g. a config), else None."""
        return None

    def exact_float(self, module: nn.Module) -> bool:
        """Whether the IR neuron computes H in the framework's float operation order (bitwise equal).

        Where it does not, level 1 counts mismatches within a few float32
        ulps of the threshold as near-ties.
        """
        return True

    # ------------------------------------------------------------------ level 1: the framework's own run

    @contextlib.contextmanager
    def recording(self, module: nn.Module) -> Iterator[None]:
        """Make ``module`` keep what :meth:`capture` reads (e.g. its membrane) while the block runs."""
        yield

    def capture(self, module: nn.Module, output) -> Capture:
        """Spikes (and membrane) of the call that produced ``output`` (called from a forward hook)."""
        return Capture(spikes=output)

    def reset_state(self, model: nn.Module) -> None:
        """Reset every single-step module's hidden state before a new sample batch (nothing by default)."""
