"""Data against what an artifact was compiled for: range, units, encoding, classes.

A compiled network promises bit-exactness (and meaningful accuracy) only for
inputs in the range and units it was compiled for. :func:`conform_dataset`
is the one gate ``verify``, ``run`` and ``report`` pass data through:

* raw 8-bit pixels (a uint8 array, ``Dataset.raw_pixels``) are converted
  exactly to the declared units, ``p / pixel_levels`` in float32 (255 for
  pixels in [0, 1], 1 for raw pixels); an input that is not pixels refuses
  them;
* values outside the declared range are refused with the range and the fix
  (today pixels in [-1, 0] would run at 0 % accuracy and 0..255 floats at
  65 %, silently);
* the data's layout must match the encoding: ``[N, C, H, W]`` for direct
  encoding, ``[N, T, C, H, W]`` with the model's T for a sequence;
* labels must lie in ``[0, classes)``.

The backends refuse out-of-range inputs too
(:func:`inflor_deploy.backends.sim.int_reference.check_inputs`), for
library callers that bypass this gate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inflor_deploy.data.datasets import DataError, Dataset
from inflor_deploy.ir import nodes as n

__all__ = ["as_unit_pixels", "conform_dataset"]


def as_unit_pixels(data: Dataset) -> Dataset:
    """Raw 8-bit pixels as pixels in [0, 1] (``p / 255``, what training and the default compile expect).

    Event sequences stay as they are: their values are event counts (one unit per event).
    """
    if not data.raw_pixels or data.is_sequence:
        return data
    return dataclasses.replace(data, images=(data.images / np.float32(255)).astype(np.float32), raw_pixels=False)


def conform_dataset(data: Dataset, source: n.Input, classes: int, timesteps: int) -> Dataset:
    """``data`` in the units of ``source`` (the artifact's Input), or :class:`DataError` naming the fix.

    Args:
        data: The loaded dataset.
        source: The Input node of the compiled graph (declared range, pixel levels, encoding).
        classes: The model's number of classes (the readout's size).
        timesteps: The model's T (a sequence must have exactly T frames).
    """
    images = data.images
    shape = tuple(source.shape)
    declared = f"the artifact was compiled for {source.encoding} input"
    if source.encoding == "sequence":
        if images.ndim != 5 or tuple(images.shape[2:]) != shape or images.shape[1] != timesteps:
            raise DataError(
                f"{data.name}: inputs of shape {tuple(images.shape[1:])} per sample; {declared}: T = {timesteps} "
                f"frames of {shape}, an .npz 'x' of shape [N, {timesteps}, {', '.join(map(str, shape))}]"
            )
    elif images.ndim != 4 or tuple(images.shape[1:]) != shape:
        kind = "event sequences [N, T, ...]" if images.ndim == 5 else f"images of {tuple(images.shape[1:])}"
        raise DataError(
            f"{data.name}: {kind}; {declared} of {shape} per sample (use the dataset the model was trained on; "
            "event data need a model compiled with --input-encoding sequence)"
        )
    low, high = (float(v) for v in source.value_range)
    if data.raw_pixels:
        if source.pixel_levels is None:
            raise DataError(
                f"{data.name} holds raw 8-bit pixels (uint8), but the artifact's input is the range "
                f"[{low:g}, {high:g}], not pixels: store the values in that range as floats, or compile with "
                "--input-range 0,255 (raw pixels) or the default (pixels in [0, 1])"
            )
        images = images / np.float32(source.pixel_levels)  # exact for p / 255 as cifar10's loader does it
        data = dataclasses.replace(data, images=images.astype(np.float32), raw_pixels=False)
    if images.size:
        lo, hi = float(images.min()), float(images.max())
        if lo < min(low, float(np.float32(low))) or hi > max(high, float(np.float32(high))):
            hint = ""
            if source.pixel_levels == 255 and lo >= 0 and hi > 1 and hi <= 255:
                hint = " These look like 0..255 pixels: store them as uint8 (read as raw pixels) or divide by 255."
            elif lo < 0 <= low:
                hint = " Negative values: if the data are normalized, give the pixels and compile with --input-mean/--input-std."
            raise DataError(
                f"{data.name}: values span [{lo:g}, {hi:g}], outside the input range [{low:g}, {high:g}] the "
                f"artifact was compiled for.{hint} Or recompile with --input-range covering the data."
            )
    labels = data.labels
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"{data.name}: labels span [{int(labels.min())}, {int(labels.max())}], but the model has {classes} "
            f"classes: labels must be in [0, {classes}); use the dataset the model was trained on"
        )
    return data
