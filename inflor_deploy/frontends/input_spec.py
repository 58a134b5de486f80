"""The declared input: its range, pixel levels, normalization and encoding, applied to a float IR.

A network is compiled for a declared input, recorded in the artifact and
enforced by every backend. :func:`resolve_input_spec` turns the user's
options (``compile --input-range``, ``--input-mean``/``--input-std``,
``--input-encoding``; the same keyword arguments of
:func:`inflor_deploy.compiler.compile_checkpoint`) into an :class:`InputSpec`;
:func:`apply_input_spec` writes it into an exported float graph:

============================  ==================  ============  ===================================
declaration                   ``value_range``     pixel levels  the chip receives
============================  ==================  ============  ===================================
default                       [0, 1]              255           ``round(x * 255)``: 8-bit pixels
``--input-range 0,255``       [0, 255]            1             the raw 8-bit pixels as they are
``--input-mean/--input-std``  [0, 1] (or the      as above      the raw pixels; the normalization
                              given range)                      folds into the first synapses
``--input-range LO,HI``       [LO, HI]            none          ``round(x * 255 / max(|LO|, |HI|))``
``--input-encoding sequence`` [0, 1] events (or   1             the event counts as they are
                              integer LO,HI)
============================  ==================  ============  ===================================

(``--input-scale`` overrides the grade scale.) A normalization is an IR
:class:`~inflor_deploy.ir.Normalize` right after the Input, so the float IR
computes what the trained model computed (``(x - mean) / std`` per channel)
until ``FoldInputNormalization`` folds it. The encoding is ``direct`` (the
frame repeated at every step) or ``sequence`` (``[T, C, H, W]`` per
sample: event data).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes, validate

__all__ = [
    "InputSpec", "NORMALIZE_NAME", "apply_input_spec", "declared_input_spec", "input_spec_of", "parse_floats",
    "resolve_input_spec",
]  # fmt: skip

#: Name of the Normalize node :func:`apply_input_spec` inserts.
NORMALIZE_NAME = "input_normalization"
#: Raw 8-bit pixel levels per unit for the two pixel declarations.
UNIT_PIXELS, RAW_PIXELS = 255, 1


class InputSpecError(InflorError):
    """An input declaration is malformed or does not fit the model; the message names the option."""


@dataclass(frozen=True)
class InputSpec:
    """What the network's input is, as compiled.

    Attributes:
        value_range: ``(low, high)`` of the data (before any normalization).
        pixel_levels: Raw 8-bit pixel steps per unit (255: pixels in [0, 1];
            1: raw 0..255 pixels); None when the data are not pixels.
        mean, std: Per-channel normalization the trained model expects, or None.
        encoding: ``"direct"`` or ``"sequence"``.
    """

    value_range: tuple[float, float] = (0.0, 1.0)
    pixel_levels: int | None = UNIT_PIXELS
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    encoding: str = "direct"

    @property
    def kind(self) -> str:
        """``"pixels"`` ([0, 1] at 1/255), ``"raw_pixels"`` (0..255), ``"events"`` or ``"range"``."""
        if self.encoding == "sequence":
            return "events"
        return {UNIT_PIXELS: "pixels", RAW_PIXELS: "raw_pixels"}.get(self.pixel_levels, "range")


def parse_floats(text: str | Sequence[float] | None, option: str, count: int | None = None) -> tuple[float, ...] | None:
    """``"0.49,0.48,0.45"`` (or a sequence of numbers) as finite floats; None stays None."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputSpecError(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.49,0.48,0.45") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InputSpecError(f"{option} {text!r}: expected finite numbers")
    if count is not None and len(values) != count:
        raise InputSpecError(f"{option} {text!r}: expected {count} numbers, got {len(values)}")
    return values


def resolve_input_spec(
    input_range: str | Sequence[float] | None = None,
    input_mean: str | Sequence[float] | None = None,
    input_std: str | Sequence[float] | None = None,
    input_encoding: str = "direct",
) -> InputSpec:
    """The :class:`InputSpec` of the user's options (module docstring for the table).

    Raises:
        InputSpecError: A malformed range (``LO,HI`` with LO < HI), a mean
            without a std (or the reverse, or of other lengths), a std <= 0,
            or an unknown encoding.
    """
    if input_encoding not in n.INPUT_ENCODINGS:
        raise InputSpecError(f"--input-encoding {input_encoding!r}: use one of {', '.join(n.INPUT_ENCODINGS)}")
    low, high = parse_floats(input_range, "--input-range", 2) or (0.0, 1.0)
    if not low < high:
        raise InputSpecError(f"--input-range {low:g},{high:g}: LO must be below HI, e.g. --input-range -1,1")
    levels = {(0.0, 1.0): UNIT_PIXELS, (0.0, 255.0): RAW_PIXELS}.get((low, high))
    if input_encoding == "sequence":
        # Events or integer counts, one frame per step: taken as they are (one graded unit per event).
        levels = RAW_PIXELS if low.is_integer() and high.is_integer() else None
    mean, std = parse_floats(input_mean, "--input-mean"), parse_floats(input_std, "--input-std")
    if (mean is None) != (std is None):
        raise InputSpecError("give --input-mean and --input-std together (one value per channel each)")
    if mean is not None and len(mean) != len(std):
        raise InputSpecError(f"--input-mean has {len(mean)} values but --input-std {len(std)}; give one per channel")
    if std is not None and not all(s > 0 for s in std):
        raise InputSpecError(f"--input-std {','.join(f'{s:g}' for s in std)}: every std must be > 0")
    return InputSpec(value_range=(low, high), pixel_levels=levels, mean=mean, std=std, encoding=input_encoding)


