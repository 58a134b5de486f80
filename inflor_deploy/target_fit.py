"""Does a fixed-point graph fit its target's integer formats? Checked whenever one is loaded.

``QuantizeFixedPoint`` only emits values the target can hold; a graph read
from disk may hold anything (an edited file, another tool's output). Before a
simulator or Lava sees it, every field is checked against the target's bit
widths (all limits come from the target file, ``[numerics]`` and
``[timing]``; none is a constant here):

========================  ==============================================================
field                     must be
========================  ==============================================================
synapse ``weight``        an integer array on the grid of its ``weight_bits``
                          (``Numerics.weight_grid``); 8 bits: dense ``dense_weight_min..max``
                          in steps of ``dense_weight_step`` (the even values Lava's
                          mixed-sign Dense keeps), conv ``conv_weight_min..max``
synapse ``weight_bits``   an integer in ``1..weight_bits``
synapse ``weight_exp``    an integer in ``weight_exp_min..weight_exp_max``
synapse ``sparse``        true or false
synapse ``delay``         an integer in ``0..max_synaptic_delay``
neuron ``vth``            an integer in ``0..2**vth_mant_bits - 1`` (unsigned mantissa)
neuron ``reset_mant``     the same range (subtract: >= 1)
``du``, ``dv``            integers in ``0..2**du_bits - 1`` / ``0..2**dv_bits - 1``
``bias_mant``             an integer array of the layer's shape, signed ``bias_mant_bits``
``bias_exp``              an integer in ``0..2**bias_exp_bits - 1``
``scale``, grade scale    finite numbers > 0
Input declaration         ``encoding`` ``"direct"`` or ``"sequence"``; ``value_range`` two
                          finite numbers, low < high; ``pixel_levels`` an integer >= 1 or
                          none; the graded values of the range (``round(x * grade_scale)``)
                          inside the target's signed ``graded_spike_bits`` payload
schedule                  reset interval >= T (a power of two where the target says so)
========================  ==============================================================

plus the structural invariants of :func:`inflor_deploy.ir.graph.validate`
(shapes consistent, names unique, one family of nodes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import Graph
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import IRError, validate
from inflor_deploy.targets import Target


class TargetFitError(InflorError):
    """A fixed-point graph holds a value its target cannot represent; the message names node, field, value."""


def _fail(where: str, node: str, field: str, what: str) -> TargetFitError:
    return TargetFitError(
        f"{where}: node {node!r} field {field!r} {what}; the file was edited or written by another tool. "
        "Recompile the artifact from its checkpoint"
    )


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(where: str, node: str, field: str, value: Any, lo: int, hi: int, meaning: str) -> None:
    if not _integer(value):
        raise _fail(where, node, field, f"= {value!r} is not an integer ({meaning} is an integer field)")
    if not lo <= value <= hi:
        raise _fail(where, node, field, f"= {value} is outside {meaning} [{lo}, {hi}]")


def _check_array(where: str, node: str, field: str, value: Any, lo: int, hi: int, meaning: str,
                 step: int = 1, shape: tuple[int, ...] | None = None) -> None:  # fmt: skip
    if not isinstance(value, np.ndarray):
        raise _fail(where, node, field, f"is {type(value).__name__}, not an array")
    if value.dtype.kind not in "iu":
        raise _fail(where, node, field, f"has dtype {value.dtype}; {meaning} must be stored as integers "
                                        "(floats are refused, even integral ones)")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise _fail(where, node, field, f"has shape {tuple(value.shape)}, the layer's shape is {tuple(shape)}")
    if value.size == 0:
        return
    wide = value.astype(np.int64)
    bad = (wide < lo) | (wide > hi)
    if step > 1:
        bad |= (wide - lo) % step != 0
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        allowed = f"[{lo}, {hi}]" + (f" in steps of {step}" if step > 1 else "")
        raise _fail(where, node, field, f"[{', '.join(map(str, index))}] = {int(wide[index])} is outside {meaning} "
                                        f"{allowed}")


def _check_scalar_or_channels(where: str, node: str, field: str, value: Any, lo: int, hi: int, meaning: str) -> None:
    """A neuron's vth / reset_mant: one integer, or one per channel."""
    if isinstance(value, np.ndarray):
        _check_array(where, node, field, value, lo, hi, meaning)
    else:
        _check_int(where, node, field, value, lo, hi, meaning)


