"""Max pooling of binary spike trains as an exact hard-reset neuron layer.

Loihi has no max operation, but the max of numbers in {0, 1} is their OR,
and an OR is a neuron. For ``MaxPool2d(kernel k, stride s, padding p,
dilation d)`` over spikes ``S[t]`` (values 0 or 1) of shape ``(C, H, W)``
this module builds two float IR nodes:

* ``<name>.window``: a depthwise :class:`~inflor_deploy.ir.Conv2d` (groups = C)
  with an all-ones kernel at the pooling window's taps (zeros between
  dilated taps), the same stride, and zero padding p, no bias. Its output
  ``X[t, c, i, j]`` counts the spikes in window (c, i, j).
* ``<name>``: a hard-reset :class:`~inflor_deploy.ir.Neuron` with ``tau = 1``,
  ``vth = 1/2``, ``reset = "zero"``, no MPR.

Proof that the neuron emits exactly ``max_pool2d(S)[t]`` at every step:

1. ``X[t] = sum of the window's spikes`` is an integer in ``0..k*k`` (the
   zero padding adds nothing). torch pads max pooling with -inf instead, but
   torch requires ``p <= k/2``, so every window holds at least one real
   element and the max over it equals the max over its real elements; with
   values in {0, 1} that max is 1 exactly when the window holds a spike,
   i.e. when ``X[t] >= 1``.
2. The state never carries over: ``U[t] = 0`` for all t, by induction.
   ``U[-1] = 0``. If ``U[t-1] = 0`` then ``H[t] = U[t-1] + X[t] = X[t]``; if
   ``X[t] >= 1`` the neuron fires (``H >= 1 > 1/2``) and the hard reset sets
   ``U[t] = 0``; if ``X[t] = 0`` (an all-zero window) then ``H[t] = 0``, it
   does not fire and ``U[t] = H[t] = 0``.
3. Hence ``O[t] = [X[t] >= 1/2] = [X[t] >= 1] = max over the window``:
   an all-zero window gives 0, any spike gives 1, whatever happened before.

The comparison is exact in float32 (small integers against 1/2) and in
fixed point: after quantization the current is ``q * count`` with q >= 1
weight units and the threshold ``round(q / 2)`` lies strictly between the
currents of 0 and 1 spikes, with the same induction for the hard reset.

Max pooling of anything else (the analog input, currents, sums of spike
trains) is not an OR and is refused by the front end.
"""

from __future__ import annotations

import numpy as np

from inflor_deploy.ir import nodes as n

#: Threshold between "no spike in the window" (0) and "at least one" (>= 1).
OR_THRESHOLD = 0.5


def window_kernel(channels: int, kernel: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """Depthwise all-ones kernel ``[C, 1, kh', kw']`` with ones at the dilated taps only."""
    kh, kw = kernel
    dh, dw = dilation
    weight = np.zeros((channels, 1, dh * (kh - 1) + 1, dw * (kw - 1) + 1), np.float32)
    weight[:, :, ::dh, ::dw] = 1.0
    return weight


def spike_max_pool(
    name: str,
    source: str,
    channels: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> tuple[n.Conv2d, n.Neuron]:
    """The window synapse and OR neuron that compute ``max_pool2d`` of the spikes of ``source`` exactly.

    Args:
        name: The pooling layer's name; the neuron gets it, the synapse ``<name>.window``.
        source: The node whose spikes are pooled.
        channels: C of the pooled map.
        kernel, stride, padding, dilation: As ``nn.MaxPool2d`` (pairs).
    """
    window = n.Conv2d(
        name=f"{name}.window",
        sources=(source,),
        weight=window_kernel(channels, kernel, dilation),
        bias=None,
        stride=stride,
        padding=padding,
        groups=channels,
    )
    neuron = n.Neuron(name=name, sources=(window.name,), vth=OR_THRESHOLD, tau=1.0, reset="zero", mpr=False)
    return window, neuron