def apply_input_spec(graph: Graph, spec: InputSpec) -> Graph:
    """The exported float graph with its Input declared as ``spec`` (and a Normalize after it if asked).

    Raises:
        InputSpecError: The normalization has not one value per input channel,
            the graph normalizes its input already (a front end mapped the
            model's own ``(x - mean) / std``), or it holds a node named
            :data:`NORMALIZE_NAME`.
    """
    if graph.is_fixed_point:
        raise InputSpecError("declare the input on the float graph, before QuantizeFixedPoint")
    source = dataclasses.replace(
        graph.input, value_range=tuple(spec.value_range), pixel_levels=spec.pixel_levels, encoding=spec.encoding
    )
    nodes: list[n.Node] = [source if node is graph.input else node for node in graph]
    own = graph.of_type(n.Normalize)
    if spec.mean is not None and own:
        raise InputSpecError(
            f"the model normalizes its input itself (Normalize {own[0].name!r}, from its forward); declaring "
            "--input-mean/--input-std as well would normalize twice: drop them (give --input-range for the raw data)"
        )
    if spec.mean is not None:
        channels = infer_shapes(graph)[source.name][0]
        if len(spec.mean) not in (1, channels):
            raise InputSpecError(
                f"--input-mean/--input-std have {len(spec.mean)} values; the model's input has {channels} "
                "channels: give one value per channel (or one for all)"
            )
        if any(node.name == NORMALIZE_NAME for node in graph):
            raise InputSpecError(f"the graph already has a node named {NORMALIZE_NAME!r}")
        norm = n.Normalize(
            NORMALIZE_NAME, (source.name,),
            mean=np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,)).copy(),
            std=np.broadcast_to(np.asarray(spec.std, np.float32), (channels,)).copy(),
        )  # fmt: skip
        rewired = [
            dataclasses.replace(node, sources=tuple(NORMALIZE_NAME if s == source.name else s for s in node.sources))
            if source.name in node.sources else node
            for node in nodes
        ]  # fmt: skip
        index = next(i for i, node in enumerate(rewired) if isinstance(node, n.Input))
        nodes = [*rewired[: index + 1], norm, *rewired[index + 1 :]]
    declared = graph.replace_nodes(nodes)
    validate(declared)
    return declared


def declared_input_spec(graph: Graph) -> InputSpec:
    """The :class:`InputSpec` a float graph was declared with (the inverse of :func:`apply_input_spec`).

    Only the Normalize named :data:`NORMALIZE_NAME` is a declared
    normalization (the data pipeline applies it before the model); a
    Normalize a front end mapped from the model's own ``forward`` is part of
    the model.
    """
    source = graph.input
    norm = next((x for x in graph.of_type(n.Normalize) if x.name == NORMALIZE_NAME), None)
    return InputSpec(
        value_range=tuple(float(v) for v in source.value_range), pixel_levels=source.pixel_levels,
        mean=None if norm is None else tuple(float(v) for v in norm.mean),
        std=None if norm is None else tuple(float(v) for v in norm.std),
        encoding=source.encoding,
    )  # fmt: skip


def input_spec_of(graph: Graph, grade_scale: float | None = None) -> dict[str, Any]:
    """The resolved input declaration of a graph, JSON-ready (the manifest's ``input``)."""
    source = graph.input
    norms = graph.of_type(n.Normalize)
    spec = InputSpec(value_range=tuple(source.value_range), pixel_levels=source.pixel_levels, encoding=source.encoding)
    scale = grade_scale if grade_scale is not None else source.grade_scale
    return {
        "kind": spec.kind,
        "encoding": source.encoding,
        "shape": list(source.shape),
        "value_range": [float(v) for v in source.value_range],
        "pixel_levels": source.pixel_levels,
        "normalization": (
            {"mean": [float(v) for v in norms[0].mean], "std": [float(v) for v in norms[0].std]} if norms else None
        ),
        "grade_scale": scale,
        "chip_receives": None if scale is None else f"round(x * {scale:g})",
    }