def _check_positive(where: str, node: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or not value > 0:
        raise _fail(where, node, field, f"= {value!r} must be a finite number > 0")


def _check_input(where: str, node: n.Input, payload_bits: int) -> None:
    """The Input's declaration, and its graded values inside the target's signed graded-spike payload."""
    name = node.name
    if node.grade_scale is None:
        raise _fail(where, name, "grade_scale", "is missing (the input was never quantized)")
    _check_positive(where, name, "grade_scale", node.grade_scale)
    if node.encoding not in n.INPUT_ENCODINGS:
        raise _fail(where, name, "encoding", f"= {node.encoding!r} must be one of {', '.join(n.INPUT_ENCODINGS)}")
    bounds = node.value_range
    if (
        not isinstance(bounds, (tuple, list)) or len(bounds) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in bounds)
        or not all(math.isfinite(v) for v in bounds) or not bounds[0] < bounds[1]
    ):  # fmt: skip
        raise _fail(where, name, "value_range", f"= {bounds!r} must be two finite numbers, low < high")
    levels = node.pixel_levels
    if levels is not None and not (_integer(levels) and levels >= 1):
        raise _fail(where, name, "pixel_levels", f"= {levels!r} must be an integer >= 1 or none")
    # The chip receives round(x * grade_scale): both ends of the range must fit the payload.
    limit = 1 << (payload_bits - 1)
    reach = max(abs(float(np.rint(float(v) * float(node.grade_scale)))) for v in bounds)
    if reach >= limit:
        raise _fail(
            where, name, "value_range",
            f"= [{bounds[0]:g}, {bounds[1]:g}] at grade scale {float(node.grade_scale):g} reaches graded values of "
            f"{reach:.0f}, outside the target's {payload_bits}-bit signed graded-spike payload "
            f"[{-limit}, {limit - 1}]",
        )  # fmt: skip


def check_fits_target(graph: Graph, target: Target, where: str = "graph") -> None:
    """Raise :class:`TargetFitError` unless every field of ``graph`` fits ``target`` (module docstring).

    Args:
        graph: A scheduled fixed-point graph.
        target: The target it was compiled for.
        where: How to name the graph in messages (its file).
    """
    num, timing = target.numerics, target.timing
    if not graph.is_fixed_point or graph.schedule is None:
        raise TargetFitError(f"{where}: not a scheduled fixed-point graph; recompile the artifact")
    unsigned_vth = (0, num.vth_mant_max, f"the target's {num.vth_mant_bits}-bit unsigned mantissa")
    bias = num.bias_mant_range
    bias_args = (bias.start, bias.stop - 1, f"the target's {num.bias_mant_bits}-bit signed bias mantissa")
    bias_exp = (0, (1 << num.bias_exp_bits) - 1, f"the target's {num.bias_exp_bits}-bit unsigned bias exponent")
    for node in graph:
        name = node.name
        if isinstance(node, n.Input):
            _check_input(where, node, num.graded_spike_bits)
        elif isinstance(node, n.FixedPointSynapse):
            if node.kind not in ("dense", "conv"):
                raise _fail(where, name, "kind", f"= {node.kind!r} must be 'dense' or 'conv'")
            _check_int(where, name, "weight_bits", node.weight_bits, 1, num.weight_bits,
                       "the target's weight mantissa widths")
            lo, hi, step = num.weight_grid(node.kind, node.weight_bits)
            width = "" if node.weight_bits == num.weight_bits else f"{node.weight_bits}-bit "
            _check_array(where, name, "weight", node.weight, lo, hi, f"the target's {width}{node.kind} weights",
                         step=step)
            _check_int(where, name, "weight_exp", node.weight_exp, num.weight_exp_min, num.weight_exp_max,
                       "the target's weight exponents")
            if not isinstance(node.sparse, (bool, np.bool_)):
                raise _fail(where, name, "sparse", f"= {node.sparse!r} must be true or false")
            _check_int(where, name, "delay", node.delay, 0, timing.max_synaptic_delay,
                       "the target's synaptic delays")
        elif isinstance(node, (n.FixedPointNeuron, n.FixedPointAccumulator)):
            shape = tuple(node.shape)
            _check_array(where, name, "bias_mant", node.bias_mant, *bias_args, shape=shape)
            _check_int(where, name, "bias_exp", node.bias_exp, *bias_exp)
            _check_positive(where, name, "scale", node.scale)
            _check_int(where, name, "dv", node.dv, 0, (1 << num.dv_bits) - 1,
                       f"the target's {num.dv_bits}-bit voltage decay")
            if isinstance(node, n.FixedPointNeuron):
                _check_scalar_or_channels(where, name, "vth", node.vth, *unsigned_vth)
                if node.reset not in n.RESET_MODES:
                    raise _fail(where, name, "reset", f"= {node.reset!r} must be one of {', '.join(n.RESET_MODES)}")
                if node.reset == "subtract":
                    _check_scalar_or_channels(where, name, "reset_mant", node.reset_mant, 1, num.vth_mant_max,
                                              f"the target's {num.vth_mant_bits}-bit unsigned reset mantissa")
                else:
                    _check_scalar_or_channels(where, name, "reset_mant", node.reset_mant, 0, 0,
                                              f"the unused reset mantissa of reset {node.reset!r}")
                _check_int(where, name, "du", node.du, 0, (1 << num.du_bits) - 1,
                           f"the target's {num.du_bits}-bit current decay")
    # Widths first (they name the value a file edit put out of range), then the structure.
    try:
        validate(graph)
    except IRError as err:
        raise TargetFitError(f"{where}: {err}; recompile the artifact") from err
    schedule = graph.schedule
    interval = schedule.reset_interval
    if not _integer(interval) or interval < graph.timesteps:
        raise TargetFitError(f"{where}: schedule reset_interval {interval!r} must be an integer >= T = "
                             f"{graph.timesteps}; recompile the artifact")
    if timing.reset_interval_power_of_two and interval & (interval - 1):
        raise TargetFitError(f"{where}: schedule reset_interval {interval} is not a power of two, which target "
                             f"{target.name} requires; recompile the artifact")
