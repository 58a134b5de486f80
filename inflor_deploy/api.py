"""The Python entry points: ``inflor_deploy.trace`` and ``inflor_deploy.compile``.

    import inflor_deploy
    graph = inflor_deploy.trace(model, input_shape=(1, 8, 8), timesteps=4)          # float IR
    artifact = inflor_deploy.compile(model, input_shape=(1, 8, 8), timesteps=4,
                                     target="loihi2-sim", output="out/")             # artifact directory

A NIR graph comes in the same way: ``inflor_deploy.from_nir("model.nir", timesteps=4)``
returns its float IR, and ``inflor_deploy.compile("model.nir", timesteps=4, output="out/",
reset="subtract")`` (a path ending in ``.nir`` or a ``nir.NIRGraph``) compiles it
(``docs/nir.md``).

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

__all__ = ["compile", "finetune", "from_nir", "trace"]

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


def from_nir(
    graph_or_path,
    timesteps: int,
    *,
    reset: Literal["zero", "subtract"] | None = None,
    dt: float | None = None,
    compare: Literal[">", ">="] | None = None,
    convention: str | None = None,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
    input_range: Numbers = None,
    input_mean: Numbers = None,
    input_std: Numbers = None,
    input_encoding: Literal["direct", "sequence"] | None = None,
) -> Graph:
    """The validated float IR of a NIR graph (a ``.nir`` file, read with ``nir.read``, or a ``nir.NIRGraph``).

    Args:
        graph_or_path: The graph or the file.
        timesteps: T (NIR states none).
        reset: ``"subtract"`` (subtract v_threshold on a spike: SpikingJelly's soft reset,
            snnTorch's ``"subtract"``) or ``"zero"``; None: NIR's reset to v_reset, or the
            mode inflor-deploy recorded in the file.
        dt: The step in seconds the model was trained with (None: the detected exporter's).
        compare: ``">"`` or ``">="`` (None: the convention's).
        convention: ``"auto"`` (None), ``"nir"``, ``"spikingjelly"``, ``"snntorch"``, ``"norse"``.
        input_shape: ``(C, H, W)``: read a flat NIR Input as images (C-major).
        name: The graph's name.
        input_range, input_mean, input_std, input_encoding: The declared input (see :func:`compile`).

    Raises:
        InflorError: an unreadable file, an unsupported node, a dynamics the IR cannot express exactly.
    """
    from inflor_deploy.frontends.nir import from_nir as read

    return read(graph_or_path, timesteps, reset=reset, dt=dt, compare=compare, convention=convention,
                input_shape=input_shape, name=name, input_range=input_range, input_mean=input_mean,
                input_std=input_std, input_encoding=input_encoding)  # fmt: skip


def _is_nir(model) -> bool:
    return type(model).__name__ == "NIRGraph" or (isinstance(model, (str, Path)) and str(model).endswith(".nir"))


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
    reset: Literal["zero", "subtract"] | None = None,
    dt: float | None = None,
    compare: Literal[">", ">="] | None = None,
    convention: str | None = None,
):
    """Compile ``model`` for ``target`` and write the artifact directory ``output``.

    Args:
        model: The trained module (in memory; its weights are copied), or a NIR graph: a
            ``.nir`` path or a ``nir.NIRGraph`` (then ``timesteps`` is required and
            ``reset``, ``dt``, ``compare``, ``convention`` and ``input_shape`` say how it is
            read: :func:`from_nir`; ``time_mode`` and ``adapters`` do not apply).
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
    if _is_nir(model):
        from inflor_deploy.compiler import compile_nir
        from inflor_deploy.errors import InflorError

        if timesteps is None or time_mode is not None or adapters is not None:
            raise InflorError("a NIR graph needs timesteps=T (NIR states none) and takes no time_mode or adapters")
        result = compile_nir(
            model, timesteps=timesteps, target=target, reset=reset, dt=dt, compare=compare, convention=convention,
            input_shape=input_shape, name=name, quantization=quantization, stop_after=stop_after,
            probe_images=probe_images, probe_samples=probe_samples, input_range=input_range, input_mean=input_mean,
            input_std=input_std, input_encoding=input_encoding,
        )  # fmt: skip
        write_artifact(result, output, force=force)
        return load_artifact(output)
    if any(v is not None for v in (reset, dt, compare, convention)):
        from inflor_deploy.errors import InflorError

        raise InflorError("reset, dt, compare and convention say how a NIR graph is read; a module states its own")
    result = compile_model(
        model, input_shape=input_shape, timesteps=timesteps, target=target, time_mode=time_mode, adapters=adapters,
        name=name, quantization=quantization, stop_after=stop_after, probe_images=probe_images,
        probe_samples=probe_samples, input_range=input_range, input_mean=input_mean, input_std=input_std,
        input_encoding=input_encoding,
    )  # fmt: skip
    write_artifact(result, output, force=force)
    return load_artifact(output)


def finetune(
    checkpoint: str | Path,
    target: str = "loihi2-sim",
    *,
    output: str | Path,
    epochs: int = 5,
    data: str = "digits",
    activity_weight: float = 0.0,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    weight_fill: float = 1.0,
    weight_bits: int | None = None,
    force: bool = False,
    progress: bool = False,
):
    """Fine-tune a checkpoint against the exact integer network ``target`` runs; write it to ``output``.

    The Python form of ``inflor-deploy finetune`` (:mod:`inflor_deploy.finetuning`,
    ``docs/finetune.md``). Compiling ``output`` reproduces the fine-tuned
    forward bit for bit: ``verify`` shows level 4 at accuracy delta 0 and
    spike agreement 1.0 (inputs on the input grid).

    Args:
        checkpoint: An inflor-deploy checkpoint of a zoo network (chains and residual nets).
        target: Target name (``inflor-deploy targets``).
        output: The fine-tuned checkpoint (written atomically; an existing one needs ``force``).
        epochs, lr, batch_size, seed: Optimizer settings.
        data: A ``--data`` spec whose train split it trains on.
        activity_weight: Weight of the activity penalty (mean spikes per neuron-step).
        weight_fill: Fraction of the weight range the weights may use (a reduced precision).
        weight_bits: Weight mantissa bits, 2..8 (``--weight-bits``): trains on that grid, and the
            checkpoint records it, so compiling it stores the weights at that width.
        force: Overwrite ``output``.
        progress: Show a progress bar.

    Returns:
        The :class:`~inflor_deploy.finetuning.FinetuneResult` (accuracies before and after, spike rates).

    Raises:
        InflorError: a foreign or unsupported checkpoint, a bad option, target or data spec,
            an existing output without ``force``.
    """
    import os

    from inflor_deploy.errors import InflorError
    from inflor_deploy.finetuning import FinetuneConfig, save_finetuned
    from inflor_deploy.finetuning import finetune as run_finetune
    from inflor_deploy.outputs import check_output_path

    output = Path(output)
    if os.path.exists(output) and not force:
        raise InflorError(f"{output} exists; pass --force to overwrite it")
    config = FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, activity_weight=activity_weight, seed=seed)
    check_output_path(output, need_bytes=1 << 20, what="checkpoint")
    result = run_finetune(checkpoint, target, data=data, config=config,
                          quantization=QuantizationOptions(weight_fill=weight_fill, weight_bits=weight_bits),
                          progress=progress)  # fmt: skip
    save_finetuned(result, output)
    return result
