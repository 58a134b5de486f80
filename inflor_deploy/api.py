"""The Python entry points: ``inflor_deploy.trace`` and ``inflor_deploy.compile``.

    import inflor_deploy
    graph = inflor_deploy.trace(model, input_shape=(1, 8, 8), timesteps=4)          # float IR
    artifact = inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4,
                                     target="loihi2-sim", output="out/")             # artifact directory

Both take any ``nn.Module`` built from supported layers (the fx front end,
:mod:`inflor_deploy.frontends.fx`); see ``docs/frontends.md``. Both take the
declared input as keywords, like ``inflor-deploy compile``'s options:
``input_range=(lo, hi)``, ``input_mean=(...)``/``input_std=(...)`` (a
normalization the data pipeline applies before the model) and
``input_encoding="direct" | "sequence"`` (event data: the model gets
``[T, B, C, H, W]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal, Sequence, Union

import numpy as np
from torch import nn

from inflor_deploy.frontends import fx
from inflor_deploy.frontends.input_spec import resolve_input_spec
from inflor_deploy.ir import Graph
from inflor_deploy.passes.base import QuantizationOptions

__all__ = ["compile", "trace"]

Numbers = Union[str, Sequence[float], None]


def trace(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    timesteps: int | None = None,
    *,
    time_mode: Literal["multi", "single"] | None = None,
    adapters: Iterable[str] | None = None,
    name: str | None = None,
    input_range: Numbers = None,
    input_mean: Numbers = None,
    input_std: Numbers = None,
    input_encoding: Literal["direct", "sequence"] = "direct",
) -> Graph:
    """The validated float IR of ``model``, its Input declared as given.

    Args:
        model, input_shape, timesteps, time_mode, adapters, name: See :func:`compile`.
        input_range, input_mean, input_std, input_encoding: The declared input
            (:func:`~inflor_deploy.frontends.input_spec.resolve_input_spec`; see :func:`compile`).

    Raises:
        InflorError: an unsupported model or op, or a malformed input declaration.
    """
    spec = resolve_input_spec(input_range, input_mean, input_std, input_encoding)
    return fx.trace(model, input_shape, timesteps, time_mode=time_mode, adapters=adapters, name=name, input_spec=spec)


def compile(  # noqa: A001 - the public name the issue asks for; shadows the builtin only in this module
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    timesteps: int | None = None,
    *,
    output: str | Path,
    target: str = "loihi2-sim",
    force: bool = False,
    time_mode: Literal["multi", "single"] | None = None,
    adapters: Iterable[str] | None = None,
    name: str | None = None,
    quantization: QuantizationOptions = QuantizationOptions(),
    stop_after: str | None = None,
    probe_images: np.ndarray | None = None,
    probe_samples: int | None = None,
    input_range: Numbers = None,
    input_mean: Numbers = None,
    input_std: Numbers = None,
    input_encoding: Literal["direct", "sequence"] = "direct",
):
    """Compile ``model`` for ``target`` and write the artifact directory ``output``.

    Args:
        model: The trained module (in memory; its weights are copied).
        input_shape: One sample without batch or time, e.g. ``(C, H, W)``
            (None: what the model declares, for ``build_model`` networks).
        timesteps: T (None: what the model declares).
        output: The artifact directory (written atomically).
        target: Target name (``inflor-deploy targets``).
        force: Replace an existing ``output``.
        time_mode: ``"multi"`` / ``"single"``; None reads it from the neurons.
        adapters: Framework adapter names (None: detected from the model).
        name: The model's name in reports (default: its class name).
        quantization: Options of ``QuantizeFixedPoint``.
        stop_after: Stop after this pass.
        probe_images: Real inputs ``[N, *input_shape]`` the pass contracts run
            on (default: 16 seeded uniform images).
        probe_samples: How many seeded probe images (when ``probe_images`` is None).
        input_range: ``(lo, hi)`` of the data (default pixels in [0, 1];
            ``(0, 255)`` raw 8-bit pixels); the artifact refuses data outside it.
        input_mean, input_std: Per-channel normalization the data pipeline
            applies before the model, ``(x - mean) / std`` (folded into the
            first synapses; a model that normalizes inside ``forward`` needs none).
        input_encoding: ``"direct"`` (the image at every step) or
            ``"sequence"`` (event frames ``[T, C, H, W]`` per sample).

    Returns:
        The :class:`~inflor_deploy.artifact.Artifact`. ``inflor-deploy run`` and
        ``report`` work on it as on any artifact; level 1 of ``verify`` needs the
        module itself: ``inflor_deploy.verify.run_ladder(artifact, data, model=model)``.

    Raises:
        InflorError: an unsupported model or op, a bad option, an existing
            output without ``force``, or a violated contract.
    """
    from inflor_deploy.artifact import load_artifact, prepare_output, write_artifact
    from inflor_deploy.compiler import compile_model

    output = Path(output)
    prepare_output(output, force)
    result = compile_model(
        model, input_shape=input_shape, timesteps=timesteps, target=target, time_mode=time_mode, adapters=adapters,
        name=name, quantization=quantization, stop_after=stop_after, probe_images=probe_images,
        probe_samples=probe_samples, input_range=input_range, input_mean=input_mean, input_std=input_std,
        input_encoding=input_encoding,
    )  # fmt: skip
    write_artifact(result, output, force=force)
    return load_artifact(output)
