"""Wrappers that apply stateless layers to time-first spike tensors."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TimeDistributed"]


class TimeDistributed(nn.Module):
    """Apply a stateless module independently at every timestep.

    Equation (``X: [T, B, ...]``)::

        Y[t] = module(X[t])        for t = 0 .. T-1

    computed in one call by merging T into the batch dimension, which is
    valid only because the wrapped module treats every sample independently
    and keeps no state across calls (Conv2d, Linear, AvgPool2d, Flatten, ...).
    Normalization goes through ``TdBatchNorm``, which takes time-first input
    itself.

    Args:
        module: The stateless module; kept as ``self.module`` so exporters
            can read its weights and hyper-parameters.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"TimeDistributed wraps an nn.Module; got {type(module).__name__}")
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``module`` to ``[T, B, ...]``; returns ``[T, B, ...]``."""
        if x.dim() < 2:
            raise ValueError(
                f"TimeDistributed input must be time-first [T, B, ...]; got shape {tuple(x.shape)}"
            )
        y = self.module(x.flatten(0, 1))
        return y.unflatten(0, x.shape[:2])
