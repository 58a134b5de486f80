"""A fine-tuned checkpoint's integer grid: what it records, and how a compile honours it.

``inflor-deploy finetune`` (:mod:`inflor_deploy.finetuning`) trains a model
against the exact integer network the compiler builds for it. What makes
"compiling the fine-tuned checkpoint reproduces its forward bit for bit"
hold by construction is that the checkpoint records the grid it was trained
on, in its metadata::

    metadata["integer_grid"] = {
        "target": "loihi2-sim",                      # the target it was fine-tuned for
        "input_grade_scale": 256.0,                  # the chip receives round(x * 256)
        "layer_scales": {"unit1.neuron": 4096.0, ...},  # weight units per float unit, per layer
        "weight_bits": 4,                            # only when fine-tuned for fewer weight bits
    }

and stores weights that lie exactly on that grid (``W_int / scale`` in
float32, with every scale a power of two, so the division is exact and
``round(W * scale)`` gives ``W_int`` back). A compile of such a checkpoint
uses the recorded scales instead of choosing new ones
(``QuantizationOptions.layer_scales``; the quantizer refuses them when they
no longer fit the target) and the recorded input grade scale.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from inflor_deploy.errors import InflorError
from inflor_deploy.passes.base import QuantizationOptions

#: The metadata key of a fine-tuned checkpoint's grid.
GRID_KEY = "integer_grid"


def recorded_grid(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's recorded grid, validated, or None for a checkpoint that records none.

    Raises:
        InflorError: The record is malformed (names what is wrong and the fix).
    """
    grid = metadata.get(GRID_KEY)
    if grid is None:
        return None
    scales = grid.get("layer_scales") if isinstance(grid, Mapping) else None
    grade = grid.get("input_grade_scale") if isinstance(grid, Mapping) else None
    if (
        not isinstance(scales, Mapping)
        or not scales
        or not all(isinstance(k, str) and _positive(v) for k, v in scales.items())
        or not _positive(grade)
        or not isinstance(grid.get("target"), str)
    ):
        raise InflorError(
            f"the checkpoint's metadata[{GRID_KEY!r}] is malformed ({grid!r}); it needs target, input_grade_scale "
            "and layer_scales (layer -> scale > 0). Fine-tune the original checkpoint again (inflor-deploy finetune)"
        )
    bits = grid.get("weight_bits")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8):
        raise InflorError(
            f"the checkpoint's metadata[{GRID_KEY!r}]['weight_bits'] is {bits!r}, not an integer in 2..8. Fine-tune "
            "the original checkpoint again (inflor-deploy finetune)"
        )
    out = {"target": grid["target"], "input_grade_scale": float(grade),
           "layer_scales": {k: float(v) for k, v in scales.items()}}  # fmt: skip
    if bits is not None:
        out["weight_bits"] = bits
    return out


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def quantization_for(metadata: Mapping[str, Any], quantization: QuantizationOptions) -> QuantizationOptions:
    """``quantization`` with the checkpoint's recorded grid applied (unchanged when it records none).

    Raises:
        InflorError: The caller asked for another input grade scale or other layer scales than
            the checkpoint was fine-tuned on.
    """
    grid = recorded_grid(metadata)
    if grid is None:
        return quantization
    grade, scales = grid["input_grade_scale"], grid["layer_scales"]
    if quantization.input_grade_scale is not None and quantization.input_grade_scale != grade:
        raise InflorError(
            f"this checkpoint was fine-tuned for input grade scale {grade:g} (its integer grid); compiling it with "
            f"--input-scale {quantization.input_grade_scale:g} would not reproduce its forward. Drop --input-scale"
        )
    if quantization.layer_scales is not None and dict(quantization.layer_scales) != scales:
        raise InflorError(
            f"this checkpoint was fine-tuned for the layer scales {scales}; other layer scales were requested "
            f"({dict(quantization.layer_scales)}). Compile it with its own grid"
        )
    bits = grid.get("weight_bits")
    if bits is not None and quantization.weight_bits not in (None, bits):
        raise InflorError(
            f"this checkpoint was fine-tuned for {bits}-bit weights; compiling it with --weight-bits "
            f"{quantization.weight_bits} would not be what it trained. Drop --weight-bits, or fine-tune for "
            f"{quantization.weight_bits} bits"
        )
    # The recorded scales are the plain layout's (the fine-tuning forward's): record that layout too.
    return dataclasses.replace(quantization, input_grade_scale=grade, layer_scales=dict(scales), plain_layers=True,
                               weight_bits=bits if bits is not None else quantization.weight_bits)  # fmt: skip
